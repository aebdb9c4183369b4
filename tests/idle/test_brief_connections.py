"""The peer client keeps connections only to the peers this cluster has business with
(peer.peering.client: IDLE_CLOSE against BRIEF_CLOSE): real aiohttp servers on 127.0.136.1-2."""
from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pytest
from aiohttp import web

from peer.peering import client as peering
from peer.peering.client import PeerClient, msgpack_response, peer_auth_middleware
from peer.runtime.waiting import wait_until

SECRET = b"federation-secret-for-tests-0136"


@dataclass
class Server:
    url: str = ""
    connections: list[asyncio.BaseTransport] = field(default_factory=list)  # distinct, in order of first use

    def closed(self, index: int) -> bool:
        return self.connections[index].is_closing()


@pytest.fixture
async def servers() -> AsyncIterator[list[Server]]:
    made: list[tuple[Server, web.AppRunner]] = []
    for ip in ("127.0.136.1", "127.0.136.2"):
        server = Server()

        async def echo(request: web.Request, server: Server = server) -> web.Response:
            assert request.transport is not None
            if request.transport not in server.connections:
                server.connections.append(request.transport)
            return msgpack_response({"ok": True})

        app = web.Application(middlewares=[peer_auth_middleware(SECRET)])
        app.router.add_post("/peer/v1/echo", echo)
        runner = web.AppRunner(app)
        await runner.setup()
        await web.TCPSite(runner, ip, 0).start()
        host, port = runner.addresses[0][:2]
        server.url = f"http://{host}:{port}"
        made.append((server, runner))
    yield [server for server, _ in made]
    for _, runner in made:
        await runner.cleanup()


async def test_connections_to_other_peers_close_soon_and_to_business_peers_last(servers: list[Server]) -> None:
    business, other = servers
    client = PeerClient(SECRET, lasting=lambda url: url == business.url)
    try:
        for _ in range(2):  # calls one after the other share a connection either way
            await client.call(business.url, "/peer/v1/echo", {})
            await client.call(other.url, "/peer/v1/echo", {})
        assert len(business.connections) == 1 and len(other.connections) == 1
        started = time.monotonic()
        await wait_until(lambda: other.closed(0), timeout=peering.IDLE_CLOSE / 2,
                         what="the idle connection to a peer without business closed")
        assert time.monotonic() - started < peering.IDLE_CLOSE / 2
        assert not business.closed(0)  # still pooled once the brief one has gone
        await client.call(business.url, "/peer/v1/echo", {})
        await client.call(other.url, "/peer/v1/echo", {})
        assert len(business.connections) == 1  # reused
        assert len(other.connections) == 2  # a new connection
    finally:
        await client.close()
