"""Copies restarted in place (peer/state/fresh.py), unit level: whatever the interleaving of
restarts, restores and writes around a pull, a state read from a copy that restarted without
roam's state is never saved; the keeper skips fresh copies and restores them."""
from __future__ import annotations

import asyncio
from collections import defaultdict
from pathlib import Path
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from lb.fake import FakeLoadBalancer
from peer.drivers.base import Instance, InstanceState
from peer.records.record import Record
from peer.state.fresh import CopyView, FreshCopies, may_save
from peer.state.hook import Snapshot
from peer.state.keeper import StateKeeper
from peer.state.saved import SavedStates
from tests.state.test_keeper import FakeHook, record

EVENTS = st.lists(st.sampled_from(["restart", "restore", "write"]), max_size=4)


@given(st.booleans(), EVENTS, EVENTS, EVENTS)
def test_a_state_read_from_a_fresh_copy_is_never_saved(start_fresh: bool, before: list[str], between: list[str],
                                                        after: list[str]) -> None:
    """Model: the copy holds roam's lineage (True) or its initial state (False); a pull reads
    the view, then (events) the state, then (events) the view again."""
    fresh = FreshCopies()
    lineage = True
    if start_fresh:
        fresh.started("svc")
        lineage = False

    def happen(events: list[str]) -> None:
        nonlocal lineage
        for event in events:
            if event == "restart":
                fresh.started("svc")
                lineage = False
            elif event == "restore":
                if fresh.restored("svc", fresh.view("svc").epoch):
                    lineage = True
            # "write": the copy's state changes; its lineage does not

    happen(before)
    seen_before = fresh.view("svc")
    happen(between)
    read_lineage = lineage
    happen(after)
    if may_save(seen_before, fresh.view("svc")):
        assert read_lineage


def test_a_restore_of_an_earlier_restart_does_not_clear_a_later_one() -> None:
    fresh = FreshCopies()
    fresh.started("svc")
    epoch = fresh.view("svc").epoch
    fresh.started("svc")  # it crashed again while the restore was under way
    assert not fresh.restored("svc", epoch)
    assert fresh.view("svc").fresh and fresh.fresh() == ["svc"]
    assert fresh.restored("svc", fresh.view("svc").epoch)
    assert not fresh.view("svc").fresh
    assert may_save(CopyView("b", 3, False), CopyView("b", 3, False)) and not may_save(None, CopyView("b", 3, False))
    assert not may_save(CopyView("b", 3, False), CopyView("other boot", 3, False))  # the agent restarted


class Driver:
    def __init__(self) -> None:
        self.state = InstanceState.READY

    async def status(self, name: str) -> Instance:
        return Instance(name=name, home="c1", host="127.0.20.5", port=1000, state=self.state)


class Services:
    """The keeper's view of a ServiceManager where the primary runs here (c1)."""

    here = "c1"
    lb = FakeLoadBalancer()

    def __init__(self, rec: Record) -> None:
        self.rec = rec
        self.fresh = FreshCopies()
        self.driver = Driver()
        self._locks: defaultdict[str, asyncio.Lock] = defaultdict(asyncio.Lock)

    def records(self) -> list[Record]:
        return [self.rec]

    def get(self, name: str) -> Record | None:
        return self.rec

    def lock(self, name: str) -> asyncio.Lock:
        return self._locks[name]


async def test_the_keeper_skips_a_fresh_copy_and_restores_it(tmp_path: Path) -> None:
    hook = FakeHook()
    rec = record(location="c1")
    services = Services(rec)
    k = StateKeeper(services=services, hook=hook, saved=SavedStates(tmp_path),  # type: ignore[arg-type]
                    steward_of=lambda r: "c1")
    hook.held["127.0.20.5:1000"] = Snapshot(b"57 counted", '"57"')
    await k._pull(rec)
    assert k.saved_version(rec) == 1
    # The copy restarts in place: its initial state is never saved, however often it is pulled.
    services.fresh.started("svc")
    hook.held["127.0.20.5:1000"] = Snapshot(b"empty", '"0"')
    await k._pull(rec)
    assert k.saved_version(rec) == 1
    # A restart while the GET is under way is caught by the view after it.
    services.fresh.restored("svc", services.fresh.view("svc").epoch)
    real_get = hook.get

    async def restarting_get(*a: Any, **kw: Any) -> Snapshot | None:
        services.fresh.started("svc")
        return await real_get(*a, **kw)

    hook.get = restarting_get  # type: ignore[method-assign]
    await k._pull(rec)
    hook.get = real_get  # type: ignore[method-assign]
    assert k.saved_version(rec) == 1
    # Not restored while the copy is not serving; restored (the PUT) once it is.
    services.driver.state = InstanceState.STARTING
    await k._restore_fresh("svc")
    assert services.fresh.view("svc").fresh
    services.driver.state = InstanceState.READY
    k._restore_at.clear()
    k.installed.admit("127.0.20.5:1000", k.latest(rec).version)  # type: ignore[union-attr]  # held before the crash
    await k._restore_fresh("svc")
    assert not services.fresh.view("svc").fresh
    assert hook.held["127.0.20.5:1000"].body == b"57 counted"
    await k._pull(rec)  # 304: the copy holds the saved version again
    assert k.saved_version(rec) == 1
