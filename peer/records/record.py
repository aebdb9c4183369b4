"""One service record as every interested cluster keeps it, and its wire form.

The role (LR/AR/FR, paper II-B) is derived from (homes, location, here), never stored: two
clusters holding the same version see it in different roles.

Identity: `incarnation` names one creation of a service ("<stamp>-<random>-<floor>", the stamp
in milliseconds, above `floor`, the highest stamp the creator knew for that name). Versions of
different incarnations never merge, so a tombstone can only ever delete the incarnation it
belongs to: a creation that knew of the other owns the name, and of two concurrent creations
(both sides of a partition) the later is renamed `name@home` (peer.records.naming, merge.py).

Home set (beyond the paper): `homes` lists the entry clusters in priority order, `homes[0]` the
HC where it was created (it never changes within an incarnation). `endpoints` maps each entry
to its frontend; `epoch` counts changes of the home set (the merge ranks by it).

Hot standby (issue 15): `standbys` lists the clusters holding a warm copy and each copy's
address; every entry routes them as HAProxy backup servers, and the steward promotes one when
the primary's location is lost. A cluster holding only a standby copy sees the record as SR.
"""
from __future__ import annotations

import hashlib
import math
import operator
from dataclasses import MISSING, dataclass, field, fields, replace
from enum import StrEnum
from typing import Any, Literal

import msgpack

from peer.errors import InvalidKind
from peer.packing import packb
from peer.records import vclock as vc
from peer.records.naming import MAX_REPLACED, MAX_SERVICE_LEN, SERVICE_RE
from peer.records.vclock import VClock

Role = Literal["LR", "AR", "FR", "SR"]

MAX_CLUSTER_LEN = vc.MAX_NODE_LEN
MAX_DESCRIPTOR = 64 * 1024
MAX_TEXT = 256


class RecordDecodeError(InvalidKind, ValueError):
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
    incarnation: str = ""
    homes: tuple[str, ...] = ()  # entry clusters, HC first; () means (home,) (older rows)
    endpoints: tuple[tuple[str, str], ...] = ()  # (entry cluster, "ip:port") pairs, sorted
    epoch: int = 0  # bumped whenever `homes` changes
    standbys: tuple[tuple[str, str], ...] = ()  # (cluster, "ip:port") of each warm copy, sorted
    # roam's sequence number of the last state saved for a stateful service (peer/state), as
    # of the last commit of where it runs: written at commits, not at every pull (the
    # steward's newer saved version is shown beside it by the API, see peer/state/keeper.py).
    state_version: int | None = None
    # The deleted incarnations of this name its creator knew of, newest first (at most
    # naming.MAX_REPLACED): this creation owns the name over them; any other is concurrent.
    replaces: tuple[str, ...] = ()
    # Author signatures (issue 19, peer/trust/signing.py), only when the cluster runs with an
    # identity: `writer` is the clock actor whose write made this content, `signature` its
    # cluster's signature over it, `stamps` (actor, digest, signature) vouch for the other
    # entries of `vclock`. None/empty without identity: such a record packs as before.
    writer: str | None = None
    signature: bytes = b""
    stamps: tuple[tuple[str, bytes, bytes], ...] = ()

    @property
    def entries(self) -> tuple[str, ...]:
        """The home set, HC first."""
        return self.homes or (self.home,)

    def endpoint_at(self, cluster: str) -> str | None:
        """The frontend of entry `cluster` (the HC's falls back to `endpoint`)."""
        for name, addr in self.endpoints:
            if name == cluster:
                return addr
        return self.endpoint if cluster == self.home else None

    @property
    def standby_clusters(self) -> tuple[str, ...]:
        """The clusters holding a warm copy, sorted."""
        return tuple(c for c, _ in self.standbys)

    def standby_at(self, cluster: str) -> str | None:
        """The address of the warm copy at `cluster`, if it holds one."""
        return next((addr for c, addr in self.standbys if c == cluster), None)

    def copy_here(self, cluster: str) -> bool:
        """Does `cluster` hold a copy (the primary or a standby) of this live record?"""
        return not self.tombstone and (self.location == cluster or cluster in self.standby_clusters)

    def entry_endpoints(self) -> list[str]:
        """One "ip:port" per entry whose frontend is known, in `homes` order (the API's `endpoints`)."""
        return [e for e in (self.endpoint_at(c) for c in self.entries) if e]


def role(record: Record, here: str) -> Role | None:
    """LR or AR at an entry of the home set, FR where a non-entry runs it, SR where a non-entry
    holds only a standby copy; None for a tombstone or a record `here` has no part in."""
    if record.tombstone:
        return None
    if here in record.entries:
        return "LR" if record.location == here else "AR"
    if record.location == here:
        return "FR"
    if here in record.standby_clusters:
        return "SR"
    return None


def interested(record: Record) -> frozenset[str]:
    """The clusters that keep this record: its home set, where it runs and its standbys."""
    return frozenset((*record.entries, record.location, *record.standby_clusters))


def tombstone_of(record: Record) -> Record:
    """The content of a delete: no instance, state deleted. Its clock comes from `local_write`.
    `standbys` is kept: the holders stay interested, so the tombstone is dropped only once they
    have acknowledged it too (merge.droppable); a tombstone holds no copy anywhere."""
    return replace(record, tombstone=True, state=State.DELETED, instance=None, migration_id=None)


def descriptor_digest(descriptor: bytes) -> str:
    return hashlib.sha256(descriptor).hexdigest()[:16]


# --- wire form -----------------------------------------------------------------------------

def encode(record: Record) -> dict[str, Any]:
    """Plain msgpack-able dict, keys in a fixed order so the packed bytes are canonical."""
    clock = vc.encode(record.vclock)
    body: dict[str, Any] = {
        "name": record.name,
        "home": record.home,
        "location": record.location,
        "state": record.state.value,
        "digest": record.digest,
        "descriptor": record.descriptor,
        "instance": record.instance,
        "endpoint": record.endpoint,
        "migration_id": record.migration_id,
        "vclock": clock,
        "written": clock if record.written is record.vclock else vc.encode(record.written),
        "tombstone": record.tombstone,
        "updated_at": record.updated_at,
        "incarnation": record.incarnation,
        "homes": list(record.homes),
        "endpoints": [list(pair) for pair in record.endpoints] if record.endpoints else [],
        "epoch": record.epoch,
    }
    # The optional fields, in this order, only when set: a record without them packs as before.
    if record.standbys:
        body["standbys"] = [list(pair) for pair in record.standbys]
    if record.state_version is not None:  # only for stateful services
        body["state_version"] = record.state_version
    if record.replaces:
        body["replaces"] = list(record.replaces)
    if record.writer is not None:
        body["writer"], body["signature"] = record.writer, record.signature
    if record.stamps:
        body["stamps"] = [list(s) for s in record.stamps]
    return body


def pack(record: Record) -> bytes:
    """The canonical bytes of `record` (what the store keeps and the wire carries). A Record is
    immutable, so they are packed once per object and kept on it, like a `cached_property`
    (outside the fields: equality, hashing and `dataclasses.replace` ignore them): a merged
    version is packed for its row and again for the push reply that returns it."""
    data = record.__dict__.get(_PACKED)
    if data is None:
        data = packb(encode(record), use_bin_type=True)
        record.__dict__[_PACKED] = data
    return data


_PACKED = "_packed"
_SOURCE = "_source"
#: What a Record keeps beside its fields (derived from them, like a `cached_property`).
_KEPT_BESIDE = (_PACKED, _SOURCE)


def unpack_sourced(data: bytes) -> Record:
    """`unpack`, the Record keeping `data` beside its fields as its source (`source_of`): a
    version received from a peer may be held until the guard's audit (taken on the channel's
    authority, peer/trust/authorship.py), and bytes are all it needs to hold for that."""
    record = unpack(data)
    record.__dict__[_SOURCE] = data
    return record


def keep_source(record: Record, source: bytes) -> None:
    """Give `record` its source (`source_of`): bytes that `from_source` turns into a Record
    equal to it, made by `reclocked_source` or received as in `unpack_sourced`."""
    record.__dict__[_SOURCE] = source


def source_of(record: Record) -> bytes | None:
    """Bytes that `from_source` rebuilds this very version from (field for field equal), if
    it came with them; None otherwise. Why: an anti-entropy round takes thousands of versions
    on the channel's authority, each held until the audit verifies its stamps; held as
    Records (about a dozen tracked objects each) they made the cyclic collector walk them
    after every batch and round (issue 16: about a tenth of a signed concurrent round's CPU);
    a bytes object is not tracked at all. A copy with another clock (`with_vclock`) or other
    fields (`dataclasses.replace`) has no source: these bytes describe the original."""
    source: bytes | None = record.__dict__.get(_SOURCE)
    return source


def reclocked_source(row: bytes, answer: bytes) -> bytes:
    """The source of a version rebuilt from a stored `row` (`unpack_stored`'s input) under a
    peer's clock-only answer `answer` (packed [name, clock, stamps], peer/records/messages.py):
    `with_vclock(unpack_stored(row), decode(clock), decode_stamps(stamps))`."""
    data: bytes = packb([row, answer], use_bin_type=True)
    return data


def from_source(source: bytes) -> Record:
    """The version `source_of` names: a packed record (`unpack`), or a stored row under a
    clock-only answer (`reclocked_source`). Raises RecordDecodeError on anything else."""
    try:
        raw = msgpack.unpackb(source, raw=False)
    except Exception as exc:
        raise RecordDecodeError(f"not msgpack: {exc}", field="record") from exc
    if type(raw) is not list:
        return decode(raw)
    try:
        row, answer = raw
        _, clock, stamps = msgpack.unpackb(answer, raw=False)
        vclock = vc.decode(clock)
    except (TypeError, ValueError) as exc:  # (msgpack's errors are ValueErrors, as vclock's)
        raise RecordDecodeError(f"not a row under a clock: {exc}", field="record") from exc
    return with_vclock(unpack_stored(row), vclock, decode_stamps(stamps))


def content_key(record: Record) -> bytes:
    """Canonical bytes of everything but `vclock` (and the `stamps` that vouch for it): the
    last tie-break between two contents."""
    body = encode(record)
    del body["vclock"]
    body.pop("stamps", None)
    data: bytes = packb(body, use_bin_type=True)
    return data


_CONTENT_FIELDS = tuple(f.name for f in fields(Record) if f.name not in ("vclock", "stamps"))


_content_of = operator.itemgetter(*_CONTENT_FIELDS)


def same_content(a: Record, b: Record) -> bool:
    """Every field `content_key` packs is equal, so their keys are (without packing either)."""
    return bool(_content_of(a.__dict__) == _content_of(b.__dict__))


def version_digest(record: Record) -> bytes:
    """8-byte hash of the whole version (clock, tombstone and content) for anti-entropy.

    Hashing the content too, not only the clock, lets two replicas that hold equal clocks but
    different contents (a cluster that lost its store and reused counters) still notice.
    """
    return digest_of_packed(pack(record))


def digest_of_packed(data: bytes) -> bytes:
    """`version_digest` of the record packed as `data` (`pack`'s output), without packing again."""
    return hashlib.blake2b(data, digest_size=8).digest()


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
    if not _addr_ok(value):
        raise RecordDecodeError("must be 'host:port'", field=key)
    return str(value)


def _addr_ok(value: object) -> bool:
    """"host:port" (port 1-65535 in ASCII digits: `int` takes other digits, or none, as `isdigit` sees them)."""
    if type(value) is not str or not 0 < len(value) <= MAX_TEXT:
        return False
    host, sep, port = value.rpartition(":")
    return bool(sep and host and port.isascii() and port.isdigit() and 0 < int(port) < 65536)


def _clock(data: dict[Any, Any], key: str) -> VClock:
    if key not in data:
        raise RecordDecodeError("missing", field=key)
    try:
        return vc.decode(data[key])
    except vc.VClockDecodeError as exc:
        raise RecordDecodeError(str(exc), field=key) from exc


def _homes(data: dict[Any, Any], home: str) -> tuple[str, ...]:
    raw = data.get("homes", [])
    if raw == [] and type(raw) is list:  # (most records: the fast way to the same answer)
        return ()
    if not isinstance(raw, list) or len(raw) > 16:
        raise RecordDecodeError("must be a list of at most 16 cluster names", field="homes")
    homes = tuple(raw)
    if any(not isinstance(h, str) or not h or len(h) > MAX_CLUSTER_LEN for h in homes):
        raise RecordDecodeError("must hold cluster names", field="homes")
    if len(set(homes)) != len(homes) or (homes and homes[0] != home):
        raise RecordDecodeError("must be distinct clusters, the home first", field="homes")
    return homes


def _endpoints(data: dict[Any, Any], key: str = "endpoints") -> tuple[tuple[str, str], ...]:
    raw = data.get(key, [])
    if raw == [] and type(raw) is list:
        return ()
    if not isinstance(raw, list) or len(raw) > 16:
        raise RecordDecodeError("must be a list of at most 16 [cluster, ip:port] pairs", field=key)
    pairs: list[tuple[str, str]] = []
    for item in raw:
        if (not isinstance(item, (list, tuple)) or len(item) != 2 or not isinstance(item[0], str) or not item[0]
                or len(item[0]) > MAX_CLUSTER_LEN):
            raise RecordDecodeError("must hold [cluster, ip:port] pairs", field=key)
        addr = _addr({key: item[1]}, key)
        if addr is None:
            raise RecordDecodeError("must hold [cluster, ip:port] pairs", field=key)
        pairs.append((item[0], addr))
    if key == "standbys" and len({c for c, _ in pairs}) != len(pairs):
        raise RecordDecodeError("must name each cluster once", field=key)
    return tuple(sorted(pairs))


_STATES = {s.value: s for s in State}


def decode(data: object) -> Record:
    """Strict inverse of `encode`. Unknown keys are ignored (newer peers may add fields)."""
    if type(data) is dict:
        fast = _decode_usual(data)
        if fast is not None:
            return fast
    return _decode_checked(data)


def _decode_usual(d: dict[Any, Any]) -> Record | None:
    """`decode` of a map of the usual shape (every scalar field present with its exact type),
    its scalar checks inlined, the rest through `decode`'s own helpers in `decode`'s order; None
    at the first doubt, for `_decode_checked` to decide and name the field. So it accepts
    exactly what `decode` accepts and builds the same Record (tests/records/test_record.py),
    in about half the time: anti-entropy decodes every record it receives."""
    try:
        name, home, location, state, digest = d["name"], d["home"], d["location"], d["state"], d["digest"]
        descriptor, tombstone, updated_at = d["descriptor"], d["tombstone"], d["updated_at"]
        instance, endpoint, migration_id = d["instance"], d["endpoint"], d["migration_id"]
        raw_clock = d["vclock"]
    except KeyError:
        return None
    incarnation, epoch, state_version = d.get("incarnation", ""), d.get("epoch", 0), d.get("state_version")
    if not (type(name) is str and 0 < len(name) <= MAX_SERVICE_LEN and SERVICE_RE.match(name)
            and type(state) is str and state in _STATES
            and type(descriptor) is bytes and len(descriptor) <= MAX_DESCRIPTOR
            and type(tombstone) is bool
            and (type(updated_at) is float and math.isfinite(updated_at) or type(updated_at) is int)
            and type(home) is str and 0 < len(home) <= MAX_CLUSTER_LEN
            and type(incarnation) is str and len(incarnation) <= 64
            and type(epoch) is int and 0 <= epoch < 2**53
            and (state_version is None or type(state_version) is int and 0 <= state_version < 2**53)
            and type(location) is str and 0 < len(location) <= MAX_CLUSTER_LEN
            and type(digest) is str and 0 < len(digest) <= MAX_TEXT
            and (instance is None or _addr_ok(instance)) and (endpoint is None or _addr_ok(endpoint))
            and (migration_id is None or type(migration_id) is str and 0 < len(migration_id) <= MAX_TEXT)):
        return None
    try:
        vclock = vc.decode(raw_clock)
    except vc.VClockDecodeError:
        return None
    values = {
        "name": name, "home": home, "location": location, "state": _STATES[state], "digest": digest,
        "descriptor": descriptor, "instance": instance, "endpoint": endpoint, "migration_id": migration_id,
        "vclock": vclock, "written": _written(d, vclock), "tombstone": tombstone, "updated_at": float(updated_at),
        "incarnation": incarnation, "homes": _homes(d, home), "endpoints": _endpoints(d), "epoch": epoch,
        "standbys": _endpoints(d, "standbys"), "state_version": state_version, "replaces": _replaces(d),
        "writer": None, "signature": b"", "stamps": (),
    }
    if "writer" in d or "stamps" in d:
        values.update(_authorship(d))
    record = object.__new__(Record)
    object.__setattr__(record, "__dict__", values)
    return record


def _decode_checked(data: object) -> Record:
    """`decode`, every field checked in turn, the first bad one named."""
    if not isinstance(data, dict):
        raise RecordDecodeError(f"expected a map, got {type(data).__name__}", field="record")
    name = _text(data, "name", max_len=MAX_SERVICE_LEN)
    if not SERVICE_RE.match(name):
        raise RecordDecodeError("must be a DNS-1123 label, or label@cluster", field="name")
    state_raw = _text(data, "state")
    state = _STATES.get(state_raw)
    if state is None:
        raise RecordDecodeError(f"unknown state {state_raw!r}", field="state")
    descriptor = data.get("descriptor")
    if not isinstance(descriptor, bytes) or len(descriptor) > MAX_DESCRIPTOR:
        raise RecordDecodeError(f"must be bytes of <= {MAX_DESCRIPTOR}", field="descriptor")
    tombstone = data.get("tombstone")
    if not isinstance(tombstone, bool):
        raise RecordDecodeError("must be a boolean", field="tombstone")
    updated_at = data.get("updated_at")
    if isinstance(updated_at, bool) or not isinstance(updated_at, (int, float)) or not math.isfinite(updated_at):
        raise RecordDecodeError("must be a finite number", field="updated_at")
    home = _text(data, "home", max_len=MAX_CLUSTER_LEN)
    incarnation = data.get("incarnation", "")
    if not isinstance(incarnation, str) or len(incarnation) > 64:
        raise RecordDecodeError("must be a string of <= 64 chars", field="incarnation")
    epoch = data.get("epoch", 0)
    if isinstance(epoch, bool) or not isinstance(epoch, int) or not 0 <= epoch < 2**53:
        raise RecordDecodeError("must be a non-negative integer", field="epoch")
    state_version = data.get("state_version")
    if state_version is not None and (isinstance(state_version, bool) or not isinstance(state_version, int)
                                      or not 0 <= state_version < 2**53):
        raise RecordDecodeError("must be a non-negative integer", field="state_version")
    location = _text(data, "location", max_len=MAX_CLUSTER_LEN)
    digest = _text(data, "digest")
    instance = _addr(data, "instance")
    endpoint = _addr(data, "endpoint")
    migration_id = _text(data, "migration_id", optional=True)
    vclock = _clock(data, "vclock")
    return _build({
        "name": name,
        "home": home,
        "location": location,
        "state": state,
        "digest": digest,
        "descriptor": descriptor,
        "instance": instance,
        "endpoint": endpoint,
        "migration_id": migration_id,
        "vclock": vclock,
        "written": _written(data, vclock),
        "tombstone": tombstone,
        "updated_at": float(updated_at),
        "incarnation": incarnation,
        "homes": _homes(data, home),
        "endpoints": _endpoints(data),
        "epoch": epoch,
        "standbys": _endpoints(data, "standbys"),
        "state_version": state_version,
        "replaces": _replaces(data),
        **_authorship(data),
    })


def _written(data: dict[Any, Any], vclock: VClock) -> VClock:
    """`written`, which right after a local write is the same list as `vclock`: then the
    clock just decoded, instead of decoding it again. Equal lists can still differ in type
    where `vc.decode` is strict (a counter `True` or `1.0` equals 1, a timestamp `True` equals
    1.0), so those are checked: whatever `vc.decode` would refuse still goes through it."""
    raw = data.get("written")
    if (raw is not None and raw == data["vclock"]
            and all(type(e[1]) is int and type(e[2]) is not bool for e in raw)):
        return vclock
    return _clock(data, "written")


_FIELD_NAMES = tuple(f.name for f in fields(Record))
_DEFAULTS = {f.name: f.default_factory() if f.default_factory is not MISSING else f.default
             for f in fields(Record) if f.default is not MISSING or f.default_factory is not MISSING}


def _build(values: dict[str, Any]) -> Record:
    """A Record from field values already checked, without the generated `__init__` (a frozen
    dataclass sets each of its 20 fields through `object.__setattr__`: a third of a decode).
    Fields missing from `values` take their defaults, as `Record(**values)` would; the result
    compares and hashes as that would (tests/records/test_record.py)."""
    record = object.__new__(Record)
    record.__dict__.update(_DEFAULTS)
    record.__dict__.update(values)
    return record


def with_vclock(record: Record, clock: VClock, stamps: tuple[tuple[str, bytes, bytes], ...] | None = None) -> Record:
    """`dataclasses.replace(record, vclock=clock)` (and `stamps=`, given) without the generated
    `__init__`: a copy of the fields alone (what is kept beside them, like the packed bytes,
    describes the old clock)."""
    values = record.__dict__.copy()
    for key in _KEPT_BESIDE:
        if key in values:
            del values[key]
    values["vclock"] = clock
    if stamps is not None:
        values["stamps"] = stamps
    copy = object.__new__(Record)
    object.__setattr__(copy, "__dict__", values)
    return copy


MAX_SIGNATURE = 512


def _authorship(data: dict[Any, Any]) -> dict[str, Any]:
    """`writer`, `signature` and `stamps` (their meaning: peer/trust/signing.py)."""
    out: dict[str, Any] = {}
    if "writer" in data:
        writer, signature = data["writer"], data.get("signature")
        if not isinstance(writer, str) or not 0 < len(writer) <= vc.MAX_NODE_LEN:
            raise RecordDecodeError("must be a clock actor", field="writer")
        if not isinstance(signature, bytes) or not 0 < len(signature) <= MAX_SIGNATURE:
            raise RecordDecodeError(f"must be bytes of <= {MAX_SIGNATURE}", field="signature")
        out.update(writer=writer, signature=signature)
    stamps = decode_stamps(data.get("stamps", []))
    if stamps:
        out["stamps"] = stamps
    return out


def decode_stamps(raw: object) -> tuple[tuple[str, bytes, bytes], ...]:
    """The `stamps` field: [[actor, digest, signature], ...] (their meaning: peer/trust/signing.py)."""
    if not isinstance(raw, list) or len(raw) > vc.MAX_ENTRIES:
        raise RecordDecodeError("must be a list of [actor, digest, signature]", field="stamps")
    stamps: list[tuple[str, bytes, bytes]] = []
    for item in raw:
        if (not isinstance(item, (list, tuple)) or len(item) != 3 or not isinstance(item[0], str)
                or not 0 < len(item[0]) <= vc.MAX_NODE_LEN or not isinstance(item[1], bytes) or len(item[1]) > 64
                or not isinstance(item[2], bytes) or not 0 < len(item[2]) <= MAX_SIGNATURE):
            raise RecordDecodeError("must be a list of [actor, digest, signature]", field="stamps")
        stamps.append((item[0], item[1], item[2]))
    return tuple(stamps)


def _replaces(data: dict[Any, Any]) -> tuple[str, ...]:
    raw = data.get("replaces", [])
    if raw == [] and type(raw) is list:
        return ()
    if (not isinstance(raw, list) or len(raw) > MAX_REPLACED
            or not all(isinstance(i, str) and 0 < len(i) <= 64 for i in raw)):
        raise RecordDecodeError(f"must be a list of at most {MAX_REPLACED} incarnation ids", field="replaces")
    return tuple(raw)


_FIELD_SET = frozenset(_FIELD_NAMES)
_DEFAULT_KEYS = frozenset(_DEFAULTS)
#: The keys every stored row has had since the first schema (the later ones are optional).
_ALWAYS_STORED = frozenset(("name", "home", "location", "state", "digest", "descriptor", "instance", "endpoint",
                            "migration_id", "vclock", "written", "tombstone", "updated_at"))


def unpack_stored(data: bytes) -> Record:
    """A row of this store: `pack`ed from a Record that was checked (decoded from the wire) or
    built here, so it is rebuilt without `decode`'s checks (about half of a decode; anti-entropy
    decodes every differing record's row), its unpacked map turned into the Record's own field
    dict in place (`encode`'s keys are the field names). Equal to `unpack(data)` for every such
    row (tests/records/test_record.py); a row of any other shape (an older schema, a damaged
    row) goes through `unpack`, which raises RecordDecodeError where it would."""
    try:
        d = msgpack.unpackb(data, raw=False)
        keys = d.keys()
        if not (_ALWAYS_STORED <= keys and keys <= _FIELD_SET):
            raise TypeError("not a row this store packed")
        raw_clock, raw_written = d["vclock"], d["written"]
        vclock = vc.from_stored(raw_clock)
        d["vclock"] = vclock
        d["written"] = vclock if raw_written == raw_clock else vc.from_stored(raw_written)
        d["state"] = _STATES[d["state"]]
        d["updated_at"] = float(d["updated_at"])
        for key in ("homes", "replaces"):
            d[key] = tuple(d[key]) if d.get(key) else ()
        for key in ("endpoints", "standbys"):
            d[key] = tuple(sorted((c, a) for c, a in d[key])) if d.get(key) else ()
        d["stamps"] = tuple((a, h, sig) for a, h, sig in d["stamps"]) if d.get("stamps") else ()
        if "writer" in d and "signature" not in d:
            raise TypeError("a writer without its signature")
        if len(d) != len(_FIELD_NAMES):  # (the optional fields a row leaves out, as `encode` does)
            for key in _DEFAULT_KEYS - d.keys():
                d[key] = _DEFAULTS[key]
        if type(d["tombstone"]) is not bool or type(d["name"]) is not str:
            raise TypeError("not a row this store packed")
    except Exception:  # noqa: BLE001 - any other shape: the checked way decides (and names the field)
        return unpack(data)
    record = object.__new__(Record)
    object.__setattr__(record, "__dict__", d)
    return record


def unpack(data: bytes) -> Record:
    try:
        raw = msgpack.unpackb(data, raw=False)
    except Exception as exc:
        raise RecordDecodeError(f"not msgpack: {exc}", field="record") from exc
    return decode(raw)
