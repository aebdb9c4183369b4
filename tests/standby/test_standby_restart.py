"""A standby's holder restarts its agent (SIGTERM, then SIGKILL of the agent and its Serf): the
standby copy keeps running, is re-adopted like a primary copy, and the record keeps it (real
agents, Serf, HAProxy, processes on 127.0.30.21-23)."""
from __future__ import annotations

import signal
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from peer.migration.standby import REPAIR_AFTER as STANDBY_REPAIR_AFTER
from peer.runtime.waiting import wait_until
from tests.harness import Federation, dump_logs, federation
from tests.standby.test_standby import descriptor

pytestmark = pytest.mark.integration

ADDRS = {"c1": "127.0.30.21", "c2": "127.0.30.22", "c3": "127.0.30.23"}
TIERS = {"c1": "deep-edge", "c2": "edge", "c3": "cloud"}
REPAIR_AFTER = 3.0  # the agents' --repair-after (home-set entries)


async def start(fed: Federation) -> None:
    for name, addr in ADDRS.items():
        fed.add(name, addr, join=[] if name == "c1" else [ADDRS["c1"]],
                extra=["--no-auto-migrate", "--tier", TIERS[name], "--repair-after", str(REPAIR_AFTER)]).start()
    for name in ADDRS:
        await fed.wait_healthy(name)

    await fed.wait_formed(ADDRS)


async def test_a_standby_survives_its_holders_agent_restart(tmp_path: Path) -> None:
    """SIGTERM and a quick start; then SIGKILL of the agent and its Serf, kept down until the
    steward has counted the holder failed for longer than a standby's repair delay: its copy
    still passes the steward's checks, so it is kept, and the next start adopts it."""
    async with federation(tmp_path) as fed:
        try:
            await start(fed)
            await fed.call("c1", "POST", "/v1/services", descriptor(entries=1, standby=1), expect=201)

            async def placed() -> dict[str, Any] | None:
                view = await fed.get("c1", "/v1/services/web")
                return view if view["standbys"] else None

            record = await wait_until(placed, timeout=30, what="a standby placed")
            holder, standbys = record["standbys"][0], record["standby_instances"]
            [copy] = await fed.get(holder, "/v1/instances")
            agent = fed.agents[holder]

            async def kept(until: Callable[[], Awaitable[bool]], what: str) -> None:
                """The record keeps the standby (watched as an invariant) until `until`."""
                async def check() -> bool:
                    view = await fed.get("c1", "/v1/services/web")
                    assert view["standby_instances"] == standbys, (what, view["standby_instances"])
                    return await until()

                await wait_until(check, timeout=60, interval=0.2, what=what)

            async def adopted() -> bool:
                running = await fed.get(holder, "/v1/instances")
                assert [(i["name"], i["pid"]) for i in running] == [("web", copy["pid"])], running
                view = await fed.get(holder, "/v1/services/web")
                return bool(view["role"] == "SR" and view["standby_instances"] == standbys)

            agent.stop()  # SIGTERM
            agent.start()
            await fed.wait_healthy(holder)
            await kept(adopted, "the standby adopted after SIGTERM")
            agent.kill(signal.SIGKILL)  # the agent and its Serf; services and HAProxy run on
            failed_at: list[float] = []

            async def failed_long_enough() -> bool:
                if await fed.member_status("c1", holder) != "failed":
                    return False
                failed_at[:] = failed_at or [time.monotonic()]
                return time.monotonic() - failed_at[0] > STANDBY_REPAIR_AFTER + 1.0

            await kept(failed_long_enough, f"{holder} counted failed past the standby repair delay")
            agent.start()
            await fed.wait_healthy(holder)
            await kept(adopted, "the standby adopted after SIGKILL and a long absence")
            assert [m["target"] for m in await fed.get("c1", "/v1/migrations") if m["kind"] == "standby"] == [holder]
        except BaseException:
            print(dump_logs(fed))
            raise
