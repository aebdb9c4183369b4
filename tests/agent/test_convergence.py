"""The records are the source of truth on a schedule (issue 12): whatever is done to HAProxy or
to a service's process behind the agent's back, and whatever derived file is deleted under it,
the agent converges back to its records within a few seconds, without a restart."""
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

from lb import runtime
from lb.client import RuntimeClient
from lb.config import backend_name, frontend_name
from peer.runtime.waiting import wait_until
from tests.harness import Federation, dump_logs, federation

pytestmark = pytest.mark.integration

A = "127.0.22.11"
HEAL_DEADLINE = 15.0  # a round every 2 s; generous for a loaded 2-core machine


def classifier(name: str) -> dict[str, Any]:
    return {"name": name, "port": 8080, "cpu": 0.1, "memory": "64Mi", "health": {"path": "/healthz"},
            "command": [sys.executable, "-m", "peer.samples.classifier", "--host", "{host}", "--port", "{port}"]}


async def serves(fed: Federation, endpoint: str) -> bool:
    """One request on a new connection (a kept-alive one outlives a closed frontend)."""
    try:
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as session:
            async with session.get(f"http://{endpoint}/", timeout=aiohttp.ClientTimeout(total=1)) as r:
                return r.status == 200
    except (aiohttp.ClientError, asyncio.TimeoutError):
        return False


async def routed_as_recorded(fed: Federation, haproxy: RuntimeClient, backend: str) -> bool:
    """The backend holds exactly one server, enabled, at the record's instance."""
    record = await fed.get("c1", "/v1/services/heal")
    servers = await haproxy.servers_state(backend)
    return (len(servers) == 1 and f"{servers[0].addr}:{servers[0].port}" == record["instance"]
            and not servers[0].maint and not servers[0].drain)


async def test_haproxy_and_copies_converge_to_the_records_behind_the_agents_back(tmp_path: Path) -> None:
    async with federation(tmp_path) as fed:
        haproxy = RuntimeClient(tmp_path / "c1" / "lb" / "haproxy.sock")
        try:
            fed.add("c1", A).start()
            await fed.wait_healthy("c1")
            record = await fed.call("c1", "POST", "/v1/services", classifier("heal"), expect=201)
            endpoint = record["endpoint"]
            port = int(endpoint.rsplit(":", 1)[1])
            backend, frontend = backend_name(port), frontend_name(port)
            await wait_until(lambda: serves(fed, endpoint), timeout=15, what="heal serves")

            async def server() -> str:
                return (await haproxy.servers_state(backend))[0].name

            async def route_deleted() -> None:
                name = await server()
                await haproxy.set_server_state(backend, name, "maint")
                await haproxy.del_server(backend, name)

            async def route_in_maint() -> None:
                await haproxy.set_server_state(backend, await server(), "maint")

            async def stray_server() -> None:
                await haproxy.add_server(backend, "intruder", "127.0.22.99", 9)
                await haproxy.set_server_state(backend, "intruder", "ready")

            async def frontend_disabled() -> None:
                await haproxy.execute(runtime.disable_frontend(frontend))

            async def frontend_shut_down() -> None:
                await haproxy.execute(runtime.shutdown_frontend(frontend))

            async def process_killed() -> None:
                pid = next(i["pid"] for i in await fed.get("c1", "/v1/instances") if i["name"] == "heal")
                os.killpg(pid, signal.SIGKILL)

            healed: dict[str, float] = {}
            breaks = [route_deleted, route_in_maint, stray_server, frontend_disabled, frontend_shut_down,
                      process_killed]
            for breaking in breaks:
                await breaking()
                started = time.monotonic()
                if breaking not in (process_killed, stray_server):  # (HAProxy retries past a stray;
                    # the driver restarts a killed copy at once)
                    assert not await serves(fed, endpoint), f"{breaking.__name__} did not break anything"

                async def healed_now() -> bool:
                    return await serves(fed, endpoint) and await routed_as_recorded(fed, haproxy, backend)

                await wait_until(healed_now, timeout=HEAL_DEADLINE, interval=0.05,
                                 what=f"healed after {breaking.__name__}")
                healed[breaking.__name__] = round(time.monotonic() - started, 2)
            data = tmp_path / "c1"
            for lost in (data / "lb" / "lb-slots.json", data / "services" / "heal" / "instance.json"):
                lost.unlink()
                started = time.monotonic()
                await wait_until(lost.exists, timeout=HEAL_DEADLINE, interval=0.05, what=f"{lost.name} written again")
                healed[f"{lost.name} deleted"] = round(time.monotonic() - started, 2)
                assert await serves(fed, endpoint)
            print(f"healed in (s): {healed}")
            log = fed.agents["c1"].log_path.read_text()
            assert "converged to the records" in log
            assert "reloaded haproxy: frontend(s) " + frontend in log
            instances = [i for i in await fed.get("c1", "/v1/instances") if i["name"] == "heal"]
            assert len(instances) == 1 and instances[0]["state"] == "ready", instances
        except BaseException:
            print(dump_logs(fed))
            raise
        finally:
            await haproxy.close()
