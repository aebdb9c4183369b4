"""lb.files.write_atomic: the file is replaced whole, with the mode asked for from the start."""
from __future__ import annotations

import stat
from pathlib import Path

import pytest

from lb.files import write_atomic


def mode_of(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_replaces_the_file_and_leaves_no_temp(tmp_path: Path) -> None:
    path = tmp_path / "keys.json"
    path.write_bytes(b"old")
    write_atomic(path, b"new")
    assert path.read_bytes() == b"new"
    assert mode_of(path) == 0o600
    assert [p.name for p in tmp_path.iterdir()] == ["keys.json"]


def test_a_stale_wide_temp_file_does_not_widen_the_result(tmp_path: Path) -> None:
    path = tmp_path / "keys.json"
    stale = tmp_path / ".keys.json.tmp"
    stale.write_bytes(b"half")
    stale.chmod(0o666)
    write_atomic(path, b"secret", mode=0o600)
    assert mode_of(path) == 0o600 and path.read_bytes() == b"secret"


def test_public_mode_when_asked(tmp_path: Path) -> None:
    write_atomic(tmp_path / "ca.pem", b"pem", mode=0o644)
    assert mode_of(tmp_path / "ca.pem") == 0o644


def test_a_failed_write_keeps_the_old_file(tmp_path: Path) -> None:
    path = tmp_path / "state"
    path.write_bytes(b"old")
    with pytest.raises(TypeError):
        write_atomic(path, "not bytes")  # type: ignore[arg-type]
    assert path.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["state"]
