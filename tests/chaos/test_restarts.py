"""`agent-restarts` end to end on three real clusters (agents, Serf, HAProxy, services in
namespaces roamop-*, 10.237.0.0/24: apart from the other chaos tests' testbeds): agents
SIGTERMed and started again at random moments, also mid-migration, under open-loop load at
every entry. Nothing may be lost, and after each restart one copy per service, agreeing
records, one steward and every entry serving. Figures are printed, not asserted on."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from chaos.runner import RunOptions, run
from chaos.scenarios import get
from chaos.scenarios.restarts import ROUNDS

PREFIX = "roamop"
SUBNET = "10.237.0.0/24"
RATE = 200.0  # requests per second in total, spread over every entry of every service


@pytest.mark.netns
@pytest.mark.integration
async def test_agent_restarts_lose_nothing(tmp_path: Path) -> None:
    report = await run(RunOptions(identity=True, scenario="agent-restarts", seed=3, clusters=3, report_dir=tmp_path,
                                  prefix=PREFIX, subnet=SUBNET, rate=RATE, verbose=False, quiet_timeout=60.0))
    data: dict[str, Any] = json.loads((tmp_path / "report.json").read_text())
    print("\nagent-restarts: " + ", ".join(f"{k}={v['value']}" for k, v in data["figures"].items()))
    for row in data["tables"].get("restarts", []):
        print(f"  round {row['round']}: {row['victim']} {row['what']} -> converged after {row['converged_after_s']}s")
    for label, load in data["loads"].items():
        print(f"  load {label}: sent {load['sent']} failed {load['failed']} served_by {load['served_by']}")
    assert report.ok, report.summary()
    checks = {c["name"] for c in data["checks"] if c["ok"]}
    assert {"nothing_lost_across_restarts", "exactly_one_copy", "records_agree", "one_steward",
            "every_entry_serves", "nothing_left_behind"} <= checks
    assert {f"converged_after_restart[{r}]" for r in range(ROUNDS)} <= checks
    assert all(load["failed"] == 0 for load in data["loads"].values()), data["loads"]
    assert data["figures"]["lost_across_restarts"]["value"] == 0
    whats = [row["what"] for row in data["tables"]["restarts"]]
    assert sum(1 for w in whats if w != "plain") == ROUNDS // 2  # every other one mid-migration


def test_agent_restarts_is_registered() -> None:
    scenario = get("agent-restarts")
    assert scenario.home_checks and scenario.services == 2
