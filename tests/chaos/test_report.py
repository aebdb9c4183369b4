"""Reports: JSON with events, figures, checks and samples in scenario-relative time."""
from __future__ import annotations

import json
from pathlib import Path

from chaos.checkers import CheckResult
from chaos.faults import FaultEvent
from chaos.load import LoadResult, Sample
from chaos.report import Report


def test_report_round_trip_and_summary(tmp_path: Path) -> None:
    report = Report("partition-halves", seed=9, t0=100.0)
    report.fault_event(FaultEvent(101.0, "apply", "isolate a"))
    report.event("heal-quiet", at=104.5, clusters=3)
    load = LoadResult(t0=100.5, rate=10, samples=[
        Sample(100.5, 2.0, True, 200, None, "a"), Sample(100.6, 500.0, False, None, "timeout", None),
        Sample(100.7, 3.0, True, 200, None, "b")])
    report.load("main", load)
    report.figure("failover_downtime", 0.1, "s")
    report.check(CheckResult("records_agree", True, "2 services"))
    report.check(CheckResult("exactly_one_copy", False, "web: 2 copies"))
    path = report.write(tmp_path / "out" / "report.json")
    data = json.loads(path.read_text())
    assert data["scenario"] == "partition-halves" and data["seed"] == 9 and data["ok"] is False
    assert [(e["t"], e["kind"]) for e in data["events"]][:2] == [(1.0, "fault.apply"),
                                                                (4.5, "heal-quiet")]
    main = data["loads"]["main"]
    assert (main["sent"], main["served"], main["failed"]) == (3, 2, 1)
    assert main["served_by"] == {"a": 1, "b": 1}
    assert main["samples"][1] == [0.6, 500.0, False, None, "timeout", None]
    assert main["outages"] == [{"start": 0.6, "end": 0.7, "failed": 1, "open_ended": False}]
    assert data["figures"]["failover_downtime"] == {"value": 0.1, "unit": "s"}
    text = report.summary()
    assert "FAILED" in text and "[FAIL] exactly_one_copy: web: 2 copies" in text
    assert "failover_downtime: 0.1 s" in text
