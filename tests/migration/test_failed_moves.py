"""Issue 13: a migration that fails leaves nothing stuck. Real agents (Serf, HAProxy, service
processes) on loopback 127.0.70.x: the move answers a JSON error promptly, ends `failed` in
/v1/migrations with its journal closed, the service still serves where it was, and nothing is
left at the target (no process, no instance, no record saying it runs there)."""
from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from peer.runtime.waiting import wait_until
from tests.harness import Federation, dump_logs, federation
from tests.migration.test_migration import served_by

pytestmark = pytest.mark.integration

ADDRS = {"c1": "127.0.70.1", "c2": "127.0.70.2"}
PROMPT = 20.0  # seconds: far below the 60 s ready_timeout a hung move would wait out
#: Runs the classifier, except at c2 where it exits at once (a target that cannot start it).
STARTER = ("import runpy, sys\n"
           "if sys.argv[1] == '127.0.70.2':\n"
           "    sys.exit('cannot start here')\n"
           "sys.argv = ['classifier', '--host', sys.argv[1], '--port', sys.argv[2]]\n"
           "runpy.run_module('peer.samples.classifier', run_name='__main__')\n")
DESCRIPTOR = {
    "name": "classifier", "port": 8080, "cpu": 0.5, "memory": "128Mi", "health": {"path": "/healthz"},
    "entries": 1, "ready_timeout": 60,
    "command": [sys.executable, "-m", "peer.samples.classifier", "--host", "{host}", "--port", "{port}"],
}


async def start(fed: Federation, env: dict[str, str] | None = None) -> None:
    for name, addr in ADDRS.items():
        agent = fed.add(name, addr, join=[] if name == "c1" else [ADDRS["c1"]])
        agent.env = (env or {}) if name == "c1" else {}
        agent.start()
    for name in ADDRS:
        await fed.wait_healthy(name)

    async def both_alive() -> bool:
        members = await fed.get("c1", "/v1/members")
        return sum(1 for m in members if m["status"] == "alive" and m["load"]) == len(ADDRS)

    await wait_until(both_alive, timeout=30, what="both members alive with load")


def service_pids(addr: str) -> list[int]:
    """Processes whose command line names `addr` and the classifier: copies started there."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            argv = Path(f"/proc/{entry}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if addr.encode() in argv and any(b"classifier" in a for a in argv):
            found.append(int(entry))
    return found


async def left_at_target(fed: Federation, name: str) -> list[str]:
    """What at c2 still speaks of the service: instances, records that are not only c1's copy."""
    left = [f"instance {i['name']} ({i['state']})" for i in await fed.get("c2", "/v1/instances")
            if i["name"] == name]
    left += [f"record location={r['location']}" for r in await fed.get("c2", "/v1/services")
             if r["name"] == name and r["location"] != "c1"]
    left += [f"record at c1 says {r['location']}" for r in await fed.get("c1", "/v1/services")
             if r["name"] == name and r["location"] != "c1"]
    left += [f"process {pid}" for pid in service_pids(ADDRS["c2"])]
    return left


async def fails_cleanly(fed: Federation, descriptor: dict[str, Any], says: str) -> None:
    """Create at c1, move to c2 and expect the failure with nothing stuck."""
    endpoint = (await fed.call("c1", "POST", "/v1/services", descriptor, expect=201))["endpoint"]
    began = time.monotonic()
    answer = await fed.call("c1", "POST", f"/v1/services/{descriptor['name']}/migrate", {"target": "c2"},
                            expect=409)
    took = time.monotonic() - began
    print(f"{descriptor['name']}: the failed move answered in {took * 1000:.0f} ms")  # figures (pytest -s)
    assert took < PROMPT, f"the error took {took:.1f}s"
    assert answer["status"] == 409 and says in answer["error"], answer
    history = [m for m in await fed.get("c1", "/v1/migrations") if m["service"] == descriptor["name"]]
    assert [m["outcome"] for m in history] == ["failed"], history
    assert history[0]["error"], history
    assert await served_by(fed, endpoint) == "c1"

    async def nothing_left() -> bool:
        return not await left_at_target(fed, descriptor["name"])

    await wait_until(nothing_left, timeout=30, what="nothing left at c2")
    for _ in range(20):  # the old location keeps serving, request after request
        assert await served_by(fed, endpoint) == "c1"
    assert [m["outcome"] for m in await fed.get("c1", "/v1/migrations")
            if m["service"] == descriptor["name"]] == ["failed"]


async def test_a_target_that_cannot_start_the_service(tmp_path: Path) -> None:
    async with federation(tmp_path) as fed:
        try:
            await start(fed)
            descriptor = {**DESCRIPTOR, "command": [sys.executable, "-c", STARTER, "{host}", "{port}"]}
            await fails_cleanly(fed, descriptor, says="wait")
        except BaseException:
            print(dump_logs(fed))
            raise


async def test_a_reroute_that_fails(tmp_path: Path) -> None:
    async with federation(tmp_path) as fed:
        try:
            await start(fed, env={"ROAM_FAILPOINTS": "migration.reroute=fail"})
            await fails_cleanly(fed, DESCRIPTOR, says="reroute")
        except BaseException:
            print(dump_logs(fed))
            raise
