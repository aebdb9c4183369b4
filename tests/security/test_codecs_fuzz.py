"""Hypothesis on the parsers behind the decoders that are already fuzzed elsewhere.

Already covered, not repeated here: bytes into `peerwire.decode` and signature tampering
(tests/records/test_peerwire.py), bytes and objects into the Serf RPC frame decoder
(tests/serf/test_codec.py), JSON/msgpack into `ServiceDescriptor` (tests/drivers/
test_descriptor_props.py). What was missing: the typed parsers that take a decoded object
from a peer or from Serf (records, anti-entropy messages, Serf reply bodies): whatever the
object, each returns a value or raises its own boundary error, never anything else.
"""
from __future__ import annotations

from typing import Any

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from peer.peering.wire import PeerWireError
from peer.records import messages
from peer.records import record as rec
from peer.serf import codec
from peer.serf.errors import SerfProtocolError

RECORD_KEYS = ["name", "home", "location", "state", "digest", "descriptor", "instance", "endpoint", "migration_id",
               "vclock", "written", "tombstone", "updated_at"]
MESSAGE_KEYS = ["from", "lo", "hi", "digests", "records", "names", "conflicts", "clocks"]
SERF_KEYS = ["Members", "Name", "Addr", "Port", "Tags", "Status", "ProtocolMin", "ProtocolMax", "ProtocolCur",
             "DelegateMin", "DelegateMax", "DelegateCur", "Keys", "Messages", "NumNodes", "NumErr", "NumResp",
             "Coord", "Ok", "Vec", "Error", "Adjustment", "Height", "Event", "LTime", "Payload", "Coalesce", "ID",
             "Type", "From", "Num", "agent", "runtime"]

def scalars(*, packable: bool = False) -> st.SearchStrategy[Any]:
    ints = st.integers(-(2**63), 2**64 - 1) if packable else st.integers(-(2**70), 2**70)
    return st.one_of(st.none(), st.booleans(), ints, st.floats(), st.text(max_size=20), st.binary(max_size=20))


def objects(keys: list[str], *, packable: bool = False) -> st.SearchStrategy[Any]:
    """Plain values whose maps mostly use the parser's own keys, so parsing gets past the top."""
    return st.recursive(scalars(packable=packable), lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(st.one_of(st.sampled_from(keys), st.text(max_size=6)), inner, max_size=8)), max_leaves=30)


def near_records(*, packable: bool = False) -> st.SearchStrategy[dict[str, Any]]:
    """A valid record's encoding with some fields replaced by junk."""
    base: dict[str, Any] = {"name": "svc", "home": "c1", "location": "c2", "state": "running", "digest": "d", "descriptor": b"",
            "instance": "127.0.0.1:80", "endpoint": None, "migration_id": None, "vclock": [], "written": [],
            "tombstone": False, "updated_at": 1.0}
    return st.dictionaries(st.sampled_from(RECORD_KEYS), objects(RECORD_KEYS, packable=packable), max_size=4).map(
        lambda junk: {**base, **junk})


@settings(max_examples=200)
@given(st.one_of(objects(RECORD_KEYS), near_records()))
def test_record_decode_raises_only_record_decode_error(obj: Any) -> None:
    try:
        record = rec.decode(obj)
    except rec.RecordDecodeError:
        return
    assert rec.decode(rec.encode(record)) == record


@given(st.one_of(st.binary(max_size=200), near_records(packable=True).map(lambda r: msgpack.packb(r, use_bin_type=True))))
def test_record_unpack_raises_only_record_decode_error(data: bytes) -> None:
    try:
        rec.unpack(data)
    except rec.RecordDecodeError:
        pass


MESSAGE_PARSERS = [messages.parse_digests_request, messages.parse_digests_reply, messages.parse_push_request,
                   messages.parse_fetch_request, messages.parse_records_reply, messages.parse_conflicts,
                   messages.parse_clocks, messages.push_takes_clocks]


@pytest.mark.parametrize("parse", MESSAGE_PARSERS, ids=lambda f: f.__name__)
@settings(max_examples=60)
@given(obj=st.one_of(objects(MESSAGE_KEYS), st.fixed_dictionaries(
    {"from": st.text(max_size=70), "records": st.lists(near_records(), max_size=3)}), st.fixed_dictionaries(
    {"clocks": st.lists(st.one_of(st.binary(max_size=30), objects(MESSAGE_KEYS, packable=True).map(
        lambda o: msgpack.packb(o, use_bin_type=True))), max_size=3)})))
def test_anti_entropy_parsers_raise_only_peer_wire_error(parse: Any, obj: Any) -> None:
    try:
        parse(obj)
    except PeerWireError:
        pass


SERF_PARSERS = [codec.parse_members, codec.parse_member, codec.parse_coordinate, codec.parse_event,
                codec.parse_query_record, codec.parse_key_response, codec.parse_stats, codec.parse_join]


@pytest.mark.parametrize("parse", SERF_PARSERS, ids=lambda f: f.__name__)
@settings(max_examples=60)
@given(body=objects(SERF_KEYS))
def test_serf_reply_parsers_raise_only_protocol_error(parse: Any, body: Any) -> None:
    try:
        parse(body)
    except SerfProtocolError:
        pass
