"""Serf's msgpack RPC on the wire, without I/O: requests out, frames and typed replies in.

The protocol is a bare stream of msgpack objects, with no length prefix and no type tag:
- request: header `{"Command", "Seq"}`, then a body for commands that take arguments;
- reply: header `{"Seq", "Error"}`, then a body only for some commands (`BODY_COMMANDS`);
- `stream` and `query` acknowledge with a bare header, then keep sending records, each a header
  with the opening Seq followed by a body, at any time and interleaved with other replies.

So whether the object after a header is a body depends on which command that Seq was, and the
reader must know it before it can tell a body from the next header. `FrameAssembler` holds
that knowledge per Seq; `ObjectDecoder` turns bytes into objects; the `parse_*` functions turn
bodies into the dataclasses below. Facts measured on Debian's serf 0.9.4 ("0.8.2-dev"):
force-leave has no reply body there (newer Serf sends `{"Exists"}`), and get-coordinate
answers an unknown node with `Ok: false` and `Vec: nil`.
"""
from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar

import msgpack

from peer.packing import packb
from peer.serf.errors import SerfProtocolError

#: Commands whose reply header is followed by a body, also when `Error` is set.
BODY_COMMANDS = frozenset(
    {
        "join",
        "members",
        "members-filtered",
        "install-key",
        "use-key",
        "remove-key",
        "list-keys",
        "stats",
        "get-coordinate",
    }
)
#: Commands whose Seq keeps receiving records (header + body) after the first, bodiless reply.
RECORD_COMMANDS = frozenset({"stream", "monitor", "query"})
#: Errors the agent sends before it looked at the command: never followed by a body.
_GATE_ERRORS = frozenset({"Handshake required", "Authentication required", "Unsupported command"})

#: Upper bound for one unparsed chunk (and so for any single string, list or map in it).
MAX_BUFFER_BYTES = 4 * 1024 * 1024
#: The decoder's buffer to start with; it doubles (up to MAX_BUFFER_BYTES) when an object does
#: not fit. msgpack otherwise starts at min(max_buffer_size, 1 MiB), and since it appends at the
#: tail until the end is reached before moving the rest to the front, a long-lived connection
#: writes through, and so keeps resident, the whole megabyte: 4 MB of an idle agent's RSS for
#: its four Serf connections (issue 18), where replies are a few KB.
INITIAL_BUFFER_BYTES = 16 * 1024

MEMBER_EVENT_KINDS = frozenset(
    {"member-join", "member-leave", "member-failed", "member-update", "member-reap"}
)


# ---------------------------------------------------------------------------- requests


def encode_request(command: str, seq: int, body: Mapping[str, Any] | None = None) -> bytes:
    """The bytes for one request: header, then the body if the command takes one."""
    data: bytes = packb({"Command": command, "Seq": seq}, use_bin_type=True)
    if body is not None:
        data += packb(dict(body), use_bin_type=True)
    return data


def reply_has_body(command: str, error: str) -> bool:
    """Whether a reply header to `command` carrying `error` is followed by a body."""
    return command in BODY_COMMANDS and error not in _GATE_ERRORS


# ---------------------------------------------------------------------------- bytes -> objects


class ObjectDecoder:
    """Bytes in, msgpack objects out; partial objects wait for more bytes.

    Any malformed input raises `SerfProtocolError`, and the decoder stays broken afterwards:
    after garbage the stream cannot be resynchronised.
    """

    def __init__(self, *, max_buffer_bytes: int = MAX_BUFFER_BYTES) -> None:
        self._unpacker = msgpack.Unpacker(
            raw=False, max_buffer_size=max_buffer_bytes, strict_map_key=True,
            read_size=min(INITIAL_BUFFER_BYTES, max_buffer_bytes),
        )
        self._broken: SerfProtocolError | None = None

    def feed(self, data: bytes) -> list[Any]:
        """The objects completed by `data`. It goes in by slices of the initial buffer's size,
        each unpacked before the next: msgpack grows its buffer to hold everything fed and
        not yet unpacked, so a 64 KiB read of small replies (a burst of member events while
        a federation forms) would grow it to 128 KiB for good; sliced, it grows only for a
        single object larger than the buffer."""
        if self._broken is not None:
            raise SerfProtocolError("decoder already failed") from self._broken
        try:
            if len(data) <= INITIAL_BUFFER_BYTES:
                self._unpacker.feed(data)
                return list(self._unpacker)
            out: list[Any] = []
            view = memoryview(data)
            for start in range(0, len(view), INITIAL_BUFFER_BYTES):
                self._unpacker.feed(view[start:start + INITIAL_BUFFER_BYTES])
                out.extend(self._unpacker)
            return out
        except Exception as exc:  # msgpack raises ValueError, TypeError, BufferFull, ...
            self._broken = SerfProtocolError(f"malformed msgpack from serf: {exc!r}")
            raise self._broken from exc


# ---------------------------------------------------------------------------- objects -> frames


@dataclass(frozen=True)
class Frame:
    """One reply or record: the header's Seq and Error, and the body if one belongs to it."""

    seq: int
    error: str
    body: Any = None
    record: bool = False  # True for stream/query records after the first reply


@dataclass
class _Expectation:
    command: str
    acked: bool = False  # record commands: the first reply has arrived


class FrameAssembler:
    """Pairs reply headers with their bodies, knowing what each outstanding Seq was.

    Register every Seq with `expect()` before sending the request. Plain calls are forgotten
    once their reply is complete; a query once its "done" record arrived; a stream stays known
    for the life of the connection, because records may still be in flight after "stop".
    An unknown Seq means we lost track of the framing: `SerfProtocolError`.
    """

    def __init__(self) -> None:
        self._expected: dict[int, _Expectation] = {}
        self._header: tuple[int, str, bool] | None = None  # (seq, error, is_record) awaiting body

    def expect(self, seq: int, command: str) -> None:
        if seq in self._expected:
            raise ValueError(f"Seq {seq} is already outstanding")
        self._expected[seq] = _Expectation(command)

    def outstanding(self) -> int:
        return len(self._expected)

    def push(self, obj: Any) -> Frame | None:
        """Take the next decoded object; return a frame once one is complete."""
        if self._header is not None:
            seq, error, is_record = self._header
            self._header = None
            if is_record and _is_query_done(self._expected.get(seq), obj):
                del self._expected[seq]
            return Frame(seq, error, obj, is_record)
        seq, error = _parse_header(obj)
        expectation = self._expected.get(seq)
        if expectation is None:
            raise SerfProtocolError(f"reply for unknown Seq {seq}")
        if expectation.command not in RECORD_COMMANDS:  # a plain call: one reply, then done
            del self._expected[seq]
            if not reply_has_body(expectation.command, error):
                return Frame(seq, error)
            self._header = (seq, error, False)
            return None
        if not expectation.acked:  # the first reply to stream/query: no body
            expectation.acked = True
            if error:  # refused: no records will follow
                del self._expected[seq]
            return Frame(seq, error)
        self._header = (seq, error, True)
        return None


def _parse_header(obj: Any) -> tuple[int, str]:
    if not isinstance(obj, dict) or set(obj) != {"Seq", "Error"}:
        raise SerfProtocolError(f"expected a reply header {{Seq, Error}}, got {_preview(obj)}")
    seq, error = obj["Seq"], obj["Error"]
    if not _is_int(seq) or seq < 0 or not isinstance(error, str):
        raise SerfProtocolError(f"bad reply header {_preview(obj)}")
    return seq, error


def _is_query_done(expectation: _Expectation | None, body: Any) -> bool:
    return (
        expectation is not None
        and expectation.command == "query"
        and isinstance(body, dict)
        and body.get("Type") == "done"
    )


# ---------------------------------------------------------------------------- typed bodies


@dataclass(frozen=True)
class Member:
    """One Serf member as an agent sees it. `addr` is dotted IPv4 (or IPv6) text."""

    name: str
    addr: str
    port: int
    tags: dict[str, str]
    status: str  # alive, leaving, left, failed, none
    protocol_min: int = 0
    protocol_max: int = 0
    protocol_cur: int = 0
    delegate_min: int = 0
    delegate_max: int = 0
    delegate_cur: int = 0


@dataclass(frozen=True)
class Coordinate:
    """A Vivaldi network coordinate (units: seconds)."""

    vec: tuple[float, ...]
    error: float
    adjustment: float
    height: float


@dataclass(frozen=True)
class MemberEvent:
    kind: str  # one of MEMBER_EVENT_KINDS
    members: tuple[Member, ...]


@dataclass(frozen=True)
class UserEvent:
    name: str
    payload: bytes
    ltime: int
    coalesce: bool


@dataclass(frozen=True)
class QueryEvent:
    """A query addressed to us; answer it with `SerfClient.respond(id, ...)` on the same client."""

    id: int
    name: str
    payload: bytes
    ltime: int


Event = MemberEvent | UserEvent | QueryEvent


@dataclass(frozen=True)
class QueryResponse:
    """One record of a running query: an ack, a response, or the final "done"."""

    kind: Literal["ack", "response", "done"]
    from_node: str
    payload: bytes = b""


@dataclass(frozen=True)
class KeyResponse:
    """Outcome of a keyring command across the cluster."""

    messages: dict[str, str] = field(default_factory=dict)  # node -> error
    keys: dict[str, int] = field(default_factory=dict)  # list-keys: key -> nodes holding it
    num_nodes: int = 0
    num_err: int = 0
    num_resp: int = 0


def parse_members(body: Any) -> list[Member]:
    return [parse_member(m) for m in _get_list(_as_map(body, "members reply"), "Members")]


def parse_member(raw: Any) -> Member:
    what = "member"
    m = _as_map(raw, what)
    return Member(
        name=_get(m, "Name", str, what),
        addr=_parse_addr(m.get("Addr")),
        port=_get_int(m, "Port", what),
        tags=_str_map(m.get("Tags"), "member tags"),
        status=_get(m, "Status", str, what),
        protocol_min=_get_int(m, "ProtocolMin", what, default=0),
        protocol_max=_get_int(m, "ProtocolMax", what, default=0),
        protocol_cur=_get_int(m, "ProtocolCur", what, default=0),
        delegate_min=_get_int(m, "DelegateMin", what, default=0),
        delegate_max=_get_int(m, "DelegateMax", what, default=0),
        delegate_cur=_get_int(m, "DelegateCur", what, default=0),
    )


def parse_coordinate(body: Any) -> Coordinate | None:
    """The get-coordinate reply; None when the agent has no coordinate for that node."""
    what = "get-coordinate reply"
    reply = _as_map(body, what)
    if not _get(reply, "Ok", bool, what):
        return None
    raw = _as_map(reply.get("Coord"), "coordinate")
    vec = _get(raw, "Vec", list, "coordinate")
    if not all(_is_number(x) for x in vec):
        raise SerfProtocolError(f"coordinate vector is not numeric: {_preview(vec)}")
    return Coordinate(
        vec=tuple(float(x) for x in vec),
        error=_get_float(raw, "Error"),
        adjustment=_get_float(raw, "Adjustment"),
        height=_get_float(raw, "Height"),
    )


def parse_event(body: Any) -> Event:
    """A record of an event stream."""
    what = "event record"
    rec = _as_map(body, what)
    kind = _get(rec, "Event", str, what)
    if kind in MEMBER_EVENT_KINDS:
        return MemberEvent(kind, tuple(parse_member(m) for m in _get_list(rec, "Members")))
    if kind == "user":
        return UserEvent(
            name=_get(rec, "Name", str, what),
            payload=_get_bytes(rec, "Payload", what),
            ltime=_get_int(rec, "LTime", what),
            coalesce=_get(rec, "Coalesce", bool, what, default=False),
        )
    if kind == "query":
        return QueryEvent(
            id=_get_int(rec, "ID", what),
            name=_get(rec, "Name", str, what),
            payload=_get_bytes(rec, "Payload", what),
            ltime=_get_int(rec, "LTime", what),
        )
    raise SerfProtocolError(f"unknown event kind {kind!r}")


def parse_query_record(body: Any) -> QueryResponse:
    what = "query record"
    rec = _as_map(body, what)
    kind = _get(rec, "Type", str, what)
    if kind not in ("ack", "response", "done"):
        raise SerfProtocolError(f"unknown query record type {kind!r}")
    return QueryResponse(
        kind=kind,  # type: ignore[arg-type]  # narrowed by the check above
        from_node=_get(rec, "From", str, what, default=""),
        payload=_get_bytes(rec, "Payload", what),
    )


def parse_key_response(body: Any) -> KeyResponse:
    what = "key reply"
    rec = _as_map(body, what)
    keys = rec.get("Keys") or {}
    if not isinstance(keys, dict) or not all(
        isinstance(k, str) and _is_int(v) for k, v in keys.items()
    ):
        raise SerfProtocolError(f"bad Keys in key reply: {_preview(keys)}")
    return KeyResponse(
        messages=_str_map(rec.get("Messages"), "key reply messages"),
        keys=dict(keys),
        num_nodes=_get_int(rec, "NumNodes", what, default=0),
        num_err=_get_int(rec, "NumErr", what, default=0),
        num_resp=_get_int(rec, "NumResp", what, default=0),
    )


def parse_stats(body: Any) -> dict[str, dict[str, str]]:
    rec = _as_map(body, "stats reply")
    return {str(section): _str_map(values, f"stats {section}") for section, values in rec.items()}


def parse_join(body: Any) -> int:
    return _get_int(_as_map(body, "join reply"), "Num", "join reply")


# ---------------------------------------------------------------------------- field checks

T = TypeVar("T")
_MISSING: Any = object()


def _as_map(obj: Any, what: str) -> dict[str, Any]:
    if not isinstance(obj, dict):
        raise SerfProtocolError(f"{what}: expected a map, got {_preview(obj)}")
    return obj


def _get(
    m: dict[str, Any],
    key: str,
    kind: type[T],
    what: str,
    *,
    default: Any = _MISSING,
) -> T:
    value = m.get(key, default)
    if value is _MISSING:
        raise SerfProtocolError(f"{what}: missing {key}")
    if not isinstance(value, kind):
        raise SerfProtocolError(f"{what}: {key} should be {kind.__name__}, got {_preview(value)}")
    return value


def _get_list(m: dict[str, Any], key: str) -> list[Any]:
    value = m.get(key)  # Go sends a nil slice as nil
    if value is None:
        return []
    if not isinstance(value, list):
        raise SerfProtocolError(f"{key} should be a list, got {_preview(value)}")
    return value


def _get_int(m: dict[str, Any], key: str, what: str, *, default: Any = _MISSING) -> int:
    value = m.get(key, default)
    if not _is_int(value):
        raise SerfProtocolError(f"{what}: {key} should be an integer, got {_preview(value)}")
    return int(value)


def _get_float(m: dict[str, Any], key: str) -> float:
    value = m.get(key)
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        raise SerfProtocolError(f"coordinate: {key} should be a number, got {_preview(value)}")
    return float(value)


def _get_bytes(m: dict[str, Any], key: str, what: str) -> bytes:
    value = m.get(key)  # Go sends a nil []byte as nil
    if value is None:
        return b""
    if not isinstance(value, bytes):
        raise SerfProtocolError(f"{what}: {key} should be bytes, got {_preview(value)}")
    return value


def _str_map(value: Any, what: str) -> dict[str, str]:
    if value is None:  # a nil Go map
        return {}
    if not isinstance(value, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in value.items()
    ):
        raise SerfProtocolError(f"{what}: expected a map of strings, got {_preview(value)}")
    return dict(value)


def _parse_addr(value: Any) -> str:
    if not isinstance(value, bytes) or len(value) not in (4, 16):
        raise SerfProtocolError(f"member Addr should be 4 or 16 bytes, got {_preview(value)}")
    ip = ipaddress.ip_address(value)
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped  # Go's net.IP often carries IPv4 in 16-byte form
    return str(ip)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _preview(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."
