"""Poll a condition until it holds or a deadline passes (lb may not import peer.runtime.waiting)."""
from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")


async def poll_until(
    predicate: Callable[[], Awaitable[T]],
    *,
    timeout: float,
    interval: float = 0.01,
    what: str = "condition",
    propagate: tuple[type[BaseException], ...] = (),
) -> T:
    """Return the first truthy value of async `predicate`; raise `TimeoutError` after `timeout` s.

    Exceptions listed in `propagate` end the wait at once; any other exception from the
    predicate means "not yet" and is chained to the final `TimeoutError`.
    """
    deadline = time.monotonic() + timeout
    last_exc: Exception | None = None
    while True:
        try:
            value = await predicate()
            if value:
                return value
        except propagate:
            raise
        except Exception as exc:  # noqa: BLE001 - a failing probe just means "not yet"
            last_exc = exc
        if time.monotonic() >= deadline:
            raise TimeoutError(f"{what} not reached within {timeout:.2f}s") from last_exc
        await asyncio.sleep(interval)
