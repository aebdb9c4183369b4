"""Issue 16: the HC's reroute overlapped with the commit and the other entries (peer/migration/
overlap.py). Unit tests of the waiting rules with a scripted route coroutine (no I/O)."""
from __future__ import annotations

import asyncio
import inspect
import logging
from typing import Any

import pytest

from lb.errors import RerouteError
from peer.migration.overlap import Rollout, drained, until_up
from peer.runtime.waiting import wait_until


async def scripted_route(up: asyncio.Event, *, before: asyncio.Event | None = None, fail_before: bool = False,
                         report_up: bool = True, drain: asyncio.Event | None = None,
                         fail_drain: bool = False) -> str:
    """A route as `LoadBalancer.route` runs one: new server up, `on_up`, then the drain."""
    if before is not None:
        await before.wait()
    if fail_before:
        raise RerouteError("never passed a check; old route kept")
    if report_up:
        up.set()
    if drain is not None:
        await drain.wait()
    if fail_drain:
        raise RerouteError("old server not removed")
    return "routed"


async def test_goes_on_once_up_while_the_old_server_drains() -> None:
    up, drain = asyncio.Event(), asyncio.Event()
    task = asyncio.ensure_future(scripted_route(up, drain=drain))
    await until_up(task, up)
    assert up.is_set() and not task.done()  # the caller commits and routes the entries now
    drain.set()
    assert await drained(task, "svc") == "routed"


async def test_a_route_that_fails_before_up_raises_and_nothing_goes_on() -> None:
    up, before = asyncio.Event(), asyncio.Event()
    task = asyncio.ensure_future(scripted_route(up, before=before, fail_before=True))
    before.set()
    with pytest.raises(RerouteError, match="old route kept"):
        await until_up(task, up)
    assert not up.is_set()


async def test_a_route_already_in_place_reports_no_up_and_is_done() -> None:
    up = asyncio.Event()
    task = asyncio.ensure_future(scripted_route(up, report_up=False))
    await until_up(task, up)
    assert task.done() and await drained(task, "svc") == "routed"


async def test_a_drain_that_fails_after_up_is_logged_not_raised(caplog: pytest.LogCaptureFixture) -> None:
    up = asyncio.Event()
    task = asyncio.ensure_future(scripted_route(up, fail_drain=True))
    await until_up(task, up)
    with caplog.at_level(logging.WARNING, logger="peer.migration.overlap"):
        assert await drained(task, "svc at c1") is None
    assert "svc at c1" in caplog.text and "old server not removed" in caplog.text


def suspended(task: asyncio.Task[Any]) -> bool:
    """The task's coroutine has started and waits at an await."""
    coro = task.get_coro()
    return inspect.iscoroutine(coro) and inspect.getcoroutinestate(coro) == inspect.CORO_SUSPENDED


async def test_cancelled_while_waiting_cancels_the_route() -> None:
    up, before = asyncio.Event(), asyncio.Event()
    task = asyncio.ensure_future(scripted_route(up, before=before))
    waiting = asyncio.create_task(until_up(task, up))
    await wait_until(lambda: suspended(waiting), timeout=5, what="until_up waiting on the route")
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    with pytest.raises(asyncio.CancelledError):
        await task


async def entries_route(go: asyncio.Event, missing: list[str]) -> list[str]:
    """`route_entries` as the engine starts it at the commit: answers once every entry did."""
    await go.wait()
    return missing


async def test_the_rollout_ends_only_once_every_entry_answered_and_the_old_server_drained() -> None:
    # The cleanup awaits it before the old copy stops: neither part may be skipped.
    up, drain, go = asyncio.Event(), asyncio.Event(), asyncio.Event()
    here = asyncio.ensure_future(scripted_route(up, drain=drain))
    await until_up(here, up)
    rollout = Rollout.start(entries_route(go, ["c3"]), here, "svc at c1")
    finishing = asyncio.create_task(rollout.finished())
    await wait_until(lambda: suspended(finishing), timeout=5, what="the rollout waiting")
    go.set()
    await wait_until(lambda: rollout.entries.done(), timeout=5, what="the entries answered")
    assert not finishing.done()  # the old server still drains
    drain.set()
    assert await finishing == ["c3"]
    assert set(rollout.timings) == {"reroute_entries"}


async def test_a_stop_during_the_rollout_cancels_both_parts() -> None:
    up, drain, go = asyncio.Event(), asyncio.Event(), asyncio.Event()
    here = asyncio.ensure_future(scripted_route(up, drain=drain))
    await until_up(here, up)
    rollout = Rollout.start(entries_route(go, []), here, "svc at c1")
    finishing = asyncio.create_task(rollout.finished())
    await wait_until(lambda: suspended(finishing), timeout=5, what="the rollout waiting")
    finishing.cancel()
    with pytest.raises(asyncio.CancelledError):
        await finishing
    for part in (rollout.entries, rollout.drain):
        with pytest.raises(asyncio.CancelledError):
            await part


async def test_a_failed_drain_after_the_commit_does_not_fail_the_rollout(caplog: pytest.LogCaptureFixture) -> None:
    up, go = asyncio.Event(), asyncio.Event()
    here = asyncio.ensure_future(scripted_route(up, fail_drain=True))
    await until_up(here, up)
    go.set()
    with caplog.at_level(logging.WARNING, logger="peer.migration.overlap"):
        assert await Rollout.start(entries_route(go, []), here, "svc at c1").finished() == []
    assert "old server not removed" in caplog.text
