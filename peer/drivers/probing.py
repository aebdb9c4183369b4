"""Readiness probes for locally run services: HTTP GET expecting 2xx, or a TCP connect."""
from __future__ import annotations

import asyncio

import aiohttp

from peer.drivers.descriptor import HealthCheck


def _url(host: str, port: int, path: str) -> str:
    netloc = f"[{host}]" if ":" in host else host
    return f"http://{netloc}:{port}{path}"


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
