"""`POST /v1/drain` on real agents (three on loopback): every service moves away with no lost
request, a bad body is a 422 naming the field, and `{"stop": true}` stops the agent and its
data plane (HAProxy, services) while the services keep serving from where they moved."""
from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from peer.runtime.waiting import wait_until
from tests.harness import TOKEN, Federation, dump_logs, federation

pytestmark = pytest.mark.integration

ADDRS = {"c1": "127.0.4.21", "c2": "127.0.4.22", "c3": "127.0.4.23"}


def descriptor(name: str) -> dict[str, Any]:
    return {"name": name, "port": 8080, "cpu": 0.1, "memory": "64Mi", "health": {"path": "/healthz"},
            "command": [sys.executable, "-m", "peer.samples.classifier", "--host", "{host}", "--port", "{port}"]}


async def start(fed: Federation) -> None:
    for name, addr in ADDRS.items():
        fed.add(name, addr, join=[] if name == "c1" else [ADDRS["c1"]]).start()
    for name in ADDRS:
        await fed.wait_healthy(name)

    await fed.wait_formed(ADDRS)


class Probes:
    """About 40 requests a second to each endpoint until stopped; every non-200 counts as lost."""

    def __init__(self, session: aiohttp.ClientSession, endpoints: list[str]) -> None:
        self.ok = {e: 0 for e in endpoints}
        self.lost: dict[str, list[str]] = {e: [] for e in endpoints}
        self._stop = asyncio.Event()
        self._tasks = [asyncio.create_task(self._run(session, e)) for e in endpoints]

    async def _run(self, session: aiohttp.ClientSession, endpoint: str) -> None:
        while not self._stop.is_set():
            try:
                async with session.get(f"http://{endpoint}/", timeout=aiohttp.ClientTimeout(total=2)) as r:
                    await r.read()
                    if r.status == 200:
                        self.ok[endpoint] += 1
                    else:
                        self.lost[endpoint].append(str(r.status))
            except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
                self.lost[endpoint].append(type(exc).__name__)
            await asyncio.sleep(0.025)

    async def flowing(self, more: int = 10) -> None:
        base = dict(self.ok)
        await wait_until(lambda: all(self.ok[e] >= base[e] + more for e in base), timeout=15, what="probes")

    def clear(self) -> None:
        for lost in self.lost.values():
            lost.clear()

    async def stop(self) -> None:
        self._stop.set()
        await asyncio.gather(*self._tasks)


async def post_drain(fed: Federation, body: Any) -> tuple[int, Any]:
    assert fed.session is not None
    async with fed.session.post(fed.agents["c1"].api + "/v1/drain", json=body,
                                headers={"Authorization": f"Bearer {TOKEN}"},
                                timeout=aiohttp.ClientTimeout(total=120)) as r:
        return r.status, await r.json(content_type=None)


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


async def test_drain_moves_every_service_away_then_stops_the_data_plane(tmp_path: Path) -> None:
    async with federation(tmp_path) as fed:
        try:
            await start(fed)
            created = [await fed.call("c1", "POST", "/v1/services", descriptor(n), expect=201)
                       for n in ("alpha", "beta")]
            endpoints = [e for c in created for e in c["endpoints"]]
            assert fed.session is not None
            probes = Probes(fed.session, endpoints)
            await probes.flowing()
            # An entry's route follows the record's arrival (just after the 201): that start-up
            # is the home set's business; what the drain must not lose is counted from here.
            print(f"before the drain: lost {probes.lost}")
            probes.clear()

            for bad, field in (({"stop": "yes"}, "stop"), ({"stpo": True}, "stpo")):
                status, answer = await post_drain(fed, bad)
                assert (status, answer.get("field")) == (422, field), answer
            assert [i["name"] for i in await fed.get("c1", "/v1/instances")] == ["alpha", "beta"]

            status, answer = await post_drain(fed, {"stop": False})
            assert status == 200, answer
            assert answer["cluster"] == "c1" and answer["stopping"] is False and answer["failed"] == []
            assert sorted(m["name"] for m in answer["migrated"]) == ["alpha", "beta"]
            assert all(m["target"] in ("c2", "c3") and m["outcome"] == "succeeded" for m in answer["migrated"])
            assert await fed.get("c1", "/v1/instances") == []
            await probes.flowing()
            lost_moving = {e: list(v) for e, v in probes.lost.items() if v}
            print(f"drain: {sum(probes.ok.values())} ok, lost while moving {lost_moving}")
            assert lost_moving == {}, lost_moving

            agent = fed.agents["c1"]
            haproxy = int((agent.data_dir / "lb" / "haproxy.pid").read_text().split()[0])
            status, answer = await post_drain(fed, {"stop": True})
            assert status == 200 and answer["stopping"] is True and answer["migrated"] == [], answer
            assert agent.proc is not None
            assert await asyncio.to_thread(agent.proc.wait, 30) == 0
            await wait_until(lambda: not pid_alive(haproxy), timeout=10, what="c1's haproxy stopped")
            assert "with the data plane (drained)" in agent.log_path.read_text()
            await wait_until(lambda: _status_is(fed, "c2", "c1", "left"), timeout=20, what="c1 left")

            # What moved keeps serving at the entries that remain.
            away = [e for c in created for e in c["endpoints"] if not e.startswith(ADDRS["c1"] + ":")]
            assert away, created
            probes.clear()
            base = {e: probes.ok[e] for e in away}
            await wait_until(lambda: all(probes.ok[e] >= base[e] + 10 for e in away), timeout=15,
                             what="other entries serving")
            await probes.stop()
            assert all(probes.lost[e] == [] for e in away), probes.lost
        except BaseException:
            print(dump_logs(fed))
            raise


async def _status_is(fed: Federation, observer: str, member: str, status: str) -> bool:
    return await fed.member_status(observer, member) == status


async def test_drain_with_nowhere_to_go_reports_failed_and_stop_stops_everything(tmp_path: Path) -> None:
    """A lone cluster: nothing can move, so the answer names it under `failed` and, without
    `stop`, leaves it serving; with `stop` the agent stops it, HAProxy and itself."""
    async with federation(tmp_path) as fed:
        try:
            agent = fed.add("c1", ADDRS["c1"])
            agent.start()
            await fed.wait_healthy("c1")
            created = await fed.call("c1", "POST", "/v1/services", {**descriptor("solo"), "entries": 1}, expect=201)
            pid = (await fed.get("c1", "/v1/instances"))[0]["pid"]
            status, answer = await post_drain(fed, None)  # no body: {"stop": false}
            assert status == 200 and answer["migrated"] == [] and answer["stopping"] is False, answer
            assert [f["name"] for f in answer["failed"]] == ["solo"] and answer["failed"][0]["error"], answer
            assert [i["pid"] for i in await fed.get("c1", "/v1/instances")] == [pid]
            assert fed.session is not None
            async with fed.session.get(f"http://{created['endpoint']}/") as r:
                assert r.status == 200, "a drain without stop stops nothing"

            haproxy = int((agent.data_dir / "lb" / "haproxy.pid").read_text().split()[0])
            status, answer = await post_drain(fed, {"stop": True})
            assert status == 200 and answer["stopping"] is True, answer
            assert [f["name"] for f in answer["failed"]] == ["solo"], answer
            assert agent.proc is not None
            assert await asyncio.to_thread(agent.proc.wait, 30) == 0
            await wait_until(lambda: not pid_alive(pid) and not pid_alive(haproxy), timeout=10,
                             what="service and haproxy stopped")
        except BaseException:
            print(dump_logs(fed))
            raise
