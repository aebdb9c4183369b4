"""Roles, interest and the strict wire form of records."""
from __future__ import annotations

from dataclasses import replace

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from peer.records import record as rec
from peer.records import vclock as vc
from peer.records.record import Record, RecordDecodeError, State
from peer.records.vclock import VClock
from tests.records.strategies import clocks, full_records, records


def make(**kw: object) -> Record:
    base: dict[str, object] = {"name": "web", "home": "a", "location": "a", "state": State.RUNNING, "digest": "d",
                                   "descriptor": b"\x80", "instance": "127.0.0.1:8080", "endpoint": "127.0.0.1:30000"}
    base.update(kw)
    return Record(**base)  # type: ignore[arg-type]


@pytest.mark.parametrize("home, location, here, expected", [
    ("a", "a", "a", "LR"),
    ("a", "b", "a", "AR"),
    ("a", "b", "b", "FR"),
    ("a", "b", "c", None),
    ("a", "a", "b", None),
])
def test_role_is_derived_from_home_location_and_here(home: str, location: str, here: str, expected: str | None) -> None:
    assert rec.role(make(home=home, location=location), here) == expected


def test_a_standby_holder_is_sr_and_interested() -> None:
    r = Record(name="web", home="a", location="b", state=State.RUNNING, digest="d", descriptor=b"",
               homes=("a", "d"), standbys=(("c", "127.0.0.3:80"),))
    assert rec.role(r, "c") == "SR"
    assert rec.role(r, "d") == "AR"
    assert "c" in rec.interested(r)
    assert rec.decode(rec.encode(r)).standbys == r.standbys
    tomb = rec.tombstone_of(r)
    assert rec.role(tomb, "c") is None and not tomb.copy_here("c") and "c" in rec.interested(tomb)


def test_standbys_are_left_out_of_the_wire_form_when_empty() -> None:
    """Records without standbys pack as before, so version digests of old data are unchanged."""
    r = Record(name="web", home="a", location="b", state=State.RUNNING, digest="d", descriptor=b"")
    assert "standbys" not in rec.encode(r)


@pytest.mark.parametrize("value", [[["c", "127.0.0.3:80"], ["c", "127.0.0.4:80"]], [["c"]], [["c", "nope"]], "c"])
def test_bad_standbys_are_named(value: object) -> None:
    r = Record(name="web", home="a", location="b", state=State.RUNNING, digest="d", descriptor=b"")
    with pytest.raises(RecordDecodeError) as info:
        rec.decode({**rec.encode(r), "standbys": value})
    assert info.value.field == "standbys"


def test_tombstones_have_no_role_but_keep_their_interest() -> None:
    dead = rec.tombstone_of(make(home="a", location="b"))
    assert dead.state is State.DELETED and dead.instance is None
    assert rec.role(dead, "a") is None and rec.role(dead, "b") is None
    assert rec.interested(dead) == frozenset({"a", "b"})


@given(full_records())
def test_encode_decode_round_trip_through_msgpack(r: Record) -> None:
    assert rec.decode(msgpack.unpackb(msgpack.packb(rec.encode(r)), raw=False)) == r
    assert rec.unpack(rec.pack(r)) == r


@given(full_records())
def test_a_stored_row_rebuilds_the_record_the_checked_decode_builds(r: Record) -> None:
    # The store's rows skip decode's checks (anti-entropy reads one per differing record):
    # whatever they skip, they must build the same record, packing to the same bytes.
    data = rec.pack(r)
    stored = rec.unpack_stored(data)
    assert stored == rec.unpack(data) == r
    assert stored.written is stored.vclock or stored.written == r.written
    assert rec.pack(rec.unpack_stored(data)) == data
    assert set(vars(stored)) == set(vars(r)) - {"_packed"}  # (its field dict: the fields alone)


@pytest.mark.parametrize("field", ["instance", "vclock", "tombstone", "name"])
def test_a_row_missing_a_field_it_always_had_goes_the_checked_way(field: str) -> None:
    body = rec.encode(make())
    del body[field]
    with pytest.raises(rec.RecordDecodeError) as err:
        rec.unpack_stored(msgpack.packb(body, use_bin_type=True))
    assert err.value.field == field


@pytest.mark.parametrize("field, value", [("state", "sleeping"), ("vclock", "x"), ("tombstone", 0),
                                          ("name", 3)])
def test_a_row_of_another_shape_goes_the_checked_way_and_names_its_field(field: str, value: object) -> None:
    body = rec.encode(make())
    body[field] = value
    with pytest.raises(rec.RecordDecodeError) as err:
        rec.unpack_stored(msgpack.packb(body, use_bin_type=True))
    assert err.value.field == field


def test_an_older_row_without_the_later_fields_decodes_as_before() -> None:
    body = rec.encode(make())
    for key in ("homes", "endpoints", "epoch", "incarnation"):
        del body[key]
    data = msgpack.packb(body, use_bin_type=True)
    assert rec.unpack_stored(data) == rec.unpack(data)


@pytest.mark.parametrize("field, value", [
    ("name", "Not_DNS"), ("name", ""), ("name", 3), ("home", ""), ("location", None), ("state", "sleeping"),
    ("digest", 1), ("descriptor", "text"), ("instance", "nohostport"), ("instance", "h:0"),
    ("endpoint", "h:99999"), ("endpoint", "h:\u00b2"), ("endpoint", "h:"), ("migration_id", 5),
    ("vclock", [["a", 0, 1.0]]), ("written", "x"),
    ("tombstone", 0), ("updated_at", "now"), ("updated_at", float("inf")),
])
def test_decode_names_the_bad_field(field: str, value: object) -> None:
    data = rec.encode(make())
    data[field] = value
    with pytest.raises(RecordDecodeError) as info:
        rec.decode(data)
    assert info.value.field == field


@pytest.mark.parametrize("field", ["name", "home", "state", "vclock", "written", "tombstone"])
def test_decode_names_a_missing_field(field: str) -> None:
    data = rec.encode(make())
    del data[field]
    with pytest.raises(RecordDecodeError) as info:
        rec.decode(data)
    assert info.value.field == field


def test_unknown_fields_are_ignored_for_newer_peers() -> None:
    data = rec.encode(make())
    data["future"] = [1, 2]
    assert rec.decode(data) == make()


def test_unpack_of_garbage_raises_record_decode_error() -> None:
    for garbage in (b"", b"\xc1", b"\x93\x01"):
        with pytest.raises(RecordDecodeError):
            rec.unpack(garbage)


def test_version_digest_covers_clock_and_content() -> None:
    r = make(vclock=vc.increment(vc.fresh(), "a", timestamp=1.0))
    assert len(rec.version_digest(r)) == 8
    assert rec.version_digest(r) == rec.version_digest(replace(r))
    assert rec.version_digest(r) != rec.version_digest(replace(r, vclock=vc.increment(r.vclock, "a", timestamp=2.0)))
    assert rec.version_digest(r) != rec.version_digest(replace(r, instance="127.0.0.2:1"))
    assert rec.version_digest(r) != rec.version_digest(rec.tombstone_of(r))


@given(records(), records(), clocks())
def test_same_content_is_exactly_equal_content_keys_short_of_packing(a: Record, b: Record, clock: VClock) -> None:
    # The merge's rank compares packed contents only when `same_content` says they differ.
    assert rec.same_content(a, b) <= (rec.content_key(a) == rec.content_key(b))
    moved = rec.with_vclock(a, clock)
    assert rec.same_content(a, moved) and rec.content_key(a) == rec.content_key(moved)


@given(records(), clocks())
def test_with_vclock_is_replace_and_keeps_nothing_of_the_old_clock(r: Record, clock: VClock) -> None:
    """`with_vclock` copies the fields alone: what was cached beside them (the packed bytes)
    describes the old clock and must not follow."""
    rec.pack(r)
    moved = rec.with_vclock(r, clock)
    assert moved == replace(r, vclock=clock) and hash(moved) == hash(replace(r, vclock=clock))
    assert rec.pack(moved) == rec.pack(replace(r, vclock=clock))
    assert rec.pack(r) == rec.pack(replace(r))  # the original is untouched


ODD_VALUES = st.sampled_from([None, True, False, 0, 1, -1, 2**53, 1.0, float("nan"), float("inf"), "", "x", "x" * 300,
                              "web", "b~1", "running", "127.0.0.1:80", "h:0", "h:99999", "h:\u00b2", ":80", b"", b"x",
                              [], ["a"], [["a", 1, 1.0]], [["a", True, 1.0]], [["b", 1, 1]], {"a": 1}])


@settings(max_examples=400)
@given(full_records(), st.lists(st.tuples(st.sampled_from(sorted(set(rec.encode(make())) | {
    "standbys", "state_version", "replaces", "writer", "signature", "stamps"})), st.none() | ODD_VALUES), max_size=3))
def test_the_usual_shape_decodes_exactly_as_the_checked_way(r: Record, changes: list[tuple[str, object]]) -> None:
    """`decode`'s fast path for maps of the usual shape accepts exactly what the checked path
    accepts and builds the same record; anything else it leaves to the checked path, which
    names the bad field (a change None deletes the key)."""
    body = rec.encode(r)
    for key, value in changes:
        if value is None and key in body:
            del body[key]
        elif value is not None:
            body[key] = value
    body = msgpack.unpackb(msgpack.packb(body, use_bin_type=True), raw=False)
    try:
        expected: Record | str = rec._decode_checked(body)
    except RecordDecodeError as exc:
        expected = exc.field
    try:
        fast = rec._decode_usual(body)
    except RecordDecodeError as exc:
        assert exc.field == expected  # raised by a helper both paths call, in the same order
        return
    assert fast is None or fast == expected
    got = rec.decode(body) if isinstance(expected, Record) else None
    assert got is None or (got == expected and rec.pack(got) == rec.pack(expected))


@settings(max_examples=300)
@given(full_records(), clocks(), st.lists(st.tuples(st.sampled_from(["a", "b~9f", "c"]), st.binary(max_size=16),
                                                    st.binary(min_size=1, max_size=8)), max_size=3))
def test_a_version_is_rebuilt_from_its_source_as_it_was(r: Record, clock: VClock,
                                                        stamps: list[tuple[str, bytes, bytes]]) -> None:
    """What the guard holds of a version taken on channel authority (its source bytes, untracked
    by the collector) rebuilds that very version: one received packed (`unpack_sourced`), or
    one rebuilt from a stored row under a clock-only answer as the store rebuilds it
    (`_rebuilt`: `with_vclock(unpack_stored(row), clock, stamps)`), the answer as a push
    reply packs it (messages.records_reply); no copy under another clock or fields keeps one."""
    from peer.records import messages as msg
    from peer.trust import signing
    data = rec.pack(r)
    received = rec.unpack_sourced(data)
    assert rec.source_of(received) == data and rec.source_of(r) is None
    again = rec.from_source(data)
    assert again == received == rec.unpack(data) and again.__dict__.keys() >= set(rec._FIELD_NAMES)
    assert signing.stamp_checks(again) == signing.stamp_checks(received)
    assert rec.source_of(rec.with_vclock(received, clock)) is None and rec.source_of(replace(received)) is None
    sorted_stamps = tuple(sorted({s[0]: s for s in stamps}.values()))
    answer = msg.records_reply([], clocks=[rec.with_vclock(r, clock, sorted_stamps)])["clocks"][0]
    (name, parsed_clock, parsed_stamps), = msg.parse_clocks({"records": [], "clocks": [answer]})
    rebuilt = rec.with_vclock(rec.unpack_stored(data), parsed_clock, parsed_stamps)
    from_bytes = rec.from_source(rec.reclocked_source(data, answer))
    assert from_bytes == rebuilt == rec.with_vclock(r, clock, sorted_stamps)
    assert rec.pack(from_bytes) == rec.pack(rebuilt)
    assert signing.stamp_checks(from_bytes) == signing.stamp_checks(rebuilt)


@pytest.mark.parametrize("source", [b"", b"\xc1", msgpack.packb([b"x"]), msgpack.packb([b"x", b"y"]),
                                    msgpack.packb([1, 2]), msgpack.packb("text")])
def test_a_source_that_is_not_one_raises_record_decode_error(source: bytes) -> None:
    with pytest.raises(RecordDecodeError):
        rec.from_source(source)
