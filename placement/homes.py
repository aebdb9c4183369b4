"""Choosing a service's home set (beyond the paper): which clusters' load balancers serve its
endpoints. Pure.

Entries exist so that losing one site does not take the endpoint with it, so they are spread
over failure domains first (a tier other than the ones already chosen), then over the less
loaded clusters; ties break by name so every cluster computes the same set.
"""
from __future__ import annotations

from collections.abc import Iterable

from placement.model import ClusterView


def _load(view: ClusterView) -> float:
    cpu = view.cpu_used / view.cpu_capacity if view.cpu_capacity > 0 else 1.0
    slots = view.slots_used / view.slots_capacity if view.slots_capacity > 0 else 1.0
    return max(cpu, slots)


def choose_entries(views: Iterable[ClusterView], *, chosen: Iterable[str], tiers: Iterable[str],
                   count: int, exclude: Iterable[str] = (), home: str | None = None) -> list[str]:
    """Up to `count` more entries among the live, accepting `views`, given the entries already
    `chosen` and their `tiers`; never one of `exclude`, nor one whose policy refuses `home`."""
    taken = set(chosen) | set(exclude)
    used_tiers = set(tiers)
    pool = [v for v in views if v.alive and v.accepting and v.name not in taken and v.takes_home(home)]
    picked: list[str] = []
    while pool and len(picked) < count:
        best = min(pool, key=lambda v: (v.tier in used_tiers, _load(v), v.name))
        picked.append(best.name)
        used_tiers.add(best.tier)
        pool.remove(best)
    return picked
