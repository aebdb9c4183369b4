"""The base haproxy.cfg, rendered from `LBConfig` (pure: no I/O).

Every frontend/backend pair ("slot") is provisioned up front, so creating or deleting a
service never reloads HAProxy: a slot serves 503 until the runtime API adds a server to it.
"""
from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from pathlib import Path

from lb.runtime import CheckSettings

#: The request hold (lb/hold.lua): `roam hold`/`roam release` on the runtime API.
HOLD_LUA = Path(__file__).with_name("hold.lua")


@dataclass(frozen=True)
class LBConfig:
    data_dir: Path
    bind_addr: str
    ports: range
    max_slots: int = 64
    check_inter_ms: int = 250
    check_fall: int = 2
    check_rise: int = 1
    check_downinter_ms: int = 20
    timeout_connect_ms: int = 2000
    timeout_client_ms: int = 30_000
    timeout_server_ms: int = 30_000
    timeout_queue_ms: int = 5000
    timeout_http_request_ms: int = 10_000
    timeout_http_keep_alive_ms: int = 10_000
    timeout_check_ms: int = 1000
    stats_timeout_s: int = 600
    maxconn: int = 4096
    # One thread: a cluster's HAProxy carries the traffic of the services it routes (hundreds of
    # requests a second in the benches), far below one thread's capacity, and each thread more
    # costs about 1.3 MB of RSS idle (HAProxy defaults to one per CPU; issue 18).
    nbthread: int = 1

    def __post_init__(self) -> None:
        try:
            ipaddress.ip_address(self.bind_addr)
        except ValueError as exc:
            raise ValueError(f"bind_addr must be an IP address, got {self.bind_addr!r}") from exc
        if not isinstance(self.ports, range) or len(self.ports) == 0:
            raise ValueError(f"ports must be a non-empty range, got {self.ports!r}")
        if min(self.ports) < 1 or max(self.ports) > 65535:
            raise ValueError(f"ports {self.ports!r} outside 1-65535")
        if self.max_slots < 1:
            raise ValueError(f"max_slots must be >= 1, got {self.max_slots}")
        for name in ("check_inter_ms", "check_fall", "check_rise", "check_downinter_ms",
                     "timeout_connect_ms",
                     "timeout_client_ms", "timeout_server_ms", "timeout_queue_ms",
                     "timeout_check_ms", "stats_timeout_s", "maxconn", "nbthread"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1")

    @property
    def slot_ports(self) -> list[int]:
        return list(self.ports)[: self.max_slots]

    @property
    def config_path(self) -> Path:
        return self.data_dir / "haproxy.cfg"

    @property
    def socket_path(self) -> Path:
        return self.data_dir / "haproxy.sock"

    @property
    def pid_path(self) -> Path:
        """Written by the agent (lb.process.launch): HAProxy in the foreground writes none."""
        return self.data_dir / "haproxy.pid"

    @property
    def server_state_path(self) -> Path:
        return self.data_dir / "haproxy.state"

    @property
    def log_path(self) -> Path:
        return self.data_dir / "haproxy.log"

    @property
    def slots_path(self) -> Path:
        return self.data_dir / "lb-slots.json"

    @property
    def check(self) -> CheckSettings:
        return CheckSettings(inter_ms=self.check_inter_ms, fall=self.check_fall,
                             rise=self.check_rise, downinter_ms=self.check_downinter_ms)


def backend_name(port: int) -> str:
    return f"be_{port}"


def frontend_name(port: int) -> str:
    return f"fe_{port}"


def _bind(addr: str, port: int) -> str:
    ip = ipaddress.ip_address(addr)
    return f"ipv6@[{ip}]:{port}" if ip.version == 6 else f"{ip}:{port}"


def render(cfg: LBConfig) -> str:
    """The full haproxy.cfg text for `cfg`."""
    head = f"""\
# Rendered by roam's lb package. Do not edit: routes change only through the runtime API.
global
    stats socket {cfg.socket_path} mode 600 level admin expose-fd listeners
    stats timeout {cfg.stats_timeout_s}s
    server-state-file {cfg.server_state_path}
    maxconn {cfg.maxconn}
    nbthread {cfg.nbthread}
    lua-load {HOLD_LUA}

defaults
    mode http
    timeout connect {cfg.timeout_connect_ms}ms
    timeout client {cfg.timeout_client_ms}ms
    timeout server {cfg.timeout_server_ms}ms
    timeout queue {cfg.timeout_queue_ms}ms
    timeout http-request {cfg.timeout_http_request_ms}ms
    timeout http-keep-alive {cfg.timeout_http_keep_alive_ms}ms
    timeout check {cfg.timeout_check_ms}ms
    # A request that fails on a dying server is retried, on another server if there is one.
    retries 3
    option redispatch 1
    retry-on all-retryable-errors
    # For documentation only: servers added at runtime do not inherit default-server, so the
    # same check settings are passed on every `add server`.
    default-server {cfg.check.tokens()}
"""
    slots = []
    for port in cfg.slot_ports:
        slots.append(f"""
frontend {frontend_name(port)}
    bind {_bind(cfg.bind_addr, port)}
    default_backend {backend_name(port)}

backend {backend_name(port)}
    balance roundrobin
    http-request lua.roam_hold
""")
    return head + "".join(slots)
