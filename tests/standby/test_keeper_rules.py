"""The StandbyKeeper's pure decisions (peer.migration.standby.plan and candidates): which
standbys to drop, how many to add, and where a new one goes."""
from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from peer.migration.standby import candidates, plan
from peer.records.record import Record, State
from placement import ClusterView, Requirements

CLUSTERS = ("a", "b", "c", "d", "e")


def record(location: str = "a", standbys: tuple[str, ...] = (), *, tombstone: bool = False) -> Record:
    return Record(name="web", home="a", location=location, state=State.RUNNING, digest="d", descriptor=b"",
                  standbys=tuple(sorted((c, f"127.0.0.{i + 1}:80") for i, c in enumerate(standbys))),
                  tombstone=tombstone)


def view(name: str, tier: str, *, alive: bool = True, slots_used: int = 0) -> ClusterView:
    return ClusterView(name=name, alive=alive, tier=tier, cpu_capacity=4, cpu_used=0, mem_capacity=1 << 30,
                       mem_used=0, slots_capacity=4, slots_used=slots_used)


def test_nothing_to_do_when_the_standbys_are_whole() -> None:
    assert plan(record(standbys=("b",)), wanted=1, lost_for={}, down_for={}, repair_after=5) is None
    assert plan(record(), wanted=0, lost_for={}, down_for={}, repair_after=5) is None
    assert plan(record(tombstone=True), wanted=2, lost_for={}, down_for={}, repair_after=5) is None


def test_missing_lost_dead_and_surplus_standbys() -> None:
    p = plan(record(standbys=("b",)), wanted=2, lost_for={}, down_for={}, repair_after=5)
    assert p is not None and p.drop == () and p.need == 1
    p = plan(record(standbys=("b", "c")), wanted=2, lost_for={"b": 6.0}, down_for={}, repair_after=5)
    assert p is not None and p.drop == ("b",) and p.need == 1
    assert plan(record(standbys=("b",)), wanted=1, lost_for={"b": 4.0}, down_for={}, repair_after=5) is None
    p = plan(record(standbys=("b",)), wanted=1, lost_for={}, down_for={"b": 5.0}, repair_after=5)
    assert p is not None and p.drop == ("b",) and p.need == 1
    p = plan(record(standbys=("b", "c", "d")), wanted=1, lost_for={}, down_for={}, repair_after=5)
    assert p is not None and p.drop == ("c", "d") and p.need == 0


def test_a_standby_that_serves_is_kept_while_its_agent_is_away() -> None:
    """Its holder's agent restarts (or is slow to): the copy passes the steward's checks, so it
    stays; once it stops passing them too, the cluster's loss counts again."""
    assert plan(record(standbys=("b",)), wanted=1, lost_for={"b": 60.0}, down_for={}, repair_after=5,
                serving=frozenset({"b"})) is None
    p = plan(record(standbys=("b",)), wanted=1, lost_for={"b": 60.0}, down_for={}, repair_after=5)
    assert p is not None and p.drop == ("b",)
    p = plan(record(standbys=("b",)), wanted=1, lost_for={}, down_for={"b": 5.0}, repair_after=5,
             serving=frozenset({"b"}))
    assert p is not None and p.drop == ("b",)  # DOWN that long: its checks are the evidence


@settings(max_examples=300)
@given(st.sampled_from(CLUSTERS), st.lists(st.sampled_from(CLUSTERS), unique=True, max_size=4),
       st.integers(0, 4), st.dictionaries(st.sampled_from(CLUSTERS), st.none() | st.floats(0, 20)),
       st.dictionaries(st.sampled_from(CLUSTERS), st.floats(0, 20)), st.frozensets(st.sampled_from(CLUSTERS)))
def test_after_the_plan_the_standbys_are_live_distinct_from_the_primary_and_enough(
        location: str, standbys: list[str], wanted: int, lost: dict[str, float | None],
        down: dict[str, float], serving: frozenset[str]) -> None:
    r = record(location, tuple(standbys))
    p = plan(r, wanted=wanted, lost_for=lost, down_for=down, repair_after=5.0, serving=serving)
    drop, need = (p.drop, p.need) if p is not None else ((), 0)
    kept = [c for c in r.standby_clusters if c not in drop]
    assert set(drop) <= set(r.standby_clusters)
    assert location not in kept
    assert all(((lost.get(c) or 0) < 5 or c in serving) and down.get(c, 0) < 5 for c in kept)
    # Exactly: every healthy standby is kept (a serving one even while its cluster counts as lost), up to `wanted`.
    healthy = [c for c in r.standby_clusters
               if c != location and down.get(c, 0) < 5 and ((lost.get(c) or 0) < 5 or c in serving)]
    assert kept == healthy[:wanted]
    assert len(kept) <= wanted and len(kept) + need == wanted


def test_candidates_avoid_the_primary_and_standbys_and_prefer_other_tiers() -> None:
    views = {v.name: v for v in (view("a", "edge"), view("b", "edge"), view("c", "cloud"), view("d", "fog"),
                                 view("e", "cloud", alive=False))}
    req = Requirements(cpu=0.1, memory=1 << 20)
    order = candidates(record("a", ("d",)), views, req=req, policy="balanced")
    assert order[0] == "c" and set(order) == {"b", "c"}  # not a, d (taken) nor e (dead); edge and fog last
    full = {**views, "c": view("c", "cloud", slots_used=4)}
    assert candidates(record("a", ("d",)), full, req=req, policy="balanced") == ["b"]  # admission applies
