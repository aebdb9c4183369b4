"""`roam ca ...` as an operator types it: what each command prints, and bad input as one line
with a non-zero exit that changes nothing."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from peer.cli import main


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(["ca", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_init_issue_list_revoke_and_the_csr_flow(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    d = str(tmp_path / "ca")
    code, out, _ = run(capsys, "init", "--dir", d)
    assert code == 0 and "keep it offline" in out
    code, out, _ = run(capsys, "issue", "--dir", d, "--cluster", "c1", "--out", str(tmp_path / "c1"), "--ip", "127.0.33.1")
    assert code == 0 and f"--cert {tmp_path / 'c1' / 'cluster.pem'}" in out
    code, out, _ = run(capsys, "request", "--cluster", "c2", "--out", str(tmp_path / "c2"))
    fingerprint = out.split("sha256:")[1].split()[0]
    code, out, _ = run(capsys, "sign", "--dir", d, "--csr", str(tmp_path / "c2" / "cluster.csr"), "--cluster", "c2",
                       "--out", str(tmp_path / "signed"))
    assert code == 0 and f"sha256:{fingerprint}" in out  # the operator compares what the host printed
    code, out, _ = run(capsys, "install", "--cert", str(tmp_path / "signed" / "cluster.pem"), "--out", str(tmp_path / "c2"))
    assert code == 0 and (tmp_path / "c2" / "cluster.key").exists()
    code, out, _ = run(capsys, "revoke", "--dir", d, "--cluster", "c2")
    assert code == 0 and "is list #1" in out
    code, out, _ = run(capsys, "list", "--dir", d)
    rows = out.splitlines()[1:]
    assert [r.split()[0] for r in rows] == ["c1", "c2"] and rows[0].endswith("-") and not rows[1].endswith(" -")


@pytest.mark.parametrize(("argv", "message"), [
    (["issue", "--cluster", "c1", "--out", "OUT"], "no CA here"),
    (["issue", "--cluster", "Not_A_Name", "--out", "OUT"], "is not a cluster name"),
    (["issue", "--cluster", "c1", "--out", "OUT", "--ip", "not-an-ip"], "--ip:"),
    (["issue", "--cluster", "c1", "--out", "OUT", "--days", "0"], "--days: must be between"),
    (["revoke", "--cluster", "nobody"], "issued nothing to 'nobody'"),
    (["init"], "exists already"),
])
def test_bad_input_is_one_line_and_changes_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                  argv: list[str], message: str) -> None:
    d = tmp_path / "ca"
    if message != "no CA here":
        assert main(["ca", "init", "--dir", str(d)]) == 0
        capsys.readouterr()
    before = {p.name: p.read_bytes() for p in d.iterdir()} if d.exists() else {}
    code, _, err = run(capsys, *[a.replace("OUT", str(tmp_path / "out")) for a in argv], "--dir", str(d))
    assert code != 0 and len(err.strip().splitlines()) == 1 and message in err, err
    assert ({p.name: p.read_bytes() for p in d.iterdir()} if d.exists() else {}) == before
    assert not (tmp_path / "out").exists()
    if before:
        assert json.loads(before["index.json"]) == {"issued": []}
