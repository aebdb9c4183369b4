"""`LoadBalancer`: the facade the agent uses for its cluster's HAProxy.

A service homed here owns one pre-provisioned slot (frontend `fe_<port>` + backend `be_<port>`)
for its whole life; `route` points that slot at wherever the service runs, through the
zero-loss procedure in `reroute`. Slot owners and current routes are persisted in
`lb-slots.json`, so after an agent restart (HAProxy adopted) or an HAProxy restart (routes
re-added) the frontends serve exactly the persisted routes: nothing is rerouted by accident.

Hot standbys (issue 15): `set_backups` keeps a slot's HAProxy `backup` servers (named `b<N>`,
apart from the route's `s<N>`) equal to the service's standby copies, at run time, with health
checks. A backup takes traffic only while the route's server is DOWN, and a request that failed
on the dying primary is retried there (`retries`, `option redispatch`, `retry-on` in the
config). `route` never touches the backups, so promoting a standby is make-before-break: the
promoted copy is routed as the primary first, then `set_backups` drops its backup server.
"""
from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path

from lb import reroute as rr
from lb import runtime
from lb.client import RuntimeClient
from lb.config import LBConfig, backend_name, frontend_name
from lb.errors import InvalidTokenError, LBError, NoFreeSlotError, UnknownServiceError
from lb.process import Supervisor, socket_command
from lb.runtime import ServerState, ServerStateName, ServerTraffic, valid_ip, valid_port
from lb.files import write_atomic
from lb.statefile import LBState, Route, Slot, StateWriter

log = logging.getLogger(__name__)

_LABEL = r"[a-z0-9](?:[-a-z0-9]{0,61}[a-z0-9])?"
_SERVICE = re.compile(rf"{_LABEL}(?:@{_LABEL})?")  # `name@home`: a renamed concurrent creation
_SERVER_NUM = re.compile(r"s(\d+)")
_BACKUP_NUM = re.compile(r"b(\d+)")
#: What the records say a slot is: (frontend port, instance "ip", port or None).
Claim = tuple[int, tuple[str, int] | None]


@dataclass(frozen=True)
class ServerStatus:
    name: str
    addr: str
    port: int
    state: ServerStateName  # UP, DOWN, MAINT, DRAIN
    scur: int
    qcur: int
    check_status: str  # e.g. L4OK, L4CON, INI
    backup: bool = False  # a hot standby's backup server (not the route)


def valid_service_name(service: str) -> str:
    if not isinstance(service, str) or not _SERVICE.fullmatch(service):
        raise InvalidTokenError(f"invalid service name {service!r}: must be a DNS-1123 label (or label@label)")
    return service


def is_backup_server(name: str) -> bool:
    """Backup servers are named `b<N>`; the route's are `s<N>`."""
    return _BACKUP_NUM.fullmatch(name) is not None


def _next_backup_name(states: list[ServerState], taken: list[str]) -> str:
    nums = [int(m.group(1)) for name in [s.name for s in states] + taken if (m := _BACKUP_NUM.fullmatch(name))]
    return f"b{max(nums, default=0) + 1}"


def _next_server_name(states: list[ServerState], *taken: str) -> str:
    nums = [int(m.group(1)) for name in [s.name for s in states] + list(taken)
            if (m := _SERVER_NUM.fullmatch(name))]
    return f"s{max(nums, default=0) + 1}"


class LoadBalancer:
    def __init__(self, *, data_dir: Path, bind_addr: str, ports: range, max_slots: int = 64,
                 haproxy_binary: str = "haproxy", check_inter_ms: int = 250,
                 check_fall: int = 2, check_rise: int = 1) -> None:
        self.config = LBConfig(data_dir=Path(data_dir), bind_addr=bind_addr, ports=ports,
                               max_slots=max_slots, check_inter_ms=check_inter_ms,
                               check_fall=check_fall, check_rise=check_rise)
        self._supervisor = Supervisor(self.config, binary=haproxy_binary,
                                      on_restart=self._on_haproxy_restart)
        self._client = RuntimeClient(self.config.socket_path)
        self._state = LBState()
        self._writer = StateWriter(self.config.slots_path)
        self._locks: dict[str, asyncio.Lock] = {}
        self._slots_lock = asyncio.Lock()
        self._started = False
        self._adopted = False
        self._held: dict[str, float] = {}  # service -> monotonic deadline of its request hold

    # ---- lifecycle ---------------------------------------------------------------------------

    async def start(self, claims: Mapping[str, Claim] | None = None) -> None:
        """Start or adopt HAProxy, then make it serve exactly the persisted routes.

        `claims` are the records' word on this cluster's slots (service -> its entry port and
        the instance it runs at): lb-slots.json is derived from them, so a lost or stale file
        is rebuilt from the claims before anything is cleared or handed out again."""
        self._state = LBState.load(self.config.slots_path)
        allowed = set(self.config.slot_ports)
        for service, slot in self._state.slots.items():
            if slot.port not in allowed:
                raise LBError(f"persisted slot {slot.port} of {service} is outside the "
                              f"configured ports {self.config.ports}; refusing to drop it")
        adopted = self._adopted = await self._supervisor.start()
        try:
            await self._client.connect()
            await self._adopt_claims(claims or {})
            await self._reconcile()
            self._save()  # always on disk from here on: a missing file later means it was lost
        except BaseException:
            await self._client.close()
            await self._supervisor.stop(keep_running=adopted)
            raise
        self._started = True

    async def stop(self, *, keep_running: bool = False) -> None:
        """Stop watching; stop HAProxy too unless `keep_running` (agent restart, upgrade)."""
        self._started = False
        if not keep_running and self._supervisor.running:
            try:  # a snapshot for operators; dynamic servers are restored from lb-slots.json
                dump = await self._client.execute(runtime.show_servers_state())
                write_atomic(self.config.server_state_path, dump.encode())
            except LBError:
                log.warning("could not dump server state before stopping haproxy")
        await self._client.close()
        await self._supervisor.stop(keep_running=keep_running)

    @property
    def running(self) -> bool:
        return self._started and self._supervisor.running

    @property
    def haproxy_pid(self) -> int | None:
        """PID of the HAProxy process (for chaos tests and diagnostics)."""
        proc = self._supervisor.process
        return None if proc is None else proc.pid

    @property
    def adopted(self) -> bool:
        """True if `start` adopted an HAProxy left running by an earlier agent."""
        return self._adopted

    @property
    def restarts(self) -> int:
        """How many times the supervisor replaced a dead HAProxy."""
        return self._supervisor.restarts

    # ---- queries -----------------------------------------------------------------------------

    def frontend(self, service: str) -> tuple[str, int] | None:
        slot = self._state.slots.get(service)
        return None if slot is None else (self.config.bind_addr, slot.port)

    def current_route(self, service: str) -> tuple[str, int] | None:
        slot = self._state.slots.get(service)
        if slot is None or slot.route is None:
            return None
        return (slot.route.addr, slot.route.port)

    def routes(self) -> dict[str, tuple[str, int] | None]:
        return {name: self.current_route(name) for name in self._state.slots}

    async def server_status(self, service: str) -> list[ServerStatus]:
        backend = backend_name(self._slot(service).port)
        return [ServerStatus(row.name, row.addr, row.port, row.state, row.scur, row.qcur,
                             row.check_status, backup=row.raw.get("bck") == "1" or is_backup_server(row.name))
                for row in await self._client.stats(backend)]

    async def traffic(self) -> list[ServerTraffic]:
        """Every server's counters, in one `show stat` (about 0.2 ms whatever the slots)."""
        return [runtime.traffic_of(row) for row in await self._client.stats(None)]

    def backups(self, service: str) -> list[tuple[str, int]]:
        """The standby copies this slot routes as backup servers (as persisted)."""
        slot = self._state.slots.get(service)
        return [] if slot is None else [(b.addr, b.port) for b in slot.backups]

    # ---- changes -----------------------------------------------------------------------------

    async def open_frontend(self, service: str, *, port: int | None = None) -> tuple[str, int]:
        """Give `service` a slot (the first free one, or `port`); idempotent per service."""
        valid_service_name(service)
        async with self._lock(service):
            slot = self._state.slots.get(service)
            if slot is not None:
                if port is not None and port != slot.port:
                    raise NoFreeSlotError(f"{service} already owns port {slot.port}, not {port}")
                return (self.config.bind_addr, slot.port)
            async with self._slots_lock:
                taken = {s.port for s in self._state.slots.values()}
                free = [p for p in self.config.slot_ports if p not in taken]
                if port is not None:
                    if port not in free:
                        raise NoFreeSlotError(f"port {port} is taken or not a slot port")
                    free = [port]
                if not free:
                    raise NoFreeSlotError(f"all {len(self.config.slot_ports)} slots are taken")
                await self._clear_backend(backend_name(free[0]), keep=None, spare_backups=False)  # leftovers
                self._state.slots[service] = Slot(free[0])
                self._save()
                return (self.config.bind_addr, free[0])

    async def rename(self, old: str, new: str) -> None:
        """The slot of `old` belongs to `new` from now on; HAProxy is untouched (its frontends
        and backends are named by port), so the endpoint keeps serving throughout."""
        valid_service_name(new)
        async with self._lock(old), self._lock(new):
            if new in self._state.slots:
                raise NoFreeSlotError(f"{new} already owns a slot")
            self._state.slots[new] = self._slot(old)
            del self._state.slots[old]
            self._save()

    async def close_frontend(self, service: str) -> None:
        """Drain and remove the service's servers, then free its slot (idempotent)."""
        async with self._lock(service):
            slot = self._state.slots.get(service)
            if slot is None:
                return
            await self._clear_backend(backend_name(slot.port), keep=None, spare_backups=False)
            del self._state.slots[service]
            self._save()

    async def route(self, service: str, addr: str, port: int, *, up_timeout: float = 5.0,
                    drain_timeout: float = 5.0, proven_ready: bool = False,
                    on_up: Callable[[], None] | None = None,
                    reached: asyncio.Future[bool] | None = None) -> rr.RerouteResult:
        """Make the service's frontend serve addr:port, losing no request on the way.

        Idempotent: routing to the current, serving route only removes leftover servers.
        Raises `RerouteError` if the new route never passes a health check (old route kept).
        `proven_ready=True`: the caller has just seen the copy answer its readiness probe, so
        the new server is set UP at once (after one TCP connect from here) instead of after
        HAProxy's first check; the old one is still drained before it goes (`lb.reroute`).
        `on_up` runs once the new route serves, before the old servers drain (not when the
        route was already in place): a caller may go on from there while they drain. The
        route is saved to lb-slots.json after `on_up`, in a worker thread, and before any old
        server drains; when `route` returns it is on disk. A caller that commits a record in
        `on_up` (the migration engine) may thus have the record on disk and the file not yet:
        the records are the truth, and a restart routes from them before the old copy stops
        (peer's `ServiceManager.reconcile` and `MigrationEngine.recover`).
        `reached`: the fast path's TCP connect to addr:port, started by the caller (`reach`).
        """
        ip, port = valid_ip(addr), valid_port(port)
        async with self._lock(service):
            slot = self._slot(service)
            backend = backend_name(slot.port)
            # The fast path's TCP connect to the copy goes out while HAProxy lists the servers
            # (two round trips at once: they are independent).
            probe = reached if reached is not None or not proven_ready else self.reach(ip, port)
            try:
                states = await self._client.servers_state(backend)
            except BaseException:
                if probe is not None:
                    probe.cancel()
                raise
            connected = None if probe is None else await probe
            cur = slot.route
            old = None if cur is None else (cur.addr, cur.port)
            fast_down = bool(slot.backups)
            if cur is not None and (cur.addr, cur.port) == (ip, port) and cur.fast_down == fast_down:
                current = next((s for s in states if s.name == cur.server), None)
                if current is not None and current.serving:
                    return await self._already_routed(service, backend, cur, old)
            name = _next_server_name(states, *([cur.server] if cur else []))

            saving: list[asyncio.Future[None]] = []

            def up() -> None:
                # The save starts (in a thread) before the caller hears of `up`: its fsyncs and
                # those of the caller's commit then run at the same time.
                slot.route = Route(ip, port, name, fast_down)
                saving.append(self._save_in_thread())
                if on_up is not None:
                    on_up()

            async def saved() -> None:
                await asyncio.gather(*saving)

            result = await rr.reroute(
                self._client, service=service, backend=backend, new_server=name, addr=ip,
                port=port, old=old, old_servers=[s.name for s in states if not is_backup_server(s.name)],
                check=self._check(fast_down), up_timeout=up_timeout, drain_timeout=drain_timeout,
                on_up=up, before_drain=saved, proven_ready=proven_ready, reached=connected)
            log.info("rerouted %s %s -> %s:%d in %.1f ms (up %.1f%s, drain %.1f, %d drained%s)",
                     service, old, ip, port, result.duration_ms, result.up_ms,
                     " proven" if result.fast else "", result.drain_ms,
                     result.drained_sessions, ", forced" if result.forced else "")
            return result

    def reach(self, addr: str, port: int) -> asyncio.Future[bool]:
        """Start the fast path's TCP connect from this host to addr:port (`route(...,
        proven_ready=True)` makes one itself unless given this as `reached`): a caller with
        work of its own to do while HAProxy answers starts it first, so both are in flight
        before that work holds the loop (the migration engine signs its commit then)."""
        return asyncio.ensure_future(rr.reachable(valid_ip(addr), valid_port(port)))

    async def set_backups(self, service: str, backups: list[tuple[str, int]]) -> None:
        """Make the slot's backup servers exactly `backups` (the standby copies), at run time:
        new ones are added checked (UP after their first passing check), gone ones drained and
        deleted. Idempotent. The route's server is replaced (make-before-break, same address)
        only when it must switch between marking itself down at its first error (it has
        backups to fail over to) and not (`CheckSettings.mark_down_on_error`)."""
        wanted = [(valid_ip(a), valid_port(p)) for a, p in backups]
        async with self._lock(service):
            slot = self._slot(service)
            current = [(b.addr, b.port) for b in slot.backups]
            present = {(s.name, s.addr, s.port) for s in await self._client.servers_state(backend_name(slot.port))}
            if sorted(current) != sorted(set(wanted)) or not all((b.server, b.addr, b.port) in present
                                                                 for b in slot.backups):
                await self._converge_backups(backend_name(slot.port), slot,
                                             [Route(a, p, "") for a, p in sorted(set(wanted))])
            route = slot.route
        if route is not None and route.fast_down != bool(wanted):
            await self.route(service, route.addr, route.port, proven_ready=True)

    def _check(self, fast_down: bool) -> runtime.CheckSettings:
        return replace(self.config.check, mark_down_on_error=fast_down)

    async def _converge_backups(self, backend: str, slot: Slot, wanted: list[Route]) -> None:
        """Add the missing backup servers of `wanted` (by address), retire the others."""
        present = await self._client.servers_state(backend)
        have = {(s.addr, s.port): s for s in present if is_backup_server(s.name)}
        targets = {(r.addr, r.port) for r in wanted}
        kept: list[Route] = []
        for (addr, port), st in sorted(have.items()):
            if (addr, port) in targets:
                kept.append(Route(addr, port, st.name))
                if st.maint:
                    await self._client.activate_gated(backend, st.name)
            else:
                await rr.retire(self._client, backend=backend, server=st.name, drain_timeout=1.0)
        taken = [r.server for r in kept]
        for addr, port in sorted(targets - set(have)):
            name = _next_backup_name(present, taken)
            taken.append(name)
            await self._client.add_server(backend, name, addr, port, check=self.config.check, backup=True)
            await self._client.activate_gated(backend, name)
            kept.append(Route(addr, port, name))
            log.info("%s: backup server %s at %s:%d (hot standby)", backend, name, addr, port)
        slot.backups = sorted(kept, key=lambda r: (r.addr, r.port))
        self._save()

    async def adopt_claims(self, claims: Mapping[str, Claim]) -> None:
        """Give each service the slot the records say it owns (see `_adopt_claims`), while it
        is not being routed; `converge` then makes HAProxy serve it."""
        for service in sorted(claims):
            valid_service_name(service)
            async with self._lock(service), self._slots_lock:
                await self._adopt_claims({service: claims[service]})

    async def converge(self) -> list[str]:
        """Make the running HAProxy match the slot table now; returns what was repaired (empty
        when nothing drifted, the usual case: two `show` commands). Drift is anything done
        behind the agent's back or lost with an HAProxy process: a frontend disabled (re-enabled) or shut
        down (HAProxy reloaded, then every route re-added), a route's server deleted, moved,
        put in maint or drain, or a server that no slot accounts for. A slot being rerouted
        right now is left to the reroute (its lock is held)."""
        repaired: list[str] = []
        if not self.config.slots_path.exists():
            async with self._slots_lock:
                self._save()
            repaired.append(f"{self.config.slots_path.name} was lost: written again from the slot table")
        status = await self._client.frontends()
        wanted = [frontend_name(p) for p in self.config.slot_ports]
        stopped = [fe for fe in wanted if status.get(fe, "STOP") == "STOP"]
        if stopped:
            await self._reload()
            return [f"reloaded haproxy: frontend(s) {', '.join(stopped)} had been shut down"]
        for fe in wanted:
            if status.get(fe) == "PAUSED":  # (FULL is a load condition, not drift)
                await self._client.execute(runtime.enable_frontend(fe))
                repaired.append(f"re-enabled frontend {fe} (it had been disabled)")
        present: dict[str, list[ServerState]] = {}
        for st in await self._client.servers_state():
            present.setdefault(st.backend, []).append(st)
        for port in self.config.slot_ports:
            owner = self._owner(port)
            if owner is not None and self._lock(owner).locked():
                continue
            drift = self._drift(port, present.get(backend_name(port), []))
            if drift:
                await self._reconcile_slot(port)
                repaired.append(f"{backend_name(port)} ({owner or 'free slot'}): {drift}")
        return repaired

    def _drift(self, port: int, servers: list[ServerState]) -> str | None:
        """How `port`'s backend differs from its slot, or None."""
        slot = self._state.slots.get(self._owner(port) or "")
        keep = None if slot is None else slot.route
        backups = sorted((s.addr, s.port) for s in servers if is_backup_server(s.name))
        wanted_backups = [] if slot is None else sorted((b.addr, b.port) for b in slot.backups)
        if backups != wanted_backups:  # the standbys' backup servers (set_backups) belong too
            return f"backup servers {backups} where the slot has {wanted_backups}"
        servers = [s for s in servers if not is_backup_server(s.name)]
        if keep is None:
            return f"{len(servers)} server(s) where none belongs" if servers else None
        match = next((s for s in servers
                      if s.name == keep.server and (s.addr, s.port) == (keep.addr, keep.port)), None)
        if match is None:
            return f"route to {keep.addr}:{keep.port} missing"
        if match.maint or match.drain:
            return f"route left in {'maint' if match.maint else 'drain'}"
        if len(servers) > 1:
            return f"{len(servers) - 1} extra server(s)"
        return None

    async def _reload(self) -> None:
        """Reload HAProxy and restore every route (the new process starts without them)."""
        async def took_over() -> bool:
            reply = await socket_command(self.config.socket_path, runtime.show_frontends())
            frontends = runtime.parse_frontends(reply)
            return all(frontends.get(frontend_name(p)) == "OPEN" for p in self.config.slot_ports)

        await self._client.close()  # the old process's CLI connection would keep it alive
        await self._supervisor.reload(took_over=took_over)
        await self._on_haproxy_restart()

    # ---- request hold (a stateful service's handover) -----------------------------------------

    async def hold(self, service: str, *, ttl: float) -> None:
        """New requests to the service wait in HAProxy (lb/hold.lua), for at most `ttl` seconds:
        the deadline lets them go on by themselves if the caller dies before `release`."""
        backend = backend_name(self._slot(service).port)
        ms = max(1, min(runtime.MAX_HOLD_MS, round(ttl * 1000)))
        await self._client.hold(backend, ms)
        self._held[service] = asyncio.get_running_loop().time() + ms / 1000

    async def release(self, service: str) -> None:
        """Held requests go on, to the server(s) the backend has now (idempotent)."""
        self._held.pop(service, None)
        await self._client.release(backend_name(self._slot(service).port))

    def holding(self, service: str) -> bool:
        """Is a hold of this agent's on the service's requests still in force?"""
        deadline = self._held.get(service)
        return deadline is not None and asyncio.get_running_loop().time() < deadline

    async def idle(self, service: str) -> bool:
        """No request of the service is at a server or in a queue (the old copy's writes are
        over once this holds under a hold)."""
        rows = await self._client.stats(backend_name(self._slot(service).port))
        return all(row.scur == 0 and row.qcur == 0 for row in rows)

    # ---- internals ---------------------------------------------------------------------------

    def _lock(self, service: str) -> asyncio.Lock:
        return self._locks.setdefault(service, asyncio.Lock())

    def _slot(self, service: str) -> Slot:
        slot = self._state.slots.get(service)
        if slot is None:
            raise UnknownServiceError(f"service {service!r} has no frontend here")
        return slot

    def _save(self) -> None:
        self._writer.write(self._writer.snapshot(self._state))

    def _save_in_thread(self) -> asyncio.Future[None]:
        """`_save` with its two fsyncs in a worker thread, started now: a reroute's caller
        commits its record meanwhile (`route`'s `on_up`), and the fsyncs of both files overlap
        instead of adding up (issue 16, the reroute stage). Await the future for the file."""
        snapshot = self._writer.snapshot(self._state)
        return asyncio.get_running_loop().run_in_executor(None, self._writer.write, snapshot)

    async def _already_routed(self, service: str, backend: str, cur: Route,
                              old: tuple[str, int] | None) -> rr.RerouteResult:
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        drained, forced = await self._clear_backend(backend, keep=cur.server)
        return rr.RerouteResult(service=service, old=old, new=(cur.addr, cur.port),
                                duration_ms=(loop.time() - t0) * 1000,
                                drained_sessions=drained, forced=forced)

    async def _clear_backend(self, backend: str, *, keep: str | None, spare_backups: bool = True,
                             drain_timeout: float = 5.0) -> tuple[int, bool]:
        """Retire every server of `backend` except `keep` (and the backup servers unless
        `spare_backups` is False); return (drained sessions, forced)."""
        drained, forced = 0, False
        for st in await self._client.servers_state(backend):
            if st.name != keep and not (spare_backups and is_backup_server(st.name)):
                retired = await rr.retire(self._client, backend=backend, server=st.name,
                                          drain_timeout=drain_timeout)
                drained += retired.drained_sessions
                forced = forced or retired.forced
        return drained, forced

    async def _add_now(self, backend: str, route: Route) -> None:
        """Re-add a persisted route serving at once: it was serving before, and gating it on a
        first check would only add downtime; its checks still take a dead one out."""
        await self._client.add_server(backend, route.server, route.addr, route.port,
                                      check=self._check(route.fast_down))
        await self._client.activate_now(backend, route.server)

    async def _adopt_claims(self, claims: Mapping[str, Claim]) -> None:
        """Make the slot table agree with the records: a service the records give a port gets
        that slot (and keeps the server already routing to its instance, if HAProxy has one),
        whatever the file said; a slot the file gave another service goes to the records'."""
        allowed = set(self.config.slot_ports)
        changed = 0
        for service, (port, route) in sorted(claims.items()):
            slot = self._state.slots.get(service)
            if port not in allowed:
                log.warning("%s's records give it port %d, outside the slot ports %s; not restored",
                            service, port, self.config.ports)
                continue
            if slot is not None and slot.port == port:
                continue  # the file agrees; its route is repaired by the agent's reconcile
            owner = self._owner(port)
            if owner is not None:
                log.warning("lb-slots.json gave port %d to %s, the records to %s: the records win",
                            port, owner, service)
                del self._state.slots[owner]
            self._state.slots[service] = Slot(port, await self._route_for(port, route))
            changed += 1
        if changed:
            log.warning("rebuilt %d slot(s) from the records (lb-slots.json lost or stale)", changed)
            self._save()

    async def _route_for(self, port: int, route: tuple[str, int] | None) -> Route | None:
        """The route a rebuilt slot resumes: HAProxy's server for that instance if it has one
        (an adopted HAProxy kept serving), else the server it serves with (a crash between a
        reroute and its commit: the migration's recovery decides), else a new server for
        `_reconcile` to add."""
        if route is None:
            return None
        try:
            valid_ip(route[0])
        except InvalidTokenError:
            return None  # not an address HAProxy takes as is: the agent's reconcile routes it
        present = await self._client.servers_state(backend_name(port))
        match = next((st for st in present if (st.addr, st.port) == route), None)
        if match is None:  # an adopted HAProxy routing elsewhere (mid-migration): it knows best
            match = next((st for st in present if st.serving), None)
        if match is not None:
            return Route(match.addr, match.port, match.name)
        return Route(route[0], route[1], _next_server_name(present))

    async def _reconcile(self) -> None:
        """Make every backend match the persisted state (idempotent).

        A fresh HAProxy has no dynamic servers: every route is re-added. An adopted one keeps
        its servers, but a crash mid-reroute can leave a second server (never committed) or
        the committed one in drain/maint: the committed route wins, anything else is drained.
        """
        for port in self.config.slot_ports:
            await self._reconcile_slot(port)

    def _owner(self, port: int) -> str | None:
        return next((svc for svc, slot in self._state.slots.items() if slot.port == port), None)

    async def _reconcile_slot(self, port: int) -> None:
        backend = backend_name(port)
        async with self._slots_lock:  # an unowned slot must not be claimed while we clear it
            svc = self._owner(port)
            if svc is None:
                await self._clear_backend(backend, keep=None, spare_backups=False)
                return
        async with self._lock(svc):  # and an owned one not rerouted while we repair it
            slot = self._state.slots.get(svc)
            if slot is None or slot.port != port:
                return  # closed meanwhile; close_frontend cleared it
            present = await self._client.servers_state(backend)
            keep = slot.route
            if keep is not None:
                match = next((s for s in present if s.name == keep.server
                              and (s.addr, s.port) == (keep.addr, keep.port)), None)
                if match is None:
                    log.info("restoring route of %s to %s:%d", svc, keep.addr, keep.port)
                    if any(s.name == keep.server for s in present):
                        await rr.retire(self._client, backend=backend, server=keep.server,
                                        drain_timeout=5.0)
                    await self._add_now(backend, keep)
                elif match.maint or match.drain:
                    log.warning("%s's route was left in %s; re-enabling it", svc,
                                "maint" if match.maint else "drain")
                    await self._client.set_server_state(backend, keep.server, "ready")
            await self._clear_backend(backend, keep=keep.server if keep else None)
            await self._converge_backups(backend, slot, slot.backups)

    async def _on_haproxy_restart(self) -> None:
        await self._client.close()
        await self._client.connect()
        await self._reconcile()

