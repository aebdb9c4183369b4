"""Open-loop constant-rate HTTP load that does not hide stalls.

Request i leaves at t0 + i/rate whether or not earlier ones answered (one task per request,
like wrk2 or vegeta); a closed-loop client would wait out exactly the stalls a reroute can
cause. Every non-2xx answer, transport error and timeout counts as lost, and so does a request
that could not even leave because `max_in_flight` were already pending (it is never delayed).

`run_entry_load` is the client a real user of the home set would run (`chaos.entries`): each
request goes to the first entry believed serving and moves on to the next on a transport
error, timeout or 5xx within the same time budget, so a request is lost only if no entry
served it in time; results are counted per entry (`served_by_entry`).

Times are `time.monotonic()` seconds, the clock `Nemesis` stamps fault events with, so
samples and faults can be lined up. `latency_ms` runs from the scheduled send time, so event
loop lag shows up as latency instead of vanishing (coordinated omission).
"""
from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import time
from collections.abc import Callable, Coroutine, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from chaos.entries import EntryList
from peer.runtime.waiting import sleep_until

OVER_LIMIT = "over-limit"


@dataclass(frozen=True)
class Sample:
    sent_at: float  # scheduled send time, time.monotonic()
    latency_ms: float
    ok: bool
    status: int | None
    error: str | None
    served_by: str | None  # the JSON answer's "cluster" field, if any
    entry: str | None = None  # label of the entry that answered (the last one tried if none did)
    tries: int = 1  # entries tried for this request


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
    attempt_failures: dict[str, int] = field(default_factory=dict)  # entry label -> failed tries

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

    def served_by_entry(self) -> dict[str, int]:
        """Successful requests per entry that served them (entry-list clients)."""
        counts: dict[str, int] = {}
        for s in self.samples:
            if s.ok and s.entry is not None:
                counts[s.entry] = counts.get(s.entry, 0) + 1
        return counts

    def failed_at(self, entry: str) -> list[Sample]:
        """Requests lost while `entry` was the last entry tried."""
        return [s for s in self.samples if not s.ok and s.entry == entry]


Target = Sequence[str] | Callable[[int], str]


def _picker(target: Target) -> Callable[[int], str]:
    if callable(target):
        return target
    urls = list(target)
    if not urls:
        raise ValueError("no URLs to load")
    return lambda i: urls[i % len(urls)]


Send = Callable[[aiohttp.ClientSession, float, LiveCounter, LoadResult], Coroutine[Any, Any, None]]
Background = Callable[[aiohttp.ClientSession], Coroutine[Any, Any, None]]


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
    pick = _picker(target)
    count = itertools.count()

    async def send(session: aiohttp.ClientSession, at: float, live: LiveCounter,
                   out: LoadResult) -> None:
        await _request(session, pick(next(count)), at, timeout=timeout, live=live, out=out)

    return await _drive(send, rate=rate, duration=duration, stop=stop, timeout=timeout,
                        max_in_flight=max_in_flight, live=live, keepalive=keepalive)


async def run_entry_load(
    entries: EntryList,
    *,
    rate: float,
    duration: float | None = None,
    stop: asyncio.Event | None = None,
    timeout: float = 2.0,
    attempt_timeout: float | None = None,
    max_in_flight: int = 1000,
    live: LiveCounter | None = None,
    keepalive: bool = True,
) -> LoadResult:
    """Like `run_load`, as a client of a service's entry list (module doc): each request has
    `timeout` seconds over all the entries it tries, at most `attempt_timeout` (default
    `timeout / len(entries)`) at each; failed entries are probed every
    `entries.probe_interval` and used again once they serve."""
    per_try = attempt_timeout if attempt_timeout is not None else timeout / len(entries)
    if per_try <= 0:
        raise ValueError("attempt_timeout must be positive")

    async def send(session: aiohttp.ClientSession, at: float, live: LiveCounter,
                   out: LoadResult) -> None:
        await _entry_request(session, entries, at, timeout=timeout, attempt_timeout=per_try,
                             live=live, out=out)

    async def probing(session: aiohttp.ClientSession) -> None:
        await _probe_failed_entries(session, entries, timeout=min(per_try, 1.0))

    return await _drive(send, rate=rate, duration=duration, stop=stop, timeout=timeout,
                        max_in_flight=max_in_flight, live=live, keepalive=keepalive,
                        background=probing)


async def _drive(send: Send, *, rate: float, duration: float | None,
                 stop: asyncio.Event | None, timeout: float, max_in_flight: int,
                 live: LiveCounter | None, keepalive: bool,
                 background: Background | None = None,
                 ) -> LoadResult:
    """The open-loop schedule: one `send` task per tick, never delayed by earlier ones."""
    if rate <= 0:
        raise ValueError("rate must be positive")
    if duration is None and stop is None:
        raise ValueError("give a duration, a stop event, or both")
    live = live if live is not None else LiveCounter()
    stop = stop or asyncio.Event()
    result = LoadResult(t0=time.monotonic(), rate=rate)
    pending: set[asyncio.Task[None]] = set()
    connector = aiohttp.TCPConnector(limit=0, force_close=not keepalive)
    async with aiohttp.ClientSession(
        connector=connector, timeout=aiohttp.ClientTimeout(total=timeout)
    ) as session:
        helper = asyncio.create_task(background(session)) if background is not None else None
        try:
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
                    task = asyncio.create_task(send(session, at, live, result))
                    pending.add(task)
                    task.add_done_callback(pending.discard)
                i += 1
            if pending:
                await asyncio.gather(*pending)
        finally:
            if helper is not None:
                helper.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await helper
    result.samples.sort(key=lambda s: s.sent_at)
    return result


@dataclass(frozen=True)
class _Answer:
    status: int | None
    served_by: str | None
    error: str | None

    @property
    def ok(self) -> bool:
        return self.error is None


async def _get(session: aiohttp.ClientSession, url: str, *, timeout: float) -> _Answer:
    """One GET; any non-2xx, transport error or timeout is an error."""
    status: int | None = None
    served_by: str | None = None
    error: str | None = None
    try:
        async with asyncio.timeout(timeout + 1.0):  # belt and braces over aiohttp's timeout
            async with session.get(url, timeout=aiohttp.ClientTimeout(total=timeout)) as resp:
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
    return _Answer(status, served_by, error)


def _record(out: LoadResult, live: LiveCounter, sample: Sample) -> None:
    out.samples.append(sample)
    if sample.ok:
        live.served += 1
    else:
        live.failed += 1


async def _request(session: aiohttp.ClientSession, url: str, at: float, *, timeout: float,
                   live: LiveCounter, out: LoadResult) -> None:
    answer = await _get(session, url, timeout=timeout)
    latency = (time.monotonic() - at) * 1000.0
    _record(out, live, Sample(at, latency, answer.ok, answer.status, answer.error,
                              answer.served_by))


async def _entry_request(session: aiohttp.ClientSession, entries: EntryList, at: float, *,
                         timeout: float, attempt_timeout: float, live: LiveCounter,
                         out: LoadResult) -> None:
    """Try the entries in the client's order until one serves or the budget is spent."""
    deadline = time.monotonic() + timeout
    answer = _Answer(None, None, "timeout")
    label: str | None = None
    tries = 0
    for i in entries.order():
        left = deadline - time.monotonic()
        if left <= 0:
            break
        label, tries = entries.labels[i], tries + 1
        answer = await _get(session, entries.urls[i], timeout=min(attempt_timeout, left))
        if answer.ok:
            entries.served(i)
            break
        entries.failed(i, time.monotonic())
        out.attempt_failures[label] = out.attempt_failures.get(label, 0) + 1
    latency = (time.monotonic() - at) * 1000.0
    _record(out, live, Sample(at, latency, answer.ok, answer.status, answer.error,
                              answer.served_by, entry=label, tries=tries))


async def _probe_failed_entries(session: aiohttp.ClientSession, entries: EntryList, *,
                                timeout: float) -> None:
    """Forever: GET each failed entry once per probe interval; one that serves is used again."""
    while True:
        await asyncio.sleep(entries.probe_interval / 5)  # tick finer than the interval
        due = entries.probes_due(time.monotonic())
        answers = await asyncio.gather(*(_get(session, entries.urls[i], timeout=timeout)
                                         for i in due))
        for i, answer in zip(due, answers):
            if answer.ok:
                entries.served(i)


def _cluster_field(body: bytes) -> str | None:
    if not body.startswith(b"{") or len(body) > 65536:
        return None
    try:
        value = json.loads(body)
    except ValueError:
        return None
    cluster = value.get("cluster") if isinstance(value, dict) else None
    return cluster if isinstance(cluster, str) else None
