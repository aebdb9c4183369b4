"""Whole sites lost, cut off and returning (issue 14; DESIGN "The home set"; TESTING "Losing a
whole site"): no cluster may be a single point of failure for the services it homes.

Each scenario runs the entry-list client (`chaos.entries`: next entry on failure, back to the
first once it serves) as the service's main load, and loads straight at single entries where
a figure is about one entry. Figures: requests lost at a surviving entry, time until a
surviving entry serves, stewardship handover, home-set repair, and time to converge (one
copy, one steward, agreeing records, every entry serving) after a heal or a return.
"""
from __future__ import annotations

import asyncio
import time

from chaos.faults import Isolate
from chaos.scenarios import Scenario, ScenarioFn
from chaos.scenarios.context import ScenarioContext
from chaos.scenarios.homeset import (
    converge, deploy, direct_label, failed_so_far, frontend_slots, migrate_planned, start_loads,
    wait_closed, wait_repaired, wait_serving, wait_steward, view,
)
from chaos.siteloss import SiteLoss

REPAIR_AFTER = 3.0  # --repair-after for these scenarios (default 10 s): shorter runs
AGENT_ARGS = ("--repair-after", str(REPAIR_AFTER))
DEADLINE = 30.0  # for anything that must happen after a loss (figures say how fast it was)
HANDOVER_GOAL = 2.0  # issue 14: a surviving entry serves within 2 s of the HC's site loss
RETURN_GOAL = 5.0  # issue 14: converged within 5 s of the HC's return
SETTLE = 2.0  # load runs this long before a fault, and after the last step


async def hc_site_loss_abroad(ctx: ScenarioContext) -> None:
    """Homed at c1, running at c2; c1's site is lost. The service must keep being served
    through the surviving entry without a single lost request, stewardship must move, a
    survivor must be able to migrate it, and the home set must be repaired."""
    hc, ac, third = ctx.clusters[:3]
    name = "s1"
    await deploy(ctx, name, hc)
    await ctx.migrate(hc, name, ac)
    homes = await view(ctx, hc, name)
    assert homes is not None and homes.location == ac, homes
    deputy = homes.deputy
    label = direct_label(name, deputy)
    start_loads(ctx, homes, direct=[deputy])
    await ctx.hold(SETTLE)
    before = failed_so_far(ctx, label), failed_so_far(ctx, name)
    await ctx.inject(SiteLoss(ctx.fed, hc))
    lost_at = time.monotonic()
    handover = await wait_steward(ctx, name, deputy, not_=hc, since=lost_at, timeout=DEADLINE)
    ctx.report.figure("stewardship_handover_s", handover, "s")
    ctx.expect("stewardship_handed_over", handover is not None,
               f"{deputy} names a new steward after {handover}s" if handover is not None
               else f"{deputy} still names {hc} (or none) after {DEADLINE}s")
    moved = await migrate_planned(ctx, ac, name, third)
    ctx.expect("migration_after_hc_site_loss", moved is not None and moved.get("target") == third,
               f"{name} moved to {third} through {ac}'s API, coordinated by "
               f"{None if moved is None else moved.get('coordinator')}")
    repaired, fixed = await wait_repaired(ctx, name, deputy, lost=hc, wanted=len(homes.homes),
                                          since=lost_at, timeout=REPAIR_AFTER + DEADLINE)
    ctx.report.figure("home_set_repaired_s", repaired, "s")
    ctx.expect("home_set_repaired", repaired is not None,
               f"{list(fixed.homes) if fixed else '?'} after {repaired}s (repair_after "
               f"{REPAIR_AFTER}s), every live entry serving" if repaired is not None
               else f"{name}'s home set still relies on {hc} after {REPAIR_AFTER + DEADLINE}s")
    await ctx.hold(SETTLE)
    _lost_figures(ctx, name, label, before)


def _lost_figures(ctx: ScenarioContext, name: str, label: str, before: tuple[int, int]) -> None:
    """Requests lost since the fault: straight at the surviving entry (goal 0: a check), and
    by the entry-list client (a figure)."""
    at_entry = failed_so_far(ctx, label) - before[0]
    by_client = failed_so_far(ctx, name) - before[1]
    ctx.report.figure("lost_at_surviving_entry", at_entry, f"requests at {ctx.rate:.0f}/s")
    ctx.report.figure("lost_by_entry_client", by_client, f"requests at {ctx.rate:.0f}/s")
    ctx.expect("nothing_lost_at_surviving_entry", at_entry == 0,
               f"{at_entry} requests lost through {label.split('@')[1]}'s entry, "
               f"{by_client} by the entry-list client, since the site loss")


async def hc_site_loss_home(ctx: ScenarioContext) -> None:
    """Running at its HC c1 when c1's site is lost: a surviving entry must serve it again
    (the new steward's fail-safe redeploys it), measured from the loss."""
    hc = ctx.clusters[0]
    name = "s1"
    homes = await deploy(ctx, name, hc)
    deputy = homes.deputy
    start_loads(ctx, homes, direct=[deputy])
    await ctx.hold(SETTLE)
    survivors = [c for c in ctx.clusters if c != hc]
    await ctx.inject(SiteLoss(ctx.fed, hc))
    lost_at = time.monotonic()
    served, handover = await asyncio.gather(
        wait_serving(ctx, homes.endpoint(deputy), survivors, timeout=DEADLINE,
                     what=f"{name} served through {deputy}'s entry"),
        wait_steward(ctx, name, deputy, not_=hc, since=lost_at, timeout=DEADLINE))
    served = None if served is None else round(served, 3)
    ctx.report.figure("served_again_after_hc_site_loss_s", served, "s")
    ctx.report.figure("stewardship_handover_s", handover, "s")
    ctx.expect("served_again_after_hc_site_loss", served is not None,
               f"through {deputy}'s entry after {served}s (goal <= {HANDOVER_GOAL}s), "
               f"steward moved after {handover}s" if served is not None
               else f"not served through {deputy}'s entry within {DEADLINE}s")
    await ctx.hold(SETTLE)


async def hc_isolated(ctx: ScenarioContext) -> None:
    """The HC alone on its side of a partition (clients still reach both sides): each side
    keeps serving through its own entries; after the heal one copy, one steward, agreeing
    records and every entry serving."""
    hc = ctx.clusters[0]
    name = "s1"
    homes = await deploy(ctx, name, hc)
    deputy = homes.deputy
    start_loads(ctx, homes, direct=[hc, deputy])
    await ctx.hold(SETTLE)
    hc_failed = failed_so_far(ctx, direct_label(name, hc))
    cut = await ctx.inject(Isolate(hc, from_client=False))
    others = [c for c in ctx.clusters if c != hc]
    other_side = await wait_serving(ctx, homes.endpoint(deputy), others, timeout=DEADLINE + 15,
                                    what=f"{name} served on the far side through {deputy}")
    ctx.report.figure("far_side_served_after_s", other_side, "s")
    await ctx.hold(SETTLE)  # both sides serve now, each its own copy
    hc_side = await wait_serving(ctx, homes.endpoint(hc), [hc], timeout=5,
                                 what=f"{name} still served at {hc}'s entry")
    lost_at_hc = failed_so_far(ctx, direct_label(name, hc)) - hc_failed
    ctx.report.figure("lost_at_hc_entry_while_isolated", lost_at_hc, "requests")
    ctx.expect("both_sides_serve", other_side is not None and hc_side is not None,
               f"{hc}'s entry from {hc} ({lost_at_hc} lost while cut off), {deputy}'s entry "
               f"from {others} after {other_side}s")
    await ctx.heal(cut)
    healed = time.monotonic()
    ev, took = await converge(ctx, "heal_to_converged", since=healed, timeout=90.0)
    ctx.expect("converged_after_heal", ev.ok,
               f"one copy, one steward, records agree, every entry serves {took}s after "
               "the heal" if ev.ok else ev.failing()[:400])


async def entry_repair(ctx: ScenarioContext) -> None:
    """A non-HC entry's site is lost: after `repair_after` the steward replaces it with a
    cluster placement chooses, and the new entry serves. Then the old entry's site returns
    on its old data dir, whose record still names it an entry: once it has caught up it must
    close its frontend for the service (it is no longer an entry; an open one would serve
    clients still configured with it from a home set they should have left)."""
    hc = ctx.clusters[0]
    name = "s1"
    homes = await deploy(ctx, name, hc)
    victim = homes.deputy
    start_loads(ctx, homes, direct=[hc])
    await ctx.hold(SETTLE)
    before = failed_so_far(ctx, direct_label(name, hc))
    loss = SiteLoss(ctx.fed, victim)
    await ctx.inject(loss)
    lost_at = time.monotonic()
    took, fixed = await wait_repaired(ctx, name, hc, lost=victim, wanted=len(homes.homes),
                                      since=lost_at, timeout=REPAIR_AFTER + DEADLINE)
    ctx.report.figure("entry_replaced_s", took, "s")
    dropped = fixed is not None and victim not in fixed.homes
    ctx.expect("entry_replaced", took is not None and dropped,
               f"{victim} replaced: {list(fixed.homes)} after {took}s (repair_after "
               f"{REPAIR_AFTER}s), the new entry serves" if fixed is not None and dropped
               else f"home set {None if fixed is None else list(fixed.homes)} after "
                    f"{REPAIR_AFTER + DEADLINE}s")
    lost = failed_so_far(ctx, direct_label(name, hc)) - before
    ctx.report.figure("lost_at_hc_entry", lost, "requests")
    ctx.expect("nothing_lost_at_hc_entry", lost == 0,
               f"{lost} requests lost through {hc}'s entry while {victim} was lost")
    await _old_entry_returns(ctx, name, loss, homes.endpoint(victim))
    await ctx.hold(SETTLE)


async def _old_entry_returns(ctx: ScenarioContext, name: str, loss: SiteLoss, endpoint: str) -> None:
    """The replaced entry's site comes back on its old data dir: converged, and its frontend
    for `name` closed (no slot in its HAProxy, its old endpoint serving nothing)."""
    victim = loss.cluster
    had = name in frontend_slots(ctx, victim)  # what its disk holds: the check is not vacuous
    returned = time.monotonic()
    await ctx.heal(loss)
    ev, took = await converge(ctx, "old_entry_return_to_converged", since=returned, timeout=90.0)
    ctx.expect("converged_after_old_entry_returned", ev.ok,
               f"one copy, one steward, records agree, every entry serves {took}s after {victim} "
               "started again" if ev.ok else ev.failing()[:400])
    closed = await wait_closed(ctx, name, victim, endpoint, since=returned, timeout=DEADLINE)
    ctx.report.figure("old_entry_closed_frontend_s", closed, "s")
    ctx.expect("old_entry_closed_its_frontend", had and closed is not None,
               f"{victim} closed its frontend {endpoint} for {name} {closed}s after it returned"
               if had and closed is not None else
               f"{victim}'s data dir held no frontend for {name} before it returned" if not had else
               f"{victim} still holds a frontend for {name} (slots {sorted(frontend_slots(ctx, victim))}) "
               f"or {endpoint} still serves it {DEADLINE}s after it returned")


async def hc_returns(ctx: ScenarioContext, *, wipe: bool = False) -> None:
    """The HC's site is lost (service at home), the survivors take over and repair the home
    set; then the HC returns on its old data dir (or an empty one, `wipe`): time from its
    return to one copy, one steward, agreeing records and every entry serving."""
    hc = ctx.clusters[0]
    name = "s1"
    homes = await deploy(ctx, name, hc)
    deputy = homes.deputy
    start_loads(ctx, homes, direct=[deputy])
    await ctx.hold(SETTLE)
    survivors = [c for c in ctx.clusters if c != hc]
    loss = await ctx.inject(SiteLoss(ctx.fed, hc, wipe=wipe))
    lost_at = time.monotonic()
    served = await wait_serving(ctx, homes.endpoint(deputy), survivors, timeout=DEADLINE,
                                what=f"{name} served through {deputy}'s entry")
    repaired, _ = await wait_repaired(ctx, name, deputy, lost=hc, wanted=len(homes.homes),
                                      since=lost_at, timeout=REPAIR_AFTER + DEADLINE)
    ctx.expect("survivors_took_over", served is not None and repaired is not None,
               f"served after {served}s, home set repaired after {repaired}s")
    await ctx.hold(SETTLE)
    returned = time.monotonic()
    await ctx.heal(loss)
    ctx.log("returned", cluster=hc, wiped=wipe, start_s=round(time.monotonic() - returned, 3))
    label = "hc_return_empty_to_converged" if wipe else "hc_return_to_converged"
    ev, took = await converge(ctx, label, since=returned, timeout=90.0)
    ctx.expect("converged_after_return", ev.ok,
               f"one copy, one steward, records agree, every entry serves {took}s after "
               f"{hc} started again (goal <= {RETURN_GOAL}s)" if ev.ok else ev.failing()[:400])
    await ctx.hold(SETTLE)


async def hc_returns_empty(ctx: ScenarioContext) -> None:
    await hc_returns(ctx, wipe=True)


def _scenario(name: str, run: ScenarioFn, about: str) -> Scenario:
    return Scenario(name, run, about, agent_args=AGENT_ARGS, home_checks=True)


SCENARIOS = [
    _scenario("hc-site-loss-abroad", hc_site_loss_abroad,
              "the HC's whole site lost while the service runs abroad: served, movable, repaired"),
    _scenario("hc-site-loss-home", hc_site_loss_home,
              "the HC's whole site lost with the service at home: a surviving entry serves"),
    _scenario("hc-isolated", hc_isolated,
              "the HC alone on its side of a partition: both sides serve; one copy after"),
    _scenario("entry-repair", entry_repair,
              "a non-HC entry's site lost: replaced by placement after repair_after"),
    _scenario("hc-returns", hc_returns,
              "the HC's site lost, then back on its old data dir: converged soon after"),
    _scenario("hc-returns-empty", hc_returns_empty,
              "the HC's site lost, then rebuilt on an empty data dir: records recovered from "
              "peers, converged soon after"),
]
