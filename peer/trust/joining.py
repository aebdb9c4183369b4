"""The routes of automatic enrolment (peer.trust.auto), and the listener split that goes with it.

    POST /v1/trust/join        admin port, no bearer token: signed with the federation secret
                               (peer-API HMAC headers, nonce, time window), msgpack
                               {"from": name, "csr": pem-bytes, "ip": addr}
                               -> 200 {"cert", "ca", "mac"}  (mac: peer.trust.auto.reply_mac)
                               401 bad signature; 400 malformed; 403 revoked name or a CSR not
                               naming `from`; 409 a name held by a live member; 503 no CA keeper
                               among the live members (retry)
    POST /peer/v1/trust/join   mTLS listener: a member relays a join to the CA keeper
                               {"from": relay, "cluster", "csr", "ip"} -> {"cert", "ca"}; 409 on
                               a cluster that keeps no CA

Under automatic identity the admin port answers no /peer/ request and the peer listener no
admin request: 421 (Misdirected Request) naming the listener to use.
"""
from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from aiohttp import web

from peer.federation.membership import Membership
from peer.peering.client import PEER_PREFIX, PeerClient, PeerError, PeerRefused, msgpack_response, read_msgpack
from peer.peering.wire import NonceCache, PeerAuthError, PeerWireError, decode, verify
from peer.trust import ca
from peer.trust.auto import JOIN_PATH, RELAY_PATH, JoinRefused, reply_mac, sign_join

log = logging.getLogger(__name__)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def listener_middleware(*, peer_port: int, admin_url: str, peer_url: str) -> Any:
    """Each listener serves its own half: /peer/ only on the mTLS listener, the rest only on the
    admin port (421 naming the right one)."""
    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        sockname = request.transport.get_extra_info("sockname") if request.transport is not None else None
        on_peer = isinstance(sockname, tuple) and len(sockname) >= 2 and sockname[1] == peer_port
        is_peer = request.path.startswith(PEER_PREFIX)
        if is_peer and not on_peer:
            return msgpack_response({"error": f"the peer API is served with mTLS at {peer_url}, not on the admin "
                                     "port", "listener": peer_url}, status=421)
        if on_peer and not is_peer:
            return web.json_response({"error": f"the admin API is at {admin_url}; this is the peer listener",
                                      "status": 421, "listener": admin_url}, status=421)
        return await handler(request)

    return middleware


class JoinRoutes:
    def __init__(self, *, here: str, secret: bytes, nonces: NonceCache, ca_dir: Callable[[], Path | None],
                 ca_id: str, membership: Membership, client: PeerClient) -> None:
        """`ca_dir`: the CA kept here now (a deputy gets one at run time, peer.trust.keepers);
        `ca_id`: the `cid` tag of this cluster's CA."""
        self.here, self.secret, self.nonces, self.ca_dir, self.ca_id = here, secret, nonces, ca_dir, ca_id
        self.membership, self.client = membership, client

    def add_routes(self, app: web.Application) -> None:
        app.router.add_post(JOIN_PATH, self.on_join)
        app.router.add_post(RELAY_PATH, self.on_relay)

    def _held(self, name: str) -> bool:
        """A live member of this federation holds the name. A live member advertising another
        CA does not: that is the same site rebuilt on an empty data dir, whose founder yielded
        (peer.trust.keepers) and now enrols here."""
        member = self.membership.get(name)
        return name == self.here or (member is not None and member.status == "alive"
                                     and member.ca_id in (None, self.ca_id))

    def _sign(self, cluster: str, csr: bytes, ip: str) -> tuple[bytes, bytes]:
        ca_dir = self.ca_dir()
        assert ca_dir is not None
        cert, ca_pem = sign_join(ca_dir, cluster=cluster, csr_pem=csr, ips=(ip,) if ip else (), held=self._held)
        log.warning("signed the join of cluster %s (address %s)", cluster, ip or "-")
        return cert, ca_pem

    async def on_join(self, request: web.Request) -> web.Response:
        body = await request.read()
        try:
            verify(self.secret, method=request.method, path=request.raw_path, body=body, headers=request.headers,
                   now=time.time(), seen_nonces=self.nonces)
        except PeerAuthError as exc:
            return msgpack_response({"error": str(exc)}, status=401)
        try:
            msg = decode(body)
            cluster, csr, ip = _fields(msg, "from")
        except PeerWireError as exc:
            return msgpack_response({"error": str(exc)}, status=400)
        try:
            if self.ca_dir() is not None:
                cert, ca_pem = self._sign(cluster, csr, ip)
            else:
                cert, ca_pem = await self._relay(cluster, csr, ip)
        except JoinRefused as exc:
            log.warning("join of %s from %s refused: %s", cluster, request.remote, exc)
            return msgpack_response({"error": str(exc), "field": str(exc).split(":")[0]}, status=exc.status)
        except ca.CAError as exc:
            return msgpack_response({"error": str(exc).removeprefix("--")}, status=422)
        except PeerRefused as exc:
            return msgpack_response({"error": f"CA keeper: {exc.message}"}, status=exc.status)
        except PeerError as exc:
            return msgpack_response({"error": f"CA keeper unreachable: {exc}"}, status=503)
        return msgpack_response({"cert": cert, "ca": ca_pem,
                                 "mac": reply_mac(self.secret, csr=csr, cert=cert, ca_pem=ca_pem)})

    async def _relay(self, cluster: str, csr: bytes, ip: str) -> tuple[bytes, bytes]:
        """To the live keepers of this cluster's CA in turn, until one answers; a refusal (4xx)
        is the CA's answer and is passed on."""
        keepers = [m for m in self.membership.alive() if m.keeps_ca and m.peer_url and m.ca_id == self.ca_id]
        if not keepers:
            raise PeerError("no live member keeps the federation CA (`ca` tag)")
        failures = []
        for keeper in keepers:
            assert keeper.peer_url is not None
            try:
                reply = await self.client.call(keeper.peer_url, RELAY_PATH,
                                               {"from": self.here, "cluster": cluster, "csr": csr, "ip": ip},
                                               timeout=10.0)
            except PeerRefused:
                raise
            except PeerError as exc:
                failures.append(f"{keeper.name}: {exc}")
                continue
            if isinstance(reply, dict) and isinstance(reply.get("cert"), bytes) and isinstance(reply.get("ca"), bytes):
                return reply["cert"], reply["ca"]
            failures.append(f"{keeper.name}: a relay answer without cert and ca")
        raise PeerError("; ".join(failures))

    async def on_relay(self, request: web.Request) -> web.Response:
        cluster, csr, ip = _fields(await read_msgpack(request), "cluster")
        if self.ca_dir() is None:
            return msgpack_response({"error": "this cluster keeps no federation CA"}, status=409)
        try:
            cert, ca_pem = self._sign(cluster, csr, ip)
        except JoinRefused as exc:
            log.warning("join of %s relayed by %s refused: %s", cluster, request.headers.get("X-Roam-From"), exc)
            return msgpack_response({"error": str(exc), "field": str(exc).split(":")[0]}, status=exc.status)
        except ca.CAError as exc:
            return msgpack_response({"error": str(exc).removeprefix("--")}, status=422)
        return msgpack_response({"cert": cert, "ca": ca_pem})


def _fields(msg: Any, name_key: str) -> tuple[str, bytes, str]:
    from peer.config import NAME_RE

    if not isinstance(msg, dict):
        raise PeerWireError("expected a map {from, csr, ip}")
    cluster, csr, ip = msg.get(name_key), msg.get("csr"), msg.get("ip", "")
    if not isinstance(cluster, str) or not NAME_RE.match(cluster):
        raise PeerWireError(f"{name_key}: expected a cluster name")
    if not isinstance(csr, bytes) or len(csr) > 16384:
        raise PeerWireError("csr: expected PEM bytes")
    if not isinstance(ip, str) or len(ip) > 64:
        raise PeerWireError("ip: expected an address")
    return cluster, csr, ip
