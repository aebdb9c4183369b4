"""The fail-safe's loop asks the location before it believes gossip alone (peer/core/failsafe.py).

Seen in the demo's recovery phase: the deputy (cloud) was steward on its side of a partition
because Serf reported the HC (deep-edge) failed. The partition healed, the HC's record (the
service back at the HC by its own fail-safe) arrived, and Serf still said "failed" for a moment:
the deputy's fail-safe treated the HC's serving copy as lost. Here the loop's I/O is driven
through its seams: gossip says the location failed while this entry's check of the recorded
copy passes; a ping that answers leaves the service alone, one that does not fails it over.
"""
from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from types import SimpleNamespace
from typing import Any

from lb import FakeLoadBalancer
from peer.copies.manager import ServiceManager
from peer.migration.failsafe import RECHECK_EVERY, FailSafe
from peer.migration.fakes import FakeEntries, FakeFederation, member
from peer.peering.client import PeerUnreachable
from peer.records.record import Record, State
from peer.homeset.stewardship import Liveness


class Pings:
    """PeerClient's `call` for PING: answers unless the cluster is `silent`."""

    def __init__(self) -> None:
        self.silent: set[str] = set()
        self.asked: list[str] = []

    async def call(self, base_url: str, path: str, payload: object, *, timeout: float = 5.0) -> object:
        cluster = base_url.removeprefix("http://")
        self.asked.append(cluster)
        if cluster in self.silent:
            raise PeerUnreachable(f"{cluster}: timed out")
        return {"cluster": cluster, "ok": True}


RECORD = Record(name="web", home="c1", location="c1", state=State.RUNNING, digest="", descriptor=b"",
                instance="127.0.0.9:31000", homes=("c1", "c2"))


class Services(SimpleNamespace):
    """The few ServiceManager calls `_check` makes."""

    def lock(self, name: str) -> asyncio.Lock:
        return self.locks.setdefault(name, asyncio.Lock())

    routes_as_recorded = ServiceManager.routes_as_recorded  # (it reads `lb` only)


async def failsafe_at_the_deputy(pings: Pings) -> tuple[FailSafe, list[str]]:
    lb = FakeLoadBalancer()
    await lb.open_frontend("web")
    await lb.route("web", "127.0.0.9", 31000)  # the HC's copy passes this entry's checks
    agent = FakeFederation("c2", ["c1", "c2", "c3"])
    agent.membership.members["c1"] = member("c1", "failed", since=1.0)  # gossip has not caught up
    fs = FailSafe(services=Services(here="c2", lb=lb, locks={}), client=pings, history=None,  # type: ignore[arg-type]
                  agent=agent, homes=FakeEntries(), liveness=Liveness("c2"), steward_of=lambda r: "c2")
    acted: list[str] = []

    def act(name: str, coro: Coroutine[Any, Any, None]) -> None:
        acted.append(coro.__qualname__)
        coro.close()

    fs._act = act  # type: ignore[method-assign]
    return fs, acted


async def test_a_location_gossip_calls_failed_but_that_answers_is_left_alone() -> None:
    pings = Pings()
    fs, acted = await failsafe_at_the_deputy(pings)
    for _ in range(3):
        await fs._check(RECORD)
    assert acted == [] and "c1" not in fs.liveness.unreachable
    assert pings.asked == ["c1"]  # one answer holds for a while: not a ping per service and tick
    pings.silent.add("c1")  # ...and no longer: a location that stops answering is failed over
    fs._answered["c1"] -= RECHECK_EVERY
    await fs._check(RECORD)
    assert acted == ["FailSafe._redeploy"] and pings.asked == ["c1", "c1"]


async def test_a_location_gossip_calls_failed_that_does_not_answer_is_failed_over() -> None:
    pings = Pings()
    pings.silent.add("c1")
    fs, acted = await failsafe_at_the_deputy(pings)
    await fs._check(RECORD)
    assert acted == ["FailSafe._redeploy"] and pings.asked == ["c1"]
    assert "c1" in fs.liveness.unreachable  # the probe's evidence feeds the stewardship view
