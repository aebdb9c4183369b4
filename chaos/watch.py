"""Watching membership through every agent's admin API, to count failure detections.

Polls `GET /v1/members` on each running agent every `interval` and turns "observer sees member
failed" into episodes with start and end times (monotonic, like fault events and load samples).
An agent that does not answer is skipped for that round: its silence is not a detection.
"""
from __future__ import annotations

import asyncio
import time

from chaos.cluster import AdminAPIError, Federation
from chaos.detections import Episode

FAILED = frozenset({"failed"})


class MemberWatch:
    def __init__(self, fed: Federation, *, interval: float = 0.5) -> None:
        self.fed = fed
        self.interval = interval
        self.episodes: list[Episode] = []
        self._open: dict[tuple[str, str], Episode] = {}
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="member watch")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    def failed_now(self, observer: str) -> set[str]:
        return {m for (o, m) in self._open if o == observer}

    async def _run(self) -> None:
        while True:
            observers = [n for n, a in self.fed.agents.items() if a.running]
            await asyncio.gather(*(self._poll(o) for o in observers))
            await asyncio.sleep(self.interval)  # the polling period, not a synchronisation

    async def _poll(self, observer: str) -> None:
        try:
            members = await self.fed.call(observer, "GET", "/v1/members", timeout=2.0)
        except AdminAPIError:
            return
        now = time.monotonic()
        for member in members:
            name, status = member.get("name"), member.get("status")
            if not isinstance(name, str) or name == observer:
                continue
            key = (observer, name)
            if status in FAILED and key not in self._open:
                ep = Episode(observer, name, now)
                self._open[key] = ep
                self.episodes.append(ep)
            elif status not in FAILED and key in self._open:
                self._open.pop(key).end = now
