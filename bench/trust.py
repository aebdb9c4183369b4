"""Per-cluster identity (issue 19): what mTLS costs on the peer API, how long revocation takes
to reach every live member. Real agents on 127.0.33.21-25 (loopback).

  ping, reused    a signed peer call (POST /peer/v1/ping) on a kept-alive connection
  ping, new       the same on a new connection each time (TCP + TLS handshake with client cert)
  migration       a classifier moved between two agents (POST .../migrate, the Table I stages)
  revocation      `POST /v1/trust/crl` at one agent until the two others hold the list
                  (both: the push returns after every live member took it; polled to confirm)

Three identity agents (c1-c3) and two plain ones (p1-p2, the federation secret only).
Usage: .venv/bin/python bench/trust.py [--runs 20]
"""
from __future__ import annotations

import argparse
import asyncio
import ssl
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from peer.peering.client import PeerClient  # noqa: E402
from peer.trust import ca  # noqa: E402
from peer.runtime.waiting import wait_until  # noqa: E402
from tests.harness import SECRET, TOKEN, federation  # noqa: E402
from tests.trust.test_mtls_agents import CertTLS  # noqa: E402

ID = {"c1": "127.0.33.21", "c2": "127.0.33.22", "c3": "127.0.33.23"}
PLAIN = {"p1": "127.0.33.24", "p2": "127.0.33.25"}
CLASSIFIER = [sys.executable, "-m", "peer.samples.classifier", "--host", "{host}", "--port", "{port}"]


def figure(label: str, xs: list[float], unit: str = "ms") -> None:
    print(f"{label:<34} median {statistics.median(xs):8.2f} {unit}  (min {min(xs):.2f}, max {max(xs):.2f}, n={len(xs)})")


async def pings(url: str, tls: CertTLS | None, runs: int, *, fresh: bool) -> list[float]:
    out: list[float] = []
    client = PeerClient(SECRET.encode(), sender="c3" if tls else None, tls=tls)
    try:
        for _ in range(runs + 1):
            if fresh:
                await client.close()
            t = time.perf_counter()
            await client.call(url, "/peer/v1/ping", {})
            out.append((time.perf_counter() - t) * 1000)
    finally:
        await client.close()
    return out[1:]


async def migrations(s: aiohttp.ClientSession, api: dict[str, str], ctx: Any, names: tuple[str, str],
                     runs: int) -> list[float]:
    headers = {"Authorization": f"Bearer {TOKEN}"}
    a, b = names
    async with s.post(f"{api[a]}/v1/services", json={"name": "bench", "port": 8080, "health": {"path": "/healthz"},
                                                      "command": CLASSIFIER}, ssl=ctx, headers=headers) as r:
        assert r.status == 201, await r.text()
    out: list[float] = []
    for i in range(runs):
        target = b if i % 2 == 0 else a
        t = time.perf_counter()
        async with s.post(f"{api[a]}/v1/services/bench/migrate", json={"target": target}, ssl=ctx,
                          headers=headers) as r:
            body = await r.json()
            assert r.status == 200 and body["outcome"] == "succeeded", body
        out.append((time.perf_counter() - t) * 1000)
    return out


async def main(runs: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        ca.init(base / "ca")
        for name, addr in ID.items():
            ca.issue(base / "ca", cluster=name, out=base / name, ips=(addr,))
        for i in range(runs):
            ca.issue(base / "ca", cluster=f"gone{i}", out=base / f"gone{i}")
        ctx = ssl.create_default_context(cafile=str(base / "ca" / "ca.pem"))
        async with federation(base) as fed, aiohttp.ClientSession() as s:
            for name, addr in ID.items():
                d = base / name
                fed.add(name, addr, join=[ID["c1"]] if name != "c1" else [], extra=[
                    "--no-auto-migrate", "--ca-cert", str(d / "ca.pem"), "--cert", str(d / "cluster.pem"),
                    "--key", str(d / "cluster.key")]).start()
            for name, addr in PLAIN.items():
                fed.add(name, addr, join=[PLAIN["p1"]] if name != "p1" else [],
                        extra=["--no-auto-migrate", "--no-peer-tls"]).start()  # the federation secret only
            api = {**{n: f"https://{a}:7070" for n, a in ID.items()}, **{n: f"http://{a}:7070" for n, a in PLAIN.items()}}
            headers = {"Authorization": f"Bearer {TOKEN}"}

            async def alive(names: list[str]) -> bool:
                for n in names:
                    try:
                        async with s.get(f"{api[n]}/v1/members", ssl=ctx, headers=headers) as r:
                            ms = await r.json()
                    except aiohttp.ClientError:
                        return False
                    if sum(1 for m in ms if m["status"] == "alive") != len(names):
                        return False
                return True

            await wait_until(lambda: alive(list(ID)), timeout=60, what="identity agents")
            await wait_until(lambda: alive(list(PLAIN)), timeout=60, what="plain agents")
            c3 = CertTLS(ssl.create_default_context(cafile=str(base / "ca" / "ca.pem")))
            c3.ctx.check_hostname = False
            c3.ctx.load_cert_chain(base / "c3" / "cluster.pem", base / "c3" / "cluster.key")
            figure("ping, reused, plain HTTP", await pings(api["p1"], None, runs * 10, fresh=False))
            figure("ping, reused, mTLS", await pings(api["c1"], c3, runs * 10, fresh=False))
            figure("ping, new connection, plain HTTP", await pings(api["p1"], None, runs, fresh=True))
            figure("ping, new connection, mTLS", await pings(api["c1"], c3, runs, fresh=True))
            figure("migration, plain HTTP", await migrations(s, api, ctx, ("p1", "p2"), runs // 2))
            figure("migration, mTLS", await migrations(s, api, ctx, ("c1", "c2"), runs // 2))
            took: list[float] = []
            for i in range(runs):
                ca.revoke(base / "ca", cluster=f"gone{i}")
                pem = (base / "ca" / "crl.pem").read_text()
                t = time.perf_counter()
                async with s.post(f"{api['c1']}/v1/trust/crl", json={"crl": pem}, ssl=ctx, headers=headers) as r:
                    body = await r.json()
                    assert r.status == 200 and body["pushed"] == ["c2", "c3"], body

                async def everywhere() -> bool:
                    for n in ("c2", "c3"):
                        async with s.get(f"{api[n]}/v1/trust", ssl=ctx, headers=headers) as r:
                            if (await r.json())["crl"]["number"] != i + 1:
                                return False
                    return True

                await wait_until(everywhere, timeout=10, what="list everywhere")
                took.append((time.perf_counter() - t) * 1000)
            figure("revocation at all 3 members", took)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=20)
    asyncio.run(main(parser.parse_args().runs))
