"""The records are the source of truth on a schedule, not only at start.

Every `CONVERGE_EVERY` (1) seconds while this cluster routes or runs a service (every
`IDLE_EVERY`, 30, while it does neither: issue 18's idle cost) the agent makes what it runs
agree with the records it holds:
- slot ownership: each service this cluster is an entry of owns the frontend port its record
  names (`lb.adopt_claims`), and its route points at the record's instance;
- HAProxy itself (`lb.converge`): frontends open, each backend serving exactly its slot's route,
  whatever was done behind the agent's back through the runtime API or lost with a restarted HAProxy;
- copies: a service the record says runs here and the driver no longer runs (deleted behind
  our back, or given up after too many crashes) is started again, with a back-off; a copy that
  moved to another port (a driver restart) has its record updated;
- derived files lost while the agent runs (lb-slots.json, a copy's instance.json) are written
  again, so that the next start does not have to rebuild them.

It never fights an operation in flight: a service whose lock is held (a migration, a
fail-safe, a creation, a replicated record being applied), that is arriving here, reserved for
a creation, or named in an open migration journal (the engine's recovery decides it) is left
for the next round. It never stops a copy or closes a frontend on the absence of a record
(records may still be recovering from peers, peer.copies.recovery): only a record that says the
service is not an entry here (or was deleted) closes its frontend. A round costs two HAProxy
`show` commands and a look at the driver's table when nothing drifted.
"""
from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field

from lb.errors import LBError
from peer.core import journal
from peer.drivers.base import DriverError, InstanceState, ServiceNotFound
from peer.records.record import Record
from peer.copies.manager import ServiceManager, addr_of, routable, split_addr
from peer.runtime.wake import Wake, next_delay

log = logging.getLogger(__name__)

CONVERGE_EVERY = 1.0
IDLE_EVERY = 30.0  # rounds while nothing here is routed or run: only free slots can drift then
RESTART_BACKOFF = 5.0  # first retry after a failed restart of a copy; doubles up to the cap
RESTART_BACKOFF_MAX = 120.0


@dataclass
class Converger:
    services: ServiceManager
    every: float = CONVERGE_EVERY
    rounds: int = 0
    repairs: int = 0
    _retry_at: dict[str, tuple[float, float]] = field(default_factory=dict)  # name -> (when, backoff)
    wake: Wake = field(default_factory=Wake)  # poked by every committed record (peer.runtime.wake)

    async def run(self) -> None:
        """From the moment the records are recovered (peer.agent._catch_up) until cancelled:
        a round every `every` seconds while this cluster has something to converge
        (`has_work`), every IDLE_EVERY otherwise (drift of the free slots only), woken by a
        committed record. The first round after new work comes `every` after the commit,
        not at once: the operation that committed it finishes its own part first."""
        await self.services.recovered.wait()
        unsubscribe = self.services.on_records_change(self.wake.poke)
        idle_due = time.monotonic() + IDLE_EVERY
        try:
            while True:
                work = self.has_work()
                if work:
                    await asyncio.sleep(self.every)
                else:
                    await self.wake.sleep(next_delay(watching=False, tick=self.every, deadlines=[idle_due],
                                                     now=time.monotonic()))
                    if self.has_work() or time.monotonic() < idle_due:
                        continue  # new work (its first round `every` from now), or an unrelated record
                idle_due = time.monotonic() + IDLE_EVERY
                try:
                    await self.round()
                except (LBError, DriverError) as exc:
                    log.warning("convergence round failed (retried in %.0fs): %s", self.every, exc)
        finally:
            unsubscribe()

    def has_work(self) -> bool:
        """Anything for a round to look at beyond the free slots: a slot in the table, an
        operation under way, or a record that routes or runs a service here."""
        services, here = self.services, self.services.here
        if services.pending or services.reserved or services.lb.routes():
            return True
        return any(here in r.entries or r.location == here for r in services.records())

    async def round(self) -> list[str]:
        """One pass; what it repaired, each also logged at WARNING (drift is worth knowing)."""
        if self.services.closing:
            return []
        repaired = await self._slots()
        repaired += await self.services.lb.converge()
        repaired += await self._copies()
        repaired += await self.services.driver.rewrite_lost_state()
        for what in repaired:
            log.warning("converged to the records: %s", what)
        self.rounds += 1
        self.repairs += len(repaired)
        return repaired

    async def _slots(self) -> list[str]:
        services, lb, here = self.services, self.services.lb, self.services.here
        busy = self.services.busy()
        repaired: list[str] = []
        records = {r.name: r for r in services.all_stored()}
        for name, record in sorted(records.items()):
            if record.tombstone or here not in record.entries or name in busy or services.lock(name).locked():
                continue
            endpoint = record.endpoint_at(here)
            if endpoint is None:
                continue
            port = split_addr(endpoint)[1]
            frontend = lb.frontend(name)
            route = routable(record.instance)
            if frontend is not None and frontend[1] == port and services.routes_as_recorded(record):
                continue
            async with services.lock(name):
                current = services.get(name)
                if current is None or current.endpoint_at(here) != endpoint:
                    continue
                if frontend is None or frontend[1] != port:
                    await lb.adopt_claims({name: (port, route)})
                    repaired.append(f"{name} owns frontend port {port} again (it had {frontend and frontend[1]})")
                if not services.routes_as_recorded(current):
                    await services.ensure_route(current)
                    repaired.append(f"{name} routed to {current.instance} again, as its record says")
        for name in sorted(lb.routes()):
            known = records.get(name)
            if known is None or name in busy or services.lock(name).locked():
                continue  # no record is no evidence (it may still be recovering)
            if known.tombstone or here not in known.entries:
                async with services.lock(name):
                    current = services.stored(name)
                    if current is not None and (current.tombstone or here not in current.entries):
                        await lb.close_frontend(name)
                        repaired.append(f"closed the frontend of {name}: its record has no entry here")
        return repaired

    async def _copies(self) -> list[str]:
        services, here = self.services, self.services.here
        busy = self.services.busy()
        repaired: list[str] = []
        now = time.monotonic()
        for record in services.records():
            name = record.name
            if record.tombstone or record.location != here or name in busy or services.lock(name).locked():
                continue
            try:
                instance = await services.driver.status(name)
                state = instance.state
            except ServiceNotFound:
                instance, state = None, InstanceState.STOPPED
            if instance is not None and state is InstanceState.READY:
                self._retry_at.pop(name, None)
                if record.instance != addr_of(instance):
                    await services.refresh_instance(name)
                    repaired.append(f"{name}'s record follows its copy to {addr_of(instance)}")
                continue
            if state is InstanceState.STARTING or now < self._retry_at.get(name, (0.0, 0.0))[0]:
                continue  # the driver is (re)starting it, or our last attempt failed recently
            repaired += await self._restart(record, state)
        return repaired + await self._leftovers(busy)

    async def _leftovers(self, busy: set[str]) -> list[str]:
        """Copies still running here of services whose record is a tombstone: a delete whose
        stop failed (the driver's error was logged and the delete answered) ends here."""
        services, repaired = self.services, []
        for instance in await services.driver.list():
            name = instance.name
            record = services.stored(name)
            if record is None or not record.tombstone or name in busy or services.lock(name).locked():
                continue  # no record is no evidence (recovery judges those at start)
            async with services.lock(name):
                current = services.stored(name)
                if current is None or not current.tombstone:
                    continue
                try:
                    await services.stop_copy(name)
                except DriverError as exc:
                    log.error("%s: deleted, and its copy here still does not stop: %s", name, exc)
                    continue
            repaired.append(f"stopped the copy of {name}: its record is a tombstone")
        return repaired

    async def _restart(self, record: Record, state: InstanceState) -> list[str]:
        """The record says a copy runs here and none does: start it (bounded by its ready_timeout)."""
        services, name = self.services, record.name
        async with services.lock(name):
            current = services.get(name)
            if current is None or current.location != services.here or name in services.pending:
                return []
            try:
                await services.ensure_local_copy(current)
            except DriverError as exc:
                backoff = min(self._retry_at.get(name, (0.0, RESTART_BACKOFF / 2))[1] * 2, RESTART_BACKOFF_MAX)
                self._retry_at[name] = (time.monotonic() + backoff, backoff)
                log.error("%s: its record says it runs here but it is %s, and starting it failed "
                          "(next try in %.0fs): %s", name, state.value, backoff, exc)
                return []
        self._retry_at.pop(name, None)
        return [f"started {name} again: its record says it runs here, the driver had it {state.value}"]
