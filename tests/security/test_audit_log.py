"""The audit log file (peer.api.audit.AuditLog): 0600 JSON lines, newest first, rotated once."""
from __future__ import annotations

import json
import stat
from pathlib import Path

from peer.api.audit import AuditLog


def test_appends_private_json_lines_and_reads_newest_first(tmp_path: Path) -> None:
    clock = iter(range(100, 200))
    audit = AuditLog(tmp_path / "audit.log", clock=lambda: float(next(clock)))
    for i in range(5):
        audit.append({"what": {"path": f"/v1/x/{i}"}, "status": 200})
    assert stat.S_IMODE((tmp_path / "audit.log").stat().st_mode) == 0o600
    assert [e["what"]["path"] for e in audit.recent(3)] == ["/v1/x/4", "/v1/x/3", "/v1/x/2"]
    assert [e["time"] for e in audit.recent(10)] == [104.0, 103.0, 102.0, 101.0, 100.0]
    lines = (tmp_path / "audit.log").read_text().splitlines()
    assert len(lines) == 5 and all(isinstance(json.loads(line), dict) for line in lines)


def test_a_widened_mode_is_put_back_to_0600(tmp_path: Path) -> None:
    path = tmp_path / "audit.log"
    path.write_text("")
    path.chmod(0o644)
    AuditLog(path).append({"status": 200})
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_rotates_once_and_reads_across_both_files(tmp_path: Path) -> None:
    audit = AuditLog(tmp_path / "audit.log", max_bytes=400)
    for i in range(12):
        audit.append({"n": i, "pad": "x" * 40})
    assert (tmp_path / "audit.log.1").exists()
    assert all(p.stat().st_size <= 400 for p in tmp_path.iterdir())
    newest = [e["n"] for e in audit.recent(6)]
    assert newest == [11, 10, 9, 8, 7, 6]
    assert [e["n"] for e in audit.recent(100)] == sorted(
        {e["n"] for e in audit.recent(100)}, reverse=True)  # no duplicates, newest first
