"""What the link probe costs the links it measures, and how fast its estimate follows a
bandwidth change (issue 18). Real agents, one network namespace each (chaos.netns, prefix
`roamlp`, subnet 10.243.0.0/24), all with `--auto-migrate` (the probe runs only then) and a
long dwell (no voluntary moves during the window).

  cost    n agents; one service created at the first (c0: its HC and steward, the only
          cluster with a decision to take). After `--settle` s, a window of `--window` s:
          the bytes c0 sent to each peer's API port (iptables counters inside each peer's
          namespace: probe and every other peer-API request; with `--no-probe` the agents run
          without --auto-migrate, i.e. without the probe, which gives the rest alone).
  react   2 agents; the service runs at c1. Repeatedly: c1's link shaped to 4 Mbit/s with
          `tc tbf` (both directions); time until c0's estimate of c1 reads BAD (< 10 Mbit/s),
          and until the policy moved the service home; then healed: time until the estimate
          reads GOOD again (>= 50 Mbit/s); the service is moved back to c1 and the next cycle
          starts after a random pause (the probe schedule's phase differs each time).

`--code DIR` runs the agents from another checkout (e.g. /work/main for "before"); the
bench reads only the admin API and the kernel's counters, so both versions can be measured.
Run as root: .venv/bin/python bench/linkprobe.py cost --sizes 3 10 [--code /work/main]
             .venv/bin/python bench/linkprobe.py react --cycles 5
"""
from __future__ import annotations

import argparse
import asyncio
import os
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

CODE = Path(os.environ.get("ROAM_CODE") or Path(__file__).resolve().parents[1])
if "--code" in sys.argv:
    CODE = Path(sys.argv[sys.argv.index("--code") + 1]).resolve()
sys.path[:] = [str(CODE)] + [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

from chaos.cluster import Federation  # noqa: E402
from chaos.faults import Bandwidth  # noqa: E402
from chaos.netns import Testbed  # noqa: E402
from peer.runtime.waiting import WaitTimeout, wait_until  # noqa: E402

PREFIX, SUBNET = "roamlp", "10.243.0.0/24"
API_PORT = 7070
SERVICE = {
    "name": "probe", "port": 8080, "cpu": 0.1, "memory": "32Mi", "health": {"path": "/healthz"},
    "command": [sys.executable, "-m", "peer.samples.classifier", "--host", "{host}", "--port", "{port}"],
}
BAD, GOOD = 10.0, 50.0


def spread(values: Iterable[float], digits: int = 1) -> str:
    v = list(values)
    if not v:
        return "-"
    return f"{statistics.median(v):.{digits}f} ({min(v):.{digits}f}-{max(v):.{digits}f}, n={len(v)})"


async def count_from(tb: Testbed, peer: str, source: str) -> None:
    """An iptables rule without a target: it only counts what `source` sends to peer's API."""
    await tb.iptables(peer, ["-I", "INPUT", "-s", source, "-p", "tcp", "--dport", str(API_PORT),
                             "-m", "comment", "--comment", tb.comment])


async def counted(tb: Testbed, peer: str, source: str) -> int:
    res = await tb.iptables(peer, ["-L", "INPUT", "-v", "-x", "-n"])
    for line in res.stdout.splitlines():
        cols = line.split()
        if len(cols) > 8 and source in cols and f"dpt:{API_PORT}" in line:
            return int(cols[1])
    raise RuntimeError(f"no counting rule in {peer}'s INPUT chain")


async def cost(n: int, args: argparse.Namespace) -> dict[str, Any]:
    names = [f"c{i}" for i in range(n)]
    base = Path(tempfile.mkdtemp(prefix=f"roam-linkprobe-{n}-"))
    async with Testbed(names, prefix=PREFIX, subnet=SUBNET) as tb:
        fed = Federation(tb, base, auto_migrate=not args.no_probe, extra_args=["--dwell", "3600"])
        try:
            for name in names:
                await fed.start_agent(name)
            for name in names:
                await fed.wait_healthy(name, timeout=120)
            await fed.wait_joined(timeout=300, observers=names[:3])
            hc = tb.addr(names[0])
            for peer in names[1:]:
                await count_from(tb, peer, hc)
            await fed.create_service(names[0], SERVICE)
            await asyncio.sleep(args.settle)
            before = {p: await counted(tb, p, hc) for p in names[1:]}
            t0 = time.monotonic()
            await asyncio.sleep(args.window)
            after = {p: await counted(tb, p, hc) for p in names[1:]}
            minutes = (time.monotonic() - t0) / 60.0
            members = await fed.call(names[0], "GET", "/v1/members")
            links = {m["name"]: m.get("link") or {"bandwidth_mbps": m.get("bandwidth_mbps")} for m in members}
        finally:
            await fed.close()
    per_peer = {p: (after[p] - before[p]) / minutes for p in names[1:]}
    return {"n": n, "per_peer": per_peer, "links": links}


async def react(args: argparse.Namespace) -> dict[str, list[float]]:
    names = ["c0", "c1"]
    base = Path(tempfile.mkdtemp(prefix="roam-linkprobe-react-"))
    out: dict[str, list[float]] = {"bad": [], "moved": [], "good": []}
    rng = random.Random(args.seed)
    async with Testbed(names, prefix=PREFIX, subnet=SUBNET) as tb:
        fed = Federation(tb, base, auto_migrate=True, extra_args=["--dwell", "3600"])
        try:
            await fed.start()
            await fed.create_service("c0", SERVICE)
            await fed.migrate("c0", "probe", "c1")
            slow = Bandwidth("c1", rate_mbit=4)

            async def bandwidth() -> float | None:
                members = await fed.call("c0", "GET", "/v1/members")
                return next((m.get("bandwidth_mbps") for m in members if m["name"] == "c1"), None)

            async def location() -> str:
                return str((await fed.call("c0", "GET", "/v1/services/probe"))["location"])

            async def good() -> bool:
                bw = await bandwidth()
                return bw is not None and bw >= GOOD

            async def bad() -> bool:
                bw = await bandwidth()
                return bw is not None and bw < BAD

            async def home() -> bool:
                return await location() == "c0"

            await wait_until(good, timeout=60, interval=0.2, what="a first GOOD estimate of c1")
            for cycle in range(args.cycles):
                await asyncio.sleep(rng.uniform(0, 20))
                await slow.apply(tb)
                t0 = time.monotonic()
                await wait_until(bad, timeout=120, interval=0.2, what="BAD estimate")
                out["bad"].append(time.monotonic() - t0)
                try:
                    await wait_until(home, timeout=60, interval=0.2, what="policy move home")
                    out["moved"].append(time.monotonic() - t0)
                except WaitTimeout:
                    print(f"cycle {cycle}: the policy did not move the service home within 60 s", flush=True)
                await slow.heal(tb)
                t1 = time.monotonic()
                await wait_until(good, timeout=180, interval=0.2, what="GOOD estimate after the heal")
                out["good"].append(time.monotonic() - t1)
                print(f"cycle {cycle}: BAD after {out['bad'][-1]:.1f} s, GOOD again after {out['good'][-1]:.1f} s",
                      flush=True)
                if await location() != "c1":
                    await fed.migrate("c0", "probe", "c1")
        finally:
            await fed.close()
    return out


async def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("what", choices=["cost", "react"])
    p.add_argument("--sizes", type=int, nargs="+", default=[3, 10])
    p.add_argument("--window", type=float, default=60.0)
    p.add_argument("--settle", type=float, default=10.0)
    p.add_argument("--no-probe", action="store_true", dest="no_probe")
    p.add_argument("--cycles", type=int, default=5)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--code", default=str(CODE))
    args = p.parse_args()
    print(f"agents run from {CODE}", flush=True)
    if args.what == "cost":
        for n in args.sizes:
            r = await cost(n, args)
            kb = [v / 1024 for v in r["per_peer"].values()]
            print(f"{n} agents: KiB/min from the HC to each peer's API: {spread(kb)}; total {sum(kb):.0f} KiB/min",
                  flush=True)
            for name, link in sorted(r["links"].items()):
                print(f"  {name}: {link}", flush=True)
    else:
        r = await react(args)
        print(f"to BAD (< {BAD:g} Mbit/s) after shaping to 4 Mbit/s: {spread(r['bad'])} s")
        print(f"policy moved the service home after: {spread(r['moved'])} s")
        print(f"to GOOD (>= {GOOD:g} Mbit/s) after the heal: {spread(r['good'])} s")


if __name__ == "__main__":
    asyncio.run(main())
