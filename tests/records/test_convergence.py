"""Convergence harness (after riak_dt's crdt_statem_eqc): replicas as in-memory dicts using the
real `local_write` and `reconcile`; random writes, deletes, home-set (stewardship) changes,
partitions, heals, lost and reordered deliveries, and site losses: a replica lost and back on
its old disk, or on an empty one (a rebuilt site: a new clock actor, as RecordStore gives it,
with or without recovering from its peers before it writes again). After healing and full
anti-entropy every replica must hold the same versions, no (actor, counter) pair is ever used
by two writes, and no acknowledged write may be lost unless a causally later write superseded
it, it lost a concurrent conflict to the HC rule, or it died with the only disk that held it."""
from __future__ import annotations

from dataclasses import replace

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from peer.records import vclock as vc
from peer.records.merge import local_write, rank, reconcile
from peer.records.naming import incarnation_order
from peer.records.record import Record, State, tombstone_of
from tests.records.strategies import addrs, new_content

REPLICAS = ("a", "b", "c", "d")
NAMES = ("web", "db")
replicas = st.sampled_from(REPLICAS)
names = st.sampled_from(NAMES)


def content(r: Record) -> Record:
    return replace(r, vclock=vc.fresh())


class Federation(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.stores: dict[str, dict[str, Record]] = {r: {} for r in REPLICAS}
        self.cut: set[frozenset[str]] = set()
        self.wire: list[tuple[str, str, Record]] = []  # (source, destination, version) in flight, any order
        self.acked: dict[str, list[Record]] = {n: [] for n in NAMES}  # every write a caller was told is stored
        self.now = 1000.0
        self.actor = {r: r for r in REPLICAS}  # clock node of each replica's current data dir
        self.used: set[tuple[str, str, str, int]] = set()  # (name, incarnation, actor, counter) written
        self.rebuilds = 0
        self.written_at: dict[str, list[Record]] = {r: [] for r in REPLICAS}  # writes per replica's disk
        self.at_risk: list[Record] = []  # writes whose disk was wiped: they survive only if they escaped

    def _tick(self) -> float:
        self.now += 1.0
        return self.now

    def _store(self, here: str, record: Record) -> None:
        self.stores[here][record.name] = record

    def _local(self, here: str, previous: Record | None, new: Record) -> None:
        """A local write under `here`'s actor; its own clock pair must be new."""
        actor = self.actor[here]
        stored = local_write(previous, new, here=here, now=self._tick(), actor=actor)
        pair = (stored.name, stored.incarnation, actor, vc.get_counter(stored.written, actor))
        assert pair not in self.used, f"clock pair reused: {pair}"
        self.used.add(pair)
        self._store(here, stored)
        self.acked[stored.name].append(stored)
        self.written_at[here].append(stored)

    @rule(here=replicas, name=names, location=replicas, state=st.sampled_from([State.RUNNING, State.MIGRATING]),
          instance=st.none() | addrs)
    def write(self, here: str, name: str, location: str, state: State, instance: str | None) -> None:
        previous = self.stores[here].get(name)
        self._local(here, previous, new_content(previous, here=here, location=location, state=state,
                                                instance=instance, name=name, ident=self.actor[here]))

    @rule(here=replicas, name=names)
    def delete(self, here: str, name: str) -> None:
        previous = self.stores[here].get(name)
        if previous is None or previous.tombstone:
            return
        self._local(here, previous, tombstone_of(previous))

    @rule(here=replicas, name=names, other=replicas, add=st.booleans())
    def change_homes(self, here: str, name: str, other: str, add: bool) -> None:
        """A steward's repair (an entry added or a lost one dropped) or a running cluster that
        adds itself when every entry is lost: `homes` changes, the HC stays first."""
        previous = self.stores[here].get(name)
        if previous is None or previous.tombstone:
            return
        entries = previous.entries
        if add and other not in entries:
            homes = (*entries, other)
        elif not add and other in entries[1:]:
            homes = tuple(e for e in entries if e != other)
        else:
            return
        self._local(here, previous, replace(previous, homes=homes))

    @rule(here=replicas, empty=st.booleans())
    def lose_site(self, here: str, empty: bool) -> None:
        """Every process of `here` killed: what was on its way to it is lost. Back at once, on
        its old disk or on an empty one with a new actor (RecordStore draws a new epoch)."""
        self.wire = [m for m in self.wire if m[1] != here]
        if not empty:
            return
        self.stores[here] = {}
        self.rebuilds += 1
        self.actor[here] = f"{here}~{self.rebuilds}"
        self.at_risk += self.written_at[here]
        self.written_at[here] = []

    def _survives(self, write: Record) -> bool:
        """A write from a wiped disk survives if some store still holds it or its future."""
        held = [s[write.name] for s in self.stores.values() if write.name in s]
        return any(v.incarnation == write.incarnation and vc.descends(v.vclock, write.written) for v in held)

    @rule(here=replicas)
    def recover(self, here: str) -> None:
        """The agent's catch-up: sync with every peer it can reach before acting."""
        for peer in REPLICAS:
            if peer != here and frozenset((here, peer)) not in self.cut:
                self._exchange(here, peer)

    @rule(src=replicas, dst=replicas, name=names)
    def send(self, src: str, dst: str, name: str) -> None:
        found = self.stores[src].get(name)
        if found is not None and src != dst:
            self.wire.append((src, dst, found))

    @precondition(lambda self: self.wire)
    @rule(data=st.data())
    def deliver(self, data: st.DataObject) -> None:
        src, dst, version = self.wire.pop(data.draw(st.integers(0, len(self.wire) - 1)))
        if frozenset((src, dst)) not in self.cut:  # a cut link loses what crosses it
            self._store(dst, reconcile(self.stores[dst].get(version.name), version, here=dst).result)

    @precondition(lambda self: self.wire)
    @rule(data=st.data())
    def lose(self, data: st.DataObject) -> None:
        self.wire.pop(data.draw(st.integers(0, len(self.wire) - 1)))

    @rule(x=replicas, y=replicas)
    def partition(self, x: str, y: str) -> None:
        if x != y:
            self.cut.add(frozenset((x, y)))

    @precondition(lambda self: self.cut)
    @rule(data=st.data())
    def heal(self, data: st.DataObject) -> None:
        self.cut.discard(data.draw(st.sampled_from(sorted(self.cut, key=sorted))))

    @rule(x=replicas, y=replicas)
    def sync(self, x: str, y: str) -> None:
        if x != y and frozenset((x, y)) not in self.cut:
            self._exchange(x, y)

    def _exchange(self, x: str, y: str) -> None:
        for name in NAMES:
            for src, dst in ((x, y), (y, x)):
                found = self.stores[src].get(name)
                if found is not None:
                    self._store(dst, reconcile(self.stores[dst].get(name), found, here=dst).result)

    @invariant()
    def every_version_holds_an_acknowledged_content(self) -> None:
        for store in self.stores.values():
            for name, version in store.items():
                assert any(content(version) == content(w) for w in self.acked[name])
                assert vc.descends(version.vclock, version.written)

    def teardown(self) -> None:
        self.cut.clear()
        self.wire.clear()
        for name in NAMES:  # a write that only a lost disk held (and lost messages) is gone with it
            self.acked[name] = [w for w in self.acked[name] if w not in self.at_risk or self._survives(w)]
        for _ in range(2):  # two full rounds over all pairs reach everyone
            for x in REPLICAS:
                for y in REPLICAS:
                    if x < y:
                        self._exchange(x, y)
        for name in NAMES:
            versions = [s.get(name) for s in self.stores.values()]
            assert all(v == versions[0] for v in versions), f"{name} did not converge: {versions}"
            final = versions[0]
            writes = self.acked[name]
            if final is None:
                assert not writes
                continue
            # A later creation of the name owns it; the older incarnations' writes are superseded.
            assert all(incarnation_order(w.incarnation) <= incarnation_order(final.incarnation) for w in writes)
            writes = [w for w in writes if w.incarnation == final.incarnation]
            # Nothing acknowledged was forgotten: the final clock has seen every write ...
            assert all(vc.descends(final.vclock, w.written) for w in writes)
            # ... the winner is never a causally superseded write ...
            maximal = [w for w in writes if not any(vc.dominates(o.written, w.written) for o in writes)]
            assert any(content(final) == content(w) for w in maximal)
            # ... and among concurrent maximal writes it is the one the HC rule picks.
            assert content(final) == content(max(maximal, key=rank))


Federation.TestCase.settings = settings(max_examples=300, stateful_step_count=50, deadline=None)
TestFederationConverges = Federation.TestCase
