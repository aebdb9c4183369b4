"""The `state-migration` chaos scenario end to end on three real clusters (agents, Serf, HAProxy
with the request hold, the stateful sample, in namespaces roamst-*, 10.236.0.0/24: apart from
the other chaos tests' testbeds). Figures are printed, never asserted on: the machine is shared."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from chaos.runner import RunOptions, run

PREFIX = "roamst"
SUBNET = "10.236.0.0/24"


@pytest.mark.netns
@pytest.mark.integration
async def test_state_migration_scenario(tmp_path: Path) -> None:
    report = await run(RunOptions(identity=True, scenario="state-migration", seed=7, clusters=3, report_dir=tmp_path,
                                  prefix=PREFIX, subnet=SUBNET, rate=200.0, verbose=False, quiet_timeout=60.0))
    data = json.loads((tmp_path / "report.json").read_text())
    print("\nstate-migration: " + ", ".join(f"{k}={v['value']}" for k, v in data["figures"].items()))
    assert report.ok, report.summary()
    passed = {c["name"] for c in data["checks"] if c["ok"]}
    assert "no_loss_during_planned_migrations" in passed and "failover_state_recent" in passed
    assert sum(1 for c in passed if c.startswith("state_exact[")) == 4
