"""Network partitions: HC|AC, halves with migrations tried on both sides, a bridge node that
sees both sides, and a flapping AC link. In each, an HC that loses its AC fails the service
over, and after the heal the federation must come back to one copy with agreeing records.
"""
from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence

from chaos.faults import Bridge, Halves, LinkDown, Partition
from chaos.scenarios import Scenario
from chaos.scenarios.context import ScenarioContext

FAILOVER_DEADLINE = 45.0  # the isolated side's Serf alone takes 20-25 s; HAProxy is faster


async def _place(ctx: ScenarioContext, name: str, home: str, at: str) -> None:
    await ctx.deploy(name, home)
    if at != home:
        await ctx.migrate(home, name, at)


async def _failovers(ctx: ScenarioContext, wanted: dict[str, set[str]], *, check: str) -> None:
    """Wait until each service answers from one of its allowed clusters; one check for all."""
    names = list(wanted)
    took = await asyncio.gather(*(
        ctx.wait_served_from(n, wanted[n], timeout=FAILOVER_DEADLINE,
                             what=f"{n} served from {sorted(wanted[n])}") for n in names))
    late = [n for n, t in zip(names, took) if t is None]
    ctx.expect(check, not late, f"not served within {FAILOVER_DEADLINE}s: {late}" if late
               else f"{len(names)} failed over, slowest after {max((t for t in took if t is not None), default=0.0):.2f}s")


async def hc_ac_partition(ctx: ScenarioContext) -> None:
    names = ctx.clusters
    hc, ac = names[0], names[1]
    for i in range(ctx.services):
        await _place(ctx, f"s{i + 1}", hc, ac)
    await ctx.hold(1.0)
    cut = await ctx.inject(Partition([hc], [ac]))
    await _failovers(ctx, {n: set(names) - {ac} for n in ctx.deployed},
                     check="failover_during_partition")
    await ctx.hold(3.0)  # both copies run now; the AC does not know it lost the service
    await ctx.heal(cut)
    await ctx.converge("partition healed")


def _sides(names: Sequence[str]) -> tuple[list[str], list[str]]:
    half = len(names) // 2
    return list(names[:half]), list(names[half:])


async def halves(ctx: ScenarioContext) -> None:
    names = ctx.clusters
    a, b = _sides(names)
    await _place(ctx, "cross-a", a[0], b[0])  # home on side A, running on side B
    await _place(ctx, "cross-b", b[-1], a[-1])  # home on side B, running on side A
    await _place(ctx, "local-b", b[0], b[0])
    for i in range(3, ctx.services):
        await _place(ctx, f"s{i + 1}", ctx.rng.choice(names), ctx.rng.choice(names))
    await ctx.hold(1.0)
    cut = await ctx.inject(Halves(names))
    await _failovers(ctx, {"cross-a": set(a), "cross-b": set(b)}, check="failover_on_both_sides")
    # migrations attempted on both sides during the cut; within a side they must be lossless
    inside = [await ctx.attempt_migrate(b[0], "local-b", b[1], planned=True)]
    across = [await ctx.attempt_migrate(b[-1], "cross-b", a[0], timeout=90)]
    if len(a) > 1:
        inside.append(await ctx.attempt_migrate(a[0], "cross-a", a[1], planned=True))
    else:
        across.append(await ctx.attempt_migrate(a[0], "cross-a", b[0], timeout=90))
    ctx.expect("migrations_within_a_side", all(m is not None for m in inside),
               f"{sum(m is not None for m in inside)}/{len(inside)} succeeded")
    ctx.expect("no_migration_across_the_cut", all(m is None for m in across),
               f"{sum(m is None for m in across)}/{len(across)} refused")
    await ctx.hold(2.0)
    await ctx.heal(cut)
    await ctx.converge("halves healed")


async def bridge(ctx: ScenarioContext) -> None:
    names = ctx.clusters
    node = names[len(names) // 2]
    rest = [c for c in names if c != node]
    left, right = rest[:len(rest) // 2], rest[len(rest) // 2:]
    await _place(ctx, "left-home", left[0], right[0])
    await _place(ctx, "right-home", right[-1], left[-1])
    await _place(ctx, "bridge-home", node, left[0])
    for i in range(3, ctx.services):
        await _place(ctx, f"s{i + 1}", ctx.rng.choice(names), ctx.rng.choice(names))
    await ctx.hold(1.0)
    cut = await ctx.inject(Bridge(node, left, right))
    # an HC keeps (or regains) service wherever it still reaches: its side or the bridge node
    await _failovers(ctx, {"left-home": {*left, node}, "right-home": {*right, node},
                           "bridge-home": set(names)}, check="served_through_the_bridge")
    await ctx.hold(8.0)  # let gossip's indirect probes through the bridge do their worst
    await ctx.heal(cut)
    await ctx.converge("bridge healed")


async def flapping_link(ctx: ScenarioContext) -> None:
    names = ctx.clusters
    hc, ac = names[0], names[1]
    await _place(ctx, "flappy", hc, ac)
    bystander_home, bystander_at = names[2], names[-1]
    await _place(ctx, "bystander", bystander_home, bystander_at)
    for i in range(2, ctx.services):
        await _place(ctx, f"s{i + 1}", hc, ac)
    await ctx.hold(1.0)
    t0 = time.monotonic()
    flaps = 0
    while time.monotonic() - t0 < ctx.duration:
        down = await ctx.inject(LinkDown(ac))
        await ctx.hold(ctx.rng.uniform(1.0, 4.0))
        await ctx.heal(down)
        await ctx.hold(ctx.rng.uniform(1.0, 4.0))
        flaps += 1
    # a service the flapping link does not carry must not notice it
    ctx.windows.setdefault("bystander", {})["while flapping"] = (t0, time.monotonic())
    ctx.report.figure("flaps", flaps)
    await ctx.heal()
    await ctx.converge("link steady")


SCENARIOS = [
    Scenario("hc-ac-partition", hc_ac_partition, "partition HC|AC: fail-over, heal, converge"),
    Scenario("halves", halves, "halves with migrations on both sides, heal, converge",
             services=3),
    Scenario("bridge", bridge, "a node sees both sides of a cut", services=3),
    Scenario("flapping-link", flapping_link, "the AC's link goes down and up repeatedly",
             services=2, duration=30.0),
]
