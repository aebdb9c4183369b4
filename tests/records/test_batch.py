"""The anti-entropy speed path (issue 16) changes no rule: a batch merged in one transaction
through `records.batch.HeldRows` leaves exactly what merging its versions one at a time
leaves, and the faster record codec builds exactly the records the plain one builds."""
from __future__ import annotations

import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from peer.records import record as rec
from peer.records import vclock as vc
from peer.records.batch import HeldRows, batch_names
from peer.records.merge import Placed, local_write, reconcile, renamed
from peer.records.naming import base_name
from peer.records.record import Record, State, tombstone_of
from peer.records.store import RecordStore
from tests.records.strategies import histories, records


@contextmanager
def two_stores() -> Iterator[tuple[RecordStore, RecordStore]]:
    with tempfile.TemporaryDirectory(prefix="roam-test-batch-") as tmp:
        one, batched = RecordStore.open(Path(tmp) / "one.db"), RecordStore.open(Path(tmp) / "batch.db")
        try:
            yield one, batched
        finally:
            one.close()
            batched.close()


def table(store: RecordStore) -> tuple[list[Record], list[tuple[str, str, bytes]]]:
    """Every row, and every acknowledgement row (also those no version matches any more)."""
    acks = store._conn.execute("SELECT name, peer, digest FROM tombstone_acks ORDER BY name, peer").fetchall()
    return store.all(include_tombstones=True), acks


@st.composite
def deliveries(draw: st.DrawFn) -> list[Record]:
    """Versions of one name from a random reachable history, some of them as a peer that
    renamed their incarnation sends them (`svc@home`, naming), in a random order."""
    versions = draw(histories(steps=16))
    versions += [renamed(v) for v in versions if draw(st.booleans())]
    return list(draw(st.permutations(versions)))


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(versions=deliveries(), split=st.integers(0, 24), here=st.sampled_from(["a", "b", "z"]))
def test_a_batch_leaves_what_one_by_one_leaves(versions: list[Record], split: int, here: str) -> None:
    """Concurrent creations (one renamed to `svc@home`), renamed versions meeting bare ones,
    deletes, home-set changes: the first part applied one by one to both stores, tombstones
    acknowledged by a peer, then the rest one by one to one store and in one batch to the
    other. Same outcomes, same rows, same acknowledgements voided."""
    first, rest = versions[:split], versions[split:]
    with two_stores() as (one, batched):
        for store in (one, batched):
            for version in first:
                store.apply_remote(version, here=here)
            store.ack_tombstones("peer", store.digests())
        outcomes = [one.apply_remote(version, here=here) for version in rest]
        assert batched.apply_remote_many(rest, here=here) == outcomes
        assert table(batched) == table(one)


@settings(max_examples=60, deadline=None)
@given(versions=st.lists(records(), min_size=1, max_size=12))
def test_arbitrary_versions_batched_as_one_by_one(versions: list[Record]) -> None:
    """Arbitrary (unreachable) versions of three names, repeated names within the batch too."""
    with two_stores() as (one, batched):
        outcomes = [one.apply_remote(version, here="a") for version in versions]
        assert batched.apply_remote_many(versions, here="a") == outcomes
        assert table(batched) == table(one)


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(versions=deliveries(), split=st.integers(0, 24), here=st.sampled_from(["a", "b", "z"]),
       picked=st.sets(st.integers(0, 40)))
def test_a_batch_merged_if_held_leaves_what_a_lookup_then_the_batch_leaves(
        versions: list[Record], split: int, here: str, picked: set[int]) -> None:
    """`apply_remote_held` keeps a picked version only if the table held its name or its base
    name before the batch: the same versions, outcomes and rows as looking those names up
    first (`digests_of`, as anti-entropy's push handler did) and merging what is left."""
    first, rest = versions[:split], versions[split:]
    chosen = {id(v) for i, v in enumerate(rest) if i in picked}
    with two_stores() as (looked_up, batched):
        for store in (looked_up, batched):
            for version in first:
                store.apply_remote(version, here=here)
        held = looked_up.digests_of({n for v in rest if id(v) in chosen for n in (v.name, base_name(v.name))})
        kept = [v for v in rest if id(v) not in chosen or v.name in held or base_name(v.name) in held]
        outcomes = looked_up.apply_remote_many(kept, here=here)
        assert batched.apply_remote_held(rest, here=here, if_held=lambda v: id(v) in chosen) == (kept, outcomes)
        assert table(batched) == table(looked_up)


def _record(name: str, **changes: object) -> Record:
    base = Record(name=name, home="a", location="b", state=State.RUNNING, digest="d", descriptor=b"x")
    return replace(base, **changes)  # type: ignore[arg-type]


def test_batch_names_reads_each_name_and_its_twin_once() -> None:
    versions = [_record("web"), _record("web@c2", home="c2"), _record("web")]
    assert batch_names(versions) == ["web", "web@a", "web@c2"]


def test_held_rows_answer_the_last_change_then_the_rows_then_the_table() -> None:
    web, db = _record("web"), _record("db")
    looked_up: list[str] = []

    def fallback(name: str) -> Record | None:
        looked_up.append(name)
        return None

    held = HeldRows(["web", "db", "gone"], [("web", rec.pack(web)), ("db", rec.pack(db))],
                    lambda _, data: rec.unpack(data), fallback)
    assert held.get("web") == web and held.get("gone") is None and looked_up == []
    assert held.get("other") is None and looked_up == ["other"]  # not read before: asks the table
    newer = replace(web, location="c")
    held.apply(Placed(reconcile(web, newer, here="a"), writes=(newer,), deletes=("db",), acks_void=("x",)))
    assert held.get("web") == newer and held.get("db") is None
    assert held.written == {"web": newer} and held.deleted == {"db"} and held.acks_void == {"db", "x"}
    again = replace(db, location="c")
    held.apply(Placed(reconcile(db, again, here="a"), writes=(again,)))  # deleted, then written again
    assert held.get("db") == again and held.deleted == set() and set(held.written) == {"web", "db"}


def test_held_rows_tell_what_is_held_as_get_does_without_decoding() -> None:
    web, db = _record("web"), _record("db")
    looked_up: list[str] = []

    def fallback(name: str) -> Record | None:
        looked_up.append(name)
        return web if name == "web@c" else None

    def decode(_: str, data: bytes) -> Record:
        raise AssertionError("holds decodes nothing")

    held = HeldRows(["web", "db", "gone"], [("web", rec.pack(web)), ("db", rec.pack(db))], decode, fallback)
    assert held.holds("web") and held.holds("db") and not held.holds("gone") and looked_up == []
    assert held.holds("web@c") and not held.holds("other") and looked_up == ["web@c", "other"]
    held.apply(Placed(reconcile(web, web, here="a"), writes=(replace(web, name="new"),), deletes=("db",)))
    assert held.holds("new") and not held.holds("db") and held.holds("web")


# --- the codec ---------------------------------------------------------------------------------

@given(record=records())
def test_decode_builds_the_record_the_constructor_builds(record: Record) -> None:
    decoded = rec.decode(rec.encode(record))
    rebuilt = Record(**{name: getattr(decoded, name) for name in rec._FIELD_NAMES})
    assert decoded == record == rebuilt and hash(decoded) == hash(rebuilt)
    assert rec.unpack(rec.pack(record)) == record


@given(record=records(), other=records())
def test_with_vclock_is_replace(record: Record, other: Record) -> None:
    assert rec.with_vclock(record, other.vclock) == replace(record, vclock=other.vclock)


def test_pack_is_kept_on_the_record_but_not_carried_to_a_changed_copy() -> None:
    record = _record("web")
    assert rec.pack(record) is rec.pack(record)
    moved = replace(record, location="c")
    assert rec.unpack(rec.pack(moved)) == moved
    assert rec.unpack(rec.pack(rec.with_vclock(moved, record.vclock))).location == "c"
    assert rec.version_digest(moved) == rec.digest_of_packed(rec.pack(moved))


@pytest.mark.parametrize("counter, timestamp", [(True, 1.0), (1.0, 1.0), (1, True)])
def test_written_equal_to_vclock_is_still_checked_strictly(counter: object, timestamp: object) -> None:
    """`written` equal to `vclock` as Python compares them is reused; what the clock decoder
    refuses (a bool or float counter, a bool timestamp) is refused still."""
    body = rec.encode(_record("web"))
    body["vclock"] = [["a", 1, 1.0]]
    body["written"] = [["a", counter, timestamp]]
    assert body["written"] == body["vclock"]
    with pytest.raises(rec.RecordDecodeError) as caught:
        rec.decode(body)
    assert caught.value.field == "written"
    body["written"] = [["a", 1, 1.0]]
    decoded = rec.decode(body)
    assert decoded.written == decoded.vclock


def test_a_batch_voids_the_acknowledgements_of_a_renamed_incarnation() -> None:
    """A tombstone acknowledged under the bare name, then a concurrent earlier creation of that
    name arrives: ours moves to `name@home`, the bare name's acknowledgements were ours and go
    (`Placed.acks_void`), in a batch as one by one."""
    late = local_write(None, replace(_record("dupe", home="c3"), incarnation="200-bb-0"), here="c3", now=2.0)
    tomb = local_write(late, tombstone_of(late), here="c3", now=3.0)
    early = local_write(None, replace(_record("dupe", home="c1"), incarnation="100-aa-0"), here="c1", now=1.0)
    with two_stores() as (one, batched):
        for store in (one, batched):
            store.apply_remote(tomb, here="c2")
            store.ack_tombstones("peer", store.digests())
            assert store.acked_by("dupe") == {"peer"}
        outcomes = [one.apply_remote(early, here="c2")]
        assert batched.apply_remote_many([early], here="c2") == outcomes
        assert outcomes[0].moved is not None and outcomes[0].moved.name == "dupe@c3"
        assert table(batched) == table(one)
        assert table(one)[1] == []


@given(nodes=st.lists(st.sampled_from(["a", "b", "ab", "a~1", "a~2", "ab~1", "b~a", "a~", "~a"]), unique=True),
       cluster=st.sampled_from(["a", "b", "ab", "a~1", "", "~"]))
def test_cluster_counter_is_the_sum_over_cluster_of(nodes: list[str], cluster: str) -> None:
    clock = vc.VClock(tuple(vc.Entry(n, i + 1, 1.0) for i, n in enumerate(sorted(nodes))))
    assert vc.cluster_counter(clock, cluster) == sum(e.counter for e in clock.entries if vc.cluster_of(e.node) == cluster)
