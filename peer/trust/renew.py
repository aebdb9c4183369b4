"""Certificate renewal before expiry: the agent asks the CA-holding cluster to sign a new key.

When a third of its certificate's lifetime is left (`due`), the agent makes a new key and a
certificate request naming itself, and offers it to the live members in turn:

    POST /peer/v1/trust/renew  {"from", "csr": pem-bytes}  ->  {"cert": pem-bytes, "ca": pem-bytes}

Only an agent keeping the CA (`roam agent --ca-dir CA`) signs; the others answer 409. The
request is authenticated by the asker's still-valid certificate (mTLS, peer/trust/guard.py: not
revoked, naming the cluster in `from`), so the CA signs only a certificate naming that same
cluster, with the same IP addresses as the one presented (403 otherwise; a cluster revoked at
the CA gets nothing). The agent checks the answer (the CA's, naming it, for its new key),
writes the key then the certificate by rename over its --key/--cert files and reloads them
(peer/trust/identity.py): peers see the new certificate on the next connection, and versions
signed with the old key stay valid (authorship.py keeps every certificate a cluster had). The
CA-holding agent renews its own certificate the same way, locally. An expired certificate
cannot renew (it no longer authenticates): the operator issues one (`roam ca issue`/`sign`).
"""
from __future__ import annotations

import asyncio
import datetime as dt
import ipaddress
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aiohttp import web

from peer.runtime.lazyimport import lazy
from peer.peering.client import PeerClient, PeerError, msgpack_response, read_msgpack
from peer.peering.wire import PeerWireError
from peer.trust import ca
from peer.trust.certs import (TrustError, check_issued_by, cluster_of, cluster_of_peercert, load_cert, not_after,
                              not_before, same_key)
from peer.trust.identity import Identity

if TYPE_CHECKING:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509 import oid
else:  # loaded on first use: only an agent with an identity renews (peer.runtime.lazyimport)
    x509 = lazy("cryptography.x509")
    hashes = lazy("cryptography.hazmat.primitives.hashes")
    serialization = lazy("cryptography.hazmat.primitives.serialization")
    ec = lazy("cryptography.hazmat.primitives.asymmetric.ec")
    oid = lazy("cryptography.x509.oid")

log = logging.getLogger(__name__)

PATH = "/peer/v1/trust/renew"
CHECK_EVERY = 5.0
RETRY_LOG_EVERY = 60.0
RENEW_AT = 1 / 3  # of the certificate's lifetime left
Members = Callable[[], list[tuple[str, str]]]


class RenewRefused(ca.CAError):
    """A renewal request the CA-holding agent does not sign (another cluster's, revoked)."""


def due(not_before: dt.datetime, not_after: dt.datetime, *, now: dt.datetime) -> bool:
    """Renew once less than RENEW_AT of the lifetime is left (and while it is still valid)."""
    lifetime = (not_after - not_before).total_seconds()
    left = (not_after - now).total_seconds()
    return 0 < left < lifetime * RENEW_AT


def sign_renewal(ca_dir: Path, *, cluster: str, csr_pem: bytes, ips: list[Any]) -> tuple[bytes, bytes]:
    """The CA's side: a certificate for the request's key naming `cluster` (the authenticated
    asker), with the addresses of its current certificate."""
    try:
        csr = x509.load_pem_x509_csr(csr_pem)
    except ValueError as exc:
        raise ca.CAError("csr: not a PEM certificate signing request") from exc
    names = csr.subject.get_attributes_for_oid(oid.NameOID.COMMON_NAME)
    if not csr.is_signature_valid or len(names) != 1 or names[0].value != cluster:
        raise RenewRefused(f"csr: must be signed by its key and name exactly the asking cluster {cluster}")
    try:
        ca.check_request(ca_dir, cluster, ca.CLUSTER_DAYS, tuple(str(i) for i in ips))
    except ca.CAError as exc:
        raise RenewRefused(str(exc).removeprefix("--")) from exc
    cert = ca.sign_key(ca_dir, cluster=cluster, public_key=csr.public_key(), days=ca.CLUSTER_DAYS, addresses=ips)
    return cert.public_bytes(serialization.Encoding.PEM), (ca_dir / ca.CA_CERT).read_bytes()


def _ips_of_peercert(peercert: dict[str, Any] | None) -> list[Any]:
    return [ipaddress.ip_address(v.strip()) for k, v in (peercert or {}).get("subjectAltName", ())
            if k == "IP Address"]


class Renewer:
    def __init__(self, *, identity: Identity, client: PeerClient, here: str, members: Members,
                 ca_dir: Path | None, renewed: Callable[[], Awaitable[object]] | None = None) -> None:
        self.identity = identity
        self.renewed = renewed  # told after each renewal (the agent offers the new certificate to every member)
        self.client = client
        self.here = here
        self.members = members
        self.ca_dir = ca_dir
        self._logged = -RETRY_LOG_EVERY

    def _due(self) -> bool:
        _, cert_path, _ = self.identity.paths
        try:
            cert = load_cert(cert_path.read_bytes(), what="--cert")
        except (OSError, TrustError):
            return False
        return due(not_before(cert), not_after(cert), now=dt.datetime.now(dt.timezone.utc))

    async def run(self) -> None:
        while True:
            await asyncio.sleep(CHECK_EVERY)
            if self._due() and await self.renew_once() and self.renewed is not None:
                await self.renewed()

    async def renew_once(self) -> bool:
        """Ask for a new certificate (locally with the CA, else each live member in turn)."""
        key = ec.generate_private_key(ec.SECP256R1())
        csr = (x509.CertificateSigningRequestBuilder()
               .subject_name(x509.Name([x509.NameAttribute(oid.NameOID.COMMON_NAME, self.here)]))
               .sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM))
        reasons: list[str] = []
        if self.ca_dir is not None:
            ips = [ipaddress.ip_address(i) for i in self._own_ips()]
            try:
                cert_pem, _ = sign_renewal(self.ca_dir, cluster=self.here, csr_pem=csr, ips=ips)
                return self._install(key, cert_pem, source="the CA kept here")
            except ca.CAError as exc:
                reasons.append(f"the CA kept here: {exc}")
        for name, url in self.members():
            try:
                reply = await self.client.call(url, PATH, {"from": self.here, "csr": csr}, timeout=10.0)
            except PeerError as exc:
                reasons.append(f"{name}: {exc}")
                continue
            answered = reply.get("cert") if isinstance(reply, dict) else None
            if isinstance(answered, bytes):
                try:
                    return self._install(key, answered, source=name)
                except TrustError as exc:
                    reasons.append(f"{name}: {exc}")
        now = asyncio.get_running_loop().time()
        if now - self._logged >= RETRY_LOG_EVERY:
            self._logged = now
            log.warning("certificate renewal failed (retrying every %.0f s): %s", CHECK_EVERY,
                        "; ".join(reasons) or "no live member")
        return False

    def _own_ips(self) -> list[str]:
        cert = load_cert(self.identity.paths[1].read_bytes(), what="--cert")
        try:
            san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        except x509.ExtensionNotFound:
            return []
        return [str(a) for a in san.get_values_for_type(x509.IPAddress)]

    def _install(self, key: ec.EllipticCurvePrivateKey, cert_pem: bytes, *, source: str) -> bool:
        cert = load_cert(cert_pem, what=f"renewed certificate from {source}")
        check_issued_by(cert, self.identity.ca, what=f"renewed certificate from {source}")
        if cluster_of(cert) != self.here:
            raise TrustError(f"renewed certificate from {source} names {cluster_of(cert)}, not {self.here}")
        if not same_key(cert.public_key(), key.public_key()):
            raise TrustError(f"renewed certificate from {source} is not for the key sent")
        _, cert_path, key_path = self.identity.paths
        ca.write_file(key_path, key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                  serialization.NoEncryption()), mode=0o600)
        ca.write_file(cert_path, cert_pem, mode=ca.mode_of(cert_path, 0o644))  # 0600 in a data dir stays so
        if not self.identity.reload(why=f"renewed by {source}"):
            return False
        log.warning("certificate renewed by %s: serial %x, valid until %s", source, cert.serial_number,
                    not_after(cert).isoformat())
        return True


def add_renew_route(app: web.Application, *, identity: Identity, ca_dir: Path | None) -> None:
    async def on_renew(request: web.Request) -> web.Response:
        body = await read_msgpack(request)
        if not isinstance(body, dict) or not isinstance(body.get("csr"), bytes):
            raise PeerWireError("csr: expected PEM bytes")
        if ca_dir is None:
            return msgpack_response({"error": "this agent keeps no CA (roam agent --ca-dir)"}, status=409)
        peercert = request.transport.get_extra_info("peercert") if request.transport is not None else None
        cluster = cluster_of_peercert(peercert)
        if cluster is None or body.get("from") != cluster:  # (the identity middleware checked the header)
            return msgpack_response({"error": "from: must be the cluster of the client certificate"}, status=403)
        try:
            cert, ca_pem = sign_renewal(ca_dir, cluster=cluster, csr_pem=body["csr"], ips=_ips_of_peercert(peercert))
        except RenewRefused as exc:
            log.warning("certificate renewal for %s refused: %s", cluster, exc)
            return msgpack_response({"error": str(exc)}, status=403)
        except ca.CAError as exc:
            return msgpack_response({"error": str(exc)}, status=422)
        log.warning("renewed the certificate of cluster %s: serial %x", cluster,
                    x509.load_pem_x509_certificate(cert).serial_number)
        return msgpack_response({"cert": cert, "ca": ca_pem})

    app.router.add_post(PATH, on_renew)
