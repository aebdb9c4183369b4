"""The state keeper against an in-memory hook (unit level): saves follow roam's version order,
copies never receive an older version, new versions reach the record's standbys, and the seam
the standby code calls (`install_latest`)."""
from __future__ import annotations

import asyncio
import dataclasses
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest

from lb.fake import FakeLoadBalancer
from peer.api.statuses import status_of
from peer.drivers.descriptor import ServiceDescriptor
from peer.records.record import Record, State
from peer.copies.manager import ServiceError
from peer.state.fresh import CopyView
from peer.state.hook import Snapshot, StateHookMissing, StateTooLarge
from peer.state.keeper import StateKeeper, standby_addresses
from peer.state.saved import SavedStates
from peer.state.versions import Version

DESC = ServiceDescriptor.from_obj({"name": "svc", "port": 80, "command": ["x"],
                                   "state": {"path": "/roam/state", "interval": 0.1}})


class FakeHook:
    """Copies at "ip:port" holding a Snapshot; records every PUT."""

    def __init__(self) -> None:
        self.held: dict[str, Snapshot] = {}
        self.puts: list[tuple[str, str]] = []
        self.missing: set[str] = set()
        self.too_large: set[str] = set()

    async def get(self, host: str, port: int, path: str, *, if_none_match: str | None = None) -> Snapshot | None:
        key = f"{host}:{port}"
        if key in self.missing:
            raise StateHookMissing(f"state path {path} answers 404")
        if key in self.too_large:
            raise StateTooLarge("big", size=10**9, limit=16 * 2**20)
        snap = self.held[key]
        return None if if_none_match == snap.etag else snap

    async def put(self, host: str, port: int, path: str, snapshot: Snapshot) -> None:
        self.held[f"{host}:{port}"] = snapshot
        self.puts.append((f"{host}:{port}", snapshot.etag))

    async def close(self) -> None:
        pass


class FakeServices:
    here = "c1"
    lb = FakeLoadBalancer()

    def __init__(self, records: list[Record]) -> None:
        self._records = {r.name: r for r in records}
        self._locks: defaultdict[str, asyncio.Lock] = defaultdict(asyncio.Lock)

    def records(self) -> list[Record]:
        return list(self._records.values())

    def get(self, name: str) -> Record | None:
        return self._records.get(name)

    def lock(self, name: str) -> asyncio.Lock:
        return self._locks[name]


def record(**kw: Any) -> Record:
    base: dict[str, Any] = dict(name="svc", home="c1", location="c2", state=State.RUNNING, digest="d",
                                descriptor=DESC.canonical_msgpack(), instance="127.0.20.5:1000",
                                incarnation="1-ab", homes=("c1",))
    base.update(kw)
    return Record(**base)


class SteadyPeers:
    """The primary's cluster says its copy never restarted (peer/state/fresh.py)."""

    def __init__(self) -> None:
        self.asked = 0

    async def copy_view(self, cluster: str, name: str) -> CopyView:
        self.asked += 1
        return CopyView(boot="b", epoch=0, fresh=False)

    async def restore(self, cluster: str, record: Record, instance: str) -> None:
        raise AssertionError("nothing restarted")


def keeper(tmp_path: Path, hook: FakeHook, records: list[Record]) -> StateKeeper:
    return StateKeeper(services=FakeServices(records), hook=hook, saved=SavedStates(tmp_path),  # type: ignore[arg-type]
                       steward_of=lambda r: "c1", peers=SteadyPeers())


async def test_pull_saves_in_order_and_pushes_to_standbys(tmp_path: Path) -> None:
    hook = FakeHook()
    rec = record(standbys=(("c3", "127.0.20.6:1000"),))
    assert standby_addresses(rec) == [("127.0.20.6", 1000)]
    assert standby_addresses(record()) == []
    k = keeper(tmp_path, hook, [rec])
    hook.held["127.0.20.5:1000"] = Snapshot(b"one", '"1"')
    await k._pull(rec)
    assert k.saved_version(rec) == 1 and hook.held["127.0.20.6:1000"].body == b"one"
    assert k.peers.asked == 2  # type: ignore[union-attr]  # the copy's view before and after the first GET
    await k._pull(rec)  # unchanged (304): nothing new saved or pushed, and no peer call
    assert k.saved_version(rec) == 1 and len(hook.puts) == 1 and k.peers.asked == 2  # type: ignore[union-attr]
    hook.held["127.0.20.5:1000"] = Snapshot(b"two", '"2"')
    await k._pull(rec)
    assert k.saved_version(rec) == 2 and hook.held["127.0.20.6:1000"].body == b"two"
    assert k.peers.asked == 3  # type: ignore[union-attr]  # after the GET only: the last view is the one before
    # A restarted agent finds the saved state on disk.
    fresh = keeper(tmp_path, hook, [rec])
    latest = fresh.latest(rec)
    assert latest is not None and latest.version == Version(2, '"2"') and latest.snapshot.body == b"two"


async def test_install_latest_never_installs_an_older_version(tmp_path: Path) -> None:
    hook = FakeHook()
    rec = record(state_version=7)  # the record's floor: a new steward continues above it
    k = keeper(tmp_path, hook, [rec])
    assert await k.install_latest(rec, "127.0.20.9", 1) is None  # nothing saved yet
    v = k.save(rec, Snapshot(b"a", '"a"'))
    assert v == Version(8, '"a"')
    assert await k.install_latest(rec, "127.0.20.9", 1) == v
    assert await k.install_latest(rec, "127.0.20.9", 1) is None  # it holds that version already
    k.save(rec, Snapshot(b"b", '"b"'))
    await k.install_latest(rec, "127.0.20.9", 1)
    assert [etag for copy, etag in hook.puts if copy == "127.0.20.9:1"] == ['"a"', '"b"']
    assert not k.installed.admit("127.0.20.9:1", v)  # an older push arriving late is refused


async def test_pull_racing_a_save_is_dropped(tmp_path: Path) -> None:
    """A periodic pull that started before a handover saved the final version must not
    overwrite it with what it read earlier."""
    hook = FakeHook()
    rec = record()
    k = keeper(tmp_path, hook, [rec])
    hook.held["127.0.20.5:1000"] = Snapshot(b"old", '"old"')
    real_get = hook.get

    async def slow_get(*a: Any, **kw: Any) -> Snapshot | None:
        got = await real_get(*a, **kw)
        k.save(rec, Snapshot(b"final", '"final"'))  # the handover saves meanwhile
        return got

    hook.get = slow_get  # type: ignore[method-assign]
    await k._pull(rec)
    latest = k.latest(rec)
    assert latest is not None and latest.snapshot.body == b"final"


async def test_check_new_names_the_field(tmp_path: Path) -> None:
    hook = FakeHook()
    k = keeper(tmp_path, hook, [])
    hook.missing.add("127.0.20.7:1")
    with pytest.raises(ServiceError) as err:
        await k.check_new(DESC, "127.0.20.7", 1)
    assert status_of(err.value) == 422 and err.value.field == "state.path"
    hook.too_large.add("127.0.20.8:1")
    with pytest.raises(ServiceError) as err:
        await k.check_new(DESC, "127.0.20.8", 1)
    assert status_of(err.value) == 422 and err.value.field == "state" and "limit" in str(err.value)


async def test_a_deleted_services_state_is_removed(tmp_path: Path) -> None:
    hook = FakeHook()
    rec = record()
    k = keeper(tmp_path, hook, [rec])
    k.save(rec, Snapshot(b"x", '"x"'))
    path = k.saved.path_of(rec.name, rec.incarnation)
    assert path.exists()
    k._forget(dataclasses.replace(rec, tombstone=True))
    assert not path.exists() and k.latest(rec) is None


async def test_the_standby_seam_raises_the_standby_codes_error(tmp_path: Path) -> None:
    from peer.migration.standby import StateTransferError
    from peer.state.keeper import StandbySeam

    hook = FakeHook()
    rec = record()
    k = keeper(tmp_path, hook, [rec])
    k.save(rec, Snapshot(b"s", '"s"'))

    async def refuse(*a: Any, **kw: Any) -> None:
        raise StateHookMissing("state path /roam/state answers 404")

    hook.put = refuse  # type: ignore[method-assign]
    with pytest.raises(StateTransferError, match="404"):
        await StandbySeam(k).install_latest(rec, "127.0.20.9", 1)
