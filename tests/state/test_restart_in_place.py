"""A stateful copy restarted in place by its driver (real agents, the stateful sample killed
with SIGKILL): it gets the latest saved state back from the steward, and neither entry's saved
state goes back to the restarted process's empty counters (peer/state/fresh.py)."""
from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from peer.state.saved import SavedStates
from peer.runtime.waiting import wait_until
from tests.harness import Federation, dump_logs, federation

pytestmark = pytest.mark.integration

ADDRS = {"c1": "127.0.30.1", "c2": "127.0.30.2"}


def stateful(**extra: Any) -> dict[str, Any]:
    return {"name": "counter", "port": 8080, "cpu": 0.25, "memory": "64Mi", "health": {"path": "/healthz"},
            "command": [sys.executable, "-m", "peer.samples.stateful", "--host", "{host}", "--port", "{port}"],
            "state": {"path": "/roam/state", "interval": 0.3}, **extra}


async def start_two(fed: Federation, extra: list[str] | None = None) -> None:
    for name, addr in ADDRS.items():
        fed.add(name, addr, join=[] if name == "c1" else [ADDRS["c1"]],
                extra=["--no-auto-migrate", *(extra or [])]).start()
    for name in ADDRS:
        await fed.wait_healthy(name)

    async def formed() -> bool:
        members = await fed.get("c1", "/v1/members")
        return sum(1 for m in members if m["status"] == "alive" and m["load"]) == len(ADDRS)

    await wait_until(formed, timeout=30, what="federation formed")


def saved_total(fed: Federation, cluster: str, record: dict[str, Any]) -> int | None:
    """The counters' total in the state `cluster` saved (None: nothing saved yet)."""
    saved = SavedStates(fed.agents[cluster].data_dir).load(record["name"], record["incarnation"])
    return None if saved is None else int(json.loads(saved.snapshot.body)["total"])


async def test_a_copy_restarted_in_place_gets_its_state_back_and_nothing_saved_goes_back(tmp_path: Path) -> None:
    async with federation(tmp_path) as fed:
        try:
            await start_two(fed)
            created = await fed.call("c1", "POST", "/v1/services", stateful(entries=2), expect=201)
            assert created["homes"] == ["c1", "c2"], created  # c1 is the steward
            # The primary moves to c2: c1 pulls it remotely (STATE_COPY), c2 asks c1 to restore it (STATE_RESTORE).
            moved = await fed.call("c1", "POST", "/v1/services/counter/migrate", {"target": "c2"})
            assert moved["outcome"] == "succeeded", moved
            view = await fed.get("c1", "/v1/services/counter")
            assert view["location"] == "c2", view
            instance = view["instance"]
            assert fed.session is not None
            session = fed.session
            for seed in range(25):
                async with session.get(f"http://{instance}/classify?stream=s&seed={seed}") as r:
                    assert r.status == 200
            # Both entries pulled and saved the 25 counted requests (c2 through the peer check).
            await wait_until(lambda: all(saved_total(fed, c, created) == 25 for c in ADDRS), timeout=20,
                             what="25 counted requests saved at both entries")
            seen: dict[str, list[int | None]] = {c: [] for c in ADDRS}  # saved totals, sampled throughout
            stop = asyncio.Event()

            async def sample() -> None:
                while not stop.is_set():
                    for c in ADDRS:
                        seen[c].append(saved_total(fed, c, created))
                    await asyncio.sleep(0.02)

            sampler = asyncio.create_task(sample())
            [before] = await fed.get("c2", "/v1/instances")
            os.kill(before["pid"], signal.SIGKILL)  # the driver restarts it in place, empty

            async def restarted() -> dict[str, Any] | None:
                instances = await fed.get("c2", "/v1/instances")
                return next((i for i in instances if i["pid"] != before["pid"] and i["state"] == "ready"), None)

            after = await wait_until(restarted, timeout=20, what="the copy restarted in place")
            address = f"{after['host']}:{after['port']}"

            async def restored() -> dict[str, Any] | None:
                async with session.get(f"http://{address}/counters", timeout=aiohttp.ClientTimeout(total=2)) as r:
                    body: dict[str, Any] = await r.json()
                return body if body["total"] == 25 else None

            await wait_until(restored, timeout=10, what="the saved counters installed into the restarted copy")
            # Several pull intervals later the saved state still holds every count, at both entries.
            log = fed.agents["c2"].log_path
            await wait_until(lambda: "restored into its copy restarted in place" in log.read_text()
                             and "(by c1)" in log.read_text(), timeout=10, what="the restore by the steward logged")
            for seed in range(5):
                async with session.get(f"http://{address}/classify?stream=s&seed={seed}") as r:
                    assert (await r.json())["count"] > 0
            await wait_until(lambda: all(saved_total(fed, c, created) == 30 for c in ADDRS), timeout=20,
                             what="30 counted requests saved at both entries")
            stop.set()
            await sampler
            for c, totals in seen.items():  # the saved state never went back, not even for a moment
                assert None not in totals and totals == sorted(totals), (c, totals)  # type: ignore[type-var]
        except BaseException:
            print(dump_logs(fed))
            raise
