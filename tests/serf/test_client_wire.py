"""SerfClient against a scripted fake agent: the failure paths a real agent rarely shows."""
from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import msgpack
import pytest

from peer.serf import SerfClient, SerfConnectionError, SerfProtocolError

HOST = "127.0.1.30"
FakeAgent = Callable[[bytes], Awaitable[int]]  # bytes to send after the handshake -> port


async def read_request(reader: asyncio.StreamReader, unpacker: msgpack.Unpacker) -> Any:
    """Next request header (bodies skipped: the scripts below only send bodiless commands)."""
    while True:
        for obj in unpacker:
            if isinstance(obj, dict) and "Command" in obj:
                return obj
        unpacker.feed(await reader.read(4096))


@pytest.fixture
async def fake_agent() -> AsyncIterator[FakeAgent]:
    """Start a fake agent that answers the handshake, then sends `after` to the next request
    (with b"SEQ" replaced by that request's Seq) and hangs up."""
    servers: list[asyncio.Server] = []

    async def serve(after: bytes) -> int:
        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            unpacker = msgpack.Unpacker(raw=False)
            hello = await read_request(reader, unpacker)
            writer.write(msgpack.packb({"Seq": hello["Seq"], "Error": ""}))
            request = await read_request(reader, unpacker)
            writer.write(after.replace(b"SEQ", msgpack.packb(request["Seq"])))
            await writer.drain()
            writer.close()

        server = await asyncio.start_server(handle, HOST, 0)
        servers.append(server)
        return int(server.sockets[0].getsockname()[1])

    yield serve
    for server in servers:
        server.close()
        await server.wait_closed()


async def test_garbage_fails_the_call_with_the_protocol_error_as_cause(
    fake_agent: FakeAgent,
) -> None:
    port = await fake_agent(bytes([0xC1]))
    client = await SerfClient.connect(HOST, port, timeout=5)
    with pytest.raises(SerfConnectionError) as info:
        await client.members()
    assert isinstance(info.value.__cause__, SerfProtocolError)
    assert client.closed
    await client.close()


async def test_reply_for_an_unknown_seq_is_a_protocol_error(fake_agent: FakeAgent) -> None:
    port = await fake_agent(msgpack.packb({"Seq": 4242, "Error": ""}))
    client = await SerfClient.connect(HOST, port, timeout=5)
    with pytest.raises(SerfConnectionError) as info:
        await client.stats()
    assert "unknown Seq 4242" in str(info.value.__cause__)
    await client.close()


async def test_dropped_connection_fails_the_pending_call(fake_agent: FakeAgent) -> None:
    port = await fake_agent(b"")  # answers nothing, closes
    client = await SerfClient.connect(HOST, port, timeout=5)
    with pytest.raises(SerfConnectionError, match="closed the RPC connection"):
        await client.members()
    with pytest.raises(SerfConnectionError):
        await client.members()  # and stays closed
    await client.close()


async def test_hand_built_reply_is_parsed(fake_agent: FakeAgent) -> None:
    body = msgpack.packb({"Members": []})
    port = await fake_agent(b"\x82\xa3Seq" + b"SEQ" + b"\xa5Error\xa0" + body)
    client = await SerfClient.connect(HOST, port, timeout=5)
    assert await client.members() == []
    await client.close()


async def test_a_querys_empty_acks_and_responses_are_not_replies(fake_agent: FakeAgent) -> None:
    """Serf's agent may stream the zero values of a query's closed channels until its own
    deadline timer fires (seen: 264 empty acks in one query under load): no node sent them."""
    header = b"\x82\xa3SeqSEQ\xa5Error\xa0"
    records = [{"Type": "ack", "From": "a"}, {"Type": "response", "From": "a", "Payload": b"7"},
               *[{"Type": "ack", "From": ""}] * 3, {"Type": "response", "From": "", "Payload": b""},
               {"Type": "done", "From": ""}]
    port = await fake_agent(header + b"".join(header + msgpack.packb(r) for r in records))
    client = await SerfClient.connect(HOST, port, timeout=5)
    replies = await client.query("load?", b"", request_ack=True, timeout=1.0)
    assert [(r.kind, r.from_node, r.payload) for r in replies] == [("ack", "a", b""), ("response", "a", b"7")]
    await client.close()
