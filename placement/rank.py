"""Answering a Placement Request: filter members that cannot take the service, score the rest.

`screen` is the single source of truth for "can this member take it": `rank` filters with it, and
the target of a replication calls it (as `admit`, over one member) on its own, fresher view before
accepting. So a target never
refuses what a consistent ranking offered it, except when its load changed in between.
"""
from __future__ import annotations

from collections.abc import Iterable
from functools import partial

from placement.errors import DuplicateCluster
from placement.model import Candidate, ClusterView, Placement, Rejection, Requirements
from placement.policies import DEFAULT_POLICY, Policy

# Absorbs float noise in gossip (0.1 + 0.2 cores on a 0.3-core host still fits).
_CPU_EPSILON = 1e-9


def admit(req: Requirements, view: ClusterView) -> Rejection | None:
    """None if `view` can take one instance of the service now; otherwise why not.

    Checks, in this order (the reason starts with the code): `not-alive`, `not-accepting`,
    `avoided`, `policy`, `tier`, `cpu`, `memory`, `slots`.
    """
    _, rejected = screen(req, (view,))
    return rejected[0] if rejected else None


def screen(req: Requirements, views: Iterable[ClusterView]) -> tuple[list[ClusterView], list[Rejection]]:
    """The members that can take the service (in input order) and why each other one cannot.

    The one copy of the admission rules (`admit` is this over one member). It screens a whole
    view list in one loop, with the request's fields read once, because `rank` runs it over every
    member of the federation for each Placement Request. Raises `DuplicateCluster` if two views
    share a name.
    """
    cpu, memory, avoid, tiers, home = req.cpu, req.memory, req.avoid, req.tiers, req.home
    admitted: list[ClusterView] = []
    rejected: list[Rejection] = []
    seen: set[str] = set()
    for view in views:
        name = view.name
        if name in seen:
            raise DuplicateCluster(name)
        seen.add(name)
        if not view.alive:
            reason = "not-alive: member is failed or has left"
        elif not view.accepting:
            reason = "not-accepting: member is draining or shutting down"
        elif name in avoid:
            reason = "avoided: excluded by the request"
        elif home is not None and not view.takes_home(home):
            reason = f"policy: does not accept services homed at {home}"
        elif tiers and view.tier not in tiers:
            reason = f"tier: {view.tier!r} is not one of {', '.join(sorted(tiers))}"
        elif cpu > (cpu_free := view.cpu_capacity - view.cpu_used) + _CPU_EPSILON:
            reason = f"cpu: needs {cpu:g} cores, {max(cpu_free, 0.0):g} free"
        elif memory > (mem_free := view.mem_capacity - view.mem_used):
            reason = f"memory: needs {memory} bytes, {max(mem_free, 0)} free"
        elif view.slots_used + 1 > view.slots_capacity:
            reason = f"slots: all {view.slots_capacity} service slots in use"
        else:
            admitted.append(view)
            continue
        rejected.append(Rejection(name, reason))
    return admitted, rejected


def rank(
    req: Requirements,
    views: Iterable[ClusterView],
    *,
    home: str,
    policy: Policy | None = None,
) -> Placement:
    """Acceptable members best first (ties broken by name), and the rejected ones by name.

    The result depends only on the set of views, not their order. Raises `DuplicateCluster` if
    two views share a name (the agent must merge them first); an empty input gives an empty
    placement.
    """
    chosen = DEFAULT_POLICY if policy is None else policy
    admitted, rejected = screen(req, views)
    rejected.sort(key=_name_of)
    values = getattr(chosen, "values", None)  # scores without reasons, in one call (Policy)
    if values is None:
        explained = [(-score, view.name, view, reasons)
                     for view in admitted for score, reasons in (chosen.score(req, view, home=home),)]
        explained.sort(key=_order)
        return Placement(ranked=tuple(Candidate(name, -neg, reasons) for neg, name, _, reasons in explained),
                         rejected=tuple(rejected))
    # (-score, name, view): names are unique, so sorting never compares views.
    entries = [(-score, view.name, view) for score, view in zip(values(req, admitted, home=home), admitted)]
    entries.sort()
    explain = partial(_reasons, chosen, req, home)
    return Placement(ranked=tuple([Candidate(name, -neg, None, explain, view) for neg, name, view in entries]),
                     rejected=tuple(rejected))


def _reasons(policy: Policy, req: Requirements, home: str, view: ClusterView) -> tuple[str, ...]:
    return policy.score(req, view, home=home)[1]


def _order(entry: tuple[float, str, ClusterView, tuple[str, ...]]) -> tuple[float, str]:
    return entry[0], entry[1]


def _name_of(rejection: Rejection) -> str:
    return rejection.name
