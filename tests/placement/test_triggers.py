"""Migration triggers: the paper's deep-edge/edge/cloud use case as a table, plus no-flap checks."""
from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Mapping

import pytest
from hypothesis import given
from hypothesis import strategies as st

from placement import (
    ClusterView,
    ComeHome,
    Decision,
    InvalidThresholds,
    LinkQuality,
    Move,
    Requirements,
    Stay,
    Thresholds,
    admit,
    decide,
    link_quality,
)
from tests.placement.strategies import NAMES, PROPERTY, cluster_views, requirements

G = 1 << 30
HOME = "deep"
CLASSIFIER = Requirements(cpu=1.0, memory=512 << 20)
T = Thresholds()  # move out >= 50 Mbps, come home < 10 Mbps, rtt 50/200 ms, dwell 60 s

BASE = {
    "deep": ClusterView("deep", True, "deep-edge", 4.0, 2.0, 4 * G, 2 * G, 10, 3),
    "edge": ClusterView("edge", True, "edge", 16.0, 4.0, 32 * G, 8 * G, 50, 10,
                        rtt_ms=10.0, bandwidth_mbps=100.0),
    "cloud": ClusterView("cloud", True, "cloud", 64.0, 16.0, 256 * G, 64 * G, 200, 50,
                         rtt_ms=40.0, bandwidth_mbps=500.0),
}


def world(at: str, req: Requirements = CLASSIFIER, **changes: dict[str, object]) -> dict[str, ClusterView]:
    """The three clusters with the service's own load on `at`; `gone=True` drops a member."""
    views = {}
    for name, view in BASE.items():
        change = dict(changes.get(name, {}))
        if change.pop("gone", False):
            continue
        view = dataclasses.replace(view, **change)  # type: ignore[arg-type]
        if name == at:
            view = dataclasses.replace(view, cpu_used=view.cpu_used + req.cpu,
                                       mem_used=view.mem_used + req.memory,
                                       slots_used=view.slots_used + 1)
        views[name] = view
    return views


def run(at: str, *, moved_ago: float = 1e6, req: Requirements = CLASSIFIER,
        **changes: dict[str, object]) -> Decision:
    return decide(req=req, current=at, home=HOME, views=world(at, req, **changes),
                  last_move_at=1e6 - moved_ago, now=1e6, thresholds=T)


CASES: list[tuple[str, Decision, dict[str, object]]] = [
    ("good links: the classifier leaves the deep-edge for the cloud",
     Move("cloud", "", "improve"), dict(at="deep")),
    ("in the cloud with good links: stay",
     Stay(""), dict(at="cloud")),
    ("at the edge, cloud only slightly better: stay (min gain)",
     Stay(""), dict(at="edge")),
    ("cloud link below come-home, edge link good: go to the edge",
     Move("edge", "", "link"), dict(at="cloud", cloud={"bandwidth_mbps": 5.0})),
    ("cloud link below come-home, edge link only fair: come home",
     ComeHome("", "link"), dict(at="cloud", cloud={"bandwidth_mbps": 5.0}, edge={"bandwidth_mbps": 20.0})),
    ("cloud link in the hysteresis band: stay",
     Stay(""), dict(at="cloud", cloud={"bandwidth_mbps": 30.0})),
    ("cloud rtt above come-home: go to the edge",
     Move("edge", "", "link"), dict(at="cloud", cloud={"rtt_ms": 250.0})),
    ("cloud rtt in the band (bandwidth good): stay",
     Stay(""), dict(at="cloud", cloud={"rtt_ms": 120.0})),
    ("cloud failed, edge fine: the edge takes it",
     Move("edge", "", "lost"), dict(at="cloud", cloud={"alive": False})),
    ("outage: home sees edge and cloud failed: come home",
     ComeHome("", "lost"), dict(at="cloud", cloud={"alive": False}, edge={"alive": False})),
    ("current host unknown to gossip counts as lost",
     ComeHome("", "lost"), dict(at="cloud", cloud={"gone": True}, edge={"gone": True})),
    ("lost and home full: come home anyway (fail-safe)",
     ComeHome("", "lost"), dict(at="cloud", cloud={"alive": False}, edge={"alive": False},
                                deep={"slots_used": 10})),
    ("bad link, nowhere else admits: stay rather than go dark",
     Stay(""), dict(at="cloud", cloud={"bandwidth_mbps": 5.0}, edge={"alive": False},
                    deep={"slots_used": 10})),
    ("dwell blocks an improvement",
     Stay(""), dict(at="deep", moved_ago=10.0)),
    ("dwell does not block leaving a bad link",
     Move("edge", "", "link"), dict(at="cloud", moved_ago=1.0, cloud={"bandwidth_mbps": 5.0})),
    ("dwell does not block leaving a lost host",
     ComeHome("", "lost"), dict(at="cloud", moved_ago=1.0, cloud={"alive": False}, edge={"alive": False})),
    ("edge overloaded: move to the cloud although the score gain is small",
     Move("cloud", "", "overload"), dict(at="edge", edge={"cpu_used": 14.0})),
    ("edge overloaded, every target would be too busy after placing: stay",
     Stay(""), dict(at="edge", edge={"cpu_used": 14.0}, cloud={"cpu_used": 48.0}, deep={"cpu_used": 3.0})),
    ("cloud draining: not a target, the edge gets it",
     Move("edge", "", "improve"), dict(at="deep", cloud={"accepting": False})),
    ("cloud link unmeasured: not a target, the edge gets it",
     Move("edge", "", "improve"), dict(at="deep", cloud={"bandwidth_mbps": None, "rtt_ms": None})),
    ("cloud link only fair: not a target, the edge gets it",
     Move("edge", "", "improve"), dict(at="deep", cloud={"bandwidth_mbps": 45.0})),
    ("every link only fair: stay at home",
     Stay(""), dict(at="deep", cloud={"bandwidth_mbps": 45.0}, edge={"bandwidth_mbps": 20.0})),
    ("home down while the service runs at home: nothing to do",
     Stay(""), dict(at="deep", deep={"alive": False})),
    ("tier constraint excludes the cloud: the edge gets it",
     Move("edge", "", "improve"), dict(at="deep", req=dataclasses.replace(
         CLASSIFIER, tiers=frozenset({"deep-edge", "edge"})))),
    ("avoid excludes the edge: bad cloud link comes home",
     ComeHome("", "link"), dict(at="cloud", req=dataclasses.replace(
         CLASSIFIER, avoid=frozenset({"edge"})), cloud={"bandwidth_mbps": 5.0})),
]


@pytest.mark.parametrize("title, expected, kwargs", CASES, ids=[c[0] for c in CASES])
def test_decision_table(title: str, expected: Decision, kwargs: dict[str, object]) -> None:
    got = run(**kwargs)  # type: ignore[arg-type]
    assert type(got) is type(expected), got
    if isinstance(expected, Move):
        assert isinstance(got, Move) and (got.target, got.trigger) == (expected.target, expected.trigger), got
    if isinstance(expected, ComeHome):
        assert isinstance(got, ComeHome) and got.trigger == expected.trigger, got
    assert got.reason


@pytest.mark.parametrize(
    "change, quality",
    [
        ({}, LinkQuality.GOOD),
        ({"bandwidth_mbps": 50.0}, LinkQuality.GOOD),  # thresholds are inclusive for moving out
        ({"bandwidth_mbps": 49.9}, LinkQuality.FAIR),
        ({"bandwidth_mbps": 10.0}, LinkQuality.FAIR),
        ({"bandwidth_mbps": 9.9}, LinkQuality.BAD),
        ({"rtt_ms": 50.0}, LinkQuality.GOOD),
        ({"rtt_ms": 51.0}, LinkQuality.FAIR),
        ({"rtt_ms": 201.0}, LinkQuality.BAD),
        ({"bandwidth_mbps": None}, LinkQuality.GOOD),  # rtt alone known and good
        ({"bandwidth_mbps": None, "rtt_ms": None}, LinkQuality.FAIR),  # nothing known
        ({"alive": False}, LinkQuality.BAD),
        ({"name": HOME, "bandwidth_mbps": 1.0}, LinkQuality.GOOD),  # home's link to itself
    ],
)
def test_link_quality(change: dict[str, object], quality: LinkQuality) -> None:
    view = dataclasses.replace(BASE["cloud"], **change)  # type: ignore[arg-type]
    assert link_quality(view, home=HOME, thresholds=T) == quality
    assert link_quality(None, home=HOME, thresholds=T) == LinkQuality.BAD


@pytest.mark.parametrize(
    "kw",
    [{"come_home_mbps": 50.0}, {"move_out_rtt_ms": 300.0}, {"target_max_cpu": 0.95},
     {"min_dwell_s": -1.0}, {"min_gain": math.nan}],
)
def test_thresholds_without_a_hysteresis_band_are_refused(kw: dict[str, float]) -> None:
    with pytest.raises(InvalidThresholds):
        Thresholds(**kw)


def simulate(cloud_bw: Iterable[float], *, start: str, step_s: float = 10.0,
             edge: Mapping[str, object] | None = None) -> list[str]:
    """Feed a bandwidth series for the home-cloud link, apply every decision, return the moves."""
    at, last_move, moves = start, -math.inf, []
    for i, bw in enumerate(cloud_bw):
        now = i * step_s
        views = world(at, cloud={"bandwidth_mbps": bw}, edge=dict(edge or {}))
        d = decide(req=CLASSIFIER, current=at, home=HOME, views=views,
                   last_move_at=last_move, now=now, thresholds=T)
        if isinstance(d, Move | ComeHome):
            at = d.target if isinstance(d, Move) else HOME
            last_move = now
            moves.append(at)
    return moves


def test_bandwidth_oscillating_around_move_out_does_not_flap() -> None:
    wobble = [55.0, 45.0] * 30
    assert simulate(wobble, start="deep") == ["cloud"]  # moves out once, then holds
    assert simulate(wobble, start="cloud") == []


def test_bandwidth_oscillating_around_come_home_does_not_flap() -> None:
    wobble = [8.0, 12.0] * 30
    assert simulate(wobble, start="cloud") == ["edge"]
    assert simulate(wobble, start="cloud", edge={"alive": False}) == [HOME]


def test_wild_swings_are_rate_limited_by_dwell() -> None:
    swings = [5.0, 500.0] * 30  # 600 s, far across both thresholds at every step
    moves = simulate(swings, start="cloud", edge={"alive": False})
    # Leaving the bad link is immediate; going back out waits min_dwell_s: one round trip per dwell.
    assert moves[:2] == [HOME, "cloud"]
    assert len(moves) <= 2 * (600 / T.min_dwell_s) + 1


def test_degradation_then_outage_then_recovery_walks_the_paper_use_case() -> None:
    at, t = "deep", 0.0
    steps = [
        ({}, "cloud"),  # good bandwidth: classifier to the cloud
        ({"cloud": {"bandwidth_mbps": 4.0}}, "edge"),  # degraded: to the edge
        ({"cloud": {"alive": False}, "edge": {"alive": False}}, HOME),  # outage: home
    ]
    last = -math.inf
    for changes, where in steps:
        d = decide(req=CLASSIFIER, current=at, home=HOME, views=world(at, **changes),  # type: ignore[arg-type]
                   last_move_at=last, now=t, thresholds=T)
        assert isinstance(d, Move | ComeHome), d
        at, last, t = (d.target if isinstance(d, Move) else HOME), t, t + 5.0
        assert at == where, d


@PROPERTY
@given(
    req=requirements,
    views=st.lists(cluster_views(), unique_by=lambda v: v.name, max_size=len(NAMES)),
    current=st.sampled_from(NAMES),
    home=st.sampled_from(NAMES),
    moved_ago=st.floats(0, 200, allow_nan=False),
    data=st.data(),
)
def test_decide_never_moves_anywhere_unfit(
    req: Requirements, views: list[ClusterView], current: str, home: str,
    moved_ago: float, data: st.DataObject,
) -> None:
    by_name = {v.name: v for v in views}
    d = decide(req=req, current=current, home=home, views=by_name,
               last_move_at=1000.0 - moved_ago, now=1000.0, thresholds=T)
    shuffled = dict(data.draw(st.permutations(list(by_name.items()))))
    assert d == decide(req=req, current=current, home=home, views=shuffled,
                       last_move_at=1000.0 - moved_ago, now=1000.0, thresholds=T)
    if isinstance(d, Move):
        target = by_name[d.target]
        assert d.target not in (current, home)
        assert admit(req, target) is None
        assert link_quality(target, home=home, thresholds=T) == LinkQuality.GOOD
    if isinstance(d, ComeHome):
        assert current != home
    if isinstance(d, Move | ComeHome) and moved_ago < T.min_dwell_s:
        assert d.trigger in ("lost", "link")
