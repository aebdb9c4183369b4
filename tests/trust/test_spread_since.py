"""`TrustSpread.exchanged_since`: what lets a welcome skip a certificate exchange that another
task (the catch-up, at start-up) began after the member came alive (peer.agent._welcome)."""
from __future__ import annotations

import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from peer.peering.client import PeerError
from peer.trust import ca
from peer.trust.authorship import CertBook
from peer.trust.certs import load_cert
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


class Wire:
    """A's client, answered by B's `answer` in process (the HTTP layer is peer/peering's)."""

    def __init__(self) -> None:
        self.to: TrustSpread | None = None
        self.calls = 0

    async def call(self, url: str, path: str, payload: object, *, timeout: float = 5.0) -> object:
        assert self.to is not None
        self.calls += 1
        status, reply = self.to.answer(payload)
        assert status == 200, reply
        return reply


@pytest.fixture
def books(tmp_path: Path) -> tuple[CertBook, CertBook, dict[str, bytes]]:
    ca.init(tmp_path / "ca")
    pems = {}
    for name in ("c1", "c2"):
        ca.issue(tmp_path / "ca", cluster=name, out=tmp_path / name)
        pems[name] = (tmp_path / name / "cluster.pem").read_bytes()
    ca_cert = load_cert((tmp_path / "ca" / "ca.pem").read_bytes(), what="ca")
    return CertBook(ca_cert), CertBook(ca_cert), pems


def _real(here: str, book: CertBook, wire: Wire, peer: str) -> TrustSpread:
    identity: Any = SimpleNamespace(revocations=SimpleNamespace(pem=None, number=0), certs=book)
    return TrustSpread(identity=identity, client=wire, here=here,  # type: ignore[arg-type]
                       members=lambda: [(peer, f"https://{peer}.example:7947")])


@pytest.mark.asyncio
async def test_an_exchange_the_peer_made_counts_once_both_sides_hold_the_same(
        books: tuple[CertBook, CertBook, dict[str, bytes]]) -> None:
    """The welcome's skip (peer.agent._welcome) also covers an exchange the member made with us:
    at start-up each pair's two catch-ups and two welcomes made it up to four times."""
    book1, book2, pems = books
    book1.add_pems([pems["c1"]], source="test")
    book2.add_pems([pems["c2"]], source="test")
    wire1, wire2 = Wire(), Wire()
    c1, c2 = _real("c1", book1, wire1, "c2"), _real("c2", book2, wire2, "c1")
    wire1.to, wire2.to = c2, c1
    before = time.monotonic()
    assert await c1.exchange_with("c2")
    assert wire1.calls == 2  # c2 lacked c1's certificate: the second call carried it
    assert sorted(book1.keys()) == sorted(book2.keys())
    assert c2.exchanged_since("c1", before)  # marked at the second call, when nothing was left to carry
    assert c1.exchanged_since("c2", before)
    later = time.monotonic()
    assert await c1.exchange_with("c2") and wire1.calls == 3  # in agreement: one call, marked at once
    assert c2.exchanged_since("c1", later)


@pytest.mark.asyncio
async def test_an_incoming_exchange_that_still_owes_us_certificates_does_not_count(
        books: tuple[CertBook, CertBook, dict[str, bytes]]) -> None:
    book1, book2, pems = books
    book1.add_pems([pems["c1"], pems["c2"]], source="test")
    c2 = _real("c2", book2, Wire(), "c1")
    before = time.monotonic()
    status, reply = c2.answer({"from": "c1", "number": None, "certs": [], "have": book1.keys()})
    assert status == 200 and reply["certs"] == []  # c2 holds nothing c1 lacks, but lacks c1's two
    assert not c2.exchanged_since("c1", before)
    status, reply = c2.answer({"from": "c1", "number": None, "certs": [], "have": None})  # an old agent
    assert not c2.exchanged_since("c1", before)
    c2.answer({"from": "c1", "number": None, "certs": [pems["c1"], pems["c2"]], "have": book1.keys()})
    assert c2.exchanged_since("c1", before)

