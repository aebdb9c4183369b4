"""Failure detection and load-tag propagation between real agents (Serf + HAProxy + agent).

For 3 and for 10 agents on loopback addresses (127.0.5.1-3 and 127.0.5.11-20):

  failure   SIGKILL one agent's process group (its Serf dies with it) and poll every other
            agent's `GET /v1/members` every 20 ms until it shows the victim `failed`: time to
            the first and to the last observer. The victim is restarted between runs.
  tags      deploy a small service on one agent (its `slots_used` goes up by one) and poll the
            others until their `/v1/members` shows the new value: time from the agent's 201
            answer (when it publishes the load) to the first and the last observer. The +1
            comes after the agent's last publication is over a second old (unthrottled); the
            delete follows as soon as everyone saw the +1, so the -1 shows a change that
            has to wait out the agent's once-a-second publication limit.

What the figures include: Serf's SWIM detection (probe 1 s, suspicion >= 4 s with the `lan`
profile), the agent's own `members` poll (every 250 ms) and this script's 20 ms poll.

Run: .venv/bin/python bench/gossip.py [--sizes 3 10] [--runs 5 3] [--tag-runs 5] [--interval 0.02]
"""
from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path[:] = [str(REPO)] + [p for p in sys.path if Path(p or ".").resolve() != REPO / "bench"]

from bench.common import CLASSIFIER, LocalFederation, Spread, machine_line  # noqa: E402
from peer.samples.running import run  # noqa: E402
from peer.runtime.waiting import wait_until  # noqa: E402
from tests.harness import TOKEN  # noqa: E402

SERF_PUBLISHED_S = 1.6  # Serf's published convergence time for clusters of up to ~10 nodes
TAG_GAP_S = 1.3  # > the agent's 1 s minimum between two tag publications
PROBE = {**CLASSIFIER, "name": "probe", "cpu": 0.1, "memory": "32Mi"}


def addrs_for(n: int) -> dict[str, str]:
    # Each size has its own addresses, so a straggler from one run cannot answer for the other.
    first = 1 if n < 10 else 11
    return {f"n{n}-{i + 1}": f"127.0.5.{first + i}" for i in range(n)}


@dataclass
class Observed:
    """When each observer first saw the change, in seconds after it happened."""

    first: float
    last: float
    per_observer: dict[str, float]


async def observe(lf: LocalFederation, observers: list[str], *, subject: str, since: float,
                  interval: float, timeout: float, seen: Callable[[dict[str, Any]], bool]) -> Observed:
    """Poll every observer's /v1/members on its own task until `seen(entry)` holds for `subject`."""
    times: dict[str, float] = {}

    async def watch(observer: str) -> None:
        deadline = since + timeout
        while time.monotonic() < deadline:
            try:
                members = await lf.members(observer, timeout=1.0)
            except Exception:  # noqa: BLE001 - a slow or refused poll is just "not yet"
                members = []
            at = time.monotonic()
            entry = next((m for m in members if m["name"] == subject), None)
            if entry is not None and seen(entry):
                times[observer] = at - since
                return
            await asyncio.sleep(interval)
        raise TimeoutError(f"{observer} never saw the change to {subject} within {timeout:.0f}s")

    await asyncio.gather(*(watch(o) for o in observers))
    return Observed(min(times.values()), max(times.values()), times)


async def failure_runs(lf: LocalFederation, runs: int, interval: float) -> list[Observed]:
    results = []
    candidates = lf.names[1:]  # never the seed: restarted agents re-join through it
    for i in range(runs):
        victim = candidates[i % len(candidates)]
        observers = [n for n in lf.names if n != victim]
        agent = lf.fed.agents[victim]
        killed = time.monotonic()
        agent.kill()
        obs = await observe(lf, observers, subject=victim, since=killed, interval=interval, timeout=60,
                            seen=lambda m: m["status"] == "failed")
        results.append(obs)
        print(f"  failure run {i + 1}: kill {victim} -> first {obs.first:.2f}s, last {obs.last:.2f}s", flush=True)
        agent.start()
        await lf.fed.wait_healthy(victim, timeout=60)
        await lf.wait_everyone_sees_all_alive(timeout=90)
    return results


def slots_are(value: int) -> Callable[[dict[str, Any]], bool]:
    return lambda member: bool(member["load"].get("slots_used") == value)


async def tag_publications(lf: LocalFederation, name: str) -> float:
    """The agent's `roam_tag_updates_total`: it goes up once Serf's `tags` RPC has returned."""
    session = lf.fed.session
    assert session is not None
    async with session.get(lf.fed.agents[name].api + "/metrics", headers={"Authorization": f"Bearer {TOKEN}"}) as r:
        r.raise_for_status()
        text = await r.text()
    for line in text.splitlines():
        if line.startswith("roam_tag_updates_total "):
            return float(line.split()[1])
    raise RuntimeError(f"{name}: no roam_tag_updates_total in /metrics")


async def quiet_publisher(lf: LocalFederation, name: str, count: float) -> None:
    """Wait until `name` has made `count` publications, then wait out its 1 s limit."""
    async def published() -> bool:
        return await tag_publications(lf, name) >= count

    await wait_until(published, timeout=30, interval=0.05, what=f"{name} published its tags")
    await asyncio.sleep(TAG_GAP_S)  # spacing, not synchronisation: the agent sleeps 1 s after a publication


async def tag_runs(lf: LocalFederation, runs: int, interval: float) -> tuple[list[Observed], list[Observed]]:
    """+1 slot after a quiet second (unthrottled); -1 slot as soon as everyone saw the +1
    (two changes back to back: the second waits out the agent's publication limit)."""
    up: list[Observed] = []
    down: list[Observed] = []
    for i in range(runs):
        source = lf.names[i % len(lf.names)]
        observers = [n for n in lf.names if n != source]
        before = next(m for m in await lf.members(source) if m["name"] == source)["load"]["slots_used"]
        publications = await tag_publications(lf, source)
        await lf.fed.call(source, "POST", "/v1/services", PROBE, expect=201)
        created = time.monotonic()
        up.append(await observe(lf, observers, subject=source, since=created, interval=interval, timeout=30,
                                seen=slots_are(before + 1)))
        await lf.fed.call(source, "DELETE", "/v1/services/probe")
        deleted = time.monotonic()
        down.append(await observe(lf, observers, subject=source, since=deleted, interval=interval, timeout=30,
                                  seen=slots_are(before)))
        await quiet_publisher(lf, source, publications + 2)  # the +1 and the -1
        print(f"  tag run {i + 1} from {source}: +1 slot first {up[-1].first:.2f}s last {up[-1].last:.2f}s; "
              f"-1 slot right after: first {down[-1].first:.2f}s last {down[-1].last:.2f}s", flush=True)
    return up, down


def row(n: int, what: str, values: list[float]) -> str:
    s = Spread.of(values)
    return f"{n:>3}  {what:<34} {s.n:>4} {s.median:>8.2f} {s.lo:>7.2f} {s.hi:>7.2f}"


async def measure(n: int, *, runs: int, tag_runs_n: int, interval: float) -> list[str]:
    rows: list[str] = []
    with tempfile.TemporaryDirectory(prefix=f"roam-bench-gossip{n}-") as tmp:
        lf = LocalFederation(base=Path(tmp), addrs=addrs_for(n))
        began = time.monotonic()
        try:
            await lf.start()
            print(f"N={n}: {n} agents up and converged in {time.monotonic() - began:.1f}s ({machine_line()})",
                  flush=True)
            fails = await failure_runs(lf, runs, interval)
            up, down = await tag_runs(lf, tag_runs_n, interval)
        finally:
            await lf.close()
    rows.append(row(n, "failure detected, first observer", [o.first for o in fails]))
    rows.append(row(n, "failure detected, last observer", [o.last for o in fails]))
    rows.append(row(n, "tag +1 slot, first observer", [o.first for o in up]))
    rows.append(row(n, "tag +1 slot, last observer", [o.last for o in up]))
    rows.append(row(n, "tag -1 right after, first observer", [o.first for o in down]))
    rows.append(row(n, "tag -1 right after, last observer", [o.last for o in down]))
    spread = [o.last - o.first for o in fails]
    rows.append(f"{'':>3}  (first-to-last observer gap on failures: median {statistics.median(spread):.2f}s)")
    return rows


async def main(args: argparse.Namespace) -> None:
    if len(args.runs) != len(args.sizes):
        raise SystemExit("--runs needs one count per --sizes entry")
    print(f"roam gossip benchmark; poll every {args.interval * 1000:.0f} ms; {machine_line()}", flush=True)
    rows: list[str] = []
    for n, runs in zip(args.sizes, args.runs):
        rows += await measure(n, runs=runs, tag_runs_n=args.tag_runs, interval=args.interval)
    print()
    print(f"{'N':>3}  {'seconds after the event':<34} {'runs':>4} {'median':>8} {'min':>7} {'max':>7}")
    for line in rows:
        print(line)
    print(f"\nSerf's published convergence for clusters of up to ~10 nodes: ~{SERF_PUBLISHED_S} s. "
          f"roam publishes load tags at most once per second (a change right after a publication "
          f"waits up to 1 s more), and each agent polls Serf's members every 250 ms.")
    print(f"end: {machine_line()}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[3, 10], help="federation sizes (max 10)")
    parser.add_argument("--runs", type=int, nargs="+", default=[5, 3], help="failure runs per size")
    parser.add_argument("--tag-runs", type=int, default=5, dest="tag_runs")
    parser.add_argument("--interval", type=float, default=0.02, help="poll interval, seconds")
    ns = parser.parse_args()
    if any(not 2 <= n <= 10 for n in ns.sizes):
        raise SystemExit("--sizes must be between 2 and 10 (loopback range 127.0.5.1-20)")
    run(main(ns))
