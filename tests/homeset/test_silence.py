"""The home watch's timing math (peer/homeset/silence.py) and the stewardship it feeds
(peer/homeset/stewardship.py): pure, table-tested like memberlist's suspicion.go, plus properties."""
from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from peer.records.record import Record, State
from peer.homeset.silence import PeerSilence, SilenceRule
from peer.homeset.stewardship import Liveness, Observed, watched_peers

RULE = SilenceRule()  # interval 0.5 s, timeout 1.0 s, 3 failures
GRACE = 2.0


@pytest.mark.parametrize(("rule", "grace", "tolerated", "refused", "cut_off"), [
    (RULE, GRACE, 3.0, 3.5, 6.5),  # the defaults: 3.5 s for a lost site instead of Serf's ~7.35 s
    (SilenceRule(interval=0.5, timeout=1.0, failures=1), GRACE, 2.0, 2.5, 3.5),
    (SilenceRule(interval=1.0, timeout=0.5, failures=4), 0.0, 3.0, 4.0, 6.0),
    (SilenceRule(interval=0.25, timeout=0.25, failures=2), 5.0, 5.25, 5.5, 6.0),
])
def test_bounds(rule: SilenceRule, grace: float, tolerated: float, refused: float, cut_off: float) -> None:
    assert rule.tolerated_silence(grace) == pytest.approx(tolerated)
    assert rule.worst_detection(grace, timing_out=False) == pytest.approx(refused)
    assert rule.worst_detection(grace, timing_out=True) == pytest.approx(cut_off)
    assert rule.tolerated_silence(grace) < rule.worst_detection(grace, timing_out=False)


@pytest.mark.parametrize("bad", [dict(interval=0), dict(timeout=-1), dict(failures=0)])
def test_a_rule_refuses_nonsense(bad: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        SilenceRule(**bad)  # type: ignore[arg-type]


# (answered?, at) pings in order -> the mark after each one
@pytest.mark.parametrize(("pings", "marks"), [
    ([(True, 0.0), (True, 0.5)], [None, None]),
    ([(False, 0.0), (False, 0.5), (False, 1.0), (False, 1.5)], [None, None, 1.0, 1.0]),
    ([(False, 0.0), (False, 0.5), (True, 1.0), (False, 1.5), (False, 2.0)], [None] * 5),
    ([(False, 0.0), (False, 0.5), (False, 1.0), (True, 1.5), (False, 2.0)], [None, None, 1.0, None, None]),
    ([(False, 0.0), (False, 1.5), (False, 3.0)], [None, None, 3.0]),  # timeouts: later, same rule
])
def test_a_run_of_failures_marks_the_peer(pings: list[tuple[bool, float]], marks: list[float | None]) -> None:
    state = PeerSilence()
    assert [state.observe(ok, at, RULE) for ok, at in pings] == marks


def record(homes: tuple[str, ...], *, name: str = "s", tombstone: bool = False) -> Record:
    return Record(name=name, home=homes[0], location="c9", state=State.RUNNING, digest="", descriptor=b"",
                  homes=homes, tombstone=tombstone)


def test_silence_counts_after_the_grace_and_an_answer_clears_it() -> None:
    alive = {"c1": Observed("alive", 0.0)}
    live = Liveness("c2", home_grace=GRACE)
    r = record(("c1", "c2"))
    live.mark_silent("c1", 10.0)
    assert live.steward(r, alive, 11.9) == "c1"  # within the grace: still the HC
    assert live.steward(r, alive, 12.0) == "c2"
    assert live.lost_for("c1", alive, 13.0) == pytest.approx(3.0)
    live.mark_silent("c1", 12.5)  # a later mark does not restart the clock
    assert live.lost_for("c1", alive, 13.0) == pytest.approx(3.0)
    live.forget_silent("c1")
    assert live.steward(r, alive, 13.0) == "c1"


def test_a_pause_shorter_than_the_tolerated_silence_keeps_stewardship() -> None:
    """Pings fail at once from t=0 (the worst case), every `interval`, until the HC answers at
    `tolerated - epsilon`: the mark came, the grace had not run out."""
    alive = {"c1": Observed("alive", 0.0)}
    live, state, r = Liveness("c2", home_grace=GRACE), PeerSilence(), record(("c1", "c2"))
    resume = RULE.tolerated_silence(GRACE) - 0.01
    t = 0.0
    while t < resume:
        marked = state.observe(False, t, RULE)
        if marked is not None:
            live.mark_silent("c1", marked)
        assert live.steward(r, alive, t) == "c1", t
        t += RULE.interval
    assert live.steward(r, alive, resume) == "c1"
    if state.observe(True, resume, RULE) is None:
        live.forget_silent("c1")
    assert live.steward(r, alive, resume + 10) == "c1"


def test_watched_peers_are_the_entries_ahead() -> None:
    records = [record(("c1", "c2", "c3"), name="a"), record(("c4", "c3"), name="b"),
               record(("c3", "c5"), name="c"), record(("c6", "c3"), name="d", tombstone=True),
               record(("c7", "c8"), name="e")]
    assert watched_peers(records, "c3") == {"c1", "c2", "c4"}
    assert watched_peers(records, "c1") == frozenset()
    assert watched_peers(records, "c5") == {"c3"}


names = st.sampled_from([f"c{i}" for i in range(1, 7)])
home_sets = st.lists(names, min_size=1, max_size=4, unique=True).map(tuple)


@given(st.lists(home_sets, max_size=30), names)
def test_one_probe_per_peer_never_self_never_behind(sets: list[tuple[str, ...]], here: str) -> None:
    records = [record(h, name=f"s{i}") for i, h in enumerate(sets)]
    watched = watched_peers(records, here)
    assert here not in watched
    assert len(watched) <= len({c for h in sets for c in h})  # bounded by clusters, not services
    for peer in watched:
        assert any(here in h and h.index(peer) < h.index(here) for h in sets if peer in h)


@given(st.lists(st.booleans(), max_size=60))
def test_never_marked_without_enough_failures_in_a_row(answers: list[bool]) -> None:
    state, run = PeerSilence(), 0
    for i, ok in enumerate(answers):
        run = 0 if ok else run + 1
        marked = state.observe(ok, i * RULE.interval, RULE)
        assert (marked is not None) == (run >= RULE.failures)
