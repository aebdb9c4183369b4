"""State that follows a service: what a planned migration of a stateful service costs, by state size.

Three real agents (Serf, HAProxy with the request hold, process driver) on 127.0.20.41-43 (c1,
c2, c3). For each state size (1 KB, 64 KB, 1 MB, 16 MB: the stateful sample's counters plus
`--pad` bytes of ballast), the sample is deployed at c1 with two entries and
`"state": {"path": "/roam/state", "interval": 1.0}`, then migrated `--runs` times round-robin
(c2, c3, c1, ...) while an open-loop client sends `--rate` req/s through both entries. Per
migration: the pre-copy stage (`state`, the old copy serving), the handover window (requests
held at every entry while the last version is copied and the routes switch), the bytes moved,
the pre-copy rounds, whether the state was exact, requests lost, and the worst client latency
of a request sent during the migration (what the hold adds, as clients see it).

Beside it, seed 003's model: T_mig = sum_i T_i + T_down with T_i = tau*V_i + eps per iteration.
The state is opaque, so every round moves all of it (V_i = M while it changes); tau and eps are
fitted (least squares) on the measured pre-copy rounds, and the model's T_down = tau*M + eps +
T_switch (T_switch: the handover window at the smallest size, i.e. holds and reroutes).

Failover with and without standby (`--failovers N`, 0 to skip; bench/failover.py): the stateful
sample with two entries, once with `"standby": 1` and once without, N runs each. Its primary is
at the cluster that is no entry (`--failover-at ac`, the steward survives, as bench/migration.py's
fail-safe) or at its HC, an entry and the steward (`hc`). Under `--rate` req/s open loop through a
surviving entry, the primary's agent (with its Serf) and its copy are SIGKILLed together; per run:
requests lost (never answered) and the time from the kill until the first answer from the new
copy (the standby, or the fail-safe's redeploy). The lost cluster is started again in between.
Printed as medians with min-max beside issue 15's goals (standby: 0 lost, served within 0.5 s).

Run: .venv/bin/python bench/state.py [--runs 5] [--rate 200] [--sizes 1000,64000,1000000,16000000]
     [--failovers 5] [--failover-at ac|hc] [--addr 127.0.20.41]   (--sizes "" measures failovers only)
Not a test: it prints figures (medians, min-max, runs) for docs/benchmarks.md.
"""
from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path[:] = [str(REPO)] + [p for p in sys.path if Path(p or ".").resolve() != REPO / "bench"]

from bench.common import LocalFederation, Spread, machine_line  # noqa: E402
from bench.failover import failover_lines, failover_runs  # noqa: E402
from bench.migration import addrs_from  # noqa: E402
from chaos.load import run_load  # noqa: E402
from peer.samples.running import run  # noqa: E402

ADDRS = {"c1": "127.0.20.41", "c2": "127.0.20.42", "c3": "127.0.20.43"}
INTERVAL = 1.0


def descriptor(name: str, pad: int) -> dict[str, Any]:
    return {"name": name, "port": 8080, "cpu": 0.25, "memory": "64Mi", "health": {"path": "/healthz"},
            "entries": 2, "state": {"path": "/roam/state", "interval": INTERVAL},
            "command": [sys.executable, "-m", "peer.samples.stateful", "--host", "{host}", "--port", "{port}",
                        "--pad", str(pad)]}


def fmt(s: Spread, unit: str = "ms") -> str:
    return f"{s.median:9.1f} ({s.lo:.1f}-{s.hi:.1f}) {unit}"


async def one_size(lf: LocalFederation, size: int, runs: int, rate: float) -> dict[str, Any]:
    name = f"st{size}"
    fed = lf.fed
    pad = max(0, size - 200)  # the counters themselves take ~200 bytes
    created = await fed.call("c1", "POST", "/v1/services", descriptor(name, pad), expect=201)
    urls = [f"http://{e}/classify?stream=s{i}&seed={i}" for i, e in enumerate(created["endpoints"] * 2)]
    stop = asyncio.Event()
    load = asyncio.create_task(run_load(urls, rate=rate, stop=stop, timeout=10.0))
    await asyncio.sleep(2 * INTERVAL)
    rows, windows = [], []
    targets = ["c2", "c3", "c1"]
    for i in range(runs):
        t0 = time.monotonic()
        m = await fed.call("c1", "POST", f"/v1/services/{name}/migrate", {"target": targets[i % 3]})
        windows.append((t0, time.monotonic()))
        rows.append(m)
        await asyncio.sleep(1.0)
    stop.set()
    result = await load
    lost = [s for s in result.samples if not s.ok]
    if lost:
        errors: dict[str, int] = {}
        for s in lost:
            errors[str(s.error)[:60]] = errors.get(str(s.error)[:60], 0) + 1
        print(f"size {size}: lost {len(lost)}: {errors}; migrations at "
              f"{[(round(a - result.t0, 2), round(b - result.t0, 2)) for a, b in windows]}, lost sent at "
              f"{sorted({round(s.sent_at - result.t0, 1) for s in lost})}", flush=True)
    worst = [max((s.latency_ms for s in result.samples if a <= s.sent_at <= b and s.ok), default=0.0)
             for a, b in windows]
    served = result.served
    assert fed.session is not None
    async with fed.session.get(f"http://{created['endpoints'][0]}/counters") as r:
        total = (await r.json())["total"]
    await fed.call("c1", "DELETE", f"/v1/services/{name}")
    st = [m["state_transfer"] for m in rows]
    return {
        "size": size, "runs": runs,
        "state_ms": Spread.of([m["durations_ms"]["state"] for m in rows]),
        "handover_ms": Spread.of([m["durations_ms"]["handover"] for m in rows]),
        "reroute_ms": Spread.of([m["durations_ms"]["reroute"] for m in rows]),
        "bytes": Spread.of([float(t["bytes"]) for t in st]),
        "rounds": Spread.of([float(t["rounds"]) for t in st]),
        "round_ms": [(t["size"], m["durations_ms"]["state"] / t["rounds"]) for m, t in zip(rows, st)],
        "worst_latency_ms": Spread.of(worst),
        "exact": sum(1 for t in st if t["exact"] is True),
        "inexact": sum(1 for t in st if t["exact"] is False), "lost": len(lost), "sent": len(result.samples),
        "counters_exact": total == served, "real_size": st[0]["size"],
    }


def fit(points: list[tuple[int, float]]) -> tuple[float, float]:
    """Least squares t = tau*M + eps over (M bytes, t ms)."""
    xs, ys = [float(p[0]) for p in points], [p[1] for p in points]
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    var = sum((x - mx) ** 2 for x in xs)
    tau = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / var if var else 0.0
    return tau, my - tau * mx


def report(results: list[dict[str, Any]], rate: float) -> None:
    print(f"\nplanned migrations of a stateful service, {rate:.0f} req/s open loop through 2 entries; "
          f"{machine_line()}")
    print(f"{'state':>10} {'runs':>4} {'pre-copy (state)':>26} {'handover window':>26} {'worst client latency':>26} "
          f"{'bytes moved':>14} {'rounds':>6} {'exact':>6} {'lost':>9}")
    for r in results:
        print(f"{r['real_size']:>10} {r['runs']:>4} {fmt(r['state_ms']):>26} {fmt(r['handover_ms']):>26} "
              f"{fmt(r['worst_latency_ms']):>26} {r['bytes'].median:>14.0f} {r['rounds'].median:>6.0f} "
              f"{r['exact']}/{r['runs']:<4} {r['lost']}/{r['sent']}"
              + (f"  ({r['inexact']} inexact, {r['runs'] - r['exact'] - r['inexact']} unknown)"
                 if r["exact"] < r["runs"] else "") + ("" if r["counters_exact"] else "  COUNTERS DIFFER"))
    points = [p for r in results for p in r["round_ms"]]
    if len({m for m, _ in points}) < 2:
        print("\nseed 003's model needs two state sizes or more to be fitted")
        return
    tau, eps = fit(points)
    switch = min(results, key=lambda r: r["real_size"])["handover_ms"].median
    print(f"\nseed 003's model, fitted: T_i = tau*M + eps with tau = {tau * 1e6:.3f} ms/MB, eps = {eps:.1f} ms; "
          f"T_switch = {switch:.1f} ms (handover at the smallest size)")
    print(f"{'state':>10} {'model T_down':>14} {'measured handover':>18} {'model T_mig':>12} {'measured state+handover':>24}")
    for r in results:
        m = r["real_size"]
        t_round = tau * m + eps
        t_down = t_round + switch
        t_mig = r["rounds"].median * t_round + t_down
        measured = r["state_ms"].median + r["handover_ms"].median
        print(f"{m:>10} {t_down:>11.1f} ms {r['handover_ms'].median:>15.1f} ms {t_mig:>9.1f} ms {measured:>21.1f} ms")


async def main(args: argparse.Namespace) -> None:
    sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    with tempfile.TemporaryDirectory(prefix="roam-bench-state-") as tmp:
        lf = LocalFederation(base=Path(tmp), addrs=addrs_from(args.addr), extra=["--no-auto-migrate"])
        try:
            await lf.start()
            results = []
            for size in sizes:
                results.append(await one_size(lf, size, args.runs, args.rate))
                print(f"size {size}: done ({results[-1]['handover_ms'].median:.1f} ms handover)", flush=True)
            failovers = await failover_runs(lf, descriptor("fo", 0), runs=args.failovers, rate=args.rate,
                                            where=args.failover_at)
        finally:
            await lf.close()
    if results:
        report(results, args.rate)
    if args.failovers:
        print()
        for line in failover_lines(failovers, rate=args.rate, where=args.failover_at):
            print(line)
    print(f"\nend: {machine_line()}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--rate", type=float, default=200.0)
    parser.add_argument("--sizes", default="1000,64000,1000000,16000000")
    parser.add_argument("--failovers", type=int, default=5, help="failover runs with and without standby, each")
    parser.add_argument("--failover-at", choices=("ac", "hc"), default="ac",
                        help="ac: the primary away from its entries (steward survives); hc: at its HC and steward")
    parser.add_argument("--addr", default=ADDRS["c1"], help="c1's loopback address; c2, c3 take the next two")
    run(main(parser.parse_args()))
