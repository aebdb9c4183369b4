"""Answering a Placement Request: filter members that cannot take the service, score the rest.

`admit` is the single source of truth for "can this member take it": `rank` filters with it, and
the target of a replication calls it on its own, fresher view before accepting. So a target never
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
    if not view.alive:
        return Rejection(view.name, "not-alive: member is failed or has left")
    if not view.accepting:
        return Rejection(view.name, "not-accepting: member is draining or shutting down")
    if view.name in req.avoid:
        return Rejection(view.name, "avoided: excluded by the request")
    if not view.takes_home(req.home):
        return Rejection(view.name, f"policy: does not accept services homed at {req.home}")
    if req.tiers and view.tier not in req.tiers:
        allowed = ", ".join(sorted(req.tiers))
        return Rejection(view.name, f"tier: {view.tier!r} is not one of {allowed}")
    cpu_free = view.cpu_capacity - view.cpu_used
    if req.cpu > cpu_free + _CPU_EPSILON:
        return Rejection(view.name, f"cpu: needs {req.cpu:g} cores, {max(cpu_free, 0.0):g} free")
    mem_free = view.mem_capacity - view.mem_used
    if req.memory > mem_free:
        return Rejection(view.name, f"memory: needs {req.memory} bytes, {max(mem_free, 0)} free")
    if view.slots_used + 1 > view.slots_capacity:
        return Rejection(
            view.name, f"slots: all {view.slots_capacity} service slots in use"
        )
    return None


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
    value = getattr(chosen, "value", None)  # the score without its reasons (policies.Policy)
    seen: set[str] = set()
    # (-score, name, view, reasons): names are unique, so sorting never compares further.
    entries: list[tuple[float, str, ClusterView, tuple[str, ...] | None]] = []
    rejected: list[Rejection] = []
    for view in views:
        name = view.name
        if name in seen:
            raise DuplicateCluster(name)
        seen.add(name)
        refusal = admit(req, view)
        if refusal is not None:
            rejected.append(refusal)
        elif value is None:
            score, reasons = chosen.score(req, view, home=home)
            entries.append((-score, name, view, reasons))
        else:
            entries.append((-value(req, view, home=home), name, view, None))
    entries.sort(key=_order)
    scored = [Candidate(name, -neg, reasons) if reasons is not None
              else Candidate(name, -neg, explain=partial(_reasons, chosen, req, view, home))
              for neg, name, view, reasons in entries]
    rejected.sort(key=lambda r: r.name)
    return Placement(ranked=tuple(scored), rejected=tuple(rejected))


def _reasons(policy: Policy, req: Requirements, view: ClusterView, home: str) -> tuple[str, ...]:
    return policy.score(req, view, home=home)[1]


def _order(entry: tuple[float, str, ClusterView, tuple[str, ...] | None]) -> tuple[float, str]:
    return entry[0], entry[1]
