"""This HC's reroute, overlapped with what follows it (issue 16: the reroute stage).

The HC's `LoadBalancer.route` is make-before-break: the new server serves (`on_up`), the route
is saved (in a worker thread, while the caller commits), then the old server drains (its
requests finish) and is deleted. The commit and the other entries' `ROUTE` need only the first
part: from `on_up` on, this HC serves the new copy. A crash before the commit rolls the move
back unless the saved route already points at the new copy (then `MigrationEngine.recover`
commits it); a crash after the commit finishes it, routing this HC as the record says first
(the saved route may still name the old copy). So the engine starts the reroute as a task,
goes on once it is up (`until_up`), and collects the drain at the end of the stage
(`drained`), instead of waiting for the save and the drain before the commit.

A reroute that fails before it is up raises from `until_up`, before anything was committed,
exactly as an awaited `route` did. Once up (and committed), a drain that fails no longer undoes
the move: the old server may be left in HAProxy (the balancer's repair removes servers no slot
accounts for); it is logged, as `route_entries` logs an entry that did not confirm.

After the commit (`Rollout`): the other entries' `ROUTE` and this HC's drain start at once;
the API answers when every entry routed (or did not confirm within its bound), while the drain
runs on. The cleanup awaits both before the old copy stops, so the old copy serves until no
entry routes to it. The record is the truth if the HC dies in between:
`MigrationEngine.recover` routes the entries again before it stops the old copy.
"""
from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable
from dataclasses import dataclass, field
from typing import Any, TypeVar

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


@dataclass
class Rollout:
    """A committed move's remaining routes: the other entries' `ROUTE` (its result: the entries
    that did not confirm; the answer waits for it) and this HC's drain. Started at the commit,
    awaited whole by the cleanup."""

    entries: asyncio.Future[list[str]]
    drain: asyncio.Future[Any]
    what: str
    started: float = field(default_factory=time.monotonic)
    timings: dict[str, float] = field(default_factory=dict)  # ms since the commit, per part
    per_entry: dict[str, dict[str, float]] = field(default_factory=dict)  # `route_entries`' timings

    @classmethod
    def start(cls, entries: Awaitable[list[str]], drain: asyncio.Future[Any], what: str, *,
              per_entry: dict[str, dict[str, float]] | None = None, started: float | None = None) -> Rollout:
        """`started`: the commit's `time.monotonic()`, which `timings` count from."""
        rollout = cls(entries=asyncio.ensure_future(entries), drain=drain, what=what,
                      per_entry=per_entry if per_entry is not None else {},
                      started=started if started is not None else time.monotonic())
        rollout.entries.add_done_callback(lambda _: rollout._mark("reroute_entries"))
        return rollout

    def _mark(self, key: str) -> None:
        self.timings[key] = round((time.monotonic() - self.started) * 1000.0, 3)

    async def finished(self) -> list[str]:
        """The entries that did not confirm, once every entry answered and the drain ended.
        Cancelled (the agent stops), both are cancelled: the journal stays open for `recover`."""
        try:
            missing = await asyncio.shield(self.entries)
            await drained(asyncio.shield(self.drain), self.what)
        except asyncio.CancelledError:
            self.cancel()
            raise
        if self.per_entry:  # the slowest entry's parts: it decided when the rollout ended
            slowest = max(self.per_entry.values(), key=lambda t: t.get("call", 0.0))
            self.timings.update({f"entry_{part}": ms for part, ms in slowest.items()})
        return missing

    def cancel(self) -> None:
        self.entries.cancel()
        self.drain.cancel()
