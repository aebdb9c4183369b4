"""More than one keeper of the automatic federation CA, and a lone founder that yields (issue 19).

Why: with one keeper (peer.trust.auto's founder), losing its site means nobody new enrols,
nobody renews and nobody revokes; and that keeper rebuilt on an empty data dir founds a second
CA that nobody trusts. So:

- **Deputies.** While fewer than --ca-keepers (3) live clusters keep the CA, the first keeper by
  name hands it (key, certificate, index, name holders, revocation list) to the first live
  members by name that do not keep it, over the peer API's mTLS (`POST /peer/v1/trust/keeper`).
  A member takes it only for the CA its own certificate is from (the same certificate, and a key
  that matches it), then advertises `ca=1` and signs joins like the founder.
- **Keepers agree.** Every SYNC_EVERY seconds a keeper exchanges its index, holders and
  revocation list with the next keeper in turn (only when its state changed since they last
  agreed, else every FULL_EVERY seconds: the body grows with the federation); both keep the union, so a certificate one keeper
  issued can be revoked at any other, and when the union revokes more than the lists held, the
  revoked set is signed again as the next list number (two keepers revoking at once lose
  nothing) and spread like any list (peer.trust.spread).
- **A lone founder yields.** An agent whose CA has issued certificates to itself only and that
  sees in Serf a live member of an older CA (`cid` tag: founding time, then fingerprint) drops
  its CA and identity and starts again; knowing peers (known-peers.json) it then enrols at them
  (peer.trust.auto). That is the site rebuilt on an empty data dir without --join: its peers'
  Serf reconnects to it within seconds (reconnect_interval 5 s).

Cost: each keeper can sign any name (docs/security.md); --ca-keepers 1 keeps the key on the
founder alone, and losing that site then stops enrolment, renewal and revocation as before.
"""
from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import logging
import time
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aiohttp import web

from peer.packing import packb
from peer.peering.client import PeerClient, PeerError, msgpack_response, read_msgpack
from peer.peering.wire import PeerWireError
from peer.runtime.lazyimport import lazy
from peer.runtime.waiting import wait_set
from peer.trust import ca
from peer.trust.auto import CA_DIR, holders_of, save_holders
from peer.trust.certs import TrustError, load_crl, not_before, same_key
from peer.trust.keeping import CaId, deputies, lone, merge_index, older_ca, revoke_listed

if TYPE_CHECKING:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization

    from peer.federation.membership import Membership, MemberView
    from peer.trust.identity import Identity
else:
    x509 = lazy("cryptography.x509")
    hashes = lazy("cryptography.hazmat.primitives.hashes")
    serialization = lazy("cryptography.hazmat.primitives.serialization")

log = logging.getLogger(__name__)

PATH = "/peer/v1/trust/keeper"
SYNC_EVERY = 3.0
FULL_EVERY = 60.0  # keepers whose state has not changed still compare it this often
CALL_TIMEOUT = 5.0


# -- the wire ------------------------------------------------------------------------------
def _index_wire(index: list[ca.Issued]) -> list[dict[str, Any]]:
    return [i.as_json() for i in index]


def _index_from(raw: object) -> list[ca.Issued]:
    if not isinstance(raw, list):
        raise PeerWireError("index: expected a list")
    try:
        return [ca.Issued.from_json(e) for e in raw]
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise PeerWireError(f"index: malformed entry ({exc})") from exc


def _holders_from(raw: object) -> dict[str, str]:
    if not isinstance(raw, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in raw.items()):
        raise PeerWireError("holders: expected a map of cluster name to key fingerprint")
    return dict(raw)


class CaKeepers:
    """This agent's part: hand the CA over, exchange with the other keepers, take it over, yield."""

    def __init__(self, *, here: str, data_dir: Path, ca_dir: Path | None, identity: Identity,
                 client: PeerClient, membership: Membership, want: int,
                 on_keeping: Callable[[Path], None], on_yield: Callable[[str], None]) -> None:
        self.here, self.data_dir, self.dir = here, data_dir, ca_dir
        self.identity, self.client, self.membership, self.want = identity, client, membership, want
        self.on_keeping, self.on_yield = on_keeping, on_yield
        self.own = ca_id_of(identity.ca)
        self._turn = 0
        self._poked = asyncio.Event()
        self._agreed: dict[str, tuple[bytes, float]] = {}  # keeper -> (our digest after the exchange, when)
        self._yielded = False

    # -- rounds ----------------------------------------------------------------------------
    async def run(self) -> None:
        while True:
            await wait_set(self._poked, SYNC_EVERY)
            self._poked.clear()
            await self.round()

    def poke(self) -> None:
        """A member came alive: the round runs now, not at the next tick. The founder is the only
        keeper until its first hand-over; the sooner that happens, the smaller the window in
        which losing its site loses the CA."""
        self._poked.set()

    async def round(self) -> None:
        if self.dir is None or self._yielded:
            return
        self._take_list_in_force()
        alive = [m for m in self.membership.alive() if m.name != self.here and m.peer_url]
        if lone(ca.load_index(self.dir), self.here):
            # Only towards a CA someone alive still keeps: yielding to a CA whose keepers are all
            # gone would leave this agent waiting for a certificate forever.
            target = older_ca(self.own, (CaId.decode(m.ca_id) for m in alive if m.keeps_ca))
            if target is not None:
                self._yielded = True
                self.on_yield(f"a live member holds a certificate of an older federation CA ({target.encode()}, "
                              f"ours {self.own.encode()}) and this CA signed nobody else")
                return
        same = [m for m in alive if CaId.decode(m.ca_id) == self.own]
        keepers = {m.name for m in same if m.keeps_ca} | {self.here}
        by_name = {m.name: m for m in same}
        for name in deputies(self.here, keepers, by_name, self.want):
            await self._call(by_name[name], handing_over=True)
        others = sorted(keepers - {self.here})
        if others:
            self._turn += 1
            peer = others[self._turn % len(others)]
            agreed = self._agreed.get(peer)
            now = time.monotonic()
            if agreed is None or agreed[0] != self._digest() or now - agreed[1] >= FULL_EVERY:
                await self._call(by_name[peer], handing_over=False)

    def _digest(self) -> bytes:
        """What this keeper's state was when a peer last agreed with it: unchanged since, the
        exchange waits for FULL_EVERY (the idle wire stays small at any federation size)."""
        return hashlib.sha256(packb(self._state())).digest()

    def _state(self) -> dict[str, Any]:
        assert self.dir is not None
        crl = self.dir / ca.CRL
        return {"from": self.here, "index": _index_wire(ca.load_index(self.dir)), "holders": holders_of(self.dir),
                "crl": crl.read_bytes() if crl.exists() else None}

    async def _call(self, member: MemberView, *, handing_over: bool) -> None:
        assert member.peer_url is not None
        try:
            assert self.dir is not None  # the key goes along every time: it is what proves a keeper
            body = {**self._state(), "ca_cert": (self.dir / ca.CA_CERT).read_bytes(),
                    "ca_key": (self.dir / ca.CA_KEY).read_bytes()}
            reply = await self.client.call(member.peer_url, PATH, body, timeout=CALL_TIMEOUT)
            if not isinstance(reply, dict):
                raise PeerWireError("expected a map")
            self.merge(_index_from(reply.get("index")), _holders_from(reply.get("holders")), reply.get("crl"),
                       source=member.name)
            self._agreed[member.name] = (self._digest(), time.monotonic())
        except (PeerError, PeerWireError, TrustError) as exc:
            log.info("CA keepers: exchange with %s failed: %s", member.name, exc)
            return
        if handing_over:
            log.warning("handed the federation CA to %s (a deputy keeper: %s)", member.name,
                        "it signs joins, renewals and revocations too")

    # -- merging ---------------------------------------------------------------------------
    def merge(self, index: list[ca.Issued], holders: dict[str, str], crl_pem: object, *, source: str) -> None:
        """Keep the union of two keepers' state; sign a new list when the union revokes more."""
        assert self.dir is not None
        if crl_pem is not None:
            if not isinstance(crl_pem, bytes):
                raise PeerWireError("crl: expected PEM bytes or nil")
            theirs = load_crl(crl_pem, ca=self.identity.ca)  # TrustError: not our CA's
            if theirs.number > ca.crl_number(self.dir):
                ca.write_file(self.dir / ca.CRL, crl_pem, mode=0o600)
                index = revoke_listed(index, theirs.serials, at=_now())
        own = ca.load_index(self.dir)
        merged = merge_index(own, index)
        if merged != sorted(own, key=lambda i: (i.cluster, i.serial)):
            ca.save_index(self.dir, merged)
        mine = holders_of(self.dir)
        if {**holders, **mine} != mine:
            save_holders(self.dir, {**holders, **mine})  # a name's first holder here stays
        self._reissue_if_short(merged, source=source)

    def _take_list_in_force(self) -> None:
        """A list this agent applied (spread from another keeper) that is newer than the CA's own."""
        assert self.dir is not None
        rev = self.identity.revocations
        if rev.pem and rev.number > ca.crl_number(self.dir):
            ca.write_file(self.dir / ca.CRL, rev.pem, mode=0o600)
            ca.save_index(self.dir, revoke_listed(ca.load_index(self.dir), rev.serials, at=_now()))

    def _reissue_if_short(self, index: list[ca.Issued], *, source: str) -> None:
        """The list in force must revoke all the merged index revokes; if not, sign the union
        as the next number (two keepers that revoked at once both get their way)."""
        assert self.dir is not None
        in_force = self.identity.revocations
        if not frozenset(i.serial for i in index if i.revoked_at) - in_force.serials:
            return
        pem = ca.reissue_crl(self.dir, above=in_force.number, also=in_force.serials)
        self.identity.apply_crl(pem, source=f"the CA keepers' merged index (with {source})")

    # -- the other side --------------------------------------------------------------------
    def add_routes(self, app: web.Application) -> None:
        app.router.add_post(PATH, self.on_keeper)

    async def on_keeper(self, request: web.Request) -> web.Response:
        body = await read_msgpack(request)
        if not isinstance(body, dict) or not isinstance(body.get("ca_cert"), bytes):
            raise PeerWireError("ca_cert: expected the CA certificate (PEM bytes)")
        sender = str(body.get("from"))
        try:
            cert = x509.load_pem_x509_certificate(body["ca_cert"])
        except ValueError as exc:
            raise PeerWireError("ca_cert: not a PEM certificate") from exc
        if cert != self.identity.ca:
            return msgpack_response({"error": "ca_cert: not the CA this cluster's certificate is from"}, status=409)
        index, holders = _index_from(body.get("index")), _holders_from(body.get("holders"))
        if not isinstance(body.get("ca_key"), bytes):
            raise PeerWireError("ca_key: expected the CA's key (PEM bytes): only a keeper may send this")
        try:
            key_pem = _matching_key(body["ca_key"], self.identity.ca)
            if self.dir is None:
                self._take_over(key_pem, body["ca_cert"], sender=sender)
        except TrustError as exc:
            return msgpack_response({"error": str(exc)}, status=422)
        try:
            self.merge(index, holders, body.get("crl"), source=sender)
        except TrustError as exc:
            return msgpack_response({"error": f"crl: {exc}"}, status=422)
        return msgpack_response(self._state())

    def _take_over(self, key_pem: bytes, cert_pem: bytes, *, sender: str) -> None:
        """Become a deputy keeper: the CA's files written aside, then renamed into place."""
        final, incoming = self.data_dir / CA_DIR, self.data_dir / (CA_DIR + ".incoming")
        shutil.rmtree(incoming, ignore_errors=True)
        incoming.mkdir(mode=0o700)
        ca.write_file(incoming / ca.CA_KEY, key_pem, mode=0o600)
        ca.write_file(incoming / ca.CA_CERT, cert_pem, mode=0o600)
        ca.save_index(incoming, [])
        save_holders(incoming, {})
        incoming.rename(final)
        self.dir = final
        log.warning("this cluster keeps the federation CA too now (handed over by %s): it signs joins", sender)
        self.on_keeping(final)


def _matching_key(key_pem: bytes, ca_cert: x509.Certificate) -> bytes:
    """The CA's key, checked against its certificate: holding it is what makes a keeper."""
    try:
        key = serialization.load_pem_private_key(key_pem, password=None)
    except (ValueError, TypeError) as exc:
        raise TrustError("ca_key: not a PEM private key") from exc
    if not same_key(key.public_key(), ca_cert.public_key()):
        raise TrustError("ca_key: does not match the federation CA's certificate")
    return key_pem


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat()


def ca_id_of(cert: x509.Certificate) -> CaId:
    return CaId(int(not_before(cert).timestamp()), cert.fingerprint(hashes.SHA256()).hex()[:8])
