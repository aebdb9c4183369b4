"""peer.migration.wire: every message of the migration and home-set protocol survives the wire
(msgpack included) unchanged, and a handler refuses a malformed one naming the field."""
from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from peer.migration import wire
from peer.peering.wire import PeerWireError, decode, encode
from tests.records.strategies import records

ids = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-", min_size=1, max_size=40)
services = st.from_regex(r"[a-z][a-z0-9]{0,10}(@[a-z][a-z0-9]{0,6})?", fullmatch=True)
blobs = st.binary(max_size=64)
addrs = st.from_regex(r"127\.0\.[0-9]{1,2}\.[0-9]{1,2}:[0-9]{2,5}", fullmatch=True)

messages = st.one_of(
    st.builds(wire.Replicate, migration_id=ids, name=services, home=ids, descriptor=blobs,
              endpoint=st.none() | addrs, source=st.none() | ids, standby=st.booleans()),
    st.builds(wire.Status, migration_id=ids, name=services,
              wait=st.floats(min_value=0.0, max_value=wire.STATUS_WAIT_MAX)),
    st.builds(wire.Abort, migration_id=ids, name=services),
    st.builds(wire.Release, record=records()),
    st.just(wire.Ping()),
    st.builds(wire.Lookup, name=services),
    st.builds(wire.EntryOpen, name=services, incarnation=ids, home=st.none() | ids, descriptor=st.none() | blobs),
    st.builds(wire.Route, record=records(), release=st.booleans()),
    st.builds(wire.Hold, name=services, ttl=st.floats(min_value=0.001, max_value=60.0)),
    st.builds(wire.Hold, name=services, release=st.just(True)),
    st.builds(wire.Forward, op=st.sampled_from(wire.FORWARDED_OPS), name=services, target=st.none() | ids),
)


@given(messages)
def test_every_message_survives_the_wire(message: wire.Message) -> None:
    body = decode(encode(message.to_wire()))
    assert type(message).from_wire(body) == message


@given(messages, st.dictionaries(st.sampled_from(["zz_new", "x-later"]), st.integers(), max_size=2))
def test_keys_a_newer_peer_adds_are_ignored(message: wire.Message, extra: dict[str, Any]) -> None:
    assert type(message).from_wire({**message.to_wire(), **extra}) == message


def test_paths_are_versioned_and_distinct() -> None:
    paths = [m.path for m in wire.MESSAGES]
    assert len(set(paths)) == len(paths)
    assert all(p.startswith(f"/peer/v{wire.VERSION}/") for p in paths)


GOOD = {"migration_id": "m1", "name": "web", "home": "c1", "descriptor": b"\x80", "location": "c2",
        "instance": "127.0.0.1:9000", "wait": 1.0, "incarnation": "i1", "ttl": 5.0, "op": "migrate"}


@pytest.mark.parametrize(("cls", "field", "bad"), [
    (wire.Replicate, "migration_id", None),
    (wire.Replicate, "migration_id", 7),
    (wire.Replicate, "name", "Not A Name"),
    (wire.Replicate, "home", ""),
    (wire.Replicate, "descriptor", "not bytes"),
    (wire.Replicate, "standby", "yes"),
    (wire.Status, "wait", -1),
    (wire.Status, "wait", wire.STATUS_WAIT_MAX + 1),
    (wire.Status, "wait", True),
    (wire.Abort, "name", None),
    (wire.EntryOpen, "incarnation", "x" * 65),
    (wire.EntryOpen, "descriptor", "str"),
    (wire.Hold, "ttl", 0),
    (wire.Hold, "ttl", 61.0),
    (wire.Hold, "release", 1),
    (wire.Forward, "op", "restart"),
    (wire.Forward, "target", 3),
])
def test_a_malformed_field_is_named(cls: type[wire.Message], field: str, bad: object) -> None:
    body = {**GOOD, field: bad}
    with pytest.raises(wire.MessageInvalid) as caught:
        cls.from_wire(body)
    assert caught.value.field == field
    assert str(caught.value).startswith(f"{field}: expected")
    assert isinstance(caught.value, PeerWireError)  # the peer middleware answers it with a 400


@pytest.mark.parametrize("cls", [wire.Release, wire.Route])
def test_a_bad_record_names_its_field(cls: type[wire.Message]) -> None:
    with pytest.raises(wire.MessageInvalid) as caught:
        cls.from_wire({"record": {"name": 5}})
    assert caught.value.field.startswith("record")


@pytest.mark.parametrize("cls", wire.MESSAGES)
def test_a_body_that_is_not_a_map_is_refused(cls: type[wire.Message]) -> None:
    with pytest.raises(wire.MessageInvalid) as caught:
        cls.from_wire([1, 2])
    assert caught.value.field == "body"
