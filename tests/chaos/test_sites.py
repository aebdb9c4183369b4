"""Whole sites lost, cut off and returning, end to end on three real clusters (agents, Serf,
HAProxy, services in namespaces roams-*, 10.234.0.0/24: apart from the other chaos tests'
testbeds, so they can run side by side), plus the pure checkers these scenarios added.
Figures are printed, never asserted on: the machine is shared."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from chaos.checkers import entry_endpoints, every_entry_serves, one_steward
from chaos.cluster import Federation
from chaos.detections import scope
from chaos.netns import Testbed
from chaos.runner import RunOptions, run
from chaos.siteloss import SiteLoss

PREFIX = "roams"
SUBNET = "10.234.0.0/24"
RATE = 200.0  # requests per second, for each load of a scenario
HOME_CHECKS = {"peers_answer", "every_service_exists_and_serves", "exactly_one_copy",
               "records_agree", "one_steward", "every_entry_serves", "members_alive",
               "nothing_left_behind"}


async def run_scenario(name: str, report_dir: Path) -> dict[str, Any]:
    report = await run(RunOptions(identity=True, scenario=name, seed=7, clusters=3, report_dir=report_dir,
                                  prefix=PREFIX, subnet=SUBNET, rate=RATE, verbose=False,
                                  quiet_timeout=60.0))
    data: dict[str, Any] = json.loads((report_dir / "report.json").read_text())
    print(f"\n{name}: " + ", ".join(f"{k}={v['value']}" for k, v in data["figures"].items()))
    for label, load in data["loads"].items():
        print(f"  load {label}: sent {load['sent']} failed {load['failed']} "
              f"served_by {load['served_by']} served_by_entry {load['served_by_entry']}")
    assert data["ok"] is report.ok
    assert report.ok, report.summary()
    assert HOME_CHECKS <= {c["name"] for c in data["checks"]}
    return data


def figure(data: dict[str, Any], name: str) -> Any:
    return data["figures"][name]["value"]


def passed(data: dict[str, Any]) -> set[str]:
    return {c["name"] for c in data["checks"] if c["ok"]}


@pytest.mark.netns
@pytest.mark.integration
async def test_hc_site_loss_with_the_service_abroad(tmp_path: Path) -> None:
    data = await run_scenario("hc-site-loss-abroad", tmp_path)
    assert {"stewardship_handed_over", "migration_after_hc_site_loss", "home_set_repaired",
            "nothing_lost_at_surviving_entry", "no_loss_during_planned_migrations"} <= passed(data)
    assert figure(data, "lost_at_surviving_entry") == 0
    assert figure(data, "stewardship_handover_s") is not None
    client = data["loads"]["s1"]
    assert set(client["served_by_entry"]) == {"c1", client_deputy(data)}  # c1 until it was lost
    assert client["failed_tries_by_entry"].get("c1", 0) > 0


def client_deputy(data: dict[str, Any]) -> str:
    deputies = [label.split("@")[1] for label in data["loads"] if "@" in label]
    assert len(deputies) == 1
    return deputies[0]


@pytest.mark.netns
@pytest.mark.integration
async def test_hc_site_loss_with_the_service_at_home(tmp_path: Path) -> None:
    data = await run_scenario("hc-site-loss-home", tmp_path)
    assert "served_again_after_hc_site_loss" in passed(data)
    assert figure(data, "served_again_after_hc_site_loss_s") is not None
    assert figure(data, "stewardship_handover_s") is not None
    assert [r["outcome"] for r in data["tables"]["failsafe"]] == ["succeeded"]
    # the runner restarted c1 before Serf had marked it failed: stewardship went back anyway


@pytest.mark.netns
@pytest.mark.integration
async def test_hc_isolated_both_sides_serve_then_one_copy(tmp_path: Path) -> None:
    data = await run_scenario("hc-isolated", tmp_path)
    assert {"both_sides_serve", "converged_after_heal"} <= passed(data)
    assert figure(data, "lost_at_hc_entry_while_isolated") == 0
    assert data["loads"]["s1"]["failed"] == 0  # the entry-list client lost nothing
    assert figure(data, "heal_to_converged_s") is not None


@pytest.mark.netns
@pytest.mark.integration
async def test_a_lost_entry_is_replaced(tmp_path: Path) -> None:
    data = await run_scenario("entry-repair", tmp_path)
    assert {"entry_replaced", "nothing_lost_at_hc_entry", "converged_after_old_entry_returned",
            "old_entry_closed_its_frontend"} <= passed(data)
    assert figure(data, "entry_replaced_s") is not None
    assert figure(data, "old_entry_closed_frontend_s") is not None
    assert data["loads"]["s1"]["failed"] == 0


@pytest.mark.netns
@pytest.mark.integration
async def test_hc_returns_on_its_old_data_dir(tmp_path: Path) -> None:
    data = await run_scenario("hc-returns", tmp_path)
    assert {"survivors_took_over", "converged_after_return"} <= passed(data)
    assert figure(data, "hc_return_to_converged_s") is not None


@pytest.mark.netns
@pytest.mark.integration
async def test_hc_returns_on_an_empty_data_dir(tmp_path: Path) -> None:
    """The HC's site rebuilt on an empty disk: it recovers its records from the peers before
    it acts, and the federation converges (one copy, one steward, every entry serving)."""
    data = await run_scenario("hc-returns-empty", tmp_path)
    assert {"survivors_took_over", "converged_after_return"} <= passed(data)
    assert figure(data, "hc_return_empty_to_converged_s") is not None


# -- pure pieces --------------------------------------------------------------------------


def _rec(name: str, *, homes: list[str], location: str, steward: str | None,
         endpoints: list[str] | None = None) -> dict[str, Any]:
    return {"name": name, "home": homes[0], "homes": homes, "location": location,
            "state": "running", "steward": steward,
            "endpoints": endpoints if endpoints is not None else [f"{h}:1" for h in homes]}


def test_one_steward_wants_agreement_on_the_first_entry_that_answers() -> None:
    def snap(stewards: dict[str, str | None]) -> dict[str, Any]:
        return {c: {"services": [_rec("s", homes=["c1", "c2"], location="c3", steward=s)]}
                for c, s in stewards.items()}

    assert one_steward(snap({"c1": "c1", "c2": "c1", "c3": "c1"})).ok
    split = one_steward(snap({"c1": "c1", "c2": "c2", "c3": "c1"}))
    assert not split.ok and "differ" in split.detail
    assert not one_steward(snap({"c1": None, "c2": None})).ok
    # c1 did not answer the snapshot: c2 is the first live entry
    assert one_steward(snap({"c2": "c2", "c3": "c2"})).ok
    wrong = one_steward(snap({"c1": "c2", "c2": "c2", "c3": "c2"}))
    assert not wrong.ok and "want c1" in wrong.detail


def test_every_entry_serves_from_the_location() -> None:
    snapshot = {"c1": {"services": [_rec("s", homes=["c1", "c2"], location="c3", steward="c1")]}}
    assert entry_endpoints(snapshot) == {"s": ["c1:1", "c2:1"]}
    assert every_entry_serves(snapshot, {"s": {"c1:1": "c3", "c2:1": "c3"}}).ok
    stale = every_entry_serves(snapshot, {"s": {"c1:1": "c3", "c2:1": "c2"}})
    assert not stale.ok and "c2:1 answered from c2" in stale.detail
    assert not every_entry_serves(snapshot, {"s": {"c1:1": None, "c2:1": "c3"}}).ok
    short = {"c1": {"services": [_rec("s", homes=["c1", "c2"], location="c1", steward="c1",
                                      endpoints=["c1:1"])]}}
    assert not every_entry_serves(short, {"s": {"c1:1": "c1"}}).ok


def test_a_site_loss_explains_detections_of_its_cluster(tmp_path: Path) -> None:
    tb = Testbed(["c1", "c2"], prefix=PREFIX, subnet=SUBNET)
    fed = Federation(tb, tmp_path)
    loss = SiteLoss(fed, "c1")
    assert loss.describe() == "site loss c1"
    assert SiteLoss(fed, "c1", wipe=True).describe().startswith("site loss c1 (data dir wiped")
    assert scope(loss, tb).explains("c2", "c1") and not scope(loss, tb).explains("c2", "c3")
