"""Reroute time and requests lost per reroute, through a real HAProxy under open-loop load.

Two real backends, one frontend, N reroutes back and forth while an open-loop client offers
a constant rate. Prints median / p95 reroute time (and its two phases: new server up, old
server drained and deleted) and the requests lost per reroute, next to the paper's 47 ms.

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

from lb import LoadBalancer, RerouteResult  # noqa: E402
from tests.lb.backend import Backend  # noqa: E402
from tests.lb.openloop import OpenLoop  # noqa: E402

PAPER_REROUTE_MS = 47.0
FRONT = "127.0.2.1"


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def line(name: str, values: list[float]) -> str:
    return (f"{name:<22} median {statistics.median(values):7.1f} ms   p95 {pct(values, 0.95):7.1f}"
            f" ms   min {min(values):6.1f}   max {max(values):6.1f}")


async def run(reroutes: int, rate: int, gap: float, port: int) -> None:
    backends = [Backend("127.0.2.20", "a", 23500), Backend("127.0.2.21", "b", 23500)]
    with tempfile.TemporaryDirectory(prefix="roam-bench-") as tmp:
        lb = LoadBalancer(data_dir=Path(tmp), bind_addr=FRONT, ports=range(port, port + 1),
                          max_slots=1)
        await lb.start()
        try:
            await lb.open_frontend("bench")
            await lb.route("bench", *backends[0].addr)
            results: list[RerouteResult] = []
            windows: list[tuple[float, float]] = []
            async with OpenLoop(f"http://{FRONT}:{port}/", rate=rate) as load:
                t0 = time.monotonic()
                await asyncio.sleep(0.5)
                for i in range(reroutes):
                    start = time.monotonic() - t0
                    results.append(await lb.route("bench", *backends[(i + 1) % 2].addr))
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
    print(f"HAProxy reroutes: {reroutes}, open-loop load {report.sent} requests at "
          f"{report.sent / span:.0f} req/s offered (max send lag {report.max_send_lag_ms:.1f} ms)")
    print(line("reroute (total)", [r.duration_ms for r in results]))
    print(line("  new server up", [r.up_ms for r in results]))
    print(line("  old drained+deleted", [r.drain_ms for r in results]))
    print(f"requests lost: {len(report.lost)} of {report.sent} in total; per reroute: "
          f"max {max(lost_in)}, mean {statistics.mean(lost_in):.2f}")
    print(f"client latency through the LB: p50 {report.latency_ms(0.5):.1f} ms, "
          f"p99 {report.latency_ms(0.99):.1f} ms")
    print(f"paper (Table I) Reroute: {PAPER_REROUTE_MS:.0f} ms; roam median "
          f"{statistics.median(r.duration_ms for r in results):.1f} ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reroutes", type=int, default=50)
    parser.add_argument("--rate", type=int, default=400, help="requests per second, open loop")
    parser.add_argument("--gap", type=float, default=0.1, help="seconds between reroutes")
    parser.add_argument("--port", type=int, default=23000, help="frontend port on 127.0.2.1")
    args = parser.parse_args()
    asyncio.run(run(args.reroutes, args.rate, args.gap, args.port))


if __name__ == "__main__":
    main()
