"""Polling with a deadline: the one way roam (and its tests) wait for something to become true.

A fixed sleep either wastes time or is too short on a loaded machine; a poll with a deadline
returns as soon as the condition holds and fails loudly when it never does.
"""
from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar, overload

from peer.errors import RoamError

T = TypeVar("T")


class WaitTimeout(RoamError, TimeoutError):
    """The condition did not hold before the deadline."""


@overload
async def wait_until(predicate: Callable[[], Awaitable[T]], *, timeout: float, interval: float = ...,
                     what: str = ...) -> T: ...
@overload
async def wait_until(predicate: Callable[[], T], *, timeout: float, interval: float = ...,
                     what: str = ...) -> T: ...


async def wait_until(
    predicate: Callable[[], Any],
    *,
    timeout: float,
    interval: float = 0.05,
    what: str = "condition",
) -> Any:
    """Poll `predicate` (sync or async) until it returns a truthy value; return that value."""
    deadline = time.monotonic() + timeout
    last_exc: BaseException | None = None
    while True:
        try:
            value = predicate()
            if inspect.isawaitable(value):
                value = await value
            if value:
                return value
        except Exception as exc:  # noqa: BLE001 - a failing probe just means "not yet"
            last_exc = exc
        if time.monotonic() >= deadline:
            raise WaitTimeout(f"{what} not reached within {timeout:.1f}s") from last_exc
        await asyncio.sleep(interval)


async def wait_set(event: asyncio.Event, timeout: float) -> bool:
    """True once `event` is set, False after `timeout` seconds. With asyncio.timeout, not
    wait_for: on Python 3.11 wait_for returns normally when its task is cancelled just as the
    event is set, and a loop around it then runs on after being cancelled (an agent whose stop
    waits forever: found in tests/chaos/test_restarts.py)."""
    try:
        async with asyncio.timeout(timeout):
            await event.wait()
        return True
    except TimeoutError:
        return False


async def sleep_until(deadline: float, stop: asyncio.Event) -> bool:
    """Wait until `deadline` (monotonic) unless `stop` is set first; True if it was."""
    delay = deadline - time.monotonic()
    if delay <= 0:
        return stop.is_set()
    return await wait_set(stop, delay)


def wait_until_sync(
    predicate: Callable[[], T],
    *,
    timeout: float,
    interval: float = 0.05,
    what: str = "condition",
) -> T:
    """Blocking twin of `wait_until` for code that has no event loop (CLI, test setup)."""
    deadline = time.monotonic() + timeout
    last_exc: BaseException | None = None
    while True:
        try:
            value = predicate()
            if value:
                return value
        except Exception as exc:  # noqa: BLE001
            last_exc = exc
        if time.monotonic() >= deadline:
            raise WaitTimeout(f"{what} not reached within {timeout:.1f}s") from last_exc
        time.sleep(interval)
