"""Measured bandwidth from this cluster to each peer: the link quality the paper's use case
moves services on (good bandwidth: move out; degraded: closer; outage: home).

An upload of `size` bytes over the peer API, timed. Small enough to be cheap on a good link
(a few ms), long enough on a shaped one to measure it. The median of the last three probes
smooths noise; an unreachable peer measures 0.
"""
from __future__ import annotations

import asyncio
import statistics
import time
from collections import defaultdict, deque
from typing import Any

from aiohttp import web

from peer.peerclient import PeerClient, PeerError, msgpack_response, read_msgpack

PROBE = "/peer/v1/probe"
PROBE_BYTES = 256 * 1024
INTERVAL = 2.0
TIMEOUT = 2.0


class LinkProbe:
    def __init__(self, *, agent: Any, client: PeerClient, size: int = PROBE_BYTES, interval: float = INTERVAL) -> None:
        self.agent = agent
        self.client = client
        self.size = size
        self.interval = interval
        self._samples: defaultdict[str, deque[float]] = defaultdict(lambda: deque(maxlen=3))
        self._payload = bytes(size)

    def bandwidth(self) -> dict[str, float]:
        return {peer: statistics.median(s) for peer, s in self._samples.items() if s}

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            if not self.agent.homes_services():
                continue
            peers = [m for m in self.agent.membership.alive() if m.name != self.agent.here and m.api_url]
            await asyncio.gather(*(self._probe(m.name, m.api_url) for m in peers))

    async def _probe(self, peer: str, url: str) -> None:
        started = time.monotonic()
        try:
            await self.client.call(url, PROBE, {"pad": self._payload}, timeout=TIMEOUT)
            elapsed = max(time.monotonic() - started, 1e-6)
            mbps = self.size * 8 / elapsed / 1e6
        except PeerError:
            # Unreachable is not noise: forget the good history at once, so placement never
            # picks a cluster it cannot reach.
            self._samples[peer].clear()
            mbps = 0.0
        self._samples[peer].append(round(mbps, 2))

    @staticmethod
    def add_routes(app: web.Application) -> None:
        async def probe(request: web.Request) -> web.Response:
            await read_msgpack(request)
            return msgpack_response({"ok": True})

        app.router.add_post(PROBE, probe)
