"""One-time join tokens: a new cluster enrols at the agent keeping the CA (--ca-dir), its key
never leaving its host, and joins over mTLS; a token works once, for its cluster, in its TTL,
and only against the CA it names. Agents on 127.0.33.11-12."""
from __future__ import annotations

import ssl
import subprocess
import sys
from pathlib import Path

import aiohttp
import pytest

from peer.trust import ca, enrol
from peer.runtime.waiting import wait_until
from tests.harness import TOKEN, federation

CA_AGENT, NEWCOMER = "127.0.33.11", "127.0.33.12"


@pytest.fixture()
def ca_dir(tmp_path: Path) -> Path:
    ca.init(tmp_path / "ca")
    return tmp_path / "ca"


def csr_for(base: Path, cluster: str) -> bytes:
    return ca.request(cluster=cluster, out=base / f"req-{cluster}").read_bytes()


def test_a_token_works_once_for_its_cluster_within_its_ttl(ca_dir: Path, tmp_path: Path) -> None:
    token = enrol.make_token(ca_dir, cluster="c4", ttl=60, now=1000.0)
    assert token.split(".")[3] == enrol.fingerprint((ca_dir / "ca.pem").read_bytes())
    assert "sha256" in (ca_dir / enrol.TOKENS).read_text() and token.split(".")[2] not in (ca_dir / enrol.TOKENS).read_text()
    with pytest.raises(enrol.EnrolRefused, match="name exactly the token's cluster c4"):
        enrol.redeem(ca_dir, token=token, csr_pem=csr_for(tmp_path, "c5"), now=1001.0)
    with pytest.raises(enrol.EnrolRefused, match="expired"):
        enrol.redeem(ca_dir, token=token, csr_pem=csr_for(tmp_path, "c4"), now=1061.0)
    forged = token.replace(token.split(".")[2], "0" * 40)
    with pytest.raises(enrol.EnrolRefused, match="unknown"):
        enrol.redeem(ca_dir, token=forged, csr_pem=csr_for(tmp_path, "c4"), now=1001.0)
    cert, _ = enrol.redeem(ca_dir, token=token, csr_pem=csr_for(tmp_path, "c4"), now=1002.0)
    assert b"BEGIN CERTIFICATE" in cert and [i.cluster for i in ca.load_index(ca_dir)] == ["c4"]
    with pytest.raises(enrol.EnrolRefused, match="already spent"):
        enrol.redeem(ca_dir, token=token, csr_pem=csr_for(tmp_path, "c4"), now=1003.0)
    ca.revoke(ca_dir, cluster="c4")
    with pytest.raises(ca.CAError, match="revoked"):
        enrol.make_token(ca_dir, cluster="c4")


def cli(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "peer.cli", "ca", *argv], capture_output=True, text=True, timeout=60)


@pytest.mark.integration
async def test_a_new_cluster_enrols_with_a_token_and_joins_over_mtls(ca_dir: Path, tmp_path: Path) -> None:
    ca.issue(ca_dir, cluster="c1", out=tmp_path / "c1", ips=(CA_AGENT,))
    ctx = ssl.create_default_context(cafile=str(ca_dir / "ca.pem"))
    async with federation(tmp_path) as fed, aiohttp.ClientSession() as s:
        d = tmp_path / "c1"
        fed.add("c1", CA_AGENT, extra=["--no-auto-migrate", "--ca-cert", str(d / "ca.pem"), "--cert",
                                       str(d / "cluster.pem"), "--key", str(d / "cluster.key"),
                                       "--ca-dir", str(ca_dir)]).start()
        token = cli("token", "--dir", str(ca_dir), "--cluster", "c4").stdout.strip()

        async def up() -> bool:
            try:
                async with s.get(f"https://{CA_AGENT}:7070/v1/health", ssl=ctx) as r:
                    return r.status == 200
            except aiohttp.ClientError:
                return False

        await wait_until(up, timeout=30, what="the CA agent up")
        wrong_ca = token[: -64] + "0" * 64
        refused = cli("enrol", "--api", f"https://{CA_AGENT}:7070", "--token", wrong_ca, "--out", str(tmp_path / "x"))
        assert refused.returncode != 0 and "serves a CA whose SHA-256 is not the token's" in refused.stderr
        done = cli("enrol", "--api", f"https://{CA_AGENT}:7070", "--token", token, "--out", str(tmp_path / "c4"),
                   "--ip", NEWCOMER)
        assert done.returncode == 0, done.stderr
        assert (tmp_path / "c4" / "cluster.key").stat().st_mode & 0o777 == 0o600
        again = cli("enrol", "--api", f"https://{CA_AGENT}:7070", "--token", token, "--out", str(tmp_path / "y"))
        assert again.returncode != 0 and len(again.stderr.strip().splitlines()) == 1
        assert "403 token: already spent" in again.stderr, again.stderr

        d = tmp_path / "c4"
        fed.add("c4", NEWCOMER, join=[CA_AGENT], extra=[
            "--no-auto-migrate", "--ca-cert", str(d / "ca.pem"), "--cert", str(d / "cluster.pem"),
            "--key", str(d / "cluster.key")]).start()

        async def both_alive() -> bool:
            try:
                async with s.get(f"https://{NEWCOMER}:7070/v1/members", ssl=ctx,
                                 headers={"Authorization": f"Bearer {TOKEN}"}) as r:
                    members = await r.json()
            except aiohttp.ClientError:
                return False
            return sorted(m["name"] for m in members if m["status"] == "alive") == ["c1", "c4"]

        await wait_until(both_alive, timeout=40, what="c4 enrolled and joined")

        async def synced() -> bool:  # its records recovered from c1 through the peer API, over mTLS
            return "caught up with 1 peers" in (tmp_path / "c4.log").read_text()

        await wait_until(synced, timeout=30, what="c4 caught up with c1")
        assert "peer identity refused" not in (tmp_path / "c1.log").read_text()
        assert "enrolled cluster CN=c4" in (tmp_path / "c1.log").read_text()
        audit = (tmp_path / "c1" / "audit.log").read_text()
        assert audit.count('"/v1/trust/enrol"') == 2 and '"status": 403' in audit  # done and refused, both kept
