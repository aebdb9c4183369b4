"""An idle agent's watchers really sleep (issue 18): the fail-safe, the state keeper and the
convergence loop run against a real record store (in-memory load balancer and driver, as in
tests/services/test_convergence_rules.py) and their wakeups are counted (`Wake.wakeups`).
With nothing to watch they do not wake over a window; a record committed wakes them, and the
fail-safe then ticks at its own TICK (its reaction time is untouched); a committed record
that takes the work away puts them back to sleep."""
from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from lb.fake import FakeLoadBalancer
from peer.copies.convergence import Converger
from peer.drivers.descriptor import ServiceDescriptor
from peer.migration.failsafe import FailSafe
from peer.migration.fakes import FakeEntries, FakeFederation
from peer.records.record import Record, State, descriptor_digest, tombstone_of
from peer.records.store import RecordStore
from peer.copies.manager import ServiceManager
from peer.state.hook import HttpStateHook
from peer.state.keeper import StateKeeper
from peer.state.saved import SavedStates
from peer.homeset.stewardship import Liveness
from peer.runtime.waiting import wait_until
from tests.services.test_convergence_rules import FakeDriver

HERE = "c1"
WINDOW = 1.0  # seconds of idleness measured: the old loops woke 10 (fail-safe) and 20 (state) times in it


async def _publish(record: Record, extra: frozenset[str]) -> None:
    return None


@dataclass
class Loops:
    services: ServiceManager
    failsafe: FailSafe
    keeper: StateKeeper
    converger: Converger

    def wakeups(self) -> tuple[int, int, int]:
        return self.failsafe.wake.wakeups, self.keeper.wake.wakeups, self.converger.wake.wakeups


@pytest.fixture
async def loops(tmp_path: Path) -> AsyncIterator[Loops]:
    store = RecordStore.open(tmp_path / "records.sqlite3")
    services = ServiceManager(here=HERE, store=store, driver=FakeDriver(), lb=FakeLoadBalancer(),  # type: ignore[arg-type]
                              publish=_publish)
    services.recovered.set()
    failsafe = FailSafe(services=services, client=None, history=None,  # type: ignore[arg-type]
                        agent=FakeFederation(here=HERE, clusters=[HERE, "c2"]), homes=FakeEntries(),
                        liveness=Liveness(here=HERE), steward_of=lambda r: HERE)
    keeper = StateKeeper(services=services, hook=HttpStateHook(), saved=SavedStates(tmp_path), steward_of=lambda r: HERE)
    parts = Loops(services, failsafe, keeper, Converger(services=services))
    tasks = [asyncio.create_task(run()) for run in (failsafe.run, keeper.run, parts.converger.run)]
    try:
        yield parts
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        store.close()


def _entry_of_a_service_elsewhere(services: ServiceManager) -> Record:
    payload = ServiceDescriptor.from_obj({"name": "web", "port": 8080, "command": ["x"]}).canonical_msgpack()
    endpoints = ((HERE, "127.0.0.1:30000"), ("c2", "127.0.0.2:30000"))
    return services.store.put_local(
        Record(name="web", home=HERE, location="c2", state=State.RUNNING, digest=descriptor_digest(payload),
               descriptor=payload, instance="127.0.0.2:31000", endpoint=endpoints[0][1], incarnation="1-c1",
               homes=(HERE, "c2"), endpoints=endpoints), here=HERE, now=time.time())


async def _idle_window(parts: Loops) -> tuple[int, int, int]:
    """Wakeups of each loop over WINDOW seconds (a measurement window, not a synchronisation)."""
    before = parts.wakeups()
    await asyncio.sleep(WINDOW)
    after = parts.wakeups()
    return (after[0] - before[0], after[1] - before[1], after[2] - before[2])


async def test_idle_loops_sleep_and_a_record_wakes_them(loops: Loops) -> None:
    await wait_until(lambda: loops.failsafe.wake.wakeups >= 1, timeout=10, what="the fail-safe's first look")
    assert await _idle_window(loops) == (0, 0, 0)

    before = loops.wakeups()
    record = _entry_of_a_service_elsewhere(loops.services)  # this cluster is an entry; it runs at c2
    # The fail-safe watches it at its own tick from now on: many wakeups, well within the deadline.
    await wait_until(lambda: loops.failsafe.wake.wakeups >= before[0] + 5, timeout=10,
                     what="the fail-safe ticking for the new entry")
    await wait_until(lambda: loops.keeper.wake.wakeups > before[1], timeout=10, what="the state keeper woken")
    await wait_until(lambda: loops.converger.rounds >= 1, timeout=10, what="a convergence round for the new entry")
    assert loops.converger.has_work()

    loops.services.store.put_local(tombstone_of(record), here=HERE, now=time.time())  # deleted: no work left
    await wait_until(lambda: not loops.converger.has_work(), timeout=10, what="no work left")
    # One more look at most after the tombstone, then asleep again.
    await wait_until(lambda: _asleep(loops.failsafe), timeout=10, what="the fail-safe asleep again")
    assert (await _idle_window(loops))[:2] == (0, 0)


def _asleep(failsafe: FailSafe) -> bool:
    waiter = failsafe.wake._waiter
    return waiter is not None and not waiter.done() and not failsafe._suspects

