"""Real HAProxy and real backend processes on loopback 127.0.2.1-50 (lb's assigned range).

Frontends bind 127.0.2.1; backends listen on 127.0.2.10+ ; 127.0.2.49 never has a listener.
"""
from __future__ import annotations

import itertools
import os
import signal
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiohttp
import pytest

from lb import LoadBalancer
from lb.process import pid_alive
from tests.lb.backend import BACKEND_PORT, Backend

FRONT = "127.0.2.1"
DEAD = "127.0.2.49"
_port_blocks = itertools.count(22000 + (os.getpid() % 50) * 200, 10)


@pytest.fixture(scope="module")
def backends() -> Iterator[tuple[Backend, Backend]]:
    """Two long-lived backends `a` and `b` shared by a test module."""
    started: list[Backend] = []
    try:
        started.append(Backend("127.0.2.10", "a"))
        started.append(Backend("127.0.2.11", "b"))
        yield started[0], started[1]
    finally:
        for b in started:
            b.stop()


@pytest.fixture
def spare_backend() -> Iterator[Backend]:
    """A backend of its own, for tests that kill it."""
    b = Backend("127.0.2.12", "c")
    try:
        yield b
    finally:
        b.kill()


def make_lb(data_dir: Path, ports: range, **kw: object) -> LoadBalancer:
    return LoadBalancer(data_dir=data_dir, bind_addr=FRONT, ports=ports, **kw)  # type: ignore[arg-type]


@pytest.fixture
def ports() -> range:
    start = next(_port_blocks)
    return range(start, start + 10)


@pytest.fixture
async def lb(tmp_path: Path, ports: range) -> AsyncIterator[LoadBalancer]:
    balancer = make_lb(tmp_path / "lb", ports, max_slots=4)
    await balancer.start()
    try:
        yield balancer
    finally:
        await balancer.stop()
        assert_no_haproxy(tmp_path / "lb")


def assert_no_haproxy(data_dir: Path) -> None:
    """Nothing left behind: no live process started with this data dir's config."""
    cfg = str(data_dir / "haproxy.cfg").encode()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if cfg in argv and pid_alive(int(entry.name)):
            os.kill(int(entry.name), signal.SIGKILL)
            raise AssertionError(f"haproxy {entry.name} for {data_dir} left running")


async def fetch(port: int, path: str = "/") -> tuple[int, str]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as s:
        async with s.get(f"http://{FRONT}:{port}{path}") as resp:
            return resp.status, await resp.text()
