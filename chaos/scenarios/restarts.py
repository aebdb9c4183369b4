"""Agent restarts (issue 12): a SIGTERM stops the agent only, its HAProxy and services keep
serving, and the next start adopts them. Operators restart agents for every upgrade and
config change, at any moment, also while a migration runs.

`agent-restarts` restarts agents (SIGTERM, then a start on the same data dir) at random
moments chosen by the seed: every other round in the middle of a migration, the victim being
its coordinator, its source or its target. Open-loop load runs straight at every entry of
every service the whole time (`rate` in total). After each restart the federation must come
back to one copy per service, agreeing records, one steward and every entry serving; over the
whole run no request may be lost.
"""
from __future__ import annotations

import asyncio
import statistics
import time
from typing import Any

from chaos.cluster import AgentRestart
from chaos.scenarios import Scenario
from chaos.scenarios.context import ScenarioContext
from chaos.scenarios.crashes import migration_outcome
from chaos.scenarios.homeset import Homes, deploy, direct_label, failed_so_far, view
from chaos.verdict import wait_settled

ROUNDS = 6
RESTART_AT = (0.0, 1.0)  # seconds of load before a plain restart
MID_MIGRATION_AT = (0.0, 0.6)  # a migration takes ~0.3-0.6 s here: restart at any stage of it
SETTLE = 1.0  # load runs this long before the first round and after the last
CONVERGE_DEADLINE = 60.0


async def agent_restarts(ctx: ScenarioContext) -> None:
    names = ctx.clusters
    services: dict[str, Homes] = {}
    for i in range(ctx.services):
        name = f"s{i + 1}"
        homes = await deploy(ctx, name, names[i % len(names)])
        for cluster in homes.homes:  # the service's share of the rate, split over its entries
            ctx.loads.add(direct_label(name, cluster), homes.endpoint(cluster),
                          rate=ctx.rate / len(homes.homes))
        services[name] = homes
    await ctx.hold(SETTLE)
    settled: list[float] = []
    for r in range(ROUNDS):
        if r % 2 == 1:
            victim, what = await _restart_mid_migration(ctx, r, sorted(services))
        else:
            victim = ctx.rng.choice(names)
            await ctx.hold(round(ctx.rng.uniform(*RESTART_AT), 3))
            await ctx.inject(AgentRestart(ctx.fed, victim))
            what = "plain"
        back = time.monotonic()
        ev, _ = await wait_settled(ctx.fed, ctx.probe, ctx.endpoints, timeout=CONVERGE_DEADLINE,
                                   members=False, homes=True, interval=0.2, on_change=ctx.trace_settling)
        took = round(ev.at - back, 3)
        ctx.log("converged" if ev.ok else "not-converged", round=r, victim=victim, what=what,
                after_s=took, **({} if ev.ok else {"failing": ev.failing()[:400]}))
        ctx.report.row("restarts", round=r, victim=victim, what=what, converged_after_s=took if ev.ok else None)
        ctx.expect(f"converged_after_restart[{r}]", ev.ok,
                   f"{victim} ({what}): one copy, records agree, one steward, every entry serves "
                   f"{took}s after it was back" if ev.ok else ev.failing()[:400])
        if ev.ok:
            settled.append(took)
    await ctx.hold(SETTLE)
    if settled:
        ctx.report.figure("restart_to_converged_median_s", round(statistics.median(settled), 3), "s")
        ctx.report.figure("restart_to_converged_max_s", max(settled), "s")
    lost = {label: failed_so_far(ctx, label) for label in ctx.loads.live}
    total = sum(lost.values())
    sent = sum(c.sent for c in ctx.loads.live.values())
    ctx.report.figure("lost_across_restarts", total, f"of {sent} requests")
    ctx.expect("nothing_lost_across_restarts", total == 0,
               f"{total} of {sent} requests lost ({lost}) over {ROUNDS} restarts")


async def _restart_mid_migration(ctx: ScenarioContext, r: int, services: list[str]) -> tuple[str, str]:
    """Start a migration at the service's steward and restart one of its parties mid-way."""
    name = ctx.rng.choice(services)
    home = ctx.deployed[name].home
    now = await view(ctx, home, name)
    source = now.location if now is not None else home
    coordinator = (now.steward if now is not None and now.steward else home)
    target = ctx.rng.choice([c for c in ctx.clusters if c != source])
    victim = ctx.rng.choice(sorted({coordinator, source, target}))
    delay = round(ctx.rng.uniform(*MID_MIGRATION_AT), 3)
    call = asyncio.create_task(ctx.fed.migrate(coordinator, name, target, timeout=60))
    await ctx.hold(delay)
    await ctx.inject(AgentRestart(ctx.fed, victim))
    outcome = await migration_outcome(call)
    role = "/".join(x for x, c in (("coordinator", coordinator), ("source", source), ("target", target))
                    if c == victim)
    ctx.log("mid-migration", round=r, service=name, source=source, target=target, victim=victim,
            role=role, restart_after_s=delay, call=outcome)
    return victim, f"{role} of {name} {source}->{target} after {delay}s ({outcome})"


SCENARIOS = [
    Scenario("agent-restarts", agent_restarts,
             "agents SIGTERMed and started again at random moments, also mid-migration, under "
             "load at every entry: nothing lost, one copy, records agree", services=2,
             home_checks=True),
]
