"""Real agents for the state tests, on this area's loopback range (127.0.20.x)."""
from __future__ import annotations

import sys
from typing import Any

import aiohttp

from peer.runtime.waiting import wait_until
from tests.harness import Federation

ADDRS = {"c1": "127.0.20.31", "c2": "127.0.20.32", "c3": "127.0.20.33"}
INTERVAL = 0.5


def stateful(name: str = "counter", *, entries: int = 2, path: str = "/roam/state", pad: int = 0,
             interval: float = INTERVAL) -> dict[str, Any]:
    command = [sys.executable, "-m", "peer.samples.stateful", "--host", "{host}", "--port", "{port}"]
    if pad:
        command += ["--pad", str(pad)]
    return {"name": name, "port": 8080, "cpu": 0.25, "memory": "64Mi", "health": {"path": "/healthz"},
            "entries": entries, "command": command, "state": {"path": path, "interval": interval}}


async def start(fed: Federation, names: tuple[str, ...] = ("c1", "c2", "c3")) -> None:
    for name in names:
        fed.add(name, ADDRS[name], join=[] if name == "c1" else [ADDRS["c1"]]).start()
    for name in names:
        await fed.wait_healthy(name)

    async def ready() -> bool:
        members = await fed.get("c1", "/v1/members")
        return sum(1 for m in members if m["status"] == "alive" and m["load"]) == len(names)

    await wait_until(ready, timeout=30, what="all members alive with load")


async def counters(fed: Federation, endpoint: str) -> dict[str, Any]:
    assert fed.session is not None
    async with fed.session.get(f"http://{endpoint}/counters", timeout=aiohttp.ClientTimeout(total=5)) as r:
        assert r.status == 200
        data: dict[str, Any] = await r.json()
        return data
