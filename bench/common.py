"""What the benchmarks that run real agents share: figures with their spread, and a local
federation on loopback addresses that is torn down completely, orphans included.

Services (and a SIGKILLed agent's HAProxy) run in their own sessions so that a restarted agent
can adopt them; nothing reaps them when an agent dies, so `LocalFederation.close` sweeps every
process whose command line names this run's data directory or one of its addresses.

Import it as `bench.common` once the repository (not `bench/`) is on sys.path: with `bench/`
first, as when a script runs, `bench/placement.py` would shadow the `placement` package.
"""
from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from chaos.agent_processes import run_services_as_root_if_needed
from peer.runtime.waiting import wait_until
from tests.harness import TOKEN, AgentProc, Federation, dump_logs

if (_AS_ROOT := run_services_as_root_if_needed()) is not None:  # the benches deploy this checkout's samples
    print(f"bench: services run as root ($ROAM_RUN_AS=root): {_AS_ROOT}", file=sys.stderr)

REPO = Path(__file__).resolve().parents[1]

CLASSIFIER = {
    "name": "classifier", "port": 8080, "cpu": 0.5, "memory": "128Mi", "health": {"path": "/healthz"},
    "command": [sys.executable, "-m", "peer.samples.classifier", "--host", "{host}", "--port", "{port}"],
}


def pct(values: Sequence[float], q: float) -> float:
    """Nearest-rank quantile (q in 0..1) of a non-empty sample."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


@dataclass(frozen=True)
class Spread:
    """A sample summarised: median, p95 and the extremes, so noise shows next to the middle."""

    n: int
    median: float
    p95: float
    lo: float
    hi: float

    @classmethod
    def of(cls, values: Sequence[float]) -> Spread:
        if not values:
            raise ValueError("no samples")
        return cls(len(values), statistics.median(values), pct(values, 0.95), min(values), max(values))


def machine_line() -> str:
    load1, load5, _ = os.getloadavg()
    return f"{os.cpu_count()} CPUs, load average {load1:.2f} (1 min) {load5:.2f} (5 min)"


async def get_json(session: aiohttp.ClientSession, url: str, *, token: str | None = None,
                   timeout: float = 2.0) -> Any:
    """One GET with a short deadline: a poll that hangs would hide the moment it measures."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with session.get(url, headers=headers, timeout=aiohttp.ClientTimeout(total=timeout)) as resp:
        resp.raise_for_status()
        return await resp.json(content_type=None)


@dataclass
class LocalFederation:
    """A `tests.harness.Federation` of N agents (the first one is the seed) plus clean-up."""

    base: Path
    addrs: dict[str, str]
    extra: list[str] = field(default_factory=list)
    fed: Federation = field(init=False)

    def __post_init__(self) -> None:
        self.fed = Federation(base=self.base)

    @property
    def names(self) -> list[str]:
        return list(self.addrs)

    async def start(self, *, timeout: float = 90.0) -> None:
        self.fed.session = aiohttp.ClientSession()
        seed = self.names[0]
        for name, addr in self.addrs.items():
            join = [] if name == seed else [self.addrs[seed]]
            self.fed.add(name, addr, join=join, extra=self.extra).start()
        for name in self.names:
            await self.fed.wait_healthy(name, timeout=timeout)
        try:
            await self.wait_everyone_sees_all_alive(timeout=timeout)
        except Exception:
            print(dump_logs(self.fed))
            raise

    async def members(self, observer: str, *, timeout: float = 2.0) -> list[dict[str, Any]]:
        assert self.fed.session is not None
        url = self.fed.agents[observer].api + "/v1/members"
        members: list[dict[str, Any]] = await get_json(self.fed.session, url, token=TOKEN, timeout=timeout)
        return members

    async def all_alive_from(self, observer: str) -> bool:
        members = await self.members(observer)
        alive = {m["name"] for m in members if m["status"] == "alive" and m["load"]}
        return alive >= set(self.names)

    async def wait_everyone_sees_all_alive(self, *, timeout: float = 60.0) -> None:
        async def converged() -> bool:
            return all(await asyncio.gather(*(self.all_alive_from(n) for n in self.names)))

        await wait_until(converged, timeout=timeout, interval=0.2, what="every agent sees every member alive")

    async def close(self) -> None:
        """Delete services through the API, stop the agents, then sweep what is left."""
        for name, agent in self.fed.agents.items():
            if agent.proc is None or agent.proc.poll() is not None:
                continue
            try:
                for record in await self.fed.get(name, "/v1/services"):
                    if record.get("role") == "LR" or record.get("home") == name:
                        await self.fed.call(name, "DELETE", f"/v1/services/{record['name']}")
            except (AssertionError, aiohttp.ClientError, TimeoutError):
                pass
        if self.fed.session is not None:
            await self.fed.session.close()
        self.fed.stop_all()
        sweep(markers=[str(self.base), *(f"--host\0{a}\0" for a in self.addrs.values())])


def sweep(*, markers: Sequence[str]) -> list[int]:
    """SIGKILL every process whose NUL-separated command line contains one of `markers`."""
    killed = []
    me = os.getpid()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == me:
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().decode(errors="replace")
        except OSError:
            continue
        if any(m in cmdline + "\0" for m in markers):
            try:
                os.kill(int(entry.name), signal.SIGKILL)
                killed.append(int(entry.name))
            except ProcessLookupError:
                pass
    return killed


def now() -> float:
    return time.monotonic()


# --- issue 16's goal table, gathered over the scripts of one `make bench` --------------------

GOALS_ENV = "ROAM_BENCH_GOALS"  # a JSON-lines file each script appends its goal figures to


def record_goal(figure: str, *, median: float, lo: float, hi: float, unit: str, goal: str,
                met: bool | None, paper: str = "", source: str = "", note: str = "") -> None:
    """Append one figure to the run's goal file, if `make bench` named one (bench/goals.py
    prints them all at the end); a script run alone prints its own lines only."""
    path = os.environ.get(GOALS_ENV)
    if not path:
        return
    row = {"figure": figure, "median": median, "lo": lo, "hi": hi, "unit": unit, "goal": goal, "met": met,
           "paper": paper, "source": source, "note": note}
    with open(path, "a", encoding="utf-8") as out:
        out.write(json.dumps(row) + "\n")


# --- an idle agent's cost (issue 16: agent + Serf + HAProxy <= 1% of one core, <= 80 MB) ----

TICK = os.sysconf("SC_CLK_TCK")


def cpu_ticks(pid: int) -> int:
    """utime + stime of `pid` (fields 14 and 15 of /proc/PID/stat), 0 once it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0
    return int(fields[11]) + int(fields[12])


def rss_mb(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return 0.0


def pss_mb(pid: int) -> float:
    """Proportional set size (smaps_rollup): each page divided by how many processes map it,
    so the libraries every agent (or every HAProxy) on the host maps count once overall; 0 once
    it is gone."""
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return 0.0


def _children(pid: int) -> list[int]:
    out: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            out += [int(p) for p in (task / "children").read_text().split()]
        except (OSError, ValueError):
            continue
    return out


def agent_pids(agent: AgentProc) -> list[int]:
    """The agent, its Serf (a child whose command is `serf`) and its HAProxy (one process, named
    by the pid file: HAProxy outlives the agent by design, so it is no child)."""
    if agent.proc is None or agent.proc.poll() is not None:
        return []
    pids = [agent.proc.pid]
    for child in _children(agent.proc.pid):
        with contextlib.suppress(OSError):
            if Path(f"/proc/{child}/comm").read_text().strip() == "serf":
                pids.append(child)
    with contextlib.suppress(OSError, ValueError, IndexError):
        pids.append(int((agent.data_dir / "lb" / "haproxy.pid").read_text().split()[0]))
    return pids


async def idle_usage(lf: LocalFederation, seconds: float) -> tuple[list[float], list[float], list[float]]:
    """Each agent's CPU (% of one core, agent + Serf + HAProxy) over an idle window of
    `seconds`, and their RSS and PSS together (MB) at its end."""
    pids = {name: agent_pids(lf.fed.agents[name]) for name in lf.names}
    before = {name: sum(cpu_ticks(p) for p in ps) for name, ps in pids.items()}
    started = time.monotonic()
    await asyncio.sleep(seconds)  # the measured window itself, not a synchronisation
    elapsed = time.monotonic() - started
    cpu = [100.0 * (sum(cpu_ticks(p) for p in ps) - before[name]) / TICK / elapsed for name, ps in pids.items()]
    rss = [sum(rss_mb(p) for p in ps) for ps in pids.values()]
    pss = [sum(pss_mb(p) for p in ps) for ps in pids.values()]
    return cpu, rss, pss
