"""`make demo`, the main job, runs end to end in CI: both the namespace mode and the fallback."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from chaos.demo import run_demo

pytestmark = [pytest.mark.integration, pytest.mark.netns]


def what_the_agents_said(work: Path) -> str:
    """The agents' own account of the classifier (INFO and above), for a failed assertion: CI
    shows a test's output, not the demo's logs, and the timeline shows one agent's view."""
    lines = []
    for log in sorted(work.glob("*.log")):
        lines += [line for line in log.read_text(errors="replace").splitlines()
                  if "classifier" in line and " DEBUG " not in line]
    return "\n".join(sorted(lines, key=lambda line: line[:23])[-80:])


@pytest.mark.parametrize("loopback", [False, True], ids=["netns", "loopback"])
async def test_demo_plays_the_papers_use_case(tmp_path: Path, loopback: bool) -> None:
    code = await run_demo(tmp_path / "report", loopback=loopback, work=tmp_path / "work")
    report = json.loads((tmp_path / "report" / "report.json").read_text())
    assert code == 0, (report["checks"], what_the_agents_said(tmp_path / "work"))
    assert (tmp_path / "report" / "latency.png").stat().st_size > 10_000
    kinds = [(m["kind"], m["source"], m["target"]) for m in report["migrations"]
             if m["outcome"] == "succeeded" and m["kind"] != "standby"]  # moves of the primary
    assert any(m["kind"] == "standby" and m["outcome"] == "succeeded" for m in report["migrations"])
    # Out for compute, to the edge when the cloud degrades, on the outage the standby promoted
    # (where it can be reached) or the HC redeploys at home, out again.
    said = what_the_agents_said(tmp_path / "work")
    assert kinds[0][1] == "deep-edge" and kinds[0][2] in ("cloud", "edge"), (kinds, said)
    assert any((k == "failsafe" and t == "deep-edge") or k == "promotion" for k, _, t in kinds), (kinds, said)
    assert kinds[-1][2] in ("cloud", "edge"), (kinds, said)
    assert all(c["ok"] for c in report["checks"])
    assert report["stage_medians_ms"]["reroute"] is not None
