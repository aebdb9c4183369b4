"""Steps for scenarios about the home set (DESIGN "The home set"): a service's entries as a
client sees them, loads through the entry list and straight at single entries, and waits for
stewardship to move, an entry to serve, the home set to be repaired, and the federation to
converge with one steward and every entry serving. Each wait returns the seconds it took
(None when it never happened, logged), so scenarios report figures rather than assume them.
"""
from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from lb.hostport import split_hostport
from chaos.cluster import AdminAPIError
from chaos.entries import EntryList
from chaos.scenarios.context import ScenarioContext
from chaos.verdict import Evaluation, wait_settled
from chaos.workload import served_by
from lb.statefile import LBState
from peer.runtime.waiting import WaitTimeout, wait_until

POLL = 0.02  # how finely waits for serving are timed
PROBE_TIMEOUT = 0.3  # a probe answered later than this counts as "not yet" (keeps the timing fine)


@dataclass(frozen=True)
class Homes:
    """One service's home set as a record names it: entries in order and their endpoints."""

    name: str
    homes: tuple[str, ...]
    endpoints: dict[str, str]  # entry cluster -> "ip:port"
    location: str
    steward: str | None

    @property
    def deputy(self) -> str:
        """The second entry: the one that takes over when the HC is lost."""
        return self.homes[1]

    def endpoint(self, cluster: str) -> str:
        return self.endpoints[cluster]


def cluster_of(ctx: ScenarioContext, endpoint: str) -> str | None:
    """The cluster whose address an endpoint is on (each cluster has its own address)."""
    host = split_hostport(endpoint)[0]
    return next((c for c in ctx.clusters if ctx.tb.addr(c) == host), None)


def homes_of(ctx: ScenarioContext, record: dict[str, Any]) -> Homes:
    endpoints = {}
    for ep in record.get("endpoints") or []:
        cluster = cluster_of(ctx, str(ep))
        if cluster is not None:
            endpoints[cluster] = str(ep)
    return Homes(str(record["name"]), tuple(record.get("homes") or [record["home"]]),
                 endpoints, str(record["location"]), record.get("steward"))


async def view(ctx: ScenarioContext, at: str, name: str) -> Homes | None:
    """`name`'s home set in `at`'s view (None if `at` does not answer or keeps no record)."""
    try:
        record = await ctx.fed.record(at, name)
    except AdminAPIError:
        return None
    return None if record is None else homes_of(ctx, record)


def entry_list(ctx: ScenarioContext, homes: Homes) -> EntryList:
    """What a client configured from `roam endpoints NAME` holds: every entry, HC first."""
    order = [c for c in homes.homes if c in homes.endpoints]
    return EntryList.of([f"http://{homes.endpoints[c]}/" for c in order], order)


async def deploy(ctx: ScenarioContext, name: str, home: str) -> Homes:
    """Deploy `name` at `home` (no load yet) and return its home set once every entry serves."""
    await ctx.deploy(name, home, load=False)
    homes = await view(ctx, home, name)
    if homes is None or len(homes.endpoints) != len(homes.homes) or len(homes.homes) < 2:
        raise AssertionError(f"{name}: want two or more entries with endpoints, got {homes}")
    for cluster in homes.homes:
        await wait_serving(ctx, homes.endpoint(cluster), {homes.location}, timeout=30,
                           what=f"{name} through {cluster}'s entry")
    ctx.log("homes", service=name, homes=list(homes.homes), endpoints=homes.endpoints)
    return homes


def direct_label(name: str, cluster: str) -> str:
    return f"{name}@{cluster}"


def start_loads(ctx: ScenarioContext, homes: Homes, *, direct: Iterable[str] = ()) -> None:
    """The entry-list client (labelled with the service's name) and, for each of `direct`,
    a load straight at that cluster's entry (labelled `name@cluster`), all at `ctx.rate`."""
    ctx.loads.add_entries(homes.name, entry_list(ctx, homes))
    for cluster in direct:
        ctx.loads.add(direct_label(homes.name, cluster), homes.endpoint(cluster))


def failed_so_far(ctx: ScenarioContext, label: str) -> int:
    return ctx.loads.live[label].failed


async def migrate_planned(ctx: ScenarioContext, coordinator: str, name: str,
                          target: str | None) -> dict[str, Any] | None:
    """A planned migration whose window must lose nothing at any load of the service."""
    moved = await ctx.attempt_migrate(coordinator, name, target, planned=True)
    windows = ctx.windows.get(name, {})
    for label in ctx.loads.live:
        if label.startswith(f"{name}@"):
            ctx.windows.setdefault(label, {}).update(windows)
    return moved


async def wait_serving(ctx: ScenarioContext, endpoint: str, clusters: Iterable[str], *,
                       timeout: float, what: str) -> float | None:
    """Seconds until a GET through `endpoint` is answered by one of `clusters`."""
    wanted, t0 = set(clusters), time.monotonic()

    async def ok() -> bool:
        return await served_by(ctx.probe, endpoint, timeout=PROBE_TIMEOUT) in wanted

    return await _timed(ctx, ok, t0, timeout=timeout, what=what)


async def wait_steward(ctx: ScenarioContext, name: str, observer: str, *, not_: str,
                       since: float, timeout: float) -> float | None:
    """Seconds from `since` until `observer` reports a steward of `name` other than `not_`."""
    async def handed() -> bool:
        homes = await view(ctx, observer, name)
        return homes is not None and homes.steward not in (None, not_)

    return await _timed(ctx, handed, since, timeout=timeout,
                        what=f"{observer} naming a steward of {name} other than {not_}")


async def wait_repaired(ctx: ScenarioContext, name: str, observer: str, *, lost: str,
                        wanted: int, since: float, timeout: float) -> tuple[float | None,
                                                                            Homes | None]:
    """Seconds from `since` until `observer`'s record of `name` has `wanted` entries other
    than `lost`, each with an endpoint that serves the service; and that home set."""
    found: list[Homes] = []

    async def whole() -> bool:
        homes = await view(ctx, observer, name)
        if homes is None:
            return False
        live = [c for c in homes.homes if c != lost]
        if len(live) < wanted or any(c not in homes.endpoints for c in live):
            return False
        for c in live:
            if await served_by(ctx.probe, homes.endpoint(c), timeout=1.0) != homes.location:
                return False
        found[:] = [homes]
        return True

    took = await _timed(ctx, whole, since, timeout=timeout,
                        what=f"{name}'s home set repaired without {lost}")
    return took, (found[0] if found else None)


def frontend_slots(ctx: ScenarioContext, cluster: str) -> set[str]:
    """The services `cluster`'s HAProxy holds a frontend slot for: lb's own bookkeeping in its
    data dir, readable from here whatever the agent's state."""
    try:
        return set(LBState.load(ctx.fed.agents[cluster].data_dir / "lb" / "lb-slots.json").slots)
    except (OSError, ValueError):
        return set()


async def wait_closed(ctx: ScenarioContext, name: str, cluster: str, endpoint: str, *,
                      since: float, timeout: float) -> float | None:
    """Seconds from `since` until `cluster`, no longer an entry of `name`, has closed its
    frontend: no slot for `name` in its HAProxy, and its old `endpoint` serves nothing."""
    async def closed() -> bool:
        if name in frontend_slots(ctx, cluster):
            return False
        return await served_by(ctx.probe, endpoint, timeout=PROBE_TIMEOUT) is None

    return await _timed(ctx, closed, since, timeout=timeout,
                        what=f"{cluster} closing its frontend {endpoint} for {name}")


async def _timed(ctx: ScenarioContext, predicate: Any, since: float, *, timeout: float,
                 what: str) -> float | None:
    try:
        await wait_until(predicate, timeout=timeout, interval=POLL, what=what)
    except WaitTimeout:
        ctx.log("timeout", what=what, after_s=timeout)
        return None
    took = round(time.monotonic() - since, 3)
    ctx.log("reached", what=what, after_s=took)
    return took


async def converge(ctx: ScenarioContext, label: str, *, since: float,
                   timeout: float = 60.0) -> tuple[Evaluation, float | None]:
    """Wait until every peer answers, one copy per service, agreeing records, one steward
    and every entry serving; the seconds from `since` are reported as `label`'s figure."""
    ev, _ = await wait_settled(ctx.fed, ctx.probe, ctx.endpoints, timeout=timeout,
                               members=False, homes=True, interval=0.2,
                               on_change=ctx.trace_settling)
    took = round(ev.at - since, 3) if ev.ok else None
    ctx.report.figure(f"{label}_s", took, "s")
    ctx.log("converged" if ev.ok else "not-converged", label=label, after_s=took,
            **({} if ev.ok else {"failing": ev.failing()[:400]}))
    return ev, took
