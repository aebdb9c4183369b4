"""Pipelined push and fetch batches (issue 16): up to `in_flight` requests of a round await
their answers at once, between real aiohttp servers on loopback (127.0.160.x)."""
from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from peer.peering.client import PeerClient, PeerServerError
from peer.records import messages as msg
from peer.records.antientropy import AntiEntropy, SyncStats
from peer.records.merge import MergeOutcome
from peer.records.record import Record
from peer.records.store import RecordStore
from peer.trust.signing import Channel
from tests.records.test_antientropy import Peer, StartPeer, shared_view, start_peer  # noqa: F401 (fixture)

BATCH_BYTES = 2000  # a few versions per push: a round of 40 conflicts makes about ten batches


def diverge(a: Peer, b: Peer, names: list[str]) -> None:
    """Shared by both, then changed on both sides: every name a conflict to push."""
    for name in names:
        b.store.apply_remote(a.write(name, location="b", instance="127.0.160.12:8000"), here="b")
        a.write(name, location="a", instance="127.0.160.11:8001")
        b.write(name, instance="127.0.160.12:8002")


def held_pushes(b: Peer, *, until: int, timeout: float = 10.0) -> tuple[list[int], Callable[[], None]]:
    """Make b's first push wait (in its worker thread, before it merges) until `until` pushes
    are being handled at once, or `timeout`; the most seen at once is in the list."""
    pushed = b.ae._pushed
    lock, enough = threading.Lock(), threading.Event()
    now, most = [0], [0]

    def counted(body: object, channel: object = None) -> tuple[dict[str, object], list[MergeOutcome]]:
        with lock:
            now[0] += 1
            most[0] = max(most[0], now[0])
            first = most[0] == 1
            if now[0] >= until:
                enough.set()
        try:
            if first:
                enough.wait(timeout)
            return pushed(body, channel)  # type: ignore[arg-type]
        finally:
            with lock:
                now[0] -= 1

    b.ae._pushed = counted  # type: ignore[method-assign]
    return most, enough.set


async def test_two_pushes_are_under_way_at_once_and_the_round_agrees(start_peer: StartPeer) -> None:
    a, b = await start_peer("a", "127.0.160.11"), await start_peer("b", "127.0.160.12")
    names = [f"svc-{i:02d}" for i in range(40)]
    diverge(a, b, names)
    a.ae.push_bytes = BATCH_BYTES
    assert a.ae.in_flight == 2
    most, release = held_pushes(b, until=2)
    try:
        stats = await a.ae.sync_with("b", b.url)
    finally:
        release()
    assert most[0] == 2  # the second batch was sent while the peer held the first (never more)
    assert stats.pushed == 40 and stats.conflicts >= 40 and stats.requests > 4
    shared_view(a, b, names)
    assert {o.result.name for o in a.outcomes} >= set(names)  # every answer merged and notified


async def test_one_in_flight_sends_each_batch_after_the_last_answer(start_peer: StartPeer) -> None:
    a, b = await start_peer("a", "127.0.160.13"), await start_peer("b", "127.0.160.14")
    names = [f"svc-{i:02d}" for i in range(40)]
    diverge(a, b, names)
    a.ae.push_bytes, a.ae.in_flight = BATCH_BYTES, 1
    most, release = held_pushes(b, until=2, timeout=0.5)
    try:
        await a.ae.sync_with("b", b.url)
    finally:
        release()
    assert most[0] == 1
    shared_view(a, b, names)


async def test_the_next_batch_goes_out_while_this_side_still_merges_an_answer(start_peer: StartPeer) -> None:
    """The window counts requests awaiting answers, not merges: once batch 1 is answered,
    batch 3 is sent while this side still merges batch 1's answer (when the merge was counted,
    the two sides took turns: each idle while the other merged)."""
    a, b = await start_peer("a", "127.0.160.20"), await start_peer("b", "127.0.160.21")
    names = [f"svc-{i:02d}" for i in range(40)]
    diverge(a, b, names)
    a.ae.push_bytes = BATCH_BYTES
    pushed, received = b.ae._pushed, [0]
    third_arrived = asyncio.Event()
    loop = asyncio.get_running_loop()

    def counted(body: object, channel: object = None) -> tuple[dict[str, object], list[MergeOutcome]]:
        received[0] += 1
        if received[0] == 3:
            loop.call_soon_threadsafe(third_arrived.set)
        return pushed(body, channel)  # type: ignore[arg-type]

    b.ae._pushed = counted  # type: ignore[method-assign]
    take, merges, seen_while_merging = a.ae._take, [0], []

    async def held_first_merge(*args: Any, **kwargs: Any) -> tuple[list[Record], set[str]]:
        merges[0] += 1
        if merges[0] == 1:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(third_arrived.wait(), timeout=5.0)
            seen_while_merging.append(third_arrived.is_set())
        return await take(*args, **kwargs)

    a.ae._take = held_first_merge  # type: ignore[method-assign]
    stats = await a.ae.sync_with("b", b.url)
    assert seen_while_merging == [True]  # batch 3 reached the peer before batch 1's answer merged here
    assert stats.pushed == 40
    shared_view(a, b, names)


async def test_fetches_are_pipelined_too_and_every_record_arrives(start_peer: StartPeer) -> None:
    a, b = await start_peer("a", "127.0.160.15"), await start_peer("b", "127.0.160.16")
    names = [f"svc-{i:02d}" for i in range(45)]
    for name in names:
        b.write(name, location="a", instance="127.0.160.16:8000")  # homed at b, running at a: fetched
    a.ae.fetch_chunk = 4
    exchange, now, most, paths = a.ae._exchange, [0], [0], []

    async def counted(base_url: str, path: str, payload: object, stats: SyncStats) -> tuple[object, Channel | None]:
        now[0] += 1
        most[0] = max(most[0], now[0])
        paths.append(path)
        try:
            return await exchange(base_url, path, payload, stats)
        finally:
            now[0] -= 1

    a.ae._exchange = counted  # type: ignore[method-assign]
    stats = await a.ae.sync_with("b", b.url)
    assert stats.fetched == 45 and paths.count(msg.PATH_FETCH) == 12  # ceil(45 / 4), each answered
    assert most[0] == 2
    shared_view(a, b, names)
    assert {o.result.name for o in a.outcomes} == set(names)


async def test_a_failed_batch_ends_the_round_and_the_next_round_completes_it(start_peer: StartPeer) -> None:
    """As before pipelining: the round raises the batch's failure and sends nothing more;
    what was merged stays merged, and the next round reconciles the rest."""
    a, b = await start_peer("a", "127.0.160.17"), await start_peer("b", "127.0.160.18")
    names = [f"svc-{i:02d}" for i in range(40)]
    diverge(a, b, names)
    a.ae.push_bytes = BATCH_BYTES
    pushed, calls = b.ae._pushed, [0]

    def failing_third(body: object, channel: object = None) -> tuple[dict[str, object], list[MergeOutcome]]:
        calls[0] += 1
        if calls[0] == 3:
            raise RuntimeError("the peer's merge failed")  # (a 500 to the pusher)
        return pushed(body, channel)  # type: ignore[arg-type]

    b.ae._pushed = failing_third  # type: ignore[method-assign]
    with pytest.raises(PeerServerError):
        await a.ae.sync_with("b", b.url)
    sent = calls[0]
    assert 3 <= sent <= 3 + a.ae.in_flight - 1  # nothing sent once the failure was seen
    assert sent < 10  # (the round had about ten batches)
    b.ae._pushed = pushed  # type: ignore[method-assign]
    await a.ae.sync_with("b", b.url)
    shared_view(a, b, names)
    assert all(a.store.get(n).location == "a" for n in names)  # type: ignore[union-attr]


def test_in_flight_below_one_is_refused(tmp_path: Path) -> None:
    store = RecordStore.open(tmp_path / "a.db")
    try:
        async def on_outcome(outcome: MergeOutcome) -> None:
            return None

        with pytest.raises(ValueError, match="in_flight"):
            AntiEntropy(store=store, here="a", client=PeerClient(b"x" * 32), on_outcome=on_outcome, in_flight=0)
    finally:
        store.close()



async def test_push_batches_are_small_at_both_ends_and_cover_every_name_once(start_peer: StartPeer) -> None:
    """The peer merges the first batch while this side has nothing to merge, and this side the
    last answer while the peer is done: both ends are smaller (quarter, half, ... half of what
    is left, down to a quarter); no batch exceeds push_bytes; every name once, in order."""
    a = await start_peer("a", "127.0.160.19")
    names = [f"svc-{i:03d}" for i in range(120)]
    for name in names:
        a.write(name, location="b")
    row = len(a.store.packed_many(["svc-000"])[0][1])
    a.ae.push_bytes = 16 * row
    batches = [[name for name, _, _, _ in batch] for batch in a.ae._batches(names)]
    assert [n for batch in batches for n in batch] == names
    sizes = [len(batch) for batch in batches]
    assert sizes[0] <= 4 and sizes[1] <= 8 and max(sizes) <= 16 and sizes[-1] <= 8, sizes
    assert 16 in sizes and sizes[-2] < 16, sizes  # (whole batches in the middle, smaller towards the end)
