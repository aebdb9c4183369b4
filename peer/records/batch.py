"""What a batch of remote versions reads and changes in the store, held in memory. Pure.

`RecordStore.apply_remote_many` merges a batch in one transaction. Reading each record with
its own `SELECT` and writing each result with its own `INSERT` cost more than the merge itself
(10,000 records: 20,000 statements), so the store reads every row the batch will look at in a
few `IN (...)` queries, lets `merge.place` read and change this overlay, and writes the final
state of each touched name once at the end (`executemany`).

The overlay must answer exactly what the table would have answered had every change been
written at once: a name written in the batch reads as its last write, a deleted one as absent
(until written again), anything else as the row before the batch. A name the prefetch did not
cover (a rename's second step) is read from the table, which still holds the row before the
batch, so the answer is the same.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

from peer.records.merge import Placed
from peer.records.naming import base_name, is_qualified, qualified
from peer.records.record import Record
from peer.records.vclock import VClock

#: Names per `IN (...)` statement: below SQLite's smallest bound-parameter limit (999).
IN_CHUNK = 500


@dataclass(frozen=True)
class Reclocked:
    """A version this cluster pushed, as the peer's merge left it: the pushed content under the
    clock, and the stamps vouching for it, that the merge gave it (anti-entropy's clock-only
    answer, peer/records/messages.py). The store rebuilds the version from the row it pushed:
    from the row it holds, decoded for the merge anyway, while that is still the one pushed
    (`digest`), else from the pushed bytes; then it is merged like any remote version."""

    name: str
    pushed: bytes  # the packed version pushed (our row then)
    digest: bytes  # its version digest
    vclock: VClock
    stamps: tuple[tuple[str, bytes, bytes], ...]
    answer: bytes = b""  # the clock-only answer as packed, if known: the rebuilt version's source (record.source_of)


def batch_names(records: Iterable[Record]) -> list[str]:
    """Every name `merge.place` reads first for these versions: the name itself and its twin
    (`name@home` of a bare name, the bare name of a qualified one)."""
    out: dict[str, None] = {}
    for r in records:
        out[r.name] = None
        out[base_name(r.name) if is_qualified(r.name) else qualified(r.name, r.home)] = None
    return list(out)


class HeldRows:
    """The store's rows as a batch sees them while it is merged (see the module docstring).

    `covered`: the names read before the batch, `rows` those of them the table held (name,
    packed record); `decode` turns a row into a Record; `fallback` reads any other name. After the batch, `written` holds the last
    version of every name to write, `deleted` the names whose row goes, `acks_void` the names
    whose tombstone acknowledgements go."""

    def __init__(self, covered: Iterable[str], rows: Iterable[tuple[str, bytes]],
                 decode: Callable[[str, bytes], Record], fallback: Callable[[str], Record | None],
                 decoded: dict[str, Record] | None = None) -> None:
        self._covered = set(covered)
        self._packed = dict(rows)
        self._decoded: dict[str, Record] = decoded or {}  # (rows of the batch decoded already)
        self._decode = decode
        self._fallback = fallback
        self.written: dict[str, Record] = {}
        self.deleted: set[str] = set()
        self.acks_void: set[str] = set()

    def get(self, name: str) -> Record | None:
        if name in self.written:
            return self.written[name]
        if name in self.deleted:
            return None
        if name in self._decoded:
            return self._decoded[name]
        if name in self._covered:
            data = self._packed.get(name)
            found = None if data is None else self._decode(name, data)
        else:
            found = self._fallback(name)
        if found is not None:
            self._decoded[name] = found
        return found

    def holds(self, name: str) -> bool:
        """`get(name) is not None`, without decoding a row only read."""
        if name in self.written:
            return True
        if name in self.deleted:
            return False
        if name in self._decoded:
            return True
        if name in self._covered:
            return name in self._packed
        return self._fallback(name) is not None

    def apply(self, placed: Placed) -> None:
        """The changes of one `place`, in the order the store made them one by one: deletes
        (with their acknowledgements), acknowledgements voided, then writes."""
        for name in placed.deletes:
            self.written.pop(name, None)
            self.deleted.add(name)
        self.acks_void.update(placed.deletes)
        self.acks_void.update(placed.acks_void)
        for record in placed.writes:
            self.deleted.discard(record.name)
            self.written[record.name] = record
