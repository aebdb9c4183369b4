"""Real `roam agent`s on the testbed: one per cluster namespace, driven only through the admin
API (bearer token) and signals, as an operator would.

`Federation` starts the agents (the first seeds the joins), waits until every one is healthy
and sees all the others alive with load, and offers what scenarios need: API calls, a snapshot
for the checkers, pid sources for faults (an agent's process group, its Serf, its HAProxy, a
service), agent crash and restart, and log collection into a report folder.

Services and HAProxy run in their own sessions and outlive their agent on purpose (a restarted
agent adopts them); the testbed's teardown kills whatever is left in the namespaces.
"""
from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import shutil
import signal
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self

import aiohttp

from chaos import leftovers
from chaos.errors import ChaosError, FaultError
from chaos.faults import Fault, PidSource, resolve_pids
from chaos.netns import Testbed
from peer.runtime.waiting import WaitTimeout, wait_until

API_PORT = 7070
RUNNING_STATES = frozenset({"ready", "starting"})
SNAPSHOT_TIMEOUT = 3.0


class AgentError(ChaosError):
    """An agent would not start, exited, or did not join in time."""


class AdminAPIError(ChaosError):
    """An admin API call answered with an error status (or not at all)."""

    def __init__(self, cluster: str, method: str, path: str, status: int | None,
                 body: Any) -> None:
        self.cluster, self.method, self.path = cluster, method, path
        self.status, self.body = status, body
        super().__init__(f"{method} {path} at {cluster}: {status} {body}")


@dataclass
class Agent:
    """One cluster's agent: where it keeps its data and log, and its current process."""

    name: str
    addr: str
    data_dir: Path
    log_path: Path
    join: list[str]
    proc: asyncio.subprocess.Process | None = None
    starts: int = 0
    scheme: str = "http"  # https with per-cluster identity

    @property
    def api(self) -> str:
        return f"{self.scheme}://{self.addr}:{API_PORT}"

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.returncode is None


@dataclass
class Federation:
    """N agents on a testbed (see the module doc). Use as an async context manager."""

    tb: Testbed
    base: Path
    auto_migrate: bool = False
    tiers: Mapping[str, str] = field(default_factory=dict)
    log_level: str = "INFO"
    extra_args: Sequence[str] = ()  # more `roam agent` flags for every agent (e.g. --repair-after)
    identity: bool = False  # per-cluster identity: a CA in base/ca, a certificate per cluster, mTLS (peer.trust)
    # Without `identity`: the agents' automatic identity (their default: a CA founded by the first,
    # mTLS between peers, signed records) if True, else the federation secret only (--no-peer-tls).
    auto_identity: bool = False
    agents: dict[str, Agent] = field(default_factory=dict, init=False)
    token: str = field(default_factory=lambda: secrets.token_hex(16), init=False)
    _session: aiohttp.ClientSession | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        self.base.mkdir(parents=True, exist_ok=True)
        self.token_file = self.base / "token"
        self.secret_file = self.base / "secret"
        for path, value in ((self.token_file, self.token),
                            (self.secret_file, secrets.token_hex(24))):
            path.write_text(value)
            path.chmod(0o600)
        seed = self.tb.addr(self.tb.clusters[0])
        for i, name in enumerate(self.tb.clusters):
            self.agents[name] = Agent(
                name=name, addr=self.tb.addr(name), data_dir=self.base / name,
                log_path=self.base / f"{name}.log", join=[] if i == 0 else [seed],
                scheme="https" if self.identity else "http")
        if self.identity:
            from peer.trust import ca

            ca.init(self.base / "ca")
            for name, agent in self.agents.items():
                ca.issue(self.base / "ca", cluster=name, out=self.base / "tls" / name, ips=(agent.addr,))

    @property
    def clusters(self) -> list[str]:
        return list(self.agents)

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            ssl: Any = True
            if self.identity:  # the agents' certificates are the federation CA's
                import ssl as ssl_module

                ssl = ssl_module.create_default_context(cafile=str(self.base / "ca" / "ca.pem"))
            self._session = aiohttp.ClientSession(
                headers={"Authorization": f"Bearer {self.token}"}, connector=aiohttp.TCPConnector(ssl=ssl))
        return self._session

    async def __aenter__(self) -> Self:
        try:
            await self.start()
        except BaseException:
            await self.close()
            raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # -- lifecycle ---------------------------------------------------------------------

    async def start(self, *, timeout: float = 60.0) -> None:
        """Start every agent, wait until each is healthy and sees all others alive."""
        for name in self.agents:
            await self.start_agent(name)
        for name in self.agents:
            await self.wait_healthy(name, timeout=timeout)
        await self.wait_joined(timeout=timeout)

    async def start_agent(self, name: str) -> asyncio.subprocess.Process:
        agent = self.agents[name]
        if agent.running:
            raise AgentError(f"agent {name} is already running")
        args = ["--secret-file", str(self.secret_file), "--token-file", str(self.token_file),
                "--log-level", self.log_level]
        for j in agent.join:
            args += ["--join", j]
        if name in self.tiers:
            args += ["--tier", self.tiers[name]]
        args.append("--auto-migrate" if self.auto_migrate else "--no-auto-migrate")
        args += list(self.extra_args)
        if self.identity:
            tls = self.base / "tls" / name
            args += ["--ca-cert", str(tls / "ca.pem"), "--cert", str(tls / "cluster.pem"),
                     "--key", str(tls / "cluster.key")]
        elif not self.auto_identity:  # the shared secret only, not the agent's automatic identity either
            args.append("--no-peer-tls")
        agent.proc = await self.tb.start_agent(name, extra_args=args, data_dir=agent.data_dir,
                                               log_path=agent.log_path)
        agent.starts += 1
        return agent.proc

    async def wait_healthy(self, name: str, *, timeout: float = 30.0) -> None:
        agent = self.agents[name]

        async def healthy() -> bool:
            if agent.proc is not None and agent.proc.returncode is not None:
                raise AgentError(f"agent {name} exited {agent.proc.returncode}: "
                                 f"{tail(agent.log_path)}")
            body = await self.call(name, "GET", "/v1/health", timeout=1.0)
            return bool(body.get("status") == "ok")

        try:
            await wait_until(healthy, timeout=timeout, interval=0.1, what=f"agent {name} healthy")
        except WaitTimeout as exc:
            cause = exc.__cause__
            if isinstance(cause, AgentError):
                raise cause from exc
            raise AgentError(f"agent {name} not healthy within {timeout}s: "
                             f"{tail(agent.log_path)}") from exc

    async def wait_joined(self, *, timeout: float = 60.0,
                          observers: Iterable[str] | None = None) -> None:
        """Every observer (default: all) sees every cluster alive and with load."""
        names = sorted(self.agents)
        watchers = list(observers) if observers is not None else names

        async def joined() -> bool:
            for observer in watchers:
                members = await self.call(observer, "GET", "/v1/members", timeout=2.0)
                alive = sorted(m["name"] for m in members
                               if m.get("status") == "alive" and m.get("load"))
                if alive != names:
                    return False
            return True

        try:
            await wait_until(joined, timeout=timeout, interval=0.2, what="federation joined")
        except WaitTimeout as exc:
            raise AgentError(f"federation not joined within {timeout}s") from exc

    async def stop_agent(self, name: str, *, grace: float = 10.0) -> None:
        """SIGTERM the agent's group (a clean shutdown), SIGKILL after `grace`."""
        agent = self.agents[name]
        if agent.proc is not None and agent.proc.returncode is None:
            await self.tb.stop(agent.proc, grace=grace)

    async def kill_agent(self, name: str, sig: signal.Signals = signal.SIGKILL) -> None:
        """Signal the agent's process group (its Serf follows it by PDEATHSIG); reap it."""
        agent = self.agents[name]
        if agent.proc is None or agent.proc.returncode is not None:
            raise AgentError(f"agent {name} is not running")
        with contextlib.suppress(ProcessLookupError):
            os.killpg(agent.proc.pid, sig)
        if sig in (signal.SIGKILL, signal.SIGTERM):
            await asyncio.wait_for(agent.proc.wait(), 15)
            await wait_until(lambda: not self.serf_pids_sync(name), timeout=10,
                             what=f"{name}'s serf to follow its agent")

    async def restart_agent(self, name: str, *, timeout: float = 60.0) -> None:
        """Start a dead agent again on the same data dir (joining every other cluster) and
        wait until its API answers; gossip re-merges on its own time."""
        agent = self.agents[name]
        if agent.running:
            raise AgentError(f"agent {name} is still running")
        agent.join = [a.addr for n, a in self.agents.items() if n != name]
        await self.start_agent(name)
        await self.wait_healthy(name, timeout=timeout)

    async def close(self) -> None:
        """Stop every agent cleanly (services and HAProxy stay for the testbed's teardown)."""
        await asyncio.gather(*(self.stop_agent(n) for n in self.agents),
                             return_exceptions=True)
        if self._session is not None:
            await self._session.close()
            self._session = None

    # -- admin API ---------------------------------------------------------------------

    async def call(self, name: str, method: str, path: str, body: Any = None, *,
                   timeout: float = 30.0) -> Any:
        url = self.agents[name].api + path
        try:
            async with self.session.request(
                    method, url, json=body, timeout=aiohttp.ClientTimeout(total=timeout)) as r:
                data = await r.json(content_type=None)
                if r.status >= 400:
                    raise AdminAPIError(name, method, path, r.status, data)
                return data
        except (TimeoutError, aiohttp.ClientError, ValueError) as exc:
            raise AdminAPIError(name, method, path, None, f"{type(exc).__name__}: {exc}") \
                from exc

    async def create_service(self, home: str, descriptor: Mapping[str, Any]) -> dict[str, Any]:
        record: dict[str, Any] = await self.call(home, "POST", "/v1/services", dict(descriptor),
                                                 timeout=60.0)
        return record

    async def migrate(self, coordinator: str, service: str, target: str | None = None, *,
                      timeout: float = 60.0) -> dict[str, Any]:
        body = {} if target is None else {"target": target}
        result: dict[str, Any] = await self.call(
            coordinator, "POST", f"/v1/services/{service}/migrate", body, timeout=timeout)
        return result

    async def record(self, cluster: str, service: str) -> dict[str, Any] | None:
        try:
            rec: dict[str, Any] = await self.call(cluster, "GET", f"/v1/services/{service}",
                                                  timeout=5.0)
        except AdminAPIError as exc:
            if exc.status == 404:
                return None
            raise
        return rec

    async def migrations(self, cluster: str) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = await self.call(cluster, "GET", "/v1/migrations",
                                                      timeout=5.0)
        return found

    async def metrics_text(self, cluster: str, *, timeout: float = 5.0) -> str:
        """The agent's Prometheus text (`GET /metrics`)."""
        try:
            async with self.session.get(self.agents[cluster].api + "/metrics",
                                        timeout=aiohttp.ClientTimeout(total=timeout)) as r:
                text = await r.text()
                if r.status >= 400:
                    raise AdminAPIError(cluster, "GET", "/metrics", r.status, text)
                return text
        except (TimeoutError, aiohttp.ClientError) as exc:
            raise AdminAPIError(cluster, "GET", "/metrics", None, f"{type(exc).__name__}: {exc}") from exc

    async def snapshot(self, clusters: Iterable[str] | None = None, *,
                       timeout: float = SNAPSHOT_TIMEOUT) -> dict[str, dict[str, Any]]:
        """`{cluster: {"services", "members", "instances"}}` from every peer that answers."""
        names = list(clusters) if clusters is not None else self.clusters

        async def one(name: str) -> tuple[str, dict[str, Any] | None]:
            try:
                services, members, instances = await asyncio.gather(*(
                    self.call(name, "GET", p, timeout=timeout)
                    for p in ("/v1/services", "/v1/members", "/v1/instances")))
            except AdminAPIError:
                return name, None
            return name, {"services": services, "members": members, "instances": instances}

        views = await asyncio.gather(*(one(n) for n in names))
        return {name: view for name, view in views if view is not None}

    # -- pid sources for faults ---------------------------------------------------------

    def agent_pgid(self, name: str) -> Callable[[], list[int]]:
        """The agent's process group (resolved at fault time, so restarts are followed)."""
        def pgids() -> list[int]:
            proc = self.agents[name].proc
            return [proc.pid] if proc is not None and proc.returncode is None else []
        return pgids

    def serf_pids_sync(self, name: str) -> list[int]:
        marker = str(self.agents[name].data_dir)
        return [p for p in leftovers_pids() if _is_serf_of(p, marker)]

    def serf_pids(self, name: str) -> Callable[[], list[int]]:
        return lambda: self.serf_pids_sync(name)

    def haproxy_pgid(self, name: str) -> Callable[[], list[int]]:
        """HAProxy's pid, also its process group (it runs alone in its own session)."""
        path = self.agents[name].data_dir / "lb" / "haproxy.pid"

        def pgid() -> list[int]:
            try:
                pid = int(path.read_text().split()[0])
            except (OSError, ValueError, IndexError):
                return []
            info = leftovers.read_proc(pid)
            return [info.pgid] if info is not None and info.state != "Z" else []
        return pgid

    def service_pgids(self, service: str,
                      clusters: Iterable[str] | None = None) -> Callable[[], list[int]]:
        """Process groups of every copy of `service` on the given clusters (default all),
        from the process driver's instance.json (readable even when the agent is down)."""
        names = list(clusters) if clusters is not None else self.clusters

        def pgids() -> list[int]:
            out = []
            for name in names:
                path = self.agents[name].data_dir / "services" / service / "instance.json"
                try:
                    pgid = int(json.loads(path.read_text())["pgid"])
                except (OSError, ValueError, KeyError, TypeError):
                    continue
                if leftovers.live_in_groups([pgid]):
                    out.append(pgid)
            return out
        return pgids

    def pid_targets(self, *, services: Sequence[str] = ()) -> dict[str, PidSource]:
        """Named pid sources for a random schedule (`c/serf`, `c/haproxy`, `svc/NAME`), each
        listing every process of the target, so a per-pid signal reaches all of them.
        Agents are crashed through `AgentCrash` instead, which restarts them."""
        targets: dict[str, PidSource] = {}
        for name in self.agents:
            targets[f"{name}/serf"] = self.serf_pids(name)
            targets[f"{name}/haproxy"] = _members_of(self.haproxy_pgid(name))
        for service in services:
            targets[f"svc/{service}"] = _members_of(self.service_pgids(service))
        return targets

    # -- logs --------------------------------------------------------------------------

    def collect_logs(self, dest: Path) -> list[Path]:
        """Copy every agent, Serf, HAProxy and service log into `dest`/<cluster>/."""
        copied = []
        for name, agent in self.agents.items():
            out = dest / name
            sources = [agent.log_path, agent.data_dir / "serf" / "serf.log",
                       agent.data_dir / "lb" / "haproxy.log",
                       *sorted((agent.data_dir / "services").glob("*/service.log"))]
            for src in sources:
                if src.is_file():
                    rel = src.relative_to(agent.data_dir) if src.is_relative_to(
                        agent.data_dir) else Path(src.name)
                    target = out / str(rel).replace("/", "__")
                    target.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copyfile(src, target)
                    copied.append(target)
        return copied


@dataclass
class AgentCrash(Fault):
    """SIGKILL a cluster's agent (its Serf follows); heal restarts it on the same data dir.
    Its services and HAProxy keep running, as after a real crash of the daemon alone."""

    fed: Federation
    cluster: str

    async def apply(self, tb: Testbed) -> None:
        try:
            await self.fed.kill_agent(self.cluster)
        except (AgentError, WaitTimeout) as exc:
            raise FaultError(f"{self.describe()}: {exc}") from exc

    async def heal(self, tb: Testbed) -> None:
        if not self.fed.agents[self.cluster].running:
            try:
                await self.fed.restart_agent(self.cluster)
            except AgentError as exc:
                raise FaultError(f"restarting {self.cluster}: {exc}") from exc

    def describe(self) -> str:
        return f"crash agent {self.cluster}"


@dataclass
class AgentRestart(Fault):
    """SIGTERM a cluster's agent and start it again on the same data dir at once: what an
    operator's `systemctl restart` or an upgrade does. HAProxy and the services keep serving
    throughout (issue 12): a request lost here is a bug, not a fault's cost. Applying it is
    the whole restart; healing is a no-op unless the start failed."""

    fed: Federation
    cluster: str

    async def apply(self, tb: Testbed) -> None:
        try:
            await self.fed.kill_agent(self.cluster, signal.SIGTERM)
            await self.fed.restart_agent(self.cluster)
        except (AgentError, WaitTimeout, TimeoutError) as exc:
            raise FaultError(f"{self.describe()}: {exc}") from exc

    async def heal(self, tb: Testbed) -> None:
        await AgentCrash(self.fed, self.cluster).heal(tb)

    def describe(self) -> str:
        return f"restart agent {self.cluster} (SIGTERM)"


def _members_of(groups: PidSource) -> PidSource:
    async def pids() -> list[int]:
        pgids = await resolve_pids(groups)
        return [p.pid for p in leftovers.live_in_groups(pgids)]
    return pids


def leftovers_pids() -> list[int]:
    return [p.pid for p in leftovers.all_procs() if p.state != "Z"]


def _is_serf_of(pid: int, marker: str) -> bool:
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return bool(argv) and argv[0].endswith(b"serf") and any(names_dir(a, marker) for a in argv)


def names_dir(arg: bytes, data_dir: str) -> bool:
    """Whether a command-line argument names a path inside `data_dir`.

    The directory must end where a path component ends: cluster k1's data directory is a
    prefix of k10's, and a plain substring test gave k1 the Serfs of k1 and k10-k19 (in
    bench/scale.py at 50 agents, one "Serf" of 137 MB: eleven of them summed)."""
    d = data_dir.rstrip("/").encode()
    at = arg.find(d)
    while at >= 0:
        end = at + len(d)
        if end == len(arg) or arg[end:end + 1] == b"/":
            return True
        at = arg.find(d, at + 1)
    return False


def tail(path: Path, size: int = 2000) -> str:
    try:
        return path.read_text(errors="replace")[-size:]
    except OSError:
        return ""


__all__ = [
    "RUNNING_STATES",
    "AdminAPIError",
    "Agent",
    "AgentCrash",
    "AgentError",
    "Federation",
    "running_by_cluster",
]


def running_by_cluster(snapshot: Mapping[str, Mapping[str, Any]]) -> dict[str, list[str]]:
    """`{cluster: [service names the driver runs there]}` for `checkers.exactly_one_copy`."""
    return {cluster: sorted(i["name"] for i in view.get("instances", [])
                            if i.get("state") in RUNNING_STATES)
            for cluster, view in snapshot.items()}
