"""The other ends of a migration: the AC that admits and starts the copy, the HC that reroutes
and commits, and the old location that releases its copy. Peer-API handlers, msgpack in and out."""
from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import replace

from aiohttp import web

from peer.core import moves
from peer.drivers.base import DriverError
from peer.drivers.descriptor import DescriptorError, ServiceDescriptor
from peer.migration import wire
from peer.migration.seams import ReplicaSeams
from peer.peering.client import msgpack_response, read_msgpack
from peer.federation.metaorchestrator import requirements
from peer.records.naming import base_name
from peer.copies.manager import PENDING_TTL, PendingCopy, ServiceManager, WorkloadRefused, addr_of
from placement import admit

log = logging.getLogger(__name__)

RECOVERY_HOLD = 3.0  # how long a replication waits for a restarted agent's records recovery (HC's timeout: 5 s)


def _refuse(message: str, status: int = 409) -> web.Response:
    return msgpack_response({"error": message}, status=status)


class ReplicaHandlers:
    def __init__(self, *, services: ServiceManager, agent: ReplicaSeams) -> None:
        self.services = services
        self.agent = agent  # the agent, seen through the seams the replica side needs (peer/migration/seams.py)

    def add_routes(self, app: web.Application) -> None:
        app.router.add_post(wire.REPLICATE, self.replicate)
        app.router.add_post(wire.STATUS, self.status)
        app.router.add_post(wire.ABORT, self.abort)
        app.router.add_post(wire.RELEASE, self.release)
        app.router.add_post(wire.PING, self.ping)

    # -- at the AC -------------------------------------------------------------------------
    async def replicate(self, request: web.Request) -> web.Response:
        msg = wire.Replicate.from_wire(await read_msgpack(request))
        mid, name, home = msg.migration_id, msg.name, msg.home
        try:
            descriptor = ServiceDescriptor.from_msgpack(msg.descriptor)
        except DescriptorError as exc:
            return _refuse(f"descriptor.{exc.field}: {exc}", status=422)
        if base_name(descriptor.name) != base_name(name):
            return _refuse("descriptor name does not match", status=422)
        descriptor = replace(descriptor, name=name)  # a renamed `name@home` runs under that name
        refusal = self.services.workload.refusal(descriptor, home=home)
        if refusal is not None:  # before anything is reserved: nothing half-done
            log.warning("refused replication of %s (home %s): %s", name, home, refusal.message)
            return msgpack_response(refusal.as_api(), status=403)
        services = self.services
        # What this cluster runs is judged from its records: a restarted agent still recovering
        # them from its peers may hold a stale one (the service redeployed elsewhere while it was
        # down) and would refuse with "already runs here". Wait for the recovery, within the
        # HC's call timeout.
        if not await services.recovered_within(RECOVERY_HOLD):
            return _refuse(f"{services.here} is recovering its records from peers; retry in a few seconds")
        if mid in services.aborted:
            return _refuse(f"migration {mid} was aborted")
        pending = services.pending.get(name)
        if pending is not None:
            if pending.migration_id == mid:
                return msgpack_response({"accepted": True})
            return _refuse(f"another migration of {name} is arriving here")
        if services.closing:
            return _refuse("shutting down")
        standby = msg.standby  # a warm copy for the steward's StandbyKeeper
        current = services.get(name)
        if current is not None and current.location == services.here:
            return _refuse(f"{name} already runs here")
        if standby and current is not None and services.here in current.standby_clusters:
            return _refuse(f"{name} already has a standby copy here")
        promoting = not standby and current is not None and services.here in current.standby_clusters
        rejection = None if promoting else admit(requirements(descriptor), self.agent.own_view())
        if rejection is not None:  # a standby held here already counts in the load: its promotion is admitted
            return _refuse(f"admission refused: {rejection.reason}")
        copy = PendingCopy(migration_id=mid, descriptor=descriptor, home=home,
                           deadline=time.monotonic() + PENDING_TTL, standby=standby)
        services.pending[name] = copy
        services.expect_arrival(name, mid)
        copy.task = services.jobs.spawn(self._start_copy(copy), name=f"copy:{name}")  # cancelled by ABORT or a stop
        self.agent.load_changed()
        return msgpack_response({"accepted": True})

    async def _start_copy(self, copy: PendingCopy) -> None:
        try:
            instance, deploy_ms = await self.services.run_copy(copy.descriptor, home=copy.home)
            copy.instance, copy.deploy_ms = instance, deploy_ms
        except (DriverError, TimeoutError, WorkloadRefused) as exc:
            copy.error = str(exc)

    async def status(self, request: web.Request) -> web.Response:
        """Where the copy of migration `migration_id` stands. With `wait` (seconds, a long poll)
        a copy still deploying is answered for when it is ready or failed, or when `wait` is
        over: the coordinator hears of readiness one round trip after it, not a poll later."""
        msg = wire.Status.from_wire(await read_msgpack(request))
        mid, name, wait = msg.migration_id, msg.name, msg.wait
        copy = self.services.pending.get(name)
        if wait > 0 and copy is not None and copy.migration_id == mid and copy.task is not None \
                and copy.error is None and copy.instance is None:
            copy.last_poll = time.monotonic()
            await asyncio.wait({copy.task}, timeout=float(wait))  # never cancels the start itself
            if self.services.closing:
                # This agent stopped while the call waited: a "ready" now would come from an agent
                # that can no longer route, adopt or answer for the copy; the coordinator's next
                # STATUS reaches the restarted agent, or fails and the migration rolls back.
                return _refuse("shutting down", status=503)
        return self._status_now(mid, name)

    def _status_now(self, mid: str, name: str) -> web.Response:
        copy = self.services.pending.get(name)
        if copy is not None and copy.migration_id == mid:
            copy.last_poll = time.monotonic()
        if copy is None or copy.migration_id != mid:
            record = self.services.get(name)
            if record is not None and record.migration_id == mid and record.location == self.services.here:
                return msgpack_response({"state": "ready", "instance": record.instance, "deploy_ms": None})
            return _refuse(f"no migration {mid} of {name} here", status=404)
        if copy.error is not None:
            return msgpack_response({"state": "failed", "error": copy.error[-2000:]})
        if copy.instance is None:
            return msgpack_response({"state": "deploying"})
        return msgpack_response({"state": "ready", "instance": addr_of(copy.instance), "deploy_ms": copy.deploy_ms})

    async def abort(self, request: web.Request) -> web.Response:
        msg = wire.Abort.from_wire(await read_msgpack(request))
        mid, name = msg.migration_id, msg.name
        services = self.services
        services.aborted.append(mid)
        async with services.lock(name):
            copy = services.pending.get(name)
            if copy is None or copy.migration_id != mid:
                return msgpack_response({"aborted": False})
            services.pending.pop(name, None)
            if copy.task is not None:
                copy.task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await copy.task
            services.end_arrival(name)
            if moves.release(services.get(name), services.here).stop:
                with contextlib.suppress(DriverError):
                    await services.stop_copy(name)
        self.agent.load_changed()
        return msgpack_response({"aborted": True})

    # -- at the old location ---------------------------------------------------------------
    async def release(self, request: web.Request) -> web.Response:
        committed = wire.Release.from_wire(await read_msgpack(request)).record
        services = self.services
        async with services.lock(committed.name):
            outcome = services.merge(committed)
            current = services.stored(committed.name)
            # What else the record asks of this cluster comes first (an entry here reroutes
            # before its copy stops: make-before-break at this entry too). A RELEASE may be the
            # first news of the record here: an HC back on an empty data dir without --join
            # hears the steward's RELEASE before any anti-entropy round, and its frontend must
            # open and follow the record as after any other merge.
            await services.act_locked(outcome, keep_copy=True)
            # A copy starting here for a newer migration (pending) is not the one released: a
            # late RELEASE (a fail-safe's, retried until this cluster came back) must not stop it.
            plan = moves.release(current, services.here, arriving=committed.name in services.pending)
            if current is not None and plan.stop:
                with contextlib.suppress(DriverError):
                    await services.stop_copy(committed.name)
                if plan.drop and services.stored(committed.name) is not None:
                    services.forget(committed.name)
        self.agent.load_changed()
        return msgpack_response({"released": True, "changed": outcome.changed})

    async def ping(self, request: web.Request) -> web.Response:
        wire.Ping.from_wire(await read_msgpack(request))
        return msgpack_response({"cluster": self.services.here, "ok": True})
