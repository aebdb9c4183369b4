"""A cut link heals and the federation re-merges well before Serf's 30 s reconnect interval.

Why namespaces and not INPUT rules on loopback addresses: on loopback, Serf's TCP traffic
(push-pull, TCP fallback pings, joins) leaves from 127.0.0.1 whatever address the agent binds,
so `-s A -d B` rules cut only its UDP and memberlist never declares the peer failed. Each
agent in its own namespace has exactly one source address, as on a real network.
"""
from __future__ import annotations

import time
from pathlib import Path

import pytest

from chaos.faults import Partition
from chaos.netns import Testbed
from peer.runtime.waiting import wait_until
from tests.agent.test_federation import start_three
from tests.harness import Federation, dump_logs, federation

pytestmark = [pytest.mark.integration, pytest.mark.netns]


async def test_partition_heals_and_re_merges_quickly(tmp_path: Path) -> None:
    async with Testbed(["c1", "c2", "c3"], prefix="roamg", subnet="10.232.0.0/24") as tb:
        addrs = {c: tb.addr(c) for c in ("c1", "c2", "c3")}
        async with federation(tmp_path) as fed:
            try:
                await start_three(fed, addrs, netns={c: tb.netns(c) for c in addrs})
                cut = Partition(["c1", "c2"], ["c3"])
                await cut.apply(tb)
                await wait_until(lambda: _status_is(fed, "c1", "c3", "failed"), timeout=40, what="c1 sees c3 failed")
                await wait_until(lambda: _status_is(fed, "c3", "c1", "failed"), timeout=60, what="c3 sees c1 failed")
                await cut.heal(tb)
                healed = time.monotonic()
                for observer, member in (("c1", "c3"), ("c2", "c3"), ("c3", "c1"), ("c3", "c2")):
                    await wait_until(lambda o=observer, m=member: _status_is(fed, o, m, "alive"), timeout=30,
                                     what=f"{observer} sees {member} alive again")
                merged_after = time.monotonic() - healed
                print(f"re-merged {merged_after:.2f}s after heal")
                assert merged_after < 15, f"re-merge took {merged_after:.1f}s"
            except BaseException:
                print(dump_logs(fed))
                raise


async def _status_is(fed: Federation, observer: str, member: str, status: str) -> bool:
    return await fed.member_status(observer, member) == status
