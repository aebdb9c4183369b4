"""Supervised background loops: every long-running part of the agent runs under `supervised`,
so a bug or an unexpected error in one loop is logged with its traceback and the loop starts
again after a back-off, instead of ending silently and leaving, say, the fail-safe dead while
the agent keeps answering its health check (issue 13). Cancellation (the agent's stop) passes
straight through.
"""
from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

log = logging.getLogger(__name__)

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
