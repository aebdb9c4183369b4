"""`FakeLoadBalancer`: an in-memory twin of `LoadBalancer` for unit tests of its callers.

Same methods and errors, no HAProxy. `unreachable` holds addr:port pairs whose health check
"fails", so a caller's handling of `RerouteError` can be tested.
"""
from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from pathlib import Path

from lb.balancer import Claim, ServerStatus, ServerTraffic, valid_service_name
from lb.errors import NoFreeSlotError, RerouteError, UnknownServiceError
from lb.reroute import RerouteResult
from lb.runtime import ServerStateName, valid_ip, valid_port


class FakeLoadBalancer:
    def __init__(self, *, data_dir: Path | None = None, bind_addr: str = "127.0.0.1",
                 ports: range = range(30000, 30064), max_slots: int = 64,
                 haproxy_binary: str = "haproxy") -> None:
        self.bind_addr = bind_addr
        self.slot_ports = list(ports)[:max_slots]
        self.slots: dict[str, int] = {}
        self._routes: dict[str, tuple[str, int] | None] = {}
        self._backups: dict[str, list[tuple[str, int]]] = {}
        self.unreachable: set[tuple[str, int]] = set()
        self.history: list[RerouteResult] = []
        self._running = False
        self.haproxy_pid: int | None = None
        self.adopted = False
        self.restarts = 0
        self.drift: list[str] = []  # what the next `converge` reports repaired (then cleared)
        self.held: set[str] = set()
        self.counters: list[ServerTraffic] = []  # what `traffic` answers (set by the test)

    async def start(self, claims: Mapping[str, Claim] | None = None) -> None:
        for service, (port, route) in (claims or {}).items():  # the records win, as in LoadBalancer
            for other in [o for o, p in self.slots.items() if p == port and o != service]:
                del self.slots[other]
            self.slots[service], self._routes[service] = port, route
        self._running = True

    async def stop(self, *, keep_running: bool = False) -> None:
        self._running = False

    @property
    def running(self) -> bool:
        return self._running

    async def traffic(self) -> list[ServerTraffic]:
        return list(self.counters)

    def frontend(self, service: str) -> tuple[str, int] | None:
        port = self.slots.get(service)
        return None if port is None else (self.bind_addr, port)

    async def open_frontend(self, service: str, *, port: int | None = None) -> tuple[str, int]:
        valid_service_name(service)
        if service in self.slots:
            if port is not None and port != self.slots[service]:
                raise NoFreeSlotError(f"{service} already owns port {self.slots[service]}")
            return (self.bind_addr, self.slots[service])
        free = [p for p in self.slot_ports if p not in self.slots.values()]
        if port is not None:
            free = [port] if port in free else []
        if not free:
            raise NoFreeSlotError("no free slot")
        self.slots[service] = free[0]
        self._routes[service] = None
        return (self.bind_addr, free[0])

    async def rename(self, old: str, new: str) -> None:
        valid_service_name(new)
        if old not in self.slots:
            raise UnknownServiceError(f"service {old!r} has no frontend here")
        if new in self.slots:
            raise NoFreeSlotError(f"{new} already owns a slot")
        self.slots[new] = self.slots.pop(old)
        self._routes[new] = self._routes.pop(old, None)
        if old in self._backups:
            self._backups[new] = self._backups.pop(old)

    async def close_frontend(self, service: str) -> None:
        self.slots.pop(service, None)
        self._routes.pop(service, None)
        self._backups.pop(service, None)

    async def set_backups(self, service: str, backups: list[tuple[str, int]]) -> None:
        if service not in self.slots:
            raise UnknownServiceError(f"service {service!r} has no frontend here")
        self._backups[service] = sorted({(valid_ip(a), valid_port(p)) for a, p in backups})

    def backups(self, service: str) -> list[tuple[str, int]]:
        return list(self._backups.get(service, []))

    async def route(self, service: str, addr: str, port: int, *, up_timeout: float = 5.0,
                    drain_timeout: float = 5.0, proven_ready: bool = False,
                    on_up: Callable[[], None] | None = None,
                    reached: asyncio.Future[bool] | None = None) -> RerouteResult:
        target = (valid_ip(addr), valid_port(port))
        if service not in self.slots:
            raise UnknownServiceError(f"service {service!r} has no frontend here")
        if target in self.unreachable:
            raise RerouteError(f"{target} did not pass a health check")
        result = RerouteResult(service=service, old=self._routes[service], new=target,
                               duration_ms=0.0, drained_sessions=0, forced=False,
                               fast=proven_ready)
        changed = self._routes[service] != target
        self._routes[service] = target
        if changed and on_up is not None:
            on_up()
        self.history.append(result)
        return result

    def reach(self, addr: str, port: int) -> asyncio.Future[bool]:
        """Reachable unless in `unreachable` (no connection is made)."""
        done: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        done.set_result((valid_ip(addr), valid_port(port)) not in self.unreachable)
        return done

    def current_route(self, service: str) -> tuple[str, int] | None:
        return self._routes.get(service)

    def routes(self) -> dict[str, tuple[str, int] | None]:
        return dict(self._routes)

    async def server_status(self, service: str) -> list[ServerStatus]:
        if service not in self.slots:
            raise UnknownServiceError(f"service {service!r} has no frontend here")
        route = self._routes[service]
        rows = []
        if route is not None:
            state = ServerStateName.DOWN if route in self.unreachable else ServerStateName.UP
            rows.append(ServerStatus("s1", route[0], route[1], state, 0, 0, "L4OK"))
        for i, backup in enumerate(self._backups.get(service, []), start=1):
            state = ServerStateName.DOWN if backup in self.unreachable else ServerStateName.UP
            rows.append(ServerStatus(f"b{i}", backup[0], backup[1], state, 0, 0, "L4OK", backup=True))
        return rows

    async def adopt_claims(self, claims: Mapping[str, Claim]) -> None:
        await self.start(claims)

    async def converge(self) -> list[str]:
        repaired, self.drift = self.drift, []
        return repaired

    async def hold(self, service: str, *, ttl: float) -> None:
        if service not in self.slots:
            raise UnknownServiceError(f"service {service!r} has no frontend here")
        self.held.add(service)

    async def release(self, service: str) -> None:
        if service not in self.slots:
            raise UnknownServiceError(f"service {service!r} has no frontend here")
        self.held.discard(service)

    def holding(self, service: str) -> bool:
        return service in self.held

    async def idle(self, service: str) -> bool:
        if service not in self.slots:
            raise UnknownServiceError(f"service {service!r} has no frontend here")
        return True
