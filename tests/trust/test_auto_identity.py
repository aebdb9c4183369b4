"""Automatic identity (peer.trust.auto) with real agents on loopback (127.0.100.x): three agents
started with the CLI contract's flags and --peer-tls only form over mTLS (a joiner started before the agent it
joins, one enrolled through a relay), the peer listener refuses a client without a certificate,
the admin port refuses /peer/, a migration works, a restarted agent keeps its certificate, a
newcomer claiming a live member's name is refused, and `roam ca revoke` on the automatic CA
reaches the others within seconds."""
from __future__ import annotations

import os
import ssl
import subprocess
import sys
import time
from pathlib import Path

import pytest

from peer.peering.client import PeerClient, PeerError, PeerRefused, PeerUnreachable
from peer.runtime.waiting import wait_until
from tests.harness import SECRET, TOKEN, Federation, federation
from tests.trust.test_mtls_agents import CertTLS

pytestmark = pytest.mark.integration

ADDRS = {"c1": "127.0.100.11", "c2": "127.0.100.12", "c3": "127.0.100.13"}
IMPOSTOR = "127.0.100.14"
BARE = ["--no-auto-migrate", "--ca-keepers", "1"]  # the contract's flags (identity is automatic); one keeper: c1
CLASSIFIER = [sys.executable, "-m", "peer.samples.classifier", "--host", "{host}", "--port", "{port}"]


def held(base: Path, cluster: str | None) -> CertTLS:
    """A client holding `cluster`'s certificate from its data dir, or none."""
    ctx = ssl.create_default_context(cafile=str(base / "c1" / "identity" / "ca.pem"))
    ctx.check_hostname = False
    if cluster is not None:
        d = base / cluster / "identity"
        ctx.load_cert_chain(d / "cluster.pem", d / "cluster.key")
    return CertTLS(ctx)


async def ping(base: Path, *, cert: str | None, to: str, url: str | None = None) -> object:
    async with PeerClient(SECRET.encode(), sender=cert or "c9", tls=held(base, cert)) as client:
        return await client.call(url or f"https://{ADDRS[to]}:7071", "/peer/v1/ping", {})


def roam(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "peer.cli", *args], capture_output=True, text=True, timeout=60,
                          env={**os.environ, "ROAM_TOKEN": TOKEN})


async def serial(fed: Federation, name: str, of: str | None = None) -> str:
    trust = await fed.get(name, "/v1/trust")
    return str(trust["cert"]["serial"])


async def test_bare_agents_form_over_mtls_and_keep_their_identity(tmp_path: Path) -> None:
    async with federation(tmp_path) as fed:
        started = time.monotonic()
        fed.add("c2", ADDRS["c2"], join=[ADDRS["c1"]], extra=BARE).start()  # before the agent it joins
        fed.add("c1", ADDRS["c1"], extra=BARE).start()  # no --join: makes the federation CA
        fed.add("c3", ADDRS["c3"], join=[ADDRS["c2"]], extra=BARE).start()  # enrols through c2, relayed to c1
        for name in ADDRS:
            await fed.wait_healthy(name, timeout=60)
        await fed.wait_formed(ADDRS, timeout=60)
        print(f"three bare agents formed in {time.monotonic() - started:.2f}s")

        # The contract's admin API and CLI are unchanged: plain http on --api-port.
        listed = roam("members", "--api", f"http://{ADDRS['c1']}:7070", "--json")
        assert listed.returncode == 0, listed.stderr
        members = await fed.get("c1", "/v1/members")
        assert {m["name"]: m["peer"] for m in members} == {n: f"https://{a}:7071" for n, a in ADDRS.items()}
        trust = await fed.get("c2", "/v1/trust")
        assert trust["mode"] == "mtls" and trust["auto"]["ca_keeper"] is False
        assert (await fed.get("c1", "/v1/trust"))["auto"]["ca_keeper"] is True
        assert (tmp_path / "c1" / "ca" / "ca.key").stat().st_mode & 0o777 == 0o600
        assert (tmp_path / "c3" / "identity" / "cluster.key").stat().st_mode & 0o777 == 0o600

        # Peer calls go over mTLS: a certificate works, none is refused in the handshake, and
        # the admin port answers /peer/ with 421 naming the listener.
        assert await ping(tmp_path, cert="c2", to="c1") is not None
        with pytest.raises(PeerError) as no_cert:
            await ping(tmp_path, cert=None, to="c1")
        assert not isinstance(no_cert.value, PeerRefused) or no_cert.value.status == 401
        with pytest.raises(PeerRefused) as misdirected:
            await ping(tmp_path, cert="c2", to="c1", url=f"http://{ADDRS['c1']}:7070")
        assert misdirected.value.status == 421 and "https://127.0.100.11:7071" in misdirected.value.message

        # A migration between them (replication, wait, reroute, signed records).
        await fed.call("c1", "POST", "/v1/services", {"name": "classifier", "port": 8080,
                                                       "health": {"path": "/healthz"}, "command": CLASSIFIER},
                       expect=201)
        moved = await fed.call("c1", "POST", "/v1/services/classifier/migrate", {"target": "c2"})
        assert moved["outcome"] == "succeeded", moved
        print("migration stages (ms):", {k: moved.get(k) for k in ("pr", "replication", "wait", "reroute",
                                                                      "cleanup", "deploy")})

        # A restarted agent keeps its key and certificate (no new enrolment) and rejoins.
        before = await serial(fed, "c2")
        fed.agents["c2"].stop()
        fed.agents["c2"].start()
        await fed.wait_healthy("c2", timeout=60)
        await fed.wait_formed(ADDRS, timeout=60)
        assert await serial(fed, "c2") == before

        # A newcomer claiming the live c2's name is refused enrolment (first come, first served).
        impostor = fed.add("c2x", IMPOSTOR, join=[ADDRS["c3"]], extra=BARE)
        impostor.args[1] = "c2"  # --name c2, its own data dir
        impostor.start()
        await wait_until(lambda: "refused 409" in impostor.log_text(), timeout=30, what="the impostor refused")
        assert not (tmp_path / "c2x" / "identity" / "cluster.pem").exists()
        assert {m["addr"] for m in await fed.get("c1", "/v1/members") if m["name"] == "c2"} == {ADDRS["c2"]}
        impostor.stop()
        assert impostor.proc is not None and impostor.proc.returncode == 0  # SIGTERM while waiting: a clean stop

        # Revocation on the automatic CA reaches every member within seconds.
        revoked_at = time.monotonic()
        out = roam("ca", "revoke", "--dir", str(tmp_path / "c1" / "ca"), "--cluster", "c3", "--push",
                   "--api", f"http://{ADDRS['c1']}:7070")
        assert out.returncode == 0, out.stderr

        async def c2_refuses_c3() -> str | None:
            """In the TLS handshake (the list is in the peer listener's store), or per request."""
            try:
                await ping(tmp_path, cert="c3", to="c2")
            except PeerRefused as exc:
                return "per request" if exc.status == 403 and "revoked" in exc.message else None
            except PeerUnreachable:  # the server ends the TLS handshake (TLS 1.3: seen at the first read)
                return "in the handshake"
            return None

        where = await wait_until(c2_refuses_c3, timeout=10, what="c2 refusing the revoked c3")
        print(f"revocation at c2 {time.monotonic() - revoked_at:.2f}s after `roam ca revoke --push` at c1, "
              f"refused {where}")
        assert where == "in the handshake"
        assert await ping(tmp_path, cert="c1", to="c2") is not None  # the listener serves the others
