"""A stateful service through planned migrations and a site loss (issue 15, seeds 001 and 003).

`state-migration`: the stateful sample (per-stream counters, `state` hook, interval 0.5 s) is
homed at c1 with two entries and loaded at `rate` through its HC endpoint; it is migrated
c2 -> c3 -> c1 -> c2 (planned: nothing may be lost, and each handover must report its state
exact), then the site running it is lost: the steward's fail-safe copy must start from a
state no older than one interval (plus one pull) before the loss. Figures: the handover
windows, bytes moved, and the requests' worth of state the fail-safe lost.
"""
from __future__ import annotations

import sys
from typing import Any

from chaos.cluster import AdminAPIError
from chaos.scenarios import Scenario
from chaos.scenarios.context import Deployed, ScenarioContext
from chaos.siteloss import SiteLoss

INTERVAL = 0.5
SETTLE = 2.0
DEADLINE = 30.0
PULL_MARGIN = 0.5  # one pull's duration and the request's own time, on a loaded machine


def stateful_descriptor(name: str) -> dict[str, Any]:
    return {"name": name, "port": 8080, "cpu": 0.1, "memory": "64Mi", "health": {"path": "/healthz"},
            "entries": 2, "state": {"path": "/roam/state", "interval": INTERVAL},
            "command": [sys.executable, "-m", "peer.samples.stateful", "--host", "{host}", "--port", "{port}"]}


async def _counters(ctx: ScenarioContext, endpoint: str) -> dict[str, Any] | None:
    try:
        async with ctx.probe.get(f"http://{endpoint}/counters") as r:
            return dict(await r.json()) if r.status == 200 else None
    except Exception:  # noqa: BLE001 - "not serving now" is an answer here
        return None


async def state_migration(ctx: ScenarioContext) -> None:
    home, name = ctx.clusters[0], "s1"
    record = await ctx.fed.create_service(home, stateful_descriptor(name))
    endpoint = str(record["endpoint"])
    ctx.deployed[name] = Deployed(name, home, endpoint)
    # Every request counts under a stream: the state changes all the time (the load appends a
    # '/' to the URL, which lands in the stream's name).
    ctx.loads.add(name, f"{endpoint}/classify?seed=1&stream=chaos")
    await ctx.hold(SETTLE)
    windows, moved = [], 0
    for i, target in enumerate([*ctx.clusters[1:3], home, ctx.clusters[1]], start=1):
        m = await ctx.migrate(home, name, target)
        st = m.get("state_transfer") or {}
        windows.append(m.get("handover"))
        moved += int(st.get("bytes") or 0)
        ctx.expect(f"state_exact[{i}:{m.get('source')}->{target}]", st.get("exact") is True and not st.get("not_held"),
                   f"handover {m.get('handover')} ms, {st.get('bytes')} bytes in {st.get('rounds')} rounds, "
                   f"exact={st.get('exact')}, not held at {st.get('not_held')}")
        await ctx.hold(1.0)
    ctx.report.figure("handover_ms_max", max((w for w in windows if w is not None), default=None), "ms")
    ctx.report.figure("state_bytes_moved", moved, "bytes")
    await _site_loss(ctx, name, endpoint)


async def _site_loss(ctx: ScenarioContext, name: str, endpoint: str) -> None:
    """The site running the service is lost; the fail-safe's copy must hold a recent state."""
    location = await ctx.location(name)
    assert location is not None and location != ctx.deployed[name].home, location
    before = await _counters(ctx, endpoint)
    assert before is not None
    loss = await ctx.inject(SiteLoss(ctx.fed, location))
    took = await ctx.wait_served_from(name, [c for c in ctx.clusters if c != location], timeout=DEADLINE,
                                      what=f"{name} served again after {location}'s site loss")
    ctx.report.figure("failover_served_s", took, "s")
    failsafe = None
    try:
        failsafe = next((m for m in await ctx.fed.migrations(ctx.deployed[name].home)
                         if m.get("kind") == "failsafe" and m.get("service") == name), None)
    except AdminAPIError:
        pass
    st = (failsafe or {}).get("state_transfer") or {}
    restored = int(str(st.get("etag", '"-1"')).strip('"') or -1) if st else -1
    # What the copy had at the moment of loss is at least `before`; allowed to lose at most
    # one interval (plus a pull) of the load's requests, measured from `before`'s read.
    allowed = ctx.rate * (INTERVAL + PULL_MARGIN)
    missing = before["version"] - restored
    ctx.report.figure("failover_state_behind_requests", missing if restored >= 0 else None,
                      f"requests at {ctx.rate:.0f}/s")
    ctx.expect("failover_state_recent", restored >= 0 and missing <= allowed,
               f"restored version {restored}, {before['version']} served before the loss "
               f"(allowed behind: {allowed:.0f} = one interval + {PULL_MARGIN}s at {ctx.rate:.0f}/s)")
    await ctx.heal(loss)
    await ctx.hold(SETTLE)


SCENARIOS = [
    Scenario("state-migration", state_migration,
             "a stateful service: exact state through planned migrations, recent state after a site loss",
             home_checks=True),
]
