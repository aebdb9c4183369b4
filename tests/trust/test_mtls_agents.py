"""Per-cluster identity with three real agents on loopback (127.0.33.x): mTLS on the peer API,
a peer speaking only as the cluster its certificate names, revocation reaching every member
within seconds (pushed, and pulled by a member that was down), certificate rotation without a
restart."""
from __future__ import annotations

import asyncio
import os
import signal
import ssl
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from peer.peering.client import PeerClient, PeerIdentityError, PeerRefused, PeerUnreachable
from peer.peering.wire import HEADER_FROM
from peer.trust import ca
from peer.trust.identity import Identity
from peer.runtime.waiting import wait_until
from tests.harness import SECRET, TOKEN, Federation, federation

pytestmark = pytest.mark.integration

ADDRS = {"c1": "127.0.33.1", "c2": "127.0.33.2", "c3": "127.0.33.3"}
CLASSIFIER = [sys.executable, "-m", "peer.samples.classifier", "--host", "{host}", "--port", "{port}"]


@dataclass
class CertTLS:
    """A client holding some cluster's certificate, saying whatever it likes (PeerClient's PeerTLS)."""

    ctx: ssl.SSLContext

    def client_ssl(self, base_url: str) -> tuple[ssl.SSLContext, str | None]:
        return self.ctx, None

    def server_refusal(self, peercert: dict[str, Any] | None, url: str) -> str | None:
        return None


def holder_of(base: Path, cluster: str | None) -> CertTLS:
    ctx = ssl.create_default_context(cafile=str(base / "ca" / "ca.pem"))
    ctx.check_hostname = False
    if cluster is not None:
        ctx.load_cert_chain(base / cluster / "cluster.pem", base / cluster / "cluster.key")
    return CertTLS(ctx)


async def peer_call(base: Path, *, cert: str | None, claims: str, to: str, path: str = "/peer/v1/ping",
                    body: object = None) -> object:
    async with PeerClient(SECRET.encode(), sender=claims, tls=holder_of(base, cert)) as client:
        return await client.call(f"https://{ADDRS[to]}:7070", path, body if body is not None else {})


class Admin:
    def __init__(self, base: Path) -> None:
        self.ctx = ssl.create_default_context(cafile=str(base / "ca" / "ca.pem"))
        self.session = aiohttp.ClientSession()

    async def call(self, name: str, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        async with self.session.request(method, f"https://{ADDRS[name]}:7070{path}", json=body, ssl=self.ctx,
                                        headers={"Authorization": f"Bearer {TOKEN}"},
                                        timeout=aiohttp.ClientTimeout(total=30)) as r:
            return r.status, await r.json(content_type=None)

    async def get(self, name: str, path: str) -> Any:
        status, body = await self.call(name, "GET", path)
        assert status == 200, (status, body)
        return body


def start(fed: Federation, base: Path, name: str) -> None:
    d = base / name
    agent = fed.agents.get(name) or fed.add(name, ADDRS[name], join=[ADDRS["c1"]] if name != "c1" else [], extra=[
        "--no-auto-migrate", "--ca-cert", str(d / "ca.pem"), "--cert", str(d / "cluster.pem"),
        "--key", str(d / "cluster.key")])
    agent.start()


async def all_alive(admin: Admin, names: list[str]) -> None:
    async def alive() -> bool:
        for n in names:
            try:
                members = await admin.get(n, "/v1/members")
            except aiohttp.ClientError:
                return False
            if sum(1 for m in members if m["status"] == "alive" and m["name"] in names) != len(names):
                return False
        return True

    await wait_until(alive, timeout=40, what=f"{names} alive over mTLS")


async def test_revocation_reaches_every_member_and_rotation_needs_no_restart(tmp_path: Path) -> None:
    ca.init(tmp_path / "ca")
    for name, addr in ADDRS.items():
        ca.issue(tmp_path / "ca", cluster=name, out=tmp_path / name, ips=(addr,))
    admin = Admin(tmp_path)
    try:
        async with federation(tmp_path) as fed:
            for name in ADDRS:
                start(fed, tmp_path, name)
            await all_alive(admin, list(ADDRS))

            # The peer API works over mTLS: a migration (replication, wait, reroute, records).
            status, body = await admin.call("c1", "POST", "/v1/services", {
                "name": "classifier", "port": 8080, "health": {"path": "/healthz"}, "command": CLASSIFIER})
            assert status == 201, body
            status, body = await admin.call("c1", "POST", "/v1/services/classifier/migrate", {"target": "c2"})
            assert status == 200 and body["outcome"] == "succeeded", body

            # `roam` on the agent's host finds it, and checks its https against the CA it names.
            listed = subprocess.run([sys.executable, "-m", "peer.cli", "members", "--json"], capture_output=True,
                                    text=True, timeout=60, env={**os.environ, "ROAM_DATA_DIR": str(tmp_path)})
            assert listed.returncode == 0 and all(f'"{n}"' in listed.stdout for n in ADDRS), listed.stderr

            # No client certificate: 401. c3's certificate claiming to be c2: 403 naming both.
            with pytest.raises(PeerRefused) as refused:
                await peer_call(tmp_path, cert=None, claims="c3", to="c1")
            assert refused.value.status == 401 and "client certificate" in refused.value.message
            with pytest.raises(PeerRefused) as refused:
                await peer_call(tmp_path, cert="c3", claims="c2", to="c1")
            assert refused.value.status == 403
            assert "certificate names cluster c3 but the request claims to come from 'c2'" in refused.value.message
            with pytest.raises(PeerRefused) as refused:
                await peer_call(tmp_path, cert="c3", claims="c3", to="c1", path="/peer/v1/records/fetch",
                                body={"from": "c2", "names": ["classifier"]})
            assert refused.value.status == 403 and "message's `from` says 'c2'" in refused.value.message
            assert await peer_call(tmp_path, cert="c3", claims="c3", to="c1") is not None  # as itself: fine
            status, body = await admin.call("c3", "POST", "/v1/services", {
                "name": "outcast", "port": 8080, "health": {"path": "/healthz"}, "command": CLASSIFIER})
            assert status == 201, body

            # Revoke c3 with c2 down: pushed to c1 at once, pulled by c2 when it is back; a
            # connection c3's certificate holds open to c1 is closed.
            keeper = PeerClient(SECRET.encode(), sender="c3", tls=holder_of(tmp_path, "c3"))
            await keeper.call(f"https://{ADDRS['c1']}:7070", "/peer/v1/ping", {})
            fed.agents["c2"].stop()
            started = time.monotonic()
            revoke = subprocess.run(
                [sys.executable, "-m", "peer.cli", "ca", "revoke", "--dir", str(tmp_path / "ca"), "--cluster", "c3",
                 "--push", "--api", f"https://{ADDRS['c1']}:7070", "--token-file", str(tmp_path / "token")],
                capture_output=True, text=True, timeout=60)
            assert revoke.returncode == 0, revoke.stderr
            assert "list #1 applied" in revoke.stdout, revoke.stdout
            assert "c3" not in revoke.stdout.split("pushed to")[1], revoke.stdout  # c1 no longer talks to c3

            async def refused_at(to: str) -> bool:
                try:
                    await peer_call(tmp_path, cert="c3", claims="c3", to=to)
                except PeerRefused as exc:
                    return exc.status == 403 and "(serial" in exc.message and "is revoked" in exc.message
                except PeerUnreachable:
                    return False
                return False

            await wait_until(lambda: refused_at("c1"), timeout=10, what="c1 refuses c3")

            async def closed() -> bool:
                return "connection(s) of revoked certificates" in full_log(fed, "c1")

            await wait_until(closed, timeout=10, what="c1 closes c3's connections")
            await keeper.close()
            start(fed, tmp_path, "c2")
            await wait_until(lambda: refused_at("c2"), timeout=30, what="c2 (restarted) refuses c3")
            pulled = time.monotonic() - started
            for name in ("c1", "c2"):
                trust = await admin.get(name, "/v1/trust")
                assert trust["crl"]["number"] == 1 and len(trust["crl"]["revoked"]) == 1, trust
                assert "peer identity refused (403): certificate of cluster c3" in full_log(fed, name)
            assert "revocation list #1 from c1 applied" in full_log(fed, "c2")
            # As a client too: an agent's PeerClient sends nothing to a server holding a revoked
            # certificate (checked right after the handshake, before the request).
            (tmp_path / "client-data").mkdir(mode=0o700)
            me = Identity(name="c1", ca_cert=tmp_path / "c1" / "ca.pem", cert=tmp_path / "c1" / "cluster.pem",
                          key=tmp_path / "c1" / "cluster.key", data_dir=tmp_path / "client-data")
            me.apply_crl((tmp_path / "ca" / "crl.pem").read_bytes(), source="test")
            async with PeerClient(SECRET.encode(), sender="c1", tls=me) as client:
                with pytest.raises(PeerIdentityError, match=r"certificate of cluster c3 \(serial .*\) is revoked"):
                    await client.call(f"https://{ADDRS['c3']}:7070", "/peer/v1/ping", {})

            # The revoked cluster can no longer migrate anything anywhere: c1 and c2 refuse it.
            status, body = await admin.call("c3", "POST", "/v1/services/outcast/migrate", {"target": "c1"})
            assert status == 409 and "403" in body["error"] and "revoked" in body["error"], body

            # Rotation: a new certificate for c1, written over the old files, served without a restart.
            old = (await admin.get("c1", "/v1/trust"))["cert"]["serial"]
            pid = fed.agents["c1"].proc.pid  # type: ignore[union-attr]
            entry = ca.issue(tmp_path / "ca", cluster="c1", out=tmp_path / "c1", ips=(ADDRS["c1"],))

            async def rotated() -> bool:
                return (await admin.get("c1", "/v1/trust"))["cert"]["serial"] == f"{entry.serial:x}"

            await wait_until(rotated, timeout=10, what="c1 reloaded its certificate")
            assert f"{entry.serial:x}" != old and fed.agents["c1"].proc.pid == pid  # type: ignore[union-attr]
            served = await served_serial(tmp_path, ADDRS["c1"])
            assert served == entry.serial
            # SIGHUP reloads at once (and does not stop the agent).
            again = ca.issue(tmp_path / "ca", cluster="c1", out=tmp_path / "c1", ips=(ADDRS["c1"],))
            fed.agents["c1"].proc.send_signal(signal.SIGHUP)  # type: ignore[union-attr]

            async def reloaded_on_hup() -> bool:
                return f"certificate reloaded (SIGHUP): serial {again.serial:x}" in full_log(fed, "c1")

            await wait_until(reloaded_on_hup, timeout=10, what="c1 reloaded on SIGHUP")
            assert fed.agents["c1"].proc.poll() is None  # type: ignore[union-attr]
            # ...and its peers take its requests (new client connections use the new pair).
            status, body = await admin.call("c1", "POST", "/v1/services/classifier/migrate", {"target": "c1"})
            assert status == 200 and body["outcome"] == "succeeded", body
            print(f"revocation: pushed and refused at c1 at once; pulled by a restarted c2 {pulled:.1f}s after")
    finally:
        await admin.session.close()


def full_log(fed: Federation, name: str) -> str:
    return fed.agents[name].log_path.read_text(errors="replace")


async def served_serial(base: Path, addr: str) -> int:
    ctx = holder_of(base, None).ctx
    _, writer = await asyncio.open_connection(addr, 7070, ssl=ctx)
    try:
        der = writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
        from cryptography import x509

        return int(x509.load_der_x509_certificate(der).serial_number)
    finally:
        writer.close()
