"""The services API on real agents: deploy, bad input, delete, restart and crash recovery."""
from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from peer.runtime.waiting import wait_until
from tests.harness import TOKEN, Federation, dump_logs, federation

pytestmark = pytest.mark.integration

A, B = "127.0.0.41", "127.0.0.42"
GOOD = {
    "name": "classifier", "port": 8080, "cpu": 0.25, "memory": "64Mi", "health": {"path": "/healthz"},
    "command": [sys.executable, "-m", "peer.samples.classifier", "--host", "{host}", "--port", "{port}"],
}

BAD: list[tuple[dict[str, Any], str]] = [
    ({**GOOD, "name": "Bad_Name"}, "name"),
    ({**GOOD, "name": "../etc"}, "name"),
    ({**GOOD, "port": 70000}, "port"),
    ({**GOOD, "port": "80"}, "port"),
    ({**GOOD, "command": "python -m http.server; rm -rf /"}, "command"),
    ({**GOOD, "command": ["ok", 3]}, "command[1]"),
    ({**GOOD, "command": []}, "command"),
    ({**GOOD, "cpu": -1}, "cpu"),
    ({**GOOD, "cpu": 1e308}, "cpu"),
    ({**GOOD, "memory": "lots"}, "memory"),
    ({**GOOD, "replicas": 0}, "replicas"),
    ({**GOOD, "standby": True}, "standby"),
    ({**GOOD, "health": {"path": "no-slash"}}, "health.path"),
    ({**GOOD, "constraints": {"tiers": "edge"}}, "constraints.tiers"),
    ({**GOOD, "surprise": 1}, "surprise"),
]


async def state(fed: Federation, name: str) -> tuple[Any, Any]:
    return await fed.get(name, "/v1/services"), await fed.get(name, "/v1/instances")


async def serves(fed: Federation, endpoint: str) -> str | None:
    assert fed.session is not None
    try:
        async with fed.session.get(f"http://{endpoint}/", timeout=aiohttp.ClientTimeout(total=2)) as r:
            return (await r.json())["cluster"] if r.status == 200 else None
    except (aiohttp.ClientError, asyncio.TimeoutError, ValueError):
        return None


async def test_bad_descriptors_are_refused_naming_the_field_and_change_nothing(tmp_path: Path) -> None:
    async with federation(tmp_path) as fed:
        fed.add("c1", A).start()
        await fed.wait_healthy("c1")
        before = await state(fed, "c1")
        for body, field in BAD:
            err = await fed.call("c1", "POST", "/v1/services", body, expect=422)
            assert err["field"] == field, (body, err)
            assert err["error"]
        assert await state(fed, "c1") == before == ([], [])
        assert fed.session is not None
        async with fed.session.post(fed.agents["c1"].api + "/v1/services", data=b"{not json",
                                    headers={"Authorization": f"Bearer {TOKEN}",
                                             "Content-Type": "application/json"}) as r:
            assert r.status == 400 and "JSON" in (await r.json())["error"]
        exits = {**GOOD, "name": "quitter", "command": [sys.executable, "-c", "import sys; print('boom'); sys.exit(3)"]}
        err = await fed.call("c1", "POST", "/v1/services", exits, expect=422)
        assert "boom" in err["error"], err
        assert await state(fed, "c1") == before


async def test_deploy_delete_and_load_gossip(tmp_path: Path) -> None:
    async with federation(tmp_path) as fed:
        try:
            fed.add("c1", A).start()
            fed.add("c2", B, join=[A]).start()
            for n in ("c1", "c2"):
                await fed.wait_healthy(n)

            async def c2_sees_c1_slots(n: int) -> bool:
                members = await fed.get("c2", "/v1/members")
                return any(m["name"] == "c1" and m["load"].get("slots_used") == n for m in members)

            await wait_until(lambda: c2_sees_c1_slots(0), timeout=20, what="c2 sees c1 idle")
            created = await fed.call("c1", "POST", "/v1/services", GOOD, expect=201)
            assert created["role"] == "LR" and created["home"] == created["location"] == "c1"
            assert created["vclock"] == {"c1": 1}
            assert await serves(fed, created["endpoint"]) == "c1"
            await fed.call("c1", "POST", "/v1/services", GOOD, expect=409)
            # The load change travels as a Serf tag to the other cluster.
            await wait_until(lambda: c2_sees_c1_slots(1), timeout=10, what="c2 sees c1's new load")
            assert (await fed.get("c1", "/v1/services/classifier"))["name"] == "classifier"
            await fed.call("c1", "GET", "/v1/services/nothere", expect=404)

            deleted = await fed.call("c1", "DELETE", "/v1/services/classifier")
            assert deleted["state"] == "deleted"
            assert await state(fed, "c1") == ([], [])
            assert await serves(fed, created["endpoint"]) is None
            await fed.call("c1", "DELETE", "/v1/services/classifier", expect=404)
            await wait_until(lambda: c2_sees_c1_slots(0), timeout=10, what="c2 sees c1 idle again")
        except BaseException:
            print(dump_logs(fed))
            raise


async def test_agent_crash_and_restart_keep_records_services_and_routes(tmp_path: Path) -> None:
    async with federation(tmp_path) as fed:
        try:
            agent = fed.add("c1", A)
            agent.start()
            await fed.wait_healthy("c1")
            created = await fed.call("c1", "POST", "/v1/services", GOOD, expect=201)
            endpoint = created["endpoint"]
            pid = (await fed.get("c1", "/v1/instances"))[0]["pid"]

            agent.kill()  # SIGKILL: HAProxy and the service live in their own sessions
            assert await serves(fed, endpoint) == "c1", "a crashed agent must not take traffic down"
            agent.start()
            await fed.wait_healthy("c1")
            records, instances = await state(fed, "c1")
            assert [(r["name"], r["role"], r["endpoint"], r["vclock"]) for r in records] == [
                ("classifier", "LR", endpoint, {"c1": 1})]
            assert [i["pid"] for i in instances] == [pid], "the same process is re-adopted"
            assert await serves(fed, endpoint) == "c1"

            agent.stop()  # a clean restart too
            agent.start()
            await fed.wait_healthy("c1")
            await wait_until(lambda: _serves_is(fed, endpoint, "c1"), timeout=10, what="serving after restart")
            assert [i["pid"] for i in (await state(fed, "c1"))[1]] == [pid]

            # A crashed service is restarted by the driver and still reachable at the endpoint.
            import os
            import signal

            os.kill(pid, signal.SIGKILL)

            async def restarted() -> bool:
                inst = await fed.get("c1", "/v1/instances")
                return bool(inst) and inst[0]["pid"] != pid and inst[0]["state"] == "ready" and inst[0]["restarts"] >= 1

            await wait_until(restarted, timeout=20, what="service restarted")
            await wait_until(lambda: _serves_is(fed, endpoint, "c1"), timeout=10, what="serving after crash")
        except BaseException:
            print(dump_logs(fed))
            raise


async def _serves_is(fed: Federation, endpoint: str, cluster: str) -> bool:
    return await serves(fed, endpoint) == cluster
