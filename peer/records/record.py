"""One service record as every interested cluster keeps it, and its wire form.

The role (LR/AR/FR, paper II-B) is derived from (home, location, here), never stored: two
clusters holding the same version see it in different roles.
"""
from __future__ import annotations

import hashlib
import math
import re
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any, Literal

import msgpack

from peer.records import vclock as vc
from peer.records.vclock import VClock

Role = Literal["LR", "AR", "FR"]

NAME_RE = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?\Z")  # DNS-1123 label
MAX_CLUSTER_LEN = vc.MAX_NODE_LEN
MAX_DESCRIPTOR = 64 * 1024
MAX_TEXT = 256


class RecordDecodeError(ValueError):
    """Wire data is not a record; `field` names the offending field."""

    def __init__(self, message: str, *, field: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field


class State(StrEnum):
    PENDING = "pending"
    DEPLOYING = "deploying"
    RUNNING = "running"
    MIGRATING = "migrating"
    FAILED = "failed"
    DELETED = "deleted"


@dataclass(frozen=True, kw_only=True)
class Record:
    """One version of a service record.

    `vclock` is everything this version has seen (the causal context). `written` is the clock of
    the local write that produced this content: equal to `vclock` right after `put_local`, older
    once a conflict resolution merged clocks. Conflicts are ranked by `written` (see merge.py),
    which keeps the resolution a true join (commutative, associative, idempotent).
    """

    name: str
    home: str
    location: str
    state: State
    digest: str  # digest of the descriptor (see `descriptor_digest`)
    descriptor: bytes  # canonical msgpack of the service descriptor; opaque here
    instance: str | None = None  # "ip:port" of the running instance at `location`
    endpoint: str | None = None  # HC frontend "ip:port"
    migration_id: str | None = None
    vclock: VClock = field(default_factory=vc.fresh)
    written: VClock = field(default_factory=vc.fresh)
    tombstone: bool = False
    updated_at: float = 0.0


def role(record: Record, here: str) -> Role | None:
    """LR, AR or FR as seen from `here`; None for a tombstone or a record `here` has no part in."""
    if record.tombstone:
        return None
    if record.home == here:
        return "LR" if record.location == here else "AR"
    if record.location == here:
        return "FR"
    return None


def interested(record: Record) -> frozenset[str]:
    """The clusters that keep this record: its home and where it runs."""
    return frozenset((record.home, record.location))


def tombstone_of(record: Record) -> Record:
    """The content of a delete: no instance, state deleted. Its clock comes from `local_write`."""
    return replace(record, tombstone=True, state=State.DELETED, instance=None, migration_id=None)


def descriptor_digest(descriptor: bytes) -> str:
    return hashlib.sha256(descriptor).hexdigest()[:16]


# --- wire form -----------------------------------------------------------------------------

def encode(record: Record) -> dict[str, Any]:
    """Plain msgpack-able dict, keys in a fixed order so the packed bytes are canonical."""
    return {
        "name": record.name,
        "home": record.home,
        "location": record.location,
        "state": record.state.value,
        "digest": record.digest,
        "descriptor": record.descriptor,
        "instance": record.instance,
        "endpoint": record.endpoint,
        "migration_id": record.migration_id,
        "vclock": vc.encode(record.vclock),
        "written": vc.encode(record.written),
        "tombstone": record.tombstone,
        "updated_at": record.updated_at,
    }


def pack(record: Record) -> bytes:
    data: bytes = msgpack.packb(encode(record), use_bin_type=True)
    return data


def content_key(record: Record) -> bytes:
    """Canonical bytes of everything but `vclock`: the last tie-break between two contents."""
    body = encode(record)
    del body["vclock"]
    data: bytes = msgpack.packb(body, use_bin_type=True)
    return data


def version_digest(record: Record) -> bytes:
    """8-byte hash of the whole version (clock, tombstone and content) for anti-entropy.

    Hashing the content too, not only the clock, lets two replicas that hold equal clocks but
    different contents (a cluster that lost its store and reused counters) still notice.
    """
    return hashlib.blake2b(pack(record), digest_size=8).digest()


def _text(data: dict[Any, Any], key: str, *, max_len: int = MAX_TEXT, optional: bool = False) -> Any:
    if key not in data:
        raise RecordDecodeError("missing", field=key)
    value = data[key]
    if value is None and optional:
        return None
    if not isinstance(value, str) or not value or len(value) > max_len:
        raise RecordDecodeError(f"must be a non-empty string of <= {max_len} chars", field=key)
    return value


def _addr(data: dict[Any, Any], key: str) -> str | None:
    value = _text(data, key, optional=True)
    if value is None:
        return None
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise RecordDecodeError("must be 'host:port'", field=key)
    return str(value)


def _clock(data: dict[Any, Any], key: str) -> VClock:
    if key not in data:
        raise RecordDecodeError("missing", field=key)
    try:
        return vc.decode(data[key])
    except vc.VClockDecodeError as exc:
        raise RecordDecodeError(str(exc), field=key) from exc


def decode(data: object) -> Record:
    """Strict inverse of `encode`. Unknown keys are ignored (newer peers may add fields)."""
    if not isinstance(data, dict):
        raise RecordDecodeError(f"expected a map, got {type(data).__name__}", field="record")
    name = _text(data, "name", max_len=63)
    if not NAME_RE.match(name):
        raise RecordDecodeError("must be a DNS-1123 label", field="name")
    state_raw = _text(data, "state")
    try:
        state = State(state_raw)
    except ValueError as exc:
        raise RecordDecodeError(f"unknown state {state_raw!r}", field="state") from exc
    descriptor = data.get("descriptor")
    if not isinstance(descriptor, bytes) or len(descriptor) > MAX_DESCRIPTOR:
        raise RecordDecodeError(f"must be bytes of <= {MAX_DESCRIPTOR}", field="descriptor")
    tombstone = data.get("tombstone")
    if not isinstance(tombstone, bool):
        raise RecordDecodeError("must be a boolean", field="tombstone")
    updated_at = data.get("updated_at")
    if isinstance(updated_at, bool) or not isinstance(updated_at, (int, float)) or not math.isfinite(updated_at):
        raise RecordDecodeError("must be a finite number", field="updated_at")
    return Record(
        name=name,
        home=_text(data, "home", max_len=MAX_CLUSTER_LEN),
        location=_text(data, "location", max_len=MAX_CLUSTER_LEN),
        state=state,
        digest=_text(data, "digest"),
        descriptor=descriptor,
        instance=_addr(data, "instance"),
        endpoint=_addr(data, "endpoint"),
        migration_id=_text(data, "migration_id", optional=True),
        vclock=_clock(data, "vclock"),
        written=_clock(data, "written"),
        tombstone=tombstone,
        updated_at=float(updated_at),
    )


def unpack(data: bytes) -> Record:
    try:
        raw = msgpack.unpackb(data, raw=False)
    except Exception as exc:
        raise RecordDecodeError(f"not msgpack: {exc}", field="record") from exc
    return decode(raw)
