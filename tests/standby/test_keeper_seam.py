"""StandbyKeeper.place_one with the peer API faked (the I/O seams only; records, store, merge
and the load balancer's fake are the real code): the state seam is awaited once the copy is
ready and before it is committed; a failing state transfer aborts the copy and commits nothing."""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any, cast

import pytest

from lb.fake import FakeLoadBalancer
from peer.drivers.descriptor import ServiceDescriptor
from peer.runtime.metrics import Metrics
from peer.migration.fakes import FakeEntries, FakeFederation, view
from peer.migration.history import MigrationLog
from peer.migration.standby import StandbyError, StandbyKeeper, StateTransferError
from peer.migration.wire import ABORT, REPLICATE, STATUS
from peer.records.record import Record, State, descriptor_digest
from peer.records.store import RecordStore
from peer.copies.manager import ServiceManager

HERE = "c1"


class FakePeers:
    """The peer API as the keeper calls it: every cluster admits and is ready at once."""

    def __init__(self, log: list[str]) -> None:
        self.log = log

    async def call(self, url: str, path: str, body: Any, *, timeout: float) -> Any:
        self.log.append(f"{path} {url}")
        if path == REPLICATE:
            assert body["standby"] is True
            return {"accepted": True}
        if path == STATUS:
            return {"state": "ready", "instance": "127.0.0.3:31000", "deploy_ms": 5.0}
        if path == ABORT:
            return {"aborted": True}
        raise AssertionError(path)


def federation() -> FakeFederation:
    """Three clusters, c3 of the other tier (the keeper prefers it)."""
    fed = FakeFederation(HERE, ["c1", "c2", "c3"])
    fed.views["c3"] = view("c3", tier="cloud")
    return fed


class RecordingState:
    def __init__(self, log: list[str], *, fail: bool = False) -> None:
        self.log, self.fail = log, fail

    async def install_latest(self, record: Record, host: str, port: int) -> None:
        self.log.append(f"state {host}:{port} standbys={record.standby_clusters}")
        if self.fail:
            raise StateTransferError("state source answered 404")


def keeper(tmp_path: Path, log: list[str], *, fail: bool = False) -> tuple[StandbyKeeper, ServiceManager]:
    store = RecordStore.open(tmp_path / "records.sqlite3")
    lb = FakeLoadBalancer()

    async def publish(record: Record, extra: frozenset[str]) -> None:
        pass

    services = ServiceManager(here=HERE, store=store, driver=None, lb=lb, publish=publish)  # type: ignore[arg-type]
    history = MigrationLog(store=store, metrics=Metrics(HERE))
    k = StandbyKeeper(services=services, client=FakePeers(log), history=history,  # type: ignore[arg-type]
                      agent=federation(), homes=FakeEntries(), steward_of=lambda r: HERE, lost_for=lambda c: None,
                      state=RecordingState(log, fail=fail))
    return k, services


async def create(services: ServiceManager) -> Record:
    payload = ServiceDescriptor.from_obj({"name": "web", "port": 80, "command": ["x"], "standby": 1}).canonical_msgpack()
    await services.lb.open_frontend("web")
    return services.store.put_local(
        Record(name="web", home=HERE, location="c2", state=State.RUNNING, digest=descriptor_digest(payload),
               descriptor=payload, instance="127.0.0.2:31000", homes=(HERE,)), here=HERE, now=time.time())


async def test_the_state_is_installed_before_the_standby_is_committed(tmp_path: Path) -> None:
    log: list[str] = []
    k, services = keeper(tmp_path, log)
    committed = await k.place_one(await create(services))
    assert committed.standbys == (("c3", "127.0.0.3:31000"),)  # the other tier first
    assert log == [f"{REPLICATE} http://c3", f"{STATUS} http://c3", "state 127.0.0.3:31000 standbys=()"]
    assert cast(FakeFederation, k.agent).published == [("publish_now", "web", frozenset())]
    assert services.lb.backups("web") == [("127.0.0.3", 31000)]
    placed = k.history.recent()[0]
    assert placed["kind"] == "standby" and placed["outcome"] == "succeeded" and "state" in placed["durations_ms"]


async def test_a_failed_state_transfer_aborts_the_copy_and_commits_nothing(tmp_path: Path) -> None:
    log: list[str] = []
    k, services = keeper(tmp_path, log, fail=True)
    record = await create(services)
    with pytest.raises(StandbyError, match="404"):
        await k.place_one(record)
    assert log[-1] == f"{ABORT} http://c3"
    assert services.get("web") == record and services.lb.backups("web") == []
    assert k.history.recent()[0]["outcome"] == "failed"
