"""Concurrent creations of one name (issue 12): both kept, the later as `name@home`.

Pure: naming's rules, `reconcile`'s split, `place`'s sticky rename, and a replicated model in
which replicas create, delete and re-create names across partitions and must converge with
every live creation kept under exactly one name."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, precondition, rule

from peer.records.merge import AdoptLocalCopy, RenameLocal, local_write, place, reconcile
from peer.records.naming import (
    MAX_REPLACED,
    SERVICE_RE,
    base_name,
    concurrent,
    home_part,
    incarnation_order,
    new_incarnation,
    qualified,
    replaced_by_deletes,
    supersedes,
)
from peer.records.record import Record, State, pack, tombstone_of, unpack


def created(name: str, home: str, incarnation: str, *, replaces: tuple[str, ...] = (), now: float = 1.0,
            location: str | None = None) -> Record:
    record = Record(name=name, home=home, location=location or home, state=State.RUNNING, digest="d",
                    descriptor=b"x", incarnation=incarnation, replaces=replaces)
    return local_write(None, record, here=home, now=now)


def test_names_and_their_parts() -> None:
    assert qualified("dupe", "c3") == "dupe@c3" and qualified("dupe@c1", "c3") == "dupe@c3"
    assert base_name("dupe@c3") == "dupe" and home_part("dupe@c3") == "c3" and home_part("dupe") is None
    assert SERVICE_RE.match("dupe@c3") and SERVICE_RE.match("dupe")
    for bad in ("dupe@", "@c3", "a@b@c", "Dupe", "-x@c", "x@c-"):
        assert not SERVICE_RE.match(bad), bad


def test_a_creation_supersedes_only_what_it_knew_deleted() -> None:
    first = new_incarnation(now=1.0)
    again = new_incarnation(now=2.0, after=incarnation_order(first)[0])
    assert supersedes(again, (first,), first) and not supersedes(first, (), again)
    other_side = new_incarnation(now=1.5)  # created across a partition, knew nothing
    assert concurrent(other_side, (), again, (first,))
    # A side that created, deleted and created again still never saw the other side's service.
    assert not supersedes(again, (first,), other_side)
    # Ids of an older roam ("<stamp>-<random>"): the later owns the name, as it did then.
    assert supersedes("5-ab", (), "3-cd") and not concurrent("5-ab", (), "3-cd", ())


def test_replaces_is_newest_first_and_bounded() -> None:
    ids = [f"{n}-x-0" for n in range(1, 20)]
    out = replaced_by_deletes([(ids[-1], tuple(reversed(ids[:-1])))])
    assert len(out) == MAX_REPLACED and out[0] == ids[-1]
    assert list(out) == sorted(out, key=incarnation_order, reverse=True)


def test_record_carries_replaces_on_the_wire_and_old_bytes_stay_the_same() -> None:
    plain = created("a", "c1", "1-x-0")
    assert b"replaces" not in pack(plain)  # a record without it packs as before
    again = created("a", "c1", "2-y-1", replaces=("1-x-0",))
    assert unpack(pack(again)) == again
    qualified_record = replace(again, name="a@c1")
    assert unpack(pack(qualified_record)).name == "a@c1"


def test_concurrent_creations_split_the_same_way_in_either_order() -> None:
    early = created("dupe", "c1", "100-aa-0", now=1.0)
    late = created("dupe", "c3", "200-bb-0", now=2.0, location="c4")
    # c2 held the earlier one: it keeps the name, the later one is stored as dupe@c3.
    kept = reconcile(early, late, here="c2")
    assert kept.result == early and not kept.changed and kept.moved == replace(late, name="dupe@c3")
    # c4 held (and runs) the later one: it moves its copy over, then holds the earlier.
    moved = reconcile(late, early, here="c4")
    assert moved.result == early and moved.changed and moved.moved == replace(late, name="dupe@c3")
    assert moved.actions[0] == RenameLocal("dupe", "dupe@c3")
    assert not moved.conflict  # nothing was dropped


def test_a_later_creation_that_knew_the_delete_owns_the_name() -> None:
    first = created("dupe", "c2", "100-aa-0")
    tomb = local_write(first, tombstone_of(first), here="c2", now=2.0)
    again = created("dupe", "c1", "300-cc-100", replaces=("100-aa-0",), now=3.0)
    for local, remote in ((tomb, again), (again, tomb), (first, again)):
        out = reconcile(local, remote, here="c3")
        assert out.result == again and out.moved is None


def _held(rows: dict[str, Record]) -> Callable[[str], Record | None]:
    return rows.get


def test_place_moves_ours_when_a_peer_sends_the_renamed_version() -> None:
    late = created("dupe", "c3", "200-bb-0", location="c4")
    rows = {"dupe": late}  # c4 runs it and has not seen the earlier creation yet
    placed = place(_held(rows), replace(late, name="dupe@c3"), here="c4")
    assert placed.deletes == ("dupe",) and [r.name for r in placed.writes] == ["dupe@c3"]
    assert placed.outcome.actions[0] == RenameLocal("dupe", "dupe@c3")
    assert not any(isinstance(a, AdoptLocalCopy) for a in placed.outcome.actions)  # same copy, carried over


def test_place_keeps_a_rename_whatever_name_a_stale_peer_uses() -> None:
    late = created("dupe", "c3", "200-bb-0")
    newer = local_write(late, replace(late, location="c5"), here="c3", now=5.0)
    rows = {"dupe@c3": replace(late, name="dupe@c3")}
    placed = place(_held(rows), newer, here="c2")  # sent bare by a peer that has not renamed it
    assert [r.name for r in placed.writes] == ["dupe@c3"] and placed.writes[0].location == "c5"
    assert not placed.deletes


# --- a replicated model -------------------------------------------------------------------

REPLICAS = ("a", "b", "c")
replicas = st.sampled_from(REPLICAS)


class Names(RuleBasedStateMachine):
    """Replicas create "svc" when they hold no live version of it nor of "svc@<self>" (as the
    API does, knowing only what they hold), delete, update, exchange versions through `place`, partition and
    heal. After a full exchange every replica holds the same rows; every creation that was
    not deleted is live under exactly one name; a name@home row holds an incarnation of home."""

    def __init__(self) -> None:
        super().__init__()
        self.rows: dict[str, dict[str, Record]] = {r: {} for r in REPLICAS}
        self.cut: set[frozenset[str]] = set()
        self.now = 10.0
        self.deleted: set[str] = set()
        self.created: set[str] = set()
        self.serial = 0

    def _tick(self) -> float:
        self.now += 1.0
        return self.now

    def _apply(self, here: str, version: Record) -> None:
        placed = place(self.rows[here].get, version, here=here)
        for name in placed.deletes:
            del self.rows[here][name]
        for record in placed.writes:
            self.rows[here][record.name] = record

    @rule(here=replicas)
    def create(self, here: str) -> None:
        held = self.rows[here].get("svc")
        mine = self.rows[here].get(f"svc@{here}")  # where a concurrent creation of ours would go
        if any(r is not None and not r.tombstone for r in (held, mine)):
            return  # the API refuses it (409)
        known = [(r.incarnation, r.replaces) for r in (held, mine) if r is not None]
        after = max((incarnation_order(i)[0] for i, _ in known), default=0)
        self.serial += 1
        incarnation = f"{max(int(self._tick()), after + 1)}-{here}{self.serial}-{after}"
        record = Record(name="svc", home=here, location=here, state=State.RUNNING, digest="d", descriptor=b"x",
                        incarnation=incarnation, replaces=replaced_by_deletes(known))
        self.rows[here]["svc"] = local_write(held, record, here=here, now=self.now)
        self.created.add(incarnation)

    @rule(here=replicas, data=st.data())
    def delete(self, here: str, data: st.DataObject) -> None:
        live = sorted(n for n, r in self.rows[here].items() if not r.tombstone)
        if not live:
            return
        name = data.draw(st.sampled_from(live))
        record = self.rows[here][name]
        self.rows[here][name] = local_write(record, tombstone_of(record), here=here, now=self._tick())
        self.deleted.add(record.incarnation)

    @rule(here=replicas, data=st.data(), location=replicas)
    def move(self, here: str, data: st.DataObject, location: str) -> None:
        live = sorted(n for n, r in self.rows[here].items() if not r.tombstone)
        if live:
            name = data.draw(st.sampled_from(live))
            record = self.rows[here][name]
            self.rows[here][name] = local_write(record, replace(record, location=location), here=here,
                                                now=self._tick())

    @rule(src=replicas, dst=replicas, data=st.data())
    def send(self, src: str, dst: str, data: st.DataObject) -> None:
        names = sorted(self.rows[src])
        if src != dst and names and frozenset((src, dst)) not in self.cut:
            self._apply(dst, self.rows[src][data.draw(st.sampled_from(names))])

    @rule(x=replicas, y=replicas)
    def partition(self, x: str, y: str) -> None:
        if x != y:
            self.cut.add(frozenset((x, y)))

    @precondition(lambda self: self.cut)
    @rule()
    def heal(self) -> None:
        self.cut.clear()

    def teardown(self) -> None:
        for _ in range(3):
            for src in REPLICAS:
                for dst in REPLICAS:
                    if src != dst:
                        for record in list(self.rows[src].values()):
                            self._apply(dst, record)
        first = self.rows[REPLICAS[0]]
        for here in REPLICAS[1:]:
            assert self.rows[here] == first, f"{here} differs: {self.rows[here]} vs {first}"
        by_incarnation: dict[str, list[str]] = {}
        for name, record in first.items():
            by_incarnation.setdefault(record.incarnation, []).append(name)
            if home_part(name) is not None:
                assert home_part(name) == record.home
        assert all(len(names) == 1 for names in by_incarnation.values()), by_incarnation
        live = {r.incarnation for r in first.values() if not r.tombstone}
        # Never lost: a creation nobody deleted is live, unless a creation that knew it deleted
        # owns the name (only possible for deleted ones: replaces names tombstones only).
        for incarnation in self.created - self.deleted:
            assert incarnation in live, f"{incarnation} lost: {first}"
        # (A delete may be undone by a concurrent write of the HC: merge.py's HC rule, not a loss.)


Names.TestCase.settings = settings(max_examples=300, stateful_step_count=30, deadline=None)
TestNamesConverge = Names.TestCase
