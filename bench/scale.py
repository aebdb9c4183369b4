"""What one cluster costs as the federation grows (issue 18): real agents, one network
namespace each on one bridge (chaos.netns), idle, then with one service.

For each size n (default 10, 25, 50):
  start-up      all agents started at once (the first is the seed); time until a sample of
                observers sees every member alive with load
  idle          a window of `--idle` seconds with no service anywhere: CPU (% of one core)
                of each agent, its Serf and its HAProxy from /proc/PID/stat, RSS from
                /proc/PID/status, open fds of the agent, and bytes per second on each
                cluster's veth (both directions: what that cluster puts on and takes off
                the wire); medians over the clusters, with min-max
  services      the same window after one service was created at the first cluster (its
                entries and location now have business with each other; the rest do not)
  tags          time from the creation's 201 until the observers see the HC's slots_used
  failure       the last cluster's whole site SIGKILLed: time until the observers show it
                failed (first and last observer)
  migration     one planned migration of the service at that size: its PR (placement) and
                the whole API call

The figures are printed beside issue 18's goals (idle agent CPU at most 0.5% of a core, flat
in n; agent + Serf + HAProxy RSS at most 80 MB, PSS beside it; idle wire at most 2 KB/s per agent without
services). Run as root: .venv/bin/python bench/scale.py [--sizes 10 25 50] [--idle 30] [--no-peer-tls]
"""
from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path[:] = [str(REPO)] + [p for p in sys.path if Path(p or ".").resolve() != REPO / "bench"]

from bench.common import record_goal  # noqa: E402
from chaos.cluster import Federation  # noqa: E402
from chaos.netns import Testbed  # noqa: E402
from chaos.siteloss import SiteLoss  # noqa: E402
from peer.runtime.waiting import wait_until  # noqa: E402

TICK = os.sysconf("SC_CLK_TCK")
OBSERVERS = 5  # clusters polled for what "everyone" sees (polling all n would load the machine)
SERVICE = {
    "name": "probe", "port": 8080, "cpu": 0.1, "memory": "32Mi", "health": {"path": "/healthz"},
    "command": [sys.executable, "-m", "peer.samples.classifier", "--host", "{host}", "--port", "{port}"],
}


@dataclass
class Window:
    """Per-cluster figures over one idle window."""

    cpu_agent: list[float] = field(default_factory=list)
    cpu_serf: list[float] = field(default_factory=list)
    cpu_haproxy: list[float] = field(default_factory=list)
    rss_mb: list[float] = field(default_factory=list)  # agent + serf + haproxy
    rss_agent: list[float] = field(default_factory=list)
    rss_serf: list[float] = field(default_factory=list)
    rss_haproxy: list[float] = field(default_factory=list)  # one process (no master-worker since issue 18)
    # PSS of the three (smaps_rollup): each shared page divided among the processes mapping it
    pss_mb: list[float] = field(default_factory=list)
    pss_agent: list[float] = field(default_factory=list)
    pss_serf: list[float] = field(default_factory=list)
    pss_haproxy: list[float] = field(default_factory=list)
    fds: list[float] = field(default_factory=list)
    wire_bps: list[float] = field(default_factory=list)  # bytes per second, rx + tx


def spread(values: Iterable[float], unit: str = "", digits: int = 2) -> str:
    v = list(values)
    if not v:
        return "-"
    return f"{statistics.median(v):.{digits}f}{unit} ({min(v):.{digits}f}-{max(v):.{digits}f})"


def cpu_ticks(pid: int) -> int:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])  # utime + stime (fields 14 and 15 of stat)


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024.0
    return 0.0


def pss_mb(pid: int) -> float:
    """Proportional set size: each page this process maps, divided by how many map it."""
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        if line.startswith("Pss:"):
            return int(line.split()[1]) / 1024.0
    return 0.0


def wire_bytes(veth: str) -> int:
    stats = Path(f"/sys/class/net/{veth}/statistics")
    return int((stats / "rx_bytes").read_text()) + int((stats / "tx_bytes").read_text())


class Scale:
    def __init__(self, n: int, base: Path, prefix: str, subnet: str) -> None:
        self.names = [f"k{i + 1}" for i in range(n)]
        self.tb = Testbed(self.names, prefix=prefix, subnet=subnet)
        self.base = base
        self.fed: Federation | None = None

    def observers(self) -> list[str]:
        """Spread over the federation; never the first (the HC) nor the last (the site lost)."""
        middle = self.names[1:-1] or self.names
        step = max(1, len(middle) // OBSERVERS)
        return middle[::step][:OBSERVERS]

    def processes(self, name: str) -> dict[str, list[int]]:
        assert self.fed is not None
        agent = self.fed.agents[name]
        return {"agent": [agent.proc.pid] if agent.proc else [], "serf": self.fed.serf_pids_sync(name),
                "haproxy": self._haproxy_pids(name)}

    def _haproxy_pids(self, name: str) -> list[int]:
        """HAProxy's one process, named by the pid file the agent writes."""
        assert self.fed is not None
        pidfile = self.fed.agents[name].data_dir / "lb" / "haproxy.pid"
        try:
            return [int(pidfile.read_text().split()[0])]
        except (OSError, ValueError, IndexError):
            return []

    async def idle_window(self, seconds: float) -> Window:
        procs = {n: self.processes(n) for n in self.names}
        before = {n: {k: sum(cpu_ticks(p) for p in ps) for k, ps in kinds.items()} for n, kinds in procs.items()}
        wire0 = {n: wire_bytes(self.tb.host_veth(n)) for n in self.names}
        started = time.monotonic()
        await asyncio.sleep(seconds)  # the measured window itself, not a synchronisation
        elapsed = time.monotonic() - started
        w = Window()
        for n, kinds in procs.items():
            pct = {k: 100.0 * (sum(cpu_ticks(p) for p in ps) - before[n][k]) / TICK / elapsed for k, ps in kinds.items()}
            w.cpu_agent.append(pct["agent"])
            w.cpu_serf.append(pct["serf"])
            w.cpu_haproxy.append(pct["haproxy"])
            w.rss_mb.append(sum(rss_mb(p) for ps in kinds.values() for p in ps))
            w.rss_agent.append(sum(rss_mb(p) for p in kinds["agent"]))
            w.rss_serf.append(sum(rss_mb(p) for p in kinds["serf"]))
            w.rss_haproxy.append(sum(rss_mb(p) for p in kinds["haproxy"]))
            for kind, into in (("agent", w.pss_agent), ("serf", w.pss_serf), ("haproxy", w.pss_haproxy)):
                into.append(sum(pss_mb(p) for p in kinds[kind]))
            w.pss_mb.append(w.pss_agent[-1] + w.pss_serf[-1] + w.pss_haproxy[-1])
            w.fds.append(len(os.listdir(f"/proc/{kinds['agent'][0]}/fd")))
            w.wire_bps.append((wire_bytes(self.tb.host_veth(n)) - wire0[n]) / elapsed)
        return w

    async def seen_by_observers(self, predicate: Any, what: str, timeout: float = 60.0) -> tuple[float, float]:
        """Seconds until the first and the last observer see `predicate(members)` true."""
        assert self.fed is not None
        fed = self.fed
        started = time.monotonic()
        seen: dict[str, float] = {}

        async def all_seen() -> bool:
            for o in self.observers():
                if o not in seen and predicate(await fed.call(o, "GET", "/v1/members", timeout=2.0)):
                    seen[o] = time.monotonic() - started
            return len(seen) == len(self.observers())

        await wait_until(all_seen, timeout=timeout, interval=0.05, what=what)
        return min(seen.values()), max(seen.values())


async def probe_shares(fed: Federation, names: list[str]) -> list[tuple[str, str, float, float, float]]:
    """Every measured link, as each cluster's /v1/members shows it: (from, to, probe bytes in
    the last minute, the link's estimate in Mbit/s, the probe's share of it in %). Only the
    clusters with business (the HC, its entries, the location) probe anyone."""
    out = []
    for name in names:
        for m in await fed.call(name, "GET", "/v1/members", timeout=5.0):
            link = m.get("link") or {}
            sent, mbps = link.get("probed_bytes_last_minute"), link.get("bandwidth_mbps")
            if sent and mbps:
                out.append((name, m["name"], float(sent), float(mbps), 100.0 * sent * 8 / 60.0 / (mbps * 1e6)))
    return out


async def start_all(scale: Scale, batch: int) -> None:
    """Start every agent: all at once (batch 0, the default: the figures of docs/scale.md), or
    `batch` at a time, each batch healthy before the next starts and each agent joining the
    seed plus two clusters already up (spread over the federation), so that neither 100
    interpreters importing at once nor the seed's Serf answering every push-pull alone
    stretch the start-up into a storm of suspicions on a 2-core machine."""
    assert scale.fed is not None
    fed = scale.fed
    names = list(fed.agents)
    step = batch if batch > 0 else len(names)
    for at in range(0, len(names), step):
        group = names[at:at + step]
        if batch > 0 and at > 0:
            up = [fed.agents[n].addr for n in names[1:at]]
            for i, name in enumerate(group):
                extra = [up[(i * 7 + k * 13) % len(up)] for k in range(2)] if up else []
                fed.agents[name].join = list(dict.fromkeys([fed.agents[names[0]].addr, *extra]))
        for name in group:
            await fed.start_agent(name)
        for name in group:
            await fed.wait_healthy(name, timeout=300)


async def measure(n: int, args: argparse.Namespace) -> dict[str, Any]:
    base = Path(tempfile.mkdtemp(prefix=f"roam-scale-{n}-"))
    scale = Scale(n, base, args.prefix, args.subnet)
    out: dict[str, Any] = {"n": n}
    async with scale.tb:
        fed = scale.fed = Federation(scale.tb, base, auto_migrate=args.auto_migrate,
                                     auto_identity=not args.no_peer_tls)
        try:
            started = time.monotonic()
            await start_all(scale, args.batch)
            await fed.wait_joined(timeout=args.form_timeout, observers=scale.observers())
            out["startup_s"] = time.monotonic() - started
            await asyncio.sleep(args.settle)  # let start-up traffic pass before the idle window
            out["idle"] = await scale.idle_window(args.idle)
            out["load"] = " ".join(Path("/proc/loadavg").read_text().split()[:3])
            first = scale.names[0]
            created = await fed.create_service(first, SERVICE)
            out["tags_s"] = await scale.seen_by_observers(
                lambda ms: any(m["name"] == first and (m.get("load") or {}).get("slots_used") == 1 for m in ms),
                "tag propagation")
            out["entries"] = created.get("homes")
            await asyncio.sleep(args.settle)
            out["services"] = await scale.idle_window(args.idle)
            out["probes"] = await probe_shares(fed, scale.names)
            t0 = time.monotonic()
            migration = await fed.migrate(first, "probe")
            out["migration_ms"] = (time.monotonic() - t0) * 1000.0
            out["pr_ms"] = migration.get("pr")
            victim = scale.names[-1]
            loss = SiteLoss(fed=fed, cluster=victim)
            await loss.apply(scale.tb)
            out["failure_s"] = await scale.seen_by_observers(
                lambda ms: any(m["name"] == victim and m["status"] == "failed" for m in ms), "failure seen",
                timeout=120)
        finally:
            await fed.close()
    return out


def report(results: list[dict[str, Any]], idle: float, *, identity: bool) -> None:
    mode = "automatic identity (the default)" if identity else "--no-peer-tls"
    print(f"\nbench/scale.py: agents with {mode}; idle windows of {idle:g} s, medians over the clusters (min-max)")
    for r in results:
        n = r["n"]
        print(f"\n== {n} agents: start-up to all alive {r['startup_s']:.1f} s; entries of the service {r['entries']}; "
              f"load average during the idle windows {r['load']}")
        for label, key in (("no service", "idle"), ("one service", "services")):
            w: Window = r[key]
            print(f"  {label:12s} agent CPU {spread(w.cpu_agent, '%')}  serf {spread(w.cpu_serf, '%')}  "
                  f"haproxy {spread(w.cpu_haproxy, '%')}")
            print(f"  {'':12s} RSS agent+serf+haproxy {spread(w.rss_mb, ' MB', 1)} (agent {spread(w.rss_agent, '', 1)}, "
                  f"serf {spread(w.rss_serf, '', 1)}, haproxy {spread(w.rss_haproxy, '', 1)})")
            print(f"  {'':12s} PSS agent+serf+haproxy {spread(w.pss_mb, ' MB', 1)} (agent {spread(w.pss_agent, '', 1)}, "
                  f"serf {spread(w.pss_serf, '', 1)}, haproxy {spread(w.pss_haproxy, '', 1)})")
            print(f"  {'':12s} agent fds {spread(w.fds, '', 0)}  wire {spread([b / 1024 for b in w.wire_bps], ' KB/s')}")
        print(f"  tags seen {r['tags_s'][0]:.2f}-{r['tags_s'][1]:.2f} s  failure seen {r['failure_s'][0]:.2f}-"
              f"{r['failure_s'][1]:.2f} s  (first-last of the observers)")
        print(f"  planned migration {r['migration_ms']:.0f} ms, PR {r['pr_ms']} ms")
        probes = r.get("probes") or []
        if probes:
            worst = max(probes, key=lambda p: p[4])
            print(f"  link probes over the last minute: {len(probes)} measured links, "
                  f"{spread([p[2] / 60 for p in probes], ' B/s', 0)} each; share of the link "
                  f"{spread([p[4] for p in probes], '%', 3)}; most {worst[4]:.3f}% ({worst[0]}->{worst[1]}, "
                  f"{worst[2] / 60:.0f} B/s of {worst[3]:.0f} Mbit/s)")
        else:
            print("  link probes over the last minute: none")
    for r in results:
        record_figures(r)
    print("\ngoals (issue 18): idle agent CPU <= 0.5% flat in n; RSS <= 80 MB; idle wire <= 2 KB/s without services; "
          "probes <= 1% of each measured link")


def record_figures(r: dict[str, Any]) -> None:
    """Issue 18's goals at this size, for bench/goals.py's table (`make bench-scale`)."""
    w: Window = r["idle"]
    n = r["n"]

    def row(figure: str, values: list[float], unit: str, goal: str, met: bool | None, note: str = "") -> None:
        record_goal(f"{figure}, {n} agents", median=statistics.median(values), lo=min(values), hi=max(values),
                    unit=unit, goal=goal, met=met, source="bench/scale.py", note=note)

    row("idle agent CPU", w.cpu_agent, "% of a core", "<= 0.5 %", statistics.median(w.cpu_agent) <= 0.5)
    row("idle agent + Serf + HAProxy, RSS", w.rss_mb, "MB", "<= 80 MB", statistics.median(w.rss_mb) <= 80.0)
    row("idle agent + Serf + HAProxy, PSS", w.pss_mb, "MB", "(RSS with shared pages once)", None)
    kb = [b / 1024 for b in w.wire_bps]
    row("idle wire per agent, no service", kb, "KB/s", "<= 2 KB/s", statistics.median(kb) <= 2.0)
    kb = [b / 1024 for b in r["services"].wire_bps]
    row("idle wire per agent, one service", kb, "KB/s", "-", None)
    shares = [p[4] for p in r.get("probes") or []]
    if shares:
        row("link probe, share of each measured link", shares, "%", "<= 1 %", max(shares) <= 1.0, note="max is the test")


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[10, 25, 50])
    ap.add_argument("--idle", type=float, default=30.0, help="seconds of each idle window")
    ap.add_argument("--settle", type=float, default=10.0, help="seconds before each window")
    ap.add_argument("--form-timeout", type=float, default=300.0,
                    help="seconds for the observers to see every member alive")
    ap.add_argument("--batch", type=int, default=0,
                    help="start agents this many at a time, each batch healthy first (0: all at once)")
    ap.add_argument("--auto-migrate", dest="auto_migrate", action="store_true",
                    help="run the agents with the policy and its link probe (default: --no-auto-migrate, as before)")
    ap.add_argument("--no-peer-tls", action="store_true",
                    help="agents without their automatic identity (the federation secret only); "
                         "by default they run as `roam agent` does: mTLS between peers, signed records")
    ap.add_argument("--prefix", default="roamsc")
    ap.add_argument("--subnet", default="10.239.0.0/24")
    args = ap.parse_args()
    results = []
    for n in args.sizes:
        results.append(await measure(n, args))
        report(results[-1:], args.idle, identity=not args.no_peer_tls)
    report(results, args.idle, identity=not args.no_peer_tls)


if __name__ == "__main__":
    asyncio.run(main())
