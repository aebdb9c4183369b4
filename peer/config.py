"""Agent configuration: command-line flags over an optional TOML file, validated up front.

Every problem is reported as one `ConfigError` line naming the flag or key, before anything
is started, so a bad invocation leaves nothing running.
"""
from __future__ import annotations

import errno
import ipaddress
import os
import re
import socket
from collections.abc import Iterable
from dataclasses import MISSING, dataclass, field
from pathlib import Path
from typing import Any

from lb.hostport import join_hostport
from peer.drivers.quantity import QuantityError, memory_bytes
from peer.errors import InvalidKind
from peer.links.estimate import InvalidBudget, ProbeBudget
from peer.records.naming import LABEL_RE
from peer.trust.workload import WorkloadPolicy
from placement import POLICIES, InvalidThresholds, Thresholds

NAME_RE = LABEL_RE  # a cluster is named like a service: one DNS-1123 label
TIER_RE = re.compile(r"^[a-z0-9]([-a-z0-9_.]{0,30}[a-z0-9])?\Z")


class ConfigError(InvalidKind, ValueError):
    """A flag or config key is invalid; the message names it."""


DEFAULT_LB_SLOTS = 64
MAX_LB_SLOTS = 1000
DEFAULT_SLOTS = 16  # services this cluster offers to run, unless told
MAX_MEMORY_BYTES = 1 << 60


@dataclass(frozen=True)
class Capacity:
    """What this cluster offers to placement; gossiped as part of the load summary."""

    cpu: float
    memory: int  # bytes
    slots: int

    @classmethod
    def of_host(cls) -> Capacity:
        """The default: this host's cores and memory, DEFAULT_SLOTS services."""
        return cls(cpu=float(os.cpu_count() or 1), memory=_host_memory(), slots=DEFAULT_SLOTS)


@dataclass(frozen=True)
class KubernetesSettings:
    namespace: str = "default"
    kubeconfig: str | None = None
    context: str | None = None
    node_address: str | None = None


@dataclass(frozen=True)
class AgentConfig:
    name: str
    addr: str
    api_port: int = 7070
    gossip_port: int = 7946
    rpc_port: int = 7373
    join: tuple[str, ...] = ()
    tier: str = "default"
    data_dir: Path = Path("/var/lib/roam")
    driver: str = "process"
    lb_ports: range = range(30000, 31000)
    lb_slots: int = DEFAULT_LB_SLOTS
    service_ports: range = range(31000, 32000)
    token_file: Path | None = None
    secret_file: Path | None = None
    capacity: Capacity = field(default_factory=Capacity.of_host)
    kubernetes: KubernetesSettings = field(default_factory=KubernetesSettings)
    policy: str = "balanced"
    auto_migrate: bool = False  # policy moves are opt-in: nothing moves while the operator deploys
    thresholds: Thresholds = field(default_factory=Thresholds)
    tls_cert: Path | None = None
    tls_key: Path | None = None
    serf_binary: str = "serf"
    haproxy_binary: str = "haproxy"
    home_grace: float = 2.0  # seconds Serf must report an entry failed before another acts as steward
    repair_after: float = 10.0  # seconds an entry stays lost before the steward replaces it
    recovery_wait: float = 5.0  # seconds a (re)started agent waits for a peer to recover its records from
    workload: WorkloadPolicy = field(default_factory=WorkloadPolicy)  # what this cluster runs (peer.trust.workload)
    reader_token_file: Path | None = None  # a second admin token that may only read (GET)
    run_as: str | None = None  # process driver: services run as this user (a root agent: `nobody` by default)
    run_as_given: bool = False  # --run-as/run_as given: strict (a command the user cannot run is refused)
    probe_budget: ProbeBudget = field(default_factory=ProbeBudget)  # the link probe's bytes (peer.links.estimate)
    ca_cert: Path | None = None  # per-cluster identity (peer.trust): the federation CA, this cluster's cert and key
    cert: Path | None = None
    key: Path | None = None
    ca_dir: Path | None = None  # the federation CA kept on this cluster: it signs enrolments (peer.trust.enrol)
    peer_port: int | None = None  # the mTLS peer listener under automatic identity (None: see _peer_listener)
    peer_tls: bool = True  # automatic identity when no --ca-cert/--cert/--key (peer.trust.auto); --no-peer-tls
    ca_keepers: int = 3  # automatic identity: how many live clusters keep the CA key (peer.trust.keepers)

    @property
    def auto_identity(self) -> bool:
        """Per-cluster identity made and enrolled by the agent itself (peer.trust.auto): the peer
        API on its own mTLS listener, the admin API unchanged. Off with explicit identity files
        (the whole API is then https, as before) or --no-peer-tls."""
        return self.peer_tls and self.cert is None

    @property
    def peer_listen_port(self) -> int:
        if self.peer_port is not None:
            return self.peer_port
        return default_peer_port(self.api_port, taken={self.gossip_port, self.rpc_port},
                                 ranges=(self.lb_ports, self.service_ports))

    @property
    def tls(self) -> bool:
        """The API port speaks TLS: plain server TLS (--tls-cert) or per-cluster identity (--cert)."""
        return bool(self.tls_cert or self.cert)

    @property
    def api_url(self) -> str:
        scheme = "https" if self.tls else "http"
        return f"{scheme}://{join_hostport(self.addr, self.api_port)}"



def _host_memory() -> int:
    try:
        with open("/proc/meminfo", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("MemTotal:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 4 << 30


def parse_port_range(text: str, *, what: str) -> range:
    m = re.fullmatch(r"(\d{1,5})-(\d{1,5})", text.strip())
    if not m:
        raise ConfigError(f"{what}: expected LOW-HIGH, got {text!r}")
    lo, hi = int(m.group(1)), int(m.group(2))
    if not (1 <= lo <= hi <= 65535):
        raise ConfigError(f"{what}: range {text!r} must lie within 1-65535 with LOW <= HIGH")
    return range(lo, hi + 1)


def parse_memory(text: object, *, what: str) -> int:
    """Bytes from a Kubernetes quantity (512Mi, 4Gi, 1G) or a whole number: the descriptor's grammar."""
    try:
        return memory_bytes(text, maximum=MAX_MEMORY_BYTES)
    except QuantityError as exc:
        raise ConfigError(f"{what}: {exc}") from exc


def check_local_addr(addr: str) -> str:
    """The address must be an IP this host owns: every listener binds to it."""
    try:
        ip = ipaddress.ip_address(addr)
    except ValueError as exc:
        raise ConfigError(f"--addr: {addr!r} is not an IP address") from exc
    family = socket.AF_INET6 if ip.version == 6 else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        try:
            s.bind((str(ip), 0))
        except OSError as exc:
            if exc.errno == errno.EADDRNOTAVAIL:
                raise ConfigError(f"--addr: {addr} is not an address of this host") from exc
            raise ConfigError(f"--addr: cannot bind {addr}: {exc.strerror}") from exc
    return str(ip)


def _port(value: Any, *, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not (1 <= value <= 65535):
        raise ConfigError(f"{what}: expected a port number 1-65535, got {value!r}")
    return value


def load_toml(path: Path) -> dict[str, Any]:
    """The --config file. tomllib is imported here, not with the module: only an agent started
    with a file reads one, once, and the parser stays resident otherwise (~0.14 MB, issue 18)."""
    import tomllib

    try:
        with open(path, "rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError as exc:
        raise ConfigError(f"--config: {path} does not exist") from exc
    except PermissionError as exc:
        raise ConfigError(f"--config: {path} is not readable") from exc
    except IsADirectoryError as exc:
        raise ConfigError(f"--config: {path} is a directory") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"--config: {path} is not valid TOML: {exc}") from exc


# TOML keys that are not AgentConfig fields: tables and lists the builder turns into fields.
_FILE_ONLY_KEYS = {"triggers", "accept_from", "allow_command", "allow_image"}
# AgentConfig fields no file sets: built from other keys, or fixed by the host.
_NOT_IN_FILE = {"workload", "thresholds", "serf_binary", "haproxy_binary", "run_as_given"}


def _file_keys() -> set[str]:
    return (set(AgentConfig.__dataclass_fields__) - _NOT_IN_FILE) | _FILE_ONLY_KEYS


def _flag(key: str) -> str:
    return "--" + key.replace("_", "-")


def default_of(key: str) -> Any:
    """The default of an AgentConfig field: written once, on the dataclass."""
    f = AgentConfig.__dataclass_fields__[key]
    if f.default_factory is not MISSING:
        return f.default_factory()
    return None if f.default is MISSING else f.default


class Settings:
    """Where each setting comes from: the flag if given, else the TOML file, else the default."""

    def __init__(self, args: object) -> None:
        self.args = args  # the flags as attributes (types.SimpleNamespace, argparse.Namespace), read by getattr
        self.file: dict[str, Any] = load_toml(Path(getattr(args, "config"))) if getattr(args, "config", None) else {}
        unknown = sorted(set(self.file) - _file_keys())
        if unknown:
            raise ConfigError(f"--config: unknown key {unknown[0]!r}")

    def flag(self, key: str) -> Any:
        value = getattr(self.args, key, None)
        return None if value == [] else value

    def pick(self, key: str, default: Any = None) -> Any:
        value = self.flag(key)
        if value is not None:
            return value
        if key in self.file:
            return self.file[key]
        if default is not None or key not in AgentConfig.__dataclass_fields__:
            return default
        return default_of(key)

    def given(self, key: str) -> bool:
        return self.flag(key) is not None or key in self.file

    def table(self, key: str, known: Iterable[str]) -> dict[str, Any]:
        """A table of the file (`[capacity]`...), whose keys must all be known."""
        table = self.file.get(key, {})
        if not isinstance(table, dict):
            raise ConfigError(f"{key}: expected a table")
        bad = sorted(set(table) - set(known))
        if bad:
            raise ConfigError(f"{key}: unknown key {bad[0]!r} (known: {', '.join(sorted(known))})")
        return table


def build_config(args: object) -> AgentConfig:
    """Merge flags over the TOML file over the defaults (flags win) and validate everything."""
    src = Settings(args)
    name = _required_label(src, "name", NAME_RE, "is not a DNS-1123 label (lowercase letters, digits, '-')")
    addr = src.pick("addr")
    if not addr:
        raise ConfigError("--addr is required")
    tier = src.pick("tier")
    if not isinstance(tier, str) or not TIER_RE.match(tier):
        raise ConfigError(f"--tier: {tier!r} is not a valid label")
    driver = src.pick("driver")
    if driver not in ("process", "kubernetes"):
        raise ConfigError(f"--driver: expected process or kubernetes, got {driver!r}")
    lb_range, svc_range = _port_ranges(src)
    tls_cert, tls_key = _path(src, "tls_cert"), _path(src, "tls_key")
    if bool(tls_cert) != bool(tls_key):
        raise ConfigError("--tls-cert and --tls-key must be given together")
    ca_cert, cert, key = _identity(src.pick, tls=bool(tls_cert))
    return AgentConfig(
        name=name,
        addr=check_local_addr(str(addr)),
        api_port=_port(src.pick("api_port"), what="--api-port"),
        gossip_port=_port(src.pick("gossip_port"), what="--gossip-port"),
        rpc_port=_port(src.pick("rpc_port"), what="--rpc-port"),
        join=_join(src.pick("join")),
        tier=tier,
        data_dir=_path(src, "data_dir") or _default_data_dir(name),
        driver=driver,
        lb_ports=lb_range,
        lb_slots=_lb_slots(src.pick("lb_slots"), lb_range),
        service_ports=svc_range,
        token_file=_path(src, "token_file"),
        secret_file=_path(src, "secret_file"),
        reader_token_file=_path(src, "reader_token_file"),
        capacity=_capacity(src),
        kubernetes=_kubernetes(src),
        policy=_policy(src.pick("policy")),
        auto_migrate=_auto_migrate(src),
        thresholds=_thresholds(src),
        tls_cert=tls_cert,
        tls_key=tls_key,
        home_grace=_seconds(src.pick("home_grace"), what="--home-grace"),
        repair_after=_seconds(src.pick("repair_after"), what="--repair-after"),
        recovery_wait=_seconds(src.pick("recovery_wait"), what="--recovery-wait"),
        workload=_workload(src.pick, has_file_key=lambda k: k in src.file),
        run_as=_run_as(src.pick("run_as"), driver=driver),
        run_as_given=src.given("run_as"),
        probe_budget=_probe_budget(src.pick("probe_budget")),
        ca_cert=ca_cert, cert=cert, key=key,
        ca_dir=_ca_dir(src.pick("ca_dir"), ca_cert=ca_cert),
        **_peer_listener(src),
    )


def default_peer_port(api_port: int, *, taken: set[int], ranges: tuple[range, ...] = ()) -> int:
    """--api-port + 1, or the next port up that no other listener of this agent uses (the
    contract lets an operator put --gossip-port right after --api-port). Peers learn it from the
    `pp` tag, so agents need not agree on it."""
    port = api_port + 1
    while True:
        inside = next((r for r in ranges if port in r), None)
        if inside is not None:
            port = inside.stop
        elif port in taken:
            port += 1
        else:
            return port


def _peer_listener(src: Settings) -> dict[str, Any]:
    """--peer-port, --peer-tls/--no-peer-tls and --ca-keepers (TOML `peer_port`, `peer_tls`,
    `ca_keepers`). On by default (DESIGN: mTLS between peers by default); see peer.trust.auto."""
    flag = getattr(src.args, "peer_tls", None)
    peer_tls = False if getattr(src.args, "no_peer_tls", False) else flag if flag is not None else src.pick("peer_tls")
    if not isinstance(peer_tls, bool):
        raise ConfigError(f"peer_tls: expected true or false, got {peer_tls!r}")
    keepers = src.pick("ca_keepers")
    if isinstance(keepers, bool) or not isinstance(keepers, int) or not 1 <= keepers <= 9:
        raise ConfigError(f"--ca-keepers: expected a whole number from 1 to 9, got {keepers!r}")
    raw = src.pick("peer_port")
    port = None if raw is None else _port(raw, what="--peer-port")
    if port is None or not peer_tls:
        if port is None and peer_tls and src.pick("api_port") == 65535:
            raise ConfigError("--peer-port: --api-port 65535 leaves no port above it; give --peer-port")
        return {"peer_port": port, "peer_tls": peer_tls, "ca_keepers": keepers}
    clash = {"api_port": "--api-port", "gossip_port": "--gossip-port", "rpc_port": "--rpc-port"}
    for key, name in clash.items():
        if src.pick(key) == port:
            raise ConfigError(f"--peer-port: {port} is also {name}")
    return {"peer_port": port, "peer_tls": peer_tls, "ca_keepers": keepers}


def _required_label(src: Settings, key: str, pattern: re.Pattern[str], problem: str) -> str:
    value = src.pick(key)
    if not value:
        raise ConfigError(f"{_flag(key)} is required")
    if not isinstance(value, str) or not pattern.match(value):
        raise ConfigError(f"{_flag(key)}: {value!r} {problem}")
    return value


def _path(src: Settings, key: str) -> Path | None:
    """A path the operator gave (flag or file); None if neither did."""
    value = src.pick(key) if src.given(key) else None
    if value is None or value == "":
        return None
    if not isinstance(value, (str, Path)):
        raise ConfigError(f"{_flag(key)}: expected a path, got {value!r}")
    return Path(value)


def _join(value: Any) -> tuple[str, ...]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, (list, tuple)) or not all(isinstance(j, str) for j in value):
        raise ConfigError(f"--join: expected a list of IP[:PORT] strings, got {value!r}")
    for target in value:
        _check_join(target)
    return tuple(value)


def _port_ranges(src: Settings) -> tuple[range, range]:
    def as_range(key: str) -> range:
        value = src.pick(key)
        if isinstance(value, range):
            return value
        if not isinstance(value, str):
            raise ConfigError(f"{_flag(key)}: expected LOW-HIGH, got {value!r}")
        return parse_port_range(value, what=_flag(key))

    lb_range, svc_range = as_range("lb_ports"), as_range("service_ports")
    if set(lb_range) & set(svc_range):
        raise ConfigError("--service-ports overlaps --lb-ports")
    return lb_range, svc_range


def _capacity(src: Settings) -> Capacity:
    """--cpu, --memory, --slots over the [capacity] table over this host's."""
    table = src.table("capacity", Capacity.__dataclass_fields__)
    host = Capacity.of_host()

    def pick(key: str, fallback: Any) -> Any:
        flag = src.flag(key)
        return flag if flag is not None else table.get(key, fallback)

    cpu = pick("cpu", host.cpu)
    if isinstance(cpu, bool) or not isinstance(cpu, (int, float)) or not 0 < cpu <= 1e6:
        raise ConfigError(f"--cpu: expected a number of cores > 0, got {cpu!r}")
    slots = pick("slots", host.slots)
    if isinstance(slots, bool) or not isinstance(slots, int) or slots < 0:
        raise ConfigError(f"--slots: expected a whole number >= 0, got {slots!r}")
    memory = pick("memory", host.memory)
    return Capacity(cpu=float(cpu), memory=parse_memory(memory, what="--memory"), slots=slots)


def _kubernetes(src: Settings) -> KubernetesSettings:
    """--kubeconfig, --kube-context over the [kubernetes] table."""
    table = src.table("kubernetes", KubernetesSettings.__dataclass_fields__)
    values = {**table, **{k: v for k, v in (("kubeconfig", src.flag("kubeconfig")),
                                             ("context", src.flag("kube_context"))) if v is not None}}
    for k, v in values.items():
        if v is not None and (not isinstance(v, str) or not v):
            raise ConfigError(f"kubernetes.{k}: expected a non-empty string, got {v!r}")
    return KubernetesSettings(**values)


def _policy(value: Any) -> str:
    if not isinstance(value, str) or value not in POLICIES:
        raise ConfigError(f"policy: expected one of {', '.join(sorted(POLICIES))}, got {value!r}")
    return value


def _auto_migrate(src: Settings) -> bool:
    """--auto-migrate / --no-auto-migrate over `auto_migrate` in the file over off."""
    if getattr(src.args, "no_auto_migrate", False):
        return False
    value = src.pick("auto_migrate")
    if not isinstance(value, bool):
        raise ConfigError(f"auto_migrate: expected true or false, got {value!r}")
    return value


def _thresholds(src: Settings) -> Thresholds:
    """The [triggers] table (placement.Thresholds), --dwell over its `min_dwell_s`."""
    triggers = src.table("triggers", Thresholds.__dataclass_fields__)
    if src.flag("dwell") is not None:
        triggers = {**triggers, "min_dwell_s": src.flag("dwell")}
    for k, v in triggers.items():
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise ConfigError(f"triggers.{k}: expected a number, got {v!r}")
    try:
        return Thresholds(**{k: float(v) for k, v in triggers.items()})
    except (InvalidThresholds, TypeError, ValueError) as exc:
        raise ConfigError(f"triggers: {exc}") from exc


def _ca_dir(value: Any, *, ca_cert: Path | None) -> Path | None:
    """--ca-dir: the CA's directory (`roam ca init`), kept on this cluster to sign enrolments
    with one-time join tokens. Its certificate must be the one this agent trusts (--ca-cert)."""
    if value is None:
        return None
    if not isinstance(value, str) or not value:
        raise ConfigError(f"--ca-dir: expected a path, got {value!r}")
    directory = Path(value)
    if not (directory / "ca.key").is_file():
        raise ConfigError(f"--ca-dir: {directory} holds no CA key (roam ca init --dir {directory})")
    if ca_cert is None:
        raise ConfigError("--ca-dir needs per-cluster identity on this agent (--ca-cert, --cert, --key)")
    try:
        same = (directory / "ca.pem").read_bytes() == ca_cert.read_bytes()
    except OSError as exc:
        raise ConfigError(f"--ca-dir: {directory / 'ca.pem'}: {exc.strerror}") from exc
    if not same:
        raise ConfigError(f"--ca-dir: its ca.pem is not --ca-cert {ca_cert}: enrolled clusters would not be trusted")
    return directory


def _identity(pick: Any, *, tls: bool) -> tuple[Path | None, Path | None, Path | None]:
    """--ca-cert, --cert, --key (peer.trust): all three or none, and not with --tls-cert (the
    cluster's certificate is the server certificate). Their contents are checked at start."""
    given = {k: pick(k) for k in ("ca_cert", "cert", "key")}
    flags = {k: "--" + k.replace("_", "-") for k in given}
    for k, v in given.items():
        if v is not None and (not isinstance(v, str) or not v):
            raise ConfigError(f"{flags[k]}: expected a path, got {v!r}")
    present = [k for k, v in given.items() if v]
    if present and len(present) != 3:
        missing = [flags[k] for k in given if k not in present]
        raise ConfigError(f"{flags[present[0]]} needs {' and '.join(missing)} too (per-cluster identity)")
    if present and tls:
        raise ConfigError("--tls-cert: not with --cert (per-cluster identity serves the cluster's certificate)")
    for k in present:
        if not Path(given[k]).is_file():
            raise ConfigError(f"{flags[k]}: {given[k]} is not a readable file")
    ca_cert, cert, key = (Path(given[k]) if given[k] else None for k in ("ca_cert", "cert", "key"))
    return ca_cert, cert, key


def _strings(value: Any, *, what: str) -> list[str]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
        raise ConfigError(f"{what}: expected a list of strings, got {value!r}")
    return list(value)


_IMAGE_PREFIX = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:/@-]{0,254}")


def _workload(pick: Any, *, has_file_key: Any) -> WorkloadPolicy:
    """--accept-from / --allow-command / --allow-image (peer.trust.workload). Command prefixes are
    resolved here once (symlinks, `..`), as commands are when they are checked."""
    accept = pick("accept_from")
    homes: frozenset[str] | None = None
    if accept is not None and (accept != [] or has_file_key("accept_from")):
        names = _strings(accept, what="--accept-from")
        for n in names:
            if not NAME_RE.match(n):
                raise ConfigError(f"--accept-from: {n!r} is not a cluster name")
        homes = frozenset(names)
    commands = []
    for prefix in _strings(pick("allow_command", []), what="--allow-command"):
        if not prefix.startswith("/") or "\x00" in prefix:
            raise ConfigError(f"--allow-command: {prefix!r} is not an absolute path prefix")
        commands.append(os.path.realpath(prefix))
    images = _strings(pick("allow_image", []), what="--allow-image")
    for prefix in images:
        if not _IMAGE_PREFIX.fullmatch(prefix) or ".." in prefix:
            raise ConfigError(f"--allow-image: {prefix!r} is not a registry prefix (e.g. registry.example.com/team/)")
    return WorkloadPolicy(accept_from=homes, allow_commands=tuple(commands), allow_images=tuple(images))


DEFAULT_RUN_AS = "nobody"  # DESIGN "Least privilege for services": the default under a root agent
RUN_AS_ENV = "ROAM_RUN_AS"  # the default's own default, for hosts where `nobody` cannot run the commands


def _run_as(value: Any, *, driver: str) -> str | None:
    """--run-as USER: must exist, and needs an agent running as root (only root can switch).
    Not given, a root agent of the process driver runs services as $ROAM_RUN_AS or `nobody`.
    The agent's own user (e.g. `--run-as root`) means no switch: services run as the agent,
    as they did before this default (None)."""
    import pwd

    given = value is not None
    if not given:
        if driver != "process" or os.geteuid() != 0:
            return None
        value = os.environ.get(RUN_AS_ENV) or DEFAULT_RUN_AS
    where = "--run-as" if given else f"--run-as (not given: ${RUN_AS_ENV} or {DEFAULT_RUN_AS!r} under a root agent)"
    if not isinstance(value, str) or not value:
        raise ConfigError(f"{where}: expected a user name, got {value!r}")
    try:
        uid = pwd.getpwnam(value).pw_uid
    except KeyError as exc:
        raise ConfigError(f"{where}: no user {value!r} on this host") from exc
    if driver != "process":
        raise ConfigError("--run-as: only the process driver runs services as local users")
    if uid == os.geteuid():
        return None  # the agent's own user: nothing to switch to
    if os.geteuid() != 0:
        raise ConfigError("--run-as: the agent must run as root to start services as another user")
    return value


def _lb_slots(value: object, ports: range) -> int:
    """Frontends HAProxy pre-provisions (one per service this cluster is an entry of): each is
    a port of --lb-ports, so there can be no more slots than ports. More slots cost HAProxy a
    listening socket each, and changing the number restarts HAProxy once (its config changes)."""
    if isinstance(value, bool) or not isinstance(value, int):
        try:
            value = int(str(value), 10)
        except ValueError:
            raise ConfigError(f"--lb-slots: expected a whole number, got {value!r}") from None
    if not 1 <= value <= MAX_LB_SLOTS:
        raise ConfigError(f"--lb-slots: must be between 1 and {MAX_LB_SLOTS}, got {value}")
    if value > len(ports):
        raise ConfigError(f"--lb-slots: {value} slots need {value} ports, but --lb-ports "
                          f"{ports.start}-{ports.stop - 1} has {len(ports)}; widen --lb-ports")
    return value


def _probe_budget(value: object) -> ProbeBudget:
    """`--probe-budget BYTES`: what the link probe may send one peer per minute (0: passive only)."""
    if value is None:
        return ProbeBudget()
    if isinstance(value, ProbeBudget):  # the default, from AgentConfig
        return value
    try:
        per_minute = int(value) if isinstance(value, (int, str)) and not isinstance(value, bool) else None
    except ValueError:
        per_minute = None
    if per_minute is None or per_minute < 0:
        raise ConfigError(f"--probe-budget: expected a whole number of bytes per peer per minute >= 0, got {value!r}")
    try:
        return ProbeBudget(per_minute=per_minute)
    except InvalidBudget as exc:
        raise ConfigError(f"--probe-budget: {exc}") from exc


def _seconds(value: object, *, what: str) -> float:
    try:
        seconds = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{what}: expected a number of seconds, got {value!r}") from exc
    if not 0 <= seconds <= 86400:
        raise ConfigError(f"{what}: must be between 0 and 86400 seconds")
    return seconds


def check_binaries(config: AgentConfig) -> None:
    """Fail before anything starts when a real component is missing."""
    import shutil

    for binary, package in ((config.serf_binary, "serf"), (config.haproxy_binary, "haproxy")):
        if shutil.which(binary) is None:
            raise ConfigError(f"{binary!r} not found on PATH: install the Debian package {package} (`make bootstrap`)")


def _check_join(target: str) -> None:
    host, _, port = target.rpartition(":") if target.count(":") == 1 else (target, "", "")
    try:
        ipaddress.ip_address(host or target)
    except ValueError as exc:
        raise ConfigError(f"--join: {target!r} is not IP[:PORT]") from exc
    if port and not (port.isdigit() and 1 <= int(port) <= 65535):
        raise ConfigError(f"--join: {target!r} has an invalid port")


def _default_data_dir(name: str) -> Path:
    base = Path("/var/lib/roam") if os.geteuid() == 0 else Path.home() / ".local/share/roam"
    return base / name


# -- where the CLI finds the local agent -------------------------------------------------------
HINT_NAME = "agent.json"
#: The systemd unit's configuration (docs/deploy/roam-agent.service).
SYSTEM_CONFIG = Path("/etc/roam/agent.toml")


def write_local_hint(config: AgentConfig, *, token_file: Path) -> Path:
    """Tell a `roam` client on this host where this agent listens and which token file it uses.

    Why: agents bind only `--addr`, so a client defaulting to 127.0.0.1:7070 finds nobody. The
    file holds paths and addresses, never the token itself.
    """
    import json

    path = config.data_dir / HINT_NAME
    hint = {"name": config.name, "api": config.api_url, "token_file": str(token_file.resolve()),
            "data_dir": str(config.data_dir.resolve()), "pid": os.getpid(),
            "ca_cert": str(config.ca_cert.resolve()) if config.ca_cert else None}
    tmp = path.with_name(f".{HINT_NAME}.tmp")
    tmp.write_text(json.dumps(hint, indent=1) + "\n", encoding="utf-8")
    tmp.replace(path)
    return path


def hint_dirs() -> list[Path]:
    """Data-dir parents searched for local agents: $ROAM_DATA_DIR, then the default bases."""
    found = [Path(os.environ["ROAM_DATA_DIR"])] if os.environ.get("ROAM_DATA_DIR") else []
    return found + [Path("/var/lib/roam"), Path.home() / ".local/share/roam"]


def find_local_agents(dirs: list[Path] | None = None) -> list[dict[str, Any]]:
    """Hints of agents on this host, running ones first, then the most recent."""
    import json

    hints: list[tuple[bool, float, dict[str, Any]]] = []
    for base in dirs if dirs is not None else hint_dirs():
        for path in [base / HINT_NAME, *sorted(base.glob(f"*/{HINT_NAME}"))]:
            try:
                hint = json.loads(path.read_text(encoding="utf-8"))
                mtime = path.stat().st_mtime
            except (OSError, ValueError):
                continue
            if isinstance(hint, dict) and isinstance(hint.get("api"), str):
                hints.append((_alive(hint.get("pid")), mtime, hint))
    hints.sort(key=lambda h: (h[0], h[1]), reverse=True)
    return [h for _, _, h in hints]


def api_from_config_file(path: Path) -> str | None:
    """The admin URL an agent started with this TOML file listens on (None if it has no addr)."""
    try:
        doc = load_toml(path)
    except ConfigError:
        return None
    addr = doc.get("addr")
    if not isinstance(addr, str):
        return None
    scheme = "https" if doc.get("tls_cert") or doc.get("cert") else "http"
    return f"{scheme}://{join_hostport(addr, doc.get('api_port', default_of('api_port')))}"


def _alive(pid: Any) -> bool:
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
