"""Planned moves through the home set with real agents on loopback addresses 127.0.24.1-3:
a move to a cluster that is also an entry settles its copy at once (the commit reaches it by
`ROUTE` before any gossip), so the next move to it is not refused as still arriving; and a
move away from such an entry keeps its old copy serving until its own frontend has moved
(make-before-break at every entry, not only at the steward's)."""
from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from chaos.load import LiveCounter, run_load
from peer.runtime.waiting import wait_until
from tests.harness import dump_logs, federation
from tests.homeset.test_homeset import all_serve_from, descriptor, start

pytestmark = pytest.mark.integration

ADDRS = {"c1": "127.0.24.1", "c2": "127.0.24.2", "c3": "127.0.24.3"}


async def test_a_move_to_an_entry_settles_its_copy_at_once(tmp_path: Path) -> None:
    async with federation(tmp_path) as fed:
        try:
            await start(fed, ADDRS)
            created = await fed.call("c1", "POST", "/v1/services", descriptor(), expect=201)
            endpoints, deputy = created["endpoints"], created["homes"][1]
            other = next(c for c in ADDRS if c not in created["homes"])
            await wait_until(lambda: all_serve_from(fed, endpoints, "c1"), timeout=15, what="both entries serve")
            # To the deputy (an entry and now the AC), away, and straight back: the copy the
            # first move started there must not still count as arriving (it did for ~16 s).
            stop = asyncio.Event()
            live = [LiveCounter() for _ in endpoints]
            loads = [asyncio.create_task(run_load([f"http://{e}/"], rate=100, stop=stop, timeout=5.0, live=c))
                     for e, c in zip(endpoints, live)]
            for target in (deputy, other, deputy, other):
                moved = await fed.call("c1", "POST", "/v1/services/web/migrate", {"target": target})
                assert moved["outcome"] == "succeeded" and moved["target"] == target, moved
                assert await all_serve_from(fed, endpoints, target)
            # Moves answer at their commit (~0.3 s each): let the load reach its count after them.
            await wait_until(lambda: all(c.served > 100 for c in live), timeout=10, what="100 answers per entry")
            stop.set()
            results = [await load for load in loads]
            assert [r.failed for r in results] == [0, 0], [[s for s in r.samples if not s.ok][:3] for r in results]
            assert all(r.served > 100 for r in results)
            view = await fed.get(deputy, "/v1/services/web")
            assert view["location"] == other and view["steward"] == "c1", view
        except BaseException:
            print(dump_logs(fed))
            raise
