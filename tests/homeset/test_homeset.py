"""The home set with real agents (Serf, HAProxy, service processes) on loopback addresses:
every entry serves, planned moves reroute every entry, the HC's loss leaves the service
reachable and movable, and names are never merged across creations."""
from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from chaos.agent_processes import kill_left_behind
from peer.runtime.waiting import wait_until
from tests.harness import Federation, dump_logs, federation

pytestmark = pytest.mark.integration

ADDRS = {"c1": "127.0.0.51", "c2": "127.0.0.52", "c3": "127.0.0.53"}
TIERS = {"c1": "deep-edge", "c2": "edge", "c3": "cloud"}


def descriptor(name: str = "web", **extra: Any) -> dict[str, Any]:
    return {"name": name, "port": 8080, "cpu": 0.1, "memory": "64Mi", "health": {"path": "/healthz"},
            "command": [sys.executable, "-m", "peer.samples.classifier", "--host", "{host}", "--port", "{port}"],
            **extra}


async def start(fed: Federation, addrs: dict[str, str] = ADDRS) -> None:
    for name, addr in addrs.items():
        join = [] if name == "c1" else [addrs["c1"]]
        fed.add(name, addr, join=join, extra=["--no-auto-migrate", "--tier", TIERS[name], "--repair-after", "3"]).start()
    for name in addrs:
        await fed.wait_healthy(name)

    await fed.wait_formed(addrs)


async def served_by(fed: Federation, endpoint: str) -> str | None:
    assert fed.session is not None
    try:
        async with fed.session.get(f"http://{endpoint}/", timeout=aiohttp.ClientTimeout(total=1)) as r:
            return (await r.json())["cluster"] if r.status == 200 else None
    except (aiohttp.ClientError, asyncio.TimeoutError, ValueError, KeyError):
        return None


async def all_serve_from(fed: Federation, endpoints: list[str], location: str) -> bool:
    return all([await served_by(fed, e) == location for e in endpoints])


def lose_site(fed: Federation, name: str) -> None:
    """Every process of the cluster at once: agent, Serf, HAProxy and services."""
    agent = fed.agents[name]
    assert agent.proc is not None
    os.killpg(agent.proc.pid, signal.SIGKILL)
    agent.proc.wait(timeout=10)
    kill_left_behind(agent.data_dir)


async def finished(fed: Federation, mid: str) -> dict[str, Any] | None:
    """The steward's history entry of move `mid` once its cleanup is over."""
    for m in await fed.get("c1", "/v1/migrations"):
        if m["id"] == mid and m["finished_at"] is not None:
            return dict(m)
    return None


async def test_every_entry_serves_and_follows_a_planned_move(tmp_path: Path) -> None:
    async with federation(tmp_path) as fed:
        try:
            await start(fed)
            created = await fed.call("c1", "POST", "/v1/services", descriptor(), expect=201)
            assert created["homes"][0] == "c1" and len(created["homes"]) == 2, created
            assert created["steward"] == "c1" and len(created["endpoints"]) == 2
            assert created["endpoint"] == created["endpoints"][0]
            endpoints = created["endpoints"]
            await wait_until(lambda: all_serve_from(fed, endpoints, "c1"), timeout=15, what="both entries serve")
            deputy = created["homes"][1]
            other = next(c for c in ADDRS if c not in created["homes"])
            moved = await fed.call("c1", "POST", "/v1/services/web/migrate", {"target": other})
            assert moved["outcome"] == "succeeded", moved
            # The move answers once the steward routes and it is committed; the other entry
            # routes right after, and the old copy stops only once it did (the cleanup waits):
            # once the move is finished, every entry serves the new copy, no polling needed.
            done = await wait_until(lambda: finished(fed, moved["id"]), timeout=15, what="the move finished")
            assert not done.get("notes") and done["error"] is None, done
            assert await all_serve_from(fed, endpoints, other)
            deputy_view = await fed.get(deputy, "/v1/services/web")
            assert deputy_view["role"] == "AR" and deputy_view["location"] == other
            # A migration asked of a non-steward is forwarded to the steward.
            back = await fed.call(deputy, "POST", "/v1/services/web/migrate", {"target": "c1"})
            assert back["coordinator"] == "c1" and back["outcome"] == "succeeded"
            await wait_until(lambda: finished(fed, back["id"]), timeout=15, what="the move back finished")
            assert await all_serve_from(fed, endpoints, "c1")
        except BaseException:
            print(dump_logs(fed))
            raise


async def test_hc_site_loss_keeps_the_service_reachable_and_movable(tmp_path: Path) -> None:
    async with federation(tmp_path) as fed:
        try:
            await start(fed)
            created = await fed.call("c1", "POST", "/v1/services", descriptor(entries=2), expect=201)
            deputy = created["homes"][1]
            other = next(c for c in ADDRS if c not in created["homes"])
            await fed.call("c1", "POST", "/v1/services/web/migrate", {"target": other})
            surviving = created["endpoints"][1]
            lose_site(fed, "c1")
            # The service runs abroad: the surviving entry keeps serving it throughout.
            for _ in range(20):
                assert await served_by(fed, surviving) == other

            async def handed_over() -> bool:
                return bool((await fed.get(deputy, "/v1/services/web"))["steward"] == deputy)

            await wait_until(handed_over, timeout=20, what="stewardship handed to the deputy")
            moved = await fed.call(other, "POST", "/v1/services/web/migrate", {"target": deputy})
            assert moved["coordinator"] == deputy and moved["outcome"] == "succeeded"
            assert await served_by(fed, surviving) == deputy

            # The lost HC is not dropped (it resumes when it returns) but another entry is added.
            async def repaired() -> bool:
                return len((await fed.get(deputy, "/v1/services/web"))["homes"]) == 3

            await wait_until(repaired, timeout=20, what="home set repaired")
        except BaseException:
            print(dump_logs(fed))
            raise


async def test_hc_site_loss_with_the_service_at_home_fails_over_to_an_entry(tmp_path: Path) -> None:
    async with federation(tmp_path) as fed:
        try:
            await start(fed)
            created = await fed.call("c1", "POST", "/v1/services", descriptor(), expect=201)
            surviving = created["endpoints"][1]
            await wait_until(lambda: all_serve_from(fed, created["endpoints"], "c1"), timeout=15, what="serving")
            lost = asyncio.get_running_loop().time()
            lose_site(fed, "c1")
            await wait_until(lambda: served_by(fed, surviving), timeout=15, interval=0.02, what="served again")
            print(f"HC site loss, service at the HC: served again after {asyncio.get_running_loop().time() - lost:.2f}s")
            assert await served_by(fed, surviving) == created["homes"][1]
        except BaseException:
            print(dump_logs(fed))
            raise


async def test_entries_bad_input_and_reused_names(tmp_path: Path) -> None:
    async with federation(tmp_path) as fed:
        try:
            await start(fed)
            for bad in (0, -1, True, "2"):
                answer = await fed.call("c1", "POST", "/v1/services", descriptor(entries=bad), expect=422)
                assert answer.get("field") == "entries" or "entries" in str(answer), answer
            answer = await fed.call("c1", "POST", "/v1/services", descriptor(entries=4), expect=422)
            assert "entries" in str(answer)
            assert await fed.get("c1", "/v1/services") == []
            # Finding 1 of issue 12: a name reused at another home never merges with the old one.
            await fed.call("c2", "POST", "/v1/services", descriptor("dupe", entries=1), expect=201)
            refused = await fed.call("c1", "POST", "/v1/services", descriptor("dupe"), expect=409)
            assert "c2" in str(refused)
            await fed.call("c2", "POST", "/v1/services/dupe/migrate", {"target": "c3"})
            await fed.call("c2", "DELETE", "/v1/services/dupe")
            reborn = await fed.call("c1", "POST", "/v1/services", descriptor("dupe", entries=1), expect=201)
            moved = await fed.call("c1", "POST", "/v1/services/dupe/migrate", {"target": "c3"})
            assert moved["outcome"] == "succeeded"
            for _ in range(10):  # anti-entropy rounds go by; the new service stays
                record = await fed.get("c1", "/v1/services/dupe")
                assert record["incarnation"] == reborn["incarnation"] and record["location"] == "c3"
                assert await served_by(fed, reborn["endpoint"]) == "c3"
                await asyncio.sleep(0.5)  # load pacing: sample the steady state for 5 s
        except BaseException:
            print(dump_logs(fed))
            raise
