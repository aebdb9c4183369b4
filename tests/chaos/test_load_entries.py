"""The entry-list client: it sends to the first entry, moves on to the next on a refused
connection, a 5xx or a timeout within the same request's budget (so nothing is lost while one
entry serves), and goes back to the first entry once a probe finds it serving again. Against
real aiohttp servers on loopback."""
from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pytest
from aiohttp import web

from chaos.entries import EntryList
from chaos.load import LoadResult, run_entry_load, run_load
from peer.runtime.waiting import wait_until

RATE = 100.0


@dataclass
class Server:
    """One entry: answers `{"cluster": name}`, or 503, or hangs, or is not listening."""

    name: str
    port: int
    mode: str = "ok"  # ok | 503 | hang
    runner: web.AppRunner | None = None
    hits: list[float] = field(default_factory=list)
    released: asyncio.Event = field(default_factory=asyncio.Event)  # hanging requests end at `stop`

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.hits.append(asyncio.get_running_loop().time())
        if self.mode == "503":
            return web.json_response({"error": "down"}, status=503)
        if self.mode == "hang":  # until the test ends (`stop`), 30 s at most
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.released.wait(), 30)
        return web.json_response({"cluster": self.name})

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/", self.handle)
        self.runner = web.AppRunner(app, shutdown_timeout=0.1)
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", self.port).start()

    async def stop(self) -> None:
        self.released.set()  # no request handler outlives the test
        if self.runner is not None:
            await self.runner.cleanup()
            self.runner = None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
async def servers() -> AsyncIterator[tuple[Server, Server]]:
    a, b = Server("a", free_port()), Server("b", free_port())
    await a.start()
    await b.start()
    try:
        yield a, b
    finally:
        await a.stop()
        await b.stop()


def between(result: LoadResult, t0: float, t1: float) -> list[str | None]:
    return [s.entry for s in result.samples if t0 <= s.sent_at <= t1]


def test_entry_order_failures_and_probes() -> None:
    entries = EntryList.of(["u0", "u1", "u2"], ["c1", "c2", "c3"], probe_interval=0.5)
    assert entries.order() == [0, 1, 2] and entries.preferred == 0
    entries.failed(0, now=10.0)
    entries.failed(0, now=10.2)  # a second failure does not push the probe back
    assert entries.order() == [1, 2, 0] and entries.preferred == 1
    assert entries.probes_due(10.3) == []
    assert entries.probes_due(10.5) == [0]
    assert entries.probes_due(10.7) == []  # probed at 10.5: next one at 11.0
    entries.failed(2, now=10.8)
    assert entries.order() == [1, 0, 2]
    assert entries.probes_due(11.3) == [0, 2]
    entries.served(0)
    assert entries.order() == [0, 1, 2] and entries.probes_due(20.0) == [2]
    with pytest.raises(ValueError):
        EntryList.of([])
    with pytest.raises(ValueError):
        EntryList.of(["u0", "u1"], ["c1", "c1"])
    with pytest.raises(ValueError):
        EntryList.of(["u0"], probe_interval=0)


async def test_fails_over_at_once_and_goes_back_to_the_first_entry(
        servers: tuple[Server, Server]) -> None:
    a, b = servers
    entries = EntryList.of([a.url, b.url], ["a", "b"], probe_interval=0.5)
    stop = asyncio.Event()
    load = asyncio.create_task(run_entry_load(entries, rate=RATE, stop=stop, timeout=2.0))
    loop = asyncio.get_running_loop()
    # The experiment's schedule, on what the servers saw: load on a, then a goes away, b serves
    # for a while, a comes back and serves again for longer than the probe interval.
    await wait_until(lambda: len(a.hits) >= 20, timeout=10, what="a serving")
    await a.stop()
    lost_at = loop.time()
    await wait_until(lambda: sum(1 for t in b.hits if t > lost_at) >= 30, timeout=10, what="b serving")
    await a.start()
    back_at = loop.time()
    await wait_until(lambda: any(t > back_at + 1.5 for t in a.hits), timeout=10, what="a serving again")
    stop.set()
    result = await load

    assert result.failed == 0, [s.error for s in result.samples if not s.ok][:5]
    assert set(between(result, result.t0, lost_at - 0.05)) == {"a"}
    assert set(between(result, lost_at + 0.05, back_at - 0.05)) == {"b"}
    assert set(between(result, back_at + 1.0, loop.time())) == {"a"}  # probe every 0.5 s
    first_back = min(s.sent_at for s in result.samples if s.sent_at > back_at and s.entry == "a")
    print(f"back to the first entry {first_back - back_at:.2f}s after it served again")
    counts = result.served_by_entry()
    assert counts["a"] + counts["b"] == result.served == len(result.samples)
    assert result.served_by() == counts  # each server names itself as the cluster
    retried = [s for s in result.samples if s.tries > 1]
    assert retried and all(s.entry == "b" for s in retried)
    assert result.attempt_failures["a"] == len(retried) and "b" not in result.attempt_failures


@pytest.mark.parametrize("mode", ["503", "hang"])
async def test_a_5xx_or_a_hang_is_retried_at_the_next_entry_within_the_budget(
        servers: tuple[Server, Server], mode: str) -> None:
    a, b = servers
    a.mode = mode
    entries = EntryList.of([a.url, b.url], ["a", "b"], probe_interval=0.5)
    result = await run_entry_load(entries, rate=RATE, duration=2.0, timeout=2.0,
                                  attempt_timeout=0.3)
    assert result.failed == 0 and result.served_by_entry() == {"b": len(result.samples)}
    slowest = max(s.latency_ms for s in result.samples)
    if mode == "hang":  # the first requests waited out one attempt at a, no more
        assert 300 <= slowest < 1500, slowest
    # a is only probed while it fails (every 0.5 s), not sent every request
    assert 1 <= len(a.hits) <= 0.3 * len(result.samples), len(a.hits)


async def test_a_request_is_lost_only_when_no_entry_serves(
        servers: tuple[Server, Server]) -> None:
    a, b = servers
    a.mode = b.mode = "503"
    entries = EntryList.of([a.url, b.url], ["a", "b"])
    result = await run_entry_load(entries, rate=RATE, duration=0.5, timeout=1.0)
    assert result.served == 0 and result.failed == len(result.samples) > 0
    assert {s.error for s in result.samples} == {"HTTP 503"}
    assert all(s.tries == 2 for s in result.samples)
    b.mode = "ok"
    again = await run_entry_load(entries, rate=RATE, duration=0.5, timeout=1.0)
    assert again.failed == 0 and set(again.served_by_entry()) == {"b"}


async def test_a_single_url_load_keeps_its_old_behaviour(servers: tuple[Server, Server]) -> None:
    a, _ = servers
    a.mode = "503"
    result = await run_load([a.url], rate=RATE, duration=0.3, timeout=1.0)
    assert result.failed == len(result.samples) > 0 and result.served_by_entry() == {}
    assert all(s.entry is None and s.tries == 1 for s in result.samples)
