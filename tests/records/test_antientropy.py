"""Anti-entropy between real aiohttp servers on loopback (127.0.3.x), each with its own store."""
from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from peer.peering.client import (
    PeerClient,
    PeerRefused,
    PeerUnreachable,
    peer_auth_middleware,
)
from peer.peering.wire import CONTENT_TYPE, decode, encode, sign
from peer.records import messages as msg
from peer.records.antientropy import AntiEntropy
from peer.records.batch import Reclocked
from peer.records.merge import (
    AdoptLocalCopy,
    Forget,
    MergeOutcome,
    Reroute,
    StopLocalCopy,
)
from peer.records.record import Record, State, tombstone_of
from peer.records.store import RecordStore

SECRET = b"federation-secret-for-tests-0001"


@dataclass
class Peer:
    name: str
    store: RecordStore
    ae: AntiEntropy
    client: PeerClient
    runner: web.AppRunner
    url: str
    outcomes: list[MergeOutcome] = field(default_factory=list)

    def write(self, name: str, *, home: str | None = None, location: str | None = None, **changes: object) -> Record:
        previous = self.store.get(name)
        if previous is None or previous.tombstone:
            base = Record(name=name, home=home or self.name, location=location or self.name, state=State.RUNNING,
                          digest="d", descriptor=b"\x81\xa4port\xcd\x1f\x90", endpoint="127.0.3.1:30000")
        else:
            base = replace(previous, location=location or previous.location)
        return self.store.put_local(replace(base, **changes), here=self.name, now=time.time())  # type: ignore[arg-type]

    def actions(self, name: str) -> list[object]:
        return [a for o in self.outcomes if o.result.name == name for a in o.actions]


StartPeer = Callable[..., Awaitable[Peer]]


@pytest.fixture
async def start_peer(tmp_path: Path) -> AsyncIterator[StartPeer]:
    peers: list[Peer] = []

    async def start(name: str, ip: str, *, secret: bytes = SECRET) -> Peer:
        store = RecordStore.open(tmp_path / f"{name}.db")
        client = PeerClient(secret)
        outcomes: list[MergeOutcome] = []

        async def on_outcome(outcome: MergeOutcome) -> None:
            outcomes.append(outcome)

        ae = AntiEntropy(store=store, here=name, client=client, on_outcome=on_outcome)
        app = web.Application(middlewares=[peer_auth_middleware(secret)], client_max_size=8 * 1024 * 1024)
        ae.add_routes(app)
        runner = web.AppRunner(app)
        await runner.setup()
        await web.TCPSite(runner, ip, 0).start()
        host, port = runner.addresses[0][:2]
        peer = Peer(name, store, ae, client, runner, f"http://{host}:{port}", outcomes)
        peers.append(peer)
        return peer

    yield start
    for peer in peers:
        await peer.client.close()
        await peer.runner.cleanup()
        peer.store.close()


def shared_view(a: Peer, b: Peer, names: list[str]) -> None:
    for name in names:
        assert a.store.get(name) is not None
        assert a.store.get(name) == b.store.get(name), name


async def test_divergent_records_agree_after_one_round_and_private_ones_stay_home(start_peer: StartPeer) -> None:
    a, b = await start_peer("a", "127.0.3.1"), await start_peer("b", "127.0.3.2")
    a.write("web", location="b", instance="127.0.3.2:8000")  # AR of a, FR of b: b lacks it
    a.write("api")  # LR of a: nothing to do with b
    b.write("db", location="a")  # abroad at a: a lacks it
    b.write("solo")
    cache = a.write("cache", location="b")
    b.store.apply_remote(cache, here="b")
    a.write("cache", state=State.MIGRATING)  # b's copy is stale
    stats = await a.ae.sync_with("b", b.url)
    shared_view(a, b, ["web", "db", "cache"])
    assert b.store.get("api") is None and a.store.get("solo") is None
    assert (stats.differing, stats.pushed, stats.fetched, stats.applied) == (3, 2, 1, 1)
    assert stats.requests == 4 and stats.bytes_sent > 0 and stats.bytes_received > 0  # summary, digests, push, fetch
    assert b.actions("web") == [AdoptLocalCopy("web")] and a.actions("db") == [AdoptLocalCopy("db")]
    again = await b.ae.sync_with("a", a.url)
    assert (again.differing, again.pushed, again.fetched, again.requests) == (0, 0, 0, 1)


async def test_concurrent_update_reconciles_to_the_hc_view_on_both_sides(start_peer: StartPeer) -> None:
    a, b = await start_peer("a", "127.0.3.3"), await start_peer("b", "127.0.3.4")
    b.store.apply_remote(a.write("web", location="b", instance="127.0.3.4:8000"), here="b")
    # Partition: the HC redeploys at home (fail-safe) while the AC restarts its copy twice.
    winner = a.write("web", location="a", instance="127.0.3.3:8001")
    b.write("web", instance="127.0.3.4:8002")
    b.write("web", state=State.MIGRATING)
    stats = await b.ae.sync_with("a", a.url)  # the loser starts the round
    shared_view(a, b, ["web"])
    final = a.store.get("web")
    assert final is not None and (final.location, final.instance) == ("a", "127.0.3.3:8001")
    assert final.written == winner.written  # the HC's write won
    assert b.actions("web") == [StopLocalCopy("web"), Forget("web")]  # the losing copy is cleaned up
    assert [o.conflict for o in a.outcomes] == [True] and a.actions("web") == []
    assert (stats.pushed, stats.returned) == (1, 1)


@pytest.mark.parametrize("initiator", ["hc", "stale"])
async def test_a_stale_abroad_copy_learns_it_lost_the_service(start_peer: StartPeer, initiator: str) -> None:
    a, b = await start_peer("a", "127.0.3.5"), await start_peer("b", "127.0.3.6")
    b.store.apply_remote(a.write("web", location="b", instance="127.0.3.6:8000"), here="b")
    a.write("web", location="c", instance="127.0.3.7:8000")  # moved on to c while b was cut off
    if initiator == "hc":
        await a.ae.sync_with("b", b.url)  # b is not interested by a's view, but b names it
    else:
        await b.ae.sync_with("a", a.url)
    shared_view(a, b, ["web"])
    assert b.actions("web") == [StopLocalCopy("web"), Forget("web")]


async def test_delete_propagates_no_resurrection_and_tombstones_are_collected(start_peer: StartPeer) -> None:
    a, b = await start_peer("a", "127.0.3.8"), await start_peer("b", "127.0.3.9")
    live = a.write("web", location="b", instance="127.0.3.9:8000")
    b.store.apply_remote(live, here="b")
    dead = a.store.put_local(tombstone_of(live), here="a", now=time.time())
    await b.ae.sync_with("a", a.url)  # b pushes its live copy first: it must not come back
    assert a.store.get("web") == dead and b.store.get("web") == dead
    assert b.actions("web") == [StopLocalCopy("web"), Forget("web")]
    assert a.store.apply_remote(live, here="a").result == dead  # a stale peer later: still dead
    assert b.store.acked_by("web") == {"a"}
    await a.ae.sync_with("b", b.url)
    assert a.store.acked_by("web") == {"b"}
    now = time.time()
    assert a.store.gc_tombstones(here="a", now=now, ttl=3600) == ["web"]
    assert b.store.gc_tombstones(here="b", now=now, ttl=3600) == ["web"]


async def test_home_gets_a_reroute_when_the_instance_moves(start_peer: StartPeer) -> None:
    a, b = await start_peer("a", "127.0.3.10"), await start_peer("b", "127.0.3.11")
    b.store.apply_remote(a.write("web", location="b"), here="b")
    b.write("web", instance="127.0.3.11:8123", state=State.RUNNING)  # the AC reports its instance
    await b.ae.sync_with("a", a.url)
    assert a.actions("web") == [Reroute("web", "127.0.3.11:8123")]


async def test_wrong_secret_gets_401(start_peer: StartPeer) -> None:
    a = await start_peer("a", "127.0.3.12")
    async with PeerClient(b"not-the-federation-secret-at-all") as client:
        with pytest.raises(PeerRefused) as info:
            await client.call(a.url, msg.PATH_FETCH, msg.fetch_request(sender="x", names=["web"]))
    assert info.value.status == 401 and "signature" in info.value.message


async def test_replayed_request_is_refused(start_peer: StartPeer) -> None:
    a = await start_peer("a", "127.0.3.13")
    body = encode(msg.fetch_request(sender="b", names=["web"]))
    headers = sign(SECRET, method="POST", path=msg.PATH_FETCH, body=body, now=time.time())
    headers["Content-Type"] = CONTENT_TYPE
    async with aiohttp.ClientSession() as session:
        async with session.post(a.url + msg.PATH_FETCH, data=body, headers=headers) as first:
            assert first.status == 200 and decode(await first.read()) == {"records": []}
        async with session.post(a.url + msg.PATH_FETCH, data=body, headers=headers) as replay:
            assert replay.status == 401
            assert "replayed" in decode(await replay.read())["error"]
        async with session.post(a.url + msg.PATH_FETCH, data=body) as unsigned:
            assert unsigned.status == 401


async def test_malformed_bodies_get_400_naming_the_field(start_peer: StartPeer) -> None:
    a = await start_peer("a", "127.0.3.14")
    with pytest.raises(PeerRefused) as info:
        await a.client.call(a.url, msg.PATH_PUSH, {"from": "b", "records": [{"name": "web"}]})
    assert info.value.status == 400 and "records[0]" in info.value.message
    with pytest.raises(PeerRefused) as info:
        await a.client.call(a.url, msg.PATH_DIGESTS, {"digests": {}})
    assert info.value.status == 400 and "from" in info.value.message
    with pytest.raises(PeerRefused) as info:
        await a.client.call(a.url, "/peer/v1/nope", {})
    assert info.value.status == 404


async def test_fetch_returns_only_records_the_asker_is_interested_in(start_peer: StartPeer) -> None:
    a = await start_peer("a", "127.0.3.15")
    a.write("api")
    a.write("web", location="b")
    reply = msg.parse_records_reply(
        await a.client.call(a.url, msg.PATH_FETCH, msg.fetch_request(sender="b", names=["api", "web"])))
    assert [r.name for r in reply] == ["web"]


async def test_unreachable_peer_raises_a_connection_error() -> None:
    async with PeerClient(SECRET) as client:
        with pytest.raises(PeerUnreachable) as info:
            await client.call("http://127.0.3.16:9", msg.PATH_FETCH, {}, timeout=2.0)
    assert isinstance(info.value, ConnectionError)


async def test_a_former_location_that_forgot_the_record_acknowledges_its_tombstone(start_peer: StartPeer) -> None:
    a, b, c = [await start_peer(n, ip) for n, ip in (("a", "127.0.3.17"), ("b", "127.0.3.18"), ("c", "127.0.3.19"))]
    b.store.apply_remote(a.write("web", location="b"), here="b")
    b.write("web", instance="127.0.3.18:8000")  # b reports its instance: it enters the clock
    await b.ae.sync_with("a", a.url)
    a.write("web", location="c", instance=None)  # migrated on to c
    await a.ae.sync_with("c", c.url)
    await b.ae.sync_with("a", a.url)
    assert b.actions("web") == [StopLocalCopy("web"), Forget("web")]
    b.store.drop("web")  # the agent's answer to Forget
    live = a.store.get("web")
    assert live is not None
    a.store.put_local(tombstone_of(live), here="a", now=time.time())
    await a.ae.sync_with("c", c.url)
    assert a.store.gc_tombstones(here="a", now=time.time(), ttl=3600) == []  # b has not answered yet
    in_sync: list[str] = []
    a.ae.on_in_sync = in_sync.append
    assert (await b.ae.sync_with("a", a.url)).requests == 1  # b's summary matches: it holds nothing of a's
    assert in_sync == []  # but a's own round would not stop there: it awaits b's acknowledgement
    stats = await a.ae.sync_with("b", b.url)
    assert (stats.pushed, stats.fetched) == (0, 0) and b.store.get("web") is None
    assert a.store.acked_by("web") == {"b", "c"}
    assert a.store.gc_tombstones(here="a", now=time.time(), ttl=3600) == ["web"]


async def test_peers_in_sync_settle_with_one_summary_request(start_peer: StartPeer) -> None:
    a, b = await start_peer("a", "127.0.3.1"), await start_peer("b", "127.0.3.2")
    for name in ("web", "api"):
        b.store.apply_remote(a.write(name, location="b"), here="b")
    a.write("solo")  # a's own: not part of what b is interested in
    in_sync: list[str] = []
    b.ae.on_in_sync = in_sync.append  # the agent's welcome skips its own round with a peer so found
    stats = await a.ae.sync_with("b", b.url)
    assert (stats.requests, stats.compared, stats.differing) == (1, 2, 0)
    assert in_sync == ["a"]
    a.write("web", state=State.MIGRATING)  # one difference: the summary fails, the digests find it
    stats = await a.ae.sync_with("b", b.url)
    assert (stats.requests, stats.differing, stats.pushed) == (3, 1, 1)
    assert in_sync == ["a"]  # a round that had to settle something is not a match
    shared_view(a, b, ["web", "api"])
    assert (await a.ae.sync_with("b", b.url)).requests == 1


def test_summary_is_order_independent_and_sees_any_change() -> None:
    digests = {"a": b"1" * 8, "b": b"2" * 8}
    assert msg.summary_of(digests) == msg.summary_of(dict(reversed(digests.items())))
    assert msg.summary_of(digests) != msg.summary_of({**digests, "b": b"3" * 8})
    assert msg.summary_of({"ab": b"1" * 8}) != msg.summary_of({"a": b"b" + b"1" * 7})


async def test_batches_merge_off_the_event_loop_and_the_round_still_agrees(start_peer: StartPeer) -> None:
    """Issues 16 and 19: the decoding, checking and merging of a batch run in a worker thread
    on both sides (the loop keeps serving meanwhile); the round's outcome is unchanged."""
    import threading

    a, b = await start_peer("a", "127.0.150.11"), await start_peer("b", "127.0.150.12")
    names = [f"svc-{i}" for i in range(300)]
    for name in names:  # shared, then changed on both sides: every one a conflict
        b.store.apply_remote(a.write(name, location="b", instance="127.0.150.12:8000"), here="b")
        a.write(name, location="a", instance="127.0.150.11:8001")
        b.write(name, instance="127.0.150.12:8002")
    threads: set[str] = set()
    for peer in (a, b):
        apply = peer.store.apply_remote_many

        def recorded(records: object, *, here: str, apply: Callable[..., list[MergeOutcome]] = apply,
                     **kwargs: object) -> list[MergeOutcome]:
            threads.add(threading.current_thread().name)
            return apply(records, here=here, **kwargs)

        peer.store.apply_remote_many = recorded  # type: ignore[method-assign]
    stats = await a.ae.sync_with("b", b.url)
    assert stats.conflicts >= 300 and threads and threading.current_thread().name not in threads
    shared_view(a, b, names)
    assert len(b.outcomes) >= 300 and len(a.outcomes) >= 300  # every outcome reached on_outcome


async def test_a_batch_merging_when_its_round_is_cancelled_still_delivers_its_outcomes(tmp_path: Path) -> None:
    """Once a batch is committed its actions must run: cancelling the round while the worker
    thread merges does not lose the outcomes."""
    import asyncio
    import threading

    from peer.runtime.waiting import wait_until

    store = RecordStore.open(tmp_path / "a.db")
    seen: list[MergeOutcome] = []

    async def on_outcome(outcome: MergeOutcome) -> None:
        seen.append(outcome)

    ae = AntiEntropy(store=store, here="a", client=PeerClient(SECRET), on_outcome=on_outcome)
    started, release = threading.Event(), threading.Event()
    version = Record(name="web", home="b", location="a", state=State.RUNNING, digest="d", descriptor=b"")

    def work() -> tuple[None, list[MergeOutcome]]:
        started.set()
        release.wait(10)
        return None, store.apply_remote_many([version], here="a")

    try:
        task = asyncio.ensure_future(ae._off_loop(work))
        await asyncio.to_thread(started.wait, 10)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        release.set()
        await wait_until(lambda: len(seen) == 1, timeout=10)
        assert seen[0].result == store.get("web") and AdoptLocalCopy("web") in seen[0].actions
    finally:
        release.set()
        await ae.client.close()
        store.close()


async def test_a_push_that_wins_its_conflicts_is_answered_by_clocks_alone(start_peer: StartPeer) -> None:
    """Issue 16: where the server's merge keeps the pushed content under a joined clock, it
    answers the clock (and stamps) only; the pusher rebuilds that version from the row it
    pushed, also when its row changed meanwhile, and both sides agree. A push without
    "clocks" (an older pusher) gets every version whole."""
    a, b = await start_peer("a", "127.0.150.13"), await start_peer("b", "127.0.150.14")
    names = ["api", "db", "web"]
    for name in names:
        b.store.apply_remote(a.write(name, location="b", instance="127.0.150.14:8000"), here="b")
        a.write(name, location="a", instance="127.0.150.13:8001")  # the HC's view: it wins
        b.write(name, instance="127.0.150.14:8002")
    pushed = a.store.packed_many(names)
    reply = await a.client.call(b.url, msg.PATH_PUSH, msg.push_request(
        sender="a", records=[p for _, p, _, _ in pushed], clocks=True))
    assert msg.parse_records_reply(reply) == [] and [n for n, _, _ in msg.parse_clocks(reply)] == names
    # The answer arrives after "web" changed here again: the clock joins the pushed content,
    # and that version merges with the newer local one.
    newer = a.write("web", instance="127.0.150.13:8003")
    rows = {n: (p, d) for n, p, d, _ in pushed}
    items = [Reclocked(n, rows[n][0], rows[n][1], clock, stamps) for n, clock, stamps in msg.parse_clocks(reply)]
    a.store.apply_remote_many(items, here="a")
    for name in names:
        assert a.store.get(name) is not None
    assert a.store.get("web").instance == newer.instance  # type: ignore[union-attr]
    await a.ae.sync_with("b", b.url)
    shared_view(a, b, names)
    # An older pusher: the same kind of answer comes whole.
    a.write("api", instance="127.0.150.13:8004")
    b.write("api", instance="127.0.150.14:8005")
    old_style = await a.client.call(b.url, msg.PATH_PUSH, msg.push_request(
        sender="a", records=[p for _, p, _, _ in a.store.packed_many(["api"])]))
    assert "clocks" not in old_style  # type: ignore[operator]
    assert [r.name for r in msg.parse_records_reply(old_style)] == ["api"]
