"""The zero-loss reroute: make the new route serve before the old one stops (make-before-break).

1. `add server` the new route (it starts in maint), then on ONE line `enable health; enable
   server; set server health down`: without the forced `down` a checked dynamic server counts
   as UP before any check ran and would take requests even if nothing listens there.
2. Wait until a check has passed and the server is serving (bounded by `up_timeout`). If it
   never does, remove it and raise `RerouteError`: the old route is untouched.
3. Drain each old server: `state drain` takes it out of rotation while its requests finish;
   wait until its `scur` and `qcur` are 0 (bounded by `drain_timeout`, then `shutdown
   sessions server`), then `state maint`, then `del server`. HAProxy 2.6.12 can crash when a
   server with live streams is deleted, so deletion never skips the drain.
An old server that is already DOWN has nothing to drain and goes the same way at once.

Fast path (`reroute(..., proven_ready=True)`): the caller has already proven the new copy
serves (the migration engine's AC answered its readiness probe with a 2xx). Waiting for
HAProxy's first check would only add its check interval (~20-30 ms), so step 1-2 become:
one TCP connect from this host to addr:port (the HC's own view: the LB connects from here),
then ONE line `add server ... check; enable health; enable server; set server health up;
show servers state` (one round trip, every reply checked): UP at once, and its checks keep
running, so a copy that dies later still goes DOWN after `fall` failed checks. If the connect
fails, the gated path above runs instead. The drain (step 3) is unchanged, polled every
millisecond (`state drain` and the first look at the sessions share a line): make-before-break
and zero loss hold exactly as before. Measured on loopback: about 2-4 ms instead of 25-30 ms.
"""
from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from lb.client import RuntimeClient
from lb.errors import HAProxyCommandError, LBError, RerouteError
from lb.polling import poll_until
from lb import runtime
from lb.runtime import CheckSettings, StatRow

log = logging.getLogger(__name__)

POLL_INTERVAL = 0.005  # a `show` costs ~0.1 ms; 5 ms keeps the reroute tight and the CPU idle
FAST_POLL_INTERVAL = 0.001  # the fast path's drain: a few polls of ~0.1 ms, for a few ms at most
REACH_TIMEOUT = 1.0  # the fast path's TCP connect from this host to the new copy


@dataclass(frozen=True)
class RerouteResult:
    service: str
    old: tuple[str, int] | None
    new: tuple[str, int]
    duration_ms: float
    drained_sessions: int
    forced: bool
    up_ms: float = 0.0  # from `add server` until the new server passed a check
    drain_ms: float = 0.0  # from draining the old server(s) until they were deleted
    fast: bool = False  # taken the proven-ready fast path (no wait for a first check)


@dataclass(frozen=True)
class Retired:
    drained_sessions: int
    forced: bool
    removed: bool


def _ms(since: float) -> float:
    return (time.monotonic() - since) * 1000


async def _serving(client: RuntimeClient, backend: str, server: str) -> bool:
    for st in await client.servers_state(backend):
        if st.name == server:
            return st.serving
    raise RerouteError(f"server {backend}/{server} vanished while waiting for it to come up")


async def add_checked(client: RuntimeClient, *, backend: str, server: str, addr: str, port: int,
                      check: CheckSettings, up_timeout: float) -> None:
    """Add `server` and return once a health check has passed and it serves traffic."""
    try:
        await client.add_server(backend, server, addr, port, check=check)
    except HAProxyCommandError as exc:
        raise RerouteError(f"cannot add {backend}/{server} at {addr}:{port}: {exc}") from exc
    try:
        await client.activate_gated(backend, server)
        await poll_until(lambda: _serving(client, backend, server), timeout=up_timeout,
                         interval=POLL_INTERVAL, what=f"{backend}/{server} up",
                         propagate=(LBError,))
    except (TimeoutError, LBError) as exc:
        await _remove_failed(client, backend, server)
        raise RerouteError(f"new route {addr}:{port} for {backend} did not pass a health "
                           f"check within {up_timeout:.1f}s; old route kept") from exc


async def reachable(addr: str, port: int, *, timeout: float = REACH_TIMEOUT) -> bool:
    """Can this host open a TCP connection to addr:port (as HAProxy here would)? The connect
    goes out in the task's first step (`asyncio.timeout`, not `wait_for`, which runs the
    connection in a task of its own, a turn of the loop later: `LoadBalancer.reach`)."""
    try:
        async with asyncio.timeout(timeout):
            _, writer = await asyncio.open_connection(addr, port)
    except (OSError, TimeoutError):
        return False
    writer.close()
    try:
        await writer.wait_closed()
    except OSError:
        pass
    return True


async def add_ready(client: RuntimeClient, *, backend: str, server: str, addr: str, port: int,
                    check: CheckSettings) -> None:
    """Add `server` serving at once (its readiness is proven); checks keep watching it.

    One line, one round trip (issue 16): `add server`, `enable health; enable server; set
    server health up`, and `show servers state` to see it serve. HAProxy runs a line in order
    and every reply is checked (`RuntimeClient.execute_line`, interactive mode), so a refused
    `add` is told apart from a later failure, after which the half-added server is removed."""
    add = runtime.add_server(backend, server, addr, port, check=check)
    show = runtime.show_servers_state(backend)
    try:
        replies = await client.execute_line([add, runtime.enable_health(backend, server),
                                             runtime.enable_server(backend, server),
                                             runtime.set_server_health(backend, server, "up"), show])
        serving = any(st.name == server and st.serving for st in runtime.parse_servers_state(replies[-1]))
        if not serving:
            raise RerouteError(f"{backend}/{server} is not serving right after `health up`")
    except LBError as exc:
        if isinstance(exc, HAProxyCommandError) and exc.command == add.text:
            raise RerouteError(f"cannot add {backend}/{server} at {addr}:{port}: {exc}") from exc
        await _remove_failed(client, backend, server)
        if isinstance(exc, RerouteError):
            raise
        raise RerouteError(f"cannot enable {backend}/{server} at {addr}:{port}: {exc}") from exc


async def _remove_failed(client: RuntimeClient, backend: str, server: str) -> None:
    """Remove a server that never took traffic (it was never UP)."""
    try:
        await client.set_server_state(backend, server, "maint")
        await client.del_server(backend, server)
    except LBError:
        log.exception("could not remove failed server %s/%s", backend, server)


async def _drained(client: RuntimeClient, backend: str, server: str, seen: list[int]) -> bool:
    return _idle(await client.stats(backend), server, seen)


def _idle(rows: list[StatRow], server: str, seen: list[int]) -> bool:
    """No session and nothing queued at `server` (or it is gone); its first count into `seen`."""
    for row in rows:
        if row.name == server:
            if not seen:
                seen.append(row.scur + row.qcur)
            return row.scur == 0 and row.qcur == 0
    return True  # gone already


async def retire(client: RuntimeClient, *, backend: str, server: str,
                 drain_timeout: float, interval: float = POLL_INTERVAL) -> Retired:
    """Drain `server` until idle (force after `drain_timeout`), then maint, then delete it.
    `state drain` and the first look at its sessions go on one line (one round trip): an idle
    server is known idle at once."""
    drain = runtime.set_server_state(backend, server, "drain")
    try:
        first = (await client.execute_line([drain, runtime.show_stat(backend)]))[1]
    except HAProxyCommandError as exc:
        if exc.command == drain.text and "No such server" in exc.reply:
            return Retired(0, False, True)
        raise
    seen: list[int] = []
    forced = False
    try:
        if not _idle(runtime.parse_stat(first), server, seen):
            await poll_until(lambda: _drained(client, backend, server, seen), timeout=drain_timeout,
                             interval=interval, what=f"{backend}/{server} drained",
                             propagate=(LBError,))
    except TimeoutError:
        log.warning("%s/%s still busy after %.1fs: shutting its sessions", backend, server,
                    drain_timeout)
        await client.shutdown_sessions(backend, server)
        forced = True
    await client.set_server_state(backend, server, "maint")
    removed = await _delete(client, backend, server)
    return Retired(seen[0] if seen else 0, forced, removed)


async def _delete(client: RuntimeClient, backend: str, server: str) -> bool:
    """`del server`, retried briefly while HAProxy still holds connections to it."""
    async def attempt() -> bool:
        try:
            await client.del_server(backend, server)
        except HAProxyCommandError as exc:
            if "No such server" in exc.reply:
                return True
            raise
        return True

    try:
        return await poll_until(attempt, timeout=1.0, interval=0.02,
                                what=f"{backend}/{server} deleted")
    except TimeoutError:
        log.warning("%s/%s left in maint: HAProxy refused to delete it", backend, server)
        return False


async def reroute(client: RuntimeClient, *, service: str, backend: str, new_server: str,
                  addr: str, port: int, old: tuple[str, int] | None, old_servers: list[str],
                  check: CheckSettings, up_timeout: float, drain_timeout: float,
                  on_up: Callable[[], None] = lambda: None,
                  before_drain: Callable[[], Awaitable[None]] | None = None,
                  proven_ready: bool = False, reached: bool | None = None) -> RerouteResult:
    """Move `backend` from `old_servers` to a new server at addr:port without losing requests.

    `on_up` runs once the new server serves and before any old one is drained: the caller
    commits the new route there, so a crash while draining keeps the route that works.
    `before_drain` is awaited after `on_up`, before the first old server drains (the caller
    saves the new route there: a crash mid-drain then restarts on the route that works).
    `proven_ready`: the caller proved the copy serves; take the fast path (module doc).
    `reached`: the caller already tried the fast path's TCP connect (`reachable`) itself.
    """
    t0 = time.monotonic()
    fast = proven_ready and (reached if reached is not None else await reachable(addr, port))
    if fast:
        await add_ready(client, backend=backend, server=new_server, addr=addr, port=port,
                        check=check)
    else:
        if proven_ready:
            log.warning("%s: %s:%d proven ready elsewhere but not reachable from here; "
                        "waiting for a health check", service, addr, port)
        await add_checked(client, backend=backend, server=new_server, addr=addr, port=port,
                          check=check, up_timeout=up_timeout)
    up_ms = _ms(t0)
    on_up()
    if before_drain is not None:
        await before_drain()
    t1 = time.monotonic()
    drained, forced = 0, False
    try:
        for name in old_servers:
            retired = await retire(client, backend=backend, server=name,
                                   drain_timeout=drain_timeout,
                                   interval=FAST_POLL_INTERVAL if fast else POLL_INTERVAL)
            drained += retired.drained_sessions
            forced = forced or retired.forced
    except LBError as exc:
        raise RerouteError(f"{service} now served by {addr}:{port}, but old server(s) "
                           f"{old_servers} were not all removed: {exc}") from exc
    return RerouteResult(service=service, old=old, new=(addr, port), duration_ms=_ms(t0),
                         drained_sessions=drained, forced=forced, up_ms=up_ms,
                         drain_ms=_ms(t1), fast=fast)
