"""Optional TLS (--tls-cert/--tls-key): both APIs on one port, peers verifying the certificate."""
from __future__ import annotations

import ssl
import subprocess
import sys
from pathlib import Path

import aiohttp
import pytest

from peer.runtime.waiting import wait_until
from tests.harness import TOKEN, federation

pytestmark = pytest.mark.integration

A, B = "127.0.6.51", "127.0.6.52"


def make_cert(tmp: Path) -> tuple[Path, Path]:
    cert, key = tmp / "cert.pem", tmp / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=roam-test",
                    "-addext", f"subjectAltName=IP:{A},IP:{B}", "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True)
    key.chmod(0o600)
    return cert, key


async def test_agents_serve_and_talk_over_tls(tmp_path: Path) -> None:
    cert, key = make_cert(tmp_path)
    tls = ["--no-auto-migrate", "--tls-cert", str(cert), "--tls-key", str(key)]
    async with federation(tmp_path) as fed:
        for name, addr, join in (("c1", A, []), ("c2", B, [A])):
            agent = fed.add(name, addr, join=join, extra=tls)
            agent.env = {"SSL_CERT_FILE": str(cert)}  # the peers' trust store: our private CA
            agent.start()
        ctx = ssl.create_default_context(cafile=str(cert))
        headers = {"Authorization": f"Bearer {TOKEN}"}
        async with aiohttp.ClientSession() as s:
            async def members(name: str, addr: str) -> list[dict[str, object]]:
                async with s.get(f"https://{addr}:7070/v1/members", ssl=ctx, headers=headers) as r:
                    assert r.status == 200
                    return list(await r.json())

            await wait_until(lambda: members("c1", A), timeout=30, what="c1 up over TLS")
            async def both_alive() -> list[dict[str, object]] | None:
                listing = await members("c1", A)
                return listing if sum(1 for m in listing if m["status"] == "alive") == 2 else None

            listed = await wait_until(both_alive, timeout=30, what="c2 joined")
            assert listed is not None
            assert {m["api"] for m in listed} == {f"https://{A}:7070", f"https://{B}:7070"}
            # Plain HTTP is not served on the TLS port.
            with pytest.raises(aiohttp.ClientError):
                async with s.get(f"http://{A}:7070/v1/health", timeout=aiohttp.ClientTimeout(total=3)) as r:
                    await r.read()
            descriptor = {"name": "classifier", "port": 8080, "health": {"path": "/healthz"},
                          "command": [sys.executable, "-m", "peer.samples.classifier", "--host", "{host}",
                                      "--port", "{port}"]}
            async with s.post(f"https://{A}:7070/v1/services", json=descriptor, ssl=ctx, headers=headers) as r:
                assert r.status == 201, await r.text()
            # A migration uses the peer API: replication, status, records, all over verified TLS.
            async with s.post(f"https://{A}:7070/v1/services/classifier/migrate", json={"target": "c2"},
                              ssl=ctx, headers=headers) as r:
                body = await r.json()
                assert r.status == 200 and body["outcome"] == "succeeded", body
