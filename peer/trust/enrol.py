"""One-time join tokens: a new cluster gets its certificate from the CA kept on one chosen
cluster, without the operator carrying files between hosts.

    at the CA:        roam ca token --dir CA --cluster c4 [--ttl 600]
                      -> roamjoin.c4.<secret>.<sha256 of the CA certificate>
    the CA's agent:   roam agent ... --ca-dir CA (and its own --ca-cert/--cert/--key)
    on c4's host:     roam ca enrol --api https://CA-AGENT:7070 --token T --out DIR [--ip ADDR]

`enrol` first fetches the CA certificate (`GET /v1/trust/ca`, open: it is public) and takes it
only if its SHA-256 is the one inside the token, so nobody between the two can substitute
another CA; then, over TLS checked against that CA (the CA agent's certificate must carry its
address: `--ip`), it sends the token and a CSR for a key that never leaves the host
(`POST /v1/trust/enrol`, open: the token is the credential). The CA's agent signs a
certificate naming exactly the token's cluster, once: the token is spent, and refused after
its TTL. Only the token's SHA-256 is stored (CA/tokens.json).
"""
from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from peer.runtime.lazyimport import lazy

if TYPE_CHECKING:
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization
else:  # loaded on first use (peer.runtime.lazyimport)
    x509 = lazy("cryptography.x509")
    serialization = lazy("cryptography.hazmat.primitives.serialization")

from peer.trust import ca

TOKENS = "tokens.json"
PREFIX = "roamjoin"
MAX_TTL = 24 * 3600


class EnrolRefused(ca.CAError):
    """A join token or CSR the CA does not accept (unknown, spent, expired, another cluster)."""


def fingerprint(ca_pem: bytes) -> str:
    """SHA-256 of the CA certificate (DER), the value a token carries."""
    der = x509.load_pem_x509_certificate(ca_pem).public_bytes(serialization.Encoding.DER)
    return hashlib.sha256(der).hexdigest()


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode("ascii", "replace")).hexdigest()


def _load(directory: Path) -> list[dict[str, Any]]:
    try:
        entries = json.loads((directory / TOKENS).read_text(encoding="utf-8"))["tokens"]
    except FileNotFoundError:
        return []
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ca.CAError(f"{directory / TOKENS}: unreadable ({exc})") from exc
    return list(entries)


def _save(directory: Path, entries: list[dict[str, Any]]) -> None:
    body = json.dumps({"tokens": entries}, indent=1) + "\n"
    ca.write_file(directory / TOKENS, body.encode("utf-8"), mode=0o600)


def make_token(directory: Path, *, cluster: str, ttl: float = 600.0, now: float | None = None) -> str:
    """A one-time token for `cluster`, valid `ttl` seconds (the CA's side: `roam ca token`)."""
    from peer.config import NAME_RE

    if not NAME_RE.match(cluster):
        raise ca.CAError(f"--cluster: {cluster!r} is not a cluster name (DNS-1123 label)")
    if not 1 <= ttl <= MAX_TTL:
        raise ca.CAError(f"--ttl: must be between 1 and {MAX_TTL} seconds")
    if any(i.cluster == cluster and i.revoked_at for i in ca.load_index(directory)):
        raise ca.CAError(f"--cluster: {cluster} is revoked at this CA; it gets no token")
    now = time.time() if now is None else now
    secret = secrets.token_hex(20)
    live = [e for e in _load(directory) if e["expires"] > now and not e["used"]]
    _save(directory, [*live, {"sha256": _digest(secret), "cluster": cluster, "expires": now + ttl, "used": None}])
    return f"{PREFIX}.{cluster}.{secret}.{fingerprint((directory / ca.CA_CERT).read_bytes())}"


def parse_token(token: str) -> tuple[str, str, str]:
    """(cluster, secret, CA fingerprint); CAError naming --token if it is not a join token."""
    parts = token.strip().split(".")
    if len(parts) != 4 or parts[0] != PREFIX or len(parts[3]) != 64:
        raise ca.CAError(f"--token: not a join token ({PREFIX}.CLUSTER.SECRET.CA-SHA256)")
    return parts[1], parts[2], parts[3]


def redeem(directory: Path, *, token: str, csr_pem: bytes, ips: tuple[str, ...] = (),
           now: float | None = None) -> tuple[bytes, bytes]:
    """The CA agent's side: spend the token, sign the CSR; (certificate PEM, CA PEM)."""
    try:
        cluster, secret, _ = parse_token(token)
    except ca.CAError as exc:
        raise EnrolRefused("token: not a join token") from exc
    now = time.time() if now is None else now
    entries = _load(directory)
    match = next((e for e in entries if hmac.compare_digest(e["sha256"], _digest(secret))), None)
    if match is None or match["cluster"] != cluster:
        raise EnrolRefused("token: unknown to this CA")
    if match["used"] is not None:
        raise EnrolRefused(f"token: already spent (at {match['used']:.0f})")
    if match["expires"] <= now:
        raise EnrolRefused("token: expired")
    csr = ca.csr_naming(csr_pem, cluster)
    if csr is None:
        raise EnrolRefused(f"csr: must be signed by its key and name exactly the token's cluster {cluster}")
    if any(i.cluster == cluster and i.revoked_at for i in ca.load_index(directory)):
        raise EnrolRefused(f"token: {cluster} is revoked at this CA")
    addresses = ca.check_request(directory, cluster, ca.CLUSTER_DAYS, ips)
    match["used"] = now  # spent before signing: a failure below cannot make it reusable
    _save(directory, entries)
    cert = ca.sign_key(directory, cluster=cluster, public_key=csr.public_key(), days=ca.CLUSTER_DAYS,
                    addresses=addresses)
    return cert.public_bytes(serialization.Encoding.PEM), (directory / ca.CA_CERT).read_bytes()


# -- the CA agent's routes (open paths: the CA certificate is public, the token is the credential) --
def add_enrol_routes(app: Any, *, ca_dir: Path | None, ca_pem: bytes | None) -> None:
    import logging

    from aiohttp import web

    from peer.api.http import APIError, ConflictError, read_json

    log = logging.getLogger(__name__)

    async def get_ca(request: web.Request) -> web.Response:
        if ca_pem is None:
            raise ConflictError("per-cluster identity is off on this agent (--ca-cert, --cert, --key)")
        return web.json_response({"ca": ca_pem.decode("ascii")})

    async def post_enrol(request: web.Request) -> web.Response:
        body = await read_json(request)
        if not isinstance(body, dict):
            raise APIError("expected an object {token, csr, ip}")
        unknown = sorted(set(body) - {"token", "csr", "ip"})
        if unknown:
            raise APIError(f"{unknown[0]}: unknown field", field=unknown[0])
        for key in ("token", "csr"):
            if not isinstance(body.get(key), str) or not body[key]:
                raise APIError(f"{key}: expected a string", field=key)
        ips = body.get("ip", [])
        if not isinstance(ips, list) or not all(isinstance(i, str) for i in ips) or len(ips) > 8:
            raise APIError("ip: expected a list of at most 8 addresses", field="ip")
        if ca_dir is None:
            raise ConflictError("this agent keeps no CA (roam agent --ca-dir): enrol at the one that does")
        try:
            cert, ca_cert = redeem(ca_dir, token=body["token"], csr_pem=body["csr"].encode("ascii", "replace"),
                                   ips=tuple(ips))
        except EnrolRefused as exc:
            log.warning("enrolment from %s refused: %s", request.remote, exc)
            raise APIError(str(exc), field=str(exc).split(":")[0], status=403) from exc
        except ca.CAError as exc:  # a CSR that is not one, an address that is not one
            message = str(exc).removeprefix("--")
            raise APIError(message, field=message.split(":")[0], status=422) from exc
        issued = x509.load_pem_x509_certificate(cert)
        log.warning("enrolled cluster %s from %s: serial %x", issued.subject.rfc4514_string(), request.remote,
                    issued.serial_number)
        return web.json_response({"cert": cert.decode("ascii"), "ca": ca_cert.decode("ascii")})

    app.router.add_get("/v1/trust/ca", get_ca)
    app.router.add_post("/v1/trust/enrol", post_enrol)
