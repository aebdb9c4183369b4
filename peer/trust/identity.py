"""The agent's identity on the peer API: TLS contexts from --ca-cert/--cert/--key, reloaded when
the files change (rotation without restart), and who a peer request comes from.

Server side the TLS layer asks every client for a certificate and verifies any it gets against
the federation CA, but lets a client without one finish the handshake: the admin API (the CLI,
the dashboard) shares the port and authenticates with its bearer token. Every request under
/peer/ then needs a verified certificate (401 without), not revoked (403), naming the cluster
the request claims to come from (the X-Roam-From header and a records message's `from`; 403
naming both otherwise). The federation secret's HMAC is still checked after this: two locks.

Client side the agent presents its certificate and, when it knows whose address it calls (the
member list), checks during the handshake that the server's certificate names that cluster
(server_hostname = the cluster's DNS SAN); a reply from a revoked certificate is refused.

Revocation is checked here, per request, not in OpenSSL: OpenSSL's CRL store cannot drop a list
it loaded, and a new list must take effect on live connections too. A newly revoked cluster's
open connections are closed at once, and the client's pooled connections are dropped.
"""
from __future__ import annotations

import asyncio
import datetime as dt
import logging
import os
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lb.files import write_atomic
from peer.errors import RoamError
from peer.runtime.lazyimport import lazy
from peer.trust.authorship import CertBook
from peer.trust.certs import (NO_REVOCATIONS, Revocations, TrustError, check_issued_by, cluster_of,
                              cluster_of_peercert, load_cert, load_crl, not_after, serial_of_peercert)

if TYPE_CHECKING:
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization
else:  # loaded on first use: only an agent with an identity reads keys (peer.runtime.lazyimport)
    x509 = lazy("cryptography.x509")
    serialization = lazy("cryptography.hazmat.primitives.serialization")

log = logging.getLogger(__name__)

CRL_FILE = "trust-crl.pem"  # the highest-numbered revocation list seen, kept across restarts
CERTS_FILE = "trust-certs.pem"  # the clusters' certificates seen, kept across restarts (authorship.CertBook)
PAIR_FILE = ".tls-pair.pem"  # the cert and key as last loaded, one file (read once, loaded atomically)
WATCH_EVERY = 1.0
EXPIRY_WARNING = 7 * 24 * 3600.0
REFUSAL_LOG_EVERY = 10.0


class IdentityError(TrustError):
    """The agent's own certificate, key or CA file is unusable; the message names the flag."""


class PeerIdentityRefused(RoamError):
    """A peer request (server side) or reply (client side) whose certificate is refused."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(frozen=True)
class CertInfo:
    serial: int
    cluster: str
    not_after: dt.datetime


Stamp = tuple[tuple[int, int, int] | None, ...]


def _stamp(*paths: Path) -> Stamp:
    out: list[tuple[int, int, int] | None] = []
    for p in paths:
        try:
            st = os.stat(p)
            out.append((st.st_mtime_ns, st.st_size, st.st_ino))
        except OSError:
            out.append(None)
    return tuple(out)


def _read(path: Path, flag: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise IdentityError(f"{flag}: {path}: {exc.strerror}") from exc


class Identity:
    def __init__(self, *, name: str, ca_cert: Path, cert: Path, key: Path, data_dir: Path,
                 owner_of: Callable[[str], str | None] = lambda url: None) -> None:
        self.name = name
        self.paths = (ca_cert, cert, key)
        self.data_dir = data_dir
        self.owner_of = owner_of  # base URL -> the member cluster serving it (client-side name check)
        try:
            self.ca = load_cert(_read(ca_cert, "--ca-cert"), what=f"--ca-cert {ca_cert}")
        except TrustError as exc:
            raise IdentityError(str(exc)) from exc
        try:
            self.server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            self.server.verify_mode = ssl.CERT_OPTIONAL  # admin clients have no certificate: see above
            self.named = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # check_hostname: the cluster's DNS SAN
            self.member = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            self.member.check_hostname = False  # any member: the chain is still verified
            # The peer listener of automatic identity (peer.trust.auto) serves no admin client:
            # a client without a certificate is refused in the handshake.
            self.peer_server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            self.peer_server.verify_mode = ssl.CERT_REQUIRED
            for ctx in self._contexts():
                ctx.minimum_version = ssl.TLSVersion.TLSv1_2
                ctx.load_verify_locations(cafile=str(ca_cert))
            # No TLS 1.3 session tickets: no client of ours resumes a session (aiohttp and the
            # CLI open each connection afresh), and OpenSSL's two tickets per connection were
            # bytes on the wire for nothing at every peer call (issue 18's idle wire).
            self.server.num_tickets = self.peer_server.num_tickets = 0
        except ssl.SSLError as exc:
            raise IdentityError(f"--ca-cert: {ca_cert}: {exc.reason or exc}") from exc
        self._stamp = _stamp(cert, key)
        self.certs = CertBook(self.ca, path=data_dir / CERTS_FILE)  # every cluster's certificates (record signatures)
        self.signing_key: object = None  # this cluster's private key (signs record versions)
        self.current = self._load_pair()
        self._failed: Stamp | None = None
        self.revocations = self._stored_revocations()
        if self.revocations.pem:
            self._check_in_handshake()
        self.seen: dict[int, str] = {}  # serial -> cluster, from verified peer certificates (for logs)
        self._open: dict[int, set[asyncio.BaseTransport]] = {}  # serial -> its connections (closed on revocation)
        self._refusals: dict[tuple[str, str], float] = {}
        self.on_revoked: list[Callable[[], None]] = []  # e.g. the peer client drops its pooled connections
        self.on_new_cert: list[Callable[[], None]] = []  # so: peers see (and learn) the new one at once
        self.auto: dict[str, Any] | None = None  # automatic identity (peer.trust.auto): listener, CA keeper

    def _contexts(self) -> tuple[ssl.SSLContext, ...]:
        return (self.server, self.peer_server, self.named, self.member)

    # -- own certificate -------------------------------------------------------------------
    def _load_pair(self) -> CertInfo:
        """Check the cert and key files, then load them into every context. Read once into one
        private file, so a rotation halfway through being written cannot mix two pairs."""
        _, cert_path, key_path = self.paths
        cert_pem, key_pem = _read(cert_path, "--cert"), _read(key_path, "--key")
        try:
            cert = load_cert(cert_pem, what=f"--cert {cert_path}")
            check_issued_by(cert, self.ca, what=f"--cert {cert_path}")
            cluster = cluster_of(cert)
        except TrustError as exc:
            raise IdentityError(str(exc)) from exc
        if cluster != self.name:
            raise IdentityError(f"--cert: {cert_path} names cluster {cluster!r}, this agent is {self.name!r}")
        now = dt.datetime.now(dt.timezone.utc)
        if not_after(cert) <= now:
            raise IdentityError(f"--cert: {cert_path} expired at {not_after(cert).isoformat()}")
        pair = self.data_dir / PAIR_FILE
        fd = os.open(pair, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, cert_pem.rstrip(b"\n") + b"\n" + key_pem)
        finally:
            os.close(fd)
        try:
            ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).load_cert_chain(pair)  # scratch: the key matches?
            for ctx in self._contexts():
                ctx.load_cert_chain(pair)
        except ssl.SSLError as exc:
            raise IdentityError(f"--key: {key_path} does not match --cert {cert_path} ({exc.reason})") from exc
        try:
            self.signing_key = serialization.load_pem_private_key(key_pem, password=None)
        except (ValueError, TypeError) as exc:
            raise IdentityError(f"--key: {key_path}: not a usable private key ({exc})") from exc
        self.certs.add(cert, pem=cert_pem)
        left = (not_after(cert) - now).total_seconds()
        if left < EXPIRY_WARNING:
            log.warning("certificate of %s expires in %.1f days: issue a new one (`roam ca issue`)", self.name,
                        left / 86400)
        return CertInfo(cert.serial_number, cluster, not_after(cert))

    def reload(self, *, why: str) -> bool:
        """Re-read the cert and key; the old pair stays in use when the new one is unusable."""
        stamp = _stamp(*self.paths[1:])
        try:
            info = self._load_pair()
        except IdentityError as exc:
            if self._failed != stamp:
                log.warning("certificate not reloaded (%s): %s; keeping serial %x", why, exc, self.current.serial)
            self._failed = stamp
            return False
        self._stamp, self._failed = stamp, None
        changed = info.serial != self.current.serial
        if changed:
            log.info("certificate reloaded (%s): serial %x, valid until %s", why, info.serial,
                     info.not_after.isoformat())
        self.current = info
        if changed:
            for callback in self.on_new_cert:
                callback()
        return True

    async def watch(self) -> None:
        """Reload when the cert or key file changed and then stayed as is for one poll (the two
        files are replaced one after the other: rotation is `roam ca issue` or `install` again)."""
        seen = self._stamp
        while True:
            await asyncio.sleep(WATCH_EVERY)
            self._forget_closed()
            stamp = _stamp(*self.paths[1:])
            if stamp == seen and stamp != self._stamp and stamp != self._failed:
                self.reload(why="files changed")
            seen = stamp

    # -- revocation ------------------------------------------------------------------------
    def _stored_revocations(self) -> Revocations:
        path = self.data_dir / CRL_FILE
        try:
            return load_crl(path.read_bytes(), ca=self.ca)
        except FileNotFoundError:
            return NO_REVOCATIONS
        except (OSError, TrustError) as exc:
            log.warning("stored revocation list %s ignored: %s", path, exc)
            return NO_REVOCATIONS

    def apply_crl(self, pem: bytes, *, source: str) -> str:
        """Take a revocation list if it is the CA's and newer than ours: 'applied', 'same' or
        'older'. TrustError if it is not the CA's."""
        new = load_crl(pem, ca=self.ca)
        old = self.revocations
        if new.number < old.number:
            return "older"
        if new.number == old.number:
            return "same"
        write_atomic(self.data_dir / CRL_FILE, pem, mode=0o600)  # in the data dir: nothing readable by others
        self.revocations = new
        self._check_in_handshake()
        newly = sorted(new.serials - old.serials)
        names = ", ".join(f"{self.seen.get(s, '?')} (serial {s:x})" for s in newly) or "nothing new"
        log.warning("revocation list #%d from %s applied: revoked %s", new.number, source, names)
        closed = 0
        for serial in newly:
            for transport in list(self._open.pop(serial, ())):
                transport.close()
                closed += 1
        if closed:
            log.warning("closed %d connection(s) of revoked certificates", closed)
        if self.current.serial in new.serials:
            log.error("this cluster's own certificate (serial %x) is revoked: peers refuse it", self.current.serial)
        for callback in self.on_revoked:
            callback()
        return "applied"

    def _check_in_handshake(self) -> None:
        """The peer listener of automatic identity also refuses a revoked client in the TLS
        handshake: the list (DATA/trust-crl.pem, just written) goes into its context's store with
        VERIFY_CRL_CHECK_LEAF. OpenSSL cannot drop a list it loaded, but the CA's lists only grow
        and OpenSSL picks the one with the latest lastUpdate, so adding each new one suffices; the
        per-request check (`admit`) stays, for the opt-in context (admin clients share it) and for
        connections already open (closed in `apply_crl`)."""
        try:
            self.peer_server.load_verify_locations(cafile=str(self.data_dir / CRL_FILE))
            self.peer_server.verify_flags |= ssl.VERIFY_CRL_CHECK_LEAF
        except (OSError, ssl.SSLError) as exc:
            log.warning("revocation list not loaded into the peer listener's handshake (checked per request "
                        "only): %s", exc)

    # -- who a request comes from ------------------------------------------------------------
    def admit(self, transport: asyncio.BaseTransport | None, claimed: str | None) -> str:
        """The cluster a peer request comes from, or PeerIdentityRefused (see the module doc)."""
        peercert = transport.get_extra_info("peercert") if transport is not None else None
        cluster, serial = cluster_of_peercert(peercert), serial_of_peercert(peercert)
        if cluster is None or serial is None:
            raise self._refuse(claimed or "?", 401, "peer request without a client certificate of the "
                               "federation CA (mTLS required on the peer API)")
        self.seen[serial] = cluster
        if not self.certs.knows(serial) and transport is not None:
            self._learn(transport)
        if self.revocations.revoked(serial):
            raise self._refuse(cluster, 403, f"certificate of cluster {cluster} (serial {serial:x}) is revoked")
        if claimed != cluster:
            raise self._refuse(cluster, 403, f"certificate names cluster {cluster} but the request claims to "
                               f"come from {claimed!r}")
        if transport is not None:
            self._remember(serial, transport)
        return cluster

    def _learn(self, transport: asyncio.BaseTransport) -> None:
        """Keep a peer's certificate (its DER from the TLS layer) to check its record signatures."""
        ssl_object = transport.get_extra_info("ssl_object")
        der = ssl_object.getpeercert(binary_form=True) if ssl_object is not None else None
        if der:
            try:
                self.certs.add(x509.load_der_x509_certificate(der))
            except (ValueError, TrustError) as exc:
                log.warning("peer certificate not kept for record signatures: %s", exc)

    def _remember(self, serial: int, transport: asyncio.BaseTransport) -> None:
        """Keep the connection to close it on revocation."""
        self._forget_closed()
        self._open.setdefault(serial, set()).add(transport)

    def _forget_closed(self) -> None:
        """Drop the connections that have closed, at each request and at each `watch` poll
        (uvloop's transports take no weak references). A closed TLS transport still holds its
        SSL object and uvloop's 256 KB read buffer: swept only at requests, the ones closed
        after an idle agent's last request stayed until the next, 20-27 of them per agent after
        the start-up exchanges of a 10-agent federation (about 5 MB); swept every 256th request,
        as at first, an idle agent grew by 12 MB in ten minutes. A pass over the open ones."""
        for key in list(self._open):
            live = {t for t in self._open[key] if not t.is_closing()}
            if live:
                self._open[key] = live
            else:
                del self._open[key]

    def refuse_claim(self, cluster: str, claimed: object, *, where: str) -> PeerIdentityRefused:
        return self._refuse(cluster, 403, f"certificate names cluster {cluster} but {where} says {claimed!r}")

    def server_refusal(self, peercert: dict[str, Any] | None, url: str) -> str | None:
        """Client side: why a reply from this server certificate is not accepted (revoked), or None."""
        serial = serial_of_peercert(peercert)
        cluster = cluster_of_peercert(peercert) or "?"
        if serial is not None:
            self.seen[serial] = cluster
        if self.revocations.revoked(serial):
            return self._refuse(cluster, 403, f"{url}: certificate of cluster {cluster} (serial {serial:x}) "
                                "is revoked").message
        return None

    def client_ssl(self, base_url: str) -> tuple[ssl.SSLContext, str | None]:
        """The context and server_hostname to call `base_url` with: the member's name if known."""
        owner = self.owner_of(base_url)
        return (self.named, owner) if owner else (self.member, None)

    def _refuse(self, cluster: str, status: int, message: str) -> PeerIdentityRefused:
        now = time.monotonic()
        key = (cluster, message.split(":")[0])
        if now - self._refusals.get(key, -REFUSAL_LOG_EVERY) >= REFUSAL_LOG_EVERY:
            self._refusals[key] = now
            log.warning("peer identity refused (%d): %s", status, message)
        return PeerIdentityRefused(status, message)

    def warnings(self) -> list[dict[str, Any]]:
        """What the operator must act on, for `GET /v1/status` (`roam status` prints them)."""
        out: list[dict[str, Any]] = []
        left = (self.current.not_after - dt.datetime.now(dt.timezone.utc)).total_seconds()
        if left < EXPIRY_WARNING:
            out.append({"kind": "certificate-expiring", "message": (
                f"this cluster's certificate (serial {self.current.serial:x}) expires in {left / 86400:.1f} days: "
                f"issue a new one (`roam ca issue` or `request`/`sign`/`install`); the agent reloads it")})
        if self.revocations.revoked(self.current.serial):
            out.append({"kind": "certificate-revoked", "message": (
                f"this cluster's certificate (serial {self.current.serial:x}) is revoked (list "
                f"#{self.revocations.number}): every peer refuses it")})
        return out

    def describe(self) -> dict[str, Any]:
        """For GET /v1/trust."""
        now = dt.datetime.now(dt.timezone.utc)
        rev = self.revocations
        return {"mode": "mtls", "auto": self.auto, "cluster": self.name, "ca": self.ca.subject.rfc4514_string(),
                "cert": {"serial": f"{self.current.serial:x}", "not_after": self.current.not_after.isoformat(),
                         "expires_in_s": round((self.current.not_after - now).total_seconds())},
                "crl": {"number": rev.number if rev.pem else None,
                        "revoked": [{"serial": f"{s:x}", "cluster": self.seen.get(s)} for s in sorted(rev.serials)]}}
