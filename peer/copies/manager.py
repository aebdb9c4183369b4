"""Local copies and homed frontends: what this cluster runs and routes, kept in line with its records.

The store is the truth; the driver (instances) and the load balancer (routes) are made to
match it. Every change is committed to the store before it is acted on or acknowledged, so a
crash at any point is repaired by `reconcile()` on the next start.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import defaultdict, deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

from lb.hostport import join_hostport, split_hostport
from lb.balancer import LoadBalancer
from lb.errors import InvalidTokenError, LBError
from lb.runtime import valid_ip
from peer.drivers.base import Driver, DriverError, DriverTimeout, Instance, NeverReady, ServiceNotFound
from peer.drivers.descriptor import ServiceDescriptor
from peer.core import journal, moves
from peer.core import move as rules
from peer.errors import InvalidKind, NotFoundKind, RefusedKind, RoamError, UnavailableKind
from peer.records.merge import (
    Action,
    AdoptLocalCopy,
    Forget,
    KeepStandby,
    MergeOutcome,
    RenameLocal,
    Reroute,
    StopLocalCopy,
)
from peer.records.naming import incarnation_order, new_incarnation, qualified, replaced_by_deletes
from peer.records.record import Record, State, descriptor_digest, tombstone_of
from peer.records.store import PreparedWrite, RecordStore
from peer.federation.metaorchestrator import requirements
from peer.state.fresh import FreshCopies
from peer.state.handover import HOLD_MAX
from peer.runtime.supervision import Supervisor
from peer.runtime.waiting import wait_set
from peer.trust.workload import Refusal, Resolver, WorkloadPolicy, check, resolve_executable
from placement import ClusterView, admit
from placement.homes import choose_entries

log = logging.getLogger(__name__)

PENDING_TTL = 150.0  # a copy started for a migration that never commits is removed after this (> MAX_READY_TIMEOUT)
ORPHAN_AFTER = 15.0  # ...or sooner when its coordinator stopped asking about it (it gave up or died; a ready copy: + HOLD_MAX, move.arrival_orphaned)

RECOVERY_HOLD = 10.0  # how long a creation waits for the agent's records recovery before a 503
ENTRY_RESERVATION = 30.0  # an entry frontend opened for a creation that has not written its record yet

Publisher = Callable[[Record, frozenset[str]], Awaitable[None]]


@dataclass(frozen=True)
class NameHolder:
    """A cluster's answer to "do you hold this name?" (create refuses names the federation knows)."""

    cluster: str
    home: str
    incarnation: str
    tombstone: bool
    replaces: tuple[str, ...] = ()  # the holder's record's `replaces` (naming)


class HomeSetPeers(Protocol):
    """What creating a service with a home set needs of the federation (the agent implements it)."""

    def live_views(self) -> Sequence[ClusterView]: ...

    async def lookup(self, name: str) -> list[NameHolder]: ...

    async def open_entry(self, cluster: str, name: str, incarnation: str, *, home: str,
                         descriptor: bytes) -> str | None: ...

    async def publish_now(self, record: Record, extra: frozenset[str] = frozenset()) -> None: ...


class StateCheck(Protocol):
    """Checks a new stateful service's state hook before the service is created (peer/state);
    raises ServiceError (4xx naming `state.path` or `state`) if it does not answer as it must."""

    async def check_new(self, descriptor: ServiceDescriptor, host: str, port: int) -> None: ...


class ServiceError(RoamError):
    """A service operation that cannot be done as things stand (a conflict); `field` names the
    input it is about. Subclasses say why in kinds `peer.api` maps to statuses (peer.errors)."""

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


class NoSuchService(ServiceError, NotFoundKind):
    """The service named does not exist here."""


class InvalidServiceRequest(ServiceError, InvalidKind):
    """The request cannot be satisfied as asked (e.g. more entries than live clusters)."""


class ServiceUnavailable(ServiceError, UnavailableKind):
    """This agent cannot take it now (shutting down, recovering its records)."""


class WorkloadRefused(ServiceError, RefusedKind):
    """This cluster's workload policy (peer.trust.workload) refuses the service, naming the rule."""

    def __init__(self, refusal: Refusal) -> None:
        super().__init__(refusal.message, field=refusal.field)
        self.refusal = refusal
        self.rule = refusal.rule


@dataclass(frozen=True)
class WorkloadGate:
    """The cluster's policy bound to how it resolves commands; one question: may it run this?"""

    here: str
    policy: WorkloadPolicy = WorkloadPolicy()
    resolve: Resolver = resolve_executable

    def refusal(self, descriptor: ServiceDescriptor, *, home: str) -> Refusal | None:
        if self.policy.permissive:
            return None
        return check(self.policy, here=self.here, home=home, command=descriptor.command,
                     image=descriptor.image, resolve=self.resolve)

    def require(self, descriptor: ServiceDescriptor, *, home: str) -> None:
        """Raise WorkloadRefused if the policy refuses `descriptor` homed at `home`."""
        refusal = self.refusal(descriptor, home=home)
        if refusal is not None:
            raise WorkloadRefused(refusal)


@dataclass
class PendingCopy:
    """A copy started here for a migration whose record is not committed yet."""

    migration_id: str
    descriptor: ServiceDescriptor
    home: str
    deadline: float
    task: asyncio.Task[None] | None = None
    instance: Instance | None = None
    deploy_ms: float | None = None
    error: str | None = None
    last_poll: float = field(default_factory=time.monotonic)  # the coordinator's last STATUS call
    standby: bool = False  # a warm copy for the steward's StandbyKeeper, not a migration target


def addr_of(instance: Instance) -> str:
    return join_hostport(instance.host, instance.port)


split_addr = split_hostport  # the name the migration modules know it by


def routable(instance: str | None) -> tuple[str, int] | None:
    """The record's instance as HAProxy can route to it (an IP and a port), else None: a
    name that is not an IP (a Kubernetes node name) is left to the reroute that wrote it."""
    if not instance:
        return None
    try:
        host, port = split_addr(instance)
        return valid_ip(host), port
    except (ValueError, InvalidTokenError):
        return None


class ServiceManager:
    def __init__(self, *, here: str, store: RecordStore, driver: Driver, lb: LoadBalancer, publish: Publisher,
                 peers: HomeSetPeers | None = None, workload: WorkloadGate | None = None) -> None:
        self.here = here
        self.peers = peers
        self.workload = workload if workload is not None else WorkloadGate(here)
        self.reserved: dict[str, tuple[str, float]] = {}  # entry frontends: name -> (incarnation, deadline)
        self.store = store
        self.driver = driver
        self.lb = lb
        self._publish = publish
        self._locks: defaultdict[str, asyncio.Lock] = defaultdict(asyncio.Lock)
        self.pending: dict[str, PendingCopy] = {}
        self.aborted: deque[str] = deque(maxlen=1000)  # migration ids refused if they arrive late
        self.jobs = Supervisor(f"{here}:services")  # merges applied and copies started in the background
        self.closing = False
        self.recovered = asyncio.Event()  # the agent clears it until its records are recovered from peers
        self.recovered.set()
        self.unaccounted: dict[str, Instance] = {}  # running copies no record accounted for at start
        self.deferred_starts: set[str] = set()  # copies the records say run here, not running at start
        self.state_check: StateCheck | None = None  # set by the agent (peer/state/keeper.py)
        self.fresh = FreshCopies()  # copies (re)started here without roam's state (peer/state/fresh.py)
        # Told when a concurrent creation is renamed `name@home` here: (old, new, incarnation).
        self.on_rename: list[Callable[[str, str, str], None]] = []

    def lock(self, name: str) -> asyncio.Lock:
        return self._locks[name]

    def records(self) -> list[Record]:
        return self.store.all()

    def get(self, name: str) -> Record | None:
        record = self.store.get(name)
        return None if record is None or record.tombstone else record

    def descriptor_of(self, record: Record) -> ServiceDescriptor:
        """The descriptor the driver runs: the record's, under the record's name (a concurrent
        creation renamed `name@home` keeps the descriptor it was created with)."""
        descriptor = ServiceDescriptor.from_msgpack(record.descriptor)
        return descriptor if descriptor.name == record.name else replace(descriptor, name=record.name)

    def usage(self) -> tuple[float, int, int]:
        """Declared (cpu cores, memory bytes, slots) of what runs here or is about to."""
        cpu, mem, slots = 0.0, 0, 0
        descriptors = [self.descriptor_of(r) for r in self.records() if r.copy_here(self.here)]
        descriptors += [p.descriptor for p in self.pending.values()]
        for d in descriptors:
            cpu += d.cpu_cores * d.replicas
            mem += d.memory_bytes * d.replicas
            slots += 1
        return cpu, mem, slots

    # -- the owner's verbs (issue 13) -------------------------------------------------------
    # The other parts (engine, replica, fail-safe, standby, home sets, convergence, state)
    # change this cluster's records and its move journal only through these.
    def stored(self, name: str) -> Record | None:
        """The record as stored, a tombstone included (`get` hides tombstones)."""
        return self.store.get(name)

    def all_stored(self) -> list[Record]:
        """Every record as stored, tombstones included."""
        return self.store.all(include_tombstones=True)

    def commit(self, version: Record) -> Record:
        """Write a version this cluster decides (a move's commit, an adoption, a repair) as a
        local write: its own clock entry advanced, signed where identity is on."""
        return self.store.put_local(version, here=self.here, now=time.time())

    def prepare_commit(self, version: Record) -> PreparedWrite:
        """`commit`'s version of `version` built and signed now, for `commit_move` to store (the
        migration engine does it while HAProxy answers: RecordStore.prepare_local)."""
        return self.store.prepare_local(version, here=self.here, now=time.time())

    def commit_move(self, version: Record, migration_id: str, *, prepared: PreparedWrite | None = None) -> Record:
        """`commit` of a move's record, with `settle_arrival` in the same transaction when the
        move's copy arrived here: one fsync on the reroute stage instead of two (issue 16), and
        the arrival's journal entry is closed exactly when the record names this cluster (a
        crash between them left it open for `reconcile` to close). `prepared`: `prepare_commit`'s."""
        pending = self.pending.get(version.name)
        arrived = pending is not None and pending.migration_id == migration_id
        committed = self.store.put_local(version, here=self.here, now=time.time(), prepared=prepared,
                                         close=journal.arrival_key(version.name) if arrived else None)
        if arrived:
            self.pending.pop(version.name, None)
        return committed

    def verify_ahead(self, name: str) -> None:
        """Verify now the stamps the next local write of `name` would verify first (a caller
        that waits anyway spares its later commit that work: RecordStore.verify_vouched)."""
        self.store.verify_vouched(name)

    def merge(self, version: Record) -> MergeOutcome:
        """Take a version another cluster wrote (its actions are the caller's to run)."""
        return self.store.apply_remote(version, here=self.here)

    def forget(self, name: str) -> None:
        """Drop a record this cluster no longer has any part in (not a delete: no tombstone)."""
        self.store.drop(name)

    def on_records_change(self, callback: Callable[[], None]) -> Callable[[], None]:
        """Call `callback` after every commit that changed a record; returns the unsubscribe."""
        self.store.on_change.append(callback)
        return lambda: self.store.on_change.remove(callback)

    def journal_move(self, entry: dict[str, Any]) -> None:
        """The coordinator's write-ahead entry of a move (`journal.migration_entry`), before each stage."""
        self.store.journal_put(journal.migration_key(entry["id"]), entry)

    def close_move(self, migration_id: str) -> None:
        self.store.journal_close(journal.migration_key(migration_id))

    def open_moves(self) -> list[dict[str, Any]]:
        """The coordinator's entries a crash left open, oldest first (`recover` finishes them)."""
        return [entry for key, entry in self.store.journal_open() if journal.is_migration(key)]

    def expect_arrival(self, name: str, migration_id: str) -> None:
        """A copy of `name` is arriving here by move `migration_id` (the target's entry)."""
        self.store.journal_put(journal.arrival_key(name), journal.arrival_entry(migration_id=migration_id, name=name))

    def end_arrival(self, name: str) -> None:
        self.store.journal_close(journal.arrival_key(name))

    def busy(self) -> set[str]:
        """Services an operation owns right now (a copy arriving, reserved, or journaled as
        arriving or moving): convergence leaves them to that operation."""
        owned = set(self.pending) | set(self.reserved)
        for key, entry in self.store.journal_open():
            owned |= journal.owned_service(key, entry)
        return owned

    # -- local copies ----------------------------------------------------------------------
    async def run_copy(self, descriptor: ServiceDescriptor, *, home: str) -> tuple[Instance, float]:
        """Deploy and wait until ready, at most the descriptor's `ready_timeout`; returns the
        instance and the deploy time in ms. A copy that is not ready by then is removed (its
        log tail goes into `NeverReady`): nothing of it stays, and no caller waits longer.
        Every copy this cluster starts comes through here, so the workload policy is checked
        here too (WorkloadRefused), whatever path the descriptor came by."""
        self.workload.require(descriptor, home=home)
        started = time.monotonic()
        timeout = descriptor.readiness_timeout
        try:
            await self.driver.deploy(descriptor, home=home)
            instance = await self.driver.wait_ready(descriptor.name, timeout=timeout)
        except DriverTimeout as exc:
            with contextlib.suppress(DriverError):
                await self.driver.delete(descriptor.name)
            raise NeverReady(f"{descriptor.name} was not ready within its ready_timeout of {timeout:g}s "
                             "and was removed", log_tail=exc.log_tail) from exc
        except BaseException:
            with contextlib.suppress(DriverError):
                await self.driver.delete(descriptor.name)
            raise
        return instance, (time.monotonic() - started) * 1000.0

    async def stop_copy(self, name: str) -> None:
        await self.driver.delete(name)

    # -- admin operations ------------------------------------------------------------------
    async def create(self, descriptor: ServiceDescriptor) -> Record:
        """Deploy here as HC with a home set: instance first, then the entries' frontends, then the
        record, then the routes (crash-safe order: a crash leaves nothing a record points to)."""
        name = descriptor.name
        self.workload.require(descriptor, home=self.here)
        await self._wait_recovered()
        async with self.lock(name):
            existing = self.store.get(name)
            if existing is not None and not existing.tombstone:
                raise ServiceError(f"service {name!r} already exists (home {existing.home})", field="name")
            if name in self.pending:
                raise ServiceError(f"service {name!r} is arriving here by migration", field="name")
            if self.closing:
                raise ServiceUnavailable("agent is shutting down")
            mine = self.store.get(qualified(name, self.here))  # where a concurrent twin of it would go
            if mine is not None and not mine.tombstone:
                raise ServiceError(f"service {mine.name!r} exists, homed here: {name!r} created again here "
                                   f"could not be told apart from it after a partition", field="name")
            known = [(r.incarnation, r.replaces) for r in (existing, mine) if r is not None]
            known += await self._check_name_free(name)
            after = max((incarnation_order(inc)[0] for inc, _ in known), default=0)
            replaces = replaced_by_deletes(known)
            others = self._choose_entries(descriptor)
            self._check_standby_room(descriptor)
            incarnation = new_incarnation(now=time.time(), after=after)
            frontend = await self.lb.open_frontend(name)
            try:
                instance, _ = await self.run_copy(descriptor, home=self.here)
            except BaseException:
                await self.lb.close_frontend(name)
                raise
            await self._check_state_hook(descriptor, instance)
            endpoints = [(self.here, f"{frontend[0]}:{frontend[1]}")]
            endpoints += await self._open_entries(others, descriptor, incarnation)
            payload = descriptor.canonical_msgpack()
            record = self.store.put_local(
                Record(name=name, home=self.here, location=self.here, state=State.RUNNING,
                       digest=descriptor_digest(payload), descriptor=payload, instance=addr_of(instance),
                       endpoint=endpoints[0][1], incarnation=incarnation, replaces=replaces,
                       homes=tuple(c for c, _ in endpoints), endpoints=tuple(sorted(endpoints))),
                here=self.here, now=time.time(),
            )
            await self.lb.route(name, instance.host, instance.port, proven_ready=True)
        if self.peers is not None:
            await self.peers.publish_now(record)
        else:
            await self._publish(record, frozenset())
        return record

    async def _check_state_hook(self, descriptor: ServiceDescriptor, instance: Instance) -> None:
        """A stateful service whose hook does not answer (404, too large) is refused before
        anything else exists: its copy is stopped and its frontend closed (nothing half-done)."""
        if descriptor.state is None or self.state_check is None:
            return
        try:
            await self.state_check.check_new(descriptor, instance.host, instance.port)
        except BaseException:
            with contextlib.suppress(DriverError):
                await self.stop_copy(descriptor.name)
            with contextlib.suppress(LBError):
                await self.lb.close_frontend(descriptor.name)
            raise

    async def _wait_recovered(self) -> None:
        """A name is judged free only once this cluster holds what its peers know of it: a
        creation arriving while the agent recovers its records waits (bounded), then 503."""
        if not await self.recovered_within(RECOVERY_HOLD):
            raise ServiceUnavailable("agent is recovering its records from peers; retry in a few seconds"
                                     ) from None

    async def recovered_within(self, timeout: float) -> bool:
        """Whether the agent's records recovery from its peers (peer.agent._catch_up) is over, or
        ends within `timeout`: what runs or is homed here is judged from the records only then."""
        return self.recovered.is_set() or await wait_set(self.recovered, timeout)

    async def _check_name_free(self, name: str) -> list[tuple[str, tuple[str, ...]]]:
        """Refuse a name the federation holds live; return the deleted incarnations known for it
        (with what each replaced): the new creation supersedes them (naming)."""
        if self.peers is None:
            return []
        holders = await self.peers.lookup(name)
        live = [h for h in holders if not h.tombstone]
        if live:
            raise ServiceError(f"service {name!r} already exists: homed at {live[0].home}, held by "
                               f"{live[0].cluster}", field="name")
        return [(h.incarnation, h.replaces) for h in holders]

    def _choose_entries(self, descriptor: ServiceDescriptor) -> list[str]:
        """The other entries of a new service's home set (placement.homes), checked against
        the clusters alive now."""
        views = list(self.peers.live_views()) if self.peers is not None else []
        alive = [v for v in views if v.alive and v.name != self.here]
        wanted = descriptor.entries if descriptor.entries is not None else min(2, len(alive) + 1)
        if wanted > len(alive) + 1:
            raise InvalidServiceRequest(f"entries: {wanted} asked but only {len(alive) + 1} clusters are alive",
                                        field="entries")
        own = next((v.tier for v in views if v.name == self.here), "")
        return choose_entries(alive, chosen=[self.here], tiers=[own], count=wanted - 1, home=self.here)

    def _check_standby_room(self, descriptor: ServiceDescriptor) -> None:
        """Refuse `standby: N` when fewer than N other live clusters could hold a warm copy now
        (admission, tier constraints): nothing is deployed yet. Later losses are the keeper's."""
        if descriptor.standby == 0:
            return
        views = [v for v in (self.peers.live_views() if self.peers is not None else []) if v.name != self.here]
        req = requirements(descriptor)
        able = [v.name for v in views if admit(req, v) is None]
        if len(able) < descriptor.standby:
            raise InvalidServiceRequest(f"standby: {descriptor.standby} warm copies asked but only {len(able)} "
                                        f"other live cluster(s) can hold one ({', '.join(able) or 'none'})",
                                        field="standby")

    async def _open_entries(self, clusters: list[str], descriptor: ServiceDescriptor,
                            incarnation: str) -> list[tuple[str, str]]:
        """Ask each chosen entry to open a frontend; an entry that does not answer is left out
        (the steward's repair adds one later)."""
        if self.peers is None or not clusters:
            return []
        peers, name = self.peers, descriptor.name
        payload = descriptor.canonical_msgpack()
        answers = await asyncio.gather(*(peers.open_entry(c, name, incarnation, home=self.here, descriptor=payload)
                                         for c in clusters))
        return [(c, ep) for c, ep in zip(clusters, answers) if ep is not None]

    async def reserve_entry(self, name: str, incarnation: str, *, home: str | None = None,
                            descriptor: ServiceDescriptor | None = None) -> tuple[str, int]:
        """At an entry: open a frontend for a service being created elsewhere, kept for
        ENTRY_RESERVATION seconds until its record arrives. A restrictive workload policy
        needs the home and descriptor to judge it (an older caller that sends none is refused)."""
        if descriptor is None or home is None:
            if not self.workload.policy.permissive:
                raise WorkloadRefused(Refusal("accept-from", f"{self.here} routes only services whose home and "
                                                             "descriptor it can check; none given", name))
        else:
            self.workload.require(descriptor, home=home)
        async with self.lock(name):
            current = self.get(name)
            if current is not None and current.incarnation != incarnation and self.here in current.entries:
                raise ServiceError(f"another service named {name!r} (home {current.home}) has an entry here")
            frontend = await self.lb.open_frontend(name)
            self.reserved[name] = (incarnation, time.monotonic() + ENTRY_RESERVATION)
            return frontend

    async def delete(self, name: str) -> Record:
        async with self.lock(name):
            # The tombstone of the version held at the write (one store transaction): a version
            # merged since a read must not come back under the delete's clock.
            tomb = self.store.change_local(name, tombstone_of, here=self.here, now=time.time())
            if tomb is None:
                raise NoSuchService(f"no service {name!r}")
            if tomb.location == self.here:  # (a tombstone keeps the location and holders its version had)
                try:
                    await self.stop_copy(name)
                except DriverError as exc:  # the delete stands (the tombstone is written): the
                    # convergence round stops a deleted service's copy that still runs
                    log.error("%s deleted, but its copy did not stop (convergence retries): %s", name, exc)
            with contextlib.suppress(LBError):
                await self.lb.close_frontend(name)
        # Wait (bounded) for the clusters that hold the record: once the delete answers, a
        # LOOKUP anywhere sees the tombstone and the name is free to reuse.
        holders = frozenset({tomb.location, *tomb.entries, *tomb.standby_clusters})
        if self.peers is not None:
            await self.peers.publish_now(tomb, holders)
        else:
            await self._publish(tomb, holders)
        return tomb

    def settle_arrival(self, name: str, migration_id: str | None) -> None:
        """A migration to here committed locally (this cluster wrote the record): the copy is no
        longer pending. Remote commits settle through the AdoptLocalCopy action instead."""
        pending = self.pending.get(name)
        if pending is not None and pending.migration_id == migration_id:
            self.pending.pop(name, None)
            self.end_arrival(name)

    # -- reacting to replicated records ----------------------------------------------------
    def apply_soon(self, outcome: MergeOutcome) -> None:
        """Act on a merge outcome in the background, under the service's lock (migrations hold it)."""
        if outcome.conflict and log.isEnabledFor(logging.DEBUG):  # (the store logs each conflict, capped per batch)
            log.debug("conflict on %s resolved to location=%s (clock %s)", outcome.result.name,
                      outcome.result.location, outcome.result.vclock)
        if not outcome.actions:
            return
        self.jobs.spawn(self._apply(outcome), name=f"apply:{outcome.result.name}")

    async def _apply(self, outcome: MergeOutcome) -> None:
        names = sorted({outcome.result.name, *(a.name for a in outcome.actions),
                        *(a.new for a in outcome.actions if isinstance(a, RenameLocal))})
        async with contextlib.AsyncExitStack() as locks:
            for name in names:  # (sorted: two outcomes never wait on each other's locks)
                await locks.enter_async_context(self.lock(name))
            await self.act_locked(outcome)

    async def act_locked(self, outcome: MergeOutcome, *, keep_copy: bool = False) -> None:
        """Carry out a merge outcome's actions; the caller holds the service's lock. Whoever
        applies a record must act on it: a version that is merged here and whose actions are
        dropped is never acted on again (the next copy of it changes nothing), e.g. an AC that
        is also an entry gets the commit by `ROUTE` first and would keep its copy pending.
        `keep_copy`: a copy running here is not stopped now (a planned move's old copy serves
        until every entry has moved; the steward's `RELEASE` stops it)."""
        for action in outcome.actions:
            if keep_copy and isinstance(action, StopLocalCopy):
                continue
            try:
                await self._act(action)
            except (DriverError, LBError, WorkloadRefused) as exc:
                log.error("%s on %s failed: %s", type(action).__name__, outcome.result.name, exc)

    async def _act(self, action: Action) -> None:
        if isinstance(action, RenameLocal):
            await self.rename_local(action.name, action.new)
            return
        current = self.store.get(action.name)
        if isinstance(action, StopLocalCopy):
            pending = self.pending.get(action.name)
            if pending is None:
                log.info("stopping local copy of %s (record says it runs at %s)", action.name,
                         current.location if current else "?")
                await self.stop_copy(action.name)
        elif isinstance(action, AdoptLocalCopy):
            if current is None or current.tombstone or current.location != self.here:
                return  # (a later version, merged since, placed it elsewhere: its own actions follow)
            if self.pending.pop(action.name, None) is not None:
                self.end_arrival(action.name)
                # Write it back: this cluster enters the clock (tombstone GC relies on it), on
                # the version held at the write (a merge may land before it: change_local).
                adopted = self.store.change_local(
                    action.name, lambda held: replace(held, state=State.RUNNING) if held.location == self.here else None,
                    here=self.here, now=time.time())
                if adopted is not None:
                    await self._publish(adopted, frozenset())
            else:
                await self.ensure_local_copy(current)
        elif isinstance(action, KeepStandby):
            if current is not None and not current.tombstone and self.here in current.standby_clusters:
                await self.keep_standby(current)
        elif isinstance(action, Reroute):
            if current is not None and self.here in current.entries and not current.tombstone:
                self.reserved.pop(action.name, None)
                await self.ensure_route(current)
        elif isinstance(action, Forget):
            if current is None or current.tombstone or self.here not in current.entries:
                with contextlib.suppress(LBError):
                    await self.lb.close_frontend(action.name)
            if current is not None and not current.tombstone and not self.interested_here(current):
                self.store.drop(action.name)

    async def rename_local(self, old: str, new: str) -> None:
        """A concurrent creation is renamed `name@home` (peer.records.naming): what this cluster
        holds for it under `old` (the copy, the entry's slot, pending bookkeeping, saved state)
        is carried over to `new` without stopping anything, so its endpoint keeps serving and
        the merged record's actions find it there. The caller holds both names' locks."""
        record = self.store.get(new)
        log.warning("%s was created concurrently with another service of that name: it is %s from now on",
                    old, new)
        try:
            await self.driver.rename(old, new)
        except ServiceNotFound:
            pass
        if self.lb.frontend(old) is not None:
            await self.lb.rename(old, new)
        if old in self.pending:
            self.pending[new] = self.pending.pop(old)
        if old in self.reserved:
            self.reserved[new] = self.reserved.pop(old)
        if old in self.unaccounted:
            self.unaccounted[new] = self.unaccounted.pop(old)
        if old in self.deferred_starts:
            self.deferred_starts.discard(old)
            self.deferred_starts.add(new)
        for hook in self.on_rename:
            hook(old, new, record.incarnation if record is not None else "")

    def interested_here(self, record: Record) -> bool:
        return self.here in (*record.entries, record.location, *record.standby_clusters)

    async def keep_standby(self, record: Record) -> None:
        """The record lists a warm copy here: a pending one (started at the keeper's request)
        settles, a running one is kept, a missing one is started (its address is the
        steward's to update: the keeper replaces a standby whose address stopped serving)."""
        pending = self.pending.get(record.name)
        if pending is not None and pending.standby:
            self.pending.pop(record.name, None)
            self.end_arrival(record.name)
            return
        try:
            instance = await self.driver.status(record.name)
            if instance.state.value in ("ready", "starting"):
                return
        except ServiceNotFound:
            pass
        log.info("starting the standby copy of %s the record lists here", record.name)
        self.fresh.started(record.name)
        await self.run_copy(self.descriptor_of(record), home=record.home)
        self.fresh.started(record.name)  # a pull that raced the start sees the epoch move

    async def ensure_local_copy(self, record: Record) -> Record:
        """The record says a copy runs here: adopt it if it is alive, else start one. Its
        address goes on the record as stored once the copy answers (`_record_instance`), never
        on `record`, read before the wait: merges land meanwhile without the service's lock. A
        copy started for a record that moved elsewhere meanwhile is stopped again."""
        name = record.name
        try:
            instance = await self.driver.status(name)
            alive = instance.state.value in ("ready", "starting")
        except ServiceNotFound:
            alive = False
        if not alive:
            self.fresh.started(name)  # a new copy holds the initial state until restored
            instance, _ = await self.run_copy(self.descriptor_of(record), home=record.home)
            self.fresh.started(name)
        current, changed = self._record_instance(name, addr_of(instance), running=True)
        if current is None:
            held = self.get(name)
            if not alive and name not in self.pending and (held is None or not held.copy_here(self.here)):
                log.info("stopping the copy of %s just started: its record now says it runs at %s", name,
                         held.location if held else "nowhere (deleted)")
                await self.stop_copy(name)
            return held or record
        if changed:
            if self.here in current.entries:
                await self.ensure_route(current)
            await self._publish(current, frozenset())
        return current

    def _record_instance(self, name: str, addr: str, *, running: bool) -> tuple[Record | None, bool]:
        """Write `addr` (this cluster's copy) as the instance of the record held now, in one
        store transaction (`RecordStore.change_local`), if it still says the service runs here:
        (that record, whether it was written); (None, False) if it no longer does."""
        def change(current: Record) -> Record | None:
            if current.location != self.here or current.instance == addr:
                return None
            return replace(current, instance=addr, state=State.RUNNING) if running else replace(current, instance=addr)

        written = self.store.change_local(name, change, here=self.here, now=time.time())
        if written is not None:
            return written, True
        held = self.get(name)
        return (held, False) if held is not None and held.location == self.here else (None, False)

    def routes_as_recorded(self, record: Record) -> bool:
        """Does this cluster's route of the service point at the copy its record names? A
        record whose instance is no IP (a Kubernetes node name) cannot be compared: yes."""
        wanted = routable(record.instance)
        return wanted is None or self.lb.current_route(record.name) == wanted

    async def route_as_held(self, name: str) -> Record | None:
        """This entry's frontend follows the record held now, if this cluster is one of its
        entries: after a decision that did not commit (a move that failed or gave way to a
        version merged meanwhile: SupersededWrite), the record held is the truth. Returns it
        (None: none held, or a tombstone)."""
        current = self.get(name)
        if current is not None and self.here in current.entries:
            await self.ensure_route(current)
        return current

    async def ensure_route(self, record: Record, *, on_up: Callable[[], None] | None = None) -> None:
        """This entry's frontend must exist and point at the record's instance (a record naming
        this cluster an entry of a service its policy refuses is not routed: WorkloadRefused).
        `on_up`: as `LoadBalancer.route`'s (only called when the route changes)."""
        self.workload.require(self.descriptor_of(record), home=record.home)
        endpoint = record.endpoint_at(self.here)
        port = split_addr(endpoint)[1] if endpoint else None
        await self.lb.open_frontend(record.name, port=port)
        if record.instance and self.lb.current_route(record.name) != split_addr(record.instance):
            host, p = split_addr(record.instance)
            await self.lb.route(record.name, host, p, proven_ready=True, on_up=on_up)
        await self.ensure_backups(record)

    async def ensure_backups(self, record: Record) -> None:
        """The frontend's backup servers are the record's standbys (after the route, so a
        promoted standby serves as the primary before its backup server goes)."""
        wanted = [split_addr(addr) for _, addr in record.standbys]
        if sorted(self.lb.backups(record.name)) != sorted(wanted) or wanted:
            await self.lb.set_backups(record.name, wanted)

    def on_driver_event(self, name: str, kind: str, detail: str) -> None:
        """A restarted instance may answer on a new port: update the record (the HC reroutes).
        A crash or restart in place leaves the copy without its state: marked fresh until the
        latest saved state is installed again (peer/state/fresh.py)."""
        if kind in ("crash", "restart", "lost"):
            record = self.get(name)
            if record is not None and record.copy_here(self.here) and name not in self.pending:
                self.fresh.started(name)
        if kind not in ("restart", "ready"):
            return
        record = self.get(name)
        if record is None or record.location != self.here or name in self.pending:
            return
        self.jobs.spawn(self.refresh_instance(name), name=f"refresh:{name}")

    async def refresh_instance(self, name: str) -> None:
        async with self.lock(name):
            record = self.get(name)
            if record is None or record.location != self.here:
                return
            with contextlib.suppress(DriverError, LBError, WorkloadRefused):
                instance = await self.driver.status(name)
                current, changed = self._record_instance(name, addr_of(instance), running=False)
                if current is not None and changed:
                    if self.here in current.entries:
                        await self.ensure_route(current)
                    await self._publish(current, frozenset())

    # -- after a restart -------------------------------------------------------------------
    async def reconcile(self) -> None:
        """Make instances and routes match the records after a (re)start. What no record here
        accounts for (a running copy, a frontend) is NOT judged now: the records may have been
        lost, and the peers hold this cluster's part of them. It waits in `unaccounted` for
        peer.copies.recovery.settle and `close_stale_frontends`, run once records were recovered."""
        running = {i.name: i for i in await self.driver.adopt()}
        open_entries = self.store.journal_open()
        open_targets = {mid for mid, _ in open_entries if journal.is_arrival(mid)}
        moving_here = {entry.get("service") for key, entry in open_entries
                       if journal.is_migration(key) and entry.get("target") == self.here}
        for record in self.records():
            try:
                if record.location == self.here and record.name not in running:
                    self.deferred_starts.add(record.name)  # the record may be stale: start after recovery
                elif record.location == self.here:
                    record = await self.ensure_local_copy(record)
                    # A route kept by HAProxy may be mid-migration (recovery decides); only a
                    # lost one is restored from the record, and the one of a move to here that
                    # committed (the record names here) before its route was saved: the route
                    # is saved after the commit (LoadBalancer.route), so lb-slots.json may still
                    # name the old copy, which the move's recovery is about to stop. Done here,
                    # before any peer hears from this cluster (the old location stops its copy
                    # when it merges the committed record).
                    if self.here in record.entries and (self.lb.current_route(record.name) is None
                                                        or record.name in moving_here):
                        await self.ensure_route(record)
                elif self.here in record.entries:
                    await self.ensure_route(record)
            except (DriverError, LBError, WorkloadRefused) as exc:
                log.error("could not restore %s: %s", record.name, exc)
        live_here = {r.name for r in self.records() if r.copy_here(self.here)}
        self.unaccounted.update({n: i for n, i in running.items() if n not in live_here})
        for mid in open_targets:
            self.store.journal_close(mid)

    async def close_stale_frontends(self) -> None:
        """After recovery: close the frontends of services this cluster is no entry of."""
        homed = {r.name for r in self.records() if self.here in r.entries} | set(self.reserved)
        for name in list(self.lb.routes()):
            if name not in homed:
                with contextlib.suppress(LBError):
                    await self.lb.close_frontend(name)

    async def expire_pending(self) -> None:
        """Drop copies started for migrations that never committed (coordinator died or aborted),
        and entry frontends reserved for a creation whose record never arrived."""
        now = time.monotonic()
        for name, (_, deadline) in list(self.reserved.items()):
            if deadline < now:
                async with self.lock(name):
                    self.reserved.pop(name, None)
                    record = self.get(name)
                    if record is None or self.here not in record.entries:
                        with contextlib.suppress(LBError):
                            await self.lb.close_frontend(name)
        for name, pending in list(self.pending.items()):
            if pending.deadline < now or rules.arrival_orphaned(
                    ready=pending.instance is not None, since_poll=now - pending.last_poll,
                    orphan_after=ORPHAN_AFTER, hold_max=HOLD_MAX):
                async with self.lock(name):
                    if self.pending.get(name) is pending:
                        log.warning("migration %s of %s never committed; removing the copy", pending.migration_id, name)
                        self.pending.pop(name, None)
                        self.end_arrival(name)
                        if moves.release(self.get(name), self.here).stop:
                            with contextlib.suppress(DriverError):
                                await self.stop_copy(name)

    async def close(self) -> None:
        self.closing = True
        await self.jobs.stop()
