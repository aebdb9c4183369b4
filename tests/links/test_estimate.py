"""peer.links.estimate: the pure rules of the link estimate and its probe budget (tables and
Hypothesis). The I/O side is tests/links/test_probe_io.py."""
from __future__ import annotations

import statistics
from collections import deque

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from peer.links.estimate import (
    MAX_MBPS, OVERHEAD_BYTES, WINDOW, InvalidBudget, LinkState, ProbeBudget, estimate, full_cost, measured, median,
    peers_that_matter, probe_due, record_ping, record_probe, record_response_time, record_traffic,
    record_unreachable, sent, spacing, spent,
)

B = ProbeBudget()


def steady(mbps: float, at: float = 0.0) -> LinkState:
    """Three agreeing probes at `at`..`at + 2` (their bytes long out of the budget's window)."""
    state = LinkState()
    for i in range(3):
        state.last_probe_at = at + i
        record_probe(state, at + i, mbps)
    return state


# -- when a probe is due -----------------------------------------------------------------------

@pytest.mark.parametrize("case, state, now, want", [
    ("never measured", LinkState(), 0.0, "full"),
    ("fresh estimate", steady(100.0), 10.0, None),
    ("stale estimate", steady(100.0), 2 + B.stale_after, "full"),
    ("stale but the minute's budget is spent", steady(100.0, at=50.0), 52 + B.stale_after, None),
])
def test_probe_due_table(case: str, state: LinkState, now: float, want: str | None) -> None:
    if case.endswith("spent"):
        sent(state, now - 1, B.per_minute - spent(state, now - 1))
    assert probe_due(state, now, budget=B) == want, case


def test_a_slow_link_is_probed_at_most_at_its_share() -> None:
    state = steady(1.0)  # 1 Mbit/s: one 64 KiB probe per 52 s keeps to 1 %
    gap = spacing(state, budget=B)
    assert gap == pytest.approx(B.probe_bytes * 8 / (0.01 * 1e6))
    assert probe_due(state, 2 + B.stale_after, budget=B) is None
    assert probe_due(state, 2 + gap, budget=B) == "full"


def test_unreachable_measures_zero_at_once_then_only_pings() -> None:
    state = steady(100.0)
    sent(state, 30.0, OVERHEAD_BYTES)
    record_unreachable(state, 30.5, sent_bytes=OVERHEAD_BYTES, waited_s=0.5)
    assert estimate(state, 31.0, budget=B).bandwidth_mbps == 0.0
    assert estimate(state, 31.0, budget=B).source == "unreachable"
    assert probe_due(state, 31.0, budget=B) is None  # pings are spaced by ping_every
    assert probe_due(state, 30.0 + B.ping_every, budget=B) == "ping"
    record_ping(state, 36.0)
    assert estimate(state, 36.0, budget=B).bandwidth_mbps is None  # reachable, not yet measured
    assert probe_due(state, 36.0, budget=B) == "full"


def test_a_probe_that_times_out_is_an_upper_bound_confirmed_before_it_counts() -> None:
    state = steady(100.0)
    record_unreachable(state, 30.0, sent_bytes=B.probe_bytes, waited_s=5.0)
    assert estimate(state, 30.0, budget=B).bandwidth_mbps == 100.0 and state.suspect
    record_unreachable(state, 35.0, sent_bytes=B.probe_bytes, waited_s=5.0)
    assert estimate(state, 35.0, budget=B).bandwidth_mbps == pytest.approx(B.probe_bytes * 8 / 5 / 1e6, rel=0.01)


def test_busy_traffic_confirms_the_estimate_and_idle_traffic_does_not() -> None:
    state = steady(40.0)
    record_traffic(state, 15.0, carried_bytes=1000, interval_s=2.0, budget=B)  # 4 kbit/s: says nothing
    assert estimate(state, 15.0, budget=B).age_s == pytest.approx(13.0)
    record_traffic(state, 16.0, carried_bytes=12_500_000, interval_s=2.0, budget=B)  # 50 Mbit/s carried
    e = estimate(state, 16.0, budget=B)
    assert e.age_s == 0.0 and e.source == "traffic"
    assert probe_due(state, 16.0 + B.stale_after - 1, budget=B) is None


def test_a_response_time_jump_makes_the_estimate_suspect() -> None:
    state = steady(100.0)
    for _ in range(5):
        record_response_time(state, 5.0)
    assert not state.suspect
    record_response_time(state, 80.0)
    assert state.suspect
    assert probe_due(state, 4.0, budget=B) == "full"  # fresh, but suspect: confirm now


def test_estimate_carries_age_confidence_and_serf_rtt() -> None:
    state = steady(100.0)
    e = estimate(state, 2.0, budget=B, serf_rtt_ms=1.5)
    assert (e.bandwidth_mbps, e.rtt_ms, e.age_s, e.confidence) == (100.0, 1.5, 0.0, 1.0)
    assert estimate(state, 2 + 1.5 * B.stale_after, budget=B).confidence == pytest.approx(0.5)
    assert estimate(state, 3 + B.forget_after, budget=B).bandwidth_mbps is None


@pytest.mark.parametrize("ping, probe, size, want", [
    (0.010, 0.110, 64 * 1024, 64 * 1024 * 8 / 0.1 / 1e6),  # RTT and overheads cancel out
    (0.010, 0.009, 64 * 1024, MAX_MBPS),  # noise: faster than the ping, as fast as it can tell
])
def test_measured(ping: float, probe: float, size: int, want: float) -> None:
    assert measured(ping, probe, size) == pytest.approx(want)


def test_peers_that_matter() -> None:
    got = peers_that_matter(here="a", hosts=["b", "a", "s"], rankings=[["a", "c", "d", "e"], ["f"]], candidates=2)
    assert got == {"b", "s", "c", "d", "f"}


@pytest.mark.parametrize("field, value", [("per_minute", -1), ("probe_bytes", 1.5), ("share", 0.0),
                                          ("share", 2.0), ("stale_after", float("nan")), ("ping_every", True)])
def test_bad_budget_names_the_field(field: str, value: object) -> None:
    with pytest.raises(InvalidBudget, match=field):
        ProbeBudget(**{field: value})  # type: ignore[arg-type]


def test_zero_budget_means_passive_only() -> None:
    assert probe_due(LinkState(), 0.0, budget=ProbeBudget(per_minute=0)) is None


# -- properties ---------------------------------------------------------------------------------

budgets = st.builds(ProbeBudget, probe_bytes=st.sampled_from([16 * 1024, 64 * 1024]),
                    per_minute=st.integers(0, 1 << 20), share=st.floats(0.001, 0.2),
                    stale_after=st.floats(1.0, 60.0))
outcomes = st.one_of(st.floats(0.05, 2000.0), st.just("timeout"), st.just("down"))


@settings(max_examples=150, deadline=None)
@given(budget=budgets, results=st.lists(outcomes, min_size=1, max_size=200),
       step=st.floats(0.2, 5.0))
def test_the_budget_holds_in_every_minute(budget: ProbeBudget, results: list[object], step: float) -> None:
    """Whatever the link answers, the probe never sends more than `per_minute` in any 60 s,
    and a probe that is not confirming a suspect estimate keeps to `share` of the estimate."""
    state, now, sends = LinkState(), 0.0, []
    for result in results:
        now += step
        kind = probe_due(state, now, budget=budget)
        if kind is None:
            continue
        cost = OVERHEAD_BYTES if kind == "ping" else full_cost(budget)
        if kind == "full" and state.last_probe_at is not None and state.samples and not state.unreachable:
            assert now - state.last_probe_at >= spacing(state, budget=budget) - 1e-9
        sent(state, now, cost)
        sends.append((now, cost))
        if result == "down":
            record_unreachable(state, now, sent_bytes=OVERHEAD_BYTES, waited_s=1.0)
        elif kind == "ping":
            record_ping(state, now)
        elif result == "timeout":
            record_unreachable(state, now, sent_bytes=budget.probe_bytes, waited_s=5.0)
        else:
            assert isinstance(result, float)
            record_probe(state, now, result)
    for at, _ in sends:
        assert sum(c for t, c in sends if at <= t < at + WINDOW) <= budget.per_minute


@settings(max_examples=150, deadline=None)
@given(before=st.floats(50.0, 1000.0), after=st.floats(0.5, 9.0), noise=st.floats(0.8, 1.25),
       start=st.floats(0.0, 30.0))
def test_a_drop_shows_within_two_probes(before: float, after: float, noise: float, start: float) -> None:
    """A link that falls from GOOD to BAD reads BAD within stale_after plus one spacing (at
    the old rate) plus two ticks: the first low probe makes the estimate suspect, the second
    moves the median."""
    state, now = steady(before), 2.0
    while now < 2.0 + start:  # steady probing at the old rate
        now += 1.0
        if probe_due(state, now, budget=B):
            sent(state, now, full_cost(B))
            record_probe(state, now, before * noise)
    dropped = now
    while estimate(state, now, budget=B).bandwidth_mbps >= 10.0:  # type: ignore[operator]
        now += 1.0
        assert now - dropped <= B.stale_after + spacing(steady(before * 1.25), budget=B) + 2.0
        if probe_due(state, now, budget=B):
            sent(state, now, full_cost(B))
            record_probe(state, now, after)


@given(good=st.lists(st.floats(100.0, 190.0), min_size=3, max_size=10), outlier=st.floats(0.0, 5.0),
       at=st.integers(0, 9))
def test_one_outlier_never_moves_the_estimate(good: list[float], outlier: float, at: int) -> None:
    """A link steady within 2x, one wild probe anywhere after the first: the estimate stays
    within the steady band."""
    state = LinkState()
    samples = list(good)
    samples.insert(min(at, len(samples) - 1) + 1, outlier)
    for i, mbps in enumerate(samples):
        record_probe(state, float(i), mbps)
        assert estimate(state, float(i), budget=B).bandwidth_mbps >= 100.0 * 0.999  # type: ignore[operator]


def test_a_confirmed_change_drops_the_old_samples() -> None:
    state = steady(1000.0)
    record_probe(state, 30.0, 12.0)  # tbf's burst flatters the first probe
    assert estimate(state, 30.0, budget=B).bandwidth_mbps == 1000.0 and state.suspect
    record_probe(state, 31.0, 3.0)  # same side: a new regime, the old samples go
    assert list(state.samples) == [12.0, 3.0] and not state.suspect
    assert estimate(state, 31.0, budget=B).bandwidth_mbps == pytest.approx(7.5)


def test_samples_on_both_sides_keep_the_estimate() -> None:
    state = steady(40.0)
    record_probe(state, 30.0, 5.0)
    record_probe(state, 31.0, 900.0)
    assert estimate(state, 31.0, budget=B).bandwidth_mbps == 40.0 and state.suspect


def test_the_default_budget_leaves_room_to_confirm_a_change() -> None:
    """Steady probing on staleness (3 a minute) plus the confirming probe fit the default
    per-minute budget: a drop is confirmed at once, not a window later."""
    state, now = LinkState(), 0.0
    while now < 120.0:
        if probe_due(state, now, budget=B) == "full":
            sent(state, now, full_cost(B))
            record_probe(state, now, 800.0)
        now += 1.0
    while probe_due(state, now, budget=B) is None:
        now += 1.0
    sent(state, now, full_cost(B))
    record_probe(state, now, 3.0)
    assert state.suspect
    assert probe_due(state, now + 1.0, budget=B) == "full"


def test_placement_reads_the_same_figures_as_the_api() -> None:
    """`LinkProbe.bandwidth` (every placement) agrees with `estimates` (GET /v1/members)."""
    from peer.links.probe import LinkProbe
    from peer.peering.client import PeerClient
    from tests.links.test_probe_io import Members, member

    probe = LinkProbe(here="me", client=PeerClient(b"s" * 32), members=Members(*(member(n, f"10.0.0.{i}", 1)
                      for i, n in enumerate(["me", "a", "b", "c"]))), responsibilities=list, clock=lambda: 50.0)
    for i in range(3):
        record_probe(probe.link("a"), 40.0 + i, 80.0)
    record_unreachable(probe.link("b"), 45.0, sent_bytes=OVERHEAD_BYTES, waited_s=2.0)
    api = {p: e.bandwidth_mbps for p, e in probe.estimates().items() if e.bandwidth_mbps is not None}
    assert probe.bandwidth() == api == {"a": 80.0, "b": 0.0}


def test_noise_between_fast_readings_is_not_a_change() -> None:
    """1 Gbit/s and 220 Mbit/s are the same link for every decision: no confirming probe."""
    state = steady(1000.0)
    record_probe(state, 30.0, 220.0)
    assert not state.suspect and probe_due(state, 31.0, budget=B) is None
    record_probe(state, 40.0, 90.0)  # below 100 (half of 200): worth confirming
    assert state.suspect


@given(st.lists(st.floats(min_value=0.0, max_value=1e4, allow_nan=False), min_size=1, max_size=20))
def test_median_is_statistics_median(samples: list[float]) -> None:
    """The local median (no statistics import in the daemon) gives what statistics.median gives."""
    assert median(samples) == statistics.median(samples)
    assert median(deque(samples)) == statistics.median(samples)


def test_median_of_nothing_is_refused() -> None:
    with pytest.raises(ValueError):
        median([])
