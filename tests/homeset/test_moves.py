"""Planned moves through the home set with real agents on loopback addresses 127.0.24.1-3:
a move to a cluster that is also an entry settles its copy at once (the commit reaches it by
`ROUTE` before any gossip), so the next move to it is not refused as still arriving."""
from __future__ import annotations

from pathlib import Path

import pytest

from peer.waiting import wait_until
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
            for target in (deputy, other, deputy):
                moved = await fed.call("c1", "POST", "/v1/services/web/migrate", {"target": target})
                assert moved["outcome"] == "succeeded" and moved["target"] == target, moved
                assert await all_serve_from(fed, endpoints, target)
            view = await fed.get(deputy, "/v1/services/web")
            assert view["location"] == deputy and view["steward"] == "c1", view
        except BaseException:
            print(dump_logs(fed))
            raise
