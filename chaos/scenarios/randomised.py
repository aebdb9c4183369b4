"""random: a seeded nemesis schedule (after Jepsen) over N clusters and M services, while a
mover asks for migrations at random. Faults: isolate one, halves, bridge, one-way cut,
bandwidth drop, SIGKILL/SIGSTOP of a Serf, an HAProxy or a service, an agent crash (restarted
when the fault ends) and an agent pause. Everything is healed at the end and the generic
checkers judge the federation once it is quiet. Replay a failure with the same seed.
"""
from __future__ import annotations

import asyncio
import random
from collections.abc import Sequence

from chaos.cluster import AgentCrash
from chaos.faults import Fault, Pause
from chaos.scenarios import Scenario
from chaos.scenarios.context import ScenarioContext
from chaos.schedule import NETWORK_KINDS, FaultKind, FaultSchedule, play, process_kinds

MOVE_GAP = (3.0, 8.0)
FAULT_GAP = (2.0, 6.0)
FAULT_DURATION = (3.0, 12.0)


def _agent_kinds(ctx: ScenarioContext) -> list[FaultKind]:
    def crash(rng: random.Random, clusters: Sequence[str]) -> Fault:
        return AgentCrash(ctx.fed, rng.choice(list(clusters)))

    def pause(rng: random.Random, clusters: Sequence[str]) -> Fault:
        cluster = rng.choice(list(clusters))
        return Pause(ctx.fed.agent_pgid(cluster), group=True, label=f"{cluster}/agent")

    return [crash, pause]


async def _mover(ctx: ScenarioContext, rng: random.Random, stop: asyncio.Event) -> None:
    names = ctx.clusters
    while not stop.is_set():
        try:
            await asyncio.wait_for(stop.wait(), rng.uniform(*MOVE_GAP))
            return
        except TimeoutError:
            pass
        name = rng.choice(sorted(ctx.deployed))
        home = ctx.deployed[name].home
        by_home = rng.random() < 0.5
        pick = rng.random()
        where = await ctx.location(name) or home
        target = sorted(set(names) - {where})[int(pick * (len(names) - 1))]
        coordinator = home if by_home else where
        if ctx.fed.agents[coordinator].running:
            await ctx.attempt_migrate(coordinator, name, target, timeout=30)


async def random_schedule(ctx: ScenarioContext) -> None:
    names = ctx.clusters
    for i in range(ctx.services):
        name = f"s{i + 1}"
        home = ctx.rng.choice(names)
        await ctx.deploy(name, home)
        if ctx.rng.random() < 0.5:
            await ctx.migrate(home, name, ctx.rng.choice([c for c in names if c != home]))
    services = sorted(ctx.deployed)
    kinds = (*NETWORK_KINDS, *process_kinds(ctx.fed.pid_targets(services=services)),
             *_agent_kinds(ctx))
    schedule = FaultSchedule(ctx.seed, tuple(names), ctx.duration, kinds=kinds,
                             gap=FAULT_GAP, duration=FAULT_DURATION)
    entries = schedule.entries()
    for entry in entries:
        ctx.report.row("schedule", at=entry.at, duration=entry.duration,
                       fault=entry.fault.describe())
    ctx.log("schedule", faults=len(entries), seconds=ctx.duration)
    stop = asyncio.Event()
    mover = asyncio.create_task(_mover(ctx, random.Random(ctx.seed + 1), stop))
    try:
        await play(entries, ctx.nemesis, skip_failed=True)
    finally:
        stop.set()
        await mover
    for name, agent in ctx.fed.agents.items():  # a failed restart gets one more try
        if not agent.running:
            await AgentCrash(ctx.fed, name).heal(ctx.tb)
    await ctx.converge("schedule over")


SCENARIOS = [Scenario("random", random_schedule,
                      "seeded random faults and migrations, then the checkers",
                      services=6, duration=60.0)]
