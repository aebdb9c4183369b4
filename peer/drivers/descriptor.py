"""The service descriptor: what a cluster needs to run a service, and all that replication sends.

Descriptors arrive from users and from other peers, so `ServiceDescriptor.from_obj` trusts
nothing: every field is type-checked and bounded, unknown fields are refused by name, and every
error is a `DescriptorError` whose `.field` is a dotted path (`health.path`, `command[2]`) the
API can hand back to the caller. The canonical encodings are byte-stable, so the digest
identifies a descriptor across peers whatever key order or number spelling it arrived with.
"""
from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import msgpack

from peer.drivers.quantity import QuantityError, cpu_cores, memory_bytes
from peer.errors import InvalidKind
from peer.packing import packb
from peer.records.naming import MAX_SERVICE_LEN, SERVICE_RE

MAX_CPU = 256.0
MAX_MEMORY = 2**40  # 1 TiB
MAX_ENTRIES = 16  # a record holds at most 16 entries (peer.records.record)
MAX_STANDBY = 8  # warm copies beside the primary (issue 15); a record holds at most 16
MAX_REPLICAS = 100
MAX_ARGS = 256
MAX_ARG_LEN = 4096
MAX_COMMAND_BYTES = 64 * 1024
MAX_IMAGE_LEN = 255
MAX_PATH_LEN = 1024
MAX_TIERS = 32
MAX_AFFINITY = 32
MAX_MSGPACK = 256 * 1024
DEFAULT_READY_TIMEOUT = 30.0
#: No request waits minutes for a copy: 120 s was the old fixed wait, so nothing that became
#: ready before is refused now.
MAX_READY_TIMEOUT = 120.0
MAX_STATE_PATH_LEN = 256
MIN_STATE_INTERVAL = 0.1  # seconds; faster pulls would load the service for little gain
MAX_STATE_INTERVAL = 3600.0

DEFAULT_CPU = 0.1
DEFAULT_MEMORY = "64Mi"


_LABEL_VALUE = re.compile(r"[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?")
_LABEL_KEY = re.compile(r"[A-Za-z0-9]([-A-Za-z0-9_./]*[A-Za-z0-9])?")
_PATH = re.compile(r"/[\x21-\x7e]*")
# OCI/Docker reference grammar (distribution/reference), without IPv6 registry hosts.
_DOMAIN_PART = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_PATH_PART = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_IMAGE = re.compile(
    rf"(?:{_DOMAIN_PART}(?:\.{_DOMAIN_PART})*(?::[0-9]+)?/)?"
    rf"{_PATH_PART}(?:/{_PATH_PART})*"
    r"(?::[\w][\w.-]{0,127})?"
    r"(?:@[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,})?"
)

_TOP_FIELDS = frozenset(
    {"name", "port", "command", "image", "cpu", "memory", "replicas", "health", "constraints", "standby",
     "entries", "socket_activation", "ready_timeout", "state"}
)


class DescriptorError(InvalidKind, ValueError):
    """A descriptor field is missing, of the wrong type, or out of bounds."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


@dataclass(frozen=True)
class HealthCheck:
    """Readiness probe: an HTTP GET of `path` expecting 2xx, or (path None) a TCP connect."""

    path: str | None = None

    @property
    def tcp(self) -> bool:
        return self.path is None

    def to_obj(self) -> dict[str, Any]:
        return {"tcp": True} if self.path is None else {"path": self.path}


@dataclass(frozen=True)
class Constraints:
    """Where the service may run: allowed tiers (empty = any) and reserved affinity labels."""

    tiers: tuple[str, ...] = ()
    affinity: tuple[tuple[str, str], ...] = ()

    def to_obj(self) -> dict[str, Any]:
        return {"tiers": list(self.tiers), "affinity": dict(self.affinity)}


@dataclass(frozen=True)
class StateSpec:
    """The service keeps state that must follow it (seed 001's abstract state): `GET path`
    answers it with an ETag naming its version, `PUT path` installs it; roam saves it every
    `interval` seconds and copies it to every new copy before that copy takes traffic."""

    path: str
    interval: float = 1.0

    def to_obj(self) -> dict[str, Any]:
        return {"path": self.path, "interval": self.interval}


@dataclass(frozen=True)
class ServiceDescriptor:
    """A validated descriptor. Build it with `from_obj`; never mutate, compare by value."""

    name: str
    port: int
    command: tuple[str, ...] = ()
    image: str | None = None
    cpu: float = DEFAULT_CPU
    memory: str = DEFAULT_MEMORY
    replicas: int = 1
    health: HealthCheck | None = None
    constraints: Constraints = Constraints()
    standby: int = 0  # warm copies in other clusters (hot standby), HAProxy backup servers
    entries: int | None = None  # size of the home set; None: the federation's default (2)
    socket_activation: bool | None = None  # process driver: None = only for the bundled samples
    ready_timeout: float | None = None  # seconds a new copy may take to be ready; None: DEFAULT_READY_TIMEOUT
    state: StateSpec | None = None  # None: stateless (the paper's case)

    @property
    def readiness_timeout(self) -> float:
        """How long a new copy of this service may take to become ready (deploy, migration
        target, fail-safe redeploy): past it the copy is removed and the operation fails."""
        return DEFAULT_READY_TIMEOUT if self.ready_timeout is None else self.ready_timeout

    @property
    def cpu_cores(self) -> float:
        return self.cpu

    @property
    def memory_bytes(self) -> int:
        return memory_bytes(self.memory, maximum=MAX_MEMORY)

    @classmethod
    def from_obj(cls, obj: object, *, stored: bool = False) -> ServiceDescriptor:
        """Validate a decoded JSON/msgpack object; raise DescriptorError naming the bad field.

        `stored`: the object comes from a record written by an older roam, whose canonical form
        had `"standby": false`; that one boolean is read as 0 there and nowhere else."""
        top = _mapping(obj, "descriptor", _TOP_FIELDS, prefix="")
        if "name" not in top:
            raise DescriptorError("name", "is required")
        if "port" not in top:
            raise DescriptorError("port", "is required")
        command = _command(top["command"]) if "command" in top else ()
        image = _image(top["image"]) if top.get("image") is not None else None
        if not command and image is None:
            raise DescriptorError("command", "one of command or image is required")
        return cls(
            name=_name(top["name"]),
            port=_int(top["port"], "port", low=1, high=65535),
            command=command,
            image=image,
            cpu=_cpu(top.get("cpu", DEFAULT_CPU)),
            memory=_memory(top.get("memory", DEFAULT_MEMORY)),
            replicas=_int(top.get("replicas", 1), "replicas", low=1, high=MAX_REPLICAS),
            health=_health(top["health"]) if top.get("health") is not None else None,
            constraints=_constraints(top["constraints"]) if top.get("constraints") is not None else Constraints(),
            standby=_standby(top.get("standby", 0), stored=stored),
            entries=_int(top["entries"], "entries", low=1, high=MAX_ENTRIES) if top.get("entries") is not None else None,
            socket_activation=(None if top.get("socket_activation") is None
                               else _bool(top["socket_activation"], "socket_activation")),
            ready_timeout=_ready_timeout(top["ready_timeout"]) if top.get("ready_timeout") is not None else None,
            state=_state(top["state"]) if top.get("state") is not None else None,
        )

    @classmethod
    def from_json(cls, data: bytes | str) -> ServiceDescriptor:
        try:
            obj = json.loads(data)
        except (ValueError, RecursionError) as exc:
            raise DescriptorError("descriptor", f"not valid JSON: {exc}") from exc
        return cls.from_obj(obj)

    @classmethod
    def from_msgpack(cls, data: bytes) -> ServiceDescriptor:
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise DescriptorError("descriptor", "msgpack input must be bytes")
        if len(data) > MAX_MSGPACK:
            raise DescriptorError("descriptor", f"larger than {MAX_MSGPACK} bytes")
        try:
            obj = msgpack.unpackb(bytes(data), raw=False, strict_map_key=True)
        except (ValueError, TypeError, msgpack.ExtraData, msgpack.FormatError, msgpack.StackError) as exc:
            raise DescriptorError("descriptor", f"not valid msgpack: {exc}") from exc
        return cls.from_obj(obj, stored=True)

    def to_obj(self) -> dict[str, Any]:
        """Plain JSON-able form; `from_obj(d.to_obj()) == d`. Unset optionals are left out."""
        obj: dict[str, Any] = {
            "name": self.name,
            "port": self.port,
            "cpu": self.cpu,
            "memory": self.memory,
            "replicas": self.replicas,
            "constraints": self.constraints.to_obj(),
            **({"standby": self.standby} if self.standby else {}),
            **({"entries": self.entries} if self.entries is not None else {}),
        }
        if self.command:
            obj["command"] = list(self.command)
        if self.image is not None:
            obj["image"] = self.image
        if self.health is not None:
            obj["health"] = self.health.to_obj()
        if self.socket_activation is not None:
            obj["socket_activation"] = self.socket_activation
        if self.ready_timeout is not None:
            obj["ready_timeout"] = self.ready_timeout
        if self.state is not None:
            obj["state"] = self.state.to_obj()
        return obj

    def canonical_json(self) -> bytes:
        return json.dumps(
            self.to_obj(), sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
        ).encode("utf-8")

    def canonical_msgpack(self) -> bytes:
        packed: bytes = packb(_sorted(self.to_obj()), use_bin_type=True)
        return packed

    def digest(self) -> str:
        return "sha256:" + hashlib.sha256(self.canonical_msgpack()).hexdigest()


def _sorted(value: Any) -> Any:
    """Maps with sorted keys, recursively: msgpack keeps insertion order."""
    if isinstance(value, dict):
        return {k: _sorted(value[k]) for k in sorted(value)}
    if isinstance(value, list):
        return [_sorted(v) for v in value]
    return value


def _mapping(obj: object, field: str, allowed: frozenset[str], *, prefix: str) -> Mapping[str, Any]:
    if not isinstance(obj, Mapping):
        raise DescriptorError(field, f"must be an object, not {type(obj).__name__}")
    bad = sorted(_key_name(k) for k in obj if not isinstance(k, str) or k not in allowed)
    if bad:
        shown = ", ".join(b[:64] for b in bad[:5])
        raise DescriptorError(prefix + bad[0][:64], f"unknown field(s): {shown}")
    return obj


def _key_name(key: object) -> str:
    """An unknown key as it can be shown in a field path: itself if printable, else its repr."""
    if isinstance(key, str) and key.isprintable() and key.strip():
        return key
    return repr(key)


def _str(value: object, field: str, *, max_len: int) -> str:
    if not isinstance(value, str):
        raise DescriptorError(field, f"must be a string, not {type(value).__name__}")
    if len(value) > max_len:
        raise DescriptorError(field, f"longer than {max_len} characters")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise DescriptorError(field, "not valid Unicode (lone surrogate)") from exc
    return value


def _int(value: object, field: str, *, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise DescriptorError(field, f"must be an integer, not {type(value).__name__}")
    if not low <= value <= high:
        raise DescriptorError(field, f"must be between {low} and {high}")
    return value


def _standby(value: object, *, stored: bool) -> int:
    """How many warm copies: an integer 0..MAX_STANDBY. A boolean is refused (DESIGN: `true`
    would read as 1 by accident and `false` hides a typo), except the `false` that older
    roams wrote into stored records (`stored`)."""
    if stored and value is False:
        return 0
    if isinstance(value, bool):
        raise DescriptorError("standby", f"must be an integer number of warm copies (0-{MAX_STANDBY}), not a boolean")
    return _int(value, "standby", low=0, high=MAX_STANDBY)


def _ready_timeout(value: object) -> float:
    """Seconds, a number between 1 and MAX_READY_TIMEOUT; kept as a float so that the
    canonical encodings (and the digest) do not depend on how the number was spelled."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise DescriptorError("ready_timeout", f"must be a number of seconds, not {type(value).__name__}")
    if not math.isfinite(value) or not 1 <= value <= MAX_READY_TIMEOUT:
        raise DescriptorError("ready_timeout", f"must be between 1 and {MAX_READY_TIMEOUT:g} seconds")
    return float(value)


def _bool(value: object, field: str) -> bool:
    if not isinstance(value, bool):
        raise DescriptorError(field, f"must be true or false, not {type(value).__name__}")
    return value


def _name(value: object) -> str:
    """A DNS-1123 label; `label@cluster` is the name roam gives a concurrent creation (see
    peer.records.naming) and reaches a driver only that way: the API refuses it at creation."""
    name = _str(value, "name", max_len=MAX_SERVICE_LEN)
    if not SERVICE_RE.fullmatch(name):
        raise DescriptorError("name", "must be a DNS-1123 label: a-z, 0-9 and '-', not starting or ending with '-'")
    return name


def _command(value: object) -> tuple[str, ...]:
    if isinstance(value, str):
        raise DescriptorError("command", "must be a list of arguments, not a shell string")
    if not isinstance(value, list):
        raise DescriptorError("command", f"must be a list of strings, not {type(value).__name__}")
    if not value:
        raise DescriptorError("command", "must not be empty")
    if len(value) > MAX_ARGS:
        raise DescriptorError("command", f"more than {MAX_ARGS} arguments")
    args = tuple(_str(arg, f"command[{i}]", max_len=MAX_ARG_LEN) for i, arg in enumerate(value))
    for i, arg in enumerate(args):
        if "\x00" in arg:
            raise DescriptorError(f"command[{i}]", "contains a NUL character")
    if not args[0]:
        raise DescriptorError("command[0]", "the program must not be empty")
    if sum(len(a.encode("utf-8")) for a in args) > MAX_COMMAND_BYTES:
        raise DescriptorError("command", f"more than {MAX_COMMAND_BYTES} bytes in total")
    return args


def _image(value: object) -> str:
    image = _str(value, "image", max_len=MAX_IMAGE_LEN)
    if not _IMAGE.fullmatch(image):
        raise DescriptorError("image", "not an OCI image reference (e.g. registry:5000/team/app:1.2)")
    return image


def _cpu(value: object) -> float:
    try:
        return cpu_cores(value, maximum=MAX_CPU)
    except QuantityError as exc:
        raise DescriptorError("cpu", str(exc)) from exc


def _memory(value: object) -> str:
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)  # plain bytes; keep the string form Kubernetes accepts too
    elif isinstance(value, float):
        if not math.isfinite(value) or not value.is_integer():
            raise DescriptorError("memory", "a number must be a whole count of bytes")
        value = str(int(value))
    try:
        memory_bytes(value, maximum=MAX_MEMORY)
    except QuantityError as exc:
        raise DescriptorError("memory", str(exc)) from exc
    return str(value)


def _health(value: object) -> HealthCheck:
    health = _mapping(value, "health", frozenset({"path", "tcp"}), prefix="health.")
    if len(health) != 1:
        raise DescriptorError("health", 'must be exactly one of {"path": "/..."} or {"tcp": true}')
    if "tcp" in health:
        if health["tcp"] is not True:
            raise DescriptorError("health.tcp", "must be true")
        return HealthCheck()
    path = _str(health["path"], "health.path", max_len=MAX_PATH_LEN)
    if not _PATH.fullmatch(path):
        raise DescriptorError("health.path", "must start with '/' and hold printable ASCII without spaces")
    return HealthCheck(path=path)


def _constraints(value: object) -> Constraints:
    cons = _mapping(value, "constraints", frozenset({"tiers", "affinity"}), prefix="constraints.")
    tiers: tuple[str, ...] = ()
    if cons.get("tiers") is not None:
        raw = cons["tiers"]
        if not isinstance(raw, list):
            raise DescriptorError("constraints.tiers", f"must be a list of labels, not {type(raw).__name__}")
        if len(raw) > MAX_TIERS:
            raise DescriptorError("constraints.tiers", f"more than {MAX_TIERS} tiers")
        tiers = tuple(_label(t, f"constraints.tiers[{i}]") for i, t in enumerate(raw))
        for i, tier in enumerate(tiers):
            if tier in tiers[:i]:
                raise DescriptorError(f"constraints.tiers[{i}]", f"duplicate tier {tier!r}")
    affinity: tuple[tuple[str, str], ...] = ()
    if cons.get("affinity") is not None:
        raw_aff = cons["affinity"]
        if not isinstance(raw_aff, Mapping):
            raise DescriptorError("constraints.affinity", "must be an object of label -> value")
        if len(raw_aff) > MAX_AFFINITY:
            raise DescriptorError("constraints.affinity", f"more than {MAX_AFFINITY} entries")
        pairs = []
        for key, val in raw_aff.items():
            field = f"constraints.affinity.{str(key)[:64]}"
            if not isinstance(key, str) or len(key) > 253 or not _LABEL_KEY.fullmatch(key):
                raise DescriptorError(field, "not a label key")
            text = _str(val, field, max_len=63)
            if text and not _LABEL_VALUE.fullmatch(text):
                raise DescriptorError(field, "not a label value")
            pairs.append((key, text))
        affinity = tuple(sorted(pairs))
    return Constraints(tiers=tiers, affinity=affinity)


def _label(value: object, field: str) -> str:
    label = _str(value, field, max_len=63)
    if not _LABEL_VALUE.fullmatch(label):
        raise DescriptorError(field, "not a label: letters, digits, '-', '_', '.', alphanumeric at both ends")
    return label


def _state(value: object) -> StateSpec:
    """`{"path": "/roam/state", "interval": 1.0}`: an absolute path without query or fragment
    (roam appends nothing to it) and a pull interval in seconds."""
    hook = _mapping(value, "state", frozenset({"path", "interval"}), prefix="state.")
    if "path" not in hook:
        raise DescriptorError("state.path", "is required")
    path = _str(hook["path"], "state.path", max_len=MAX_STATE_PATH_LEN)
    if not _PATH.fullmatch(path) or "?" in path or "#" in path:
        raise DescriptorError("state.path", "must start with '/' and hold printable ASCII without spaces, '?' or '#'")
    interval = hook.get("interval", 1.0)
    if isinstance(interval, bool) or not isinstance(interval, (int, float)) or not math.isfinite(interval):
        raise DescriptorError("state.interval", f"must be a number of seconds, not {type(interval).__name__}")
    if not MIN_STATE_INTERVAL <= interval <= MAX_STATE_INTERVAL:
        raise DescriptorError("state.interval", f"must be between {MIN_STATE_INTERVAL} and {MAX_STATE_INTERVAL:.0f} seconds")
    return StateSpec(path=path, interval=float(interval))
