"""Moving a revocation list to every member within seconds, with no change anywhere else.

The operator pushes the CA's list to any one agent (`roam ca push`, `POST /v1/trust/crl`); that
agent checks it (the CA's signature, a higher CRL number than its own), applies it, and pushes
it to every live member at once (`POST /peer/v1/trust/crl`), reporting which took it. A member
that was down or cut off then gets it in the background round: every SYNC_EVERY seconds each
agent exchanges lists with one live member in turn, the newer one winning both ways. A list is
only ever taken when the CA signed it and it is newer, so whoever relays it cannot forge or
roll back one; a replayed old list changes nothing.

    POST /peer/v1/trust/crl  {"from", "number": n|nil, "crl": pem-bytes|nil, "certs": [pem-bytes]}
                         ->  {"number": n|nil, "crl": pem-bytes|nil (when ours is newer), "certs": [pem-bytes]}

The same exchange carries the cluster certificates each side knows (`certs`, issue 19): a
record version is checked against its writer's certificate (peer/trust/authorship.py), and a
version relayed by anti-entropy may come from a cluster the receiver never talked to. Each
side keeps only those the CA issued.
"""
from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from aiohttp import web

from peer.api.http import APIError, ConflictError, read_json
from peer.peering.client import PeerClient, PeerError, msgpack_response, read_msgpack
from peer.peering.wire import PeerWireError
from peer.trust.certs import TrustError
from peer.trust.identity import Identity

log = logging.getLogger(__name__)

PATH = "/peer/v1/trust/crl"
SYNC_EVERY = 2.0
PUSH_TIMEOUT = 3.0
OFF = "per-cluster identity is off on this agent (start it with --ca-cert, --cert and --key)"
Members = Callable[[], list[tuple[str, str]]]  # live members but this one: (name, api url)


class TrustSpread:
    def __init__(self, *, identity: Identity | None, client: PeerClient, here: str, members: Members) -> None:
        self.identity = identity
        self.client = client
        self.here = here
        self.members = members
        self._turn = 0

    def _offer(self) -> dict[str, Any]:
        assert self.identity is not None
        rev = self.identity.revocations
        return {"from": self.here, "number": rev.number if rev.pem else None, "crl": rev.pem or None,
                "certs": self.identity.certs.pems()}

    async def push_all(self) -> list[str]:
        """Offer our list to every live member now; the names of those that answered."""
        peers = self.members()
        done = await asyncio.gather(*(self._exchange(n, u, timeout=PUSH_TIMEOUT) for n, u in peers),
                                    return_exceptions=True)
        return sorted(name for (name, _), ok in zip(peers, done) if ok is True)

    async def _exchange(self, name: str, url: str, *, timeout: float = 5.0) -> bool:
        """Send ours, take theirs if newer."""
        assert self.identity is not None
        try:
            reply = await self.client.call(url, PATH, self._offer(), timeout=timeout)
        except PeerError as exc:
            log.debug("revocation list exchange with %s failed: %s", name, exc)
            return False
        crl = reply.get("crl") if isinstance(reply, dict) else None
        certs = reply.get("certs") if isinstance(reply, dict) else None
        if isinstance(certs, list):
            self.identity.certs.add_pems(certs, source=name)
        if isinstance(crl, bytes):
            try:
                self.identity.apply_crl(crl, source=name)
            except TrustError as exc:
                log.warning("revocation list from %s refused: %s", name, exc)
        return True

    async def run(self) -> None:
        """The background round: one live member in turn, every SYNC_EVERY seconds."""
        while True:
            await asyncio.sleep(SYNC_EVERY)
            peers = self.members()
            if self.identity is None or not peers:
                continue
            name, url = peers[self._turn % len(peers)]
            self._turn += 1
            await self._exchange(name, url)

    # -- HTTP ------------------------------------------------------------------------------
    def add_routes(self, app: web.Application) -> None:
        app.router.add_get("/v1/trust", self._get)
        app.router.add_post("/v1/trust/crl", self._post_crl)
        app.router.add_post(PATH, self._on_peer)

    async def _get(self, request: web.Request) -> web.Response:
        if self.identity is None:
            return web.json_response({"mode": "off", "cluster": self.here, "ca": None, "cert": None, "crl": None})
        return web.json_response(self.identity.describe())

    async def _post_crl(self, request: web.Request) -> web.Response:
        """An operator's list: applied here, then pushed to every live member."""
        body = await read_json(request)
        if self.identity is None:
            raise ConflictError(OFF)
        if not isinstance(body, dict) or not isinstance(body.get("crl"), str):
            raise APIError("crl: expected the revocation list as PEM text", field="crl")
        unknown = sorted(set(body) - {"crl"})
        if unknown:
            raise APIError(f"{unknown[0]}: unknown field", field=unknown[0])
        try:
            outcome = self.identity.apply_crl(body["crl"].encode("ascii", "replace"), source="the admin API")
        except TrustError as exc:
            raise APIError(f"crl: {exc}", field="crl", status=422) from exc
        number = self.identity.revocations.number
        if outcome == "older":
            raise ConflictError(f"crl: number is older than the list in force (#{number})", field="crl")
        pushed = await self.push_all()
        return web.json_response({"outcome": outcome, "number": number, "pushed": pushed})

    async def _on_peer(self, request: web.Request) -> web.Response:
        body = await read_msgpack(request)
        if not isinstance(body, dict):
            raise PeerWireError("expected a map")
        if self.identity is None:
            return msgpack_response({"error": OFF}, status=409)
        crl, sender = body.get("crl"), body.get("from")
        if crl is not None:
            if not isinstance(crl, bytes):
                raise PeerWireError("crl: expected bytes")
            try:
                self.identity.apply_crl(crl, source=str(sender))
            except TrustError as exc:
                return msgpack_response({"error": f"crl: {exc}"}, status=422)
        certs = body.get("certs", [])
        if not isinstance(certs, list):
            raise PeerWireError("certs: expected a list of PEM certificates")
        self.identity.certs.add_pems(certs, source=str(sender))
        theirs = body.get("number")
        rev = self.identity.revocations
        newer = rev.pem and (not isinstance(theirs, int) or isinstance(theirs, bool) or rev.number > theirs)
        return msgpack_response({"number": rev.number if rev.pem else None, "crl": rev.pem if newer else None,
                                 "certs": self.identity.certs.pems()})
