"""The federation CA's directory (`roam ca init|issue|revoke`): its key, its certificate, an
index of what it issued and the current revocation list.

    DIR/ca.key     the CA's private key (0600): keep DIR offline or on one chosen host
    DIR/ca.pem     the CA certificate, given to every agent as --ca-cert
    DIR/index.json every certificate issued: serial, cluster, expiry, revoked-at
    DIR/crl.pem    the revocation list in force (CRL number N), pushed to one agent
                   (`roam ca push`), which spreads it to all (peer.trust.spread)

Issuing writes OUT/cluster.key (0600), OUT/cluster.pem and a copy of OUT/ca.pem, each by
rename, the key first: an agent watching the files (rotation) sees a complete pair. Keys are
ECDSA P-256: small certificates and cheap handshakes.

The other way keeps a cluster's key on its own host: `roam ca request` there writes the key
and a CSR naming the cluster; the operator approves it at the CA with `roam ca sign`, which
shows what it signs (cluster, key fingerprint) and returns only a certificate.
"""
from __future__ import annotations

import datetime as dt
import ipaddress
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lb.files import write_atomic
from peer.runtime.lazyimport import lazy
from peer.trust.certs import URI_PREFIX, TrustError, not_after, same_key

if TYPE_CHECKING:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
else:  # loaded on first use: only a CA, an enrolment or a TLS agent needs them (peer.runtime.lazyimport)
    x509 = lazy("cryptography.x509")
    hashes = lazy("cryptography.hazmat.primitives.hashes")
    serialization = lazy("cryptography.hazmat.primitives.serialization")
    ec = lazy("cryptography.hazmat.primitives.asymmetric.ec")

CA_KEY, CA_CERT, INDEX, CRL = "ca.key", "ca.pem", "index.json", "crl.pem"
OUT_KEY, OUT_CERT, OUT_CA = "cluster.key", "cluster.pem", "ca.pem"
CA_DAYS = 3650
CLUSTER_DAYS = 90
CRL_DAYS = 3650  # peers keep the highest-numbered list; its nextUpdate is informative only


class CAError(TrustError):
    """The CA directory cannot do what was asked (missing, already there, revoked, bad input)."""


@dataclass(frozen=True)
class Issued:
    serial: int
    cluster: str
    not_after: str
    revoked_at: str | None = None

    def as_json(self) -> dict[str, Any]:
        return {"serial": f"{self.serial:x}", "cluster": self.cluster, "not_after": self.not_after,
                "revoked_at": self.revoked_at}

    @classmethod
    def from_json(cls, entry: dict[str, Any]) -> Issued:
        """The inverse of `as_json` (the index file, and the CA keepers' exchange); KeyError,
        TypeError or ValueError on a malformed entry."""
        revoked = entry.get("revoked_at")
        return cls(int(entry["serial"], 16), str(entry["cluster"]), str(entry["not_after"]),
                   str(revoked) if revoked else None)


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def write_file(path: Path, data: bytes, *, mode: int) -> None:
    """Write by rename, never leaving a half-written file (watchers reload on change)."""
    write_atomic(path, data, mode=mode)


def mode_of(path: Path, default: int) -> int:
    """The file's permission bits (kept when it is rewritten: a CA kept in an agent's private
    data dir stays 0600), or `default` for a new file."""
    try:
        return path.stat().st_mode & 0o777
    except OSError:
        return default


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def init(directory: Path, *, name: str = "roam federation CA", days: int = CA_DAYS) -> Path:
    """Create the CA (key 0600, self-signed certificate, empty index, CRL number 0)."""
    if (directory / CA_KEY).exists():
        raise CAError(f"{directory / CA_KEY} exists already: one CA per directory")
    directory.mkdir(parents=True, exist_ok=True)
    os.chmod(directory, 0o700)
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(x509.oid.NameOID.COMMON_NAME, name)])
    now = _now()
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=False, content_commitment=False, key_encipherment=False,
                                         data_encipherment=False, key_agreement=False, key_cert_sign=True,
                                         crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(key, hashes.SHA256()))
    write_file(directory / CA_KEY, _key_pem(key), mode=0o600)
    write_file(directory / CA_CERT, cert.public_bytes(serialization.Encoding.PEM), mode=0o644)
    _save_index(directory, [])
    _write_crl(directory, key, cert, number=0, revoked=[])
    return directory / CA_CERT


def _load(directory: Path) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    try:
        key_pem = (directory / CA_KEY).read_bytes()
        cert_pem = (directory / CA_CERT).read_bytes()
    except FileNotFoundError as exc:
        raise CAError(f"{directory}: no CA here (run `roam ca init --dir {directory}`)") from exc
    except PermissionError as exc:
        raise CAError(f"{exc.filename}: not readable") from exc
    key = serialization.load_pem_private_key(key_pem, password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise CAError(f"{directory / CA_KEY}: not an EC key")
    return key, x509.load_pem_x509_certificate(cert_pem)


def load_index(directory: Path) -> list[Issued]:
    try:
        raw = json.loads((directory / INDEX).read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise CAError(f"{directory}: no CA here (run `roam ca init --dir {directory}`)") from exc
    except ValueError as exc:
        raise CAError(f"{directory / INDEX}: not JSON") from exc
    return [Issued.from_json(e) for e in raw["issued"]]


def _save_index(directory: Path, issued: list[Issued]) -> None:
    body = json.dumps({"issued": [i.as_json() for i in issued]}, indent=1) + "\n"
    write_file(directory / INDEX, body.encode("utf-8"), mode=0o600)


def check_request(directory: Path, cluster: str, days: int, ips: tuple[str, ...]) -> list[Any]:
    from peer.config import NAME_RE

    if not NAME_RE.match(cluster):
        raise CAError(f"--cluster: {cluster!r} is not a cluster name (DNS-1123 label)")
    if not 1 <= days <= CA_DAYS:
        raise CAError(f"--days: must be between 1 and {CA_DAYS}")
    try:
        addresses = [ipaddress.ip_address(ip) for ip in ips]
    except ValueError as exc:
        raise CAError(f"--ip: {exc}") from exc
    if any(i.cluster == cluster and i.revoked_at for i in load_index(directory)):
        raise CAError(f"--cluster: {cluster} is revoked at this CA; it gets no new certificate")
    return addresses


def csr_naming(csr_pem: bytes, cluster: str) -> x509.CertificateSigningRequest | None:
    """The request if it is signed by its own key and names exactly `cluster` (its only CN),
    else None for the caller to refuse in its own terms; CAError if it is not a PEM request."""
    try:
        csr = x509.load_pem_x509_csr(csr_pem)
    except ValueError as exc:
        raise CAError("csr: not a PEM certificate signing request") from exc
    names = csr.subject.get_attributes_for_oid(x509.oid.NameOID.COMMON_NAME)
    return csr if csr.is_signature_valid and len(names) == 1 and names[0].value == cluster else None


def sign_key(directory: Path, *, cluster: str, public_key: Any, days: int, addresses: list[Any]) -> x509.Certificate:
    """A certificate naming `cluster` for `public_key`, recorded in the index."""
    ca_key, ca_cert = _load(directory)
    now = _now()
    until = min(now + dt.timedelta(days=days), not_after(ca_cert))
    sans: list[x509.GeneralName] = [x509.DNSName(cluster), x509.UniformResourceIdentifier(URI_PREFIX + cluster)]
    sans += [x509.IPAddress(a) for a in addresses]
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(x509.oid.NameOID.COMMON_NAME, cluster)]))
            .issuer_name(ca_cert.subject).public_key(public_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(until)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.SubjectAlternativeName(sans), critical=False)
            .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH, x509.oid.ExtendedKeyUsageOID.CLIENT_AUTH]),
                           critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256()))
    _save_index(directory, [*load_index(directory), Issued(cert.serial_number, cluster, until.isoformat())])
    return cert


def request(*, cluster: str, out: Path) -> Path:
    """On the cluster's host: a new key (OUT/cluster.key, 0600, never leaves) and a certificate
    signing request naming the cluster (OUT/cluster.csr), for the operator to approve."""
    from peer.config import NAME_RE

    if not NAME_RE.match(cluster):
        raise CAError(f"--cluster: {cluster!r} is not a cluster name (DNS-1123 label)")
    key = ec.generate_private_key(ec.SECP256R1())
    csr = (x509.CertificateSigningRequestBuilder()
           .subject_name(x509.Name([x509.NameAttribute(x509.oid.NameOID.COMMON_NAME, cluster)]))
           .sign(key, hashes.SHA256()))
    out.mkdir(parents=True, exist_ok=True)
    pending = out / f".{OUT_KEY}.pending"  # becomes cluster.key with the certificate (install)
    write_file(pending, _key_pem(key), mode=0o600)
    write_file(out / "cluster.csr", csr.public_bytes(serialization.Encoding.PEM), mode=0o644)
    return out / "cluster.csr"


@dataclass(frozen=True)
class Request:
    cluster: str
    fingerprint: str  # SHA-256 of the public key, for the operator to compare with the host's


def read_request(path: Path) -> tuple[Request, x509.CertificateSigningRequest]:
    try:
        csr = x509.load_pem_x509_csr(path.read_bytes())
    except (OSError, ValueError) as exc:
        raise CAError(f"--csr: {path}: not a PEM certificate signing request") from exc
    if not csr.is_signature_valid:
        raise CAError(f"--csr: {path}: its signature does not match its key")
    names = csr.subject.get_attributes_for_oid(x509.oid.NameOID.COMMON_NAME)
    if len(names) != 1:
        raise CAError(f"--csr: {path}: must name one cluster in its CN")
    der = csr.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    digest = hashes.Hash(hashes.SHA256())
    digest.update(der)
    return Request(str(names[0].value), digest.finalize().hex()), csr


def sign(directory: Path, *, csr_path: Path, cluster: str, out: Path, days: int = CLUSTER_DAYS,
         ips: tuple[str, ...] = ()) -> Issued:
    """At the CA: approve a request. `cluster` must be the name the request carries (the
    operator says what they approve); the certificate goes to `out` (cluster.pem, ca.pem)."""
    req, csr = read_request(csr_path)
    if req.cluster != cluster:
        raise CAError(f"--cluster: the request names {req.cluster!r}, not {cluster!r}")
    addresses = check_request(directory, cluster, days, ips)
    cert = sign_key(directory, cluster=cluster, public_key=csr.public_key(), days=days, addresses=addresses)
    _, ca_cert = _load(directory)
    out.mkdir(parents=True, exist_ok=True)
    write_file(out / OUT_CA, ca_cert.public_bytes(serialization.Encoding.PEM), mode=0o644)
    write_file(out / OUT_CERT, cert.public_bytes(serialization.Encoding.PEM), mode=0o644)
    return Issued(cert.serial_number, cluster, not_after(cert).isoformat())


def install_pem(pem: bytes, *, out: Path) -> Path:
    """`install` of a certificate held in memory (enrolment)."""
    tmp = out / ".cluster.pem.signed"
    write_file(tmp, pem, mode=0o644)
    try:
        return install(cert=tmp, out=out)
    finally:
        tmp.unlink(missing_ok=True)


def install(*, cert: Path, out: Path) -> Path:
    """On the cluster's host: put the signed certificate beside the pending key (key first,
    then the certificate: a watching agent reloads a matching pair)."""
    pending = out / f".{OUT_KEY}.pending"
    if not pending.exists():
        raise CAError(f"--out: {out} has no pending key (run `roam ca request` there first)")
    try:
        pem = cert.read_bytes()
        signed = x509.load_pem_x509_certificate(pem)
    except (OSError, ValueError) as exc:
        raise CAError(f"--cert: {cert}: not a PEM certificate") from exc
    key = serialization.load_pem_private_key(pending.read_bytes(), password=None)
    if not same_key(signed.public_key(), key.public_key()):
        raise CAError(f"--cert: {cert} is not for the key pending in {out} (another request's certificate?)")
    os.replace(pending, out / OUT_KEY)
    write_file(out / OUT_CERT, pem, mode=0o644)
    return out / OUT_CERT


def issue(directory: Path, *, cluster: str, out: Path, days: int = CLUSTER_DAYS,
          ips: tuple[str, ...] = ()) -> Issued:
    """A new key and certificate naming `cluster`, valid `days`, written into `out`.

    Issuing again for the same cluster is rotation (a new serial; the old one stays valid
    until it expires). A revoked cluster gets nothing: revoking means the CA stopped trusting
    it. `ips` are added as IP SANs so that admin clients (the CLI, a browser) can check the
    agent's address against its certificate.
    """
    addresses = check_request(directory, cluster, days, ips)
    key = ec.generate_private_key(ec.SECP256R1())
    cert = sign_key(directory, cluster=cluster, public_key=key.public_key(), days=days, addresses=addresses)
    _, ca_cert = _load(directory)
    out.mkdir(parents=True, exist_ok=True)
    write_file(out / OUT_KEY, _key_pem(key), mode=0o600)
    write_file(out / OUT_CA, ca_cert.public_bytes(serialization.Encoding.PEM), mode=0o644)
    write_file(out / OUT_CERT, cert.public_bytes(serialization.Encoding.PEM), mode=0o644)
    return Issued(cert.serial_number, cluster, not_after(cert).isoformat())


def revoke(directory: Path, *, cluster: str) -> tuple[int, list[Issued]]:
    """Revoke every certificate issued to `cluster`; writes DIR/crl.pem with the next CRL number.
    Returns (CRL number, the certificates newly revoked)."""
    ca_key, ca_cert = _load(directory)
    issued = load_index(directory)
    if not any(i.cluster == cluster for i in issued):
        raise CAError(f"--cluster: this CA issued nothing to {cluster!r}")
    stamp = _now().isoformat()
    newly = [i for i in issued if i.cluster == cluster and not i.revoked_at]
    issued = [Issued(i.serial, i.cluster, i.not_after, stamp) if i in newly else i for i in issued]
    _save_index(directory, issued)
    number = crl_number(directory) + 1
    _write_crl(directory, ca_key, ca_cert, number=number, revoked=[i for i in issued if i.revoked_at])
    return number, [i for i in issued if i.cluster == cluster and i.revoked_at == stamp]


def save_index(directory: Path, issued: list[Issued]) -> None:
    """Write the index (the CA's keepers merge theirs: peer.trust.keepers)."""
    _save_index(directory, issued)


def reissue_crl(directory: Path, *, above: int, also: frozenset[int] = frozenset()) -> bytes:
    """A new revocation list of everything the index marks revoked and the serials `also` (the
    list in force may name certificates this keeper never issued), numbered above both this
    directory's list and `above`: what keepers do when their merged index revokes more than the
    list in force (peer.trust.keepers)."""
    ca_key, ca_cert = _load(directory)
    number = max(crl_number(directory), above) + 1
    revoked = [i for i in load_index(directory) if i.revoked_at]
    known = {i.serial for i in revoked}
    revoked += [Issued(s, "?", "", _now().isoformat()) for s in sorted(also - known)]
    _write_crl(directory, ca_key, ca_cert, number=number, revoked=revoked)
    return (directory / CRL).read_bytes()


def crl_number(directory: Path) -> int:
    try:
        crl = x509.load_pem_x509_crl((directory / CRL).read_bytes())
    except FileNotFoundError:
        return 0
    return int(crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number)


def _write_crl(directory: Path, key: ec.EllipticCurvePrivateKey, cert: x509.Certificate, *, number: int,
               revoked: list[Issued]) -> None:
    now = _now()
    builder = (x509.CertificateRevocationListBuilder().issuer_name(cert.subject)
               .last_update(now).next_update(now + dt.timedelta(days=CRL_DAYS))
               .add_extension(x509.CRLNumber(number), critical=False))
    for entry in revoked:
        at = dt.datetime.fromisoformat(entry.revoked_at) if entry.revoked_at else now
        builder = builder.add_revoked_certificate(
            x509.RevokedCertificateBuilder().serial_number(entry.serial).revocation_date(at).build())
    crl = builder.sign(key, hashes.SHA256())
    write_file(directory / CRL, crl.public_bytes(serialization.Encoding.PEM), mode=mode_of(directory / CRL, 0o644))
