"""Issue 12 findings 2, 6 and 7 on real agents: operations an operator does every
day must not lose a request, a secret or a service."""
from __future__ import annotations

import asyncio
import os
import stat
import subprocess
import sys
import time
from pathlib import Path

import aiohttp
import pytest

from peer.runtime.datadir import make_private
from peer.runtime.waiting import wait_until
from tests.harness import Federation, dump_logs, federation
from tests.lb.openloop import OpenLoop

pytestmark = pytest.mark.integration

A, B = "127.0.4.11", "127.0.4.12"
SERVICE = {
    "name": "steady", "port": 8080, "cpu": 0.25, "memory": "64Mi", "health": {"path": "/healthz"},
    "command": [sys.executable, "-m", "peer.samples.classifier", "--host", "{host}", "--port", "{port}"],
}


async def _status_seen(fed: Federation, observer: str, member: str, seen: set[str], stop: asyncio.Event) -> None:
    while not stop.is_set():
        try:
            status = await fed.member_status(observer, member)
        except (aiohttp.ClientError, asyncio.TimeoutError, AssertionError):
            status = None
        if status:
            seen.add(status)
        await asyncio.sleep(0.1)


async def test_sigterm_restart_keeps_haproxy_and_services_serving(tmp_path: Path) -> None:
    """Finding 2: SIGTERM stops the agent only; 0 failed requests across stop + start, the same
    service process re-adopted, and Serf is not told to leave (the peer never sees `left`)."""
    async with federation(tmp_path) as fed:
        try:
            agent = fed.add("c1", A)
            agent.start()
            fed.add("c2", B, join=[A]).start()
            await fed.wait_healthy("c1")
            await fed.wait_healthy("c2")
            await wait_until(lambda: _alive(fed, "c2", "c1"), timeout=15, what="c2 sees c1 alive")
            created = await fed.call("c1", "POST", "/v1/services", {**SERVICE, "entries": 1}, expect=201)
            endpoint = created["endpoint"]
            pid = (await fed.get("c1", "/v1/instances"))[0]["pid"]
            assert fed.session is not None
            stop, seen = asyncio.Event(), set[str]()
            watch = asyncio.create_task(_status_seen(fed, "c2", "c1", seen, stop))
            async with OpenLoop(f"http://{endpoint}/", rate=200) as load:  # open loop: stalls count
                await load.wait_sent(100)
                t0 = time.monotonic()
                await asyncio.to_thread(agent.stop)  # SIGTERM, waits for the exit (load keeps going)
                stopped = time.monotonic() - t0
                agent.start()
                await fed.wait_healthy("c1")
                gap = time.monotonic() - t0
                await load.wait_sent(200)
            stop.set()
            await watch
            print(f"SIGTERM restart at 200 req/s: {load.report.summary()}; agent stop {stopped:.2f}s, "
                  f"API back after {gap:.2f}s")
            assert load.report.lost == [], load.report.lost[:5]
            assert [i["pid"] for i in await fed.get("c1", "/v1/instances")] == [pid], "re-adopted"
            assert "left" not in seen, seen
            assert "haproxy and services keep serving" in agent.log_path.read_text()
        except BaseException:
            print(dump_logs(fed))
            raise


async def _alive(fed: Federation, observer: str, member: str) -> bool:
    return await fed.member_status(observer, member) == "alive"


def test_make_private_tightens_a_data_dir_that_existed_open(tmp_path: Path) -> None:
    """Finding 6: a data dir made 0755 beforehand, with 0644 files, ends 0700/0600."""
    data = tmp_path / "data"
    (data / "services" / "x").mkdir(parents=True)
    for path in (data, data / "services", data / "services" / "x"):
        path.chmod(0o755)
    for path in (data / "records.sqlite3", data / "services" / "x" / "log"):
        path.write_text("x")
        path.chmod(0o644)
    old = os.umask(0o022)
    try:
        assert make_private(data) == 5
        assert make_private(data) == 0  # idempotent
        new_file = data / "later"
        new_file.write_text("y")  # what the agent creates later is private through its umask
    finally:
        os.umask(old)
    for root, dirs, files in os.walk(data):
        for name in dirs:
            assert stat.S_IMODE(Path(root, name).stat().st_mode) == 0o700, name
        for name in files:
            assert stat.S_IMODE(Path(root, name).stat().st_mode) == 0o600, name
    assert stat.S_IMODE(data.stat().st_mode) == 0o700


async def test_agent_start_makes_an_open_data_dir_private(tmp_path: Path) -> None:
    """Finding 6 on a real agent: the records store and service logs end 0600 under a 0700 dir."""
    async with federation(tmp_path) as fed:
        agent = fed.add("c1", A)
        agent.data_dir.mkdir(mode=0o755)
        agent.data_dir.chmod(0o755)
        agent.start()
        await fed.wait_healthy("c1")
        await fed.call("c1", "POST", "/v1/services", {**SERVICE, "entries": 1}, expect=201)
        assert stat.S_IMODE(agent.data_dir.stat().st_mode) == 0o700
        loose = [str(p) for p in agent.data_dir.rglob("*")
                 if p.is_file() and not p.is_symlink() and stat.S_IMODE(p.stat().st_mode) & 0o077
                 and not p.is_socket()]
        assert loose == [], loose


async def test_second_agent_on_the_same_addr_refuses_with_one_line(tmp_path: Path) -> None:
    """Finding 7: a second agent on a used --addr exits non-zero with one line, touching nothing."""
    async with federation(tmp_path) as fed:
        fed.add("c1", A).start()
        await fed.wait_healthy("c1")
        created = await fed.call("c1", "POST", "/v1/services", {**SERVICE, "entries": 1}, expect=201)
        second = tmp_path / "c9"
        proc = subprocess.run(
            [sys.executable, "-m", "peer.cli", "agent", "--name", "c9", "--addr", A, "--api-port", "7171",
             "--gossip-port", "7947", "--data-dir", str(second), "--secret-file", str(tmp_path / "secret"),
             "--token-file", str(tmp_path / "token")],
            capture_output=True, text=True, timeout=30)
        assert proc.returncode != 0
        lines = [line for line in proc.stderr.splitlines() if line.strip()]
        assert len(lines) == 1 and "another agent" in lines[0] and A in lines[0], proc.stderr
        assert not (second / "lb").exists(), "the refused agent must not start HAProxy"
        assert fed.session is not None
        for _ in range(20):
            async with fed.session.get(f"http://{created['endpoint']}/") as r:
                assert r.status == 200
