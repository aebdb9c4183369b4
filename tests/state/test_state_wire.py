"""The state keeper's peer calls (peer/state/wire.py) over a real signed peer API on loopback:
STATE_COPY answers the copy's view, STATE_RESTORE installs only into the record's own copies,
and bad input is a 4xx naming the field that changes nothing."""
from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from peer.peering.client import PeerClient, PeerRefused, peer_auth_middleware
from peer.records.record import Record
from peer.state.fresh import CopyView, FreshCopies
from peer.state.hook import StateUnreachable
from peer.state.versions import Version
from peer.state.wire import STATE_COPY, STATE_RESTORE, StateHandlers, StatePeerClient
from tests.state.test_keeper import record

SECRET = b"state-wire-secret-0123456789abcdef"


class Services:
    here = "c2"

    def __init__(self, rec: Record) -> None:
        self.rec = rec
        self.fresh = FreshCopies()

    def get(self, name: str) -> Record | None:
        return self.rec if name == self.rec.name else None


class Keeper:
    def __init__(self) -> None:
        self.restored: list[tuple[str, int]] = []
        self.broken = False

    async def restore(self, rec: Record, host: str, port: int) -> Version | None:
        if self.broken:
            raise StateUnreachable("refused")
        self.restored.append((host, port))
        return Version(4, '"4"')


@pytest.fixture
async def served() -> AsyncIterator[tuple[StatePeerClient, PeerClient, Services, Keeper, str]]:
    rec = record(location="c2", standbys=(("c3", "127.0.20.6:1000"),))
    services, keeper = Services(rec), Keeper()
    app = web.Application(middlewares=[peer_auth_middleware(SECRET)])
    StateHandlers(services=services, keeper=keeper).add_routes(app)  # type: ignore[arg-type]
    server = TestServer(app, host="127.0.30.31")
    await server.start_server()
    client = PeerClient(SECRET)
    url = str(server.make_url(""))
    try:
        yield StatePeerClient(client=client, url_of=lambda c: url), client, services, keeper, url
    finally:
        await client.close()
        await server.close()


async def test_copy_view_and_restore(served: tuple[StatePeerClient, PeerClient, Services, Keeper, str]) -> None:
    peers, _, services, keeper, _ = served
    assert await peers.copy_view("c2", "svc") == CopyView(services.fresh.boot, 0, False)
    services.fresh.started("svc")
    assert await peers.copy_view("c2", "svc") == CopyView(services.fresh.boot, 1, True)
    await peers.restore("c2", services.rec, "127.0.20.5:1000")  # the primary
    await peers.restore("c2", services.rec, "127.0.20.6:1000")  # its standby
    assert keeper.restored == [("127.0.20.5", 1000), ("127.0.20.6", 1000)]


async def test_bad_calls_are_refused_and_change_nothing(
        served: tuple[StatePeerClient, PeerClient, Services, Keeper, str]) -> None:
    peers, client, services, keeper, url = served
    cases: list[tuple[str, dict[str, Any], int, str]] = [
        (STATE_COPY, {}, 400, "name"),
        (STATE_COPY, {"name": "other"}, 404, "does not run here"),
        (STATE_RESTORE, {"name": "svc", "incarnation": "1-ab"}, 400, "instance"),
        (STATE_RESTORE, {"name": "svc", "incarnation": "2-zz", "instance": "127.0.20.5:1000"}, 404, "incarnation"),
        (STATE_RESTORE, {"name": "svc", "incarnation": "1-ab", "instance": "127.0.0.1:22"}, 409, "not a copy"),
    ]
    for path, body, status, says in cases:
        with pytest.raises(PeerRefused) as refused:
            await client.call(url, path, body)
        assert refused.value.status == status and says in str(refused.value), (path, body, refused.value)
    keeper.broken = True
    with pytest.raises(Exception) as failed:
        await peers.restore("c2", services.rec, "127.0.20.5:1000")
    assert "not installed" in str(failed.value)
    assert keeper.restored == [] and services.fresh.view("svc") == CopyView(services.fresh.boot, 0, False)
    services.rec = record(location="c1")  # the copy moved away: no view from here
    with pytest.raises(PeerRefused):
        await peers.copy_view("c2", "svc")
