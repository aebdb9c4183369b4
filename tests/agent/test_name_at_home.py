"""Issue 12: both sides of a partition create a service under the same name; after the heal
both keep serving and stay addressable (`name@home`, peer.records.naming).

Real agents (Serf, HAProxy, service processes) in network namespaces roamnh-* on
10.245.0.0/24, the cut made with iptables: c1 and c2 on one side, c3 on the other. Each side
creates `dupe`. After the heal every cluster holds `dupe` (home c1, the earlier creation) and
`dupe@c3` (the later), c3's copy was carried over under the new name without a restart (same
pid), and no request to either endpoint failed while the records met and the rename happened.
"""
from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from chaos.faults import Partition
from chaos.netns import Testbed
from peer.runtime.waiting import wait_until
from tests.agent.test_federation import start_three
from tests.harness import Federation, dump_logs, federation
from tests.homeset.test_homeset import descriptor, served_by
from tests.homeset.test_rejoin import pid_of

pytestmark = [pytest.mark.integration, pytest.mark.netns]


async def _sees_failed(fed: Federation, observer: str, members: list[str]) -> bool:
    return all([await fed.member_status(observer, m) == "failed" for m in members])


async def _names(fed: Federation, cluster: str) -> dict[str, dict[str, Any]]:
    return {s["name"]: s for s in await fed.get(cluster, "/v1/services")}


class Load:
    """GETs to each endpoint in turn, about 50 per second in all, counting what failed."""

    def __init__(self, fed: Federation, endpoints: list[str]) -> None:
        self.fed, self.endpoints = fed, endpoints
        self.sent = self.failed = 0
        self.failures: list[str] = []
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        assert self.fed.session is not None
        while True:
            for endpoint in self.endpoints:
                self.sent += 1
                try:
                    async with self.fed.session.get(f"http://{endpoint}/",
                                                    timeout=aiohttp.ClientTimeout(total=2)) as r:
                        ok = r.status == 200
                except (aiohttp.ClientError, asyncio.TimeoutError):
                    ok = False
                if not ok:
                    self.failed += 1
                    self.failures.append(f"{time.monotonic():.2f} {endpoint}")
                await asyncio.sleep(0.02)  # request pacing, not synchronisation

    def __enter__(self) -> "Load":
        self._task = asyncio.create_task(self._run())
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()


async def test_same_name_created_on_both_sides_of_a_partition_both_serve_after_the_heal(tmp_path: Path) -> None:
    async with Testbed(["c1", "c2", "c3"], prefix="roamnh", subnet="10.245.0.0/24") as tb:
        addrs = {c: tb.addr(c) for c in ("c1", "c2", "c3")}
        async with federation(tmp_path) as fed:
            try:
                await start_three(fed, addrs, netns={c: tb.netns(c) for c in addrs})
                cut = Partition(["c1", "c2"], ["c3"])
                await cut.apply(tb)
                await wait_until(lambda: _sees_failed(fed, "c3", ["c1", "c2"]), timeout=60, what="c3 alone")
                await wait_until(lambda: _sees_failed(fed, "c1", ["c3"]), timeout=60, what="c1 without c3")
                first = await fed.call("c1", "POST", "/v1/services", descriptor("dupe"), expect=201)
                second = await fed.call("c3", "POST", "/v1/services", descriptor("dupe"), expect=201)
                assert first["home"] == "c1" and second["home"] == "c3"
                c1_endpoint, c3_endpoint = first["endpoint"], second["endpoint"]
                pid_before = pid_of(fed, "c3", "dupe")
                assert pid_before is not None
                assert await served_by(fed, c3_endpoint) == "c3"

                with Load(fed, [c1_endpoint, c3_endpoint]) as load:
                    await cut.heal(tb)

                    async def both_everywhere() -> bool:
                        for cluster in addrs:
                            names = await _names(fed, cluster)
                            if names.get("dupe", {}).get("home") != "c1":
                                return False
                            if names.get("dupe@c3", {}).get("home") != "c3":
                                return False
                        return True

                    await wait_until(both_everywhere, timeout=60, what="dupe and dupe@c3 at every cluster")
                    await wait_until(lambda: load.sent > 100, timeout=30, what="load ran after the rename")
                assert load.failed == 0, f"{load.failed} of {load.sent} requests failed: {load.failures[:10]}"

                # c3's copy was carried over, not restarted; each endpoint still serves its own.
                assert pid_of(fed, "c3", "dupe@c3") == pid_before and pid_of(fed, "c3", "dupe") is None
                assert await served_by(fed, c3_endpoint) == "c3"
                assert await served_by(fed, c1_endpoint) in ("c1", "c2")
                renamed = await fed.get("c1", "/v1/services/dupe@c3")
                assert renamed["endpoint"] == c3_endpoint and renamed["location"] == "c3"
                alias = await fed.get("c3", "/v1/services/dupe@c1")  # the bare name's own home
                assert alias["name"] == "dupe" and alias["home"] == "c1"
                await fed.call("c3", "POST", "/v1/services", descriptor("dupe"), expect=409)
                await fed.call("c3", "POST", "/v1/services", descriptor("dupe@c3"), expect=422)

                # Each is managed under its own name: dupe@c3 moves to c2 (its entry follows) ...
                moved = await fed.call("c1", "POST", "/v1/services/dupe@c3/migrate", {"target": "c2"}, expect=200)
                assert moved["outcome"] == "succeeded", moved
                await wait_until(lambda: _serves(fed, c3_endpoint, "c2"), timeout=20, what="dupe@c3 served from c2")
                assert pid_of(fed, "c2", "dupe@c3") is not None
                await wait_until(lambda: _no_copy(fed, "c3", "dupe@c3"), timeout=20,
                                 what="the old copy at c3 stopped (cleanup runs after the answer)")
                # ... and deleting it leaves the other one serving.
                await fed.call("c1", "DELETE", "/v1/services/dupe@c3", expect=200)
                await wait_until(lambda: _gone_everywhere(fed, list(addrs), "dupe@c3"), timeout=30,
                                 what="dupe@c3 gone at every cluster")
                assert (await fed.get("c3", "/v1/services/dupe"))["home"] == "c1"
                assert await served_by(fed, c1_endpoint) in ("c1", "c2")
            except BaseException:
                print(dump_logs(fed))
                raise


async def _serves(fed: Federation, endpoint: str, cluster: str) -> bool:
    return await served_by(fed, endpoint) == cluster


async def _no_copy(fed: Federation, cluster: str, name: str) -> bool:
    return pid_of(fed, cluster, name) is None


async def _gone_everywhere(fed: Federation, clusters: list[str], name: str) -> bool:
    for cluster in clusters:
        if name in await _names(fed, cluster) or pid_of(fed, cluster, name) is not None:
            return False
    return True
