"""One real agent shared by the admin-API, peer-API and fuzzing tests of this package.

Its PATH holds only `serf` and `haproxy`, so a fuzzed descriptor whose command names some
program on the host (`yes`, `rm`...) fails to start instead of running it; service processes
inherit that PATH. Addresses: 127.0.6.1-60 belong to these tests.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from chaos.agent_processes import kill_left_behind
from peer.runtime.waiting import wait_until_sync
from tests.harness import TOKEN, AgentProc, Federation
from tests.security.client import Client

ADDR = "127.0.6.1"
API = f"http://{ADDR}:7070"
CLASSIFIER = [sys.executable, "-m", "peer.samples.classifier", "--host", "{host}", "--port", "{port}"]
VICTIM = {"name": "victim-svc", "port": 8080, "health": {"path": "/healthz"}, "command": CLASSIFIER}


def sandbox_path(base: Path) -> str:
    """A PATH directory with nothing but the two binaries the agent itself runs."""
    bindir = base / "bin"
    bindir.mkdir(exist_ok=True)
    for name in ("serf", "haproxy"):
        found = shutil.which(name)
        assert found is not None, name
        link = bindir / name
        if not link.exists():
            link.symlink_to(found)
    return str(bindir)


def start_and_wait(agent: AgentProc, *, timeout: float = 30.0) -> None:
    agent.start()

    def healthy() -> bool:
        if agent.proc is not None and agent.proc.poll() is not None:
            raise AssertionError(f"{agent.name} exited:\n{agent.log_text()}")
        try:
            with urllib.request.urlopen(agent.api + "/v1/health", timeout=1) as resp:
                return bool(resp.status == 200)
        except OSError:
            return False

    try:
        wait_until_sync(healthy, timeout=timeout, interval=0.1, what=f"{agent.name} healthy")
    except Exception:
        print(agent.log_text())
        raise


def stop_all(fed: Federation) -> None:
    """SIGTERM every agent at once, then wait (Federation.stop_all does them one by one)."""
    running = [a for a in fed.agents.values() if a.proc is not None and a.proc.poll() is None]
    for agent in running:
        assert agent.proc is not None
        agent.proc.send_signal(signal.SIGTERM)
    for agent in running:
        assert agent.proc is not None
        try:
            agent.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            agent.kill()
    for agent in fed.agents.values():
        kill_left_behind(agent.data_dir)  # SIGTERM keeps HAProxy and services serving, by design


def admin_call(agent: AgentProc, method: str, path: str, body: object = None) -> tuple[int, Any]:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(agent.api + path, data=data, method=method, headers={
        "Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=60) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        if exc.code == 429:  # honour the agent's back-off, then try again
            time.sleep(int(exc.headers.get("Retry-After", "1")))
            return admin_call(agent, method, path, body)
        return exc.code, json.loads(exc.read())


def kill_groups(pids: list[int]) -> None:
    """Service processes outlive a stopped agent (by design, for adoption): end ours."""
    for pid in pids:
        try:
            os.killpg(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


@pytest.fixture(scope="package")
def lone_agent(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AgentProc]:
    """sec1 on 127.0.6.1, running one service (`victim-svc`) that hostile requests must not touch.
    With --no-peer-tls: what is under test here is the peer API's federation-secret layer and its
    handlers, reached on the admin port (the mTLS listener in front of them by default:
    tests/trust/test_auto_identity.py)."""
    base = tmp_path_factory.mktemp("security")
    fed = Federation(base=base)
    agent = fed.add("sec1", ADDR, extra=["--no-auto-migrate", "--no-peer-tls"])
    agent.env = {"PATH": sandbox_path(base)}
    pids: list[int] = []
    try:
        start_and_wait(agent)
        status, body = admin_call(agent, "POST", "/v1/services", VICTIM)
        assert status == 201, body
        yield agent
        status, instances = admin_call(agent, "GET", "/v1/instances")
        pids = [i["pid"] for i in instances if i.get("pid")] if status == 200 else []
        status, body = admin_call(agent, "DELETE", f"/v1/services/{VICTIM['name']}")
        assert status == 200, body
    finally:
        stop_all(fed)
        kill_groups(pids)


@pytest.fixture
async def client(lone_agent: AgentProc) -> AsyncIterator[Client]:
    c = Client(lone_agent.api)
    try:
        yield c
    finally:
        await c.close()
