"""Agent configuration: command-line flags over an optional TOML file, validated up front.

Every problem is reported as one `ConfigError` line naming the flag or key, before anything
is started, so a bad invocation leaves nothing running.
"""
from __future__ import annotations

import argparse
import errno
import ipaddress
import os
import re
import socket
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from peer.errors import InvalidKind
from peer.linkestimate import InvalidBudget, ProbeBudget
from peer.records.naming import LABEL_RE
from peer.workload import WorkloadPolicy
from placement import InvalidThresholds, Thresholds

NAME_RE = LABEL_RE  # a cluster is named like a service: one DNS-1123 label
TIER_RE = re.compile(r"^[a-z0-9]([-a-z0-9_.]{0,30}[a-z0-9])?\Z")


class ConfigError(InvalidKind, ValueError):
    """A flag or config key is invalid; the message names it."""


@dataclass(frozen=True)
class Capacity:
    """What this cluster offers to placement; gossiped as part of the load summary."""

    cpu: float
    memory: int  # bytes
    slots: int


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
    lb_slots: int = 64  # DEFAULT_LB_SLOTS
    service_ports: range = range(31000, 32000)
    token_file: Path | None = None
    secret_file: Path | None = None
    capacity: Capacity = field(default_factory=lambda: Capacity(cpu=float(os.cpu_count() or 1), memory=_host_memory(), slots=16))
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
    workload: WorkloadPolicy = field(default_factory=WorkloadPolicy)  # what this cluster runs (peer.workload)
    reader_token_file: Path | None = None  # a second admin token that may only read (GET)
    run_as: str | None = None  # process driver: services run as this user (agent as root only)
    probe_budget: ProbeBudget = field(default_factory=ProbeBudget)  # the link probe's bytes (peer.linkestimate)
    ca_cert: Path | None = None  # per-cluster identity (peer.trust): the federation CA, this cluster's cert and key
    cert: Path | None = None
    key: Path | None = None
    ca_dir: Path | None = None  # the federation CA kept on this cluster: it signs enrolments (peer.trust.enrol)

    @property
    def tls(self) -> bool:
        """The API port speaks TLS: plain server TLS (--tls-cert) or per-cluster identity (--cert)."""
        return bool(self.tls_cert or self.cert)

    @property
    def api_url(self) -> str:
        scheme = "https" if self.tls else "http"
        return f"{scheme}://{_host_for_url(self.addr)}:{self.api_port}"


def _host_for_url(addr: str) -> str:
    return f"[{addr}]" if ":" in addr else addr


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


def parse_memory(text: str | int, *, what: str) -> int:
    if isinstance(text, int) and not isinstance(text, bool):
        return text
    m = re.fullmatch(r"(\d+)(Ki|Mi|Gi|Ti|K|M|G|T)?", str(text).strip())
    if not m:
        raise ConfigError(f"{what}: expected a quantity like 512Mi or 4Gi, got {text!r}")
    mult = {None: 1, "K": 10**3, "M": 10**6, "G": 10**9, "T": 10**12,
            "Ki": 1 << 10, "Mi": 1 << 20, "Gi": 1 << 30, "Ti": 1 << 40}[m.group(2)]
    return int(m.group(1)) * mult


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


# Keys accepted in the TOML file (top level), mapped to their flag names for messages.
_TOML_KEYS = {
    "name", "addr", "api_port", "gossip_port", "rpc_port", "join", "tier", "data_dir", "driver",
    "lb_ports", "lb_slots", "service_ports", "token_file", "secret_file", "capacity", "kubernetes",
    "policy", "auto_migrate", "tls_cert", "tls_key", "triggers", "home_grace", "repair_after",
    "recovery_wait", "accept_from", "allow_command", "allow_image", "reader_token_file", "run_as",
    "ca_cert", "cert", "key", "ca_dir", "probe_budget",
}


def build_config(args: argparse.Namespace) -> AgentConfig:
    """Merge flags over the TOML file (flags win) and validate everything."""
    file: dict[str, Any] = load_toml(Path(args.config)) if args.config else {}
    unknown = sorted(set(file) - _TOML_KEYS)
    if unknown:
        raise ConfigError(f"--config: unknown key {unknown[0]!r}")

    def pick(key: str, default: Any = None) -> Any:
        value = getattr(args, key, None)
        if value is not None and value != []:
            return value
        return file.get(key, default)

    name = pick("name")
    if not name:
        raise ConfigError("--name is required")
    if not isinstance(name, str) or not NAME_RE.match(name):
        raise ConfigError(f"--name: {name!r} is not a DNS-1123 label (lowercase letters, digits, '-')")
    addr = pick("addr")
    if not addr:
        raise ConfigError("--addr is required")
    addr = check_local_addr(str(addr))
    tier = pick("tier", "default")
    if not isinstance(tier, str) or not TIER_RE.match(tier):
        raise ConfigError(f"--tier: {tier!r} is not a valid label")
    driver = pick("driver", "process")
    if driver not in ("process", "kubernetes"):
        raise ConfigError(f"--driver: expected process or kubernetes, got {driver!r}")
    join = _join(pick("join", []))
    lb_range, svc_range = _port_ranges(pick("lb_ports", "30000-30999"), pick("service_ports", "31000-31999"))
    data_dir = Path(pick("data_dir") or _default_data_dir(name))
    capacity = _capacity(file, args)
    kube = _kubernetes(file, args)
    tls_cert, tls_key = pick("tls_cert"), pick("tls_key")
    if bool(tls_cert) != bool(tls_key):
        raise ConfigError("--tls-cert and --tls-key must be given together")
    identity = _identity(pick, tls=bool(tls_cert))
    thresholds = _thresholds(file, args)
    auto = _auto_migrate(pick("auto_migrate", False), args)
    home_grace = _seconds(pick("home_grace", 2.0), what="--home-grace")
    repair_after = _seconds(pick("repair_after", 10.0), what="--repair-after")
    recovery_wait = _seconds(pick("recovery_wait", 5.0), what="--recovery-wait")
    workload = _workload(pick, has_file_key=lambda k: k in file)
    run_as = _run_as(pick("run_as"), driver=driver)
    reader = pick("reader_token_file")
    if reader is not None and not isinstance(reader, str):
        raise ConfigError(f"--reader-token-file: expected a path, got {reader!r}")
    return AgentConfig(
        probe_budget=_probe_budget(pick("probe_budget")),
        workload=workload,
        run_as=run_as,
        reader_token_file=Path(reader) if reader else None,
        home_grace=home_grace,
        repair_after=repair_after,
        recovery_wait=recovery_wait,
        name=name,
        addr=addr,
        api_port=_port(pick("api_port", 7070), what="--api-port"),
        gossip_port=_port(pick("gossip_port", 7946), what="--gossip-port"),
        rpc_port=_port(pick("rpc_port", 7373), what="--rpc-port"),
        join=tuple(join),
        tier=tier,
        data_dir=data_dir,
        driver=driver,
        lb_ports=lb_range,
        lb_slots=_lb_slots(pick("lb_slots", DEFAULT_LB_SLOTS), lb_range),
        service_ports=svc_range,
        token_file=Path(pick("token_file")) if pick("token_file") else None,
        secret_file=Path(pick("secret_file")) if pick("secret_file") else None,
        capacity=capacity,
        kubernetes=kube,
        policy=str(pick("policy", "balanced")),
        auto_migrate=bool(auto),
        thresholds=thresholds,
        tls_cert=Path(tls_cert) if tls_cert else None,
        tls_key=Path(tls_key) if tls_key else None,
        ca_cert=identity[0], cert=identity[1], key=identity[2],
        ca_dir=_ca_dir(pick("ca_dir"), ca_cert=identity[0]),
    )


def _port_ranges(lb_ports: Any, service_ports: Any) -> tuple[range, range]:
    """--lb-ports (HAProxy's frontends) and --service-ports (copies): two ranges apart."""
    lb_range = parse_port_range(str(lb_ports), what="--lb-ports")
    svc_range = parse_port_range(str(service_ports), what="--service-ports")
    if set(lb_range) & set(svc_range):
        raise ConfigError("--service-ports overlaps --lb-ports")
    return lb_range, svc_range


def _join(join: Any) -> list[str]:
    """--join (repeatable) or `join` (a list, or one string): the seeds, each IP[:PORT]."""
    if isinstance(join, str):
        join = [join]
    if not isinstance(join, list) or not all(isinstance(j, str) for j in join):
        raise ConfigError("join: expected a list of IP[:PORT] strings")
    for j in join:
        _check_join(j)
    return join


def _capacity(file: dict[str, Any], args: argparse.Namespace) -> Capacity:
    """The `capacity` table, each of --cpu, --memory and --slots over its entry."""
    cap_file = file.get("capacity", {})
    if not isinstance(cap_file, dict):
        raise ConfigError("capacity: expected a table")
    capacity = Capacity(
        cpu=float(cap_file.get("cpu", os.cpu_count() or 1)),
        memory=parse_memory(cap_file.get("memory", _host_memory()), what="capacity.memory"),
        slots=int(cap_file.get("slots", 16)),
    )
    if getattr(args, "cpu", None) is not None:
        capacity = Capacity(cpu=args.cpu, memory=capacity.memory, slots=capacity.slots)
    if getattr(args, "memory", None) is not None:
        capacity = Capacity(cpu=capacity.cpu, memory=parse_memory(args.memory, what="--memory"), slots=capacity.slots)
    if capacity.cpu <= 0 or capacity.memory <= 0 or capacity.slots < 0:
        raise ConfigError("capacity: cpu and memory must be > 0, slots >= 0")
    if getattr(args, "slots", None) is not None:
        capacity = Capacity(cpu=capacity.cpu, memory=capacity.memory, slots=args.slots)
    return capacity


def _kubernetes(file: dict[str, Any], args: argparse.Namespace) -> KubernetesSettings:
    """The `kubernetes` table; its kubeconfig and context over --kubeconfig and --kube-context."""
    k8s = file.get("kubernetes", {})
    if not isinstance(k8s, dict):
        raise ConfigError("kubernetes: expected a table")
    return KubernetesSettings(
        namespace=str(k8s.get("namespace", "default")),
        kubeconfig=k8s.get("kubeconfig") or getattr(args, "kubeconfig", None),
        context=k8s.get("context") or getattr(args, "kube_context", None),
        node_address=k8s.get("node_address"),
    )


def _thresholds(file: dict[str, Any], args: argparse.Namespace) -> Thresholds:
    """The policy triggers' `triggers` table, --dwell over its min_dwell_s."""
    triggers = file.get("triggers", {})
    if not isinstance(triggers, dict):
        raise ConfigError("triggers: expected a table")
    known = set(Thresholds.__dataclass_fields__)
    bad = sorted(set(triggers) - known)
    if bad:
        raise ConfigError(f"triggers: unknown key {bad[0]!r} (known: {', '.join(sorted(known))})")
    if getattr(args, "dwell", None) is not None:
        triggers = {**triggers, "min_dwell_s": args.dwell}
    try:
        return Thresholds(**{k: float(v) for k, v in triggers.items()})
    except (InvalidThresholds, TypeError, ValueError) as exc:
        raise ConfigError(f"triggers: {exc}") from exc


def _auto_migrate(auto: Any, args: argparse.Namespace) -> bool:
    """`auto_migrate` from the file (or --auto-migrate), --no-auto-migrate over both."""
    if not isinstance(auto, bool):
        raise ConfigError(f"auto_migrate: expected true or false, got {auto!r}")
    if getattr(args, "auto_migrate", None):
        auto = True
    if getattr(args, "no_auto_migrate", False):
        auto = False
    return auto


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
    """--accept-from / --allow-command / --allow-image (peer.workload). Command prefixes are
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


def _run_as(value: Any, *, driver: str) -> str | None:
    """--run-as USER: must exist, and needs an agent running as root (only root can switch)."""
    if value is None:
        return None
    import pwd

    if not isinstance(value, str) or not value:
        raise ConfigError(f"--run-as: expected a user name, got {value!r}")
    try:
        pwd.getpwnam(value)
    except KeyError as exc:
        raise ConfigError(f"--run-as: no user {value!r} on this host") from exc
    if driver != "process":
        raise ConfigError("--run-as: only the process driver runs services as local users")
    if os.geteuid() != 0:
        raise ConfigError("--run-as: the agent must run as root to start services as another user")
    return value


DEFAULT_LB_SLOTS = 64
MAX_LB_SLOTS = 1000


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
    return f"{scheme}://{_host_for_url(addr)}:{doc.get('api_port', 7070)}"


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
