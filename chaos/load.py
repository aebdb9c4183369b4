"""Open-loop constant-rate HTTP load that does not hide stalls.

Request i leaves at t0 + i/rate whether or not earlier ones answered (one task per request,
like wrk2 or vegeta); a closed-loop client would wait out exactly the stalls a reroute can
cause. Every non-2xx answer, transport error and timeout counts as lost, and so does a request
that could not even leave because `max_in_flight` were already pending (it is never delayed).

Times are `time.monotonic()` seconds, the clock `Nemesis` stamps fault events with, so
samples and faults can be lined up. `latency_ms` runs from the scheduled send time, so event
loop lag shows up as latency instead of vanishing (coordinated omission).
"""
from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

import aiohttp

from peer.waiting import sleep_until

OVER_LIMIT = "over-limit"


@dataclass(frozen=True)
class Sample:
    sent_at: float  # scheduled send time, time.monotonic()
    latency_ms: float
    ok: bool
    status: int | None
    error: str | None
    served_by: str | None  # the JSON answer's "cluster" field, if any


@dataclass
class LiveCounter:
    """Running totals, readable while the load runs (progress display)."""

    sent: int = 0
    served: int = 0
    failed: int = 0

    @property
    def in_flight(self) -> int:
        return self.sent - self.served - self.failed

    def line(self) -> str:
        return (f"sent {self.sent} served {self.served} failed {self.failed} "
                f"in-flight {self.in_flight}")


@dataclass(frozen=True)
class Outage:
    """A run of consecutive failed requests: from the first failure's send time to the send
    time of the first success after it (or the last failure, if none followed)."""

    start: float
    end: float
    failed: int
    open_ended: bool

    @property
    def duration(self) -> float:
        return self.end - self.start


def failures_between(samples: Iterable[Sample], t0: float, t1: float) -> list[Sample]:
    """Failed samples sent in [t0, t1]."""
    return [s for s in samples if not s.ok and t0 <= s.sent_at <= t1]


def outages(samples: Iterable[Sample]) -> list[Outage]:
    """Every run of consecutive failures, in send order."""
    found: list[Outage] = []
    run: list[Sample] = []
    for sample in sorted(samples, key=lambda s: s.sent_at):
        if not sample.ok:
            run.append(sample)
        elif run:
            found.append(Outage(run[0].sent_at, sample.sent_at, len(run), False))
            run = []
    if run:
        found.append(Outage(run[0].sent_at, run[-1].sent_at, len(run), True))
    return found


def downtime(samples: Iterable[Sample]) -> Outage | None:
    """The longest outage (by time), or None if nothing failed."""
    return max(outages(samples), key=lambda o: (o.duration, o.failed), default=None)


@dataclass
class LoadResult:
    t0: float
    rate: float
    samples: list[Sample] = field(default_factory=list)

    @property
    def served(self) -> int:
        return sum(1 for s in self.samples if s.ok)

    @property
    def failed(self) -> int:
        return sum(1 for s in self.samples if not s.ok)

    def failures_between(self, t0: float, t1: float) -> list[Sample]:
        return failures_between(self.samples, t0, t1)

    def outages(self) -> list[Outage]:
        return outages(self.samples)

    def downtime(self) -> Outage | None:
        return downtime(self.samples)

    def latency_ms(self, quantile: float) -> float | None:
        """Latency quantile (0..1) over successful requests."""
        lat = sorted(s.latency_ms for s in self.samples if s.ok)
        if not lat:
            return None
        return lat[min(len(lat) - 1, int(quantile * len(lat)))]

    def served_by(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for s in self.samples:
            if s.ok and s.served_by:
                counts[s.served_by] = counts.get(s.served_by, 0) + 1
        return counts


Target = Sequence[str] | Callable[[int], str]


def _picker(target: Target) -> Callable[[int], str]:
    if callable(target):
        return target
    urls = list(target)
    if not urls:
        raise ValueError("no URLs to load")
    return lambda i: urls[i % len(urls)]


async def run_load(
    target: Target,
    *,
    rate: float,
    duration: float | None = None,
    stop: asyncio.Event | None = None,
    timeout: float = 2.0,
    max_in_flight: int = 1000,
    live: LiveCounter | None = None,
    keepalive: bool = True,
) -> LoadResult:
    """Send GETs at `rate` per second to `target` (URLs round-robin, or `f(i) -> url`) until
    `duration` elapsed or `stop` is set; wait for the stragglers; return every sample."""
    if rate <= 0:
        raise ValueError("rate must be positive")
    if duration is None and stop is None:
        raise ValueError("give a duration, a stop event, or both")
    pick = _picker(target)
    live = live if live is not None else LiveCounter()
    stop = stop or asyncio.Event()
    result = LoadResult(t0=time.monotonic(), rate=rate)
    pending: set[asyncio.Task[None]] = set()
    connector = aiohttp.TCPConnector(limit=0, force_close=not keepalive)
    async with aiohttp.ClientSession(
        connector=connector, timeout=aiohttp.ClientTimeout(total=timeout)
    ) as session:
        i = 0
        while True:
            at = result.t0 + i / rate
            if duration is not None and at >= result.t0 + duration:
                break
            if await sleep_until(at, stop):
                break
            live.sent += 1
            if len(pending) >= max_in_flight:
                live.failed += 1
                result.samples.append(Sample(at, 0.0, False, None, OVER_LIMIT, None))
            else:
                task = asyncio.create_task(
                    _request(session, pick(i), at, timeout=timeout, live=live, out=result))
                pending.add(task)
                task.add_done_callback(pending.discard)
            i += 1
        if pending:
            await asyncio.gather(*pending)
    result.samples.sort(key=lambda s: s.sent_at)
    return result


async def _request(session: aiohttp.ClientSession, url: str, at: float, *, timeout: float,
                   live: LiveCounter, out: LoadResult) -> None:
    status: int | None = None
    served_by: str | None = None
    error: str | None = None
    try:
        async with asyncio.timeout(timeout + 1.0):  # belt and braces over aiohttp's timeout
            async with session.get(url) as resp:
                status = resp.status
                body = await resp.read()
                served_by = _cluster_field(body)
                if not 200 <= status < 300:
                    error = f"HTTP {status}"
    except TimeoutError:
        error = "timeout"
    except aiohttp.ClientError as exc:
        error = f"{type(exc).__name__}: {exc}"
    except OSError as exc:
        error = f"{type(exc).__name__}: {exc}"
    ok = error is None
    latency = (time.monotonic() - at) * 1000.0
    out.samples.append(Sample(at, latency, ok, status, error, served_by))
    if ok:
        live.served += 1
    else:
        live.failed += 1


def _cluster_field(body: bytes) -> str | None:
    if not body.startswith(b"{") or len(body) > 65536:
        return None
    try:
        value = json.loads(body)
    except ValueError:
        return None
    cluster = value.get("cluster") if isinstance(value, dict) else None
    return cluster if isinstance(cluster, str) else None
