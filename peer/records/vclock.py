"""Vector clocks keyed by cluster name, after riak_core's `vclock`: an immutable value and pure
relation verbs, with time passed in.

A clock is a sorted tuple of entries (node, counter, timestamp). The counter orders a node's own
changes; the timestamp (wall time of the node's latest change) is informational only and never
decides an order. Clusters are few, so there is no pruning: one entry per cluster, for ever.
"""
from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

MAX_NODE_LEN = 253  # a Serf node name is a hostname-like label
MAX_ENTRIES = 1024


class VClockDecodeError(ValueError):
    """Wire data is not a vector clock; the message says what is wrong."""


@dataclass(frozen=True, slots=True)
class Entry:
    node: str
    counter: int
    timestamp: float


@dataclass(frozen=True, slots=True)
class VClock:
    """Immutable; build through the functions below. Entries sorted by node, counters >= 1."""

    entries: tuple[Entry, ...] = ()

    def __post_init__(self) -> None:
        prev = None
        for e in self.entries:
            if prev is not None and e.node <= prev:
                raise ValueError(f"vclock entries not sorted or repeated at {e.node!r}")
            if e.counter < 1:
                raise ValueError(f"vclock counter for {e.node!r} must be >= 1")
            prev = e.node

    def __repr__(self) -> str:
        return "VClock(" + ", ".join(f"{e.node}:{e.counter}" for e in self.entries) + ")"


_FRESH = VClock()


def fresh() -> VClock:
    return _FRESH


def get_counter(clock: VClock, node: str) -> int:
    for e in clock.entries:
        if e.node == node:
            return e.counter
    return 0


def get_timestamp(clock: VClock, node: str) -> float | None:
    for e in clock.entries:
        if e.node == node:
            return e.timestamp
    return None


def counters(clock: VClock) -> dict[str, int]:
    """What the admin API shows as `vclock`."""
    return {e.node: e.counter for e in clock.entries}


def total(clock: VClock) -> int:
    """Sum of counters: grows with every change, so it extends the causal order to numbers."""
    return sum(e.counter for e in clock.entries)


def nodes(clock: VClock) -> frozenset[str]:
    return frozenset(e.node for e in clock.entries)


def increment(clock: VClock, node: str, *, timestamp: float, at_least: int = 0) -> VClock:
    """Record one change by `node`. `at_least` lets a writer jump its own counter forward
    (never another node's): a counter that only grows keeps every (node, counter) unique."""
    if not node:
        raise ValueError("vclock node must be a non-empty string")
    new = Entry(node, max(get_counter(clock, node) + 1, at_least), float(timestamp))
    rest = [e for e in clock.entries if e.node != node]
    rest.append(new)
    rest.sort(key=lambda e: e.node)
    return VClock(tuple(rest))


def _pick(a: Entry, b: Entry) -> Entry:
    if a.counter != b.counter:
        return a if a.counter > b.counter else b
    return a if a.timestamp >= b.timestamp else b


def merge(a: VClock, b: VClock) -> VClock:
    """Least upper bound: per node the higher counter (ties: the later timestamp)."""
    if a is b or not b.entries:
        return a
    if not a.entries:
        return b
    by_node = {e.node: e for e in a.entries}
    for e in b.entries:
        mine = by_node.get(e.node)
        by_node[e.node] = e if mine is None else _pick(mine, e)
    return VClock(tuple(by_node[n] for n in sorted(by_node)))


def merge_all(clocks: Iterable[VClock]) -> VClock:
    out = _FRESH
    for c in clocks:
        out = merge(out, c)
    return out


def descends(a: VClock, b: VClock) -> bool:
    """True when `a` has seen every change `b` has (a >= b); every clock descends fresh()."""
    mine = counters(a)
    return all(mine.get(e.node, 0) >= e.counter for e in b.entries)


def dominates(a: VClock, b: VClock) -> bool:
    """Strictly newer: `a` descends `b` and `b` does not descend `a`."""
    return descends(a, b) and not descends(b, a)


def concurrent(a: VClock, b: VClock) -> bool:
    """Neither has seen all of the other's changes: a conflict if the contents differ."""
    return not descends(a, b) and not descends(b, a)


def same(a: VClock, b: VClock) -> bool:
    """Equal counters (timestamps aside)."""
    return descends(a, b) and descends(b, a)


def encode(clock: VClock) -> list[list[object]]:
    """Plain msgpack-able data: [[node, counter, timestamp], ...] sorted by node."""
    return [[e.node, e.counter, e.timestamp] for e in clock.entries]


def decode(data: object) -> VClock:
    """Strict inverse of `encode`; raises VClockDecodeError."""
    if not isinstance(data, (list, tuple)):
        raise VClockDecodeError(f"expected a list of entries, got {type(data).__name__}")
    if len(data) > MAX_ENTRIES:
        raise VClockDecodeError(f"too many entries ({len(data)} > {MAX_ENTRIES})")
    entries: list[Entry] = []
    for i, item in enumerate(data):
        if not isinstance(item, (list, tuple)) or len(item) != 3:
            raise VClockDecodeError(f"entry {i}: expected [node, counter, timestamp]")
        node, counter, ts = item
        if not isinstance(node, str) or not node or len(node) > MAX_NODE_LEN:
            raise VClockDecodeError(f"entry {i}: node must be a non-empty string of <= {MAX_NODE_LEN} chars")
        if isinstance(counter, bool) or not isinstance(counter, int) or counter < 1 or counter >= 2**63:
            raise VClockDecodeError(f"entry {i}: counter must be an integer in [1, 2**63)")
        if isinstance(ts, bool) or not isinstance(ts, (int, float)) or not math.isfinite(ts):
            raise VClockDecodeError(f"entry {i}: timestamp must be a finite number")
        entries.append(Entry(node, counter, float(ts)))
    try:
        return VClock(tuple(entries))
    except ValueError as exc:
        raise VClockDecodeError(str(exc)) from exc
