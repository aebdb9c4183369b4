"""The home watch: an entry pings the clusters ahead of it in its services' home sets, so the
loss of an idle HC is noticed without waiting for Serf (timing and bounds: peer/homeset/silence.py).

One task per watched peer (`watched_peers`: the union over records, so the cost grows with
the clusters ahead of this one, never with the number of services). Each pings with the
peer API `PING`, waits `interval`, and pings again; a run of unanswered pings marks the peer
silent in `Liveness`, an answer clears the mark. Peers no longer watched lose their mark.
"""
from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import Callable, Iterable
from typing import Protocol

from peer.migration import wire
from peer.migration.wire import PING
from peer.peering.client import PeerError, PeerRefused, PeerServerError
from peer.records.record import Record
from peer.homeset.silence import PeerSilence, SilenceRule
from peer.homeset.stewardship import Liveness, watched_peers
from peer.runtime.supervision import Supervisor

log = logging.getLogger(__name__)

REFRESH = 1.0  # how often the set of watched peers is recomputed from the records


class PeerCalls(Protocol):
    """The one thing the watch needs of `peer.peering.client.PeerClient`."""

    async def call(self, base_url: str, path: str, payload: object, *, timeout: float = ...) -> object: ...


class HomeWatch:
    def __init__(self, *, here: str, records: Callable[[], Iterable[Record]], client: PeerCalls,
                 url_of: Callable[[str], str | None], liveness: Liveness,
                 rule: SilenceRule = SilenceRule()) -> None:
        self.here = here
        self.records = records
        self.client = client
        self.url_of = url_of
        self.liveness = liveness
        self.rule = rule
        self._tasks: dict[str, asyncio.Task[None]] = {}  # one watcher per peer ahead, by peer
        self._jobs = Supervisor(here)  # owns them: kept, logged if one fails

    async def run(self) -> None:
        try:
            while True:
                self.refresh()
                await asyncio.sleep(REFRESH)
        finally:
            for peer in list(self._tasks):
                await self._stop(peer)
            await self._jobs.stop()  # watchers dropped by `refresh` and still ending

    @property
    def watching(self) -> frozenset[str]:
        """The peers being pinged now."""
        return frozenset(self._tasks)

    def refresh(self) -> None:
        """Start watching the peers now ahead of this cluster; stop (and forget) the others."""
        wanted = watched_peers(self.records(), self.here)
        for peer in set(self._tasks) - wanted:
            self._tasks.pop(peer).cancel()
            self.liveness.forget_silent(peer)
        for peer in wanted - set(self._tasks):
            self._tasks[peer] = self._jobs.loop(f"watch:{peer}", functools.partial(self._watch, peer))

    async def _stop(self, peer: str) -> None:
        task = self._tasks.pop(peer)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    async def _watch(self, peer: str) -> None:
        state = PeerSilence()
        while True:
            answered = await self.answers(peer)
            if answered is not None:
                was = state.marked_at
                marked = state.observe(answered, time.monotonic(), self.rule)
                if marked is not None and was is None:
                    log.warning("%s answered none of %d pings: silent, stewardship moves in %.1fs unless it "
                                "answers", peer, state.failed, self.liveness.home_grace)
                    self.liveness.mark_silent(peer, marked)
                elif marked is None and was is not None:
                    log.info("%s answers again: no longer silent", peer)
                    self.liveness.forget_silent(peer)
            await asyncio.sleep(self.rule.interval)

    async def answers(self, peer: str) -> bool | None:
        """Did `peer` answer a ping? None: its address is unknown (gossip has not heard of it
        yet, e.g. right after a restart), which says nothing either way."""
        url = self.url_of(peer)
        if url is None:
            return None
        try:
            await self.client.call(url, PING, wire.Ping().to_wire(), timeout=self.rule.timeout)
        except (PeerRefused, PeerServerError):
            return True  # a refusal or an error reply is an answer: it is there
        except PeerError:
            return False
        return True
