"""Supervised background loops: every long-running part of the agent runs under `supervised`,
so a bug or an unexpected error in one loop is logged with its traceback and the loop starts
again after a back-off, instead of ending silently and leaving, say, the fail-safe dead while
the agent keeps answering its health check (issue 13). Cancellation (the agent's stop) passes
straight through. `Supervisor` owns a part's tasks: the only place `peer` calls `create_task`.
"""
from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")

FIRST_BACKOFF = 0.5
MAX_BACKOFF = 30.0
HEALTHY_AFTER = 60.0  # a run that lasted this long resets the back-off


def next_backoff(current: float, ran_for: float) -> float:
    """The wait before the next restart: doubling while runs keep failing fast, reset after a
    run that lasted HEALTHY_AFTER (pure; table-tested)."""
    if ran_for >= HEALTHY_AFTER:
        return FIRST_BACKOFF
    return min(current * 2, MAX_BACKOFF)


async def supervised(name: str, run: Callable[[], Awaitable[None]]) -> None:
    """Run `run()` until cancelled, restarting it after any exception (or an unexpected return)."""
    backoff = FIRST_BACKOFF
    while True:
        started = time.monotonic()
        try:
            await run()
            log.error("%s loop returned; starting it again in %.1fs", name, backoff)
        except asyncio.CancelledError:
            raise
        except Exception:  # noqa: BLE001 - the point of supervision: log, then restart
            log.exception("%s loop failed; starting it again in %.1fs", name, backoff)
        await asyncio.sleep(backoff)
        backoff = next_backoff(backoff, time.monotonic() - started)


class Supervisor:
    """The owner of a part's background tasks, the one way `peer` starts one (issue 13). Every
    task is kept until it ends (none is fire-and-forget), a failure is logged with its traceback
    (none is silent), a loop is restarted with back-off (`loop`, through `supervised`), and
    `stop` cancels whatever is left and waits for it, so a part that stops leaves no task behind.
    Like a TaskGroup, but one task's failure does not cancel the others: a failed probe must not
    take the fail-safe down with it."""

    def __init__(self, owner: str) -> None:
        self.owner = owner
        self._tasks: set[asyncio.Task[Any]] = set()

    def spawn(self, coro: Coroutine[Any, Any, T], *, name: str | None = None, report: bool = True) -> asyncio.Task[T]:
        """Run a one-shot job. `report=False` for a job whose outcome its caller reads from the
        returned task (its failure is the caller's to handle, not a stray error to log)."""
        task = asyncio.create_task(coro, name=f"{self.owner}:{name or coro.__qualname__}")
        self._tasks.add(task)
        task.add_done_callback(self._done if report else self._tasks.discard)
        return task

    def loop(self, name: str, run: Callable[[], Awaitable[None]]) -> asyncio.Task[None]:
        """Run a loop for as long as the owner lives: restarted with back-off if it fails or returns."""
        return self.spawn(supervised(f"{self.owner}:{name}", run), name=name)

    def _done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("background job %s failed", task.get_name(), exc_info=task.exception())

    @property
    def tasks(self) -> frozenset[asyncio.Task[Any]]:
        """The tasks still running."""
        return frozenset(self._tasks)

    def __len__(self) -> int:
        return len(self._tasks)

    async def stop(self, *, grace: float = 0.0) -> None:
        """Let the tasks finish for up to `grace` seconds, then cancel the rest and wait for them."""
        if grace > 0 and self._tasks:
            await asyncio.wait(list(self._tasks), timeout=grace)
        while self._tasks:  # again if a job being cancelled started another
            tasks = list(self._tasks)
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            self._tasks.difference_update(tasks)
