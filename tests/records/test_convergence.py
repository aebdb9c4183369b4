"""Convergence harness (after riak_dt's crdt_statem_eqc): replicas as in-memory dicts using the
real `local_write` and `reconcile`; random writes, deletes, partitions, heals, lost and reordered
deliveries. After healing and full anti-entropy every replica must hold the same versions, and
no acknowledged write may be lost unless a causally later write superseded it or it lost a
concurrent conflict to the HC rule."""
from __future__ import annotations

from dataclasses import replace

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from peer.records import vclock as vc
from peer.records.merge import local_write, rank, reconcile
from peer.records.record import Record, State, incarnation_order, tombstone_of
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

    def _tick(self) -> float:
        self.now += 1.0
        return self.now

    def _store(self, here: str, record: Record) -> None:
        self.stores[here][record.name] = record

    @rule(here=replicas, name=names, location=replicas, state=st.sampled_from([State.RUNNING, State.MIGRATING]),
          instance=st.none() | addrs)
    def write(self, here: str, name: str, location: str, state: State, instance: str | None) -> None:
        previous = self.stores[here].get(name)
        new = local_write(previous, new_content(previous, here=here, location=location, state=state,
                                                instance=instance, name=name), here=here, now=self._tick())
        self._store(here, new)
        self.acked[name].append(new)

    @rule(here=replicas, name=names)
    def delete(self, here: str, name: str) -> None:
        previous = self.stores[here].get(name)
        if previous is None or previous.tombstone:
            return
        new = local_write(previous, tombstone_of(previous), here=here, now=self._tick())
        self._store(here, new)
        self.acked[name].append(new)

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
