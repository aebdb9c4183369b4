"""The fail-safe: the steward redeploys a service whose AC is lost, and reroutes to the new copy.

Every entry of a service's home set watches where it runs (its own HAProxy routes there), so
every entry gathers the evidence; only the steward acts on it. The evidence also feeds the
stewardship view (`Liveness.mark_unreachable`): when the HC itself runs the service and its
site is lost, the next entry sees its route down and the HC silent, becomes steward and
redeploys, seconds before Serf would have said anything.

Serf needs 4-5 s to declare a killed peer failed (20-25 s from the isolated side of a
partition). The HC's own HAProxy health checks see a dead AC in about `inter x fall`
(2 x 250 ms), or within `fastinter` of the first refused request of live traffic (`observe
layer4 ... sudden-death`, lb.runtime.CheckSettings), so that is the first evidence; a short
peer-API ping then tells "the AC is cut off or dead" (fail over) from "only the service process
died" (the AC's driver restarts it). Issue 16: the steward starts the home copy at the first
evidence and confirms the loss (LB_DOWN_GRACE, then the ping) while it starts; a loss that is
not confirmed removes that copy and nothing else happened (no fail-safe, no reroute), so the
speed costs no false failure detection, only a copy started for nothing.

Hot standby (issue 15): while the primary is dead every entry's HAProxy already sends the
traffic to the standby's backup server (and retries the requests that failed on the primary
there). When a standby is alive, the fail-safe promotes it instead of redeploying: it routes
this entry to the standby's copy as the primary, commits location = its cluster and removes it
from `standbys`, then every entry follows; no copy is started. The StandbyKeeper then places a
new standby. Logged in /v1/migrations as kind "promotion".
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Coroutine
from typing import Any

from lb.errors import LBError
from peer.migration import wire
from peer.drivers.base import DriverError, Instance
from peer.core import failsafe as core, moves
from peer.migration.history import Migration, MigrationLog
from peer.migration.seams import EntryRoutes, FailSafeSeams, Mover
from peer.migration.wire import PING, RELEASE
from peer.peering.client import PeerClient, PeerError, PeerRefused
from peer.federation.metaorchestrator import requirements
from peer.records.merge import SupersededWrite
from peer.records.record import Record
from peer.migration.engine import MigrationError
from peer.copies.manager import ServiceError, ServiceManager, WorkloadRefused, addr_of, split_addr
from peer.state.hook import StateError
from peer.state.keeper import StateTransfer, state_spec
from peer.homeset.stewardship import Liveness
from peer.runtime.metrics import Metrics
from peer.runtime.supervision import Supervisor
from peer.runtime.wake import Wake, next_delay
from placement import admit

log = logging.getLogger(__name__)

TICK = 0.1
PING_TIMEOUT = 0.5
RECHECK_EVERY = 1.0  # how often a cluster marked unreachable by probes is pinged again
RELEASE_RETRY = 2.0  # how often the lost location is told to release its copy, until it hears
RELEASE_FOR = 600.0  # ...and for how long (anti-entropy covers a longer absence)
# The graces, retries and verdicts are the pure core's (peer/core/failsafe.py); this loop
# owns the timers, the probes and the actions.
LB_DOWN_GRACE, UNKNOWN_GRACE, STUCK_GRACE = core.LB_DOWN_GRACE, core.UNKNOWN_GRACE, core.STUCK_GRACE
AHEAD_EVERY, RETRY_AFTER = core.AHEAD_EVERY, core.RETRY_AFTER
Suspicion = core.Suspicion


class FailSafe:
    def __init__(self, *, services: ServiceManager, client: PeerClient, history: MigrationLog,
                 agent: FailSafeSeams, homes: EntryRoutes, liveness: Liveness,
                 steward_of: Callable[[Record], str | None], state: StateTransfer | None = None,
                 engine: Mover | None = None, metrics: Metrics | None = None) -> None:
        self.liveness = liveness
        self.state = state
        self.steward_of = steward_of
        self.services = services
        self.client = client
        self.history = history
        self.agent = agent  # the agent, seen through the seams the fail-safe needs (peer/migration/seams.py)
        self.homes = homes
        self.engine = engine  # moves elsewhere what this steward's own policy refuses
        self.metrics = metrics  # copies started ahead, by outcome (a removed one is a false suspicion)
        self._suspects: dict[str, Suspicion] = {}
        self._busy: set[str] = set()
        self._unpromotable: set[tuple[str, str]] = set()  # (service, standby addr) whose promotion failed
        self._acting = Supervisor(f"{services.here}:failsafe")  # promotions and redeploys under way (cancelled on stop)
        self._loops = Supervisor(f"{services.here}:failsafe-loops")  # the recheck of unreachable clusters
        self._dropped_at: dict[str, float] = {}  # when a copy started ahead was last removed (not confirmed)
        self._answered: dict[str, float] = {}  # when a cluster gossip calls lost last answered a ping
        self.wake = Wake()  # ends run's sleep when a record is committed (peer.runtime.wake)

    async def run(self) -> None:
        self._loops.loop("recheck-unreachable", self._recheck_unreachable)
        unsubscribe = self.services.on_records_change(self.wake.poke)
        watching = True  # one look first: records held since start
        try:
            while True:
                # Every TICK while this cluster is an entry of a service running elsewhere (or a
                # suspicion or action is open); otherwise asleep until a record is committed.
                await self.wake.sleep(next_delay(watching=watching or bool(self._suspects or self._acting),
                                                 tick=TICK))
                watching = False
                for record in self.services.records():
                    if self.services.here in record.entries and record.location != self.services.here:
                        watching = True
                        with contextlib.suppress(LBError):
                            await self._check(record)
        finally:
            unsubscribe()
            await self._loops.stop()
            await self._acting.stop()

    async def _recheck_unreachable(self) -> None:
        """Probe evidence that a cluster is unreachable holds only until it answers a ping
        again. Gossip clears it too, but only when it saw the cluster failed and back: a
        site that returns before Serf noticed its loss (a quick restart) would otherwise stay
        lost in this view for good, and this cluster would act as steward beside the
        returned HC. Its own task: a ping to a cut-off cluster waits out its timeout."""
        while True:
            await asyncio.sleep(RECHECK_EVERY)
            for cluster in sorted(self.liveness.unreachable):
                if await self._reachable(cluster):
                    log.info("%s answers again: no longer counted unreachable", cluster)
                    self.liveness.mark_reachable(cluster)

    def _seen(self, record: Record, route_up: bool) -> core.Seen:
        member = self.agent.membership.get(record.location)
        return core.Seen(None if member is None else member.status, None if member is None else member.since,
                         route_up, self.services.routes_as_recorded(record))  # (`core.Seen.route_down`)

    async def _check(self, record: Record) -> None:
        """One look at a service running elsewhere: the core (peer/core/failsafe.py) says what
        the evidence means; this acts on the verdict."""
        name = record.name
        if name in self._busy or self.services.lock(name).locked():
            return
        now = time.monotonic()
        seen = self._seen(record, await self._route_up(name))
        suspicion = core.suspect(self._suspects.get(name), record.location, seen, now)
        if suspicion is None:
            self._suspects.pop(name, None)
            self.liveness.mark_reachable(record.location)
            return
        self._suspects[name] = suspicion
        steward = self.steward_of(record) == self.services.here
        ahead = core.ahead_ok(standbys=bool(record.standbys), dropped_at=self._dropped_at.get(name), now=now)
        verdict = core.assess(suspicion, seen, now, reachable=None, steward=steward, ahead_ok=ahead)
        if isinstance(verdict, core.Ping):
            reachable = await (self._answers_despite_gossip(record.location) if seen.gossip_alone
                               else self._reachable(record.location))
            verdict = core.assess(suspicion, seen, now, reachable=reachable, steward=steward, ahead_ok=ahead)
        if isinstance(verdict, core.StartAhead):
            # First evidence: the home copy starts now, while the loss is confirmed.
            self._act(name, self._redeploy(record, evidence=None, since=suspicion.since, suspicion=suspicion))
            return
        if not isinstance(verdict, core.Lost):
            return
        if verdict.unreachable:
            self.liveness.mark_unreachable(record.location, suspicion.since)
        if not verdict.act:
            return  # the steward acts; this entry only keeps its evidence
        self._busy.add(name)
        standby = await self._standby_to_promote(record)
        if standby is not None:
            self._act(name, self._promote(record, standby, evidence=verdict.evidence, since=suspicion.since))
        else:
            self._act(name, self._redeploy(record, evidence=verdict.evidence, since=suspicion.since))

    def _count_ahead(self, outcome: str) -> None:
        if self.metrics is not None:
            self.metrics.failsafe_ahead.labels(outcome=outcome).inc()

    def _act(self, name: str, coro: Coroutine[Any, Any, None]) -> None:
        self._busy.add(name)
        task = self._acting.spawn(coro, name=f"act:{name}", report=False)  # `_acted` reports it
        task.add_done_callback(lambda t: self._acted(name, t))

    def _acted(self, name: str, task: asyncio.Task[None]) -> None:
        """A promotion or redeploy ended: free the service, and never lose its error silently."""
        self._busy.discard(name)
        if not task.cancelled() and task.exception() is not None:
            log.error("fail-safe for %s failed unexpectedly", name, exc_info=task.exception())

    async def owns(self, record: Record) -> bool:
        """Is this service the fail-safe's now, not the policy's? A policy move is a planned
        move: make-before-break drains the old copy while it still serves. A copy that does
        not serve here (this entry's HAProxy checks are down), a location this cluster's probes
        found unreachable, or a suspicion under way is a failure, and the fail-safe acts on it
        within a second. A policy move started then (e.g. its link probe saw the lost AC as a
        bad link first) would race the fail-safe and count an outage as a planned move."""
        if record.location == self.services.here:
            return False
        if record.name in self._suspects or record.name in self._busy or record.location in self.liveness.unreachable:
            return True
        try:
            return not await self._route_up(record.name)
        except LBError:
            return True  # this entry cannot tell: do not move on a guess

    async def _route_up(self, name: str) -> bool:
        """The primary's server is up (backup servers, the standbys, do not count)."""
        statuses = [s for s in await self.services.lb.server_status(name) if not s.backup]
        return any(s.state in ("UP", "DRAIN") for s in statuses) if statuses else True

    async def _standby_to_promote(self, record: Record) -> tuple[str, str] | None:
        """An alive standby (cluster, addr): its backup server UP here first; then one this
        entry has no backup server for yet (just placed), whose cluster is not lost in this
        view. A standby whose backup server is here and not UP is unreachable from here (this
        side of a partition): promoting it would fail after the reroute's timeout and delay the
        redeploy that can succeed (seen in the demo's outage phase)."""
        if not record.standbys:
            return None
        checked: dict[tuple[str, int], str] = {}
        with contextlib.suppress(LBError):
            checked = {(s.addr, s.port): s.state for s in await self.services.lb.server_status(record.name)
                       if s.backup}
        candidates = [(c, a) for c, a in record.standbys
                      if c != record.location and (record.name, a) not in self._unpromotable]
        for cluster, addr in candidates:
            if checked.get(split_addr(addr)) == "UP":
                return cluster, addr
        members, now = self.agent.observed(), time.monotonic()
        for cluster, addr in candidates:
            if split_addr(addr) not in checked and self.liveness.lost_for(cluster, members, now) is None:
                return cluster, addr
        return None

    async def _answers_despite_gossip(self, cluster: str) -> bool:
        """`_reachable`, for a location gossip calls lost while this entry's check of its copy
        passes (`core.assess`): an answer is taken as good for RECHECK_EVERY, so a service
        there costs one ping per cluster and second, not one per service and TICK, until Serf
        sees the cluster alive again (seconds after a heal; for good if only gossip is cut)."""
        answered = self._answered.get(cluster)
        if answered is not None and time.monotonic() - answered < RECHECK_EVERY:
            return True
        if await self._reachable(cluster):
            self._answered[cluster] = time.monotonic()
            return True
        self._answered.pop(cluster, None)
        return False

    async def _reachable(self, cluster: str) -> bool:
        url = self.agent.api_url_of(cluster)
        if url is None:
            return False
        try:
            await self.client.call(url, PING, wire.Ping().to_wire(), timeout=PING_TIMEOUT)
            return True
        except PeerError:
            return False

    async def _redeploy(self, record: Record, *, evidence: str | None, since: float,
                        suspicion: Suspicion | None = None) -> None:
        """Redeploy at home and reroute. `evidence` None: only the first evidence is in (the
        route went down): the home copy starts at once and the loss is confirmed while it
        starts, exactly as `_check` confirms it (`_confirm`); not confirmed, the copy is
        removed and nothing else happened (no fail-safe recorded, nothing routed)."""
        services, name = self.services, record.name
        refused: WorkloadRefused | None = None
        async with services.lock(name):
            current = services.get(name)
            if current is None or current.location != record.location or self.steward_of(current) != services.here:
                return
            copy: asyncio.Task[tuple[Instance, float]] | None = None
            if evidence is None:
                assert suspicion is not None
                if admit(requirements(services.descriptor_of(current)), self.agent.own_view()) is not None:
                    return  # the confirmed path reports it
                started = time.monotonic()
                log.info("fail-safe for %s: the route to %s is down; starting a copy ahead while the loss is "
                         "confirmed", name, current.location)
                copy = self._acting.spawn(services.run_copy(services.descriptor_of(current), home=services.here),
                                          name=f"copy-ahead:{name}", report=False)
                try:
                    evidence = await self._confirm(current, suspicion)
                except BaseException:
                    await self._discard(name, copy)
                    raise
                self._count_ahead("removed" if evidence is None else "confirmed")
                if evidence is None:
                    self._dropped_at[name] = time.monotonic()
                    await self._discard(name, copy)
                    log.info("fail-safe for %s: the loss of %s was not confirmed; the copy started ahead is removed",
                             name, record.location)
                    return
            committed, refused = await self._redeploy_locked(
                current, evidence=evidence, since=since, copy=copy,
                ahead_ms=None if copy is None else (time.monotonic() - started) * 1000.0)
        if refused is not None:
            await self._redeploy_elsewhere(record, evidence=evidence, refused=refused)
            return
        if committed is None:
            return
        self.agent.load_changed()
        await self.agent.publish(committed, frozenset({record.location}))
        self.agent.spawn(self.homes.route_entries(committed))
        self.agent.spawn(self._release_until_heard(record.location, committed))

    async def _redeploy_locked(self, current: Record, *, evidence: str, since: float,
                               copy: asyncio.Task[tuple[Instance, float]] | None, ahead_ms: float | None
                               ) -> tuple[Record | None, WorkloadRefused | None]:
        """The fail-safe itself, under the service's lock: the copy (started ahead or now),
        the saved state, the reroute, the commit. Returns (committed, None), or (None, the
        refusal) when this cluster's policy refuses the service, or (None, None) if it failed."""
        services, name = self.services, current.name
        m = self.history.begin(Migration(service=name, kind="failsafe", reason=evidence, coordinator=services.here,
                                         home=services.here, source=current.location, target=services.here))
        m.durations["detection"] = round((time.monotonic() - since) * 1000.0, 3)
        if ahead_ms is not None:  # how long the copy had been starting when the loss was confirmed
            m.durations["deploy_ahead"] = round(ahead_ms, 3)
        log.warning("fail-safe for %s: %s; redeploying at home", name, evidence)
        try:
            descriptor = services.descriptor_of(current)
            if copy is None:
                rejection = admit(requirements(descriptor), self.agent.own_view())
                if rejection is not None:
                    raise DriverError(f"home cannot admit it: {rejection.reason}")
            with m.timed("wait"):
                instance, deploy_ms = await (copy if copy is not None
                                             else services.run_copy(descriptor, home=services.here))
            m.durations["deploy"] = round(deploy_ms, 3)
            state_version = await self._restore_state(m, current, instance.host, instance.port)
            with m.timed("reroute"):
                await services.lb.route(name, instance.host, instance.port, up_timeout=10.0, drain_timeout=0.05,
                                        proven_ready=True)
            with m.timed("cleanup"):
                committed = services.commit(
                    moves.commit(current, location=services.here, instance=addr_of(instance), migration_id=m.id,
                                 state_version=state_version))
        except SupersededWrite as exc:
            # A version merged while the copy started outranks this decision (the AC is back
            # and its HC moved it, say): it stands, and so the copy and the route made for
            # this one go. Nothing to retry: the merged version's own actions ran.
            self.history.finish(m, outcome="failed", error=str(exc))
            log.warning("fail-safe for %s given up: %s", name, exc)
            await self._undo_redeploy(name)
            return None, None
        except (DriverError, LBError, WorkloadRefused) as exc:
            why = f"refused by this cluster's workload policy ({exc.rule}): {exc}" \
                if isinstance(exc, WorkloadRefused) else str(exc)
            self.history.finish(m, outcome="failed", error=why)
            log.error("fail-safe for %s failed: %s; retrying in %.0fs", name, why, RETRY_AFTER)
            self._retry_later(name, core.RETRY_AFTER)
            return None, exc if isinstance(exc, WorkloadRefused) else None
        self._suspects.pop(name, None)
        m.durations["downtime_estimate"] = round((time.monotonic() - since) * 1000.0, 3)
        self.history.finish(m, outcome="succeeded")
        return committed, None

    async def _undo_redeploy(self, name: str) -> None:
        """After a redeploy whose commit gave way (SupersededWrite): route as the record held
        now says and stop the copy started here, unless that record runs it here."""
        services = self.services
        try:
            current = await services.route_as_held(name)
            if current is None or current.location != services.here:
                await services.stop_copy(name)
        except (DriverError, LBError, ServiceError) as exc:  # (the convergence round retries both)
            log.error("%s: undoing the fail-safe that gave way failed: %s", name, exc)

    async def _confirm(self, record: Record, suspicion: Suspicion) -> str | None:
        """The evidence `_check` would act on, gathered while a copy starts ahead (the rule:
        `core.confirm`). None as soon as the route is up again or the AC answers (then `_check`
        goes on as before: a copy the AC's driver restarts, or a hung one after STUCK_GRACE)."""
        while True:
            try:
                up = await self._route_up(record.name)
            except LBError:
                up = True  # this entry cannot tell: Serf's word only, else `_check` decides on its next tick
            seen = self._seen(record, up)
            verdict = core.confirm(suspicion, seen, time.monotonic(), reachable=None)
            if isinstance(verdict, core.Wait):
                await asyncio.sleep(core.confirm_delay(suspicion, time.monotonic()))
                continue
            if isinstance(verdict, core.Ping):
                verdict = core.confirm(suspicion, seen, time.monotonic(),
                                       reachable=await self._reachable(record.location))
            if not isinstance(verdict, core.Lost):
                return None
            if verdict.unreachable:
                self.liveness.mark_unreachable(record.location, suspicion.since)
            return verdict.evidence

    def _retry_later(self, name: str, after: float) -> None:
        retried = core.retry_later(self._suspects.get(name), time.monotonic(), after=after)
        if retried is not None:
            self._suspects[name] = retried

    async def _discard(self, name: str, copy: asyncio.Task[tuple[Instance, float]]) -> None:
        """Remove a copy started ahead that is not needed (run_copy removes one it did not
        finish starting; a started one is stopped here)."""
        copy.cancel()
        await asyncio.wait({copy})
        if not copy.cancelled() and copy.exception() is None:
            with contextlib.suppress(DriverError):
                await self.services.stop_copy(name)

    async def _promote(self, record: Record, standby: tuple[str, str], *, evidence: str, since: float) -> None:
        """Make the standby at `standby` the primary (module docstring). If routing to it
        fails, the normal redeploy runs next time (the standby is then dropped by the keeper)."""
        services, name = self.services, record.name
        cluster, addr = standby
        async with services.lock(name):
            current = services.get(name)
            if (current is None or current.location != record.location or self.steward_of(current) != services.here
                    or current.standby_at(cluster) != addr):
                return
            m = self.history.begin(Migration(service=name, kind="promotion", reason=evidence, coordinator=services.here,
                                             home=current.home, source=record.location, target=cluster))
            m.durations["detection"] = round((time.monotonic() - since) * 1000.0, 3)
            m.notes = f"standby at {cluster} promoted to primary (no redeploy)"
            log.warning("fail-safe for %s: %s; promoting the standby at %s", name, evidence, cluster)
            try:
                with m.timed("reroute"):
                    host, port = split_addr(addr)
                    await services.lb.route(name, host, port, up_timeout=2.0, drain_timeout=0.05, proven_ready=True)
                with m.timed("cleanup"):
                    committed = services.commit(
                        moves.commit(current, location=cluster, instance=addr, migration_id=m.id))
                    await services.ensure_backups(committed)
            except SupersededWrite as exc:  # (a version merged meanwhile outranks it: it stands)
                self.history.finish(m, outcome="failed", error=str(exc))
                log.warning("promotion of the standby of %s at %s given up: %s", name, cluster, exc)
                with contextlib.suppress(LBError, ServiceError):
                    await services.route_as_held(name)
                return
            except LBError as exc:
                self.history.finish(m, outcome="failed", error=str(exc))
                log.error("promotion of the standby of %s at %s failed: %s", name, cluster, exc)
                self._unpromotable.add((name, addr))
                self._retry_later(name, core.PROMOTE_RETRY)
                return
            self._suspects.pop(name, None)
            m.durations["downtime_estimate"] = round((time.monotonic() - since) * 1000.0, 3)
            self.history.finish(m, outcome="succeeded")
        self.agent.load_changed()
        await self.agent.publish(committed, frozenset({record.location}))
        self.agent.spawn(self.homes.route_entries(committed))
        self.agent.spawn(self._release_until_heard(record.location, committed))

    async def _restore_state(self, m: Migration, record: Record, host: str, port: int) -> int | None:
        """A stateful service's new copy gets the last state saved here before it is routed
        (recovery point: at most one `interval` old). A state that cannot be installed does
        not stop the fail-safe (a service without its state beats no service); it is noted."""
        if self.state is None or state_spec(record) is None:
            return record.state_version
        try:
            with m.timed("state"):
                version = await self.state.install_latest(record, host, port)
        except StateError as exc:
            m.notes = f"state not restored: {exc}"
            log.error("fail-safe for %s: saved state not installed: %s", record.name, exc)
            return record.state_version
        if version is None:
            return record.state_version
        m.state_transfer = {"version": version.seq, "etag": version.etag, "restored": True}
        return max(version.seq, record.state_version or 0)

    async def _redeploy_elsewhere(self, record: Record, *, evidence: str, refused: WorkloadRefused) -> None:
        """This steward's own workload policy refuses the service: placement picks a cluster
        that accepts it, through the migration engine (a move away from the lost location,
        whose cleanup tells that location to release its copy should it come back)."""
        engine = self.engine
        if engine is None:
            return
        reason = f"{evidence}; {self.services.here} refuses it ({refused.rule}): redeploying where placement says"
        try:
            await engine.migrate(record.name, reason=reason, kind="failsafe")
        except (MigrationError, ServiceError, PeerError) as exc:
            log.error("fail-safe for %s elsewhere failed: %s; retrying in %.0fs", record.name, exc, RETRY_AFTER)
            return
        self._suspects.pop(record.name, None)
        committed = self.services.get(record.name)
        self.agent.load_changed()
        if committed is not None:
            self.agent.spawn(self._release_until_heard(record.location, committed))

    async def _release_until_heard(self, cluster: str, committed: Record) -> None:
        """The lost location may come back with its copy still running (a partition heals, a
        site restarts). The record alone stops that copy only if it arrives by anti-entropy
        or publish: an entry's `ROUTE` (from `route_entries`) applies it but only reroutes, as
        a planned move's old copy must serve until every entry has moved, and then the copy
        runs on for good. So tell the old location as a planned move's cleanup does
        (`RELEASE`: it stops its copy unless the merged record says it runs there)."""
        deadline = time.monotonic() + RELEASE_FOR
        while time.monotonic() < deadline:
            url = self.agent.api_url_of(cluster)
            if url is not None:
                try:
                    await self.client.call(url, RELEASE, wire.Release(committed).to_wire(), timeout=5.0)
                    log.info("%s released its copy of %s after the fail-safe", cluster, committed.name)
                    return
                except PeerRefused as exc:
                    log.warning("%s refused to release %s: %s", cluster, committed.name, exc)
                    return
                except PeerError:
                    pass
            await asyncio.sleep(RELEASE_RETRY)
