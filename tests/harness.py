"""Real `roam agent` processes on loopback addresses, for integration tests.

Each agent is a separate process group (its Serf child included), so a test can SIGKILL a
whole cluster the way a crash would.
"""
from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from chaos.agent_processes import kill_left_behind
from peer.runtime.waiting import wait_until

TOKEN = "test-admin-token-0123456789abcdef"
SECRET = "test-federation-secret-0123456789abcdef"


@dataclass
class AgentProc:
    name: str
    addr: str
    data_dir: Path
    args: list[str]
    log_path: Path
    proc: subprocess.Popen[bytes] | None = None
    api_port: int = 7070
    netns: str | None = None  # run inside this network namespace (chaos testbed)
    env: dict[str, str] = field(default_factory=dict)

    @property
    def api(self) -> str:
        return f"http://{self.addr}:{self.api_port}"

    def start(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "ab")
        prefix = ["ip", "netns", "exec", self.netns] if self.netns else []
        self.proc = subprocess.Popen(
            [*prefix, sys.executable, "-m", "peer.cli", "agent", *self.args],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            env={**os.environ, "ROAM_LOG": os.environ.get("ROAM_LOG", "INFO"), **self.env},
        )
        log.close()

    def kill(self, sig: int = signal.SIGKILL) -> None:
        """Signal the agent's whole process group (agent + its Serf child)."""
        if self.proc is not None and self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, sig)
            except ProcessLookupError:
                pass
            if sig in (signal.SIGKILL, signal.SIGTERM):
                self.proc.wait(timeout=15)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.kill()

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-4000:]
        except OSError:
            return ""


@dataclass
class Federation:
    base: Path
    agents: dict[str, AgentProc] = field(default_factory=dict)
    session: aiohttp.ClientSession | None = None

    def add(self, name: str, addr: str, *, join: list[str] | None = None, extra: list[str] | None = None,
            netns: str | None = None) -> AgentProc:
        data = self.base / name
        secret = self.base / "secret"
        token = self.base / "token"
        for path, value in ((secret, SECRET), (token, TOKEN)):
            if not path.exists():
                path.write_text(value)
                path.chmod(0o600)
        args = ["--name", name, "--addr", addr, "--data-dir", str(data), "--secret-file", str(secret),
                "--token-file", str(token)]
        for j in join or []:
            args += ["--join", j]
        # Tests drive migrations explicitly; policy triggers have tests of their own.
        args += extra if extra is not None else ["--no-auto-migrate"]
        agent = AgentProc(name=name, addr=addr, data_dir=data, args=args, log_path=self.base / f"{name}.log",
                          netns=netns)
        self.agents[name] = agent
        return agent

    async def get(self, name: str, path: str) -> Any:
        return await self.call(name, "GET", path)

    async def call(self, name: str, method: str, path: str, body: Any = None, *, expect: int | None = None) -> Any:
        assert self.session is not None
        agent = self.agents[name]
        async with self.session.request(
            method, agent.api + path, json=body, headers={"Authorization": f"Bearer {TOKEN}"},
            timeout=aiohttp.ClientTimeout(total=60),
        ) as resp:
            data = await resp.json(content_type=None)
            if expect is not None:
                assert resp.status == expect, (resp.status, data)
            elif resp.status >= 400:
                raise AssertionError(f"{method} {path} at {name}: {resp.status} {data}")
            return data

    async def metrics(self, name: str) -> str:
        """The agent's Prometheus text (`GET /metrics`)."""
        assert self.session is not None
        async with self.session.get(self.agents[name].api + "/metrics", headers={"Authorization": f"Bearer {TOKEN}"},
                                    timeout=aiohttp.ClientTimeout(total=60)) as resp:
            assert resp.status == 200, resp.status
            return await resp.text()

    async def wait_healthy(self, name: str, timeout: float = 20.0) -> None:
        agent = self.agents[name]

        async def healthy() -> bool:
            if agent.proc is not None and agent.proc.poll() is not None:
                raise AssertionError(f"agent {name} exited {agent.proc.returncode}:\n{agent.log_text()}")
            assert self.session is not None
            async with self.session.get(agent.api + "/v1/health", timeout=aiohttp.ClientTimeout(total=1)) as r:
                return r.status == 200

        try:
            await wait_until(healthy, timeout=timeout, what=f"{name} healthy")
        except Exception:
            print(agent.log_text())
            raise

    async def wait_formed(self, names: Iterable[str], *, timeout: float = 30.0) -> None:
        """Until every one of `names` sees all of them alive with their load: each cluster's own
        view, since a call at any of them may need the others (a forward to the steward)."""
        clusters = list(names)

        async def formed() -> bool:
            for observer in clusters:
                members = await self.get(observer, "/v1/members")
                if sum(1 for m in members if m["status"] == "alive" and m["load"]) != len(clusters):
                    return False
            return True

        await wait_until(formed, timeout=timeout, what="federation formed, as every cluster sees it")

    async def member_status(self, observer: str, member: str) -> str | None:
        members = await self.get(observer, "/v1/members")
        return next((m["status"] for m in members if m["name"] == member), None)

    def stop_all(self) -> None:
        for agent in self.agents.values():
            agent.stop()
        for agent in self.agents.values():
            agent.kill()
            kill_left_behind(agent.data_dir)  # services and HAProxy outlive agents by design


@asynccontextmanager
async def federation(base: Path) -> AsyncIterator[Federation]:
    fed = Federation(base=base)
    fed.session = aiohttp.ClientSession()
    try:
        yield fed
    finally:
        await fed.session.close()
        fed.stop_all()


def dump_logs(fed: Federation) -> str:
    return "\n".join(f"--- {n}\n{a.log_text()}" for n, a in fed.agents.items())


def json_dumps(obj: Any) -> str:
    return json.dumps(obj, indent=1, sort_keys=True)


async def gather(*aws: Any) -> list[Any]:
    return list(await asyncio.gather(*aws))
