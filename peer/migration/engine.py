"""The coordinator side of a migration: the paper's five stages, each timed (II-C, Table I).

    trigger -> PR (embedded placement) -> replication (descriptor + home info to the AC, which
    admits or refuses) -> wait (AC's copy ready) -> [state: pre-copy] -> reroute (HC's HAProxy,
    make-before-break) -> commit (record: location = AC) -> cleanup (old copy stopped)

A stateful service (descriptor `state`) adds the `state` stage (its state copied from the old
copy to the new one while the old one serves) and runs the reroute inside a `handover`: requests
held at every entry while the last version is copied (peer/state/handover.py).

The coordinator is the service's steward (the first live entry of its home set: the HC while
it is alive), the single writer of where a service runs; any other cluster asked forwards the
call to it (peer/migration/homes.py), also for a multi-hop move (Fig. 4 Migration 2). The
reroute is the steward's own HAProxy, make-before-break, then the commit, then every other
entry reroutes its own HAProxy before the old copy stops. Each stage is journaled, so a
coordinator killed mid-way rolls back (before the reroute) or finishes (after).
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from lb.errors import LBError, RerouteError
from peer.migration import wire
from peer.errors import RoamError
from peer.runtime import failpoints
from peer.core import journal, moves
from peer.core import move as rules
from peer.drivers.descriptor import ServiceDescriptor
from peer.migration import overlap
from peer.migration.history import Migration, MigrationLog
from peer.migration.homes import HomeSetClient
from peer.migration.seams import EngineSeams
from peer.records.merge import SupersededWrite
from peer.migration.readiness import CopyNotReady, wait_copy_ready
from peer.migration.wire import ABORT, RELEASE, REPLICATE
from peer.peering.client import PeerClient, PeerError, PeerRefused
from peer.federation.metaorchestrator import requirements
from peer.records.record import Record
from peer.records.store import PreparedWrite
from peer.runtime.waiting import wait_until
from peer.copies.manager import (InvalidServiceRequest, NoSuchService, ServiceError, ServiceManager, WorkloadRefused,
                           addr_of, split_addr)
from peer.trust.workload import RULE_ACCEPT_FROM, Refusal
from peer.state import handover as ho
from peer.runtime.supervision import Supervisor
from peer.state.hook import StateError
from peer.state.keeper import StateKeeper, state_spec
from placement import Candidate, Placement, get_policy, rank

log = logging.getLogger(__name__)



class MigrationError(RoamError):
    """The migration could not complete; the service keeps running where it was. `refusals`:
    the candidates whose workload policy refused it (cluster, rule, error)."""

    def __init__(self, message: str, *, refusals: list[dict[str, Any]] | None = None) -> None:
        super().__init__(message)
        self.refusals = refusals or []


class MigrationEngine:
    def __init__(self, *, here: str, services: ServiceManager, client: PeerClient, history: MigrationLog,
                 agent: EngineSeams, homes: HomeSetClient, steward_of: Callable[[Record], str | None],
                 policy: str = "balanced", state: StateKeeper | None = None) -> None:
        self.here = here
        self.state = state
        self.homes = homes
        self.steward_of = steward_of
        self.services = services
        self.client = client
        self.history = history
        self.agent = agent  # the agent, seen through the seams a migration needs (peer/migration/seams.py)
        self.policy = get_policy(policy)
        self.refused = rules.Refusals()  # (cluster, digest) -> (rule, when), pure (peer/core/move.py)
        self._cleanups = Supervisor(f"{here}:cleanups")  # old copies being stopped after the answer

    # -- entry point -----------------------------------------------------------------------
    async def migrate(self, name: str, *, target: str | None = None, reason: str = "api",
                      kind: str = "planned") -> Migration:
        """Run the move up to its commit and reroute, and answer then: the old copy is stopped
        after (`_clean_up_after`), still under the service's lock, so the next move of the same
        service waits for it and the caller does not. The migration stays in the history's
        running list, `outcome` succeeded and `committed_at` set, until its cleanup is timed."""
        lock = self.services.lock(name)
        await lock.acquire()
        try:
            m, before, committed, rollout = await self._migrate_locked(name, target=target, reason=reason, kind=kind)
        except BaseException:
            lock.release()
            raise
        self._cleanups.spawn(self._clean_up_after(m, before, committed, rollout, lock),
                             name=f"cleanup:{name}:{m.id}")
        return m

    async def _migrate_locked(self, name: str, *, target: str | None, reason: str, kind: str
                              ) -> tuple[Migration, Record, Record, overlap.Rollout | None]:
        record = self.services.get(name)
        if record is None:
            raise NoSuchService(f"no service {name!r}")
        steward = self.steward_of(record)
        if steward != self.here:
            raise ServiceError(f"{name!r} is stewarded by {steward or 'no live entry'}, not {self.here}")
        if target is not None:
            self._check_target(record, target)
        m = self.history.begin(Migration(service=name, kind=kind, reason=reason, coordinator=self.here,
                                         home=record.home, source=record.location, target=target))
        try:
            committed, rollout = await self._run(m, record, target)
        except Exception as exc:  # noqa: BLE001 - whatever it was, the migration ends `failed`
            # Every failure before the commit ends the migration `failed` with its journal
            # closed (the copy at the target was aborted by `_run`): nothing stays `running`.
            standing = self._standing(m, exc)
            if standing is None:
                if not isinstance(exc, (RoamError, LBError, TimeoutError)):  # a bug: keep its traceback
                    log.exception("migration %s of %s: unexpected error at %s", m.id, name, m.stage)
                if rules.failure(m.stage).route_back:
                    await self._route_back(record)
                raise self._failed(m, exc, target) from exc
            committed, rollout = standing, None  # (`_run` awaited its rollout before raising)
        except asyncio.CancelledError:
            # The agent stops mid-move: `_run` aborted the copy at the target. From the reroute
            # on the journal stays open, so `recover` decides from the route on the next start.
            if rules.interrupted_closes_journal(m.stage):
                self.services.close_move(m.id)
            self.history.finish(m, outcome="failed", error=f"interrupted at {m.stage} by a stop")
            raise
        # Committed and routed: the move stands, and the stage left is the cleanup.
        m.outcome, m.stage, m.committed_at = "succeeded", "cleanup", time.time()
        log.info("migrated %s %s -> %s in %s (cleanup follows)", name, m.source, m.target, m.durations)
        return m, record, committed, rollout

    def _standing(self, m: Migration, exc: Exception) -> Record | None:
        """A failure after the commit (e.g. while the other entries were told): the move stands
        (`rules.stands`), so its cleanup still runs and the error is a note; None before it."""
        current = self.services.get(m.service)
        if current is None or not rules.stands(current, m.id, m.target):
            return None
        log.error("migration %s of %s: failed after its commit (the move stands): %s", m.id, m.service, exc)
        m.notes = f"after the commit: {exc or type(exc).__name__}"
        self._journal(m, "cleanup", instance=current.instance)
        return current

    async def _route_back(self, before: Record) -> None:
        """A reroute that failed half-way (this entry routed, the commit did not happen): the
        frontend points where the record held now says (the copy at the target is being
        aborted): at the old copy, or wherever a version merged meanwhile placed it (the
        commit then gave way to it: SupersededWrite). Called only for a move that did not
        commit, so the record held is the truth."""
        try:
            await self.services.route_as_held(before.name)
        except (RoamError, LBError) as exc:
            log.error("migration of %s failed at the reroute and its route could not be restored: %s",
                      before.name, exc)

    def _failed(self, m: Migration, exc: Exception, target: str | None) -> MigrationError:
        """Close the journal and the history entry of a migration that failed; the error to raise."""
        if isinstance(exc, WorkloadRefused) and target is not None:  # known from its gossiped policy
            m.refusals.append({"cluster": target, "rule": exc.rule, "error": str(exc)})
        self.services.close_move(m.id)
        self.history.finish(m, outcome=rules.failure(m.stage).outcome, error=str(exc) or type(exc).__name__)
        log.warning("migration %s of %s failed at %s: %s", m.id, m.service, m.stage, exc)
        return MigrationError(f"migration of {m.service} failed at {m.stage}: {exc or type(exc).__name__}",
                              refusals=m.refusals)

    async def _clean_up_after(self, m: Migration, before: Record, committed: Record,
                              rollout: overlap.Rollout | None, lock: asyncio.Lock) -> None:
        """The cleanup stage, after the caller has its answer: first the rollout (every other
        entry routes, this HC's old server drained), then the old copy stops. A failure here
        does not undo the move (it is committed and routed here): it is the migration's
        `error`. Cancelled (the agent stops past `settle`'s grace), the journal stays open and
        `recover` finishes it, routing the entries again first."""
        try:
            if rollout is not None:
                missing = await rollout.finished()
                m.durations.update(rollout.timings)
                if missing:
                    m.notes = f"entries not confirmed: {', '.join(missing)}"
            with m.timed("cleanup"):
                await self._cleanup(m, before, committed)
        except Exception as exc:  # noqa: BLE001 - the move stands whatever the cleanup met
            log.error("migration %s of %s: cleanup failed: %s", m.id, m.service, exc,
                      exc_info=not isinstance(exc, (RoamError, LBError, TimeoutError)))
            self.services.close_move(m.id)
            self.history.finish(m, outcome="succeeded", error=f"cleanup failed: {exc}")
        except asyncio.CancelledError:
            self.history.finish(m, outcome="succeeded", error="cleanup interrupted by a stop; finished on restart")
            raise
        else:
            self.services.close_move(m.id)
            self.history.finish(m, outcome="succeeded")
        finally:
            lock.release()

    async def settle(self, *, timeout: float) -> None:
        """Let the cleanups under way finish (an agent stopping waits this long for them), then
        cancel the rest: their journals stay open and `recover` finishes them on restart."""
        await self._cleanups.stop(grace=timeout)

    def _check_target(self, record: Record, target: str) -> None:
        member = self.agent.membership.get(target)
        problem = rules.target_problem(record, target, None if member is None else member.status)
        if problem is not None:
            raise (InvalidServiceRequest if problem.unknown else ServiceError)(problem.message, field="target")

    async def _run(self, m: Migration, record: Record, target: str | None
                   ) -> tuple[Record, overlap.Rollout | None]:
        """PR to the commit and reroute; the journal is left at `cleanup` for `_clean_up_after`,
        with the rollout (the other entries' routes, this HC's drain) still under way."""
        descriptor = self.services.descriptor_of(record)
        with m.timed("pr"):
            ranked = self._placement_request(descriptor, record, target)
        m.candidates = [{"name": c.name, "score": round(c.score, 4), "reasons": list(c.reasons)} for c in ranked[:3]]
        if not ranked:
            raise MigrationError("placement found no cluster that can take it")
        self._journal(m, "replication")
        with m.timed("replication"):
            m.target = await self._replicate(m, record, ranked)
        failpoints.hit("migration.after_replication")
        try:
            self._journal(m, "wait")
            with m.timed("wait"):
                # While the AC deploys (hundreds of ms), not in the reroute stage: the stamps the
                # commit would verify first (the commit still verifies any arriving meanwhile).
                self.services.verify_ahead(record.name)
                instance, deploy_ms = await self._wait_ready(m, timeout=descriptor.readiness_timeout)
            m.durations["deploy"] = round(deploy_ms, 3)
            pre = await self._precopy(m, record, instance)
            self._journal(m, "reroute", instance=instance)
            failpoints.hit("migration.before_reroute")
            drain: asyncio.Future[Any] | None = None
            with m.timed("reroute"):
                if pre is None:
                    committed, drain = await self._reroute_and_commit(m, record, instance)
                else:
                    committed = await self._handover(m, record, instance, pre)
            committed_at = time.monotonic()
        except BaseException:
            if not rules.stands(self.services.get(m.service), m.id, m.target):  # never after the commit
                await self._abort_target(m)
            raise
        # The other entries' `ROUTE` goes out at the commit, beside the push to the AC; the
        # answer waits for it, the drain here runs on (the cleanup awaits both).
        rollout = None if drain is None else self._roll_out(committed, drain, committed_at)
        try:
            self._journal(m, "cleanup", instance=instance)
            failpoints.hit("migration.after_commit")
            # Before the answer the AC holds the committed record (a call to it right after the
            # answer finds the service there). The other entries have it by their `ROUTE`, not
            # by this push too (both at once contend at the entry and the answer waits): above
            # all not the old location, even as an entry, which would stop its copy on the merge
            # while other entries may still route to it; it stops it at the cleanup's `RELEASE`.
            skip = frozenset(record.entries) - {m.target} if rollout is not None else frozenset()
            with m.timed("commit"):
                await self.agent.publish_now(committed, skip=skip | {record.location})
            if rollout is not None:
                # Every other entry routes before the answer, so a request at any endpoint right
                # after it reaches the new copy; only this HC's drain runs on past the answer.
                await asyncio.shield(rollout.entries)
                m.durations["reroute_entries"] = round((time.monotonic() - committed_at) * 1000.0, 3)
        except BaseException as exc:
            if rollout is not None:  # committed: the entries still route to it before the error
                if isinstance(exc, Exception):
                    await rollout.finished()
                else:
                    rollout.cancel()
            raise
        return committed, rollout

    def _roll_out(self, committed: Record, drain: asyncio.Future[Any], committed_at: float) -> overlap.Rollout:
        per_entry: dict[str, dict[str, float]] = {}
        return overlap.Rollout.start(self.homes.route_entries(committed, timings=per_entry), drain,
                                     f"{committed.name} at {self.here}", per_entry=per_entry, started=committed_at)

    # -- stages ----------------------------------------------------------------------------
    def _placement_request(self, descriptor: ServiceDescriptor, record: Record, target: str | None) -> list[Candidate]:
        req = requirements(descriptor, avoid={record.location}, home=record.home)
        views = self.agent.cluster_views()
        if target is not None:
            views = {target: views[target]} if target in views else {}
        placement: Placement = rank(req, views.values(), home=record.home, policy=self.policy)
        if target is not None and not placement.ranked and placement.rejected:
            reason = placement.rejected[0].reason
            if reason.startswith("policy:"):  # its gossiped accept-from: refused without asking
                raise WorkloadRefused(Refusal(RULE_ACCEPT_FROM, f"cluster {target!r} cannot take it: {reason}",
                                              record.home))
            raise ServiceError(f"cluster {target!r} cannot take it: {reason}", field="target")
        return rules.candidates(placement.ranked, record, explicit=target is not None, refusals=self.refused,
                                now=time.monotonic())

    async def _replicate(self, m: Migration, record: Record, ranked: list[Candidate]) -> str:
        refusals: list[str] = []
        for candidate in ranked:
            url = self.agent.api_url_of(candidate.name)
            if url is None:
                continue
            try:
                await self.client.call(url, REPLICATE, wire.Replicate(
                    migration_id=m.id, name=record.name, descriptor=record.descriptor, home=record.home,
                    endpoint=record.endpoint, source=self.here).to_wire(), timeout=5.0)
                return candidate.name
            except PeerRefused as exc:
                refusals.append(f"{candidate.name}: {exc}")
                if exc.status == 403 and exc.rule is not None:  # its workload policy: try the next
                    self.refused.remember(candidate.name, record.digest, exc.rule, time.monotonic())
                    m.refusals.append({"cluster": candidate.name, "rule": exc.rule, "error": exc.message})
                    log.warning("%s refused %s by its workload policy (%s): %s", candidate.name, record.name,
                                exc.rule, exc.message)
            except PeerError as exc:
                # No answer is not a refusal: the request may still be processed (a paused
                # agent resumes). Tell it to drop the copy, in the background, until it hears.
                refusals.append(f"{candidate.name}: {exc}")
                self.agent.spawn(self._abort_until_heard(candidate.name, m.id, record.name))
        raise MigrationError("every candidate refused: " + "; ".join(refusals))

    async def _wait_ready(self, m: Migration, *, timeout: float) -> tuple[str, float]:
        assert m.target is not None
        try:
            return await wait_copy_ready(self.client, self.agent.api_url_of(m.target), migration_id=m.id,
                                         name=m.service, target=m.target, ready_timeout=timeout)
        except CopyNotReady as exc:
            raise MigrationError(str(exc)) from exc

    async def _reroute_and_commit(self, m: Migration, record: Record, instance: str
                                  ) -> tuple[Record, asyncio.Future[Any]]:
        """The steward's own frontend first (make-before-break: until the new server serves),
        then the commit; returns the route's task, still draining the old server. The other
        entries' `ROUTE` starts at the commit (`overlap.Rollout`) and the answer waits for it;
        the drain runs on past the answer, and the cleanup awaits both before the old copy stops."""
        assert m.target is not None
        moved = moves.commit(record, location=m.target, instance=instance, migration_id=m.id)
        if moves.promoted(record, moved):
            m.notes = f"the standby at {m.target} was promoted (its warm copy reused)"
        host, port = split_addr(instance)
        failpoints.hit("migration.reroute", fail=lambda: RerouteError(f"failpoint: reroute of {record.name} failed"))
        with m.part("reroute_here"):  # until the new server serves; its old one drains meanwhile
            up = asyncio.Event()
            reached = self.services.lb.reach(host, port)  # (first: see `_prepare_while_routing`)
            here = asyncio.ensure_future(self.services.lb.route(record.name, host, port, proven_ready=True,
                                                                on_up=up.set, reached=reached))
            try:
                prepared = await self._prepare_while_routing(moved)
            except BaseException:  # (cancelled: the route goes too, as `until_up` would see to)
                here.cancel()
                raise
            await overlap.until_up(here, up)
        try:
            failpoints.hit("migration.after_route")
            with m.part("reroute_commit"):
                committed = self.services.commit_move(moved, m.id, prepared=prepared)  # (arrival settled too)
        except BaseException:  # (as when the whole route was awaited, the old server is gone first)
            await overlap.drained(here, f"{record.name} at {self.here}")
            raise
        committed_at = time.monotonic()
        here.add_done_callback(lambda _: m.durations.__setitem__(
            "reroute_drain", round((time.monotonic() - committed_at) * 1000.0, 3)))
        return committed, here

    async def _prepare_while_routing(self, moved: Record) -> PreparedWrite | None:
        """The commit's version built and signed (about half a millisecond of CPU) while this
        HAProxy answers the route's first command and the copy its TCP connect, instead of
        after the route (issue 16): one turn of the loop lets both tasks send theirs (they
        were started in that order). Nothing is written: the commit stores it only if the
        record is still the one it was built on. An error here is left for the commit to meet
        again, where a failed commit is handled (the route is undone)."""
        await asyncio.sleep(0)
        try:
            return self.services.prepare_commit(moved)
        except RoamError as exc:
            log.debug("%s: the commit's version not prepared ahead: %s", moved.name, exc)
            return None

    async def _commit_and_route_held(self, m: Migration, record: Record, instance: str, state_version: int,
                                     step: Callable[[str], None]) -> tuple[Record, list[str]]:
        """Inside a handover: this entry reroutes and releases its held requests first (the new
        copy holds the final state), then the commit, then every other entry reroutes and
        releases. Routing here before the commit keeps the stateless path's crash rule: a
        failure before the commit leaves nothing that points at the copy being aborted."""
        assert m.target is not None
        host, port = split_addr(instance)
        await self.services.lb.route(record.name, host, port, proven_ready=True)
        await self.services.lb.release(record.name)
        step("released_here")
        failpoints.hit("migration.after_route")
        moved = moves.commit(record, location=m.target, instance=instance, migration_id=m.id,
                             state_version=state_version)
        if moves.promoted(record, moved):
            m.notes = f"the standby at {m.target} was promoted (its warm copy reused)"
        committed = self.services.commit_move(moved, m.id)
        step("committed")
        missing = await self.homes.route_entries(committed, release=True)
        if missing:
            m.notes = f"entries not confirmed: {', '.join(missing)}"
        return committed, missing

    async def _precopy(self, m: Migration, record: Record, instance: str) -> ho.Precopy | None:
        """The `state` stage of a stateful service (peer/state/handover.py); None if stateless."""
        spec = state_spec(record)
        if spec is None or self.state is None or not record.instance:
            return None
        if m.kind == "failsafe":
            # The old copy is lost: the new one starts from the last state saved here (no
            # pre-copy, no handover); recovery point as for the fail-safe's own redeploy.
            with m.timed("state"):
                try:
                    await self.state.install_latest(record, *split_addr(instance))
                except StateError as exc:
                    m.notes = f"state not restored: {exc}"
            return None
        self._journal(m, "state", instance=instance)
        with m.timed("state"):
            return await ho.precopy(self.state.hook, src=split_addr(record.instance), dst=split_addr(instance),
                                    path=spec.path)

    async def _handover(self, m: Migration, record: Record, instance: str, pre: ho.Precopy) -> Record:
        """Hold at every entry, copy the last version, reroute and release (make-before-break)."""
        spec, keeper = state_spec(record), self.state
        assert spec is not None and keeper is not None and record.instance
        src, dst = split_addr(record.instance), split_addr(instance)
        others = [e for e in record.entries if e != self.here]
        hand = ho.Handover(name=record.name, lb=self.services.lb, entries=self.homes, others=others)
        async with hand.held(ttl=ho.hold_ttl(pre)):
            hand.step("held")
            final, final_bytes = await ho.final_copy(keeper.hook, src=src, dst=dst, path=spec.path, last=pre.last)
            hand.step("copied")
            version = keeper.version_of(record, final)
            committed, missing = await self._commit_and_route_held(m, record, instance, version.seq, hand.step)
            hand.done([e for e in others if e not in missing])
        keeper.save(record, final)  # after the window: its fsync keeps no client waiting
        keeper.installed.admit(instance, version)
        exact = await ho.unchanged_since(keeper.hook, src=src, path=spec.path, final=final)
        m.durations["handover"] = round(hand.window_ms or 0.0, 3)
        m.state_transfer = ho.report(pre, final, final_bytes, version.seq, hand, exact)
        if exact is False:
            log.warning("migration %s of %s: the old copy's state changed after the final copy", m.id, record.name)
        return committed

    async def _cleanup(self, m: Migration, before: Record, committed: Record) -> None:
        """Stop the old copy (only now that the new one serves), then tell the others."""
        if before.location == self.here:
            plan = moves.release(committed, self.here)
            if plan.stop:
                await self.services.stop_copy(before.name)
            if plan.drop:
                self.services.forget(before.name)
        else:
            url = self.agent.api_url_of(before.location)
            if url is not None:
                with contextlib.suppress(PeerError):
                    await self.client.call(url, RELEASE, wire.Release(committed).to_wire(), timeout=10.0)
        await self.agent.publish_now(committed, frozenset({before.location}))

    async def _abort_target(self, m: Migration, *, wait: float = 0.0) -> None:
        target = m.target
        if target is None:
            return
        url = self.agent.api_url_of(target)
        if url is None and wait > 0:
            # Right after a restart gossip may not know the target yet.
            with contextlib.suppress(TimeoutError):
                url = await wait_until(lambda: self.agent.api_url_of(target), timeout=wait, interval=0.1)
        if url is not None:
            with contextlib.suppress(PeerError):
                await self.client.call(url, ABORT, wire.Abort(m.id, m.service).to_wire(), timeout=5.0)

    async def _abort_until_heard(self, cluster: str, migration_id: str, name: str) -> None:
        for _ in range(30):
            url = self.agent.api_url_of(cluster)
            if url is not None:
                try:
                    await self.client.call(url, ABORT, wire.Abort(migration_id, name).to_wire(), timeout=5.0)
                    return
                except PeerRefused:
                    return
                except PeerError:
                    pass
            await asyncio.sleep(2.0)

    # -- journal and recovery ----------------------------------------------------------------
    def _journal(self, m: Migration, stage: str, **extra: Any) -> None:
        self.services.journal_move(journal.migration_entry(
            migration_id=m.id, service=m.service, stage=stage, target=m.target, home=m.home, source=m.source, **extra))

    async def _given_way(self, m: Migration, exc: SupersededWrite) -> None:
        """A move finished after a restart whose commit gave way to a version merged since
        (only anti-entropy's thread can land one between the read and the commit): that
        version decides. This entry routes as it says; the convergence rounds stop any copy it
        does not name (the target's arrival expires)."""
        log.warning("migration %s of %s not finished after the restart: %s", m.id, m.service, exc)
        with contextlib.suppress(RoamError, LBError):
            await self.services.route_as_held(m.service)
        self.history.finish(m, outcome="aborted", error=str(exc))
        self.services.close_move(m.id)

    async def recover(self) -> None:
        """After a crash: roll back migrations that had not rerouted, finish those that had
        (the rule: peer/core/journal.py `recovery`)."""
        for entry in self.services.open_moves():
            name, stage = entry["service"], entry["stage"]
            record = self.services.get(name)
            m = Migration(service=name, kind="recovery", reason=f"agent restarted during {stage}",
                          coordinator=self.here, home=entry["home"], source=entry["source"],
                          target=entry.get("target"), id=entry["id"])
            routed = bool(entry.get("instance")) and \
                self.services.lb.current_route(name) == split_addr(entry["instance"])
            decision = journal.recovery(entry, record, here=self.here, routed_to_target=routed)
            if isinstance(decision, journal.Finish) and record is not None:
                if decision.commit:
                    try:
                        record = self.services.commit(
                            moves.commit(record, location=entry["target"], instance=entry["instance"],
                                         migration_id=entry["id"]))
                    except SupersededWrite as exc:
                        await self._given_way(m, exc)
                        continue
                before = replace(record, location=decision.source)
                with contextlib.suppress(Exception):
                    # This entry's frontend first: the route here is saved to lb-slots.json
                    # after the commit (`LoadBalancer.route` writes it in a thread while the
                    # record commits), so a crash may leave the saved route on the old copy
                    # and HAProxy restarted on it. The records are the truth: this entry routes
                    # as the committed record says before the old copy stops (`reconcile` did
                    # at start: a no-op then; if the route fails, the old copy keeps running).
                    if self.here in record.entries:
                        await self.services.ensure_route(record)
                    # The crash may have come before every other entry routed (their ROUTE runs
                    # after the commit): they route again before the old copy stops.
                    await self.homes.route_entries(record)
                    await self._cleanup(m, before, record)
                self.history.finish(m, outcome="succeeded", error="completed after restart")
            else:
                await self._abort_target(m, wait=15.0)
                if isinstance(decision, journal.RollBack) and decision.reroute and record is not None:
                    with contextlib.suppress(Exception):
                        await self.services.ensure_route(record)
                self.history.finish(m, outcome="aborted", error="rolled back after restart")
            self.services.close_move(entry["id"])
