"""Finding 3 at the load balancer, with real HAProxy: lb-slots.json is derived from the
records, so `start(claims=...)` rebuilds a lost or stale file without rerouting anything."""
from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from lb import LoadBalancer
from tests.lb.backend import Backend
from tests.lb.conftest import assert_no_haproxy
from tests.lb.openloop import OpenLoop

pytestmark = pytest.mark.integration

FRONT = "127.0.4.51"  # this module's own addresses (issue 12's range), apart from lb's 127.0.2.x


@pytest.fixture(scope="module")
def backends() -> Iterator[tuple[Backend, Backend]]:
    started: list[Backend] = []
    try:
        started.append(Backend("127.0.4.52", "a"))
        started.append(Backend("127.0.4.53", "b"))
        yield started[0], started[1]
    finally:
        for b in started:
            b.stop()


@pytest.fixture
def ports() -> range:
    return range(23900, 23910)


def make_lb(data_dir: Path, ports: range) -> LoadBalancer:
    return LoadBalancer(data_dir=data_dir, bind_addr=FRONT, ports=ports)


async def fetch(port: int) -> tuple[int, str]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as s:
        async with s.get(f"http://{FRONT}:{port}/") as resp:
            return resp.status, await resp.text()


async def test_lost_slots_file_is_rebuilt_from_claims_with_the_same_servers(
        tmp_path: Path, ports: range, backends: tuple[Backend, Backend]) -> None:
    a, b = backends
    data = tmp_path / "lb"
    first = make_lb(data, ports)
    await first.start()
    second: LoadBalancer | None = None
    try:
        _, web = await first.open_frontend("web")
        await first.route("web", *a.addr)
        _, api = await first.open_frontend("api")
        await first.route("api", *b.addr)
        before = {svc: [(s.name, s.addr, s.port) for s in await first.server_status(svc)] for svc in ("web", "api")}
        async with OpenLoop(f"http://{FRONT}:{web}/", rate=300) as load:
            await load.wait_sent(30)
            await first.stop(keep_running=True)
            first.config.slots_path.unlink()  # the derived file is lost
            second = make_lb(data, ports)
            await second.start(claims={"web": (web, a.addr), "api": (api, b.addr)})
            await load.wait_sent(60)
        assert load.report.lost == [], load.report.lost[:5]
        assert second.routes() == {"web": a.addr, "api": b.addr}
        assert second.frontend("api") == (FRONT, api)
        for svc in ("web", "api"):  # the very same servers: nothing was rerouted
            assert [(s.name, s.addr, s.port) for s in await second.server_status(svc)] == before[svc]
        _, new = await second.open_frontend("new")
        assert new not in (web, api), "a new service never gets a port a live one owns"
        assert (await fetch(web), await fetch(api)) == ((200, "a"), (200, "b"))
    finally:
        await (second or first).stop()
        assert_no_haproxy(data)


async def test_records_win_over_a_stale_slots_file(
        tmp_path: Path, ports: range, backends: tuple[Backend, Backend]) -> None:
    """The file says port P is `old` (deleted since); the records give P to `web`."""
    a, _ = backends
    data = tmp_path / "lb"
    first = make_lb(data, ports)
    await first.start()
    second: LoadBalancer | None = None
    try:
        _, port = await first.open_frontend("old")
        await first.route("old", *a.addr)
        await first.stop()
        second = make_lb(data, ports)
        await second.start(claims={"web": (port, a.addr)})
        assert second.frontend("web") == (FRONT, port) and second.frontend("old") is None
        assert await fetch(port) == (200, "a")
    finally:
        await (second or first).stop()
        assert_no_haproxy(data)
