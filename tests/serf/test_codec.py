"""The Serf RPC codec, from bytes: hand-built msgpack and replies captured from serf 0.9.4."""
from __future__ import annotations

import tracemalloc
from typing import Any

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from peer.serf import codec
from peer.serf.codec import (
    Coordinate,
    FrameAssembler,
    KeyResponse,
    Member,
    MemberEvent,
    ObjectDecoder,
    QueryEvent,
    QueryResponse,
    UserEvent,
)
from peer.serf.errors import SerfProtocolError

# -- hand-built: 0x82 = map of 2, 0xa3 'Seq' = str of 3, 0xa5 'Error', 0xa0 = "" ------------
HEADER_SEQ1 = bytes([0x82, 0xA3]) + b"Seq" + bytes([0x01, 0xA5]) + b"Error" + bytes([0xA0])

# -- captured from a real `serf agent` (Debian 0.9.4), one reply or record each -------------
CAPTURED = {
    "members": (
        "82a54572726f72a0a35365710681a74d656d62657273928ba441646472c4047f00010bab44656c65676174"
        "6543757205ab44656c65676174654d617805ab44656c65676174654d696e02a44e616d65a36e3131a4506f"
        "7274cd1f0aab50726f746f636f6c43757202ab50726f746f636f6c4d617805ab50726f746f636f6c4d696e"
        "01a6537461747573a5616c697665a45461677381a474696572a4656467658ba441646472c4047f00010cab"
        "44656c656761746543757205ab44656c65676174654d617805ab44656c65676174654d696e02a44e616d65"
        "a36e3132a4506f7274cd1f0aab50726f746f636f6c43757202ab50726f746f636f6c4d617805ab50726f74"
        "6f636f6c4d696e01a6537461747573a5616c697665a45461677380"
    ),
    "coord": (
        "82a54572726f72a0a35365710782a5436f6f726484aa41646a7573746d656e74cb3edd5c487d6e426aa545"
        "72726f72cb3ff5afefcac76fc1a6486569676874cb3ee8d06d9b398c42a356656398cbbed216c5f35964c7"
        "cb3eeaf6790b3d1b11cb3ef1a657ee76c4e4cbbeeb9bb1717e0dc9cbbeb6c692a16a0a94cb3ee3e075b8a8"
        "9519cbbeedb0749ac10a12cb3ee5b076648b7a05a24f6bc3"
    ),
    "coord-missing": (
        "82a54572726f72a0a35365710882a5436f6f726484aa41646a7573746d656e74cb0000000000000000a545"
        "72726f72cb0000000000000000a6486569676874cb0000000000000000a3566563c0a24f6bc2"
    ),
    "join-fail": (
        "82a54572726f72d96731206572726f72206f636375727265643a0a092a204661696c656420746f206a6f69"
        "6e203132372e302e312e34393a206469616c20746370203132372e302e312e34393a373934363a20636f6e"
        "6e6563743a20636f6e6e656374696f6e20726566757365640a0aa35365710981a34e756d00"
    ),
    "install-bad": (
        "82a54572726f72d923696c6c6567616c20626173653634206461746120617420696e707574206279746520"
        "30a35365710a85a44b657973c0a84d6573736167657380a64e756d45727200a84e756d4e6f64657300a74e"
        "756d5265737000"
    ),
}
# stream (Seq 4) acked; then join (Seq 5) reply + body interleaved with a member-join record
JOIN_AND_EVENT = (
    "82a54572726f72a0a35365710482a54572726f72a0a35365710581a34e756d0182a54572726f72a0a3536571"
    "0482a54576656e74ab6d656d6265722d6a6f696ea74d656d62657273918ba441646472c4047f00010cab4465"
    "6c656761746543757205ab44656c65676174654d617805ab44656c65676174654d696e02a44e616d65a36e31"
    "32a4506f7274cd1f0aab50726f746f636f6c43757202ab50726f746f636f6c4d617805ab50726f746f636f6c"
    "4d696e01a6537461747573a5616c697665a45461677380"
)
USER_EVENT_RECORD = (
    "82a54572726f72a0a35365710485a8436f616c65736365c2a54576656e74a475736572a54c54696d6501a44e"
    "616d65a66465706c6f79a75061796c6f6164c4020102"
)
# query (Seq 11) acked, a query event on stream Seq 4, two acks and "done" for Seq 11
QUERY_SESSION = (
    "82a54572726f72a0a35365710b82a54572726f72a0a35365710485a54576656e74a57175657279a2494401a5"
    "4c54696d6501a44e616d65a470696e67a75061796c6f6164c402686982a54572726f72a0a35365710b83a446"
    "726f6da36e3131a75061796c6f6164c0a454797065a361636b82a54572726f72a0a35365710b83a446726f6d"
    "a36e3132a75061796c6f6164c0a454797065a361636b82a54572726f72a0a35365710b83a446726f6da0a750"
    "61796c6f6164c0a454797065a4646f6e65"
)


def frames(data: bytes, expected: dict[int, str], *, chunk: int | None = None) -> list[codec.Frame]:
    """Run bytes through decoder + assembler, optionally in `chunk`-byte pieces."""
    decoder, assembler = ObjectDecoder(), FrameAssembler()
    for seq, command in expected.items():
        assembler.expect(seq, command)
    out = []
    step = chunk or len(data) or 1
    for i in range(0, len(data), step):
        for obj in decoder.feed(data[i : i + step]):
            frame = assembler.push(obj)
            if frame is not None:
                out.append(frame)
    return out


# ---------------------------------------------------------------------------- requests


def test_encode_request_is_header_then_body() -> None:
    data = codec.encode_request("handshake", 0, {"Version": 1})
    assert data == (
        bytes([0x82, 0xA7]) + b"Command" + bytes([0xA9]) + b"handshake"
        + bytes([0xA3]) + b"Seq" + bytes([0x00])
        + bytes([0x81, 0xA7]) + b"Version" + bytes([0x01])
    )


def test_encode_request_without_body_and_payload_as_bin() -> None:
    assert codec.encode_request("members", 7) == msgpack.packb({"Command": "members", "Seq": 7})
    data = codec.encode_request("event", 1, {"Payload": b"\x00\xff"})
    assert b"\xc4\x02\x00\xff" in data  # bin 8, not str: Go wants []byte


def test_reply_has_body_table() -> None:
    for command in ("join", "members", "members-filtered", "install-key", "use-key",
                    "remove-key", "list-keys", "stats", "get-coordinate"):
        assert codec.reply_has_body(command, "")
        assert codec.reply_has_body(command, "some failure")  # body sent even with Error
    for command in ("handshake", "auth", "event", "leave", "force-leave", "tags", "respond",
                    "stop", "stream", "query"):
        assert not codec.reply_has_body(command, "")
    assert not codec.reply_has_body("members", "Authentication required")


# ---------------------------------------------------------------------------- decoding


def test_hand_built_header_decodes() -> None:
    assert ObjectDecoder().feed(HEADER_SEQ1) == [{"Seq": 1, "Error": ""}]
    assert frames(HEADER_SEQ1, {1: "handshake"}) == [codec.Frame(1, "")]


def test_partial_frames_fed_byte_by_byte() -> None:
    data = bytes.fromhex(CAPTURED["members"])
    whole = frames(data, {6: "members"})
    assert frames(data, {6: "members"}, chunk=1) == whole
    assert len(whole) == 1 and whole[0].body["Members"][0]["Name"] == "n11"


def test_truncated_input_yields_nothing_yet() -> None:
    decoder, assembler = ObjectDecoder(), FrameAssembler()
    assembler.expect(6, "members")
    data = bytes.fromhex(CAPTURED["members"])
    objs = decoder.feed(data[:-1])
    assert objs == [{"Seq": 6, "Error": ""}]  # header complete, body not yet
    assert assembler.push(objs[0]) is None  # waits for the body
    [body] = decoder.feed(data[-1:])
    frame = assembler.push(body)
    assert frame is not None and frame.seq == 6 and not frame.record


def test_members_parse_to_dataclasses() -> None:
    [frame] = frames(bytes.fromhex(CAPTURED["members"]), {6: "members"})
    n11, n12 = codec.parse_members(frame.body)
    assert n11 == Member(
        name="n11", addr="127.0.1.11", port=7946, tags={"tier": "edge"}, status="alive",
        protocol_min=1, protocol_max=5, protocol_cur=2,
        delegate_min=2, delegate_max=5, delegate_cur=5,
    )
    assert n12.addr == "127.0.1.12" and n12.tags == {}


def test_member_addr_16_byte_ipv4_mapped_and_ipv6() -> None:
    base = {"Name": "a", "Port": 1, "Tags": None, "Status": "failed"}
    mapped = codec.parse_member({**base, "Addr": bytes(10) + b"\xff\xff" + bytes([10, 0, 0, 7])})
    assert mapped.addr == "10.0.0.7" and mapped.tags == {}
    v6 = codec.parse_member({**base, "Addr": bytes(15) + b"\x01"})
    assert v6.addr == "::1"
    with pytest.raises(SerfProtocolError):
        codec.parse_member({**base, "Addr": b"\x01\x02\x03"})


def test_coordinate_and_missing_coordinate() -> None:
    [frame] = frames(bytes.fromhex(CAPTURED["coord"]), {7: "get-coordinate"})
    coord = codec.parse_coordinate(frame.body)
    assert isinstance(coord, Coordinate)
    assert len(coord.vec) == 8 and coord.error == pytest.approx(1.355453292947445)
    assert coord.height == pytest.approx(1.1832319479049045e-05)
    [missing] = frames(bytes.fromhex(CAPTURED["coord-missing"]), {8: "get-coordinate"})
    assert codec.parse_coordinate(missing.body) is None


def test_error_replies_still_carry_their_body() -> None:
    blob = bytes.fromhex(CAPTURED["join-fail"] + CAPTURED["install-bad"])
    join, install = frames(blob, {9: "join", 10: "install-key"}, chunk=3)
    assert "connection refused" in join.error and codec.parse_join(join.body) == 0
    assert install.error.startswith("illegal base64")
    assert codec.parse_key_response(install.body) == KeyResponse()


def test_stream_records_interleave_with_replies() -> None:
    out = frames(bytes.fromhex(JOIN_AND_EVENT), {4: "stream", 5: "join"}, chunk=5)
    ack, join, record = out
    assert (ack.seq, ack.body, ack.record) == (4, None, False)
    assert (join.seq, codec.parse_join(join.body), join.record) == (5, 1, False)
    assert record.seq == 4 and record.record
    event = codec.parse_event(record.body)
    assert isinstance(event, MemberEvent) and event.kind == "member-join"
    assert [m.name for m in event.members] == ["n12"]


def test_user_event_record() -> None:
    assembler = FrameAssembler()
    assembler.expect(4, "stream")
    assembler.push({"Seq": 4, "Error": ""})  # the stream's ack
    objs = ObjectDecoder().feed(bytes.fromhex(USER_EVENT_RECORD))
    assert assembler.push(objs[0]) is None
    frame = assembler.push(objs[1])
    assert frame is not None and frame.record
    assert codec.parse_event(frame.body) == UserEvent("deploy", b"\x01\x02", 1, False)


def test_query_session_ends_with_done_and_forgets_the_seq() -> None:
    decoder, assembler = ObjectDecoder(), FrameAssembler()
    assembler.expect(4, "stream")
    assembler.push({"Seq": 4, "Error": ""})
    assembler.expect(11, "query")
    out = [f for o in decoder.feed(bytes.fromhex(QUERY_SESSION)) if (f := assembler.push(o))]
    assert [(f.seq, f.record) for f in out] == [(11, False), (4, True), (11, True), (11, True), (11, True)]
    assert codec.parse_event(out[1].body) == QueryEvent(id=1, name="ping", payload=b"hi", ltime=1)
    records = [codec.parse_query_record(f.body) for f in out[2:]]
    assert records == [
        QueryResponse("ack", "n11"), QueryResponse("ack", "n12"), QueryResponse("done", ""),
    ]
    assert assembler.outstanding() == 1  # the query is forgotten, the stream stays known
    with pytest.raises(SerfProtocolError, match="unknown Seq 11"):
        assembler.push({"Seq": 11, "Error": ""})


def test_refused_stream_gets_no_records() -> None:
    assembler = FrameAssembler()
    assembler.expect(3, "stream")
    frame = assembler.push({"Seq": 3, "Error": "Invalid event filter"})
    assert frame == codec.Frame(3, "Invalid event filter")
    assert assembler.outstanding() == 0


def test_stats_and_key_list() -> None:
    stats = codec.parse_stats({"agent": {"name": "n1"}, "event_handlers": {}})
    assert stats == {"agent": {"name": "n1"}, "event_handlers": {}}
    keys = codec.parse_key_response(
        {"Keys": {"k=": 2}, "Messages": {}, "NumErr": 0, "NumNodes": 2, "NumResp": 2}
    )
    assert keys.keys == {"k=": 2} and keys.num_nodes == 2


# ---------------------------------------------------------------------------- malformed


@pytest.mark.parametrize(
    "data",
    [
        bytes([0xC1]),  # the one byte msgpack never uses
        bytes([0x81, 0x01, 0x02]),  # map with an integer key (strict_map_key)
        bytes([0xA2, 0xFF, 0xFE]),  # str with invalid UTF-8
    ],
)
def test_malformed_bytes_raise_protocol_error_and_stay_broken(data: bytes) -> None:
    decoder = ObjectDecoder()
    with pytest.raises(SerfProtocolError):
        decoder.feed(data)
    with pytest.raises(SerfProtocolError):
        decoder.feed(HEADER_SEQ1)


def test_a_long_lived_decoder_keeps_a_small_buffer_and_grows_for_big_objects() -> None:
    """Thousands of small replies stay within the initial buffer (msgpack's default would
    write through, and keep resident, a whole MiB per connection); an object larger than that
    buffer, fed in pieces, still decodes, because the buffer grows up to the limit."""
    tracemalloc.start()  # msgpack allocates its buffer with PyMem_Malloc: traced
    try:
        before = tracemalloc.get_traced_memory()[0]
        decoder = ObjectDecoder()
        reply = HEADER_SEQ1 + msgpack.packb({"Members": [{"Name": "m" * 200}] * 3})
        for _ in range(2000):
            assert len(decoder.feed(reply)) == 2
        assert tracemalloc.get_traced_memory()[0] - before < 4 * codec.INITIAL_BUFFER_BYTES
    finally:
        tracemalloc.stop()
    big = msgpack.packb({"Members": ["x" * 1000] * 1000})  # ~1 MB, > the initial buffer
    assert len(big) > 32 * codec.INITIAL_BUFFER_BYTES
    assert decoder.feed(big[:5000]) == []
    assert decoder.feed(big[5000:]) == [{"Members": ["x" * 1000] * 1000}]
    assert decoder.feed(reply) == [{"Seq": 1, "Error": ""}, {"Members": [{"Name": "m" * 200}] * 3}]


def test_a_large_read_of_small_objects_does_not_grow_the_buffer() -> None:
    """A 64 KiB read full of small replies (a burst while a federation forms) goes in by
    slices: every object comes out, in order, and the buffer keeps its initial size."""
    replies = [HEADER_SEQ1 + msgpack.packb({"Members": [{"Name": f"m{i}", "Tags": {"ld": "x" * 150}}]})
               for i in range(400)]
    data = b"".join(replies)
    assert len(data) > 4 * codec.INITIAL_BUFFER_BYTES
    tracemalloc.start()
    try:
        decoder = ObjectDecoder()
        before = tracemalloc.get_traced_memory()[0]  # the decoder with its initial buffer
        objs = decoder.feed(data[:70_001]) + decoder.feed(data[70_001:])
        complete = (objs[1::2] == [{"Members": [{"Name": f"m{i}", "Tags": {"ld": "x" * 150}}]} for i in range(400)]
                    and objs[0::2] == [{"Seq": 1, "Error": ""}] * 400)
        del objs
        grown = tracemalloc.get_traced_memory()[0] - before  # what its buffer grew by
    finally:
        tracemalloc.stop()
    assert complete
    assert grown < 3 * codec.INITIAL_BUFFER_BYTES  # unsliced: the buffer went to 128 KiB (+144 KB)


def test_oversized_object_is_bounded_by_the_buffer_limit() -> None:
    decoder = ObjectDecoder(max_buffer_bytes=1024)
    assert decoder.feed(bytes([0xDB, 0xFF, 0xFF, 0xFF, 0xFF])) == []  # str32 claiming 4 GiB
    with pytest.raises(SerfProtocolError):
        decoder.feed(bytes(2048))


@pytest.mark.parametrize(
    "obj",
    [
        [1, 2],
        {"Seq": 1},
        {"Seq": "1", "Error": ""},
        {"Seq": -1, "Error": ""},
        {"Seq": 1, "Error": None},
        {"Seq": 1, "Error": "", "Extra": 0},
        {"Seq": 99, "Error": ""},  # nobody asked
    ],
)
def test_bad_headers_raise_protocol_error(obj: Any) -> None:
    assembler = FrameAssembler()
    assembler.expect(1, "members")
    with pytest.raises(SerfProtocolError):
        assembler.push(obj)


@pytest.mark.parametrize(
    ("parse", "body"),
    [
        (codec.parse_members, {"Members": [{"Name": "a"}]}),
        (codec.parse_members, {"Members": "nope"}),
        (codec.parse_coordinate, {"Ok": True, "Coord": {"Vec": ["x"], "Error": 0.0}}),
        (codec.parse_event, {"Event": "member-explode"}),
        (codec.parse_event, {"Event": "user", "Name": "x", "Payload": "str", "LTime": 1}),
        (codec.parse_query_record, {"Type": "maybe", "From": "a"}),
        (codec.parse_key_response, {"Keys": {"k": "two"}}),
        (codec.parse_stats, {"agent": {"name": 1}}),
        (codec.parse_join, None),
    ],
)
def test_bad_bodies_raise_protocol_error(parse: Any, body: Any) -> None:
    with pytest.raises(SerfProtocolError):
        parse(body)


# ---------------------------------------------------------------------------- properties

PARSERS = [
    codec.parse_members, codec.parse_member, codec.parse_coordinate, codec.parse_event,
    codec.parse_query_record, codec.parse_key_response, codec.parse_stats, codec.parse_join,
]
msgpack_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.floats()
    | st.text(max_size=8) | st.binary(max_size=8)
    | st.sampled_from(["Seq", "Error", "Members", "Event", "user", "query", "Ok", "Type"]),
    lambda inner: st.lists(inner, max_size=4)
    | st.dictionaries(st.sampled_from(["Seq", "Error", "Members", "Name", "Addr", "Event",
                                       "Payload", "LTime", "ID", "Ok", "Coord", "Vec",
                                       "Type", "From", "Keys", "Num", "Tags"]) | st.text(max_size=4),
                      inner, max_size=5),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None)
@given(chunks=st.lists(st.binary(max_size=64), max_size=8))
def test_arbitrary_bytes_only_ever_raise_protocol_error(chunks: list[bytes]) -> None:
    decoder, assembler = ObjectDecoder(), FrameAssembler()
    assembler.expect(1, "members")
    assembler.expect(2, "stream")
    try:
        for chunk in chunks:
            for obj in decoder.feed(chunk):
                assembler.push(obj)
    except SerfProtocolError:
        pass


@settings(max_examples=300, deadline=None)
@given(value=msgpack_values, prefix=st.binary(max_size=4), cut=st.integers(0, 64))
def test_malformed_msgpack_objects_only_ever_raise_protocol_error(
    value: Any, prefix: bytes, cut: int
) -> None:
    data = prefix + msgpack.packb(value, use_bin_type=True)
    decoder, assembler = ObjectDecoder(), FrameAssembler()
    assembler.expect(1, "members")
    try:
        for chunk in (data[:cut], data[cut:]):
            for obj in decoder.feed(chunk):
                assembler.push(obj)
    except SerfProtocolError:
        pass
    for parse in PARSERS:
        try:
            parse(value)
        except SerfProtocolError:
            pass
