"""Reroute time and requests lost per reroute, through a real HAProxy under open-loop load.

Two real backends, one frontend, N reroutes back and forth while an open-loop client offers
a constant rate. Prints median / p95 reroute time (and its two phases: new server up, old
server drained and deleted) and the requests lost per reroute, next to the paper's 47 ms.

Both modes: the default one (wait for the new server's first passed health check) and the
fast path the migration engine takes once it has proven the copy ready (`proven_ready=True`:
UP at once, then the same drain).

Run from the repo root: .venv/bin/python bench/reroute.py [--reroutes 50] [--rate 400]
"""
from __future__ import annotations

import argparse
import asyncio
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.common import record_goal  # noqa: E402
from lb import LoadBalancer, RerouteResult  # noqa: E402
from tests.lb.backend import Backend  # noqa: E402
from tests.lb.openloop import OpenLoop  # noqa: E402

PAPER_REROUTE_MS = 47.0
FRONT = "127.0.2.1"
GOAL_MS = 5.0  # issue 16: reroute of a copy whose readiness is proven


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def line(name: str, values: list[float]) -> str:
    return (f"{name:<22} median {statistics.median(values):7.1f} ms   p95 {pct(values, 0.95):7.1f}"
            f" ms   min {min(values):6.1f}   max {max(values):6.1f}")


async def run(reroutes: int, rate: int, gap: float, port: int, *, front: str, hosts: tuple[str, str],
              proven_ready: bool) -> list[RerouteResult]:
    backends = [Backend(hosts[0], "a", 23500), Backend(hosts[1], "b", 23500)]
    with tempfile.TemporaryDirectory(prefix="roam-bench-") as tmp:
        lb = LoadBalancer(data_dir=Path(tmp), bind_addr=front, ports=range(port, port + 1),
                          max_slots=1)
        await lb.start()
        try:
            await lb.open_frontend("bench")
            await lb.route("bench", *backends[0].addr)
            results: list[RerouteResult] = []
            windows: list[tuple[float, float]] = []
            async with OpenLoop(f"http://{front}:{port}/", rate=rate) as load:
                t0 = time.monotonic()
                await asyncio.sleep(0.5)
                for i in range(reroutes):
                    start = time.monotonic() - t0
                    results.append(await lb.route("bench", *backends[(i + 1) % 2].addr,
                                                  proven_ready=proven_ready))
                    windows.append((start, time.monotonic() - t0))
                    await asyncio.sleep(gap)
            report = load.report
        finally:
            await lb.stop()
            for b in backends:
                b.stop()
    span = max(s.sent_at for s in report.samples) - min(s.sent_at for s in report.samples)
    lost_in = [sum(1 for s in report.lost if lo - 0.05 <= s.sent_at <= hi + 0.05)
               for lo, hi in windows]
    mode = "proven ready (fast path)" if proven_ready else "gated on a first health check"
    print(f"HAProxy reroutes, {mode}: {reroutes}, open-loop load {report.sent} requests at "
          f"{report.sent / span:.0f} req/s offered (max send lag {report.max_send_lag_ms:.1f} ms)")
    print(line("reroute (total)", [r.duration_ms for r in results]))
    print(line("  new server up", [r.up_ms for r in results]))
    print(line("  old drained+deleted", [r.drain_ms for r in results]))
    print(f"requests lost: {len(report.lost)} of {report.sent} in total; per reroute: "
          f"max {max(lost_in)}, mean {statistics.mean(lost_in):.2f}")
    print(f"client latency through the LB: p50 {report.latency_ms(0.5):.1f} ms, "
          f"p99 {report.latency_ms(0.99):.1f} ms")
    goal = f"; goal (issue 16) <= {GOAL_MS:.0f} ms" if proven_ready else ""
    if proven_ready:
        totals = [r.duration_ms for r in results]
        record_goal("reroute, HAProxy alone (proven ready)", median=statistics.median(totals), lo=min(totals),
                    hi=max(totals), unit="ms", goal=f"<= {GOAL_MS:g} ms", met=statistics.median(totals) <= GOAL_MS,
                    paper=f"{PAPER_REROUTE_MS:g} ms", source="bench/reroute.py",
                    note=f"{len(report.lost)} of {report.sent} requests lost at {rate} req/s")
    print(f"paper (Table I) Reroute: {PAPER_REROUTE_MS:.0f} ms; roam median "
          f"{statistics.median(r.duration_ms for r in results):.1f} ms{goal}")
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reroutes", type=int, default=50)
    parser.add_argument("--rate", type=int, default=400, help="requests per second, open loop")
    parser.add_argument("--gap", type=float, default=0.1, help="seconds between reroutes")
    parser.add_argument("--port", type=int, default=23000, help="frontend port")
    parser.add_argument("--front", default=FRONT, help="frontend address")
    parser.add_argument("--hosts", nargs=2, default=("127.0.2.20", "127.0.2.21"), help="the two backends")
    parser.add_argument("--mode", choices=("both", "gated", "proven"), default="both")
    args = parser.parse_args()
    modes = {"both": (False, True), "gated": (False,), "proven": (True,)}[args.mode]
    for i, proven in enumerate(modes):
        if i:
            print()
        asyncio.run(run(args.reroutes, args.rate, args.gap, args.port, front=args.front,
                        hosts=tuple(args.hosts), proven_ready=proven))


if __name__ == "__main__":
    main()
