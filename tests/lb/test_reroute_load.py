"""Reroutes under open-loop load through a real HAProxy to real backends: nothing may be lost."""
from __future__ import annotations

import asyncio

import aiohttp
import pytest

from lb import LoadBalancer, RerouteError
from lb.statefile import LBState
from peer.runtime.waiting import wait_until
from tests.lb.conftest import DEAD, FRONT, Backend, fetch
from tests.lb.openloop import OpenLoop

pytestmark = pytest.mark.integration

RATE = 400  # requests/s, open loop


async def serving(lb: LoadBalancer, service: str, backend: Backend) -> None:
    """Wait until the frontend answers with `backend`'s name."""
    _, port = lb.frontend(service) or ("", 0)

    async def answers() -> bool:
        return await fetch(port) == (200, backend.name)

    await wait_until(answers, timeout=10, what=f"{service} served by {backend.name}")


async def test_twenty_switches_under_load_lose_nothing(
        lb: LoadBalancer, backends: tuple[Backend, Backend]) -> None:
    a, b = backends
    _, port = await lb.open_frontend("web")
    assert (await fetch(port))[0] == 503  # a slot serves 503 until routed
    first = await lb.route("web", *a.addr)
    assert (first.old, first.new) == (None, a.addr)
    await serving(lb, "web", a)
    results = []
    async with OpenLoop(f"http://{FRONT}:{port}/", rate=RATE) as load:
        await load.wait_sent(RATE // 4)
        for i in range(20):
            target = b if i % 2 == 0 else a
            results.append(await lb.route("web", *target.addr))
            await load.wait_sent(RATE // 20)  # ~50 ms of traffic on the new route
    report = load.report
    print(report.summary(), [round(r.duration_ms, 1) for r in results])
    assert report.lost == [], report.lost[:5]
    span = max(s.sent_at for s in report.samples) - min(s.sent_at for s in report.samples)
    assert report.sent / span >= 300, f"offered rate fell to {report.sent / span:.0f}/s"
    assert report.by_body["a"] > 0 and report.by_body["b"] > 0
    assert [r.new for r in results] == [b.addr, a.addr] * 10
    assert [r.old for r in results] == [a.addr, b.addr] * 10
    assert lb.current_route("web") == a.addr
    status = await lb.server_status("web")
    assert [(s.addr, s.port, s.state.value) for s in status] == [(*a.addr, "UP")]


async def test_route_to_dead_address_fails_and_keeps_old_route(
        lb: LoadBalancer, backends: tuple[Backend, Backend]) -> None:
    a, _ = backends
    _, port = await lb.open_frontend("web")
    await lb.route("web", *a.addr)
    async with OpenLoop(f"http://{FRONT}:{port}/", rate=RATE) as load:
        await load.wait_sent(RATE // 10)
        with pytest.raises(RerouteError):
            await lb.route("web", DEAD, 21000, up_timeout=0.5)
        await load.wait_sent(RATE // 10)
    assert load.report.lost == [], load.report.lost[:5]
    assert set(load.report.by_body) == {"a"}
    assert lb.current_route("web") == a.addr
    assert [s.addr for s in await lb.server_status("web")] == [a.host]


async def test_reroute_while_old_backend_is_killed_ends_serving(
        lb: LoadBalancer, backends: tuple[Backend, Backend], spare_backend: Backend) -> None:
    _, b = backends
    c = spare_backend
    _, port = await lb.open_frontend("web")
    await lb.route("web", *c.addr)
    async with OpenLoop(f"http://{FRONT}:{port}/", rate=RATE) as load:
        await load.wait_sent(RATE // 10)
        moving = asyncio.create_task(lb.route("web", *b.addr))
        await asyncio.sleep(0.005)  # mid-way: the new server is being added and checked
        c.kill()
        result = await moving
        after = load.launched
        await load.wait_sent(RATE // 5)
    assert result.new == b.addr and lb.current_route("web") == b.addr
    late = [s for s in load.report.samples if s.seq >= after]
    assert late and all(s.ok and s.body == "b" for s in late), [s for s in late if not s.ok][:3]
    print(load.report.summary(), "lost while the old backend died:", len(load.report.lost))


async def test_reroute_from_backend_already_down(
        lb: LoadBalancer, backends: tuple[Backend, Backend], spare_backend: Backend) -> None:
    _, b = backends
    c = spare_backend
    _, port = await lb.open_frontend("web")
    await lb.route("web", *c.addr)
    c.kill()

    async def old_down() -> bool:
        return [s.state.value for s in await lb.server_status("web")] == ["DOWN"]

    await wait_until(old_down, timeout=5, what="dead backend marked DOWN")
    assert (await fetch(port))[0] == 503
    result = await lb.route("web", *b.addr)
    assert result.old == c.addr and not result.forced
    assert await fetch(port) == (200, "b")
    assert [s.addr for s in await lb.server_status("web")] == [b.host]


async def slow_requests_on(lb: LoadBalancer, backend: Backend, *, count: int,
                           ms: int) -> tuple[int, list[asyncio.Task[tuple[int, str]]]]:
    """The frontend "web" routed to `backend` with `count` requests of `ms` in flight on it:
    its port and the requests' tasks."""
    _, port = await lb.open_frontend("web")
    await lb.route("web", *backend.addr)
    slow = [asyncio.create_task(fetch(port, f"/slow?ms={ms}")) for _ in range(count)]

    async def busy() -> bool:
        return sum(s.scur for s in await lb.server_status("web")) == count

    await wait_until(busy, timeout=5, what=f"{count} slow request(s) in flight")
    return port, slow


async def test_slow_requests_are_drained_not_cut(
        lb: LoadBalancer, backends: tuple[Backend, Backend]) -> None:
    a, b = backends
    port, slow = await slow_requests_on(lb, a, count=5, ms=1500)
    result = await lb.route("web", *b.addr)
    assert result.drained_sessions == 5 and not result.forced
    assert result.drain_ms >= 300  # it waited for them
    assert [await t for t in slow] == [(200, "a")] * 5
    assert await fetch(port) == (200, "b")


async def test_the_new_route_is_saved_before_the_old_server_is_drained(
        lb: LoadBalancer, backends: tuple[Backend, Backend]) -> None:
    """Issue 16: `on_up` comes before the route is saved (the save runs in a thread while the
    caller commits), but the old server is drained, and `route` returns, only once the file
    names the new route: an agent killed mid-drain restarts HAProxy on the route that works."""
    a, b = backends
    port, (slow,) = await slow_requests_on(lb, a, count=1, ms=1500)
    up = asyncio.Event()
    routing = asyncio.create_task(lb.route("web", *b.addr, proven_ready=True, on_up=up.set))
    await asyncio.wait_for(up.wait(), timeout=5)

    def saved() -> tuple[str, int] | None:
        route = LBState.load(lb.config.slots_path).slots["web"].route
        return None if route is None else (route.addr, route.port)

    async def a_drains() -> bool:
        return any((s.addr, s.port) == a.addr and s.state == "DRAIN" for s in await lb.server_status("web"))

    await wait_until(a_drains, timeout=5, what="a draining")
    assert saved() == b.addr and not routing.done()  # saved before a began to drain
    result = await routing
    assert result.drained_sessions == 1 and await slow == (200, "a")
    assert saved() == b.addr


async def test_drain_deadline_forces_sessions_closed(
        lb: LoadBalancer, backends: tuple[Backend, Backend]) -> None:
    a, b = backends
    port, (stuck,) = await slow_requests_on(lb, a, count=1, ms=4000)
    result = await lb.route("web", *b.addr, drain_timeout=0.3)
    assert result.forced and result.drained_sessions == 1
    assert result.duration_ms < 2000
    # The cut request is not lost: HAProxy sees an empty response and, with retry-on and
    # redispatch, replays the (idempotent) GET on the new route.
    assert await stuck == (200, "b")
    assert await fetch(port) == (200, "b")


async def test_opening_and_closing_other_frontends_drops_nothing(
        lb: LoadBalancer, backends: tuple[Backend, Backend]) -> None:
    a, b = backends
    _, port = await lb.open_frontend("web")
    await lb.route("web", *a.addr)
    async with OpenLoop(f"http://{FRONT}:{port}/", rate=RATE) as load:
        for i in range(8):
            _, other = await lb.open_frontend(f"other{i % 3}")
            await lb.route(f"other{i % 3}", *b.addr)
            assert await fetch(other) == (200, "b")
            await lb.close_frontend(f"other{i % 3}")
            await load.wait_sent(RATE // 40)
    assert load.report.lost == [], load.report.lost[:5]
    assert set(load.report.by_body) == {"a"}
    assert lb.routes() == {"web": a.addr}


async def test_route_is_idempotent(lb: LoadBalancer, backends: tuple[Backend, Backend]) -> None:
    a, _ = backends
    await lb.open_frontend("web")
    await lb.route("web", *a.addr)
    before = await lb.server_status("web")
    again = await lb.route("web", *a.addr)
    assert again.old == again.new == a.addr and again.drained_sessions == 0
    assert await lb.server_status("web") == before  # same server, not re-added


async def test_proven_ready_switches_under_load_lose_nothing(
        lb: LoadBalancer, backends: tuple[Backend, Backend]) -> None:
    """The fast path (UP at once, no wait for a first check) keeps make-before-break."""
    a, b = backends
    _, port = await lb.open_frontend("web")
    await lb.route("web", *a.addr, proven_ready=True)
    await serving(lb, "web", a)
    results = []
    async with OpenLoop(f"http://{FRONT}:{port}/", rate=RATE) as load:
        await load.wait_sent(RATE // 4)
        for i in range(20):
            target = b if i % 2 == 0 else a
            results.append(await lb.route("web", *target.addr, proven_ready=True))
            await load.wait_sent(RATE // 20)
    report = load.report
    print(report.summary(), [round(r.duration_ms, 1) for r in results])
    assert report.lost == [], report.lost[:5]
    assert all(r.fast and not r.forced for r in results)
    assert report.by_body["a"] > 0 and report.by_body["b"] > 0
    assert lb.current_route("web") == a.addr
    status = await lb.server_status("web")
    assert [(s.addr, s.port, s.state.value) for s in status] == [(*a.addr, "UP")]


async def test_proven_ready_but_unreachable_falls_back_and_keeps_old_route(
        lb: LoadBalancer, backends: tuple[Backend, Backend]) -> None:
    a, _ = backends
    _, port = await lb.open_frontend("web")
    await lb.route("web", *a.addr)
    with pytest.raises(RerouteError):
        await lb.route("web", DEAD, 21000, up_timeout=0.5, proven_ready=True)
    assert lb.current_route("web") == a.addr
    assert await fetch(port) == (200, "a")
    assert [s.addr for s in await lb.server_status("web")] == [a.host]


async def test_proven_ready_copy_that_dies_later_is_taken_out_by_checks(
        lb: LoadBalancer, spare_backend: Backend) -> None:
    """Checks keep running after the fast path: a copy that dies goes DOWN."""
    c = spare_backend
    await lb.open_frontend("web")
    result = await lb.route("web", *c.addr, proven_ready=True)
    assert result.fast
    c.kill()

    async def down() -> bool:
        return [s.state.value for s in await lb.server_status("web")] == ["DOWN"]

    await wait_until(down, timeout=5, what="dead backend marked DOWN by its checks")
