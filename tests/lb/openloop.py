"""Open-loop HTTP load: requests leave on schedule whether or not earlier ones answered.

A closed-loop client waits for each answer and so hides exactly the stall a reroute could
cause; here request i is sent at `t0 + i / rate` (late sends go out at once and are counted),
and every non-2xx answer and every transport error counts as lost.
"""
from __future__ import annotations

import asyncio
import collections
import time
from dataclasses import dataclass, field

import aiohttp


@dataclass(frozen=True)
class Sample:
    seq: int  # the i-th scheduled request
    sent_at: float  # when it actually left, seconds since the load started
    latency_ms: float
    status: int | None  # None on transport error
    body: str
    error: str = ""

    @property
    def ok(self) -> bool:
        return self.status is not None and 200 <= self.status < 300


@dataclass
class LoadReport:
    samples: list[Sample] = field(default_factory=list)
    max_send_lag_ms: float = 0.0  # worst delay of a send behind its schedule

    @property
    def sent(self) -> int:
        return len(self.samples)

    @property
    def lost(self) -> list[Sample]:
        return [s for s in self.samples if not s.ok]

    @property
    def by_body(self) -> collections.Counter[str]:
        return collections.Counter(s.body for s in self.samples if s.ok)

    def latency_ms(self, q: float) -> float:
        lat = sorted(s.latency_ms for s in self.samples if s.ok)
        return lat[min(len(lat) - 1, int(q * len(lat)))] if lat else 0.0

    def summary(self) -> str:
        return (f"sent={self.sent} lost={len(self.lost)} p50={self.latency_ms(0.5):.1f}ms "
                f"p99={self.latency_ms(0.99):.1f}ms max_lag={self.max_send_lag_ms:.1f}ms "
                f"bodies={dict(self.by_body)}")


class OpenLoop:
    """`async with OpenLoop(url, rate=400) as load: ...` then read `load.report`."""

    def __init__(self, url: str, *, rate: float, timeout: float = 10.0,
                 keepalive: bool = True) -> None:
        """`keepalive=False`: a new connection per request, to test what happens to the
        listening socket itself (an idle kept-alive connection that the server closes while
        the client reuses it is HTTP's own race, which clients retry)."""
        self.url = url
        self.keepalive = keepalive
        self.rate = rate
        self.timeout = timeout
        self.report = LoadReport()
        self._stop = asyncio.Event()
        self._runner: asyncio.Task[None] | None = None
        self._inflight: set[asyncio.Task[None]] = set()
        self.launched = 0

    async def __aenter__(self) -> OpenLoop:
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=0, force_close=not self.keepalive),
            timeout=aiohttp.ClientTimeout(total=self.timeout))
        self._runner = asyncio.create_task(self._run())
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def stop(self) -> LoadReport:
        """Stop sending, wait for every request in flight, return the report."""
        self._stop.set()
        if self._runner is not None:
            await self._runner
            self._runner = None
        if self._inflight:
            await asyncio.gather(*self._inflight)
        if not self._session.closed:
            await self._session.close()
        return self.report

    async def wait_sent(self, count: int) -> None:
        """Let at least `count` more requests go out (time passes at the offered rate)."""
        target = self.launched + count
        while self.launched < target and not self._stop.is_set():
            await asyncio.sleep(1 / self.rate)

    async def _run(self) -> None:
        t0 = time.monotonic()
        i = 0
        while not self._stop.is_set():
            due = t0 + i / self.rate
            now = time.monotonic()
            if due > now:
                try:
                    await asyncio.wait_for(self._stop.wait(), due - now)
                    break
                except TimeoutError:
                    pass
            lag = (time.monotonic() - due) * 1000
            self.report.max_send_lag_ms = max(self.report.max_send_lag_ms, lag)
            task = asyncio.create_task(self._one(i, time.monotonic() - t0))
            self._inflight.add(task)
            task.add_done_callback(self._inflight.discard)
            i += 1
            self.launched = i

    async def _one(self, seq: int, sent_at: float) -> None:
        start = time.monotonic()
        try:
            async with self._session.get(self.url) as resp:
                body = await resp.text()
                sample = Sample(seq, sent_at, (time.monotonic() - start) * 1000, resp.status,
                                body)
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            sample = Sample(seq, sent_at, (time.monotonic() - start) * 1000, None, "",
                            repr(exc))
        self.report.samples.append(sample)
