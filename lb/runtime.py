"""HAProxy runtime API, sans I/O: command builders with strict token validation, and reply parsers.

Every token interpolated into a command is validated here (names, IP literals, ports, weights),
so nothing that reaches the socket can carry a `;`, a newline or a space that would start a
second command. The client only accepts `Command` objects built by this module.

Replies are judged per command: a mutation succeeds only on its known success reply (usually
empty); a `show` succeeds only when its header is present. Anything else is an error reply
("No such server.", "Require 'backend/server'.", "Unknown command...", "Permission denied",
"Already exists a server...") and becomes `HAProxyCommandError`.
"""
from __future__ import annotations

import csv
import ipaddress
import re
from dataclasses import dataclass, field
from enum import Enum, IntEnum, IntFlag
from typing import Literal

from lb.hostport import join_hostport, split_hostport
from lb.errors import HAProxyCommandError, InvalidTokenError

_NAME = re.compile(r"[A-Za-z0-9_.-]{1,100}")

ServerAdminStateName = Literal["ready", "drain", "maint"]
HealthName = Literal["up", "stopping", "down"]


@dataclass(frozen=True)
class Command:
    """One validated runtime command and what counts as a successful reply to it."""

    text: str
    ok_prefixes: tuple[str, ...] = ()  # a stripped reply starting with one of these is success
    ok_empty: bool = True  # an empty reply is success

    def check(self, reply: str) -> str:
        """Return `reply` if it means success, else raise `HAProxyCommandError`."""
        stripped = reply.strip("\n")
        if self.ok_empty and not stripped.strip():
            return reply
        if any(stripped.startswith(p) for p in self.ok_prefixes):
            return reply
        raise HAProxyCommandError(self.text, reply)


# ---- token validation -------------------------------------------------------------------------

def valid_name(name: str, *, what: str = "name") -> str:
    """A backend or server name: `[A-Za-z0-9_.-]{1,100}`, nothing else."""
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise InvalidTokenError(f"invalid {what} {name!r}: must match [A-Za-z0-9_.-]{{1,100}}")
    return name


def valid_ip(addr: str) -> str:
    """An IPv4 or IPv6 literal (HAProxy's dynamic servers take no hostnames); returned normalised."""
    if not isinstance(addr, str):
        raise InvalidTokenError(f"invalid IP address {addr!r}")
    try:
        return str(ipaddress.ip_address(addr))
    except ValueError as exc:
        raise InvalidTokenError(f"invalid IP address {addr!r}") from exc


def valid_port(port: int) -> int:
    if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
        raise InvalidTokenError(f"invalid port {port!r}: must be an integer in 1-65535")
    return port


def valid_weight(weight: int) -> int:
    if isinstance(weight, bool) or not isinstance(weight, int) or not 0 <= weight <= 256:
        raise InvalidTokenError(f"invalid weight {weight!r}: must be an integer in 0-256")
    return weight


def _positive(value: int, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 3_600_000:
        raise InvalidTokenError(f"invalid {what} {value!r}")
    return value


def _srv(backend: str, server: str) -> str:
    return f"{valid_name(backend, what='backend')}/{valid_name(server, what='server')}"


def _sockaddr(addr: str, port: int) -> str:
    return join_hostport(valid_ip(addr), valid_port(port))


# ---- command builders -------------------------------------------------------------------------

@dataclass(frozen=True)
class CheckSettings:
    """Health-check timing for a dynamic server (dynamic servers ignore `default-server`)."""

    inter_ms: int = 250
    fall: int = 2
    rise: int = 1
    # Check period while DOWN. A new server is forced DOWN until a check passes, so this is
    # how soon after activation it can take traffic (measured: ~20 ms with 20, ~250 with none).
    downinter_ms: int = 20
    # Hot standby (issue 15): with a backup server beside it, the route's server is marked
    # DOWN at its first failed connection (`observe layer4`), so the retry of that request
    # and every later one go to the backup at once instead of waiting out `fall` checks and
    # HAProxy's 1 s turn-around before a retry on the same server (measured on loopback at
    # 400 req/s: 1-3 requests delayed by ~1 s instead of 100-200).
    mark_down_on_error: bool = False
    # Issue 16, the fail-safe without standby: a failed connection of live traffic counts as
    # a pre-fatal check (`observe layer4 ... on-error sudden-death`) and checks go to
    # `fastinter` at once, so one more failed check marks the server DOWN ~fastinter after a
    # dead copy's first refused request instead of up to inter x fall later; a copy that is
    # alive passes that check and stays UP (a single failed connection proves nothing).
    fastinter_ms: int = 20

    def tokens(self) -> str:
        text = (f"check inter {_positive(self.inter_ms, 'check interval')} "
                f"fastinter {_positive(self.fastinter_ms, 'check fast interval')} "
                f"downinter {_positive(self.downinter_ms, 'check down interval')} "
                f"fall {_positive(self.fall, 'fall')} rise {_positive(self.rise, 'rise')}")
        on_error = "mark-down" if self.mark_down_on_error else "sudden-death"
        return text + f" observe layer4 error-limit 1 on-error {on_error}"


def add_server(backend: str, server: str, addr: str, port: int, *,
               weight: int | None = None, check: CheckSettings | None = None,
               backup: bool = False) -> Command:
    """`add server be/s ip:port [backup] [weight w] [check ...]`; the new server starts in
    maint. A `backup` server takes traffic only while no active server is UP (a hot standby);
    with `option redispatch` a request that failed on the dead primary is retried there."""
    text = f"add server {_srv(backend, server)} {_sockaddr(addr, port)}"
    if backup:
        text += " backup"
    if weight is not None:
        text += f" weight {valid_weight(weight)}"
    if check is not None:
        text += f" {check.tokens()}"
    return Command(text, ok_prefixes=("New server registered.",), ok_empty=False)


def del_server(backend: str, server: str) -> Command:
    """`del server be/s`: refused unless the server is in maint and has no connections."""
    return Command(f"del server {_srv(backend, server)}", ok_prefixes=("Server deleted.",),
                   ok_empty=False)


def set_server_addr(backend: str, server: str, addr: str, port: int) -> Command:
    ip = valid_ip(addr)
    return Command(f"set server {_srv(backend, server)} addr {ip} port {valid_port(port)}",
                   ok_prefixes=("IP changed", "no need to change", "port changed"))


def set_server_state(backend: str, server: str, state: ServerAdminStateName) -> Command:
    if state not in ("ready", "drain", "maint"):
        raise InvalidTokenError(f"invalid server state {state!r}")
    return Command(f"set server {_srv(backend, server)} state {state}")


def set_server_health(backend: str, server: str, health: HealthName) -> Command:
    if health not in ("up", "stopping", "down"):
        raise InvalidTokenError(f"invalid health {health!r}")
    return Command(f"set server {_srv(backend, server)} health {health}")


def set_weight(backend: str, server: str, weight: int) -> Command:
    return Command(f"set weight {_srv(backend, server)} {valid_weight(weight)}")


def enable_health(backend: str, server: str) -> Command:
    return Command(f"enable health {_srv(backend, server)}")


def disable_health(backend: str, server: str) -> Command:
    return Command(f"disable health {_srv(backend, server)}")


def enable_server(backend: str, server: str) -> Command:
    return Command(f"enable server {_srv(backend, server)}")


def disable_server(backend: str, server: str) -> Command:
    return Command(f"disable server {_srv(backend, server)}")


def shutdown_sessions_server(backend: str, server: str) -> Command:
    return Command(f"shutdown sessions server {_srv(backend, server)}")


def show_servers_state(backend: str | None = None) -> Command:
    text = "show servers state"
    if backend is not None:
        text += f" {valid_name(backend, what='backend')}"
    return Command(text, ok_prefixes=("1\n# be_id",), ok_empty=False)


def show_stat(backend: str | None = None) -> Command:
    """Server rows only (`type 4`) as CSV, for one backend or all."""
    proxy = "-1" if backend is None else valid_name(backend, what="backend")
    return Command(f"show stat {proxy} 4 -1", ok_prefixes=("# pxname",), ok_empty=False)


def show_frontends() -> Command:
    """Frontend rows only (`type 1`) as CSV: their status is OPEN, PAUSED (disabled) or STOP
    (shut down for good: only a reload opens it again)."""
    return Command("show stat -1 1 -1", ok_prefixes=("# pxname",), ok_empty=False)


def show_info() -> Command:
    """Process information (`Name: HAProxy`, `Pid: N`, ...): which process owns the socket."""
    return Command("show info", ok_prefixes=("Name:",), ok_empty=False)


def enable_frontend(frontend: str) -> Command:
    return Command(f"enable frontend {valid_name(frontend, what='frontend')}")


def disable_frontend(frontend: str) -> Command:
    """Stop accepting on a frontend (PAUSED); `enable frontend` reopens it."""
    return Command(f"disable frontend {valid_name(frontend, what='frontend')}")


def shutdown_frontend(frontend: str) -> Command:
    """Close a frontend for good (STOP): only a reload of HAProxy brings it back."""
    return Command(f"shutdown frontend {valid_name(frontend, what='frontend')}")


MAX_HOLD_MS = 60_000


def hold(backend: str, ms: int) -> Command:
    """`roam hold` (lb/hold.lua): new requests to `backend` wait in HAProxy for at most `ms`."""
    if isinstance(ms, bool) or not isinstance(ms, int) or not 1 <= ms <= MAX_HOLD_MS:
        raise InvalidTokenError(f"invalid hold {ms!r}: must be 1-{MAX_HOLD_MS} ms")
    return Command(f"roam hold {valid_name(backend, what='backend')} {ms}", ok_prefixes=("held ",), ok_empty=False)


def release(backend: str) -> Command:
    """`roam release` (lb/hold.lua): held requests to `backend` go on."""
    return Command(f"roam release {valid_name(backend, what='backend')}", ok_prefixes=("released ",),
                   ok_empty=False)


def line(commands: list[Command]) -> str:
    """Several commands on one line: HAProxy processes the line as a whole, in order."""
    if not commands:
        raise InvalidTokenError("empty command line")
    return ";".join(c.text for c in commands)


# ---- reply parsers ----------------------------------------------------------------------------

class OpState(IntEnum):
    STOPPED = 0
    STARTING = 1
    RUNNING = 2
    STOPPING = 3


class AdminState(IntFlag):
    FMAINT = 0x01
    IMAINT = 0x02
    CMAINT = 0x04
    FDRAIN = 0x08
    IDRAIN = 0x10
    RMAINT = 0x20
    HMAINT = 0x40


_MAINT = AdminState.FMAINT | AdminState.IMAINT | AdminState.CMAINT | AdminState.RMAINT
_DRAIN = AdminState.FDRAIN | AdminState.IDRAIN


class CheckResult(IntEnum):
    UNKNOWN = 0
    NEUTRAL = 1
    FAILED = 2
    PASSED = 3
    CONDPASS = 4


@dataclass(frozen=True)
class ServerState:
    """One line of `show servers state` (format version 1)."""

    backend: str
    name: str
    srv_id: int
    addr: str
    port: int
    op_state: OpState
    admin_state: AdminState
    weight: int
    check_result: int
    check_state: int

    @property
    def maint(self) -> bool:
        return bool(self.admin_state & _MAINT)

    @property
    def drain(self) -> bool:
        return bool(self.admin_state & _DRAIN)

    @property
    def serving(self) -> bool:
        """Up, enabled and in the load-balancing rotation."""
        return (self.op_state is OpState.RUNNING and not self.maint and not self.drain
                and self.weight > 0)


def parse_servers_state(reply: str) -> list[ServerState]:
    lines = [ln for ln in reply.splitlines() if ln.strip()]
    if not lines or lines[0].strip() != "1":
        raise HAProxyCommandError("show servers state", reply)
    header: list[str] | None = None
    out: list[ServerState] = []
    for ln in lines[1:]:
        if ln.startswith("#"):
            header = ln.lstrip("#").split()
            continue
        if header is None:
            raise HAProxyCommandError("show servers state", reply)
        row = dict(zip(header, ln.split()))
        try:
            out.append(ServerState(
                backend=row["be_name"], name=row["srv_name"], srv_id=int(row["srv_id"]),
                addr=row["srv_addr"], port=int(row["srv_port"]),
                op_state=OpState(int(row["srv_op_state"])),
                admin_state=AdminState(int(row["srv_admin_state"])),
                weight=int(row["srv_uweight"]), check_result=int(row["srv_check_result"]),
                check_state=int(row["srv_check_state"]),
            ))
        except (KeyError, ValueError) as exc:
            raise HAProxyCommandError("show servers state", reply) from exc
    return out


class ServerStateName(str, Enum):
    """A server's state as an operator reads it, normalised from `show stat`'s status column."""

    UP = "UP"
    DOWN = "DOWN"
    MAINT = "MAINT"
    DRAIN = "DRAIN"


@dataclass(frozen=True)
class StatRow:
    """One server row of `show stat` CSV, typed where roam reads it; `raw` keeps every column."""

    backend: str
    name: str
    status: str
    qcur: int
    scur: int
    stot: int
    lbtot: int
    weight: int
    check_status: str
    check_desc: str
    addr: str
    port: int
    raw: dict[str, str] = field(repr=False, compare=False, default_factory=dict)

    @property
    def state(self) -> ServerStateName:
        """UP, DOWN, MAINT or DRAIN (transitional "UP 1/2" counts as UP, "DOWN 1/2" as DOWN)."""
        word = self.status.split(" ", 1)[0]
        if word.startswith("MAINT"):
            return ServerStateName.MAINT
        if word in ("DRAIN", "NOLB"):
            return ServerStateName.DRAIN
        if word in ("UP", "no"):  # "no check" means up without health checks
            return ServerStateName.UP
        return ServerStateName.DOWN


def _int(value: str) -> int:
    return int(value) if value else 0


def parse_stat(reply: str) -> list[StatRow]:
    """`show stat` CSV -> typed server rows (FRONTEND/BACKEND aggregate rows are skipped)."""
    text = reply.strip("\n")
    if not text.startswith("# "):
        raise HAProxyCommandError("show stat", reply)
    reader = csv.reader(text[2:].splitlines())
    header = next(reader)
    rows: list[StatRow] = []
    for values in reader:
        if not values:
            continue
        raw = dict(zip(header, values))
        if raw.get("svname") in ("FRONTEND", "BACKEND"):
            continue
        try:
            addr, port = split_hostport(raw.get("addr", ""))
            rows.append(StatRow(
                backend=raw["pxname"], name=raw["svname"], status=raw["status"],
                qcur=_int(raw["qcur"]), scur=_int(raw["scur"]), stot=_int(raw["stot"]),
                lbtot=_int(raw["lbtot"]), weight=_int(raw["weight"]),
                check_status=raw.get("check_status", ""), check_desc=raw.get("check_desc", ""),
                addr=addr, port=port, raw=raw,
            ))
        except (KeyError, ValueError) as exc:
            raise HAProxyCommandError("show stat", reply) from exc
    return rows


@dataclass(frozen=True)
class ServerTraffic:
    """What HAProxy carried to one server so far (`show stat`): the passive link evidence.

    `bytes_in` went to the server (requests), `bytes_out` came back (responses), both
    cumulative since the server was added; `ctime_ms`, `rtime_ms` are HAProxy's averages over
    the last 1024 connections/responses, `check_ms` the duration of the last health check
    (None when HAProxy has no figure)."""

    backend: str
    name: str
    addr: str
    port: int
    bytes_in: int
    bytes_out: int
    ctime_ms: int | None
    rtime_ms: int | None
    check_ms: int | None


def _opt_int(raw: dict[str, str], key: str) -> int | None:
    value = raw.get(key, "")
    return int(value) if value.isdigit() else None


def traffic_of(row: StatRow) -> ServerTraffic:
    raw = row.raw
    return ServerTraffic(row.backend, row.name, row.addr, row.port, _opt_int(raw, "bin") or 0,
                         _opt_int(raw, "bout") or 0, _opt_int(raw, "ctime"), _opt_int(raw, "rtime"),
                         _opt_int(raw, "check_duration"))


def parse_frontends(reply: str) -> dict[str, str]:
    """`show stat -1 1 -1` CSV -> {frontend name: status} (OPEN, PAUSED, STOP...)."""
    text = reply.strip("\n")
    if not text.startswith("# "):
        raise HAProxyCommandError("show stat", reply)
    reader = csv.reader(text[2:].splitlines())
    header = next(reader)
    out: dict[str, str] = {}
    for values in reader:
        raw = dict(zip(header, values))
        if raw.get("svname") == "FRONTEND" and "pxname" in raw:
            out[raw["pxname"]] = raw.get("status", "")
    return out


def parse_pid(reply: str) -> int:
    """`show info` -> the answering process's pid (after a reload: which process owns the
    admin socket now)."""
    for line in reply.splitlines():
        key, _, value = line.partition(":")
        if key == "Pid" and value.strip().isdigit():
            return int(value)
    raise HAProxyCommandError("show info", reply)
