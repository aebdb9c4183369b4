"""The state seam with hot standbys (issue 15's two halves together), real agents: the steward
pushes each new state version to the standby, and when the primary's site is lost the promoted
standby serves with a state no older than one interval (plus one pull)."""
from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from peer.runtime.waiting import wait_until
from tests.harness import dump_logs, federation
from tests.standby.test_standby import lose_site, with_standbys
from tests.state.conftest import INTERVAL, start, stateful

pytestmark = pytest.mark.integration

RATE = 50.0  # requests per second of the sequential client below
PULL_MARGIN = 0.5


async def test_standby_receives_the_state_and_serves_it_after_the_primary_site_is_lost(tmp_path: Path) -> None:
    async with federation(tmp_path) as fed:
        try:
            await start(fed)
            created = await fed.call("c1", "POST", "/v1/services", {**stateful(), "standby": 1}, expect=201)
            record = await with_standbys(fed, "c1", 1, name="counter")
            standby, standby_addr = record["standby_instances"][0]["cluster"], record["standby_instances"][0]["instance"]
            assert standby != "c1"
            entry = created["homes"][1]
            surviving = created["endpoints"][1]
            assert fed.session is not None
            session = fed.session
            answers: list[tuple[float, str, int]] = []  # (sent, cluster, version after the request)
            stop = asyncio.Event()

            async def client() -> None:
                i = 0
                while not stop.is_set():
                    t = time.monotonic()
                    try:
                        async with session.get(f"http://{surviving}/classify?stream=s&seed={i}",
                                               timeout=aiohttp.ClientTimeout(total=5)) as r:
                            if r.status == 200:
                                body = await r.json()
                                answers.append((t, body["cluster"], body["version"]))
                    except (aiohttp.ClientError, asyncio.TimeoutError):
                        pass
                    i += 1
                    await asyncio.sleep(max(0.0, 1 / RATE - (time.monotonic() - t)))

            load = asyncio.create_task(client())

            async def standby_has_state() -> bool:  # a push of the running state reached it
                async with session.get(f"http://{standby_addr}/counters") as r:
                    return bool((await r.json())["version"] > 0)

            await wait_until(standby_has_state, timeout=20, what="a state push to the standby")
            stop.set()
            await load
            last = answers[-1][2]

            async def pushed() -> bool:
                async with session.get(f"http://{standby_addr}/counters") as r:
                    return bool((await r.json())["version"] == last)

            await wait_until(pushed, timeout=10, what="the standby holds the primary's last version")
            stop.clear()
            load = asyncio.create_task(client())
            before = len(answers)  # writes the standby may not have yet: up to two intervals of them
            await wait_until(lambda: len(answers) >= before + int(2 * INTERVAL * RATE), timeout=20,
                             what="writes after the last push")
            lost_at = time.monotonic()
            lose_site(fed, "c1")

            async def promoted() -> dict[str, Any] | None:
                view = await fed.get(entry, "/v1/services/counter")
                return view if view["location"] == standby else None

            await wait_until(promoted, timeout=30, what="standby promoted")
            await wait_until(lambda: any(c == standby and t > lost_at for t, c, _ in answers), timeout=30,
                             what="the standby answers")
            after = len(answers)
            await wait_until(lambda: len(answers) >= after + 20, timeout=20, what="the standby keeps answering")
            stop.set()
            await load
            primary_last = max(v for t, c, v in answers if c == "c1")
            standby_first = min(v for t, c, v in answers if c == standby and t > lost_at)
            behind = primary_last - (standby_first - 1)
            print(f"STATE-STANDBY behind={behind} requests at {RATE:.0f}/s (interval {INTERVAL}s)")
            assert 0 <= behind <= RATE * (INTERVAL + PULL_MARGIN), (primary_last, standby_first)
        except BaseException:
            print(dump_logs(fed))
            raise
