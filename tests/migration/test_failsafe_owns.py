"""Which services the fail-safe owns, so the policy leaves them alone (peer/migration/policy.py).

A policy move is planned: make-before-break drains an old copy that still serves. Once this
entry's HAProxy sees the copy down, or its probes found the location unreachable, it is a
failure and the fail-safe's (the loopback demo counted an outage as a planned move when the
policy's link probe saw the lost AC first and moved it)."""
from __future__ import annotations

from types import SimpleNamespace
from typing import Any, cast

from lb import FakeLoadBalancer
from peer.migration.failsafe import FailSafe
from peer.migration.fakes import FakeEntries, FakeFederation
from peer.records.record import Record, State
from peer.homeset.stewardship import Liveness


def record(location: str) -> Record:
    return Record(name="web", home="c1", location=location, state=State.RUNNING, digest="", descriptor=b"",
                  instance="127.0.0.9:31000", homes=("c1", "c2"))


async def failsafe(lb: FakeLoadBalancer, liveness: Liveness) -> FailSafe:
    await lb.open_frontend("web")
    await lb.route("web", "127.0.0.9", 31000)
    services: Any = SimpleNamespace(here="c1", lb=lb)
    return FailSafe(services=services, client=cast(Any, None), history=cast(Any, None),
                    agent=FakeFederation("c1", ["c1", "c2", "c3"]), homes=FakeEntries(), liveness=liveness,
                    steward_of=lambda r: "c1")


async def test_a_serving_copy_abroad_is_the_policys() -> None:
    fs = await failsafe(FakeLoadBalancer(), Liveness("c1"))
    assert not await fs.owns(record("c3"))


async def test_a_copy_here_is_never_the_failsafes() -> None:
    lb = FakeLoadBalancer()
    fs = await failsafe(lb, Liveness("c1"))
    lb.unreachable.add(("127.0.0.9", 31000))
    assert not await fs.owns(record("c1"))


async def test_a_copy_down_at_this_entry_is_the_failsafes() -> None:
    lb = FakeLoadBalancer()
    fs = await failsafe(lb, Liveness("c1"))
    lb.unreachable.add(("127.0.0.9", 31000))  # HAProxy's checks say DOWN
    assert await fs.owns(record("c3"))


async def test_an_unreachable_location_is_the_failsafes_even_while_checks_pass() -> None:
    liveness = Liveness("c1")
    fs = await failsafe(FakeLoadBalancer(), liveness)
    liveness.mark_unreachable("c3", 10.0)
    assert await fs.owns(record("c3"))
    liveness.mark_reachable("c3")
    assert not await fs.owns(record("c3"))


async def test_no_frontend_here_means_no_move_on_a_guess() -> None:
    lb = FakeLoadBalancer()
    fs = await failsafe(lb, Liveness("c1"))
    await lb.close_frontend("web")
    assert await fs.owns(record("c3"))
