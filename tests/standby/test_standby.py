"""Hot standbys with real agents (Serf, HAProxy, service processes) on loopback (issue 15):
a standby is placed and routed as a backup server at every entry, the primary's site loss is
served by the standby at once and promoted, bad input changes nothing, delete stops the copies."""
from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from chaos.agent_processes import kill_left_behind
from chaos.load import LiveCounter, run_load
from lb import runtime
from lb.client import RuntimeClient
from peer.runtime.waiting import wait_until
from tests.harness import Federation, dump_logs, federation

pytestmark = pytest.mark.integration

ADDRS = {"c1": "127.0.21.1", "c2": "127.0.21.2", "c3": "127.0.21.3"}
TIERS = {"c1": "deep-edge", "c2": "edge", "c3": "cloud"}


def descriptor(name: str = "web", **extra: Any) -> dict[str, Any]:
    return {"name": name, "port": 8080, "cpu": 0.1, "memory": "64Mi", "health": {"path": "/healthz"},
            "command": [sys.executable, "-m", "peer.samples.classifier", "--host", "{host}", "--port", "{port}"],
            **extra}


async def start(fed: Federation, names: tuple[str, ...] = tuple(ADDRS)) -> None:
    for name in names:
        join = [] if name == "c1" else [ADDRS["c1"]]
        fed.add(name, ADDRS[name], join=join,
                extra=["--no-auto-migrate", "--tier", TIERS[name], "--repair-after", "3"]).start()
    for name in names:
        await fed.wait_healthy(name)

    await fed.wait_formed(names)


async def served_by(fed: Federation, endpoint: str) -> str | None:
    assert fed.session is not None
    try:
        async with fed.session.get(f"http://{endpoint}/", timeout=aiohttp.ClientTimeout(total=1)) as r:
            return (await r.json())["cluster"] if r.status == 200 else None
    except (aiohttp.ClientError, asyncio.TimeoutError, ValueError, KeyError):
        return None


def lose_site(fed: Federation, name: str) -> None:
    """Every process of the cluster at once: agent, Serf, HAProxy and services."""
    agent = fed.agents[name]
    assert agent.proc is not None
    os.killpg(agent.proc.pid, signal.SIGKILL)
    agent.proc.wait(timeout=10)
    kill_left_behind(agent.data_dir)


async def backup_servers(fed: Federation, cluster: str) -> list[runtime.ServerState]:
    """The backup servers of `cluster`'s HAProxy, read through its runtime socket."""
    client = RuntimeClient(fed.agents[cluster].data_dir / "lb" / "haproxy.sock")
    await client.connect()
    try:
        return [s for s in await client.servers_state() if s.name.startswith("b")]
    finally:
        await client.close()


async def with_standbys(fed: Federation, cluster: str, count: int, name: str = "web") -> dict[str, Any]:
    async def placed() -> dict[str, Any] | None:
        record = await fed.get(cluster, f"/v1/services/{name}")
        return record if len(record["standbys"]) == count else None

    return await wait_until(placed, timeout=30, what=f"{count} standby(s) of {name}")


async def test_standby_is_placed_routed_as_backup_and_deleted(tmp_path: Path) -> None:
    async with federation(tmp_path) as fed:
        try:
            await start(fed)
            created = await fed.call("c1", "POST", "/v1/services", descriptor(entries=1, standby=1), expect=201)
            assert created["homes"] == ["c1"] and created["descriptor"]["standby"] == 1
            record = await with_standbys(fed, "c1", 1)
            holder = record["standbys"][0]
            assert holder in ("c2", "c3") and record["location"] == "c1"
            addr = record["standby_instances"][0]["instance"]
            # The holder runs the copy and sees the record as SR (once the publish reached it).
            at_holder = await with_standbys(fed, holder, 1)
            assert at_holder["role"] == "SR", at_holder
            instances = await fed.get(holder, "/v1/instances")
            assert [(i["name"], f"{i['host']}:{i['port']}") for i in instances] == [("web", addr)]
            # The standby counts against the holder's capacity in its gossiped load.

            async def counted() -> bool:
                members = await fed.get("c1", "/v1/members")
                return next(m for m in members if m["name"] == holder)["load"]["slots_used"] == 1

            await wait_until(counted, timeout=15, what="standby in the holder's gossiped load")
            # The entry's HAProxy routes it as a checked backup server, UP.

            async def backup_up() -> bool:
                servers = await backup_servers(fed, "c1")
                return [(s.addr, s.port, s.serving) for s in servers] == [
                    (addr.rpartition(":")[0], int(addr.rpartition(":")[2]), True)]

            await wait_until(backup_up, timeout=10, what="backup server UP at c1")
            migrations = await fed.get("c1", "/v1/migrations")
            placed = [m for m in migrations if m["kind"] == "standby" and m["outcome"] == "succeeded"]
            assert placed and placed[0]["target"] == holder and placed[0]["wait"] is not None
            # A planned move to the standby's cluster promotes it: its warm copy is reused.
            pid = instances[0]["pid"]
            moved = await fed.call("c1", "POST", "/v1/services/web/migrate", {"target": holder})
            assert moved["outcome"] == "succeeded" and "promoted" in (moved["notes"] or ""), moved
            view = await fed.get("c1", "/v1/services/web")
            assert view["location"] == holder and view["instance"] == addr and holder not in view["standbys"]
            assert [i["pid"] for i in await fed.get(holder, "/v1/instances")] == [pid]
            # The keeper places a new standby away from the new primary.
            again = await with_standbys(fed, "c1", 1)
            assert again["standbys"][0] != holder
            second = again["standbys"][0]
            await with_standbys(fed, second, 1)
            # Delete stops the primary and the standby copies.
            await fed.call("c1", "DELETE", "/v1/services/web")

            async def gone() -> bool:
                for cluster in ADDRS:
                    if await fed.get(cluster, "/v1/instances") != []:
                        return False
                return await backup_servers(fed, "c1") == []

            await wait_until(gone, timeout=15, what="every copy stopped after delete")
        except BaseException:
            print(dump_logs(fed))
            raise


async def test_bad_standby_is_refused_and_nothing_is_created(tmp_path: Path) -> None:
    async with federation(tmp_path) as fed:
        try:
            await start(fed, ("c1", "c2"))
            for bad in (True, False, -1, 9, "1", 1.5):
                answer = await fed.call("c1", "POST", "/v1/services", descriptor(standby=bad), expect=422)
                assert answer.get("field") == "standby", answer
            # Two live clusters: one other can hold a standby, not two.
            answer = await fed.call("c1", "POST", "/v1/services", descriptor(standby=2), expect=422)
            assert answer.get("field") == "standby" and "only 1" in answer["error"], answer
            assert await fed.get("c1", "/v1/services") == []
            assert await fed.get("c2", "/v1/services") == []
            for cluster in ("c1", "c2"):
                assert await fed.get(cluster, "/v1/instances") == []
        except BaseException:
            print(dump_logs(fed))
            raise


async def test_primary_site_loss_is_served_by_the_standby_and_promoted(tmp_path: Path) -> None:
    """Issue 15's show: the primary's whole site lost under 200 req/s against a surviving
    entry; requests lost (goal 0), time until the standby serves, to promotion, to a new standby."""
    async with federation(tmp_path) as fed:
        try:
            await start(fed)
            created = await fed.call("c1", "POST", "/v1/services", descriptor(entries=2, standby=1), expect=201)
            record = await with_standbys(fed, "c1", 1)
            standby = record["standbys"][0]
            entry = created["homes"][1]
            surviving = created["endpoints"][1]
            await with_standbys(fed, entry, 1)

            async def entry_has_backup() -> bool:
                return any(s.serving for s in await backup_servers(fed, entry))

            await wait_until(entry_has_backup, timeout=10, what=f"backup UP at {entry}")
            stop = asyncio.Event()
            live = LiveCounter()
            load = asyncio.create_task(run_load([f"http://{surviving}/"], rate=200, stop=stop, timeout=5.0, live=live))
            await wait_until(lambda: live.served >= 300, timeout=20, what="steady load before the loss")
            lost_at = time.monotonic()
            lose_site(fed, "c1")

            async def promoted() -> dict[str, Any] | None:
                view = await fed.get(entry, "/v1/services/web")
                return view if view["location"] == standby else None

            after = await wait_until(promoted, timeout=30, what="standby promoted")
            promoted_at = time.monotonic()
            assert standby not in after["standbys"]

            async def new_standby() -> dict[str, Any] | None:
                view = await fed.get(entry, "/v1/services/web")
                return view if view["standbys"] and view["standbys"][0] not in ("c1", standby) else None

            final = await wait_until(new_standby, timeout=30, what="a new standby placed")
            new_standby_at = time.monotonic()
            served_then = live.served  # keep loading a little after the repair
            await wait_until(lambda: live.served >= served_then + 150, timeout=20, what="load after the repair")
            stop.set()
            result = await load
            served_after = [s for s in result.samples if s.sent_at >= lost_at and s.ok]
            first_standby = min((s.sent_at for s in served_after if s.served_by == standby), default=None)
            migrations = await fed.get(entry, "/v1/migrations")
            promotion = next(m for m in migrations if m["kind"] == "promotion")
            print(f"STANDBY-SITE-LOSS lost={result.failed} of {len(result.samples)} "
                  f"standby_serves_after={None if first_standby is None else round(first_standby - lost_at, 3)}s "
                  f"promotion_after={promoted_at - lost_at:.2f}s new_standby_after={new_standby_at - lost_at:.2f}s "
                  f"promotion_durations={promotion['durations_ms']} outages={result.outages()}")
            assert final["location"] == standby and promotion["outcome"] == "succeeded"
            assert promotion["coordinator"] == entry and promotion["target"] == standby
            assert result.failed == 0, result.outages()
            # The lost site returns on its old data dir: one primary, one standby, records agree.
            fed.agents["c1"].start()
            await fed.wait_healthy("c1")

            async def converged() -> bool:
                views = [await fed.get(c, "/v1/services/web") for c in ADDRS]
                keys = {(v["location"], tuple(v["standbys"]), tuple(sorted(v["vclock"].items()))) for v in views}
                running = {c: [i["name"] for i in await fed.get(c, "/v1/instances")] for c in ADDRS}
                copies = sorted(c for c, names in running.items() if "web" in names)
                return len(keys) == 1 and copies == sorted([views[0]["location"], *views[0]["standbys"]])

            await wait_until(converged, timeout=60, what="converged after the lost site returned")
            for cluster in ADDRS:
                await fed.get(cluster, "/v1/health")
        except BaseException:
            print(dump_logs(fed))
            raise


async def test_a_lost_standby_is_replaced(tmp_path: Path) -> None:
    """The standby's site is lost: the steward drops it after the repair delay and places a
    new one elsewhere; the primary serves throughout."""
    async with federation(tmp_path) as fed:
        try:
            await start(fed)
            created = await fed.call("c1", "POST", "/v1/services", descriptor(entries=1, standby=1), expect=201)
            lost = (await with_standbys(fed, "c1", 1))["standbys"][0]
            other = next(c for c in ADDRS if c not in ("c1", lost))
            lost_at = time.monotonic()
            lose_site(fed, lost)

            async def replaced() -> dict[str, Any] | None:
                view = await fed.get("c1", "/v1/services/web")
                return view if view["standbys"] == [other] else None

            view = await wait_until(replaced, timeout=40, what=f"standby moved from {lost} to {other}")
            print(f"STANDBY-REPLACED after {time.monotonic() - lost_at:.2f}s")
            assert view["location"] == "c1"
            assert await served_by(fed, created["endpoint"]) == "c1"
        except BaseException:
            print(dump_logs(fed))
            raise
