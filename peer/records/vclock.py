"""Vector clocks keyed by cluster name, after riak_core's `vclock`: an immutable value and pure
relation verbs, with time passed in.

A clock is a sorted tuple of entries (node, counter, timestamp). The counter orders a node's own
changes; the timestamp (wall time of the node's latest change) is informational only and never
decides an order. Clusters are few, so there is no pruning: one entry per writer, for ever.

Writers ("actors") and clusters
-------------------------------
A (node, counter) pair must name exactly one write, or a new write can carry the clock of an
old one and be taken for it (equal) or for its past (older) and dropped. A counter can only be
trusted to grow while the history that produced it survives, and a cluster whose data dir is
lost (a rebuilt site, a deleted records.sqlite3) has lost it: counting on from what peers still
hold reuses every counter whose write never reached a peer, and a floor derived from wall time
fails when the clock steps back. So the node of an entry is the *actor* of one data dir:
`cluster~epoch`, with `epoch` drawn at random once when the store file is created and kept in
the same file as every record written under it (RecordStore.clock_actor). A rebuilt data dir
draws a new epoch and starts a clock entry no earlier write can have used: whatever was or was
not replicated before the loss, and whatever the wall clock does, its (node, counter) pairs
are new. A store that already held records before actors existed keeps the bare cluster name
as its actor (its history is intact, so its counters still grow), which keeps the clocks of
federations that never lost a disk byte-for-byte as before; the wire form is unchanged (nodes
are strings either way; a cluster name never contains `~`, see NAME_RE in peer/config.py).

Whatever needs a cluster rather than an actor (the merge's rank by the home's counter, the
tombstone acknowledgements, the admin API's `vclock`) aggregates a cluster's actors with
`cluster_counter` (the sum: it grows with every write of any of the cluster's data dirs, which
is all the merge's proofs use) and `clusters`.
"""
from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, NamedTuple

from peer.errors import InvalidKind

MAX_NODE_LEN = 253  # a Serf node name is a hostname-like label
MAX_ENTRIES = 1024
ACTOR_SEP = "~"  # between the cluster and the data dir's epoch in an actor id


class VClockDecodeError(InvalidKind, ValueError):
    """Wire data is not a vector clock; the message says what is wrong."""


class Entry(NamedTuple):
    """One writer's entry. A named tuple rather than a frozen dataclass: built for every entry
    of every clock decoded or merged, and a tuple is built (and compared) in C, several times
    faster than a frozen dataclass's `__init__` (anti-entropy builds hundreds of thousands)."""

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
    """{node: counter} per actor (the API shows `by_cluster`)."""
    return {e.node: e.counter for e in clock.entries}


def actor_id(cluster: str, epoch: str | None) -> str:
    """The clock node a data dir writes under (see the module docstring)."""
    return cluster if not epoch else f"{cluster}{ACTOR_SEP}{epoch}"


def cluster_of(node: str) -> str:
    """The cluster an actor belongs to ("c1~3fa9c2" -> "c1"; a bare cluster name is its own)."""
    return node.partition(ACTOR_SEP)[0]


def cluster_counter(clock: VClock, cluster: str) -> int:
    """Every write `cluster` made, under any of its data dirs' actors (the sum of their counters).

    (`cluster_of(node) == cluster`, spelt without splitting each node: the merge ranks every
    version by it. A name holding the separator is no cluster's: nothing is counted.)"""
    if ACTOR_SEP in cluster:
        return 0
    prefix = cluster + ACTOR_SEP
    return sum(e.counter for e in clock.entries if e.node == cluster or e.node.startswith(prefix))


def clusters(clock: VClock) -> frozenset[str]:
    """The clusters that wrote to this clock."""
    return frozenset(cluster_of(e.node) for e in clock.entries)


def by_cluster(clock: VClock) -> dict[str, int]:
    """What the admin API shows as `vclock`: {cluster: counter}, a cluster's actors summed."""
    out: dict[str, int] = {}
    for e in clock.entries:
        name = cluster_of(e.node)
        out[name] = out.get(name, 0) + e.counter
    return out


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
    ea, eb = a.entries, b.entries
    if ea == eb:
        return a
    # Both sorted by node: one pass over the two, as a merge of sorted lists (no dict, no sort).
    out: list[Entry] = []
    i = j = 0
    while i < len(ea) and j < len(eb):
        x, y = ea[i], eb[j]
        if x.node == y.node:
            out.append(_pick(x, y))
            i += 1
            j += 1
        elif x.node < y.node:
            out.append(x)
            i += 1
        else:
            out.append(y)
            j += 1
    out += ea[i:]
    out += eb[j:]
    return _checked(tuple(out))  # (entries of two valid clocks, in node order)


def merge_all(clocks: Iterable[VClock]) -> VClock:
    out = _FRESH
    for c in clocks:
        out = merge(out, c)
    return out


def descends(a: VClock, b: VClock) -> bool:
    """True when `a` has seen every change `b` has (a >= b); every clock descends fresh()."""
    if a is b:
        return True
    # Both sorted by node: walk `a` once alongside `b` (no dict of counters).
    ea = a.entries
    i, n = 0, len(ea)
    for node, counter, _ in b.entries:
        while i < n and ea[i].node < node:
            i += 1
        if i == n or ea[i].node != node or ea[i].counter < counter:
            return False
    return True


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
    """Strict inverse of `encode`; raises VClockDecodeError. Entries of the exact types the
    wire carries take a short way (every check in one expression: anti-entropy decodes a clock
    per version on both sides); anything else, or anything wrong, goes through
    `_decode_checked`, which decides and names the entry (tests/records/test_vclock.py holds
    the two to the same answers)."""
    if type(data) is list and len(data) <= MAX_ENTRIES:
        entries: list[Entry] = []
        last = ""
        for item in data:
            if type(item) is not list or len(item) != 3:
                break
            node, counter, ts = item
            if not (type(node) is str and last < node and len(node) <= MAX_NODE_LEN
                    and type(counter) is int and 0 < counter < 2**63
                    and (type(ts) is float or type(ts) is int) and math.isfinite(ts)):
                break
            entries.append(Entry(node, counter, float(ts)))
            last = node
        else:
            return _checked(tuple(entries))
    return _decode_checked(data)


def _decode_checked(data: object) -> VClock:
    """`decode`, each entry checked in turn, the first bad one named."""
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
        if entries and node <= entries[-1].node:  # (VClock's own rule, checked here once)
            raise VClockDecodeError(f"vclock entries not sorted or repeated at {node!r}")
        entries.append(Entry(node, counter, float(ts)))
    return _checked(tuple(entries))


def _checked(entries: tuple[Entry, ...]) -> VClock:
    """A VClock of entries already known sorted, distinct and >= 1, without `__post_init__`
    checking them a second time (a tenth of a record's decode)."""
    clock = object.__new__(VClock)
    object.__setattr__(clock, "entries", entries)
    return clock


def from_stored(data: list[list[Any]]) -> VClock:
    """`decode` of a clock this store packed from a VClock (so already valid): no checks."""
    return _checked(tuple([Entry(node, counter, float(ts)) for node, counter, ts in data]))
