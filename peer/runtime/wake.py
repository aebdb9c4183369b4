"""Loops that sleep while they have nothing to watch (issue 18: the idle cost of a cluster).

The agent's watchers (fail-safe, state keeper, convergence) used to tick whatever they held:
ten or twenty wakeups a second on a cluster with no service. Each now asks `next_delay` how long
to sleep: its tick while something needs watching, the time to its next deadline when only
deadlines are pending, and forever (None) when nothing does; a `Wake` ends the sleep early
when what they watch changes (a record committed, a member's status). So an idle agent's loops
do not run at all, and a loop with work keeps its tick exactly: the fail-safe's reaction time
is untouched.
"""
from __future__ import annotations

import asyncio
from collections.abc import Iterable


def next_delay(*, watching: bool, tick: float, deadlines: Iterable[float] = (), now: float = 0.0) -> float | None:
    """Seconds to sleep before the next look: `tick` while `watching`; otherwise until the
    earliest of `deadlines` (monotonic times; one already past gives 0); None (sleep until
    woken) when there is neither."""
    if watching:
        return tick
    soonest = min(deadlines, default=None)
    if soonest is None:
        return None
    return max(0.0, soonest - now)


class Wake:
    """A doorbell for one loop: `poke()` (from the loop's thread, or any other) ends the current
    or the next `sleep`. Pokes between two sleeps are kept as one, so a change made while the
    loop was busy is never missed; `wakeups` counts the sleeps that ended (tests read it to see
    that an idle loop really sleeps). One future and one timer per sleep: no task is created,
    so a loop that ticks pays what `asyncio.sleep` costs."""

    def __init__(self) -> None:
        self._poked = False
        self._waiter: asyncio.Future[bool] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self.wakeups = 0

    @property
    def sleeping(self) -> bool:
        """A sleep is under way (what a test waits for before it pokes from outside)."""
        return self._waiter is not None and not self._waiter.done()

    def poke(self) -> None:
        loop = self._loop
        if loop is None or loop.is_closed():
            self._poked = True  # nobody sleeps yet: the first sleep returns at once
            return
        try:
            running: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            self._ring()
        else:
            loop.call_soon_threadsafe(self._ring)

    def _ring(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(True)
        else:
            self._poked = True

    async def sleep(self, delay: float | None) -> bool:
        """Sleep `delay` seconds (None: until poked). True if a poke ended it."""
        loop = self._loop = asyncio.get_running_loop()
        if self._poked:
            self._poked = False
            self.wakeups += 1
            return True
        waiter = self._waiter = loop.create_future()
        timer = None if delay is None else loop.call_later(delay, _settle, waiter)
        try:
            return await waiter
        finally:
            self._waiter = None
            if timer is not None:
                timer.cancel()
            self.wakeups += 1


def _settle(waiter: asyncio.Future[bool]) -> None:
    if not waiter.done():
        waiter.set_result(False)
