"""`TrustSpread.exchanged_since`: what lets a welcome skip a certificate exchange that another
task (the catch-up, at start-up) began after the member came alive (peer.agent._welcome)."""
from __future__ import annotations

import time
from types import SimpleNamespace
from typing import Any

import pytest

from peer.peering.client import PeerError
from peer.trust.spread import TrustSpread


class FakeClient:
    def __init__(self) -> None:
        self.calls = 0
        self.fail = False

    async def call(self, url: str, path: str, payload: object, *, timeout: float = 5.0) -> object:
        self.calls += 1
        if self.fail:
            raise PeerError(f"{url}: connection refused")
        return {"from": "c2", "number": None, "crl": None, "certs": [], "have": []}


def _spread(client: FakeClient) -> TrustSpread:
    identity: Any = SimpleNamespace(
        revocations=SimpleNamespace(pem=None, number=0),
        certs=SimpleNamespace(keys=lambda: [], pems_not_in=lambda keys: [], add_pems=lambda pems, source: None))
    return TrustSpread(identity=identity, client=client, here="c1",  # type: ignore[arg-type]
                       members=lambda: [("c2", "https://127.0.0.2:7947")])


@pytest.mark.asyncio
async def test_an_exchange_counts_from_when_it_began_and_only_once_it_completed() -> None:
    client = FakeClient()
    spread = _spread(client)
    before = time.monotonic()
    assert not spread.exchanged_since("c2", before)
    assert await spread.exchange_with("c2")
    assert spread.exchanged_since("c2", before)
    assert not spread.exchanged_since("c2", time.monotonic())  # came alive again after it: exchange anew
    assert not spread.exchanged_since("c3", before)


@pytest.mark.asyncio
async def test_a_failed_exchange_does_not_count() -> None:
    client = FakeClient()
    client.fail = True
    spread = _spread(client)
    before = time.monotonic()
    assert not await spread.exchange_with("c2")
    assert client.calls == 1 and not spread.exchanged_since("c2", before)
    assert await spread.push_all() == []
    assert not spread.exchanged_since("c2", before)
