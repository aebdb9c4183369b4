"""Readiness probes for locally run services: HTTP GET expecting 2xx, or a TCP connect.

How often to probe a service that binds its own port (`next_probe_delay`): a fixed 50 ms poll
notices readiness 25 ms late on average and up to 50 ms, a third of a Python service's whole
start. Probing every 2 ms at first and then every tenth of the time waited so far keeps the
lateness within about 10 % of the start time (and at most `cap`), for a few dozen refused
connects per start. A socket-activated service needs none of this: its first probe waits in
the kernel's accept queue and is answered as soon as the service serves.
"""
from __future__ import annotations

import asyncio

import aiohttp

from lb.hostport import join_hostport
from peer.drivers.descriptor import HealthCheck


FIRST_DELAY = 0.002  # seconds; a refused connect on loopback costs ~0.2 ms of CPU
LATENESS = 0.1  # probe again after this fraction of the time waited so far


def next_probe_delay(elapsed: float, *, cap: float) -> float:
    """Seconds until the next probe of a service started `elapsed` seconds ago (module doc)."""
    return max(FIRST_DELAY, min(cap, elapsed * LATENESS))


def _url(host: str, port: int, path: str) -> str:
    return f"http://{join_hostport(host, port)}{path}"


async def probe(
    session: aiohttp.ClientSession, health: HealthCheck | None, *, host: str, port: int, timeout: float = 1.0
) -> bool:
    """One probe; any failure (refused, timeout, non-2xx) is simply "not ready"."""
    try:
        if health is None or health.path is None:
            _, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
            writer.close()
            await writer.wait_closed()
            return True
        async with session.get(
            _url(host, port, health.path), timeout=aiohttp.ClientTimeout(total=timeout), allow_redirects=False
        ) as resp:
            await resp.read()
            return 200 <= resp.status < 300
    except (TimeoutError, OSError, aiohttp.ClientError):
        return False
