"""The state kept beside a stateful service: pulled from its primary every `interval`, saved in
the data dir, pushed to its standbys, and installed into every new copy before it is routed.

Who pulls: every entry of the home set (cheap: a GET with If-None-Match, answered 304 while the
state is unchanged), so whichever entry acts as steward after a site loss holds a state at
most one interval old. The steward alone pushes to standbys. Recovery point of a fail-safe
redeploy: the last state saved, at most `interval` (plus one pull's duration) old.

`state_version` and the replicated record: a pull does NOT write the record (a write per
interval would churn vector clocks across the federation). The version saved here is shown by
the API (`GET /v1/services`, field `state_version`: the newer of the record's and this
cluster's saved one) and written into the record at commits (a migration's handover, a
fail-safe redeploy), which also gives the next steward a floor for its own sequence numbers.

Copies restarted in place (peer/state/fresh.py): a pull saves a snapshot only if the copy's
cluster said, before the GET (or after the previous changed pull) and after it, that the copy
held roam's state and had not restarted (`may_save`); the cluster running a fresh copy asks
the steward to `restore` it (`_restore_fresh`), so the saved version never goes back to a
restarted copy's initial state.

Standbys: `standby_addresses(record)` reads the record's standby copies ("ip:port"); the
standby branch adds `Record.standbys`, and until it is merged the function finds none.
`StateTransfer.install_latest` is the seam the standby code calls before a new standby counts.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Coroutine, Iterable
from typing import Protocol

from peer.drivers.base import DriverError, InstanceState
from peer.drivers.descriptor import DescriptorError, ServiceDescriptor, StateSpec
from peer.migration.standby import StateTransferError
from peer.peering.client import PeerError
from peer.records.record import Record
from peer.copies.manager import InvalidServiceRequest, ServiceManager, addr_of, split_addr
from peer.state.fresh import CopyView, may_save
from peer.state.hook import Snapshot, StateError, StateHook, StateHookMissing, StateTooLarge
from peer.state.saved import SavedState, SavedStates
from peer.state.versions import InstalledVersions, Version, observe
from peer.runtime.supervision import Supervisor
from peer.runtime.wake import Wake, next_delay

log = logging.getLogger(__name__)

TICK = 0.05  # how often due pulls are looked for; the pull period itself is the descriptor's interval
RESTORE_RETRY = 1.0  # after a failed restore of a fresh copy (steward unreachable, hook failed)
NOT_READY_RETRY = 0.05  # a fresh copy not serving yet is looked at again this soon


class StatePeers(Protocol):
    """The peer calls of the state keeper (peer/state/wire.py; a fake in unit tests)."""

    async def copy_view(self, cluster: str, name: str) -> CopyView: ...

    async def restore(self, cluster: str, record: Record, instance: str) -> None: ...


class StateTransfer(Protocol):
    """The seam for standbys (and any new copy): put the latest saved state into a copy."""

    async def install_latest(self, record: Record, host: str, port: int) -> Version | None: ...


def state_spec(record: Record) -> StateSpec | None:
    """The record's state hook, or None for a stateless service (or an unreadable descriptor)."""
    try:
        return ServiceDescriptor.from_msgpack(record.descriptor).state
    except DescriptorError:
        return None


def standby_addresses(record: Record) -> list[tuple[str, int]]:
    """The standby copies of a service, as (ip, port). Reads `record.standbys` (the standby
    branch's field: "ip:port" strings or (cluster, "ip:port") pairs); none before it exists."""
    out: list[tuple[str, int]] = []
    raw: Iterable[object] = getattr(record, "standbys", ()) or ()
    for item in raw:
        addr = item[1] if isinstance(item, (tuple, list)) and len(item) == 2 else item
        if isinstance(addr, str) and ":" in addr:
            with contextlib.suppress(ValueError):
                out.append(split_addr(addr))
    return out


class StandbySeam:
    """`peer.migration.standby.StateTransfer` over the keeper: the standby code's failure type."""

    def __init__(self, keeper: "StateKeeper") -> None:
        self.keeper = keeper

    async def install_latest(self, record: Record, host: str, port: int) -> None:
        try:
            await self.keeper.install_latest(record, host, port)
        except StateError as exc:
            raise StateTransferError(f"state of {record.name} not installed at {host}:{port}: {exc}") from exc


class StateKeeper:
    """Implements `StateTransfer`; one per agent."""

    def __init__(self, *, services: ServiceManager, hook: StateHook, saved: SavedStates,
                 steward_of: Callable[[Record], str | None], peers: StatePeers | None = None) -> None:
        self.services = services
        self.hook = hook
        self.saved = saved
        self.steward_of = steward_of
        self.peers = peers
        self._restore_at: dict[str, float] = {}
        # Per service: the primary copy (location, instance) and its view after the last changed pull.
        self._views: dict[str, tuple[tuple[str | None, str | None], CopyView]] = {}
        self._said: dict[str, str] = {}  # the last reason a pull or restore did not happen, per service
        self.installed = InstalledVersions()
        self._latest: dict[tuple[str, str], SavedState] = {}
        self._generation: dict[str, int] = {}  # bumped by every save: a pull that raced one is dropped
        self._next: dict[str, float] = {}
        self._busy: set[str] = set()
        self._jobs = Supervisor(f"{services.here}:state")  # pulls and restores under way (cancelled on stop)
        self._forgotten: set[tuple[str, str]] = set()
        self.wake = Wake()  # ends run's sleep early: a record committed, a copy marked fresh

    # -- what is saved ----------------------------------------------------------------------
    def latest(self, record: Record) -> SavedState | None:
        key = (record.name, record.incarnation)
        if key not in self._latest:
            found = self.saved.load_quietly(record.name, record.incarnation)
            if found is None:
                return None
            self._latest[key] = found
        return self._latest[key]

    def saved_version(self, record: Record) -> int | None:
        latest = self.latest(record)
        return None if latest is None else latest.version.seq

    def version_of(self, record: Record, snapshot: Snapshot) -> Version:
        """The version `save` will give `snapshot` (nothing written)."""
        latest = self.latest(record)
        return observe(latest.version if latest else None, snapshot.etag, floor=record.state_version or 0)

    def save(self, record: Record, snapshot: Snapshot) -> Version:
        """Save `snapshot` (read from the primary) as the service's latest state; its version
        follows roam's order (peer/state/versions.py), above the record's `state_version`."""
        latest = self.latest(record)
        version = self.version_of(record, snapshot)
        if latest is not None and version == latest.version:
            return version
        now = time.time()
        self.saved.save(record.name, record.incarnation, version, snapshot, now=now)
        self._latest[(record.name, record.incarnation)] = SavedState(version, snapshot, now)
        self._generation[record.name] = self._generation.get(record.name, 0) + 1
        if record.instance:
            self.installed.admit(record.instance, version)  # the primary holds what it gave
        return version

    # -- a new service ------------------------------------------------------------------------
    async def check_new(self, descriptor: ServiceDescriptor, host: str, port: int) -> None:
        """`StateCheck` for creation: the hook must answer a GET within the size limit."""
        spec = descriptor.state
        if spec is None:
            return
        try:
            await self.hook.get(host, port, spec.path)
        except StateHookMissing as exc:
            raise InvalidServiceRequest(f"the service answers 404 at its state path {spec.path}",
                                        field="state.path") from exc
        except StateTooLarge as exc:
            raise InvalidServiceRequest(f"the service's state is {exc.size} bytes, over the {exc.limit}-byte limit",
                                        field="state") from exc
        except StateError as exc:
            raise InvalidServiceRequest(f"the service's state hook at {spec.path} does not work: {exc}",
                                        field="state.path") from exc

    # -- into copies --------------------------------------------------------------------------
    async def install_latest(self, record: Record, host: str, port: int) -> Version | None:
        """PUT the latest saved state into the copy at host:port (never an older version than
        it holds); None if there is nothing to install. Raises StateError."""
        spec, latest = state_spec(record), self.latest(record)
        if spec is None or latest is None:
            return None
        return await self.install(record, host, port, latest.version, latest.snapshot, path=spec.path)

    async def restore(self, record: Record, host: str, port: int) -> Version | None:
        """A copy that restarted in place: whatever roam installed there before is gone, so the
        latest saved state goes in again (None: nothing saved yet). Raises StateError."""
        self.installed.forget(f"{host}:{port}")
        return await self.install_latest(record, host, port)

    async def install(self, record: Record, host: str, port: int, version: Version, snapshot: Snapshot, *,
                      path: str) -> Version | None:
        copy = f"{host}:{port}"
        if not self.installed.admit(copy, version):
            return None  # it holds this version or a newer one already
        try:
            await self.hook.put(host, port, path, snapshot)
        except BaseException:
            self.installed.forget(copy)
            raise
        return version

    # -- the periodic pull ---------------------------------------------------------------------
    async def run(self) -> None:
        """Pulls when due and restores fresh copies; sleeps until the next due pull or restore,
        and without a deadline when no stateful service has its primary copy routed here (woken
        by a record committed or a copy marked fresh: peer.runtime.wake)."""
        unsubscribe = self.services.on_records_change(self.wake.poke)
        self.services.fresh.on_fresh.append(self.wake.poke)
        try:
            while True:
                await self.wake.sleep(self._delay(time.monotonic()))
                now = time.monotonic()
                for record in self.services.records():
                    if record.tombstone:
                        self._forget(record)
                    elif self._due(record, now):
                        self._start_pull(record)
                for name in self.services.fresh.fresh():
                    if name not in self._busy and now >= self._restore_at.get(name, 0.0):
                        self._start(name, self._restore_fresh(name))
        finally:
            unsubscribe()
            self.services.fresh.on_fresh.remove(self.wake.poke)
            await self._jobs.stop()

    def _delay(self, now: float) -> float | None:
        """How long `run` may sleep: TICK while a pull or restore is running or held back by an
        operation (its end commits nothing this loop hears of), else until the earliest due one."""
        deadlines: list[float] = []
        busy = False
        for record in self.services.records():
            if record.tombstone or not record.instance or self.services.here not in record.entries:
                continue
            if state_spec(record) is None:
                continue
            if (record.name in self._busy or self.services.lock(record.name).locked()
                    or self.services.lb.holding(record.name)):
                busy = True
            else:
                deadlines.append(self._next.get(record.name, 0.0))
        for name in self.services.fresh.fresh():
            if name in self._busy:
                busy = True
            else:
                deadlines.append(self._restore_at.get(name, 0.0))
        delay = next_delay(watching=busy, tick=TICK, deadlines=deadlines, now=now)
        return None if delay is None else max(delay, TICK)  # never a spin: at most the old tick's pace

    def _forget(self, record: Record) -> None:
        """A deleted service's state is not kept (its tombstone stays for the records only)."""
        key = (record.name, record.incarnation)
        if key in self._forgotten:
            return
        self._forgotten.add(key)
        self._latest.pop(key, None)
        self._views.pop(record.name, None)
        if self.saved.forget(record.name, record.incarnation):
            log.info("saved state of deleted service %s removed", record.name)

    def _due(self, record: Record, now: float) -> bool:
        if record.tombstone or not record.instance or record.name in self._busy:
            return False
        if self.services.here not in record.entries or self.services.lock(record.name).locked():
            return False  # a migration or fail-safe moves the state itself meanwhile
        if self.services.lb.holding(record.name):
            return False  # a handover holds its requests here: leave the old copy to the final copy
        spec = state_spec(record)
        if spec is None or now < self._next.get(record.name, 0.0):
            return False
        self._next[record.name] = now + spec.interval
        return True

    def _start_pull(self, record: Record) -> None:
        self._start(record.name, self._pull(record))

    def _start(self, name: str, work: Coroutine[object, object, None]) -> None:
        self._busy.add(name)
        task = self._jobs.spawn(work, name=f"state:{name}")
        task.add_done_callback(lambda _t: self._busy.discard(name))

    def _say(self, name: str, message: str) -> None:
        """Log why a pull or restore did not happen, once per reason (not every interval)."""
        if self._said.get(name) != message:
            self._said[name] = message
            log.info("%s", message)

    async def copy_view(self, record: Record) -> CopyView | None:
        """The primary copy's epoch and fresh mark, from the cluster running it; None if unknown."""
        assert record.location is not None
        if record.location == self.services.here:
            return self.services.fresh.view(record.name)
        if self.peers is None:
            return None
        try:
            return await self.peers.copy_view(record.location, record.name)
        except PeerError as exc:
            self._say(record.name, f"state of {record.name} not pulled: {record.location} does not say "
                                   f"whether its copy restarted ({exc})")
            return None

    async def _pull(self, record: Record) -> None:
        spec = state_spec(record)
        assert spec is not None and record.instance is not None
        host, port = split_addr(record.instance)
        latest = self.latest(record)
        generation = self._generation.get(record.name, 0)
        copy = (record.location, record.instance)
        known = self._views.get(record.name)
        before = known[1] if known is not None and known[0] == copy and not known[1].fresh else None
        if before is None:  # no view of this copy yet (or it was fresh): ask before the GET
            before = await self.copy_view(record)
            if before is None or before.fresh:
                return  # a copy restarted in place holds its initial state until it is restored
        try:
            snapshot = await self.hook.get(host, port, spec.path,
                                           if_none_match=latest.snapshot.etag if latest else None)
        except StateError as exc:
            self._say(record.name, f"state of {record.name} not pulled from {record.instance}: {exc}")
            return
        if snapshot is None:
            return
        after = await self.copy_view(record)
        if after is not None:
            self._views[record.name] = (copy, after)  # the next pull's view before its GET
        if not may_save(before, after):
            return  # it restarted (or was restored) since `before`: what it answered may be its initial state
        current = self.services.get(record.name)
        if (current is None or current.instance != record.instance
                or self._generation.get(record.name, 0) != generation):
            return  # the service moved / a handover saved meanwhile
        self._said.pop(record.name, None)
        version = self.save(current, snapshot)
        if self.steward_of(current) == self.services.here:
            await self._push_to_standbys(current, version, snapshot, path=spec.path)

    async def _push_to_standbys(self, record: Record, version: Version, snapshot: Snapshot, *, path: str) -> None:
        async def one(host: str, port: int) -> None:
            try:
                await self.install(record, host, port, version, snapshot, path=path)
            except StateError as exc:
                log.warning("state %s of %s not pushed to standby %s:%d: %s", version.seq, record.name, host, port, exc)

        await asyncio.gather(*(one(h, p) for h, p in standby_addresses(record)))

    async def _restore_fresh(self, name: str) -> None:
        """A copy here (primary or standby) restarted without its state: have the steward (or
        this keeper, when it is the steward) install the latest saved state into it."""
        services = self.services
        record = services.get(name)
        if record is None or not record.copy_here(services.here) or state_spec(record) is None:
            services.fresh.forget(name)
            return
        view = services.fresh.view(name)
        self._restore_at[name] = time.monotonic() + RESTORE_RETRY
        try:
            instance = await services.driver.status(name)
        except DriverError:
            return
        steward = self.steward_of(record)
        if instance.state is not InstanceState.READY or steward is None:
            self._restore_at[name] = time.monotonic() + NOT_READY_RETRY  # restored as soon as it serves
            return
        try:
            if steward == services.here:
                await self.restore(record, instance.host, instance.port)
            elif self.peers is not None:
                await self.peers.restore(steward, record, addr_of(instance))
            else:
                return
        except (StateError, PeerError) as exc:
            self._say(name, f"state of {name} not restored into its restarted copy at {addr_of(instance)} "
                            f"(by {steward}): {exc}; retrying every {RESTORE_RETRY:g}s")
            return
        self._restore_at.pop(name, None)  # restarted again meanwhile: restored again at once
        if services.fresh.restored(name, view.epoch):
            self._said.pop(name, None)
            log.warning("state of %s restored into its copy restarted in place at %s (by %s)", name,
                        addr_of(instance), steward)
