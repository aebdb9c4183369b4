"""The peer API's identity check (aiohttp middleware), in front of the federation-secret HMAC.

Under mTLS a peer speaks only as the cluster its certificate names: the X-Roam-From header must
be that cluster, and so must the `from` of a records message (anti-entropy), the one body field
that names its sender. Refusals are msgpack `{"error": ...}` like every peer-API error: 401
without a certificate, 403 for a revoked one or a claim that is not the certificate's.
"""
from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import msgpack
from aiohttp import web

from peer.peering.client import PEER_PREFIX, msgpack_response
from peer.peering.wire import HEADER_FROM
from peer.trust.identity import Identity, PeerIdentityRefused

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
RECORDS_PREFIX = "/peer/v1/records/"  # messages with a `from` (peer/records/messages.py)


def identity_middleware(identity: Identity) -> Any:
    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        if not request.path.startswith(PEER_PREFIX):
            return await handler(request)
        try:
            cluster = identity.admit(request.transport, request.headers.get(HEADER_FROM))
            if request.path.startswith(RECORDS_PREFIX):
                await _check_body_sender(request, identity, cluster)
        except PeerIdentityRefused as exc:
            response = msgpack_response({"error": exc.message}, status=exc.status)
            response.force_close()  # a refused peer keeps no connection
            return response
        return await handler(request)

    return middleware


async def _check_body_sender(request: web.Request, identity: Identity, cluster: str) -> None:
    try:
        body = await request.read()
    except web.HTTPException:
        return  # too large: the HMAC check answers it
    for claimed in senders(body):
        if claimed != cluster:
            raise identity.refuse_claim(cluster, claimed, where="the message's `from`")


def senders(body: bytes) -> list[object]:
    """Every value of a top-level `from` key of a msgpack map, without decoding the rest (an
    anti-entropy push can hold megabytes of records: they are skipped, not built). Malformed
    bytes give what was read so far: the handler's strict decode answers them with a 400."""
    found: list[object] = []
    unpacker = msgpack.Unpacker(raw=False, strict_map_key=False, max_buffer_size=max(len(body), 1))
    unpacker.feed(body)
    try:
        for _ in range(unpacker.read_map_header()):
            key = unpacker.unpack()
            if key == "from":
                found.append(unpacker.unpack())
            else:
                unpacker.skip()
    except Exception:  # noqa: BLE001 - any malformation: the strict decode reports it
        pass
    return found
