"""Three real agents (each with its real Serf) gossiping on loopback addresses."""
from __future__ import annotations

import time
from pathlib import Path

import pytest

from peer.runtime.waiting import wait_until
from tests.harness import Federation, dump_logs, federation

pytestmark = pytest.mark.integration

ADDRS = {"c1": "127.0.0.11", "c2": "127.0.0.12", "c3": "127.0.0.13"}


async def start_three(fed: Federation, addrs: dict[str, str] = ADDRS, netns: dict[str, str] | None = None) -> None:
    for name, addr in addrs.items():
        join = [] if name == "c1" else [addrs["c1"]]
        fed.add(name, addr, join=join, netns=(netns or {}).get(name)).start()
    for name in addrs:
        await fed.wait_healthy(name)

    async def all_see_three() -> bool:
        for name in addrs:
            members = await fed.get(name, "/v1/members")
            if sorted(m["name"] for m in members if m["status"] == "alive") != sorted(addrs):
                return False
        return True

    await wait_until(all_see_three, timeout=20, what="three alive members everywhere")


async def test_three_agents_form_a_federation_and_detect_a_kill(tmp_path: Path) -> None:
    async with federation(tmp_path) as fed:
        try:
            await start_three(fed)
            members = await fed.get("c2", "/v1/members")
            c1 = next(m for m in members if m["name"] == "c1")
            assert c1["addr"] == ADDRS["c1"] and c1["api"] == "http://127.0.0.11:7070"
            assert c1["load"]["slots_capacity"] == 16 and c1["tier"] == "default"

            fed.agents["c3"].kill()
            started = time.monotonic()
            for observer in ("c1", "c2"):
                await wait_until(lambda o=observer: _status_is(fed, o, "c3", "failed"), timeout=20,
                                 what=f"{observer} sees c3 failed")
            assert time.monotonic() - started < 15
            metrics = await fed.metrics("c1")
            assert 'roam_members{status="failed"} 1.0' in metrics
            assert "roam_gossip_events_total" in metrics
        except BaseException:
            print(dump_logs(fed))
            raise


async def _status_is(fed: Federation, observer: str, member: str, status: str) -> bool:
    return await fed.member_status(observer, member) == status

