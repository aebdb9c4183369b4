"""The paper's Table I for roam: migration stage times, requests lost, placement time, fail-safe.

Three real agents (Serf, HAProxy, process driver) on 127.0.5.31-33 (c1, c2, c3); the sample
classifier is deployed at c1 (its HC) and migrated `--migrations` times round-robin
(c2, c3, c1, ...), always coordinated by the HC, while an open-loop client sends 200 req/s to
the HC endpoint. After each migration the script waits until exactly one copy runs and the HC
routes to it (not timed), so every migration starts from a quiet federation.

Then:
  placement  `placement.rank` over 10, 100 and 1,000 synthetic clusters (the views and timer of
             bench/placement.py), the engine's default policy;
  idle       before the service: each agent's CPU and RSS with its Serf and HAProxy (`--idle` s,
             from `--settle` s after every agent sees every member alive: the start-up's
             catch-up calls are not idling, as in bench/scale.py);
  fail-safe  migrate to c2, SIGKILL c2's agent group and the service's process group, and poll
             the HC endpoint every 20 ms until c1 answers again (`--failsafes` times; c2 is
             restarted in between), with the HC's own record of each fail-safe.

Run: .venv/bin/python bench/migration.py [--migrations 30] [--failsafes 5] [--rate 200]
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
import tempfile
import time
from functools import partial
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path[:] = [str(REPO)] + [p for p in sys.path if Path(p or ".").resolve() != REPO / "bench"]

import aiohttp  # noqa: E402

from bench.coldstart import cold_starts  # noqa: E402
from bench.common import (CLASSIFIER, TICK, LocalFederation, Spread, cpu_ticks, dump_logs, idle_usage, machine_line,  # noqa: E402
                          record_goal)
from bench.placement import SIZES, make_views, timed  # noqa: E402
from chaos.load import LoadResult, run_load  # noqa: E402
from peer.samples.running import run  # noqa: E402
from peer.stages import TABLE_STAGES as STAGES  # noqa: E402
from peer.runtime.waiting import wait_until  # noqa: E402
from placement import Requirements, get_policy, rank  # noqa: E402

ENGINE_POLICY = "balanced"  # the agent's default (peer/config.py)
ADDRS = {"c1": "127.0.5.31", "c2": "127.0.5.32", "c3": "127.0.5.33"}


def addrs_from(base: str) -> dict[str, str]:
    """c1..c3 on `base`, `base`+1, `base`+2 (e.g. 127.0.3.31), so runs can use their own addresses."""
    head, _, last = base.rpartition(".")
    return {f"c{i + 1}": f"{head}.{int(last) + i}" for i in range(3)}
PAPER_MS = {"pr": 3.0, "replication": 21.0, "reroute": 47.0, "wait": 10_000.0, "cleanup": 1_500.0,
            "deploy": 9_500.0}
PAPER_TEXT = {"pr": "3 ms", "replication": "21 ms", "reroute": "47 ms", "wait": "~10 s", "cleanup": "~1.5 s",
              "deploy": "~9.5 s"}


async def served_by(session: aiohttp.ClientSession, endpoint: str, *, timeout: float = 1.0) -> str | None:
    try:
        async with session.get(f"http://{endpoint}/", timeout=aiohttp.ClientTimeout(total=timeout)) as r:
            return str((await r.json())["cluster"]) if r.status == 200 else None
    except (aiohttp.ClientError, TimeoutError, ValueError, KeyError):
        return None


async def settled_at(lf: LocalFederation, location: str, endpoint: str) -> bool:
    """Exactly one copy runs (at `location`), the HC's record says so and its endpoint routes there."""
    fed = lf.fed
    running = []
    for name in lf.names:
        agent = fed.agents[name]
        if agent.proc is None or agent.proc.poll() is not None:
            continue
        instances = await fed.get(name, "/v1/instances")
        running += [name for i in instances if i["name"] == "classifier" and i["state"] in ("ready", "starting")]
    if running != [location]:
        return False
    record = await fed.get("c1", "/v1/services/classifier")
    assert fed.session is not None
    return bool(record["location"] == location and await served_by(fed.session, endpoint) == location)


async def finished_entry(lf: LocalFederation, mid: str) -> dict[str, Any] | None:
    """The HC's history entry of migration `mid` once its cleanup is over (`finished_at` set)."""
    for m in await lf.fed.get("c1", "/v1/migrations"):
        if m["id"] == mid and m["finished_at"] is not None:
            return dict(m)
    return None


async def migrations(lf: LocalFederation, endpoint: str, *, count: int, rate: float
                     ) -> tuple[list[dict[str, Any]], list[float], list[tuple[float, float]], LoadResult]:
    order = ["c2", "c3", "c1"]
    results: list[dict[str, Any]] = []
    walls: list[float] = []
    windows: list[tuple[float, float]] = []
    stop = asyncio.Event()
    load = asyncio.create_task(run_load([f"http://{endpoint}/"], rate=rate, stop=stop, timeout=5.0))
    pids = {name: lf.fed.agents[name].proc.pid for name in lf.names if lf.fed.agents[name].proc is not None}
    ticks = {name: cpu_ticks(pid) for name, pid in pids.items()}
    try:
        for i in range(count):
            target = order[i % len(order)]
            began = time.monotonic()
            result = await lf.fed.call("c1", "POST", "/v1/services/classifier/migrate", {"target": target})
            ended = time.monotonic()
            if result["outcome"] != "succeeded":
                raise RuntimeError(f"migration {i + 1} to {target}: {result}")
            walls.append((ended - began) * 1000.0)
            await wait_until(partial(settled_at, lf, target, endpoint), timeout=30, interval=0.05,
                             what=f"one copy at {target}")
            # The answer comes at the commit; the cleanup (old copy stopped) is timed after it.
            result = await wait_until(partial(finished_entry, lf, result["id"]), timeout=30, what="cleanup timed")
            results.append(result)
            windows.append((began, time.monotonic()))
            print(f"  migration {i + 1:>2} -> {target}: " + ", ".join(
                f"{s} {result[s]:.0f}" for s in STAGES) + f" ms; call {walls[-1]:.0f} ms", flush=True)
    finally:
        stop.set()
        outcome = await load
    if results:  # CPU time is what a busy neighbour does not inflate as much as the wall time
        per = {name: (cpu_ticks(pid) - ticks[name]) * 1000.0 / TICK / len(results) for name, pid in pids.items()}
        print("agents' own CPU per move (agent processes only, whole move incl. cleanup and the settle poll): "
              + ", ".join(f"{name} {ms:.1f} ms" for name, ms in per.items()), flush=True)
    return results, walls, windows, outcome


GOAL_CALL_OVER_COLD = 1.3  # issue 16: whole planned migration at most 1.3 x the cold start
GOAL_REROUTE_MS = 5.0
GOAL_PLACEMENT_1000_MS = 2.0
GOAL_FAILSAFE_MS = 600.0
GOAL_IDLE_CPU_PCT = 1.0  # agent + Serf + HAProxy, no service
GOAL_IDLE_RSS_MB = 80.0


def goal_lines(results: list[dict[str, Any]], walls: list[float], cold: list[float],
               fails: list[dict[str, Any]], placement_1000_ms: float, lost: int,
               idle: tuple[list[float], list[float], list[float]] | None = None) -> list[str]:
    """Every figure of issue 16 this script measures, beside its goal and the paper's Table I."""
    call, c = Spread.of(walls), Spread.of(cold)
    reroute = Spread.of([float(r["reroute"]) for r in results])
    wait_over = Spread.of([float(r["wait"]) - float(r["deploy"]) for r in results])
    back = Spread.of([f["served_ms"] for f in fails]) if fails else None
    poll = Spread.of([f["back_ms"] for f in fails]) if fails else None
    ratio = call.median / c.median
    own = Spread.of([w - float(r["deploy"]) for r, w in zip(results, walls)])

    def ok(passed: bool) -> str:
        return "met" if passed else "NOT met"

    lines = [f"{'figure':<44} {'median':>9} {'min':>8} {'max':>8}   {'goal (issue 16)':<24} {'paper':>8}  status",
             f"{'cold start, same command (spawn->first 200)':<44} {c.median:>7.0f}ms {c.lo:>6.0f}ms {c.hi:>6.0f}ms"
             f"   {'(the floor)':<24} {'~9.5 s':>8}",
             f"{'planned migration, whole API call':<44} {call.median:>7.0f}ms {call.lo:>6.0f}ms {call.hi:>6.0f}ms"
             f"   {f'<= {GOAL_CALL_OVER_COLD} x cold start':<24} {'':>8}  {ok(ratio <= GOAL_CALL_OVER_COLD)} "
             f"({ratio:.2f} x)",
             f"{'  of which roam (call - deploy, each move)':<44} {own.median:>7.0f}ms {own.lo:>6.0f}ms {own.hi:>6.0f}ms"
             f"   {'(the start is the floor)':<24} {'':>8}  robust to the machine's load",
             f"{'  requests lost at the offered rate':<44} {lost:>9}{'':>20}   {'0':<24} {'0':>8}  {ok(lost == 0)}",
             f"{'reroute stage':<44} {reroute.median:>7.1f}ms {reroute.lo:>6.1f}ms {reroute.hi:>6.1f}ms"
             f"   {f'<= {GOAL_REROUTE_MS:.0f} ms':<24} {'47 ms':>8}  {ok(reroute.median <= GOAL_REROUTE_MS)}",
             f"{'wait - deploy (the engine noticing the AC)':<44} {wait_over.median:>7.1f}ms {wait_over.lo:>6.1f}ms "
             f"{wait_over.hi:>6.1f}ms   {'a few ms':<24} {'':>8}  {ok(wait_over.median <= 5.0)}",
             f"{'placement, one service, 1,000 clusters':<44} {placement_1000_ms:>7.2f}ms{'':>20}   "
             f"{f'<= {GOAL_PLACEMENT_1000_MS:.0f} ms':<24} {'3 ms':>8}  {ok(placement_1000_ms <= GOAL_PLACEMENT_1000_MS)}"]
    if back is not None and poll is not None:
        lines.append(f"{'fail-safe: AC killed -> c1 serves (open loop)':<44} {back.median:>7.0f}ms {back.lo:>6.0f}ms "
                     f"{back.hi:>6.0f}ms   {f'<= {GOAL_FAILSAFE_MS:.0f} ms':<24} {'':>8}  "
                     f"{ok(back.median <= GOAL_FAILSAFE_MS)}")
        lines.append(f"{'  ... as a sequential 20 ms poll sees it':<44} {poll.median:>7.0f}ms {poll.lo:>6.0f}ms "
                     f"{poll.hi:>6.0f}ms   (a held poll request waits out HAProxy's 1 s retry turn-around)")
    deploy = Spread.of([float(r["deploy"]) for r in results])
    lines.insert(2, f"{'deploy at the AC (spawn -> ready, driver)':<44} {deploy.median:>7.0f}ms {deploy.lo:>6.0f}ms "
                    f"{deploy.hi:>6.0f}ms   {'~ cold start':<24} {'~9.5 s':>8}  ({deploy.median / c.median:.2f} x)")
    if idle is not None:
        cpu, rss, pss = Spread.of(idle[0]), Spread.of(idle[1]), Spread.of(idle[2])
        lines.append(f"{'idle agent + Serf + HAProxy: CPU, % of a core':<44} {cpu.median:>8.2f}% {cpu.lo:>7.2f}% "
                     f"{cpu.hi:>7.2f}%   {f'<= {GOAL_IDLE_CPU_PCT:g} %':<24} {'':>8}  "
                     f"{ok(cpu.median <= GOAL_IDLE_CPU_PCT)}")
        lines.append(f"{'idle agent + Serf + HAProxy: RSS together':<44} {rss.median:>7.1f}MB {rss.lo:>6.1f}MB "
                     f"{rss.hi:>6.1f}MB   {f'<= {GOAL_IDLE_RSS_MB:g} MB':<24} {'':>8}  "
                     f"{ok(rss.median <= GOAL_IDLE_RSS_MB)}")
        lines.append(f"{'idle agent + Serf + HAProxy: PSS together':<44} {pss.median:>7.1f}MB {pss.lo:>6.1f}MB "
                     f"{pss.hi:>6.1f}MB   (shared pages counted once)")
        goal("idle agent + Serf + HAProxy, CPU", cpu, "% of a core", f"<= {GOAL_IDLE_CPU_PCT:g} %",
             cpu.median <= GOAL_IDLE_CPU_PCT, note="3 agents, no service")
        goal("idle agent + Serf + HAProxy, RSS", rss, "MB", f"<= {GOAL_IDLE_RSS_MB:g} MB", rss.median <= GOAL_IDLE_RSS_MB)
        goal("idle agent + Serf + HAProxy, PSS", pss, "MB", "(RSS with shared pages once)", None,
             note="smaps_rollup Pss")
    lines.append("anti-entropy goals: bench/antientropy.py; reroute fast path alone: bench/reroute.py")
    goal("cold start of the classifier (spawn -> first 200)", c, "ms", "the floor", None, paper="~9.5 s (deploy)")
    goal("deploy at the AC (driver)", deploy, "ms", "~ cold start", None, paper="~9.5 s",
         note=f"{deploy.median / c.median:.2f} x cold start")
    goal("planned migration, whole API call", call, "ms", f"<= {GOAL_CALL_OVER_COLD} x cold start",
         ratio <= GOAL_CALL_OVER_COLD, note=f"{ratio:.2f} x cold start")
    goal("  roam's own time (call - deploy)", own, "ms", "-", None)
    record_goal("requests lost, planned migrations", median=lost, lo=lost, hi=lost, unit="", goal="0", met=lost == 0,
                paper="0", source="bench/migration.py")
    goal("reroute stage (engine)", reroute, "ms", f"<= {GOAL_REROUTE_MS:g} ms", reroute.median <= GOAL_REROUTE_MS,
         paper="47 ms", note="this HC serves the new copy and the move is committed")
    everyone = [float(r["durations_ms"]["reroute_entries"]) + float(r["reroute"]) for r in results
                if "reroute_entries" in r["durations_ms"]]
    if everyone:
        goal("  every entry routed (before the answer)", Spread.of(everyone), "ms", "before the old copy stops", None,
             note="reroute stage + the other entries' ROUTE after the commit")
    goal("wait - deploy (readiness noticed)", wait_over, "ms", "a few ms", wait_over.median <= 5.0)
    record_goal("placement, 1,000 clusters (in this run)", median=placement_1000_ms, lo=placement_1000_ms,
                hi=placement_1000_ms, unit="ms", goal=f"<= {GOAL_PLACEMENT_1000_MS:g} ms",
                met=placement_1000_ms <= GOAL_PLACEMENT_1000_MS, paper="3 ms (PR)", source="bench/migration.py")
    if back is not None:
        goal("fail-safe: AC killed -> c1 serves", back, "ms", f"<= {GOAL_FAILSAFE_MS:g} ms",
             back.median <= GOAL_FAILSAFE_MS)
    return lines


def goal(figure: str, spread: Spread, unit: str, text: str, met: bool | None, *, paper: str = "",
         note: str = "") -> None:
    record_goal(figure, median=spread.median, lo=spread.lo, hi=spread.hi, unit=unit, goal=text, met=met,
                paper=paper, source="bench/migration.py", note=note)


def stage_table(results: list[dict[str, Any]], walls: list[float]) -> list[str]:
    lines = [f"{'stage':<12} {'median ms':>10} {'p95 ms':>9} {'min':>8} {'max':>8}   {'paper (Table I)':>15}  ratio"]
    for stage in STAGES:
        s = Spread.of([float(r[stage]) for r in results])
        ratio = PAPER_MS[stage] / s.median if s.median > 0 else float("inf")
        lines.append(f"{stage:<12} {s.median:>10.1f} {s.p95:>9.1f} {s.lo:>8.1f} {s.hi:>8.1f}   "
                     f"{PAPER_TEXT[stage]:>15}  paper/roam {ratio:.1f}x")
    s = Spread.of(walls)
    lines.append(f"{'(API call)':<12} {s.median:>10.1f} {s.p95:>9.1f} {s.lo:>8.1f} {s.hi:>8.1f}   "
                 f"{'':>15}  whole POST .../migrate as the client sees it")
    return lines


PARTS = {"reroute_here": "reroute: this HC's HAProxy until the new server serves (proven ready: UP at once; "
                         "the commit's version signed meanwhile)",
         "reroute_commit": "reroute: the record committed here (SQLite, fsync)",
         "commit": "committed record pushed to the AC (before the answer)",
         "reroute_entries": "the other entries' ROUTE all answered (ms after the commit, before the answer)"}
#: Timed by the rollout (overlap.Rollout), filled in at the cleanup: ms since the commit, or, for
#: `entry_*`, since the slowest other entry's ROUTE handler began (cumulative marks).
AFTER = {"reroute_drain": "this HC's old server drained and deleted (ms after the commit)",
         "entry_call": "  the slowest entry's ROUTE as the HC timed it (HTTP, signing, its work)",
         "entry_read": "  its handler: body read, signature checked, record decoded",
         "entry_locked": "  ... the service's lock taken",
         "entry_applied": "  ... the record merged and written (SQLite, fsync)",
         "entry_acted": "  ... its actions run: the Reroute (HAProxy: up, state saved, drain, delete)",
         "entry_up": "  ... (when the route changed in ensure_route: the new server serving)",
         "entry_routed": "  ... answered (route and backups checked)",
         "cleanup": "the old copy stopped (SIGTERM and exit, or the old AC's RELEASE), record pushed"}


def profile_lines(results: list[dict[str, Any]], walls: list[float]) -> list[str]:
    """Where the answer's time goes: the parts the engine times inside stages (durations_ms),
    the wait's overhead over the AC's deploy, and what no stage covers."""
    lines = [f"{'part':<16} {'median ms':>10} {'min':>8} {'max':>8}   what"]

    def row(key: str, values: list[float], what: str) -> None:
        s = Spread.of(values)
        lines.append(f"{key:<16} {s.median:>10.1f} {s.lo:>8.1f} {s.hi:>8.1f}   {what}")

    row("deploy", [float(r["deploy"]) for r in results], "the AC's driver: spawn -> ready")
    row("wait - deploy", [float(r["wait"]) - float(r["deploy"]) for r in results],
        "the coordinator hearing of it (STATUS long poll)")
    for key, what in PARTS.items():
        values = [float(r["durations_ms"][key]) for r in results if key in r["durations_ms"]]
        if values:
            row(key, values, what)
    timed = ("pr", "replication", "wait", "reroute", "commit")
    engine = [(float(r["committed_at"]) - float(r["started_at"])) * 1000.0 for r in results]
    row("engine, untimed", [e - sum(float(r["durations_ms"].get(k, 0.0)) for k in timed)
                            for r, e in zip(results, engine)], "between stages: journal writes, checks")
    row("outside engine", [w - e for w, e in zip(walls, engine)],
        "the API call around it: HTTP, JSON, the service lock")
    lines.append("the rollout (entries before the answer; the drain and cleanup after it):")
    for key, what in AFTER.items():
        values = [float(r["durations_ms"][key]) for r in results if r["durations_ms"].get(key) is not None]
        if values:
            row(key, values, what)
    return lines


def load_lines(outcome: LoadResult, windows: list[tuple[float, float]]) -> list[str]:
    span = max(s.sent_at for s in outcome.samples) - min(s.sent_at for s in outcome.samples)
    failed = [s for s in outcome.samples if not s.ok]
    per = [sum(1 for s in failed if lo - 0.05 <= s.sent_at <= hi + 0.05) for lo, hi in windows]
    lines = [(f"open-loop load: {len(outcome.samples)} requests over {span:.1f} s "
              f"({len(outcome.samples) / span:.0f} req/s offered), lost {len(failed)}; lost per migration: "
              f"max {max(per)}, total inside migration windows {sum(per)}"),
             (f"served by: {outcome.served_by()}; latency p50 {outcome.latency_ms(0.5) or 0:.1f} ms, "
              f"p99 {outcome.latency_ms(0.99) or 0:.1f} ms")]
    if failed:
        lines.append(f"first failures: {[(round(s.sent_at - outcome.t0, 2), s.error) for s in failed[:5]]}")
    return lines


def placement_lines(reps: int, out: dict[int, float] | None = None) -> list[str]:
    import random

    rng = random.Random(1)
    req = Requirements(cpu=0.5, memory=128 << 20)
    policy = get_policy(ENGINE_POLICY)
    lines = [(f"placement decision (`rank`, policy {ENGINE_POLICY!r}, {reps} calls per size, "
              f"views from bench/placement.py)"), f"{'clusters':>8} {'median ms':>10} {'p95 ms':>9}"]
    for n in SIZES:
        views = make_views(n, rng)
        med, p95 = timed(lambda v=views: rank(req, v, home=v[0].name, policy=policy), reps)  # type: ignore[misc]
        if out is not None:
            out[n] = med
        lines.append(f"{n:>8} {med:>10.3f} {p95:>9.3f}")
    return lines


async def failsafe(lf: LocalFederation, endpoint: str, *, rate: float) -> dict[str, Any]:
    fed = lf.fed
    await fed.call("c1", "POST", "/v1/services/classifier/migrate", {"target": "c2"})
    await wait_until(lambda: settled_at(lf, "c2", endpoint), timeout=30, what="one copy at c2")
    state = json.loads((fed.agents["c2"].data_dir / "services" / "classifier" / "instance.json").read_text())
    stop = asyncio.Event()
    load = asyncio.create_task(run_load([f"http://{endpoint}/"], rate=rate, stop=stop, timeout=5.0))
    await asyncio.sleep(0.5)  # some load before the fault, so the outage has a clean start
    assert fed.session is not None
    session = fed.session
    killed, killed_wall = time.monotonic(), time.time()
    fed.agents["c2"].kill()
    os.killpg(state["pgid"], signal.SIGKILL)
    # A request sent during the outage may be held by HAProxy's connect retries and answered
    # by c1 later: the poll's deadline must outlast that, or it would time out just before.
    await wait_until(lambda: _answers_from(session, endpoint, "c1"), timeout=60, interval=0.02,
                     what="HC endpoint answers from c1")
    back = time.monotonic() - killed
    await asyncio.sleep(0.5)
    stop.set()
    outcome = await load
    entry = next(m for m in await fed.get("c1", "/v1/migrations") if m["kind"] == "failsafe")
    failed = [s for s in outcome.samples if not s.ok and s.sent_at >= killed - 0.01]
    # Served again: the first answer from c1 on the open loop (a request every 5 ms). The poll
    # above is sequential: a poll request sent during the outage is held by HAProxy's connect
    # retry (its turn-around of min(1 s, timeout connect) with a single server) and blocks the
    # poll that long, so it tells when that held request was answered, not when c1 served.
    by_c1 = [s.sent_at + s.latency_ms / 1000.0 - killed for s in outcome.samples
             if s.ok and s.served_by == "c1" and s.sent_at >= killed - 0.01]
    held = [s.latency_ms for s in outcome.samples if s.ok and killed - 0.01 <= s.sent_at <= killed + back]
    fed.agents["c2"].start()
    await fed.wait_healthy("c2", timeout=60)
    await lf.wait_everyone_sees_all_alive(timeout=90)
    await wait_until(lambda: settled_at(lf, "c1", endpoint), timeout=60, what="one copy at c1 after c2 is back")
    return {"back_ms": back * 1000.0, "entry": entry, "lost": outcome.failed, "sent": len(outcome.samples),
            "served_ms": min(by_c1) * 1000.0 if by_c1 else float("nan"), "held_ms": max(held, default=0.0),
            # kill -> the HC's first evidence (its entry starts `detection` ms after that evidence)
            "sensed_ms": (float(entry["started_at"]) - float(entry["durations_ms"].get("detection", 0.0)) / 1000.0
                          - killed_wall) * 1000.0,
            "last_failed_ms": (max(s.sent_at for s in failed) - killed) * 1000.0 if failed else 0.0}


async def _answers_from(session: aiohttp.ClientSession, endpoint: str, cluster: str) -> bool:
    return await served_by(session, endpoint, timeout=3.0) == cluster


def failsafe_lines(runs: list[dict[str, Any]]) -> list[str]:
    keys = ("detection", "wait", "deploy", "reroute", "cleanup", "downtime_estimate")
    keys += ("deploy_ahead",)
    lines = [f"{'run':>3} {'c1 serves':>10} {'poll sees':>10} {'lost':>5} {'last lost sent':>15} "
             f"{'slowest held':>13}   HC's fail-safe entry, ms"]
    for i, r in enumerate(runs, 1):
        d = r["entry"]["durations_ms"]
        lines.append(f"{i:>3} {r['served_ms']:>7.0f} ms {r['back_ms']:>7.0f} ms {r['lost']:>5} "
                     f"{r['last_failed_ms']:>12.0f} ms {r['held_ms']:>10.0f} ms   sensed={r['sensed_ms']:.0f} "
                     + " ".join(f"{k}={d.get(k, float('nan')):.0f}" for k in keys)
                     + f"  ({r['entry']['reason']})")
    served = Spread.of([r["served_ms"] for r in runs])
    lines.append(f"c1 serves (first answer from c1 on the open loop, from the kill): median {served.median:.0f} ms "
                 f"(min {served.lo:.0f}, max {served.hi:.0f})")
    s = Spread.of([r["back_ms"] for r in runs])
    det = Spread.of([float(r["entry"]["durations_ms"].get("detection", 0.0)) for r in runs])
    est = Spread.of([float(r["entry"]["durations_ms"].get("downtime_estimate", 0.0)) for r in runs])
    lines.append(f"c1 answers again after the kill: median {s.median:.0f} ms (min {s.lo:.0f}, max {s.hi:.0f}); "
                 f"HC's detection median {det.median:.0f} ms, its downtime_estimate median {est.median:.0f} ms "
                 f"(counted from its first evidence, not from the kill)")
    return lines


async def main(args: argparse.Namespace) -> None:
    print(f"roam migration benchmark: {args.migrations} migrations, {args.failsafes} fail-safes; {machine_line()}",
          flush=True)
    addrs = addrs_from(args.addr)
    # The floor, measured in this run on this machine: the classifier's own cold start.
    cold = cold_starts(args.cold_starts, host=addrs["c3"], port=41700)
    with tempfile.TemporaryDirectory(prefix="roam-bench-migration-") as tmp:
        lf = LocalFederation(base=Path(tmp), addrs=addrs, extra=["--no-auto-migrate"])
        try:
            await lf.start()
            idle = None
            if args.idle > 0:
                await asyncio.sleep(args.settle)  # (the start-up's last calls: not the idle window)
                idle = await idle_usage(lf, args.idle)
            created = await lf.fed.call("c1", "POST", "/v1/services", CLASSIFIER, expect=201)
            endpoint = created["endpoint"]
            results, walls, windows, outcome = await migrations(lf, endpoint, count=args.migrations, rate=args.rate)
            if results[-1]["target"] == "c2":
                await lf.fed.call("c1", "POST", "/v1/services/classifier/migrate", {"target": "c1"})
                await wait_until(lambda: settled_at(lf, "c1", endpoint), timeout=30, what="one copy at c1")
            fails = []
            for i in range(args.failsafes):
                fails.append(await failsafe(lf, endpoint, rate=args.rate))
                print(f"  fail-safe {i + 1}: c1 answers {fails[-1]['back_ms']:.0f} ms after the kill", flush=True)
        except BaseException:
            print(dump_logs(lf.fed), file=sys.stderr)  # the agents' logs die with the temporary dir
            raise
        finally:
            await lf.close()
    cold += cold_starts(args.cold_starts, host=addrs["c3"], port=41700 + args.cold_starts)
    print()
    print(f"migration stages over {len(results)} migrations (c1 -> c2 -> c3 -> c1 ..., HC coordinates):")
    for line in stage_table(results, walls) + load_lines(outcome, windows):
        print(line)
    print("\nwhere the answer's time goes (cleanup comes after it):")
    for line in profile_lines(results, walls):
        print(line)
    print()
    medians: dict[int, float] = {}
    for line in placement_lines(args.reps, medians):
        print(line)
    print()
    if fails:
        print(f"fail-safe: AC (c2) agent group and service SIGKILLed, load {args.rate:.0f} req/s on the HC endpoint")
        for line in failsafe_lines(fails):
            print(line)
    print(f"\nissue 16 goals (cold start measured {len(cold)} times in this run, before and after the agents):")
    for line in goal_lines(results, walls, cold, fails, medians.get(1000, float("nan")), outcome.failed, idle):
        print(line)
    print(f"\nend: {machine_line()}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--migrations", type=int, default=30)
    parser.add_argument("--failsafes", type=int, default=5)
    parser.add_argument("--rate", type=float, default=200.0, help="open-loop requests per second")
    parser.add_argument("--reps", type=int, default=200, help="placement calls timed per size")
    parser.add_argument("--cold-starts", type=int, default=5, help="cold starts measured before and after")
    parser.add_argument("--idle", type=float, default=10.0,
                        help="seconds of the idle window (no service) measured once the agents are up; 0: none")
    parser.add_argument("--settle", type=float, default=5.0,
                        help="seconds between every agent seeing every member alive and the idle window")
    parser.add_argument("--addr", default=ADDRS["c1"], help="c1's loopback address; c2, c3 take the next two")
    run(main(parser.parse_args()))
