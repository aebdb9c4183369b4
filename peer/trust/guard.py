"""The peer API's identity check (aiohttp middleware), in front of the federation-secret HMAC.

Under mTLS a peer speaks only as the cluster its certificate names: the X-Roam-From header must
be that cluster, and so must the `from` of a records message (anti-entropy), the one body field
that names its sender. Refusals are msgpack `{"error": ...}` like every peer-API error: 401
without a certificate, 403 for a revoked one or a claim that is not the certificate's.
"""
from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from peer.peerclient import PEER_PREFIX, msgpack_response
from peer.peerwire import HEADER_FROM, PeerWireError, decode
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
        body = decode(await request.read())
    except (PeerWireError, web.HTTPException):
        return  # malformed or too large: the HMAC check and the handler answer it
    if isinstance(body, dict) and "from" in body and body["from"] != cluster:
        raise identity.refuse_claim(cluster, body["from"], where="the message's `from`")
