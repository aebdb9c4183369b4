"""Crashes: the AC dies with its services (the HC's fail-safe must redeploy and reroute), and
a coordinator agent is SIGKILLed while a migration is in flight (its journal must bring the
federation back to exactly one routed copy after a restart).
"""
from __future__ import annotations

import asyncio
from typing import Any

from chaos.cluster import AdminAPIError, AgentCrash
from chaos.faults import Composite, Kill, Pause
from chaos.scenarios import Scenario
from chaos.scenarios.context import ScenarioContext

FAILOVER_DEADLINE = 30.0
RESUME_DEADLINE = 30.0  # a resumed cluster must not keep a copy nobody routes to for longer
KILL_DELAY = (0.0, 0.8)  # a migration takes ~0.3-0.6 s here: kill at any stage of it


async def ac_crash(ctx: ScenarioContext) -> None:
    names = ctx.clusters
    victim = names[1]
    homes = [c for c in names if c != victim]
    for i in range(ctx.services):
        await ctx.deploy(f"s{i + 1}", homes[i % len(homes)])
    for name, dep in ctx.deployed.items():
        await ctx.migrate(dep.home, name, victim)
    await ctx.hold(1.0)
    services = list(ctx.deployed)

    def copies() -> list[int]:
        return [g for s in services for g in ctx.fed.service_pgids(s, [victim])()]

    crash = Composite((AgentCrash(ctx.fed, victim),
                       Kill(copies, group=True, label=f"{victim}/services")))
    await ctx.inject(crash)
    took = await asyncio.gather(*(
        ctx.wait_served_from(name, set(names) - {victim}, timeout=FAILOVER_DEADLINE,
                             what=f"{name} served again after {victim} crashed")
        for name in services))
    late = [s for s, t in zip(services, took) if t is None]
    ctx.expect("failover_after_ac_crash", not late,
               f"not served within {FAILOVER_DEADLINE}s: {late}" if late else
               f"{len(services)} services served again, slowest after {max((t for t in took if t is not None), default=0.0):.2f}s")
    await ctx.hold(2.0)
    await ctx.heal(crash)  # restarts the AC's agent on its data dir
    await ctx.converge("ac restarted")


async def agent_killed_mid_migration(ctx: ScenarioContext) -> None:
    names = ctx.clusters
    name = "s1"
    dep = await ctx.deploy(name, names[0])
    for i in range(1, ctx.services):
        await ctx.deploy(f"s{i + 1}", names[i % len(names)])  # bystanders under load
    await ctx.hold(1.0)
    rounds = 3 if len(names) <= 3 else 4
    for r in range(rounds):
        current = await ctx.location(name) or dep.home
        if r % 2 == 1 and current == dep.home:  # odd rounds: the AC coordinates a multi-hop
            current = ctx.rng.choice([c for c in names if c != dep.home])
            await ctx.migrate(dep.home, name, current)
        coordinator = dep.home if r % 2 == 0 else current
        target = ctx.rng.choice([c for c in names if c != current])
        delay = round(ctx.rng.uniform(*KILL_DELAY), 3)
        call = asyncio.create_task(ctx.fed.migrate(coordinator, name, target, timeout=30))
        await ctx.hold(delay)
        crash = AgentCrash(ctx.fed, coordinator)
        await ctx.inject(crash)
        outcome = await migration_outcome(call)
        ctx.log("mid-migration", round=r, coordinator=coordinator, source=current,
                target=target, kill_after_s=delay, call=outcome)
        await ctx.heal(crash)
        ev = await ctx.converge(f"round {r}")
        where, served = await ctx.location(name), await ctx.served_by(name)
        ctx.expect(f"one_routed_copy[round {r}]", ev.ok and where is not None
                   and served == where,
                   f"HC record says {where}, endpoint answered from {served}"
                   + ("" if ev.ok else f"; {ev.failing()[:300]}"))
        ctx.report.row("mid_migration_kills", round=r, coordinator=coordinator,
                       source=current, target=target, kill_after_s=delay, call=outcome,
                       ended_at=where)


async def migration_to_paused_target(ctx: ScenarioContext) -> None:
    """Regression: a migration whose target agent is paused (SIGSTOP, its Serf still alive)
    times out at the coordinator; once resumed, the target handles the stale request and
    starts a copy nobody will route to. It must be gone soon, not after PENDING_TTL."""
    names = ctx.clusters
    hc, target = names[0], names[1]
    name = (await ctx.deploy("s1", hc)).name
    await ctx.hold(1.0)
    stall = await ctx.inject(Pause(ctx.fed.agent_pgid(target), group=True,
                                   label=f"{target}/agent"))
    moved = await ctx.attempt_migrate(hc, name, target, timeout=60)
    ctx.expect("migration_to_paused_target_refused", moved is None,
               "refused" if moved is None else f"succeeded while {target} was paused")
    await ctx.heal(stall)
    ev = await ctx.converge("target resumed", timeout=RESUME_DEADLINE)
    ctx.expect("one_copy_soon_after_resume", ev.ok,
               f"settled within {RESUME_DEADLINE:.0f}s" if ev.ok else ev.failing()[:300])
    again = await ctx.attempt_migrate(hc, name, target, planned=True)
    ctx.expect("migration_after_resume", again is not None,
               "succeeded" if again is not None else f"{target} still refuses {name}")


async def hc_restart_ac_dead(ctx: ScenarioContext) -> None:
    """Regression: the HC's agent is down when its AC dies (agent and services). Once the HC
    is back, Serf on it never hears of the dead AC (gossip does not hand dead members to a
    fresh joiner), so HAProxy's checks and a ping are all the evidence there is: the HC
    must still fail the service over."""
    names = ctx.clusters
    hc, ac = names[0], names[1]
    for i in range(ctx.services):
        await ctx.deploy(f"s{i + 1}", hc)
        await ctx.migrate(hc, f"s{i + 1}", ac)
    await ctx.hold(1.0)
    hc_down = await ctx.inject(AgentCrash(ctx.fed, hc))
    services = list(ctx.deployed)

    def copies() -> list[int]:
        return [g for s in services for g in ctx.fed.service_pgids(s, [ac])()]

    ac_down = await ctx.inject(Composite((AgentCrash(ctx.fed, ac),
                                          Kill(copies, group=True, label=f"{ac}/services"))))
    await ctx.hold(8.0)  # long enough for the survivors' Serf to mark the AC failed
    await ctx.heal(hc_down)
    took = await asyncio.gather(*(
        ctx.wait_served_from(name, set(names) - {ac}, timeout=FAILOVER_DEADLINE,
                             what=f"{name} served again once {hc} is back")
        for name in services))
    late = [s for s, t in zip(services, took) if t is None]
    ctx.expect("failover_after_hc_restart", not late,
               f"not served within {FAILOVER_DEADLINE}s of {hc}'s restart: {late}" if late
               else f"{len(services)} served again")
    await ctx.heal(ac_down)
    await ctx.converge("ac restarted")


async def migration_outcome(call: asyncio.Task[dict[str, Any]]) -> str:
    """What a migrate call that a fault may have cut short came to: its outcome, or the error."""
    try:
        result = await call
    except AdminAPIError as exc:
        return f"error {exc.status}" if exc.status else "connection lost"
    return str(result.get("outcome"))


SCENARIOS = [
    Scenario("ac-crash", ac_crash, "SIGKILL the AC's agent and services: fail-safe"),
    Scenario("agent-killed-mid-migration", agent_killed_mid_migration,
             "SIGKILL the coordinator during a migration, restart it: one routed copy"),
    Scenario("hc-restart-ac-dead", hc_restart_ac_dead,
             "the AC dies while its HC's agent is down; the HC fails over once back"),
    Scenario("migration-to-paused-target", migration_to_paused_target,
             "migrate to a SIGSTOPped agent, resume it: no orphan copy left running"),
]
