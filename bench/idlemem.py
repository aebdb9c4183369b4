"""Where an idle agent's memory goes (issues 16 and 18): a few real agents on loopback, no
service, and for each of the agent, its Serf and its HAProxy (one process since issue 18; it
was a master and a worker before) the RSS, the PSS (shared pages divided among the processes
that map them, so a page of every agent's copy of libpython or every HAProxy's binary counts
once overall) and the private pages, from /proc/PID/smaps_rollup, after a settle time. Medians over the agents and
over `--runs` federations.

Agents run with the defaults (automatic identity: mTLS, signed records); --no-peer-tls measures
them with the federation secret only (what the figures before identity became the default were).

Usage: .venv/bin/python bench/idlemem.py [--agents 3] [--runs 3] [--settle 20] [--net 127.0.80] [--no-peer-tls]
"""
from __future__ import annotations

import argparse
import asyncio
import contextlib
import statistics
import sys
import tempfile
from pathlib import Path

sys.path[:] = [str(Path(__file__).resolve().parents[1])] + [
    p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

from bench.common import LocalFederation, _children, machine_line  # noqa: E402

KINDS = ("agent", "serf", "haproxy")


def rollup(pid: int) -> dict[str, float]:
    """Rss, Pss and private (clean + dirty) of `pid` in MB, from smaps_rollup."""
    out = {"rss": 0.0, "pss": 0.0, "private": 0.0}
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            key, _, rest = line.partition(":")
            kb = rest.split()[0] if rest.split() else "0"
            if key == "Rss":
                out["rss"] += int(kb) / 1024
            elif key == "Pss":
                out["pss"] += int(kb) / 1024
            elif key in ("Private_Clean", "Private_Dirty"):
                out["private"] += int(kb) / 1024
    return out


def kinds_of(lf: LocalFederation, name: str) -> dict[str, list[int]]:
    agent = lf.fed.agents[name]
    assert agent.proc is not None
    pid = agent.proc.pid
    serf = [c for c in _children(pid) if Path(f"/proc/{c}/comm").read_text().strip() == "serf"]
    haproxy = int((agent.data_dir / "lb" / "haproxy.pid").read_text().split()[0])
    return {"agent": [pid], "serf": serf, "haproxy": [haproxy]}


async def one_run(n: int, net: str, settle: float, extra: list[str]) -> dict[str, list[dict[str, float]]]:
    base = Path(tempfile.mkdtemp(prefix="roam-idlemem-"))
    lf = LocalFederation(base=base, addrs={f"m{i + 1}": f"{net}.{i + 1}" for i in range(n)}, extra=extra)
    try:
        await lf.start()
        await asyncio.sleep(settle)  # the idle state itself is what is measured
        out: dict[str, list[dict[str, float]]] = {k: [] for k in KINDS}
        for name in lf.names:
            for kind, pids in kinds_of(lf, name).items():
                figs = [rollup(p) for p in pids]
                out[kind].append({k: sum(f[k] for f in figs) for k in ("rss", "pss", "private")})
        return out
    finally:
        await lf.close()


def med(values: list[float]) -> str:
    return f"{statistics.median(values):5.1f} ({min(values):.1f}-{max(values):.1f})"


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--agents", type=int, default=3)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--settle", type=float, default=20.0)
    ap.add_argument("--net", default="127.0.80", help="first three octets of the loopback addresses")
    ap.add_argument("--no-peer-tls", action="store_true", help="agents without automatic identity")
    args = ap.parse_args()
    per_run: list[dict[str, list[dict[str, float]]]] = []
    for _ in range(args.runs):
        per_run.append(await one_run(args.agents, args.net, args.settle,
                                     ["--no-peer-tls"] if args.no_peer_tls else []))
    mode = "--no-peer-tls" if args.no_peer_tls else "defaults: automatic identity"
    print(f"bench/idlemem.py: {args.agents} idle agents x {args.runs} runs ({mode}), MB, median (min-max); {machine_line()}")
    print(f"{'process':<16} {'RSS':>18} {'PSS':>18} {'private':>18}")
    totals: dict[str, list[float]] = {"rss": [], "pss": [], "private": []}
    for kind in KINDS:
        rows = [row for run in per_run for row in run[kind]]
        print(f"{kind:<16} " + " ".join(f"{med([x[k] for x in rows]):>18}" for k in ("rss", "pss", "private")))
    for run in per_run:
        for i in range(args.agents):
            for k in totals:
                totals[k].append(sum(run[kind][i][k] for kind in KINDS))
    print(f"{'together':<16} " + " ".join(f"{med(totals[k]):>18}" for k in ("rss", "pss", "private")))
    print("goal (issues 16, 18): agent + Serf + HAProxy <= 80 MB")


if __name__ == "__main__":
    asyncio.run(main())
