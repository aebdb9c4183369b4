"""Issue 16: the fail-safe starts the home copy at its first evidence and confirms the loss while
that copy starts. A loss that is not confirmed (only the service process died; the AC's agent
answers and its driver restarts the copy) must cost nothing but that copy: it is removed, no
fail-safe is recorded and the route stays with the AC. Real agents, HAProxy and processes on
127.0.31.41-42."""
from __future__ import annotations

import json
import os
import signal
import sys
from pathlib import Path
from typing import Any

import pytest

from chaos.figures import copies_ahead
from peer.runtime.waiting import wait_until
from tests.harness import Federation, dump_logs, federation
from tests.migration.test_migration import served_by

pytestmark = pytest.mark.integration

ADDRS = {"c1": "127.0.31.41", "c2": "127.0.31.42"}
DESCRIPTOR = {
    "name": "classifier", "port": 8080, "cpu": 0.5, "memory": "128Mi", "health": {"path": "/healthz"},
    "entries": 1,
    "command": [sys.executable, "-m", "peer.samples.classifier", "--host", "{host}", "--port", "{port}"],
}


async def start(fed: Federation) -> None:
    for name, addr in ADDRS.items():
        fed.add(name, addr, join=[] if name == "c1" else [ADDRS["c1"]]).start()
    for name in ADDRS:
        await fed.wait_healthy(name)

    async def ready() -> bool:
        members = await fed.get("c1", "/v1/members")
        return sum(1 for m in members if m["status"] == "alive" and m["load"]) == len(ADDRS)

    await wait_until(ready, timeout=20, what="both members alive with load")


async def copies_at(fed: Federation, name: str) -> list[dict[str, Any]]:
    return [i for i in await fed.get(name, "/v1/instances") if i["name"] == "classifier"]


async def test_a_copy_started_ahead_is_removed_when_the_loss_is_not_confirmed(tmp_path: Path) -> None:
    async with federation(tmp_path) as fed:
        try:
            await start(fed)
            endpoint = (await fed.call("c1", "POST", "/v1/services", DESCRIPTOR, expect=201))["endpoint"]
            await fed.call("c1", "POST", "/v1/services/classifier/migrate", {"target": "c2"})
            await wait_until(lambda: _none_at(fed, "c1"), timeout=15, what="the old copy at c1 stopped")
            state = json.loads((fed.agents["c2"].data_dir / "services" / "classifier" / "instance.json").read_text())
            os.killpg(state["pgid"], signal.SIGKILL)  # the service only: c2's agent answers and restarts it

            log = fed.agents["c1"].log_path
            await wait_until(lambda: "the copy started ahead is removed" in log.read_text(errors="replace"),
                             timeout=20, what="c1 started a copy ahead and removed it")
            await wait_until(lambda: _none_at(fed, "c1"), timeout=15, what="no copy left at c1")
            await wait_until(lambda: _served_by_c2(fed, endpoint), timeout=30, what="c2 serves again")
            history = await fed.get("c1", "/v1/migrations")
            assert [m["kind"] for m in history] == ["planned"], history
            # counted as a false suspicion (the chaos runner reports these: failsafe_false_starts)
            assert copies_ahead(await fed.metrics("c1")).get("removed", 0) >= 1
            record = await fed.get("c1", "/v1/services/classifier")
            assert record["location"] == "c2", record
        except BaseException:
            print(dump_logs(fed))
            raise


async def _none_at(fed: Federation, name: str) -> bool:
    return not await copies_at(fed, name)


async def _served_by_c2(fed: Federation, endpoint: str) -> bool:
    return await served_by(fed, endpoint) == "c2"
