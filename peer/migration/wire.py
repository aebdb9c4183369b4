"""The migration and home-set protocol between agents: its paths and its messages, typed.

One module for the whole protocol (issue 13): every request a coordinator, steward or entry
sends is a frozen dataclass here with `to_wire()` (what the client sends, msgpack-able) and
`from_wire()` (what the handler reads: each field's type and bounds checked, a bad one refused
with `MessageInvalid` naming it, which the peer middleware answers with a 400). The version is
in the paths (`/peer/v1/...`); a peer ignores keys it does not know, so a newer sender may add
optional fields without a new version, and a change of meaning takes a new path.

Records travel in their own strict codec (`peer.records.record`). Other peer protocols have
their module beside their owner: records' anti-entropy (`peer.records.messages`), state
(`peer.state.wire`), trust (`peer.trust.spread`, `renew`), the link probe (`peer.links.probe`).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Literal

from peer.peering.wire import PeerWireError
from peer.records import record as rec
from peer.records.naming import SERVICE_RE
from peer.records.record import Record, RecordDecodeError
from peer.state.handover import HOLD_MAX  # the longest hold an entry accepts

VERSION = 1
_BASE = f"/peer/v{VERSION}"

REPLICATE = f"{_BASE}/migration/replicate"  # coordinator -> AC: descriptor + home info; AC admits or refuses
#   (with "standby": true the steward asks for a warm copy, peer/migration/standby.py)
STATUS = f"{_BASE}/migration/status"        # coordinator -> AC: is the copy ready? (wait stage)
#   ("wait": seconds, a long poll: the AC answers when the copy is ready or failed, or then)
STATUS_WAIT_MAX = 10.0                      # the longest `wait` an AC accepts
ABORT = f"{_BASE}/migration/abort"          # coordinator -> AC: drop the copy (rollback)
RELEASE = f"{_BASE}/migration/release"      # coordinator -> old location: here is the committed record
PING = f"{_BASE}/ping"                      # fail-safe probe: is the peer's agent reachable?
ENTRY_OPEN = f"{_BASE}/homes/open"          # creator or steward -> new entry: open a frontend for it
ROUTE = f"{_BASE}/homes/route"              # steward -> entry: apply this record, route, then answer
FORWARD = f"{_BASE}/homes/forward"          # any cluster -> steward: run this admin operation
LOOKUP = f"{_BASE}/homes/lookup"            # creator -> everyone: do you hold this name?
HOLD = f"{_BASE}/homes/hold"                # steward -> entry: hold (or release) requests to a service (handover)

_ID_MAX = 128        # migration ids, incarnations, cluster names: short strings
ForwardedOp = Literal["migrate", "delete"]
FORWARDED_OPS: tuple[ForwardedOp, ...] = ("migrate", "delete")


class MessageInvalid(PeerWireError):
    """A peer message with a missing or malformed field; `field` names it (answered 400)."""

    def __init__(self, field: str, expected: str) -> None:
        super().__init__(f"{field}: expected {expected}")
        self.field = field


def _map(body: object) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise MessageInvalid("body", "a map")
    return body


def _text(body: dict[str, Any], key: str, *, optional: bool = False, max_len: int = _ID_MAX) -> Any:
    value = body.get(key)
    if value is None and optional:
        return None
    if not isinstance(value, str) or not value or len(value) > max_len:
        raise MessageInvalid(key, f"a string of 1 to {max_len} characters")
    return value


def _service(body: dict[str, Any]) -> str:
    name = body.get("name")
    if not isinstance(name, str) or not SERVICE_RE.match(name):
        raise MessageInvalid("name", "a service name")
    return name


def _flag(body: dict[str, Any], key: str) -> bool:
    value = body.get(key, False)
    if not isinstance(value, bool):
        raise MessageInvalid(key, "true or false")
    return value


def _seconds(body: dict[str, Any], key: str, *, low: float, high: float, low_open: bool = False,
             default: float | None = None) -> float:
    value = body.get(key, default)
    if isinstance(value, (int, float)) and not isinstance(value, bool) and \
            (low < value if low_open else low <= value) and value <= high:
        return float(value)
    raise MessageInvalid(key, f"seconds in {'(' if low_open else '['}{low:g}, {high:g}]")


def _record(body: dict[str, Any]) -> Record:
    try:
        return rec.decode(body.get("record"))
    except RecordDecodeError as exc:
        raise MessageInvalid(f"record.{exc.field}", str(exc)) from exc


def _descriptor(body: dict[str, Any]) -> bytes:
    raw = body.get("descriptor")
    if not isinstance(raw, bytes):
        raise MessageInvalid("descriptor", "msgpack bytes")
    return raw


# --- the migration (coordinator <-> AC, HC, old location) -------------------------------------

@dataclass(frozen=True)
class Replicate:
    """Start a copy here (the AC's admission decides), or a warm standby copy."""

    path: ClassVar[str] = REPLICATE
    migration_id: str
    name: str
    home: str
    descriptor: bytes  # the service descriptor's msgpack form (peer.drivers.descriptor)
    endpoint: str | None = None
    source: str | None = None
    standby: bool = False

    def to_wire(self) -> dict[str, Any]:
        body: dict[str, Any] = {"migration_id": self.migration_id, "name": self.name, "home": self.home,
                                "descriptor": self.descriptor, "endpoint": self.endpoint, "source": self.source}
        if self.standby:
            body["standby"] = True
        return body

    @classmethod
    def from_wire(cls, body: object) -> Replicate:
        b = _map(body)
        return cls(migration_id=_text(b, "migration_id"), name=_service(b), home=_text(b, "home"),
                   descriptor=_descriptor(b), endpoint=_text(b, "endpoint", optional=True, max_len=300),
                   source=_text(b, "source", optional=True), standby=_flag(b, "standby"))


@dataclass(frozen=True)
class Status:
    """Where the copy of a migration stands; `wait` > 0 makes it a long poll."""

    path: ClassVar[str] = STATUS
    migration_id: str
    name: str
    wait: float = 0.0

    def to_wire(self) -> dict[str, Any]:
        return {"migration_id": self.migration_id, "name": self.name, "wait": self.wait}

    @classmethod
    def from_wire(cls, body: object) -> Status:
        b = _map(body)
        return cls(migration_id=_text(b, "migration_id"), name=_service(b),
                   wait=_seconds(b, "wait", low=0.0, high=STATUS_WAIT_MAX, default=0.0))


@dataclass(frozen=True)
class Abort:
    """Drop the copy this migration started (a rollback)."""

    path: ClassVar[str] = ABORT
    migration_id: str
    name: str

    def to_wire(self) -> dict[str, Any]:
        return {"migration_id": self.migration_id, "name": self.name}

    @classmethod
    def from_wire(cls, body: object) -> Abort:
        b = _map(body)
        return cls(migration_id=_text(b, "migration_id"), name=_service(b))


@dataclass(frozen=True)
class Release:
    """At the old location: here is the committed record; stop the copy it no longer runs."""

    path: ClassVar[str] = RELEASE
    record: Record

    def to_wire(self) -> dict[str, Any]:
        return {"record": rec.encode(self.record)}

    @classmethod
    def from_wire(cls, body: object) -> Release:
        return cls(record=_record(_map(body)))


@dataclass(frozen=True)
class Ping:
    """Is this peer's agent reachable (the fail-safe's and the home watch's probe)?"""

    path: ClassVar[str] = PING

    def to_wire(self) -> dict[str, Any]:
        return {}

    @classmethod
    def from_wire(cls, body: object) -> Ping:
        _map(body)
        return cls()


# --- the home set (steward, creator <-> entries) -----------------------------------------------

@dataclass(frozen=True)
class Lookup:
    """Does this cluster hold a record of `name` (creation checks the name is free)?"""

    path: ClassVar[str] = LOOKUP
    name: str

    def to_wire(self) -> dict[str, Any]:
        return {"name": self.name}

    @classmethod
    def from_wire(cls, body: object) -> Lookup:
        return cls(name=_service(_map(body)))


@dataclass(frozen=True)
class EntryOpen:
    """Open (reserve) a frontend here for a service whose home set this cluster joins."""

    path: ClassVar[str] = ENTRY_OPEN
    name: str
    incarnation: str
    home: str | None = None
    descriptor: bytes | None = None  # judged by this cluster's workload policy

    def to_wire(self) -> dict[str, Any]:
        return {"name": self.name, "incarnation": self.incarnation, "home": self.home,
                "descriptor": self.descriptor}

    @classmethod
    def from_wire(cls, body: object) -> EntryOpen:
        b = _map(body)
        return cls(name=_service(b), incarnation=_text(b, "incarnation", max_len=64),
                   home=_text(b, "home", optional=True),
                   descriptor=None if b.get("descriptor") is None else _descriptor(b))


@dataclass(frozen=True)
class Route:
    """Apply this record and route as it says, then answer; `release` ends a handover's hold."""

    path: ClassVar[str] = ROUTE
    record: Record
    release: bool = False

    def to_wire(self) -> dict[str, Any]:
        body: dict[str, Any] = {"record": rec.encode(self.record)}
        if self.release:
            body["release"] = True
        return body

    @classmethod
    def from_wire(cls, body: object) -> Route:
        b = _map(body)
        return cls(record=_record(b), release=_flag(b, "release"))


@dataclass(frozen=True)
class Hold:
    """A handover's hold at an entry (`ttl` seconds), or with `release` its end."""

    path: ClassVar[str] = HOLD
    name: str
    ttl: float | None = None
    release: bool = False

    def to_wire(self) -> dict[str, Any]:
        return {"name": self.name, "release": True} if self.release else {"name": self.name, "ttl": self.ttl}

    @classmethod
    def from_wire(cls, body: object) -> Hold:
        b = _map(body)
        if _flag(b, "release"):
            return cls(name=_service(b), release=True)
        return cls(name=_service(b), ttl=_seconds(b, "ttl", low=0.0, high=HOLD_MAX, low_open=True))


@dataclass(frozen=True)
class Forward:
    """Run an admin operation at the steward (a call made at another entry)."""

    path: ClassVar[str] = FORWARD
    op: ForwardedOp
    name: str
    target: str | None = None

    def to_wire(self) -> dict[str, Any]:
        return {"op": self.op, "name": self.name, "target": self.target}

    @classmethod
    def from_wire(cls, body: object) -> Forward:
        b = _map(body)
        name = _service(b)
        op = next((o for o in FORWARDED_OPS if o == b.get("op")), None)
        if op is None:
            raise MessageInvalid("op", " or ".join(FORWARDED_OPS))
        return cls(op=op, name=name, target=_text(b, "target", optional=True))


Message = Replicate | Status | Abort | Release | Ping | Lookup | EntryOpen | Route | Hold | Forward
MESSAGES: tuple[type[Message], ...] = (Replicate, Status, Abort, Release, Ping, Lookup, EntryOpen,
                                        Route, Hold, Forward)
