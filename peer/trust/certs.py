"""What a cluster certificate and a revocation list say, checked against the federation CA. No I/O.

A cluster certificate names exactly one cluster, three times over so that every tool sees it:
the subject CN, a DNS SAN (clients check it during the handshake with server_hostname = the
cluster they mean to reach) and the URI SAN `roam://cluster/NAME`, which is the authority
here. Revocation is an X.509 CRL signed by the CA key (standard, `openssl crl -text` reads
it); its CRL number orders lists, so an agent keeps the highest it has seen and an old list
replayed by anyone changes nothing. Revoking a cluster revokes every serial the CA issued to
it (the CA's index knows them); a certificate the CA issues it later is a new serial.
"""
from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from peer.runtime.lazyimport import lazy

if TYPE_CHECKING:
    from cryptography import exceptions, x509
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec, ed25519
else:  # loaded on first use: an agent without TLS never pays for cryptography (peer.runtime.lazyimport)
    exceptions = lazy("cryptography.exceptions")
    x509 = lazy("cryptography.x509")
    ec = lazy("cryptography.hazmat.primitives.asymmetric.ec")
    ed25519 = lazy("cryptography.hazmat.primitives.asymmetric.ed25519")
    serialization = lazy("cryptography.hazmat.primitives.serialization")

from peer.errors import InvalidKind

URI_PREFIX = "roam://cluster/"


class TrustError(InvalidKind, ValueError):
    """A certificate or revocation list that is malformed, not from the CA, or names no cluster."""


def cluster_of(cert: x509.Certificate) -> str:
    """The cluster a certificate names (its `roam://cluster/NAME` URI SAN)."""
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound as exc:
        raise TrustError("certificate has no subjectAltName naming a cluster") from exc
    names = [u[len(URI_PREFIX):] for u in san.get_values_for_type(x509.UniformResourceIdentifier)
             if u.startswith(URI_PREFIX)]
    if len(names) != 1 or not names[0]:
        raise TrustError(f"certificate must name exactly one cluster ({URI_PREFIX}NAME), found {len(names)}")
    return names[0]


def cluster_of_peercert(peercert: Mapping[str, Any] | None) -> str | None:
    """The cluster named by a verified peer certificate as `ssl` reports it (`getpeercert()`)."""
    if not peercert:
        return None
    names = [value[len(URI_PREFIX):] for kind, value in peercert.get("subjectAltName", ())
             if kind == "URI" and isinstance(value, str) and value.startswith(URI_PREFIX)]
    return names[0] if len(names) == 1 and names[0] else None


def serial_of_peercert(peercert: Mapping[str, Any] | None) -> int | None:
    if not peercert or not isinstance(peercert.get("serialNumber"), str):
        return None
    try:
        return int(peercert["serialNumber"], 16)
    except ValueError:
        return None


def load_cert(pem: bytes, *, what: str) -> x509.Certificate:
    try:
        return x509.load_pem_x509_certificate(pem)
    except ValueError as exc:
        raise TrustError(f"{what}: not a PEM certificate") from exc


# Two releases of pyca/cryptography are supported: PyPI's (42 and newer) and Debian 12's
# python3-cryptography (38), which `make venv` prefers where it is installed because it links
# the system's OpenSSL, the one Python's own `ssl` already maps, where PyPI's wheel carries a
# second, static copy (about 5 MB more RSS per agent; issues 16 and 18). Version 38 lacks the
# timezone-aware validity dates and `verify_directly_issued_by`; these helpers give both.

def not_after(cert: x509.Certificate) -> dt.datetime:
    """The end of the certificate's validity, timezone-aware (UTC)."""
    aware: dt.datetime | None = getattr(cert, "not_valid_after_utc", None)
    return aware if aware is not None else cert.not_valid_after.replace(tzinfo=dt.timezone.utc)


def not_before(cert: x509.Certificate) -> dt.datetime:
    """The start of the certificate's validity, timezone-aware (UTC)."""
    aware: dt.datetime | None = getattr(cert, "not_valid_before_utc", None)
    return aware if aware is not None else cert.not_valid_before.replace(tzinfo=dt.timezone.utc)


def same_key(a: Any, b: Any) -> bool:
    """Two public keys are the same key (version 38's key objects do not compare by value)."""
    spki = serialization.PublicFormat.SubjectPublicKeyInfo
    return bool(a.public_bytes(serialization.Encoding.DER, spki) == b.public_bytes(serialization.Encoding.DER, spki))


def _verify_issued_by(cert: x509.Certificate, ca: x509.Certificate) -> None:
    """`cert.verify_directly_issued_by(ca)`, or the same checks where cryptography predates it:
    the issuer is the CA's subject and the CA's key made the signature over the TBS bytes."""
    verify = getattr(cert, "verify_directly_issued_by", None)
    if verify is not None:
        verify(ca)
        return
    if cert.issuer != ca.subject:
        raise ValueError("issuer name does not match the CA's subject")
    key = ca.public_key()
    if isinstance(key, ec.EllipticCurvePublicKey) and cert.signature_hash_algorithm is not None:
        key.verify(cert.signature, cert.tbs_certificate_bytes, ec.ECDSA(cert.signature_hash_algorithm))
    elif isinstance(key, ed25519.Ed25519PublicKey):
        key.verify(cert.signature, cert.tbs_certificate_bytes)
    else:
        raise TypeError(f"unsupported CA key type {type(key).__name__}")


def check_issued_by(cert: x509.Certificate, ca: x509.Certificate, *, what: str) -> None:
    """The certificate's signature is the CA's (TrustError otherwise)."""
    try:
        _verify_issued_by(cert, ca)
    except (ValueError, TypeError, exceptions.InvalidSignature) as exc:
        raise TrustError(f"{what}: not issued by the federation CA {ca.subject.rfc4514_string()}") from exc


def expires_in(cert: x509.Certificate, *, now: dt.datetime) -> float:
    return (not_after(cert) - now).total_seconds()


@dataclass(frozen=True)
class Revocations:
    """A verified revocation list: its number (higher wins) and the revoked serials."""

    number: int
    serials: frozenset[int]
    pem: bytes  # as signed by the CA, passed on unchanged to peers

    def revoked(self, serial: int | None) -> bool:
        return serial is not None and serial in self.serials


NO_REVOCATIONS = Revocations(number=-1, serials=frozenset(), pem=b"")


def load_crl(pem: bytes, *, ca: x509.Certificate) -> Revocations:
    """Parse and verify a revocation list: signed by the CA and carrying a CRL number."""
    try:
        crl = x509.load_pem_x509_crl(pem)
    except ValueError as exc:
        raise TrustError("not a PEM revocation list (X509 CRL)") from exc
    try:
        if crl.issuer != ca.subject:
            raise TrustError(f"revocation list issued by {crl.issuer.rfc4514_string()}, not by the federation CA")
        if not crl.is_signature_valid(ca.public_key()):  # type: ignore[arg-type]
            raise TrustError("revocation list signature is not the federation CA's")
        number = crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number
        serials = frozenset(r.serial_number for r in crl)
    except x509.ExtensionNotFound as exc:
        raise TrustError("revocation list has no CRL number") from exc
    except (TypeError, ValueError) as exc:  # another key type, a malformed extension or entry
        raise TrustError(f"revocation list not acceptable: {exc}") from exc
    return Revocations(number=int(number), serials=serials, pem=pem)


def common_name(cert: x509.Certificate) -> str:
    attrs = cert.subject.get_attributes_for_oid(x509.oid.NameOID.COMMON_NAME)
    return str(attrs[0].value) if attrs else ""
