"""This HC's reroute, overlapped with what follows it (issue 16: the reroute stage).

The HC's `LoadBalancer.route` is make-before-break: the new server serves, the route is saved
(`on_up`), then the old server drains (its requests finish) and is deleted. The commit and the
other entries' `ROUTE` need only the first part: from `on_up` on, this HC serves the new copy
and a crash finishes the move (`MigrationEngine.recover`: the saved route points at it). So
the engine starts the reroute as a task, goes on once it is up (`until_up`), and collects the
drain at the end of the stage (`drained`), instead of waiting for the drain before the commit.

A reroute that fails before it is up raises from `until_up`, before anything was committed,
exactly as an awaited `route` did. Once up (and committed), a drain that fails no longer undoes
the move: the old server may be left in HAProxy (the balancer's repair removes servers no slot
accounts for); it is logged, as `route_entries` logs an entry that did not confirm.
"""
from __future__ import annotations

import asyncio
import logging
from typing import TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")


async def until_up(task: asyncio.Future[T], up: asyncio.Event) -> None:
    """Return once `up` is set or `task` ended well (a route already in place reports no
    `up`); raise `task`'s error if it failed first. Cancelled, it cancels `task` too."""
    waiter: asyncio.Future[object] = asyncio.ensure_future(up.wait())
    pending: set[asyncio.Future[object]] = {task, waiter}  # type: ignore[arg-type]
    try:
        await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
    except BaseException:
        task.cancel()
        raise
    finally:
        waiter.cancel()
    if not up.is_set():
        task.result()  # done without `up`: its error, or its result (nothing to wait for)


async def drained(task: asyncio.Future[T], what: str) -> T | None:
    """`task`'s result once it ends; an error after `up` is logged, not raised (module doc)."""
    try:
        return await task
    except asyncio.CancelledError:
        raise
    except Exception as exc:  # the drain's RerouteError, or any error it wrapped
        log.warning("%s: the new route serves, but the old one was not removed cleanly: %s", what, exc)
        return None
