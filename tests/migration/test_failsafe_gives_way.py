"""A deputy's fail-safe whose commit gives way to a version merged while its copy started.

The deputy (c1) is steward of a service homed at c3 whose AC it saw lost. While its copy
starts, the HC's own decision arrives by a merge (merges take no service lock): the service
runs at the HC now. The fail-safe decided on the older record, so its commit gives way
(merge.superseded) instead of writing over the HC's version: the HC's version stands, the copy
started here is stopped, and this entry routes where that version says. Store, records, service
manager and history are the real code; the driver and the load balancer are the fakes.
"""
from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path
from typing import Any, cast

from lb.fake import FakeLoadBalancer
from peer.copies.manager import ServiceManager
from peer.drivers.descriptor import ServiceDescriptor
from peer.homeset.stewardship import Liveness
from peer.migration.failsafe import FailSafe
from peer.migration.fakes import FakeEntries, FakeFederation
from peer.migration.history import MigrationLog
from peer.records.merge import local_write
from peer.records.record import Record, State, descriptor_digest
from peer.records.store import RecordStore
from peer.runtime.metrics import Metrics
from tests.services.test_convergence_rules import HERE, FakeDriver


async def _publish(record: Record, extra: frozenset[str]) -> None:
    return None


async def test_a_deputys_failsafe_gives_way_to_the_hcs_version_merged_while_its_copy_starts(tmp_path: Path) -> None:
    store = RecordStore.open(tmp_path / "records.sqlite3")
    lb, driver = FakeLoadBalancer(), FakeDriver()
    services = ServiceManager(here=HERE, store=store, driver=driver, lb=lb, publish=_publish)  # type: ignore[arg-type]
    history = MigrationLog(store=store, metrics=Metrics(HERE))
    fs = FailSafe(services=services, client=cast(Any, None), history=history, agent=FakeFederation(HERE, [HERE, "c2", "c3"]),
                  homes=FakeEntries(), liveness=Liveness(HERE), steward_of=lambda r: HERE)
    payload = ServiceDescriptor.from_obj({"name": "web", "port": 8080, "command": ["x"]}).canonical_msgpack()
    host, port = await lb.open_frontend("web")
    await lb.route("web", "127.0.0.2", 31002)  # the lost AC's copy
    lost = services.merge(local_write(None, Record(
        name="web", home="c3", location="c2", state=State.RUNNING, instance="127.0.0.2:31002",
        digest=descriptor_digest(payload), descriptor=payload, homes=("c3", HERE), incarnation="1-c3",
        endpoints=(("c3", "127.0.0.3:40000"), (HERE, f"{host}:{port}"))), here="c3", now=1.0)).result
    hcs = local_write(lost, replace(lost, location="c3", instance="127.0.0.3:31003", migration_id="fs-c3"),
                      here="c3", now=2.0)
    deploy = driver.deploy

    async def the_hcs_version_lands_while_the_copy_starts(descriptor: ServiceDescriptor, *, home: str) -> Any:
        services.merge(hcs)  # (in the agent: anti-entropy's worker thread)
        return await deploy(descriptor, home=home)

    driver.deploy = the_hcs_version_lands_while_the_copy_starts  # type: ignore[method-assign]
    committed, refused = await fs._redeploy_locked(lost, evidence="c2 unreachable", since=time.monotonic(),
                                                   copy=None, ahead_ms=None)
    assert (committed, refused) == (None, None)
    held = services.get("web")
    assert held is not None and (held.location, held.migration_id) == ("c3", "fs-c3")
    assert driver.deploys == ["web"] and "web" not in driver.state  # started, then stopped again
    assert lb.current_route("web") == ("127.0.0.3", 31003)
    [m] = history.recent()
    assert m["outcome"] == "failed" and "older version of the record" in m["error"]
