"""The migration engine through its seams (peer/migration/seams.py) with the in-memory fakes
beside them: the peer API, the federation and the entries faked; records, store, journal, the
service manager and the load balancer's fake are the real code. What it checks is the engine's
promise of issue 13: whatever a move meets, it ends `failed` with its journal closed, the
target told to abort, the service's lock free and the route where it was."""
from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import pytest

from lb.errors import LBError, RerouteError
from lb.fake import FakeLoadBalancer
from peer.drivers.descriptor import ServiceDescriptor
from peer.runtime.metrics import Metrics
from peer.migration.failsafe import FailSafe
from peer.migration.engine import MigrationEngine, MigrationError
from peer.migration.fakes import FakeEntries, FakeFederation, FakeMover, member
from peer.migration import policy
from peer.migration.history import MigrationLog
from peer.migration.policy import PolicyTriggers
from peer.migration.wire import ABORT, REPLICATE, STATUS
from peer.records.merge import local_write
from peer.records.record import Record, State, descriptor_digest
from peer.records.store import RecordStore, StoreError
from peer.copies.manager import InvalidServiceRequest, ServiceError, ServiceManager, WorkloadRefused
from peer.homeset.stewardship import Liveness
from peer.runtime.waiting import wait_until
from peer.trust.workload import Refusal
from placement import Thresholds

HERE = "c1"


class ScriptedPeers:
    """The peer API: c2 admits at once; `fail_at` makes the call to that path raise `error`."""

    def __init__(self, *, fail_at: str | None = None, error: Exception | None = None) -> None:
        self.calls: list[str] = []
        self.fail_at, self.error = fail_at, error

    async def call(self, url: str, path: str, body: Any, *, timeout: float) -> Any:
        self.calls.append(f"{path} {url}")
        if path == self.fail_at and self.error is not None:
            raise self.error
        if path == REPLICATE:
            return {"accepted": True}
        if path == STATUS:
            return {"state": "ready", "instance": "127.0.0.2:31000", "deploy_ms": 5.0}
        if path == ABORT:
            return {"aborted": True}
        raise AssertionError(path)


async def engine(tmp_path: Path, peers: ScriptedPeers) -> tuple[MigrationEngine, ServiceManager, FakeFederation]:
    store = RecordStore.open(tmp_path / "records.sqlite3")
    fed = FakeFederation(HERE, ["c1", "c2"])

    async def publish(record: Record, extra: frozenset[str]) -> None:
        pass

    services = ServiceManager(here=HERE, store=store, driver=None, lb=FakeLoadBalancer(),  # type: ignore[arg-type]
                              publish=publish)
    homes: Any = FakeEntries()
    history = MigrationLog(store=store, metrics=Metrics(HERE))
    eng = MigrationEngine(here=HERE, services=services, client=cast(Any, peers), history=history, agent=fed,
                          homes=homes, steward_of=lambda r: HERE)
    payload = ServiceDescriptor.from_obj({"name": "web", "port": 80, "command": ["x"]}).canonical_msgpack()
    await services.lb.open_frontend("web")
    await services.lb.route("web", "127.0.0.1", 30000)
    store.put_local(Record(name="web", home=HERE, location=HERE, state=State.RUNNING, instance="127.0.0.1:30000",
                           digest=descriptor_digest(payload), descriptor=payload, homes=(HERE,)),
                    here=HERE, now=time.time())
    return eng, services, fed


def assert_nothing_stuck(eng: MigrationEngine, services: ServiceManager, peers: ScriptedPeers) -> None:
    history = eng.history.recent()
    assert [m["outcome"] for m in history] == ["failed"], history
    assert list(services.store.journal_open()) == [], "the journal entry is closed"
    assert f"{ABORT} http://c2" in peers.calls, "the target was told to drop its copy"
    assert not services.lock("web").locked()
    record = services.get("web")
    assert record is not None and record.location == HERE
    assert services.lb.current_route("web") == ("127.0.0.1", 30000)


@pytest.mark.parametrize("error", [RuntimeError("a bug"), TimeoutError(), KeyError("instance")])
async def test_an_unexpected_error_ends_the_move_failed_and_closed(tmp_path: Path, error: Exception) -> None:
    peers = ScriptedPeers(fail_at=STATUS, error=error)
    eng, services, _ = await engine(tmp_path, peers)
    with pytest.raises(MigrationError, match="failed at wait"):
        await eng.migrate("web", target="c2")
    assert_nothing_stuck(eng, services, peers)


async def test_a_failed_reroute_leaves_the_route_where_it_was(tmp_path: Path) -> None:
    peers = ScriptedPeers()
    eng, services, fed = await engine(tmp_path, peers)

    async def refuse(*args: Any, **kwargs: Any) -> Any:
        raise RerouteError("haproxy refused the new server")

    services.lb.route = refuse  # type: ignore[method-assign]
    with pytest.raises(MigrationError, match="reroute"):
        await eng.migrate("web", target="c2")
    assert_nothing_stuck(eng, services, peers)
    assert fed.published == [], "nothing was committed, so nothing was published"


async def test_the_target_is_checked_against_the_federation_view(tmp_path: Path) -> None:
    eng, _, fed = await engine(tmp_path, ScriptedPeers())
    with pytest.raises(InvalidServiceRequest, match="unknown cluster"):
        await eng.migrate("web", target="c9")
    fed.membership.members["c2"] = member("c2", "failed")
    with pytest.raises(ServiceError, match="failed"):
        await eng.migrate("web", target="c2")
    assert eng.history.recent() == []


@pytest.mark.parametrize("error", [None, MigrationError("no room anywhere")])
async def test_the_failsafe_moves_what_its_own_policy_refuses_through_the_mover(error: Exception | None) -> None:
    fed, mover = FakeFederation(HERE, ["c1", "c2"]), FakeMover(error=error)
    services: Any = SimpleNamespace(here=HERE, get=lambda name: None)
    fs = FailSafe(services=services, client=cast(Any, None), history=cast(Any, None), agent=fed,
                  homes=FakeEntries(), liveness=Liveness(HERE), steward_of=lambda r: HERE, engine=mover)
    lost = Record(name="web", home=HERE, location="c2", state=State.RUNNING, digest="", descriptor=b"",
                  instance="127.0.0.2:31000", homes=(HERE,))
    await fs._redeploy_elsewhere(lost, evidence="c2 failed",
                                 refused=WorkloadRefused(Refusal("deny_commands", "python refused", "python")))
    assert mover.asked == [("web", None, "failsafe")]
    assert fed.load_changes == (0 if error else 1)


async def test_a_commit_that_fails_after_the_route_changed_routes_back(tmp_path: Path) -> None:
    """The steward's frontend already points at the new copy when the commit fails: it points
    at the old one again before the answer, since the copy at the target is aborted."""
    peers = ScriptedPeers()
    eng, services, _ = await engine(tmp_path, peers)

    def broken_disk(*args: Any, **kwargs: Any) -> Record:
        raise StoreError("disk I/O error")

    services.store.put_local = broken_disk  # type: ignore[method-assign]
    with pytest.raises(MigrationError, match="failed at reroute: disk I/O error"):
        await eng.migrate("web", target="c2")
    assert_nothing_stuck(eng, services, peers)


async def homed_abroad(services: ServiceManager) -> tuple[Record, Record]:
    """`db`, homed at c3 with this cluster (c1) its deputy and AC, as merged here; and the
    HC's own later decision on it (the service runs at the HC now), not merged yet."""
    payload = ServiceDescriptor.from_obj({"name": "db", "port": 80, "command": ["x"]}).canonical_msgpack()
    host, port = await services.lb.open_frontend("db")
    await services.lb.route("db", "127.0.0.1", 30001)
    read = services.merge(local_write(None, Record(
        name="db", home="c3", location=HERE, state=State.RUNNING, instance="127.0.0.1:30001",
        digest=descriptor_digest(payload), descriptor=payload, homes=("c3", HERE), incarnation="1-c3",
        endpoints=(("c3", "127.0.0.3:40000"), (HERE, f"{host}:{port}"))), here="c3", now=1.0)).result
    hcs = local_write(read, replace(read, location="c3", instance="127.0.0.3:30003", migration_id="fs-c3"),
                      here="c3", now=2.0)
    return read, hcs


async def test_a_move_at_a_deputy_gives_way_to_the_hcs_version_merged_meanwhile(tmp_path: Path) -> None:
    """The steward here (c1) is the HC's deputy. While the copy at c2 starts, the HC's own
    decision arrives by a merge (no service lock): the service runs at the HC now. The move's
    commit, decided on the older record, gives way (merge.superseded) instead of writing over
    it: the move fails with its journal closed, the copy at c2 aborted, and this entry routes
    where the HC's version says."""
    peers = ScriptedPeers()
    eng, services, _ = await engine(tmp_path, peers)
    _, hcs = await homed_abroad(services)
    answer = peers.call

    async def the_hcs_version_lands_while_the_copy_starts(url: str, path: str, body: Any, *, timeout: float) -> Any:
        if path == STATUS:
            services.merge(hcs)
        return await answer(url, path, body, timeout=timeout)

    peers.call = the_hcs_version_lands_while_the_copy_starts  # type: ignore[method-assign]
    with pytest.raises(MigrationError, match="older version of the record"):
        await eng.migrate("db", target="c2")
    held = services.get("db")
    assert held is not None and (held.location, held.migration_id) == ("c3", "fs-c3")
    assert list(services.store.journal_open()) == [] and f"{ABORT} http://c2" in peers.calls
    assert services.lb.current_route("db") == ("127.0.0.3", 30003)


async def test_a_move_finished_after_a_restart_gives_way_to_a_version_merged_meanwhile(tmp_path: Path) -> None:
    """After a crash at the reroute (the route here moved, the commit not written), `recover`
    writes the commit. Should the HC's version merged meanwhile outrank it (anti-entropy's
    thread is the only way one lands there), that version decides: the move is closed
    `aborted`, nothing is written over it, and this entry routes as it says."""
    eng, services, _ = await engine(tmp_path, ScriptedPeers())
    _, hcs = await homed_abroad(services)
    services.journal_move({"id": "m1", "service": "db", "stage": "reroute", "target": "c2", "home": "c3",
                           "source": HERE, "instance": "127.0.0.2:31000"})
    await services.lb.route("db", "127.0.0.2", 31000)  # the route here had moved before the crash
    commit = services.commit

    def the_hcs_version_lands_first(version: Record) -> Record:
        services.merge(hcs)
        return commit(version)

    services.commit = the_hcs_version_lands_first  # type: ignore[method-assign]
    await eng.recover()
    assert list(services.store.journal_open()) == []
    [m] = eng.history.recent()
    assert m["outcome"] == "aborted" and "older version of the record" in m["error"]
    held = services.get("db")
    assert held is not None and (held.location, held.migration_id) == ("c3", "fs-c3")
    assert services.lb.current_route("db") == ("127.0.0.3", 30003)


async def test_the_policy_loop_logs_a_services_error_and_goes_on(monkeypatch: pytest.MonkeyPatch,
                                                                 caplog: pytest.LogCaptureFixture) -> None:
    """An LBError (or a driver or peer error) met considering one service is logged, and the
    loop goes on with the other services and the next ticks (issue 13)."""
    monkeypatch.setattr(policy, "TICK", 0.01)
    fed, considered = FakeFederation(HERE, ["c1", "c2"]), []
    records = [Record(name=n, home=HERE, location=HERE, state=State.RUNNING, digest="", descriptor=b"",
                      homes=(HERE,)) for n in ("a", "b")]
    services: Any = SimpleNamespace(here=HERE, records=lambda: records, lock=lambda name: asyncio.Lock(),
                                    get=lambda name: next(r for r in records if r.name == name))

    async def failing(record: Record) -> bool:
        considered.append(record.name)
        if record.name == "a":
            raise LBError("haproxy's runtime socket is gone")
        return True  # the fail-safe's: nothing more to decide

    triggers = PolicyTriggers(services=services, engine=cast(Any, None), agent=fed, thresholds=Thresholds(),
                              failing=failing)
    with caplog.at_level(logging.WARNING, logger="peer.migration.policy"):
        task = asyncio.create_task(triggers.run())
        try:
            await wait_until(lambda: considered.count("b") >= 3, timeout=10, what="three ticks")
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
    assert considered[:2] == ["a", "b"]
    assert any("considering a failed: haproxy" in r.getMessage() for r in caplog.records)


async def test_a_failure_after_the_commit_leaves_the_move_standing(tmp_path: Path) -> None:
    """The core's rule (peer/core/move.py `stands`): once the commit is written the move stands.
    An error while the other entries are told must not abort the target's copy (the record
    runs the service there) nor end the move `failed`; the cleanup still runs."""
    peers = ScriptedPeers()
    eng, services, _ = await engine(tmp_path, peers)

    async def entries_down(record: Record, **kwargs: Any) -> list[str]:
        raise LBError("the entries' peer API is gone")

    eng.homes.route_entries = entries_down  # type: ignore[method-assign]
    stopped: list[str] = []

    async def stop_copy(name: str) -> None:
        stopped.append(name)

    services.stop_copy = stop_copy  # type: ignore[method-assign]
    m = await eng.migrate("web", target="c2")
    await eng.settle(timeout=5.0)
    record = services.get("web")
    assert record is not None and record.location == "c2" and record.migration_id == m.id
    assert f"{ABORT} http://c2" not in peers.calls, "the copy the record runs was not aborted"
    assert [h["outcome"] for h in eng.history.recent()] == ["succeeded"]
    assert "after the commit" in (eng.history.recent()[0].get("notes") or "")
    assert stopped == ["web"], "the cleanup stopped the old copy"
    assert list(services.store.journal_open()) == []
