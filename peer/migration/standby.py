"""Hot standbys (issue 15, seeds 001/003): the steward keeps `standby: N` warm copies of each
service it stewards in other clusters, and every entry routes them as HAProxy backup servers.

One pass per second, for the records this cluster stewards (`StandbyKeeper.keep`):
1. `plan` (pure) drops standbys whose backup server this steward's HAProxy has seen DOWN for
   `repair_after` seconds (the copy died or is cut off), or whose cluster is lost that long
   while its copy is not seen serving (a copy that passes the checks is kept across its
   agent's restart, however slow: the agent adopts it again when it is back), and says how
   many are missing;
2. for one missing standby: a placement request (`rank`, avoiding the primary's cluster and the
   standbys', other tiers first), then the migration protocol's REPLICATE with `standby: true`
   (the holder admits it and starts the copy) and STATUS until it is ready;
3. the state seam: `StateTransfer.install_latest(record, host, port)` before the copy counts
   (the state helper plugs in there; None: not called);
4. commit `standbys += (cluster, addr)` under the service's lock, publish, and hand the record
   to every entry (`ROUTE`), whose `ensure_route` adds the backup server.
A refusal or failure aborts the copy at the holder and waits `RETRY_AFTER` before the next try.
Each placement is logged in /v1/migrations as kind "standby" with its stage timings.

Promotion (the fail-safe's fast path, peer/migration/failsafe.py) removes the promoted standby
from the set; the next pass here places a new one.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Protocol

from lb.errors import LBError
from peer.migration import wire
from peer.errors import RoamError
from peer.migration.history import Migration, MigrationLog
from peer.migration.seams import EntryRoutes, StandbySeams
from peer.migration.readiness import CopyNotReady, wait_copy_ready
from peer.migration.wire import ABORT, REPLICATE
from peer.peering.client import PeerClient, PeerError, PeerRefused
from peer.federation.metaorchestrator import requirements
from peer.records.merge import SupersededWrite
from peer.records.record import Record
from peer.copies.manager import ServiceError, ServiceManager, split_addr
from placement import ClusterView, Requirements, get_policy, rank

log = logging.getLogger(__name__)

KEEPER_TICK = 1.0
REPAIR_AFTER = 5.0  # a standby lost (cluster or copy) this long is replaced
RETRY_AFTER = 5.0  # after a failed placement


class StandbyError(RoamError):
    """A standby could not be placed; the service keeps what it has."""


class StateTransferError(StandbyError):
    """The state could not be installed into a new copy: the copy is dropped and retried."""


class StateTransfer(Protocol):
    """The state seam (issue 15's other half): install the latest saved state of `record`'s
    service into the copy at host:port before it counts as a ready standby. Raises
    `StateTransferError` when it cannot (the new copy is then aborted and placed again later)."""

    async def install_latest(self, record: Record, host: str, port: int) -> None: ...


@dataclass(frozen=True)
class StandbyPlan:
    drop: tuple[str, ...]  # standby clusters to remove from the record
    need: int  # how many new standbys to place after the drop


def plan(record: Record, *, wanted: int, lost_for: Mapping[str, float | None],
         down_for: Mapping[str, float], repair_after: float,
         serving: frozenset[str] = frozenset()) -> StandbyPlan | None:
    """At the steward: which standbys to drop and how many to add. Pure.

    A standby is dropped when its copy failed this steward's checks for `repair_after`
    (`down_for`, by cluster), when its cluster has been lost that long (gossip or probes) and
    its copy is not seen serving either, when it is where the primary runs now (a promotion
    elsewhere already took it), or when there are more than `wanted` (the last ones in the
    sorted order go). A copy that passes this steward's checks (`serving`) is kept however long
    its cluster's agent is away: a restarting or slow agent leaves its copy running, and its
    next start adopts it like a primary copy (peer/copies/recovery.py), so replacing it would only
    stop a warm copy that works."""
    if record.tombstone:
        return None
    drop = [c for c in record.standby_clusters
            if c == record.location or down_for.get(c, 0.0) >= repair_after
            or ((lost_for.get(c) or 0.0) >= repair_after and c not in serving)]
    kept = [c for c in record.standby_clusters if c not in drop]
    if len(kept) > wanted:
        drop += kept[wanted:]
        kept = kept[:wanted]
    need = max(0, wanted - len(kept))
    if not drop and need == 0:
        return None
    return StandbyPlan(drop=tuple(drop), need=need)


def candidates(record: Record, views: Mapping[str, ClusterView], *, req: Requirements, policy: str) -> list[str]:
    """Clusters that may take a new standby, best first: the placement's ranking with the
    primary's cluster and the standbys' avoided, clusters of another tier than the primary's
    (and than the standbys') before the others (other failure domains)."""
    taken = {record.location, *record.standby_clusters}
    ranked = rank(replace(req, avoid=req.avoid | taken), views.values(), home=record.home, policy=get_policy(policy)).ranked
    tiers = {views[c].tier for c in taken if c in views}
    order = {c.name: i for i, c in enumerate(ranked)}
    return sorted(order, key=lambda name: (views[name].tier in tiers, order[name]))


class StandbyKeeper:
    """The steward's loop (see module docstring)."""

    def __init__(self, *, services: ServiceManager, client: PeerClient, history: MigrationLog,
                 agent: StandbySeams, homes: EntryRoutes, steward_of: Callable[[Record], str | None],
                 lost_for: Callable[[str], float | None], state: StateTransfer | None = None,
                 repair_after: float = REPAIR_AFTER, policy: str = "balanced") -> None:
        self.services = services
        self.client = client
        self.history = history
        self.agent = agent  # the agent, seen through the seams standbys need (peer/migration/seams.py)
        self.homes = homes
        self.steward_of = steward_of
        self.lost_for = lost_for
        self.state = state
        self.repair_after = repair_after
        self.policy = policy
        self._retry_at: dict[str, float] = {}
        self._said: dict[str, str] = {}  # the last failure logged per service
        self._down_since: dict[tuple[str, str], float] = {}  # (service, standby addr) -> first seen DOWN

    async def run(self) -> None:
        while True:
            await asyncio.sleep(KEEPER_TICK)
            for record in self.services.records():
                if record.tombstone or self.steward_of(record) != self.services.here:
                    continue
                try:
                    await self.keep(record)
                    self._said.pop(record.name, None)
                except (StandbyError, ServiceError, LBError, PeerError) as exc:
                    if self._said.get(record.name) != str(exc):  # said once, not every retry
                        log.warning("standby of %s not placed: %s; retrying every %.0fs", record.name, exc,
                                    RETRY_AFTER)
                        self._said[record.name] = str(exc)
                    self._retry_at[record.name] = time.monotonic() + RETRY_AFTER

    async def _checks(self, record: Record) -> tuple[dict[str, float], frozenset[str]]:
        """What this steward's HAProxy says of each standby's backup server: how long it has
        been DOWN (by cluster), and which pass their checks (UP, or DRAIN)."""
        if not record.standbys or self.services.here not in record.entries:
            return {}, frozenset()
        now = time.monotonic()
        with contextlib.suppress(LBError):
            statuses = {(s.addr, s.port): s.state for s in await self.services.lb.server_status(record.name)
                        if s.backup}
            out: dict[str, float] = {}
            serving: set[str] = set()
            for cluster, addr in record.standbys:
                key = (record.name, addr)
                state = statuses.get(split_addr(addr))
                if state in (None, "UP", "DRAIN"):
                    self._down_since.pop(key, None)
                    if state is not None:
                        serving.add(cluster)
                    continue
                out[cluster] = now - self._down_since.setdefault(key, now)
            return out, frozenset(serving)
        return {}, frozenset()

    async def keep(self, record: Record) -> None:
        if time.monotonic() < self._retry_at.get(record.name, 0.0) or self.services.lock(record.name).locked():
            return
        wanted = self.services.descriptor_of(record).standby
        lost = {c: self.lost_for(c) for c in record.standby_clusters}
        down, serving = await self._checks(record)
        todo = plan(record, wanted=wanted, lost_for=lost, down_for=down, repair_after=self.repair_after,
                    serving=serving)
        if todo is None:
            return
        if todo.drop:
            record = await self._drop(record, todo.drop)
        if todo.need > 0:
            await self.place_one(record)

    async def _drop(self, record: Record, drop: tuple[str, ...]) -> Record:
        services = self.services
        async with services.lock(record.name):
            current = services.get(record.name)
            if current is None or current != record:
                raise StandbyError("record changed meanwhile")
            try:
                committed = services.commit(
                    replace(current, standbys=tuple(p for p in current.standbys if p[0] not in drop)))
            except SupersededWrite as exc:  # (a version merged since this read: it decides)
                raise StandbyError(str(exc)) from exc
            if services.here in committed.entries:
                await services.ensure_backups(committed)
        log.warning("standby of %s dropped at %s (lost or not serving)", record.name, ", ".join(drop))
        await self.agent.publish(committed, frozenset(drop))
        self.agent.spawn(self.homes.route_entries(committed))
        return committed

    async def place_one(self, record: Record) -> Record:
        """One new standby for `record` (module docstring, steps 2-4); returns the committed record.
        Nothing is logged in the history while no cluster can take one (retried quietly)."""
        started = time.monotonic()
        ranked = candidates(record, self.agent.cluster_views(), policy=self.policy,
                            req=requirements(self.services.descriptor_of(record)))
        if not ranked:
            raise StandbyError("no other cluster can hold a standby now")
        m = self.history.begin(Migration(service=record.name, kind="standby", reason="standby placement",
                                         coordinator=self.services.here, home=record.home, source=record.location))
        m.durations["pr"] = round((time.monotonic() - started) * 1000.0, 3)
        m.candidates = [{"name": c} for c in ranked[:3]]
        try:
            with m.timed("replication"):
                m.target = await self._replicate(m, record, ranked)
            try:
                with m.timed("wait"):
                    instance, deploy_ms = await self._wait_ready(
                        m, ready_timeout=self.services.descriptor_of(record).readiness_timeout)
                m.durations["deploy"] = round(deploy_ms, 3)
                if self.state is not None:
                    with m.timed("state"):
                        await self.state.install_latest(record, *split_addr(instance))
                with m.timed("reroute"):
                    committed = await self._commit(m, record, instance)
            except BaseException:
                await self._abort(m)
                raise
        except (StandbyError, PeerError, ServiceError, LBError) as exc:
            self.history.finish(m, outcome="failed", error=str(exc))
            raise
        self.history.finish(m, outcome="succeeded")
        log.info("standby of %s placed at %s in %s", record.name, m.target, m.durations)
        return committed

    async def _replicate(self, m: Migration, record: Record, ranked: list[str]) -> str:
        refusals: list[str] = []
        for name in ranked:
            url = self.agent.api_url_of(name)
            if url is None:
                continue
            try:
                await self.client.call(url, REPLICATE, wire.Replicate(
                    migration_id=m.id, name=record.name, descriptor=record.descriptor, home=record.home,
                    endpoint=record.endpoint, source=self.services.here, standby=True).to_wire(), timeout=5.0)
                return name
            except PeerRefused as exc:
                refusals.append(f"{name}: {exc}")
            except PeerError as exc:
                refusals.append(f"{name}: {exc}")
                m.target = name
                await self._abort(m)
        raise StandbyError("every candidate refused: " + "; ".join(refusals))

    async def _wait_ready(self, m: Migration, *, ready_timeout: float) -> tuple[str, float]:
        assert m.target is not None
        try:
            return await wait_copy_ready(self.client, self.agent.api_url_of(m.target), migration_id=m.id,
                                         name=m.service, target=m.target, ready_timeout=ready_timeout)
        except CopyNotReady as exc:
            raise StandbyError(str(exc)) from exc

    async def _commit(self, m: Migration, record: Record, instance: str) -> Record:
        """Add the ready copy to the record (if nothing moved meanwhile), route it as a backup
        here, publish, and hand the record to the other entries."""
        assert m.target is not None
        services = self.services
        async with services.lock(record.name):
            current = services.get(record.name)
            if (current is None or current.location != record.location or m.target in current.standby_clusters
                    or current.incarnation != record.incarnation):
                raise StandbyError("the record changed while the standby started")
            try:
                committed = services.commit(
                    replace(current, standbys=tuple(sorted((*current.standbys, (m.target, instance))))))
            except SupersededWrite as exc:  # (a version merged since this read: it decides)
                raise StandbyError(str(exc)) from exc
            services.settle_arrival(record.name, m.id)  # a standby here: no merge will settle it
            if services.here in committed.entries:
                await services.ensure_backups(committed)
        self.agent.load_changed()
        await self.agent.publish_now(committed, frozenset())
        missing = await self.homes.route_entries(committed)
        if missing:
            m.notes = f"entries not confirmed: {', '.join(missing)}"
        return committed

    async def _abort(self, m: Migration) -> None:
        url = self.agent.api_url_of(m.target) if m.target else None
        if url is not None:
            with contextlib.suppress(PeerError):
                await self.client.call(url, ABORT, wire.Abort(m.id, m.service).to_wire(), timeout=5.0)
