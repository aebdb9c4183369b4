"""SerfClient against real `serf agent` processes on loopback."""
from __future__ import annotations

import asyncio
import json
import os
import signal
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from peer.serf import (
    MemberEvent,
    QueryEvent,
    SerfAuthError,
    SerfClient,
    SerfCommandError,
    SerfConnectionError,
    SerfTimeoutError,
    UserEvent,
)
from peer.serf.coordinates import rtt_seconds
from peer.serf.keys import derive_encrypt_key, derive_rpc_auth
from peer.runtime.waiting import wait_until
from tests.serf.conftest import SECRET, Node, StartNode

pytestmark = pytest.mark.integration


async def statuses(node: Node) -> dict[str, str]:
    return {m.name: m.status for m in await node.client.members()}


def process_state(pid: int | None) -> str:
    """The state letter in /proc/PID/stat (R, S, T for stopped, ...)."""
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rsplit(")", 1)[1].split()[0]


def statuses_are(node: Node, expected: dict[str, str]) -> Callable[[], Awaitable[bool]]:
    """A `wait_until` predicate: `node` sees exactly these member statuses."""

    async def check() -> bool:
        return await statuses(node) == expected

    return check


async def joined(start_node: StartNode, *hosts: int, **kw: Any) -> list[Node]:
    nodes = [await start_node(h, **kw) for h in hosts]
    for other in nodes[1:]:
        assert await nodes[0].client.join([other.addr]) == 1
    return nodes


async def test_handshake_and_auth(start_node: StartNode) -> None:
    a = await start_node(11)
    assert [m.name for m in await a.client.members()] == [a.name]
    with pytest.raises(SerfAuthError):
        await SerfClient.connect(a.addr, auth_key="not the key")
    async with await SerfClient.connect(a.addr) as anonymous:  # no auth: refused at first use
        with pytest.raises(SerfAuthError):
            await anonymous.members()


async def test_connect_to_nothing_is_a_connection_error() -> None:
    with pytest.raises(SerfConnectionError) as info:
        await SerfClient.connect("127.0.1.49", timeout=2.0)
    assert isinstance(info.value, ConnectionError)


async def test_members_filtered_and_regex_guard(start_node: StartNode) -> None:
    a, _, _ = await joined(start_node, 11, 12, 13, tags={"tier": "edge"})
    await a.client.tags(add={"tier": "core"})
    edge = await a.client.members_filtered(tags={"tier": "edge"})
    assert sorted(m.name for m in edge) == ["serf-t12", "serf-t13"]
    by_name = await a.client.members_filtered(name="serf-t1[13]", status="alive")
    assert sorted(m.name for m in by_name) == ["serf-t11", "serf-t13"]
    assert await a.client.members_filtered(status="failed") == []
    for bad in ("(", "(?=x)edge"):  # Python-invalid, and valid in Python but not in RE2
        with pytest.raises(SerfCommandError):
            await a.client.members_filtered(tags={"tier": bad})
    assert len(await a.client.members()) == 3  # the connection survived: nothing was sent


async def test_tags_set_and_deleted_are_seen_by_a_peer(start_node: StartNode) -> None:
    a, b = await joined(start_node, 11, 12, tags={"old": "1"})

    async def b_sees_new_tags() -> bool:
        tags = next(m.tags for m in await b.client.members() if m.name == a.name)
        return tags == {"load": "0.42", "api": "7070"}

    await a.client.tags(add={"load": "0.42", "api": "7070"}, delete=["old"])
    await wait_until(b_sees_new_tags, timeout=10, what="b sees a's new tags")
    with pytest.raises(SerfCommandError, match="512"):  # Serf's hard limit for all tags
        await a.client.tags(add={"big": "x" * 600})


async def test_leave_and_join_counts(start_node: StartNode) -> None:
    a, b = await joined(start_node, 11, 12)
    assert await statuses(a) == {a.name: "alive", b.name: "alive"}
    await b.client.leave()
    assert await asyncio.wait_for(b.process.wait(), 10) is not None  # the agent shuts down
    # "left" at once when the leave gossip arrives, else after failure detection (~5 s)
    await wait_until(statuses_are(a, {a.name: "alive", b.name: "left"}),
                     timeout=20, what="a sees b left")
    with pytest.raises(SerfCommandError, match="127.0.1.12"):
        await a.client.join(["127.0.1.12"])  # nobody there any more


async def test_user_event_reaches_another_agents_stream(start_node: StartNode) -> None:
    a, b = await joined(start_node, 11, 12)
    async with await b.client.stream("user:deploy") as events:
        await a.client.user_event("other", b"ignored", coalesce=False)
        await a.client.user_event("deploy", b"\x00svc-1", coalesce=False)
        event = await asyncio.wait_for(events.__anext__(), 10)
    assert isinstance(event, UserEvent)
    assert (event.name, event.payload, event.coalesce) == ("deploy", b"\x00svc-1", False)
    assert event.ltime >= 1
    with pytest.raises(StopAsyncIteration):  # closed: iteration is over
        await events.__anext__()
    assert await b.client.stats()  # stop was answered; the client goes on


async def test_member_events_on_the_stream(start_node: StartNode) -> None:
    a = await start_node(11)
    async with await a.client.stream("member-join") as events:
        b = await start_node(12)
        await a.client.join([b.addr])
        event = await asyncio.wait_for(events.__anext__(), 10)
    assert isinstance(event, MemberEvent) and event.kind == "member-join"
    assert b.name in [m.name for m in event.members]


async def test_query_answered_by_another_agents_streaming_client(start_node: StartNode) -> None:
    a, b, c = await joined(start_node, 11, 12, 13)
    events = await b.client.stream("query")

    async def answer() -> None:
        async for event in events:
            if isinstance(event, QueryEvent) and event.name == "load?":
                await b.client.respond(event.id, b"load=" + event.payload)

    responder = asyncio.create_task(answer())
    try:
        replies = await a.client.query("load?", b"7", request_ack=True, timeout=1.5)
        acks = sorted(r.from_node for r in replies if r.kind == "ack")
        responses = [(r.from_node, r.payload) for r in replies if r.kind == "response"]
        assert acks == [a.name, b.name, c.name]
        assert responses == [(b.name, b"load=7")]
        only_c = await a.client.query("load?", request_ack=True, filter_nodes=[c.name],
                                      timeout=1.0)
        assert [(r.kind, r.from_node) for r in only_c] == [("ack", c.name)]
    finally:
        await events.close()
        await asyncio.wait_for(responder, 5)  # ends when the stream is closed
    with pytest.raises(SerfCommandError, match="No pending queries"):
        await b.client.respond(12345, b"late")


async def test_coordinates_after_gossip(start_node: StartNode) -> None:
    a, b = await joined(start_node, 11, 12)
    assert await a.client.get_coordinate("no-such-node") is None
    theirs = await wait_until(lambda: a.client.get_coordinate(b.name), timeout=20,
                              what="a has a coordinate for b")
    ours = await a.client.get_coordinate(a.name)
    assert ours is not None and len(ours.vec) == len(theirs.vec) == 8
    assert 0 < rtt_seconds(ours, theirs) < 0.1  # loopback: well under 100 ms


async def test_stats(start_node: StartNode) -> None:
    a, _ = await joined(start_node, 11, 12, tags={"tier": "edge"})
    stats = await a.client.stats()
    assert stats["agent"] == {"name": a.name}
    assert stats["serf"]["encrypted"] == "true"
    assert stats["serf"]["members"] == "2"
    assert stats["tags"] == {"tier": "edge"}


async def test_keyring_rotation(start_node: StartNode) -> None:
    a, b = await joined(start_node, 11, 12)
    old = derive_encrypt_key(SECRET)
    new = derive_encrypt_key(b"next secret")
    assert (await a.client.list_keys()).keys == {old: 2}
    installed = await a.client.install_key(new)
    assert (installed.num_nodes, installed.num_err) == (2, 0)
    assert (await b.client.list_keys()).keys == {old: 2, new: 2}
    with pytest.raises(SerfCommandError):
        await a.client.remove_key(old)  # the primary key cannot be removed
    await a.client.use_key(new)
    await a.client.remove_key(old)
    assert (await a.client.list_keys()).keys == {new: 2}
    with pytest.raises(SerfCommandError):
        await a.client.install_key("not base64!")
    # the rotation is persisted in the keyring file and survives a restart
    keyring = a.process.config.data_dir / "keyring.json"
    assert json.loads(keyring.read_text()) == [new]
    await a.client.close()
    await a.process.stop()
    await a.process.start()
    async with await a.process.client() as again:
        assert (await again.list_keys()).keys == {new: 1}
        assert await again.join([b.addr]) == 1


async def test_agent_with_another_key_cannot_join(start_node: StartNode) -> None:
    a = await start_node(11)
    stranger = await start_node(14, secret=b"some other federation")
    with pytest.raises(SerfCommandError, match="decrypt|key"):
        await a.client.join([stranger.addr])
    with pytest.raises(SerfCommandError):
        await stranger.client.join([a.addr])
    assert [m.name for m in await a.client.members()] == [a.name]
    assert [m.name for m in await stranger.client.members()] == [stranger.name]


async def test_killed_agent_fails_pending_calls_then_force_leave(start_node: StartNode) -> None:
    a, b = await joined(start_node, 11, 12)
    events = await b.client.stream("query")
    pending = asyncio.create_task(b.client.query("slow", timeout=20))
    seen = await asyncio.wait_for(events.__anext__(), 10)  # the query is in flight
    assert isinstance(seen, QueryEvent) and seen.name == "slow"
    assert not pending.done()
    assert b.process.pid is not None
    os.kill(b.process.pid, signal.SIGKILL)

    with pytest.raises(SerfConnectionError):
        await asyncio.wait_for(pending, 5)
    with pytest.raises(SerfConnectionError):
        async for _ in events:
            pass
    with pytest.raises(SerfConnectionError):
        await b.client.members()
    assert b.client.closed
    assert await b.process.wait() == -signal.SIGKILL

    await wait_until(statuses_are(a, {a.name: "alive", b.name: "failed"}),
                     timeout=20, what="a marks b failed")
    await a.client.force_leave(b.name)
    await wait_until(statuses_are(a, {a.name: "alive", b.name: "left"}),
                     timeout=10, what="b forced to left")


async def test_stopped_agent_times_out_and_the_late_reply_is_skipped(
    start_node: StartNode,
) -> None:
    a = await start_node(11)
    client = await SerfClient.connect(a.addr, auth_key=derive_rpc_auth(SECRET), timeout=0.5)
    try:
        assert a.process.pid is not None
        os.kill(a.process.pid, signal.SIGSTOP)
        await wait_until(lambda: process_state(a.process.pid) == "T", timeout=5,
                         what="serf agent stopped")
        try:
            with pytest.raises(SerfTimeoutError) as info:
                await client.members()
            assert isinstance(info.value, TimeoutError)
        finally:
            os.kill(a.process.pid, signal.SIGCONT)
        # the late members reply arrives and is dropped; the next call gets its own reply
        assert (await client.stats())["agent"]["name"] == a.name
        assert not client.closed
    finally:
        await client.close()


async def test_the_watched_pattern_selects_exactly_the_business_set(start_node: StartNode) -> None:
    """The agent's fast poll (peer.federation.gossip.watched_pattern) asks Serf for these names only;
    a name that is a prefix of another must not pull the other in."""
    from peer.federation.gossip import watched_pattern

    a, _, _ = await joined(start_node, 11, 12, 13)
    pattern = watched_pattern(["serf-t12", "serf-t11", "serf-t1"], here="serf-t11")
    assert pattern is not None
    assert sorted(m.name for m in await a.client.members_filtered(name=pattern)) == ["serf-t12"]
