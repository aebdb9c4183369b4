"""The convergence round's rules (peer/copies/convergence.py) with an in-memory load balancer and
driver and a real record store: it repairs what the records ask, and never what an operation
in flight owns, nor anything on the mere absence of a record. The same round against real
HAProxy and processes: tests/agent/test_convergence.py."""
from __future__ import annotations

import builtins
import time
from dataclasses import replace
from pathlib import Path

import pytest

from lb.fake import FakeLoadBalancer
from peer.copies.convergence import Converger
from peer.drivers.base import DeployFailed, Instance, InstanceState, ServiceNotFound, TemporaryDriverError
from peer.drivers.descriptor import ServiceDescriptor
from peer.records.merge import local_write
from peer.records.record import Record, State, descriptor_digest, tombstone_of
from peer.records.store import RecordStore
from peer.copies.manager import ServiceManager

HERE = "c1"


class FakeDriver:
    """Runs nothing; `state` says what each copy is, `broken` names copies that cannot start."""

    name = "fake"

    def __init__(self) -> None:
        self.state: dict[str, InstanceState] = {}
        self.port: dict[str, int] = {}
        self.broken: set[str] = set()
        self.stuck: set[str] = set()  # copies whose stop fails
        self.deploys: list[str] = []

    def _instance(self, name: str) -> Instance:
        return Instance(name=name, home=HERE, host="127.0.0.1", port=self.port.get(name, 31000),
                        state=self.state[name])

    async def deploy(self, descriptor: ServiceDescriptor, *, home: str) -> Instance:
        self.deploys.append(descriptor.name)
        if descriptor.name in self.broken:
            raise DeployFailed(f"{descriptor.name}: exited at once", log_tail="boom")
        self.state[descriptor.name] = InstanceState.READY
        return self._instance(descriptor.name)

    async def wait_ready(self, name: str, *, timeout: float) -> Instance:
        return self._instance(name)

    async def status(self, name: str) -> Instance:
        if name not in self.state:
            raise ServiceNotFound(name)
        return self._instance(name)

    async def delete(self, name: str) -> None:
        if name in self.stuck:
            raise TemporaryDriverError(f"{name}: did not stop")
        self.state.pop(name, None)

    async def list(self) -> builtins.list[Instance]:
        return [self._instance(n) for n in self.state]

    async def rewrite_lost_state(self) -> builtins.list[str]:
        return []


async def _publish(record: Record, extra: frozenset[str]) -> None:
    return None


@pytest.fixture
def parts(tmp_path: Path) -> tuple[ServiceManager, FakeLoadBalancer, FakeDriver, Converger]:
    lb, driver = FakeLoadBalancer(), FakeDriver()
    store = RecordStore.open(tmp_path / "records.sqlite3")
    services = ServiceManager(here=HERE, store=store, driver=driver, lb=lb, publish=_publish)  # type: ignore[arg-type]
    return services, lb, driver, Converger(services=services)


def _record(services: ServiceManager, name: str, *, location: str = HERE, entries: tuple[str, ...] = (HERE,),
            port: int = 30000, instance: str = "127.0.0.1:31000") -> Record:
    payload = ServiceDescriptor.from_obj({"name": name, "port": 8080, "command": ["x"]}).canonical_msgpack()
    endpoints = tuple(sorted((c, f"127.0.0.1:{port}") for c in entries))
    return services.store.put_local(
        Record(name=name, home=entries[0], location=location, state=State.RUNNING, digest=descriptor_digest(payload),
               descriptor=payload, instance=instance, endpoint=endpoints[0][1], incarnation=f"1-{entries[0]}",
               homes=entries, endpoints=endpoints), here=HERE, now=time.time())


async def test_a_copy_the_record_says_runs_here_is_started_again_with_a_back_off(parts) -> None:  # type: ignore[no-untyped-def]
    services, lb, driver, conv = parts
    _record(services, "web")
    await lb.open_frontend("web", port=30000)
    await lb.route("web", "127.0.0.1", 31000)
    driver.state["web"] = InstanceState.FAILED  # the driver gave up on it
    repaired = await conv.round()
    assert driver.deploys == ["web"] and any("started web again" in r for r in repaired), repaired
    assert driver.state["web"] is InstanceState.READY

    driver.state.pop("web")  # gone behind our back; and now it cannot start
    driver.broken.add("web")
    assert await conv.round() == []
    assert await conv.round() == [] and driver.deploys == ["web", "web"]  # backed off: no second try yet


async def test_a_starting_copy_and_a_copy_elsewhere_are_left_alone(parts) -> None:  # type: ignore[no-untyped-def]
    services, lb, driver, conv = parts
    _record(services, "restarting")
    driver.state["restarting"] = InstanceState.STARTING  # the driver's own restart in progress
    _record(services, "abroad", location="c2", entries=("c2",), port=30001)
    await conv.round()
    assert driver.deploys == []


async def test_nothing_an_operation_holds_is_touched(parts) -> None:  # type: ignore[no-untyped-def]
    services, lb, driver, conv = parts
    _record(services, "moving")
    _record(services, "journaled", port=30001)
    services.store.journal_put("mig:m1", {"service": "journaled", "stage": "reroute"})
    async with services.lock("moving"):
        assert await conv.round() == []
    assert driver.deploys == [] and lb.slots == {}  # neither restarted nor given its frontend
    await conv.round()  # once the lock is free, the unjournaled one converges
    assert driver.deploys == ["moving"] and set(lb.slots) == {"moving"}


async def test_slots_follow_the_records_and_only_a_record_closes_a_frontend(parts) -> None:  # type: ignore[no-untyped-def]
    services, lb, driver, conv = parts
    driver.state["web"] = InstanceState.READY
    _record(services, "web", port=30005)
    repaired = await conv.round()  # its frontend was lost: the record's port, routed to its instance
    assert lb.slots["web"] == 30005 and lb.current_route("web") == ("127.0.0.1", 31000), repaired

    await lb.open_frontend("unknown")  # no record at all: maybe not recovered yet, so kept
    gone = _record(services, "gone", port=30002)
    await lb.open_frontend("gone", port=30002)
    services.store.put_local(tombstone_of(gone), here=HERE, now=time.time())
    _record(services, "elsewhere", location="c2", entries=("c2",), port=30003)
    await lb.open_frontend("elsewhere", port=30003)  # its record has no entry here
    repaired = await conv.round()
    assert set(lb.slots) == {"web", "unknown"}, (lb.slots, repaired)
    assert sum("closed the frontend" in r for r in repaired) == 2


async def test_a_copy_that_moved_port_gets_its_record_updated(parts) -> None:  # type: ignore[no-untyped-def]
    services, lb, driver, conv = parts
    _record(services, "web")
    await lb.open_frontend("web", port=30000)
    await lb.route("web", "127.0.0.1", 31000)
    driver.state["web"], driver.port["web"] = InstanceState.READY, 31007  # a driver restart, new port
    await conv.round()
    record = services.get("web")
    assert record is not None and record.instance == "127.0.0.1:31007"
    assert lb.current_route("web") == ("127.0.0.1", 31007)


async def test_a_delete_whose_copy_does_not_stop_stands_and_convergence_stops_it(parts) -> None:  # type: ignore[no-untyped-def]
    services, lb, driver, conv = parts
    _record(services, "web")
    await lb.open_frontend("web", port=30000)
    driver.state["web"] = InstanceState.READY
    driver.stuck.add("web")
    tomb = await services.delete("web")  # no driver error escapes: the tombstone is written
    assert tomb.tombstone and services.store.get("web") is not None and services.store.get("web").tombstone
    assert "web" in driver.state  # still running
    assert await conv.round() == []  # still stuck: logged, kept for the next round
    driver.stuck.clear()
    repaired = await conv.round()
    assert "web" not in driver.state and any("tombstone" in r for r in repaired), repaired
    assert driver.deploys == []  # a deleted service is never started again


async def test_a_ready_arriving_copy_is_kept_through_a_long_hold_and_a_starting_one_is_not(parts) -> None:  # type: ignore[no-untyped-def]
    from peer.copies.manager import ORPHAN_AFTER, PendingCopy
    from peer.state.handover import HOLD_MAX

    services, lb, driver, conv = parts
    now = time.monotonic()
    for name, ready in (("ready", True), ("starting", False)):
        descriptor = ServiceDescriptor.from_obj({"name": name, "port": 8080, "command": ["x"]})
        driver.state[name] = InstanceState.READY if ready else InstanceState.STARTING
        services.pending[name] = PendingCopy(
            migration_id=f"m-{name}", descriptor=descriptor, home="c2", deadline=now + 150.0,
            instance=driver._instance(name) if ready else None, last_poll=now - ORPHAN_AFTER - 1.0)
        services.expect_arrival(name, f"m-{name}")
    await services.expire_pending()
    assert set(services.pending) == {"ready"} and "starting" not in driver.state  # stopped
    services.pending["ready"].last_poll = now - ORPHAN_AFTER - HOLD_MAX - 1.0
    await services.expire_pending()
    assert services.pending == {} and "ready" not in driver.state


async def test_a_version_merged_while_the_copy_starts_is_not_written_over(parts) -> None:  # type: ignore[no-untyped-def]
    """Seen in the demo after a heal: the AC restarted its copy for the record it held (the
    service runs here), and while the copy started the HC's fail-safe version arrived (it runs
    at the HC now) by a merge, which takes no service lock. Writing the new copy's address on
    the record read before the start carried the old content over the HC's version, under a
    newer clock: every replica moved the service back to the AC. The address goes on the
    record held now, only if that still says here; the copy started for nothing is stopped."""
    services, lb, driver, conv = parts
    before = _record(services, "web", entries=("c2",))
    driver.port["web"] = 31001  # the new copy answers on another port
    moved = local_write(before, replace(before, location="c2", instance="127.0.0.2:31002", migration_id="fs"),
                        here="c2", now=time.time())  # the HC's fail-safe, written at the HC
    real_deploy = driver.deploy

    async def deploy_while_the_version_lands(descriptor: ServiceDescriptor, *, home: str) -> Instance:
        services.merge(moved)  # (in the agent: anti-entropy's worker thread, no lock)
        return await real_deploy(descriptor, home=home)

    driver.deploy = deploy_while_the_version_lands  # type: ignore[method-assign]
    await services.ensure_local_copy(services.get("web"))
    held = services.get("web")
    assert held is not None and held.location == "c2" and held.instance == "127.0.0.2:31002"
    assert held.migration_id == "fs" and "web" not in driver.state  # the copy started for nothing is gone
