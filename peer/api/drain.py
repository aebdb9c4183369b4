"""`POST /v1/drain`: take this cluster out of service explicitly (`roam drain`).

A SIGTERM restarts the agent only and leaves HAProxy and the services serving. Taking a cluster
out is this separate, explicit operation: the cluster stops accepting placements, every service
running here is migrated away through the normal zero-loss migration (one at a time, each
under its service lock), and with `{"stop": true}` the agent then stops the services that could
not move, HAProxy and itself. The answer lists what moved and what did not, so an operator
knows whether stopping is safe before asking for it.
"""
from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from aiohttp import web

from peer.api.http import bool_flag, read_json
from peer.api.services import run_admin_op
from peer.runtime.waiting import wait_until

if TYPE_CHECKING:
    from peer.agent import Agent

log = logging.getLogger(__name__)

CLEANUP_WAIT = 15.0  # longest a drain waits for the moved services' old copies to stop


async def drain(agent: "Agent") -> dict[str, Any]:
    """Migrate every service running here elsewhere; report what moved and what failed."""
    assert agent.services is not None and agent.engine is not None
    agent.accepting = False  # placement here must not choose this cluster again
    if agent.gossip is not None:
        agent.gossip.set_draining()  # nor placement at peers (the `drain` tag)
    migrated: list[dict[str, Any]] = []
    failed: list[dict[str, str]] = []
    for record in sorted(agent.services.records(), key=lambda r: r.name):
        if record.tombstone or record.location != agent.here:
            continue
        # At its steward (here or forwarded): only the steward may commit where a service runs.
        status, body = await run_admin_op(agent, "migrate", record.name, None)
        if status != 200 or not isinstance(body, dict) or body.get("outcome") != "succeeded":
            error = (body.get("error") or f"migration {body.get('outcome')}") if isinstance(body, dict) else str(body)
            log.warning("drain: %s stays here: %s (%d)", record.name, error, status)
            failed.append({"name": record.name, "error": error})
            continue
        migrated.append({"name": record.name, "target": body.get("target"), "id": body.get("id"),
                         "outcome": body.get("outcome")})
    await _old_copies_stopped(agent, {m["name"] for m in migrated})
    return {"cluster": agent.here, "migrated": migrated, "failed": failed}


async def _old_copies_stopped(agent: "Agent", moved: set[str]) -> None:
    """A migration answers at its commit and stops the old copy (here) just after: the drain
    answers once those copies are gone, so that what it reports moved no longer runs here."""
    assert agent.driver is not None
    driver = agent.driver

    async def gone() -> bool:
        return not moved & {i.name for i in await driver.list()}

    try:
        await wait_until(gone, timeout=CLEANUP_WAIT, interval=0.02, what="the moved services' old copies stopped")
    except TimeoutError:
        log.warning("drain: old copies of %s still run here after %gs", sorted(moved), CLEANUP_WAIT)


def add_drain_routes(app: web.Application, agent: "Agent") -> None:
    async def post_drain(request: web.Request) -> web.Response:
        body: Any = {}  # no body: no flag (a JSON null is refused)
        if request.can_read_body and request.content_length != 0:
            body = await read_json(request)
        stop = bool_flag(body, "stop")
        result = await drain(agent)
        result["stopping"] = stop
        if stop:
            log.warning("drained (%d moved, %d stayed); stopping services, haproxy and the agent",
                        len(result["migrated"]), len(result["failed"]))
            agent.request_stop(everything=True)
        return web.json_response(result)

    app.router.add_post("/v1/drain", post_drain)
