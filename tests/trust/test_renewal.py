"""Certificate renewal before expiry with two real agents on loopback (127.0.60.11-12): c1 keeps
the CA (--ca-dir); c2 starts with a certificate that has less than a third of its lifetime
left, asks c1 to sign a new key, authenticated by the certificate it still holds, installs and
serves it without a restart; its record versions signed with the new key are taken by c1.
Unit: when a certificate is due, and what the CA refuses to sign."""
from __future__ import annotations

import datetime as dt
import ipaddress
import ssl
import sys
from pathlib import Path

import aiohttp
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from peer.trust import ca
from peer.trust.certs import URI_PREFIX, not_after
from peer.trust.renew import RenewRefused, due, sign_renewal
from peer.runtime.waiting import wait_until
from tests.harness import TOKEN, federation

ADDRS = {"c1": "127.0.60.11", "c2": "127.0.60.12"}
CLASSIFIER = [sys.executable, "-m", "peer.samples.classifier", "--host", "{host}", "--port", "{port}"]
NOW = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)


def test_due_once_a_third_of_the_lifetime_is_left() -> None:
    start, end = NOW, NOW + dt.timedelta(days=90)
    assert not due(start, end, now=NOW + dt.timedelta(days=59))
    assert due(start, end, now=NOW + dt.timedelta(days=61))
    assert not due(start, end, now=end + dt.timedelta(seconds=1))  # expired: it no longer authenticates


def csr_for(cluster: str) -> bytes:
    key = ec.generate_private_key(ec.SECP256R1())
    return (x509.CertificateSigningRequestBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cluster)]))
            .sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM))


def test_the_ca_signs_only_the_asking_cluster_and_not_a_revoked_one(tmp_path: Path) -> None:
    ca.init(tmp_path / "ca")
    cert, _ = sign_renewal(tmp_path / "ca", cluster="c2", csr_pem=csr_for("c2"), ips=[])
    assert x509.load_pem_x509_certificate(cert).subject.rfc4514_string() == "CN=c2"
    with pytest.raises(RenewRefused, match="name exactly the asking cluster c2"):
        sign_renewal(tmp_path / "ca", cluster="c2", csr_pem=csr_for("c1"), ips=[])
    ca.issue(tmp_path / "ca", cluster="c3", out=tmp_path / "c3")
    ca.revoke(tmp_path / "ca", cluster="c3")
    with pytest.raises(RenewRefused, match="revoked"):
        sign_renewal(tmp_path / "ca", cluster="c3", csr_pem=csr_for("c3"), ips=[])


def short_lived(ca_dir: Path, *, cluster: str, ip: str, out: Path) -> int:
    """A certificate of the CA valid 10 more minutes out of 70: renewal is due at once."""
    ca_key = serialization.load_pem_private_key((ca_dir / "ca.key").read_bytes(), password=None)
    assert isinstance(ca_key, ec.EllipticCurvePrivateKey)
    ca_cert = x509.load_pem_x509_certificate((ca_dir / "ca.pem").read_bytes())
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.timezone.utc)
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cluster)]))
            .issuer_name(ca_cert.subject).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(hours=1)).not_valid_after(now + dt.timedelta(minutes=10))
            .add_extension(x509.SubjectAlternativeName([
                x509.DNSName(cluster), x509.UniformResourceIdentifier(URI_PREFIX + cluster),
                x509.IPAddress(ipaddress.ip_address(ip))]), critical=False)
            .sign(ca_key, hashes.SHA256()))
    out.mkdir(parents=True, exist_ok=True)
    ca.write_file(out / "cluster.key", key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                         serialization.NoEncryption()), mode=0o600)
    ca.write_file(out / "cluster.pem", cert.public_bytes(serialization.Encoding.PEM), mode=0o644)
    ca.write_file(out / "ca.pem", (ca_dir / "ca.pem").read_bytes(), mode=0o644)
    return int(cert.serial_number)


@pytest.mark.integration
async def test_an_agent_renews_its_certificate_at_the_ca_holding_cluster(tmp_path: Path) -> None:
    ca.init(tmp_path / "ca")
    ca.issue(tmp_path / "ca", cluster="c1", out=tmp_path / "c1", ips=(ADDRS["c1"],))
    old = short_lived(tmp_path / "ca", cluster="c2", ip=ADDRS["c2"], out=tmp_path / "c2")
    ctx = ssl.create_default_context(cafile=str(tmp_path / "ca" / "ca.pem"))
    headers = {"Authorization": f"Bearer {TOKEN}"}
    async with federation(tmp_path) as fed, aiohttp.ClientSession() as s:
        for name, addr in ADDRS.items():
            d = tmp_path / name
            fed.add(name, addr, join=[ADDRS["c1"]] if name != "c1" else [], extra=[
                "--no-auto-migrate", "--ca-cert", str(tmp_path / "ca" / "ca.pem" if name == "c1" else d / "ca.pem"),
                "--cert", str(d / "cluster.pem"), "--key", str(d / "cluster.key"),
                *(["--ca-dir", str(tmp_path / "ca")] if name == "c1" else [])]).start()

        async def trust(name: str) -> dict[str, object]:
            async with s.get(f"https://{ADDRS[name]}:7070/v1/trust", ssl=ctx, headers=headers) as r:
                body: dict[str, object] = await r.json()
                return body

        async def renewed() -> bool:
            cert = (await trust("c2"))["cert"]
            return isinstance(cert, dict) and cert["serial"] != f"{old:x}"

        await wait_until(renewed, timeout=60, what="c2 renewed its certificate")
        cert = x509.load_pem_x509_certificate((tmp_path / "c2" / "cluster.pem").read_bytes())
        assert cert.serial_number != old
        assert (not_after(cert) - dt.datetime.now(dt.timezone.utc)).days >= ca.CLUSTER_DAYS - 1
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        assert [str(a) for a in san.get_values_for_type(x509.IPAddress)] == [ADDRS["c2"]]
        assert (tmp_path / "c2" / "cluster.key").stat().st_mode & 0o777 == 0o600
        assert "certificate renewed by c1" in fed.agents["c2"].log_text()
        assert "renewed the certificate of cluster c2" in fed.agents["c1"].log_text()

        # c2's records, signed with its new key, are taken by c1 (a service homed at c2, entries 2).
        async with s.post(f"https://{ADDRS['c2']}:7070/v1/services", ssl=ctx, headers=headers, json={
                "name": "after", "port": 8080, "health": {"path": "/healthz"}, "command": CLASSIFIER,
                "entries": 2}) as r:
            assert r.status == 201, await r.text()

        async def at_c1() -> bool:
            async with s.get(f"https://{ADDRS['c1']}:7070/v1/services/after", ssl=ctx, headers=headers) as r:
                return r.status == 200 and (await r.json())["state"] == "running"

        await wait_until(at_c1, timeout=60, what="c1 holds c2's new record")
        async with s.get(f"https://{ADDRS['c1']}:7070/metrics", ssl=ctx, headers=headers) as r:
            assert "roam_record_versions_refused_total{" not in await r.text()
