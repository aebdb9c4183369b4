"""The request hold (lb/hold.lua) in a real HAProxy: held requests wait, none is lost, and they
go to the server the backend has when released; a hold left by a dead caller ends by itself."""
from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiohttp
import pytest

from lb import LoadBalancer
from lb.errors import InvalidTokenError
from lb import runtime
from tests.lb.backend import Backend
from tests.lb.openloop import OpenLoop

pytestmark = pytest.mark.integration

FRONT = "127.0.20.1"


@pytest.fixture(scope="module")
def backends() -> Iterator[tuple[Backend, Backend]]:
    started: list[Backend] = []
    try:
        started.append(Backend("127.0.20.10", "a", port=41000))
        started.append(Backend("127.0.20.11", "b", port=41000))
        yield started[0], started[1]
    finally:
        for b in started:
            b.stop()


@pytest.fixture
async def lb(tmp_path: Path) -> AsyncIterator[LoadBalancer]:
    balancer = LoadBalancer(data_dir=tmp_path / "lb", bind_addr=FRONT, ports=range(41100, 41104), max_slots=2)
    await balancer.start()
    try:
        yield balancer
    finally:
        await balancer.stop()


async def get(port: int) -> tuple[int, str, float]:
    t0 = time.monotonic()
    async with aiohttp.ClientSession() as s, s.get(f"http://{FRONT}:{port}/") as r:
        return r.status, await r.text(), time.monotonic() - t0


async def test_held_requests_wait_then_reach_the_new_server(lb: LoadBalancer,
                                                           backends: tuple[Backend, Backend]) -> None:
    a, b = backends
    _, port = await lb.open_frontend("web")
    await lb.route("web", *a.addr, proven_ready=True)
    assert (await get(port))[:2] == (200, "a")
    await lb.hold("web", ttl=5.0)
    pending = asyncio.ensure_future(get(port))
    await asyncio.sleep(0.2)
    assert not pending.done()  # held in HAProxy, not at the server
    assert await lb.idle("web")
    await lb.route("web", *b.addr, proven_ready=True)
    await lb.release("web")
    status, body, took = await pending
    assert (status, body) == (200, "b") and took >= 0.2


async def test_hold_expires_by_itself(lb: LoadBalancer, backends: tuple[Backend, Backend]) -> None:
    a, _ = backends
    _, port = await lb.open_frontend("web")
    await lb.route("web", *a.addr, proven_ready=True)
    await lb.hold("web", ttl=0.3)
    status, body, took = await get(port)
    assert (status, body) == (200, "a") and 0.25 <= took < 3.0


async def test_handover_under_open_loop_load_loses_nothing(lb: LoadBalancer,
                                                          backends: tuple[Backend, Backend]) -> None:
    a, b = backends
    _, port = await lb.open_frontend("web")
    await lb.route("web", *a.addr, proven_ready=True)
    async with OpenLoop(f"http://{FRONT}:{port}/", rate=200) as load:
        await load.wait_sent(50)
        for i in range(6):
            await lb.hold("web", ttl=2.0)
            await asyncio.sleep(0.02)  # a handover's few ms, exaggerated
            await lb.route("web", *(b if i % 2 == 0 else a).addr, proven_ready=True)
            await lb.release("web")
            await load.wait_sent(20)
    assert load.report.lost == [], load.report.lost[:5]
    assert load.report.by_body["a"] > 0 and load.report.by_body["b"] > 0


def test_hold_commands_are_validated() -> None:
    assert runtime.hold("be_1", 500).text == "roam hold be_1 500"
    for bad in (0, 60_001, True):
        with pytest.raises(InvalidTokenError):
            runtime.hold("be_1", bad)  # type: ignore[arg-type]
    with pytest.raises(InvalidTokenError):
        runtime.release("be_1;shutdown")
