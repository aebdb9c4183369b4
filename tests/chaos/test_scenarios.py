"""Chaos scenarios end to end on three real clusters (agents, Serf, HAProxy, services in
namespaces roamc-*, 10.233.0.0/24), with a fixed seed, plus the pure pieces that turn what
was recorded into figures."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from chaos.detections import AppliedFault, Episode, Scope, false_detections, scope
from chaos.faults import Bridge, Composite, Isolate, Kill, LinkDown, Partition, Pause
from chaos.figures import (
    NO_FAULT, copies_ahead, downtime_by_kind, downtime_per_fault, failsafe_rows, fault_kind, outage_rows,
)
from chaos.load import LoadResult, Sample
from chaos.netns import Testbed
from chaos.runner import RunOptions, run
from chaos.scenarios.planned import tour

PREFIX = "roamc"
SUBNET = "10.233.0.0/24"
STATE_CHECKS = {"peers_answer", "every_service_exists_and_serves", "exactly_one_copy",
                "records_agree", "members_alive", "nothing_left_behind"}


async def run_scenario(name: str, report_dir: Path) -> dict[str, Any]:
    report = await run(RunOptions(identity=True, scenario=name, seed=7, clusters=3, report_dir=report_dir,
                                  prefix=PREFIX, subnet=SUBNET, rate=100.0, verbose=False,
                                  quiet_timeout=90.0))
    data: dict[str, Any] = json.loads((report_dir / "report.json").read_text())
    assert data["ok"] is report.ok
    assert report.ok, report.summary()
    assert STATE_CHECKS <= {c["name"] for c in data["checks"]}
    return data


def figure(data: dict[str, Any], name: str) -> Any:
    return data["figures"][name]["value"]


@pytest.mark.netns
@pytest.mark.integration
async def test_planned_migrations_under_load_lose_nothing(tmp_path: Path) -> None:
    data = await run_scenario("planned-migration", tmp_path)
    assert figure(data, "lost_in_planned_migrations") == 0
    assert figure(data, "failsafe_false_starts") == 0  # no entry suspected a location during a move
    assert figure(data, "planned_windows") == 3  # c1->c2 (HC), c2->c3 (AC), c3->c1 (HC)
    load = data["loads"]["s1"]
    assert load["failed"] == 0 and load["sent"] > 300
    assert set(load["served_by"]) == {"c1", "c2", "c3"}
    stages = data["tables"]["migrations"]
    assert all(m["reroute_ms"] is not None and m["wait_ms"] > 0 for m in stages)


@pytest.mark.netns
@pytest.mark.integration
async def test_ac_crash_fails_over_to_a_live_cluster(tmp_path: Path) -> None:
    data = await run_scenario("ac-crash", tmp_path)
    failsafe = data["tables"]["failsafe"]
    assert [(r["hc"], r["lost"], r["outcome"]) for r in failsafe] == [("c1", "c2", "succeeded")]
    assert failsafe[0]["detection_ms"] < 10_000
    downtime = data["tables"]["downtime_per_fault"]
    assert len(downtime) == 1 and "crash agent c2" in downtime[0]["fault"]
    assert 0 < downtime[0]["downtime_s"] < 15
    assert {"c1", "c2"} <= set(data["loads"]["s1"]["served_by"])
    assert figure(data, "heal_to_converged_s[ac restarted]") is not None


@pytest.mark.netns
@pytest.mark.integration
async def test_hc_ac_partition_fails_over_and_converges_after_heal(tmp_path: Path) -> None:
    data = await run_scenario("hc-ac-partition", tmp_path)
    assert {c["name"] for c in data["checks"] if c["ok"]} >= {"failover_during_partition"}
    assert [r["outcome"] for r in data["tables"]["failsafe"]] == ["succeeded"]
    assert figure(data, "heal_to_converged_s[partition healed]") is not None
    assert figure(data, "false_failure_detections") == 0


@pytest.mark.netns
@pytest.mark.integration
@pytest.mark.parametrize("scenario,check", [
    # Regressions the checkers found in roam: a timed-out replication left a second copy for
    # 120 s; an HC restarted while its AC was dead never failed over.
    ("migration-to-paused-target", "one_copy_soon_after_resume"),
    ("hc-restart-ac-dead", "failover_after_hc_restart"),
    ("agent-killed-mid-migration", None),
])
async def test_regression_scenarios(tmp_path: Path, scenario: str, check: str | None) -> None:
    data = await run_scenario(scenario, tmp_path)
    if check is not None:
        assert check in {c["name"] for c in data["checks"] if c["ok"]}


def test_cli_lists_scenarios_and_refuses_bad_usage() -> None:
    out = subprocess.run([sys.executable, "-m", "chaos", "list"], capture_output=True,
                         text=True, check=True).stdout
    for name in ("planned-migration", "ac-crash", "hc-ac-partition", "halves", "bridge",
                 "agent-killed-mid-migration", "flapping-link", "random"):
        assert name in out
    bad = subprocess.run([sys.executable, "-m", "chaos", "run", "--scenario", "halves",
                          "--clusters", "0"], capture_output=True, text=True, check=False)
    assert bad.returncode == 2 and "positive" in bad.stderr


# -- pure pieces --------------------------------------------------------------------------


def test_tour_visits_every_other_cluster_then_comes_home() -> None:
    assert tour(["c1", "c2", "c3"], "c1") == ["c2", "c3", "c1"]
    assert tour(["c1", "c2", "c3", "c4"], "c3") == ["c4", "c1", "c2", "c3"]


def test_fault_scopes_explain_only_what_they_touch() -> None:
    tb = Testbed(["a", "b", "c", "d"], prefix=PREFIX, subnet=SUBNET)
    cut = scope(Partition(["a"], ["b"]), tb)
    assert cut.explains("a", "b") and cut.explains("b", "a")
    assert not cut.explains("c", "a") and not cut.explains("a", "c")
    bridge = scope(Bridge("c", ["a"], ["b", "d"]), tb)
    assert bridge.explains("a", "d") and not bridge.explains("a", "c")
    assert scope(Isolate("d"), tb).explains("a", "d")
    assert scope(LinkDown("b"), tb).explains("b", "c")  # the cut-off side sees all failed
    assert scope(Pause(1, label="c/serf"), tb).nodes == {"c"}
    assert scope(Kill(1, label="c/haproxy"), tb) == Scope()  # HAProxy is not membership
    both = scope(Composite((LinkDown("a"), Kill(1, label="svc/s1"))), tb)
    assert both.nodes == {"a"} and not both.pairs


def test_copies_ahead_are_read_by_outcome_from_the_metrics_text() -> None:
    text = "\n".join([
        "# TYPE roam_failsafe_copies_ahead_total counter",
        'roam_failsafe_copies_ahead_total{outcome="confirmed"} 2.0',
        'roam_failsafe_copies_ahead_total{outcome="removed"} 1.0',
        'roam_failsafe_copies_ahead_created{outcome="removed"} 1.796679802868984e+09',
        'roam_migrations_total{kind="failsafe",outcome="succeeded"} 2.0',
    ])
    assert copies_ahead(text) == {"confirmed": 2, "removed": 1}
    assert copies_ahead("# no fail-safe yet\n") == {}


def test_false_detections_are_those_no_earlier_fault_explains() -> None:
    applied = [AppliedFault(10.0, "partition a | b", Scope(pairs=frozenset(
        {frozenset({"a", "b"})})))]
    episodes = [Episode("a", "b", 12.0, 20.0), Episode("c", "a", 13.0),
                Episode("b", "a", 9.0, 9.5)]
    assert false_detections(episodes, applied) == [episodes[1], episodes[2]]


def _load(pattern: str, t0: float, step: float = 0.1) -> LoadResult:
    return LoadResult(t0=t0, rate=1 / step, samples=[
        Sample(t0 + i * step, 1.0, ch == "o", 200 if ch == "o" else None,
               None if ch == "o" else "timeout", "c1") for i, ch in enumerate(pattern)])


def test_outages_are_attributed_to_the_latest_earlier_fault_and_merged() -> None:
    loads = {"s1": _load("ooxxoxxxoooxo", 100.0), "s2": _load("oooooooooooo", 100.0)}
    applied = [AppliedFault(100.1, "kill", Scope()), AppliedFault(101.0, "cut", Scope())]
    rows = outage_rows(loads, applied, t0=100.0)
    assert [(r["service"], r["start"], r["failed"]) for r in rows] == [
        ("s1", 0.2, 2), ("s1", 0.5, 3), ("s1", 1.1, 1)]
    assert [r["fault"] for r in rows] == ["kill @0.1s", "kill @0.1s", "cut @1.0s"]
    spans = downtime_per_fault(rows)
    assert [(s["fault"], s["downtime_s"], s["lost"]) for s in spans] == [
        ("cut @1.0s", 0.1, 1), ("kill @0.1s", 0.6, 5)]
    assert outage_rows({"s": _load("x", 5.0)}, [], t0=5.0)[0]["fault"] == NO_FAULT


def test_failsafe_rows_keep_only_this_runs_failsafes() -> None:
    history = [
        {"kind": "failsafe", "started_at": 50.0, "service": "old", "outcome": "succeeded"},
        {"kind": "planned", "started_at": 150.0, "service": "s1", "outcome": "succeeded"},
        {"kind": "failsafe", "started_at": 160.0, "service": "s1", "source": "c2",
         "outcome": "succeeded", "reason": "serf", "durations_ms": {"detection": 800.0}},
    ]
    rows = failsafe_rows({"c1": history}, since_wall=100.0,
                         faults_wall=[(158.5, "isolate c2"), (120.0, "link down c2")])
    assert len(rows) == 1 and rows[0]["lost"] == "c2" and rows[0]["detection_ms"] == 800.0
    assert rows[0]["reroute_ms"] is None
    assert rows[0]["after_fault"] == "isolate c2" and rows[0]["fault_to_decision_ms"] == 1500.0


def test_fault_kinds_drop_the_targets() -> None:
    names = ["c1", "c2", "c3"]
    assert fault_kind("partition c3,c1 | c2", names) == "partition"
    assert fault_kind("one-way cut c1 -> c3", names) == "one-way cut"
    assert fault_kind("SIGKILL c2/haproxy (pid)", names) == "SIGKILL haproxy"
    assert fault_kind("pause svc/s4 (pid)", names) == "pause service"
    assert fault_kind("crash agent c2 + SIGKILL c2/services (group)", names) == \
        "crash agent + SIGKILL services"
    spans = [{"fault": "isolate c1 @3.0s", "service": "s1", "downtime_s": 2.0, "lost": 20},
             {"fault": "isolate c2 @9.0s", "service": "s2", "downtime_s": 4.0, "lost": 40},
             {"fault": NO_FAULT, "service": "s1", "downtime_s": 1.0, "lost": 1}]
    assert downtime_by_kind(spans, names) == [
        {"kind": "isolate", "outages": 2, "mean_s": 3.0, "max_s": 4.0, "lost": 60}]
