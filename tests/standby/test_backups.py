"""HAProxy backup servers for hot standbys (lb.balancer.set_backups): the command built, the
fake's twin, and real HAProxy on loopback 127.0.21.10-30 (this work's range): the backup is
checked, takes over with no request lost when the primary dies, survives reroutes, restarts
and promotion (make-before-break), and goes when the standby does."""
from __future__ import annotations

import itertools
import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiohttp
import pytest

from lb import LoadBalancer, runtime
from lb.balancer import is_backup_server
from lb.fake import FakeLoadBalancer
from lb.runtime import CheckSettings
from lb.statefile import LBState, Route, Slot
from peer.runtime.waiting import wait_until
from tests.lb.backend import Backend
from tests.lb.conftest import assert_no_haproxy
from tests.lb.openloop import OpenLoop

FRONT = "127.0.21.20"
_port_blocks = itertools.count(24000 + (os.getpid() % 50) * 100, 10)


# --- sans I/O and the fake -------------------------------------------------------------------

def test_add_server_backup_command() -> None:
    cmd = runtime.add_server("be_30000", "b1", "127.0.0.3", 31000, check=CheckSettings(), backup=True)
    assert cmd.text == ("add server be_30000/b1 127.0.0.3:31000 backup check inter 250 fastinter 20 downinter 20 "
                        "fall 2 rise 1 observe layer4 error-limit 1 on-error sudden-death")
    assert "backup" not in runtime.add_server("be_30000", "s1", "127.0.0.3", 31000).text
    fast = runtime.add_server("be_30000", "s2", "127.0.0.1", 31000, check=CheckSettings(mark_down_on_error=True))
    assert fast.text.endswith("rise 1 observe layer4 error-limit 1 on-error mark-down")


def test_backup_names_are_apart_from_route_names() -> None:
    assert is_backup_server("b1") and is_backup_server("b12")
    assert not is_backup_server("s1") and not is_backup_server("b") and not is_backup_server("bx1")


def test_slot_backups_survive_the_state_file_and_old_files_read() -> None:
    state = LBState({"web": Slot(30000, Route("127.0.0.1", 1, "s1"), [Route("127.0.0.3", 2, "b1")])})
    assert LBState.from_json(state.to_json()) == state
    old = b'{"version": 1, "services": {"web": {"port": 30000, "route": null}}}'
    assert LBState.from_json(old).slots["web"].backups == []
    fast = LBState({"web": Slot(30000, Route("127.0.0.1", 1, "s2", True))})
    assert LBState.from_json(fast.to_json()) == fast


async def test_fake_keeps_backups_beside_the_route() -> None:
    lb = FakeLoadBalancer()
    await lb.open_frontend("web")
    await lb.route("web", "127.0.0.1", 1)
    await lb.set_backups("web", [("127.0.0.3", 2), ("127.0.0.3", 2)])
    assert lb.backups("web") == [("127.0.0.3", 2)]
    statuses = await lb.server_status("web")
    assert [(s.name, s.backup) for s in statuses] == [("s1", False), ("b1", True)]
    await lb.close_frontend("web")
    assert lb.backups("web") == []


# --- real HAProxy ----------------------------------------------------------------------------

@pytest.fixture
def backends() -> Iterator[tuple[Backend, Backend, Backend]]:
    started: list[Backend] = []
    try:
        for i, name in enumerate("pqr"):
            started.append(Backend(f"127.0.21.{10 + i}", name))
        yield started[0], started[1], started[2]
    finally:
        for b in started:
            b.kill()


@pytest.fixture
async def lb(tmp_path: Path) -> AsyncIterator[LoadBalancer]:
    start = next(_port_blocks)
    balancer = LoadBalancer(data_dir=tmp_path / "lb", bind_addr=FRONT, ports=range(start, start + 4), max_slots=4)
    await balancer.start()
    try:
        yield balancer
    finally:
        await balancer.stop()
        assert_no_haproxy(tmp_path / "lb")


async def fetch(port: int) -> tuple[int, str]:
    async with aiohttp.ClientSession() as s, s.get(f"http://{FRONT}:{port}/",
                                                   timeout=aiohttp.ClientTimeout(total=3)) as r:
        return r.status, await r.text()


async def backup_rows(lb: LoadBalancer, service: str) -> list[tuple[str, int, str]]:
    return sorted((s.addr, s.port, s.state.value) for s in await lb.server_status(service) if s.backup)


async def backups_are(lb: LoadBalancer, expected: list[tuple[str, int, str]]) -> None:
    async def match() -> bool:
        return await backup_rows(lb, "web") == sorted(expected)

    await wait_until(match, timeout=5, what=f"backup servers {expected}")


@pytest.mark.integration
async def test_backup_is_checked_and_serves_only_when_the_primary_is_down(
        lb: LoadBalancer, backends: tuple[Backend, Backend, Backend]) -> None:
    p, q, _ = backends
    _, port = await lb.open_frontend("web")
    await lb.route("web", *p.addr, proven_ready=True)
    await lb.set_backups("web", [q.addr])
    await backups_are(lb, [(*q.addr, "UP")])
    assert lb.backups("web") == [q.addr]
    # With a backup, the route's server was replaced by one that marks itself down at its
    # first failed connection (same address, make-before-break).
    assert lb.current_route("web") == p.addr and lb._state.slots["web"].route.fast_down  # type: ignore[union-attr]
    for _ in range(10):  # the primary takes everything while it is UP
        assert await fetch(port) == (200, "p")
    # A reroute of the primary leaves the backup alone.
    await lb.route("web", *p.addr)
    assert [(s.addr, s.port) for s in await lb.server_status("web") if s.backup] == [q.addr]
    # The primary dies under open-loop load: the backup serves, nothing is lost.
    async with OpenLoop(f"http://{FRONT}:{port}/", rate=200, timeout=5.0) as load:
        await load.wait_sent(40)
        p.kill()
        await load.wait_sent(200)
    assert load.report.lost == [], load.report.summary()
    assert load.report.by_body["q"] > 0
    slow = [s for s in load.report.samples if s.latency_ms > 500]
    print(f"primary killed at 200 req/s: {len(slow)} requests slower than 500 ms "
          f"(max {max(s.latency_ms for s in load.report.samples):.0f} ms)")


@pytest.mark.integration
async def test_promotion_is_make_before_break_and_backups_converge(
        tmp_path: Path, lb: LoadBalancer, backends: tuple[Backend, Backend, Backend]) -> None:
    p, q, r = backends
    _, port = await lb.open_frontend("web")
    await lb.route("web", *p.addr, proven_ready=True)
    await lb.set_backups("web", [q.addr, r.addr])
    await backups_are(lb, [(*q.addr, "UP"), (*r.addr, "UP")])
    async with OpenLoop(f"http://{FRONT}:{port}/", rate=200, timeout=5.0) as load:
        await load.wait_sent(40)
        # Promotion as the fail-safe does it: route to the standby first, then drop its backup.
        await lb.route("web", *q.addr, proven_ready=True)
        await lb.set_backups("web", [r.addr])
        await load.wait_sent(100)
    assert load.report.lost == [], load.report.summary()
    assert lb.current_route("web") == q.addr and lb.backups("web") == [r.addr]
    assert await fetch(port) == (200, "q")
    # Idempotent, and an HAProxy restart brings the backups back from lb-slots.json.
    await lb.set_backups("web", [r.addr])
    await lb.stop()  # HAProxy too: the next one starts with no dynamic server
    again = LoadBalancer(data_dir=tmp_path / "lb", bind_addr=FRONT, ports=lb.config.ports, max_slots=4)
    await again.start()
    try:
        assert again.backups("web") == [r.addr]
        await backups_are(again, [(*r.addr, "UP")])
        await again.set_backups("web", [])
        assert await backup_rows(again, "web") == [] and again.backups("web") == []
        assert not again._state.slots["web"].route.fast_down  # type: ignore[union-attr]
        assert await fetch(port) == (200, "q")
    finally:
        await again.stop()


