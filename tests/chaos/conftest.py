"""A three-cluster testbed (roamt-a/b/c on roamtbr0, 10.231.0.0/24) with `python3 -m
http.server` in each namespace, and probes to ask "can X reach Y" from any node."""
from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest

from chaos import leftovers
from chaos.netns import HOST, Testbed
from peer.runtime.waiting import wait_until

PREFIX = "roamt"
SUBNET = "10.231.0.0/24"
PORT = 8000
HERE = Path(__file__).resolve().parent
BLOB_SIZE = 1024 * 1024


@dataclass
class Bed:
    tb: Testbed
    root: Path
    servers: dict[str, asyncio.subprocess.Process]

    def url(self, cluster: str, path: str = "who.json") -> str:
        return f"http://{self.tb.addr(cluster)}:{PORT}/{path}"

    async def start_server(self, cluster: str) -> asyncio.subprocess.Process:
        proc = await self.tb.spawn(
            cluster, [sys.executable, "-m", "http.server", "--bind", self.tb.addr(cluster),
                      "--directory", str(self.root / cluster), str(PORT)],
            log_path=self.root / f"{cluster}.log")
        self.servers[cluster] = proc
        return proc

    async def fetch(self, src: str, dst: str, *, path: str = "who.json",
                    timeout: float = 1.0) -> tuple[bool, float]:
        """GET dst's file from node src (HOST = the root namespace): (ok, seconds)."""
        if src == HOST:
            loop = asyncio.get_running_loop()
            t0 = loop.time()
            try:
                async with aiohttp.ClientSession(
                        timeout=aiohttp.ClientTimeout(total=timeout)) as s, \
                        s.get(self.url(dst, path)) as resp:
                    await resp.read()
                    return resp.status == 200, loop.time() - t0
            except (aiohttp.ClientError, asyncio.TimeoutError):
                return False, loop.time() - t0
        res = await self.tb.run(src, [sys.executable, "-S", str(HERE / "probe_http.py"),
                                      self.url(dst, path), str(timeout)],
                                check=False, timeout=timeout + 20)
        parts = res.stdout.split()
        return res.ok, float(parts[2]) if res.ok else 0.0

    async def reaches(self, src: str, dst: str, *, timeout: float = 2.0) -> bool:
        return (await self.fetch(src, dst, timeout=timeout))[0]

    async def blocked(self, src: str, dst: str) -> bool:
        """A short attempt fails (a dropped SYN is retried only after 1 s anyway)."""
        return not (await self.fetch(src, dst, timeout=0.5))[0]

    async def wait_reaches(self, src: str, dst: str) -> None:
        await wait_until(lambda: self.reaches(src, dst), timeout=15,
                         what=f"{src} reaching {dst}")


@pytest.fixture
async def bed(tmp_path: Path) -> AsyncIterator[Bed]:
    tb = Testbed(["a", "b", "c"], prefix=PREFIX, subnet=SUBNET)
    for cluster in tb.clusters:
        d = tmp_path / cluster
        d.mkdir()
        (d / "who.json").write_text(json.dumps({"cluster": cluster}))
        (d / "blob").write_bytes(b"x" * BLOB_SIZE)
    async with tb:
        bed = Bed(tb, tmp_path, {})
        for cluster in tb.clusters:
            await bed.start_server(cluster)
        for cluster in tb.clusters:
            await bed.wait_reaches(HOST, cluster)
        yield bed
    left = leftovers.probe(PREFIX, pgids=[p.pid for p in bed.servers.values()])
    assert left.empty, left
