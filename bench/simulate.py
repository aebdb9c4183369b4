"""A federation of up to 1,000 clusters x 100,000 services, simulated on the real pure code
(issue 18): where the per-cluster cost of roam's records goes as the federation grows.

Nothing runs but roam's own decision and record code; the network is a count of messages and
the clock is absent (rates are per backstop interval). For each size (clusters C, services S):
  - clusters in three tiers with random capacities and loads (re-drawn every 100 creations:
    load changes while services arrive, as gossip would show it);
  - every service created at a random HC, its home set chosen by `placement.homes
    .choose_entries` (2 entries), a fraction migrated once to the cluster `placement.rank`
    (balanced policy) puts first, the rest left at home;
  - every record built as `peer.records.record.Record` and measured packed (`record.pack`,
    what the store and anti-entropy hold and send).
Per cluster: records held (`interested`), their packed bytes, the Python memory of those
records (tracemalloc, on the cluster that holds most), the peers it shares records with (the
anti-entropy backstop and the fast member poll watch these), entry frontends (HAProxy), and
the messages and bytes of one planned migration (from the engine's steps: REPLICATE, STATUS
polls for a 300 ms deploy, ROUTE to each other entry, the publish to every holder, RELEASE).
The growth law of each figure is the slope of log(figure) over log(S) between the sizes.

Run: .venv/bin/python bench/simulate.py [--sizes 100:10000 300:30000 1000:100000] [--seed 1]
"""
from __future__ import annotations

import argparse
import math
import random
import statistics
import sys
import time
import tracemalloc
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:] = [str(REPO)] + [p for p in sys.path if Path(p or ".").resolve() != REPO / "bench"]

from peer.agent import ANTI_ENTROPY_FANOUT, ANTI_ENTROPY_INTERVAL, ANTI_ENTROPY_OTHERS_EVERY  # noqa: E402
from peer.drivers.descriptor import ServiceDescriptor  # noqa: E402
from peer.federation.metaorchestrator import requirements  # noqa: E402
from peer.records import vclock as vc  # noqa: E402
from peer.records.record import Record, State, descriptor_digest, interested, pack, unpack  # noqa: E402
from placement import ClusterView, get_policy, rank  # noqa: E402
from placement.homes import choose_entries  # noqa: E402

GIB = 1 << 30
TIERS = ("deep-edge", "edge", "cloud")
MIGRATED = 0.1  # share of services moved once by a planned migration
REDRAW_EVERY = 100  # creations between two re-draws of the clusters' loads
STATUS_POLLS = 6  # a 300 ms deploy polled every 50 ms (peer/migration/engine.py)
SUMMARY_BYTES = 200  # one anti-entropy summary round between peers in sync, both ways (approx.)


def draw_views(c: int, rng: random.Random) -> list[ClusterView]:
    views = []
    for i in range(c):
        tier = TIERS[i % len(TIERS)]
        scale = {"deep-edge": 1, "edge": 4, "cloud": 16}[tier]
        views.append(ClusterView(
            name=f"c{i:04d}", alive=True, tier=tier, cpu_capacity=8.0 * scale,
            cpu_used=rng.uniform(0, 6.0 * scale), mem_capacity=8 * GIB * scale,
            mem_used=rng.randint(0, 6 * GIB * scale), slots_capacity=100 * scale,
            slots_used=rng.randint(0, 80 * scale), rtt_ms=rng.uniform(0.5, 80.0),
            bandwidth_mbps=rng.uniform(5.0, 1000.0)))
    return views


def descriptor_bytes(i: int) -> bytes:
    d = ServiceDescriptor.from_obj({
        "name": f"svc-{i:06d}", "port": 8080, "cpu": 0.1, "memory": "64Mi",
        "command": ["/usr/bin/python3", "-m", "http.server", "{port}"], "health": {"path": "/healthz"}})
    return d.canonical_msgpack()


@dataclass
class Size:
    clusters: int
    services: int
    held: list[int]  # records held per cluster
    bytes_held: list[int]
    sharing: list[int]  # peers a cluster shares records with
    frontends: list[int]  # entry frontends per cluster (its HAProxy)
    mem_max: int  # Python bytes of the records of the cluster holding most
    migration_msgs: float  # per planned migration, mean
    migration_bytes: float
    placement_ms: float  # one PR (rank over every cluster), median
    seconds: float


def simulate(c: int, s: int, rng: random.Random) -> Size:
    started = time.monotonic()
    views = draw_views(c, rng)
    by_name = {v.name: v for v in views}
    policy = get_policy("balanced")
    records: list[Record] = []
    pr_ms: list[float] = []
    for i in range(s):
        if i % REDRAW_EVERY == 0:
            views = draw_views(c, rng)
            by_name = {v.name: v for v in views}
        hc = by_name[f"c{rng.randrange(c):04d}"]
        others = choose_entries(views, chosen=[hc.name], tiers=[hc.tier], count=1)
        homes = (hc.name, *others)
        payload = descriptor_bytes(i)
        location = hc.name
        if rng.random() < MIGRATED:
            req = requirements(ServiceDescriptor.from_msgpack(payload), avoid={hc.name})
            t0 = time.perf_counter()
            ranked = rank(req, views, home=hc.name, policy=policy).ranked
            pr_ms.append((time.perf_counter() - t0) * 1000.0)
            if ranked:
                location = ranked[0].name
        clock = vc.increment(vc.increment(vc.fresh(), f"{hc.name}~1", timestamp=1.7e9, at_least=2),
                             f"{location}~1", timestamp=1.7e9)  # created and moved (or routed)
        records.append(Record(
            name=f"svc-{i:06d}", home=hc.name, location=location, state=State.RUNNING,
            digest=descriptor_digest(payload), descriptor=payload, instance="10.0.0.1:31000",
            endpoint="10.0.0.1:30000", incarnation=f"{1700000000000 + i}-abcd1234", homes=homes,
            endpoints=tuple(sorted((h, "10.0.0.1:30000") for h in homes)),
            vclock=clock, written=clock))
    held: Counter[str] = Counter()
    nbytes: Counter[str] = Counter()
    frontends: Counter[str] = Counter()
    peers: defaultdict[str, set[str]] = defaultdict(set)
    msgs, moved_bytes, moves = 0, 0, 0
    for r in records:
        who = interested(r)
        size = len(pack(r))
        for cl in who:
            held[cl] += 1
            nbytes[cl] += size
            peers[cl] |= who - {cl}
        for e in r.entries:
            frontends[e] += 1
        if r.location != r.home:  # the one planned migration this service made
            holders = who | {r.home}
            msgs += 1 + STATUS_POLLS + (len(r.entries) - 1) + (len(holders) - 1) + 1
            moved_bytes += len(r.descriptor) + size * (len(r.entries) - 1 + len(holders) - 1 + 1)
            moves += 1
    busiest = max(held, key=held.__getitem__)
    tracemalloc.start()
    mine = [unpack(pack(r)) for r in records if busiest in interested(r)]
    mem = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    del mine
    names = [v.name for v in views]
    return Size(c, s, [held[n] for n in names], [nbytes[n] for n in names], [len(peers[n]) for n in names],
                [frontends[n] for n in names], mem, msgs / max(moves, 1), moved_bytes / max(moves, 1),
                statistics.median(pr_ms) if pr_ms else math.nan, time.monotonic() - started)


def slope(a: float, b: float, xa: float, xb: float) -> float:
    return math.log(max(b, 1e-9) / max(a, 1e-9)) / math.log(xb / xa)


def report(sizes: list[Size]) -> None:
    def med(v: list[int]) -> float:
        return float(statistics.median(v))

    rows = [
        ("records held per cluster, median (max)", lambda z: f"{med(z.held):.0f} ({max(z.held)})", lambda z: med(z.held)),
        ("packed record bytes per cluster, median", lambda z: f"{med(z.bytes_held) / 1024:.1f} KB", lambda z: med(z.bytes_held)),
        ("Python memory of the busiest cluster's records", lambda z: f"{z.mem_max / 1024:.0f} KB", lambda z: float(z.mem_max)),
        ("peers a cluster shares records with, median (max)", lambda z: f"{med(z.sharing):.0f} ({max(z.sharing)})", lambda z: med(z.sharing)),
        ("entry frontends per cluster, median (max)", lambda z: f"{med(z.frontends):.0f} ({max(z.frontends)})", lambda z: med(z.frontends)),
        ("messages per planned migration", lambda z: f"{z.migration_msgs:.1f}", lambda z: z.migration_msgs),
        ("bytes per planned migration", lambda z: f"{z.migration_bytes / 1024:.1f} KB", lambda z: z.migration_bytes),
        ("anti-entropy backstop, requests/s per cluster", lambda z: f"{backstop_rps(z):.2f}", backstop_rps),
        ("full backstop cycle over the sharing peers", lambda z: f"{cycle_s(z):.0f} s", cycle_s),
        ("placement request over every cluster (median)", lambda z: f"{z.placement_ms:.2f} ms", lambda z: z.placement_ms),
    ]
    head = "".join(f"{f'{z.clusters} x {z.services}':>16}" for z in sizes)
    print(f"\n{'figure':52}{head}   growth (S^k)")
    for label, fmt, value in rows:
        cells = "".join(f"{fmt(z):>16}" for z in sizes)
        k = slope(value(sizes[0]), value(sizes[-1]), sizes[0].services, sizes[-1].services) if len(sizes) > 1 else 0.0
        print(f"{label:52}{cells}   k={k:.2f}")
    print("\n(services per cluster held constant at S/C = 100; a slope near 0 is flat in the size)")
    print("simulated in " + ", ".join(f"{z.seconds:.0f} s" for z in sizes))


def backstop_rps(z: Size) -> float:
    """Requests a cluster starts per second: `fanout` sharing peers each interval, and one other
    every ANTI_ENTROPY_OTHERS_EVERY intervals."""
    return (min(ANTI_ENTROPY_FANOUT, statistics.median(z.sharing)) + 1 / ANTI_ENTROPY_OTHERS_EVERY) / ANTI_ENTROPY_INTERVAL


def cycle_s(z: Size) -> float:
    return math.ceil(statistics.median(z.sharing) / ANTI_ENTROPY_FANOUT) * ANTI_ENTROPY_INTERVAL


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", nargs="+", default=["100:10000", "300:30000", "1000:100000"])
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    rng = random.Random(args.seed)
    results = []
    for spec in args.sizes:
        c, s = (int(x) for x in spec.split(":"))
        results.append(simulate(c, s, rng))
        print(f"simulated {c} clusters x {s} services in {results[-1].seconds:.1f} s", flush=True)
    report(results)


if __name__ == "__main__":
    main()
