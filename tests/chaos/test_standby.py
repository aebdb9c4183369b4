"""Hot standby end to end on three real clusters (agents, Serf, HAProxy, services in
namespaces roamsb-*, 10.235.0.0/24: apart from the other chaos testbeds): the primary's whole
site lost, or cut off, under 200 req/s at each entry. Figures are printed; the goal of 0 lost
requests after a site loss is a check of the scenario."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from chaos.checkers import exactly_one_copy, records_agree
from chaos.runner import RunOptions, run
from tests.chaos.test_sites import HOME_CHECKS, figure, passed

PREFIX = "roamsb"
SUBNET = "10.235.0.0/24"
RATE = 200.0


async def run_scenario(name: str, report_dir: Path) -> dict[str, Any]:
    report = await run(RunOptions(identity=True, scenario=name, seed=7, clusters=3, report_dir=report_dir,
                                  prefix=PREFIX, subnet=SUBNET, rate=RATE, verbose=False,
                                  quiet_timeout=60.0))
    data: dict[str, Any] = json.loads((report_dir / "report.json").read_text())
    print(f"\n{name}: " + ", ".join(f"{k}={v['value']}" for k, v in data["figures"].items()))
    for label, load in data["loads"].items():
        print(f"  load {label}: sent {load['sent']} failed {load['failed']} served_by {load['served_by']}")
    assert data["ok"] is report.ok
    assert report.ok, report.summary()
    assert HOME_CHECKS <= {c["name"] for c in data["checks"]}
    return data


@pytest.mark.netns
@pytest.mark.integration
async def test_standby_ac_loss_loses_nothing_and_is_promoted(tmp_path: Path) -> None:
    data = await run_scenario("standby-ac-loss", tmp_path)
    assert {"standby_serves", "standby_promoted", "new_standby_placed", "nothing_lost_at_entries"} <= passed(data)
    assert figure(data, "lost_at_entries") == 0
    assert figure(data, "promoted_after_s") is not None
    promotions = [r for r in data["tables"].get("failsafe", []) if r.get("kind") == "promotion"]
    print("promotions:", promotions)


@pytest.mark.netns
@pytest.mark.integration
async def test_standby_partition_promotes_on_the_entries_side_and_converges(tmp_path: Path) -> None:
    data = await run_scenario("standby-partition", tmp_path)
    assert {"standby_serves", "standby_promoted", "new_standby_placed", "converged_after_heal"} <= passed(data)
    assert figure(data, "heal_to_converged_s") is not None
    print("lost at entries while cut off (connections time out):", figure(data, "lost_at_entries"))


def test_checkers_count_standbys_as_copies_and_sr_as_a_role() -> None:
    running = {"c1": [], "c2": ["web"], "c3": ["web"]}
    assert not exactly_one_copy(running).ok
    assert exactly_one_copy(running, standbys={"web": ["c3"]}).ok
    assert not exactly_one_copy({"c1": [], "c2": ["web"], "c3": []}, standbys={"web": ["c3"]}).ok
    rec = {"name": "web", "home": "c1", "homes": ["c1"], "location": "c2", "state": "running",
           "vclock": {"c1": 2}, "standbys": ["c3"]}
    snapshot = {"c1": {"services": [{**rec, "role": "AR"}]}, "c2": {"services": [{**rec, "role": "FR"}]},
                "c3": {"services": [{**rec, "role": "SR"}]}}
    assert records_agree(snapshot).ok, records_agree(snapshot).detail
    wrong = {**snapshot, "c3": {"services": [{**rec, "role": "FR"}]}}
    assert not records_agree(wrong).ok
