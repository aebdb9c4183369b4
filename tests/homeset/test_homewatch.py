"""The home watch's I/O loop (peer/homeset/watch.py) against a fake peer client: a run of
unanswered pings marks the peer silent, an answer (a refusal included) clears it, and a peer
no longer ahead of this cluster in any home set is neither pinged nor marked."""
from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import pytest

from peer.homeset.watch import HomeWatch
from peer.peering.client import PeerRefused, PeerUnreachable
from peer.records.record import Record, State
from peer.homeset.silence import SilenceRule
from peer.homeset.stewardship import Liveness
from peer.runtime.waiting import wait_until

FAST = SilenceRule(interval=0.01, timeout=0.05, failures=3)


class FakePeers:
    """`call` as PeerClient's: each cluster answers, refuses, or is silent; pings counted."""

    def __init__(self) -> None:
        self.mode: dict[str, str] = {}
        self.pings: dict[str, int] = {}

    async def call(self, base_url: str, path: str, payload: object, *, timeout: float = 5.0) -> object:
        cluster = base_url.removeprefix("http://")
        self.pings[cluster] = self.pings.get(cluster, 0) + 1
        mode = self.mode.get(cluster, "answer")
        if mode == "silent":
            raise PeerUnreachable(f"{cluster}: connection refused")
        if mode == "refuse":
            raise PeerRefused(401, "bad signature")
        return {"ok": True}


def record(name: str, homes: tuple[str, ...]) -> Record:
    return Record(name=name, home=homes[0], location="c9", state=State.RUNNING, digest="", descriptor=b"",
                  homes=homes)


@contextlib.asynccontextmanager
async def watching(records: list[Record], peers: FakePeers, liveness: Liveness) -> AsyncIterator[HomeWatch]:
    watch = HomeWatch(here="c2", records=lambda: records, client=peers, url_of=lambda c: f"http://{c}",
                      liveness=liveness, rule=FAST)
    task = asyncio.create_task(watch.run())
    try:
        yield watch
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


@pytest.mark.parametrize("answer", ["answer", "refuse"])
async def test_silence_marks_and_any_answer_clears(answer: str) -> None:
    peers, liveness = FakePeers(), Liveness("c2")
    async with watching([record("a", ("c1", "c2")), record("b", ("c1", "c2", "c3"))], peers, liveness):
        await wait_until(lambda: peers.pings.get("c1", 0) >= 5, timeout=5)
        assert "c1" not in liveness.silent
        peers.mode["c1"] = "silent"
        await wait_until(lambda: "c1" in liveness.silent, timeout=5, what="c1 marked silent")
        peers.mode["c1"] = answer
        await wait_until(lambda: "c1" not in liveness.silent, timeout=5, what="c1 heard again")
    assert set(peers.pings) == {"c1"}  # one peer watched for two services; c3 is behind c2


async def test_a_peer_no_longer_ahead_is_forgotten() -> None:
    peers, liveness = FakePeers(), Liveness("c2")
    records = [record("a", ("c1", "c2"))]
    peers.mode["c1"] = "silent"
    async with watching(records, peers, liveness) as watch:
        await wait_until(lambda: "c1" in liveness.silent, timeout=5, what="c1 marked silent")
        records[:] = [record("a", ("c2", "c1"))]  # c2 now first: nobody to watch
        assert watch.watching == {"c1"}
        watch.refresh()
        assert watch.watching == frozenset() and "c1" not in liveness.silent
