"""What scenarios run and send: the sample service's descriptor, and open-loop loads, each
aimed at one endpoint (the HC's, by default) or using a service's whole entry list as a real
client of the home set would (`add_entries`)."""
from __future__ import annotations

import asyncio
import sys
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from chaos.entries import EntryList
from chaos.load import LiveCounter, LoadResult, run_entry_load, run_load

REQUEST_TIMEOUT = 2.0


def descriptor(name: str, *, cpu: float = 0.1, memory: str = "64Mi") -> dict[str, Any]:
    """The sample classifier as a process-driver service."""
    return {
        "name": name, "port": 8080, "cpu": cpu, "memory": memory,
        "health": {"path": "/healthz"},
        "command": [sys.executable, "-m", "peer.samples.classifier",
                    "--host", "{host}", "--port", "{port}"],
    }


@dataclass
class ServiceLoads:
    """Per-service open-loop loads sharing one stop event; results once `finish`ed."""

    rate: float
    timeout: float = REQUEST_TIMEOUT
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    live: dict[str, LiveCounter] = field(default_factory=dict)
    _tasks: dict[str, asyncio.Task[LoadResult]] = field(default_factory=dict)

    def add(self, service: str, endpoint: str, *, rate: float | None = None) -> None:
        """A load aimed at one endpoint (`service` labels it; one load per label)."""
        if service in self._tasks:
            raise ValueError(f"load for {service} already running")
        self.live[service] = LiveCounter()
        self._tasks[service] = asyncio.create_task(run_load(
            [f"http://{endpoint}/"], rate=rate or self.rate, stop=self.stop,
            timeout=self.timeout, live=self.live[service]), name=f"load {service}")

    def add_entries(self, label: str, entries: EntryList, *, rate: float | None = None) -> None:
        """A load through a service's entry list, as a real client sends (`chaos.entries`)."""
        if label in self._tasks:
            raise ValueError(f"load for {label} already running")
        self.live[label] = LiveCounter()
        self._tasks[label] = asyncio.create_task(run_entry_load(
            entries, rate=rate or self.rate, stop=self.stop, timeout=self.timeout,
            live=self.live[label]), name=f"load {label}")

    async def finish(self) -> dict[str, LoadResult]:
        """Stop every load, wait for the stragglers, return the results by service."""
        self.stop.set()
        results = await asyncio.gather(*self._tasks.values())
        return dict(zip(self._tasks, results))

    def line(self) -> str:
        sent = sum(c.sent for c in self.live.values())
        failed = sum(c.failed for c in self.live.values())
        return f"{len(self.live)} loads: sent {sent} failed {failed}"


async def served_by(session: aiohttp.ClientSession, endpoint: str, *,
                    timeout: float = 2.0) -> str | None:
    """The cluster that answered a GET through `endpoint`, or None if it failed."""
    try:
        async with session.get(f"http://{endpoint}/",
                               timeout=aiohttp.ClientTimeout(total=timeout)) as resp:
            if resp.status != 200:
                return None
            body = await resp.json(content_type=None)
    except (TimeoutError, aiohttp.ClientError, ValueError):
        return None
    cluster = body.get("cluster") if isinstance(body, dict) else None
    return cluster if isinstance(cluster, str) else None
