"""A bound on the background calls an agent makes to its peers at once.

When a federation starts, or a site comes back, every member comes alive in every other
member's view at the same moment. Each agent then used to call every peer at once: the
catch-up's certificate exchange and records sync, and for each member seen alive a welcome
(certificates, records, names), each call on its own TLS connection. At 20 agents that was
about 100 connections per agent in the same second. The heap they took is not given back
(glibc and pymalloc keep their high-water mark), so an agent's idle RSS grew with the size of
the federation (issue 18). Background fan-outs go through one `FanOut`; a migration's own calls
(`publish_now`) do not, they must not queue behind a start-up storm.
"""
from __future__ import annotations

import asyncio
import functools
from collections.abc import Awaitable, Callable, Iterable
from typing import TypeVar

T = TypeVar("T")
K = TypeVar("K")


class FanOut:
    """At most `at_once` calls in flight; the others wait their turn in arrival order."""

    def __init__(self, at_once: int) -> None:
        if at_once < 1:
            raise ValueError(f"at_once must be at least 1, not {at_once}")
        self._slots = asyncio.Semaphore(at_once)

    async def run(self, call: Callable[[], Awaitable[T]]) -> T:
        """`call()` once a slot is free. A callable, not an awaitable: a coroutine created
        before its turn and cancelled while waiting would never be awaited."""
        async with self._slots:
            return await call()

    async def each(self, keys: Iterable[K], call: Callable[[K], Awaitable[T]]) -> list[T | BaseException]:
        """`call(key)` for every key, bounded; results (or exceptions) in the keys' order."""
        return await asyncio.gather(*(self.run(functools.partial(call, key)) for key in keys),
                                    return_exceptions=True)
