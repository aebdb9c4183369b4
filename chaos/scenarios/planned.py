"""planned-migration: under open-loop load through each HC endpoint, every service tours the
federation and comes home, with HC-coordinated moves, AC-coordinated multi-hop moves (paper
Fig. 4, Migration 2) and abroad-to-abroad moves; not one request may be lost in any window.
"""
from __future__ import annotations

from chaos.scenarios import Scenario
from chaos.scenarios.context import ScenarioContext

WARM_UP = 1.0
BETWEEN = 0.5


def tour(clusters: list[str], home: str) -> list[str]:
    """Targets visiting every other cluster once, then home: c2, c3, ..., c1."""
    i = clusters.index(home)
    return clusters[i + 1:] + clusters[:i] + [home]


async def planned_migration(ctx: ScenarioContext) -> None:
    names = ctx.clusters
    for i in range(ctx.services):
        await ctx.deploy(f"s{i + 1}", names[i % len(names)])
    await ctx.hold(WARM_UP)
    for name, dep in list(ctx.deployed.items()):
        current = dep.home
        for hop, target in enumerate(tour(names, dep.home)):
            # alternate the coordinator: HC, then the cluster running it (multi-hop), ...
            coordinator = dep.home if hop % 2 == 0 else current
            await ctx.migrate(coordinator, name, target)
            current = target
            await ctx.hold(BETWEEN)
        served = await ctx.served_by(name)
        ctx.expect(f"back_home[{name}]", served == dep.home,
                   f"{name} answered from {served}, home is {dep.home}")
    await ctx.hold(WARM_UP)


SCENARIOS = [Scenario("planned-migration", planned_migration,
                      "migrations (incl. multi-hop) under load lose no request")]
