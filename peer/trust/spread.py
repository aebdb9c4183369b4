"""Moving a revocation list to every member within seconds, with no change anywhere else.

The operator pushes the CA's list to any one agent (`roam ca push`, `POST /v1/trust/crl`); that
agent checks it (the CA's signature, a higher CRL number than its own), applies it, and pushes
it to every live member at once (`POST /peer/v1/trust/crl`), reporting which took it. A member
that was down or cut off gets it when it comes back: each agent exchanges with a member the
moment Serf sees it alive again, and, for whatever that missed, in a background round every
SYNC_EVERY seconds with one live member in turn; the newer list wins both ways. A list is
only ever taken when the CA signed it and it is newer, so whoever relays it cannot forge or
roll back one; a replayed old list changes nothing.

    POST /peer/v1/trust/crl  {"from", "number": n|nil, "crl": pem-bytes|nil, "certs": [pem-bytes],
                              "have": [key-bytes]}
                         ->  {"number": n|nil, "crl": pem-bytes|nil (when ours is newer),
                              "certs": [pem-bytes the asker lacks], "have": [key-bytes]}

The same exchange carries the cluster certificates each side knows (`certs`, issue 19): a
record version is checked against its writer's certificate (peer/trust/authorship.py), and a
version relayed by anti-entropy may come from a cluster the receiver never talked to. Each
side keeps only those the CA issued. Certificates cross only towards a side that lacks them:
each side sends the short keys of those it holds (`have`, 8 bytes each), the answer carries
the certificates the asker lacks, and the asker sends the ones the answerer lacks (and its list,
if the answerer's is older) in a second call, made only then. An asker that sends no `have`
gets every certificate.
"""
from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

from aiohttp import web

from peer.api.http import APIError, ConflictError, read_json
from peer.peering.client import PeerClient, PeerError, msgpack_response, read_msgpack
from peer.peering.wire import PeerWireError
from peer.runtime.fanout import FanOut
from peer.trust.certs import TrustError
from peer.trust.identity import Identity

log = logging.getLogger(__name__)

PATH = "/peer/v1/trust/crl"
# The background round only repairs what the pushes and the exchange at a member's return
# (Agent._on_status_change) missed: rare, so rare. At 2 s, with every certificate in each
# exchange, it cost 7.8 KB/s per agent at 5 agents and grew with n (issue 18).
SYNC_EVERY = 30.0
PUSH_TIMEOUT = 3.0
OFF = "per-cluster identity is off on this agent (start it with --ca-cert, --cert and --key)"
Members = Callable[[], list[tuple[str, str]]]  # live members but this one: (name, api url)


class TrustSpread:
    def __init__(self, *, identity: Identity | None, client: PeerClient, here: str, members: Members,
                 fanout: FanOut | None = None) -> None:
        self.identity = identity
        self.fanout = fanout or FanOut(8)  # the agent passes its own, shared with catch-up and welcomes
        self.client = client
        self.here = here
        self.members = members
        self._turn = 0
        self._exchanged_from: dict[str, float] = {}  # name -> when the last completed exchange began

    def _offer(self, *, crl: bool, certs: list[bytes] | None = None) -> dict[str, Any]:
        """What this agent says in an exchange: its list's number (the list itself only when
        `crl`), the keys of the certificates it holds, and `certs` a peer was found to lack."""
        assert self.identity is not None
        rev = self.identity.revocations
        return {"from": self.here, "number": rev.number if rev.pem else None,
                "crl": rev.pem if crl and rev.pem else None, "certs": certs or [],
                "have": self.identity.certs.keys()}

    async def push_all(self) -> list[str]:
        """Offer our list to every live member now; the names of those that answered."""
        peers = self.members()
        if self.identity is None or not peers:
            return []
        done = await self.fanout.each(peers, lambda peer: self._exchange(*peer, crl=True, timeout=PUSH_TIMEOUT))
        return sorted(name for (name, _), ok in zip(peers, done) if ok is True)

    async def exchange_with(self, name: str) -> bool:
        """One exchange with `name` now (it came alive: it may have missed a list or a
        certificate while it was away); False if it is unknown or did not answer."""
        url = dict(self.members()).get(name)
        return self.identity is not None and url is not None and await self._exchange(name, url, crl=False)

    def exchanged_since(self, name: str, since: float) -> bool:
        """Whether an exchange with `name` that began at or after `since` (monotonic) completed:
        one this agent made, or one `name` made that left both sides holding the same (`_on_peer`)."""
        return self._exchanged_from.get(name, float("-inf")) >= since

    async def _exchange(self, name: str, url: str, *, crl: bool, timeout: float = 5.0) -> bool:
        """Compare with `name`, take what it has and we lack; then send it what it lacks, in a
        second call only when it lacks something (at idle, one small call each way)."""
        assert self.identity is not None
        started = time.monotonic()
        try:
            reply = await self.client.call(url, PATH, self._offer(crl=crl), timeout=timeout)
            if not isinstance(reply, dict):
                return False
            self._take(reply, source=name)
            their_keys = reply.get("have")
            lacking = self.identity.certs.pems_not_in(their_keys) if isinstance(their_keys, list) else []
            behind = not crl and self._behind(reply.get("number"))  # our list was not in this call
            if lacking or behind:
                await self.client.call(url, PATH, self._offer(crl=behind, certs=lacking), timeout=timeout)
        except PeerError as exc:
            log.debug("revocation list exchange with %s failed: %s", name, exc)
            return False
        self._exchanged_from[name] = max(started, self._exchanged_from.get(name, started))
        return True

    def _behind(self, theirs: object) -> bool:
        """A peer whose list is older than ours (or who has none)."""
        assert self.identity is not None
        rev = self.identity.revocations
        return bool(rev.pem) and (not isinstance(theirs, int) or isinstance(theirs, bool) or rev.number > theirs)

    def _take(self, message: dict[Any, Any], *, source: str) -> None:
        """Keep the certificates and the revocation list a peer sent, if the CA issued them."""
        assert self.identity is not None
        certs = message.get("certs")
        if isinstance(certs, list):
            self.identity.certs.add_pems(certs, source=source)
        crl = message.get("crl")
        if isinstance(crl, bytes):
            try:
                self.identity.apply_crl(crl, source=source)
            except TrustError as exc:
                log.warning("revocation list from %s refused: %s", source, exc)

    async def run(self) -> None:
        """The background round, for what an exchange at a member's return missed: one live
        member in turn, every SYNC_EVERY seconds."""
        while True:
            await asyncio.sleep(SYNC_EVERY)
            peers = self.members()
            if self.identity is None or not peers:
                continue
            name, url = peers[self._turn % len(peers)]
            self._turn += 1
            await self._exchange(name, url, crl=False)

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
        status, reply = self.answer(await read_msgpack(request))
        return msgpack_response(reply, status=status)

    def answer(self, body: object) -> tuple[int, dict[str, Any]]:
        """A peer's exchange call, decoded: (HTTP status, reply); PeerWireError if malformed."""
        if not isinstance(body, dict):
            raise PeerWireError("expected a map")
        if self.identity is None:
            return 409, {"error": OFF}
        crl, sender = body.get("crl"), body.get("from")
        if crl is not None:
            if not isinstance(crl, bytes):
                raise PeerWireError("crl: expected bytes")
            try:
                self.identity.apply_crl(crl, source=str(sender))
            except TrustError as exc:
                return 422, {"error": f"crl: {exc}"}
        certs, have = body.get("certs", []), body.get("have")
        if not isinstance(certs, list):
            raise PeerWireError("certs: expected a list of PEM certificates")
        if have is not None and not isinstance(have, list):
            raise PeerWireError("have: expected a list of certificate keys")
        self.identity.certs.add_pems(certs, source=str(sender))
        rev = self.identity.revocations
        # An agent that sends no `have` (before issue 18's change) gets every certificate, as it did.
        lacking = self.identity.certs.pems() if have is None else self.identity.certs.pems_not_in(have)
        behind = self._behind(body.get("number"))
        if isinstance(sender, str) and sender != self.here and have is not None and not lacking and not behind \
                and body.get("number") == (rev.number if rev.pem else None) \
                and not self.identity.certs.lacks_any(have):
            # Both sides hold the same certificates and list, whatever becomes of this answer:
            # an exchange of ours with the sender would carry nothing (the welcome skips it).
            now = time.monotonic()
            self._exchanged_from[sender] = max(now, self._exchanged_from.get(sender, now))
        return 200, {"number": rev.number if rev.pem else None, "crl": rev.pem if behind else None,
                     "certs": lacking, "have": self.identity.certs.keys()}
