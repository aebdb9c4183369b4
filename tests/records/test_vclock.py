"""Vector clock laws, checked against a trivial model (a dict of counters), as riak's vclock_qc."""
from __future__ import annotations

from collections.abc import Callable

import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st

from peer.records import vclock as vc
from tests.records.strategies import clocks, clusters


def model_descends(a: dict[str, int], b: dict[str, int]) -> bool:
    return all(a.get(n, 0) >= c for n, c in b.items())


@given(clocks(), clocks())
def test_merge_is_commutative(a: vc.VClock, b: vc.VClock) -> None:
    assert vc.merge(a, b) == vc.merge(b, a)


@given(clocks(), clocks(), clocks())
def test_merge_is_associative(a: vc.VClock, b: vc.VClock, c: vc.VClock) -> None:
    assert vc.merge(vc.merge(a, b), c) == vc.merge(a, vc.merge(b, c))


@given(clocks())
def test_merge_is_idempotent(a: vc.VClock) -> None:
    assert vc.merge(a, a) == a
    assert vc.merge(a, vc.fresh()) == a


@given(clocks(), clocks())
def test_merge_is_the_least_upper_bound(a: vc.VClock, b: vc.VClock) -> None:
    m = vc.merge(a, b)
    assert vc.descends(m, a) and vc.descends(m, b)
    ca, cb = vc.counters(a), vc.counters(b)
    assert vc.counters(m) == {n: max(ca.get(n, 0), cb.get(n, 0)) for n in set(ca) | set(cb)}


@given(clocks(), clocks())
def test_relations_match_the_model_and_partition_all_pairs(a: vc.VClock, b: vc.VClock) -> None:
    ca, cb = vc.counters(a), vc.counters(b)
    assert vc.descends(a, b) == model_descends(ca, cb)
    relations = [vc.same(a, b), vc.dominates(a, b), vc.dominates(b, a), vc.concurrent(a, b)]
    assert sum(relations) == 1
    assert vc.concurrent(a, b) == vc.concurrent(b, a)


@given(clocks(), clusters, st.floats(0, 1e10))
def test_increment_dominates_and_keeps_time(a: vc.VClock, node: str, ts: float) -> None:
    b = vc.increment(a, node, timestamp=ts)
    assert vc.dominates(b, a)
    assert vc.get_counter(b, node) == vc.get_counter(a, node) + 1
    assert vc.get_timestamp(b, node) == ts
    assert vc.total(b) == vc.total(a) + 1


def test_increment_at_least_jumps_own_counter_only() -> None:
    a = vc.increment(vc.fresh(), "a", timestamp=1.0)
    b = vc.increment(a, "b", timestamp=2.0, at_least=7)
    assert vc.counters(b) == {"a": 1, "b": 7}
    assert vc.counters(vc.increment(b, "b", timestamp=3.0, at_least=2)) == {"a": 1, "b": 8}


def test_fresh_is_descended_by_everything() -> None:
    a = vc.increment(vc.fresh(), "a", timestamp=1.0)
    assert vc.descends(a, vc.fresh()) and not vc.descends(vc.fresh(), a)
    assert vc.same(vc.fresh(), vc.fresh())
    assert vc.counters(vc.fresh()) == {}


@given(clocks())
def test_encode_decode_round_trip_through_msgpack(a: vc.VClock) -> None:
    wire = msgpack.unpackb(msgpack.packb(vc.encode(a)), raw=False)
    assert vc.decode(wire) == a


@pytest.mark.parametrize("bad", [
    None, {}, "x", [["a", 1]], [["a", 0, 1.0]], [["", 1, 1.0]], [["a", 1, "t"]], [["a", True, 1.0]],
    [["b", 1, 1.0], ["a", 1, 1.0]], [["a", 1, 1.0], ["a", 2, 1.0]], [["a", 1, float("nan")]],
    [[1, 1, 1.0]], [["a", 2**64, 1.0]],
])
def test_decode_refuses_malformed(bad: object) -> None:
    with pytest.raises(vc.VClockDecodeError):
        vc.decode(bad)


@given(st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=3),
                    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=2), inner, max_size=3),
                    max_leaves=12))
def test_decode_of_anything_only_raises_its_error(data: object) -> None:
    try:
        vc.decode(data)
    except vc.VClockDecodeError:
        pass


actors = st.sampled_from(["a", "a~1f", "a~9c", "b", "b~00", "c", "ab", "a-b"])


@st.composite
def actor_clocks(draw: st.DrawFn) -> vc.VClock:
    """Clocks of data-dir actors (`cluster~epoch`), with timestamps of their own."""
    counters = draw(st.dictionaries(actors, st.tuples(st.integers(1, 4), st.sampled_from([1.0, 2.0])), max_size=6))
    return vc.VClock(tuple(vc.Entry(n, c, t) for n, (c, t) in sorted(counters.items())))


@given(actor_clocks(), actor_clocks())
def test_merge_and_descends_equal_the_dict_model_on_any_nodes(a: vc.VClock, b: vc.VClock) -> None:
    """`merge` and `descends` walk the two sorted entry lists side by side (issue 16): the same
    answers as a dict of entries per node, and a merged clock is one VClock's own checks accept."""
    by_node = {e.node: e for e in a.entries}
    for e in b.entries:
        mine = by_node.get(e.node)
        by_node[e.node] = e if mine is None or (e.counter, e.timestamp) > (mine.counter, mine.timestamp) else mine
    merged = vc.merge(a, b)
    assert merged.entries == tuple(by_node[n] for n in sorted(by_node))
    assert vc.VClock(merged.entries) == merged
    assert vc.descends(a, b) == model_descends(vc.counters(a), vc.counters(b))
    assert vc.descends(merged, a) and vc.descends(merged, b)


entry_parts = st.one_of(st.none(), st.booleans(), st.integers(-2, 2**64), st.floats(allow_nan=True),
                        st.sampled_from(["", "a", "a~1f", "b", "x" * vc.MAX_NODE_LEN, "y" * (vc.MAX_NODE_LEN + 1)]))


@given(st.one_of(
    st.lists(st.one_of(st.tuples(entry_parts, entry_parts, entry_parts).map(list),
                       st.tuples(entry_parts, entry_parts, entry_parts),
                       st.lists(entry_parts, max_size=4)), max_size=4),
    clocks().map(lambda c: [list(e) for e in vc.encode(c)]),
    clocks().map(lambda c: tuple(tuple(e) for e in vc.encode(c)))))
def test_decode_answers_as_the_checked_decode(data: object) -> None:
    """The short way for the wire's exact types takes and refuses what the checked decode
    does, and builds the same clock."""
    def outcome(decode: Callable[[object], vc.VClock]) -> object:
        try:
            clock = decode(data)
        except vc.VClockDecodeError:
            return "refused"
        except OverflowError:
            return "overflow"
        return clock.entries

    fast = outcome(vc.decode)
    assert fast == outcome(vc._decode_checked)
    if isinstance(fast, tuple):
        assert all(type(e.timestamp) is float for e in fast)
