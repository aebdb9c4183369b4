"""Automatic per-cluster identity: mTLS between peers for a bare `roam agent` (DESIGN "Trust
between clusters": the peer API is mutually authenticated by default).

With none of --ca-cert/--cert/--key (and no --no-peer-tls) an agent makes or obtains its own
identity in its data dir and serves the peer API on a separate mTLS listener (--peer-port,
default --api-port + 1, advertised in the `pp` Serf tag); the admin API stays plain http on
--api-port, as the CLI contract has it.

    DATA/identity/cluster.key  this cluster's key (0600), made once, kept across restarts
    DATA/identity/cluster.pem  its certificate, issued by the federation CA
    DATA/identity/ca.pem       the federation CA certificate
    DATA/ca/                   the CA itself (peer.trust.ca), on the one cluster that keeps it

Who keeps the CA: the first agent started without --join on an empty data dir makes one and
advertises it (`ca` Serf tag). Every other agent enrols: it makes its key, and sends a CSR to
one of its --join targets at the same --api-port (the contract runs every agent on the same
ports) over plain http, authenticated with the federation secret (the peer-API HMAC, nonce and
time window: `POST /v1/trust/join`); the target signs if it keeps the CA, else relays the CSR to
the member that does over mTLS (`POST /peer/v1/trust/join`). The answer carries the certificate
and the CA certificate with an HMAC (federation secret) over both and the CSR: a third party on
the path can neither substitute a CA nor replay an older answer. Retried with back-off while no
CA is reachable (a joiner may start first).

Names are first come, first served: the CA signs a name for a new key only when no live member
(in the CA keeper's Serf view) holds it; the key that holds a name may get it again (a lost
answer, a re-enrolment). A restarted agent keeps its key and certificate: it enrols nothing. A
site rebuilt on an empty data dir takes its name again once Serf says the old holder failed or
left. What this does not protect against (docs/security.md): a holder of the federation secret
can enrol a new name; the CA keeper is one cluster (lose its data dir and nobody new enrols).
"""
from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import shutil
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lb.hostport import join_hostport
from peer.errors import RoamError
from peer.runtime.lazyimport import lazy
from peer.runtime.waiting import wait_set
from peer.peering.client import PeerClient, PeerError, PeerRefused, PeerUnreachable
from peer.trust import ca
from peer.trust.certs import TrustError, check_issued_by, cluster_of, load_cert, not_after, same_key
from peer.trust.identity import Identity

if TYPE_CHECKING:
    from peer.config import AgentConfig
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
else:  # loaded on first use (peer.runtime.lazyimport)
    x509 = lazy("cryptography.x509")
    hashes = lazy("cryptography.hazmat.primitives.hashes")
    serialization = lazy("cryptography.hazmat.primitives.serialization")
    ec = lazy("cryptography.hazmat.primitives.asymmetric.ec")

log = logging.getLogger(__name__)

IDENTITY_DIR, CA_DIR, HOLDERS = "identity", "ca", "holders.json"
JOIN_PATH = "/v1/trust/join"  # admin port, federation-secret HMAC: the joiner has no certificate yet
RELAY_PATH = "/peer/v1/trust/join"  # a member relays a join to the CA keeper, over mTLS
FIRST_RETRY, MAX_RETRY, LOG_EVERY = 0.25, 2.0, 30.0
FOUND_AFTER = 10.0  # seconds an agent without --join tries the peers it knew before it founds a CA


class JoinRefused(ca.CAError):
    """The CA will not sign this join: a name a live member holds (409), a revoked name or a
    request not naming its sender (403)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class EnrolmentError(TrustError):
    """This agent can neither use, make nor ask for an identity (one line at start, exit 2)."""


class EnrolmentAborted(RoamError):
    """The agent was asked to stop while it was still waiting for its certificate."""


@dataclass(frozen=True)
class AutoFiles:
    ca_cert: Path
    cert: Path
    key: Path
    ca_dir: Path | None  # set on the cluster that keeps the CA


def files_of(data_dir: Path) -> AutoFiles:
    d = data_dir / IDENTITY_DIR
    keeps = (data_dir / CA_DIR / ca.CA_KEY).exists()
    return AutoFiles(d / ca.OUT_CA, d / ca.OUT_CERT, d / ca.OUT_KEY, data_dir / CA_DIR if keeps else None)


def reply_mac(secret: bytes, *, csr: bytes, cert: bytes, ca_pem: bytes) -> bytes:
    """The HMAC a join answer carries: binds the CA and certificate to this request."""
    mac = hmac.new(secret, b"roam-join-reply", hashlib.sha256)
    for part in (csr, cert, ca_pem):
        mac.update(len(part).to_bytes(4, "big") + part)
    return mac.digest()


def _usable(files: AutoFiles, name: str) -> bool:
    """The identity files are there, the CA's, naming this cluster, not expired, for its key."""
    try:
        ca_cert = load_cert(files.ca_cert.read_bytes(), what=str(files.ca_cert))
        cert = load_cert(files.cert.read_bytes(), what=str(files.cert))
        check_issued_by(cert, ca_cert, what=str(files.cert))
        key = serialization.load_pem_private_key(files.key.read_bytes(), password=None)
    except (OSError, TrustError, ValueError, TypeError):
        return False
    return (cluster_of(cert) == name and not_after(cert).timestamp() > time.time() + 60
            and same_key(cert.public_key(), key.public_key()))


def _own_key(files: AutoFiles) -> ec.EllipticCurvePrivateKey:
    """This cluster's key: the one in the data dir (kept across restarts and retries), else a new one."""
    try:
        key = serialization.load_pem_private_key(files.key.read_bytes(), password=None)
        if isinstance(key, ec.EllipticCurvePrivateKey):
            return key
    except (OSError, ValueError, TypeError):
        pass
    key = ec.generate_private_key(ec.SECP256R1())
    files.key.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    ca.write_file(files.key, key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                               serialization.NoEncryption()), mode=0o600)
    return key


def _spki(public_key: Any) -> str:
    der = public_key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return hashlib.sha256(der).hexdigest()


def local_identity(*, name: str, addr: str, data_dir: Path, may_found: bool) -> AutoFiles | None:
    """The identity files when this agent has them or can make them itself: it keeps the CA
    (issues its own certificate when missing), its enrolled identity is usable, or it may found
    the federation (no --join: a new CA). None: it must enrol."""
    files = files_of(data_dir)
    if files.ca_dir is None and _usable(files, name):
        return files
    if files.ca_dir is None and (not may_found or files.ca_cert.exists()):
        return None  # enrolled once (its certificate expired or was lost): never a second CA
    if files.ca_dir is None:
        ca.init(data_dir / CA_DIR, name=f"roam federation CA (founded by {name})")
        for path in (data_dir / CA_DIR).iterdir():  # the data dir holds nothing readable by others
            path.chmod(0o600)
        files = files_of(data_dir)
        log.warning("made a federation CA in %s (this cluster signs the others' joins)", files.ca_dir)
    assert files.ca_dir is not None
    if not _usable(files, name):
        key = _own_key(files)
        cert = sign_join(files.ca_dir, cluster=name, csr_pem=_csr(key, name), ips=(addr,), held=lambda n: False)
        ca.write_file(files.cert, cert[0], mode=0o600)
        ca.write_file(files.ca_cert, cert[1], mode=0o600)
    return files


def _csr(key: ec.EllipticCurvePrivateKey, name: str) -> bytes:
    return (x509.CertificateSigningRequestBuilder()
            .subject_name(x509.Name([x509.NameAttribute(x509.oid.NameOID.COMMON_NAME, name)]))
            .sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM))


def sign_join(ca_dir: Path, *, cluster: str, csr_pem: bytes, ips: tuple[str, ...],
              held: Callable[[str], bool]) -> tuple[bytes, bytes]:
    """The CA keeper's side: (certificate PEM, CA PEM) for a join, first come first served."""
    csr = ca.csr_naming(csr_pem, cluster)
    if csr is None:
        raise JoinRefused(403, f"csr: must be signed by its key and name exactly the joining cluster {cluster}")
    holders = holders_of(ca_dir)
    key_id = _spki(csr.public_key())
    if holders.get(cluster, key_id) != key_id and held(cluster):
        raise JoinRefused(409, f"name: {cluster} is held by a live member with another key (first come, first "
                               "served; it is free again once Serf reports that member failed or left)")
    try:
        addresses = ca.check_request(ca_dir, cluster, ca.CLUSTER_DAYS, ips)
    except ca.CAError as exc:
        if "revoked" in str(exc):
            raise JoinRefused(403, str(exc).removeprefix("--")) from exc
        raise
    cert = ca.sign_key(ca_dir, cluster=cluster, public_key=csr.public_key(), days=ca.CLUSTER_DAYS,
                       addresses=addresses)
    holders[cluster] = key_id
    save_holders(ca_dir, holders)
    return cert.public_bytes(serialization.Encoding.PEM), (ca_dir / ca.CA_CERT).read_bytes()


def save_holders(ca_dir: Path, holders: dict[str, str]) -> None:
    """Which key holds each name (first come, first served), 0600 in the CA's directory."""
    ca.write_file(ca_dir / HOLDERS, (json.dumps(holders, indent=1, sort_keys=True) + "\n").encode(), mode=0o600)


def holders_of(ca_dir: Path) -> dict[str, str]:
    try:
        raw = json.loads((ca_dir / HOLDERS).read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        raise ca.CAError(f"{ca_dir / HOLDERS}: unreadable ({exc})") from exc
    return {str(k): str(v) for k, v in raw.items()} if isinstance(raw, dict) else {}


def join_url(target: str, api_port: int, *, scheme: str = "http") -> str:
    """A --join target (IP[:GOSSIP-PORT], [IPv6]:PORT) -> its admin API, on our own --api-port
    and scheme (https when the admin API has --tls-cert: the same setup on every agent)."""
    host = target
    if target.startswith("["):
        host = target[1:target.index("]")]
    elif target.count(":") == 1:
        host = target.split(":")[0]
    return f"{scheme}://{join_hostport(host, api_port)}"


class _Unchecked:
    """The join call over an admin API on https (--tls-cert): the joiner has no CA to check the
    server with yet; the answer's HMAC is what it trusts (PeerClient's PeerTLS)."""

    def __init__(self) -> None:
        self.ctx = ssl.create_default_context()
        self.ctx.check_hostname, self.ctx.verify_mode = False, ssl.CERT_NONE

    def client_ssl(self, base_url: str) -> tuple[ssl.SSLContext, str | None]:
        return self.ctx, None

    def server_refusal(self, peercert: dict[str, Any] | None, url: str) -> str | None:
        return None


class Enrolment:
    """A joiner's side: ask the --join targets until one answers with a checked certificate."""

    def __init__(self, *, name: str, addr: str, data_dir: Path, join: tuple[str, ...], api_port: int,
                 secret: bytes, stop: asyncio.Event, admin_tls: bool = False) -> None:
        self.name, self.addr, self.secret, self.stop = name, addr, secret, stop
        self.files = files_of(data_dir)
        self.urls = [join_url(t, api_port, scheme="https" if admin_tls else "http") for t in join]
        self.tls = _Unchecked() if admin_tls else None

    async def run(self, *, give_up_after: float | None = None) -> AutoFiles | None:
        """The certificate; None once `give_up_after` seconds passed in which no target held or
        reached a CA (each unreachable or answering 503): the caller may found one."""
        if not self.urls:
            raise EnrolmentError(f"{self.files.cert}: no usable certificate of the federation CA in the data dir "
                                 "and no --join to enrol at (an agent without --join founds a CA only on a data dir "
                                 "that never had one)")
        key = _own_key(self.files)
        csr = _csr(key, self.name)
        delay, logged, started = FIRST_RETRY, -LOG_EVERY, time.monotonic()
        async with PeerClient(self.secret, sender=self.name, tls=self.tls) as client:
            while True:
                reasons, no_ca = [], True
                for url in self.urls:
                    try:
                        reply = await client.call(url, JOIN_PATH, {"from": self.name, "csr": csr, "ip": self.addr},
                                                  timeout=10.0)
                        self._install(key, csr, reply, source=url)
                        log.warning("enrolled at %s in %.2fs: certificate for %s in %s", url,
                                    time.monotonic() - started, self.name, self.files.cert.parent)
                        return self.files
                    except PeerRefused as exc:
                        reasons.append(f"{url}: refused {exc.status}: {exc.message}")
                        no_ca = no_ca and exc.status == 503
                    except PeerUnreachable as exc:
                        reasons.append(f"{url}: {exc}")
                    except (PeerError, TrustError) as exc:
                        reasons.append(f"{url}: {exc}")
                        no_ca = False
                now = time.monotonic()
                if give_up_after is not None and no_ca and now - started >= give_up_after:
                    log.warning("none of the peers this agent knew holds or reaches a federation CA after %.0fs: %s",
                                now - started, "; ".join(reasons))
                    return None
                if now - logged >= LOG_EVERY or any(" refused 40" in r for r in reasons) and now - logged >= 5:
                    logged = now
                    hint = (" (401: this agent's federation secret, --secret-file, is not the federation's: "
                            "its join is signed with another one)" if any(" refused 401" in r for r in reasons) else "")
                    log.warning("waiting for a certificate (retrying every %.1f s at most): %s%s", MAX_RETRY,
                                "; ".join(reasons), hint)
                if not await wait_set(self.stop, delay):
                    delay = min(delay * 2, MAX_RETRY)
                    continue
                raise EnrolmentAborted("stopped while waiting for a certificate from the federation CA")

    def _install(self, key: ec.EllipticCurvePrivateKey, csr: bytes, reply: object, *, source: str) -> None:
        if not isinstance(reply, dict) or not all(isinstance(reply.get(k), bytes) for k in ("cert", "ca", "mac")):
            raise TrustError(f"{source}: a join answer without cert, ca and mac")
        cert_pem, ca_pem = reply["cert"], reply["ca"]
        if not hmac.compare_digest(reply["mac"], reply_mac(self.secret, csr=csr, cert=cert_pem, ca_pem=ca_pem)):
            raise TrustError(f"{source}: the join answer's HMAC is wrong (not from a holder of the federation secret)")
        cert = load_cert(cert_pem, what=f"certificate from {source}")
        check_issued_by(cert, load_cert(ca_pem, what=f"CA from {source}"), what=f"certificate from {source}")
        if cluster_of(cert) != self.name or not same_key(cert.public_key(), key.public_key()):
            raise TrustError(f"{source}: the certificate is not for {self.name}'s key")
        ca.write_file(self.files.ca_cert, ca_pem, mode=0o600)  # (the data dir: nothing readable by others)
        ca.write_file(self.files.cert, cert_pem, mode=0o600)


def forget_identity(data_dir: Path) -> None:
    """Drop this agent's automatic identity and CA (a lone founder yielding to an older CA,
    peer.trust.keepers): the next start enrols at its known peers."""
    from peer.trust.identity import CERTS_FILE, CRL_FILE, PAIR_FILE

    for directory in (data_dir / CA_DIR, data_dir / IDENTITY_DIR):
        shutil.rmtree(directory, ignore_errors=True)
    for name in (CERTS_FILE, CRL_FILE, PAIR_FILE):
        (data_dir / name).unlink(missing_ok=True)


async def automatic_identity(cfg: AgentConfig, *, secret: bytes, stop: asyncio.Event,
                             owner_of: Callable[[str], str | None], peer_url: str) -> tuple[Identity, Path | None]:
    """The agent's identity (automatic unless --no-peer-tls), and the CA directory when it keeps
    the CA: the files kept in the data dir, a new CA when it founds the federation (no --join and
    no known peers), else a certificate from the CA through a join target or a peer it knew
    (waits for one; EnrolmentAborted when `stop` is set)."""
    from peer.federation.gossip import known_peers

    started = time.monotonic()
    targets = tuple(dict.fromkeys([*cfg.join, *known_peers(cfg.data_dir)]))
    files = local_identity(name=cfg.name, addr=cfg.addr, data_dir=cfg.data_dir, may_found=not targets)
    if files is None:
        # Without --join, the peers it knew are a hint, not an order: if none of them holds or
        # reaches a CA (a whole federation upgraded to identity at once, each waiting for the
        # others), this agent founds one after FOUND_AFTER, as a first agent would.
        files = await Enrolment(name=cfg.name, addr=cfg.addr, data_dir=cfg.data_dir, join=targets,
                                api_port=cfg.api_port, secret=secret, stop=stop, admin_tls=cfg.tls
                                ).run(give_up_after=None if cfg.join else FOUND_AFTER)
        if files is None:
            files = local_identity(name=cfg.name, addr=cfg.addr, data_dir=cfg.data_dir, may_found=True)
        if files is None:
            raise EnrolmentError(f"{cfg.data_dir / IDENTITY_DIR}: enrolled once, its certificate lost, and no peer "
                                 "it knew reaches a federation CA; give --join")
    log.debug("automatic identity ready in %.3fs%s", time.monotonic() - started,
             " (this cluster keeps the federation CA)" if files.ca_dir else "")
    identity = Identity(name=cfg.name, ca_cert=files.ca_cert, cert=files.cert, key=files.key,
                        data_dir=cfg.data_dir, owner_of=owner_of)
    identity.auto = {"peer": peer_url, "ca_keeper": files.ca_dir is not None,
                     "ca_dir": str(files.ca_dir) if files.ca_dir else None}
    return identity, files.ca_dir
