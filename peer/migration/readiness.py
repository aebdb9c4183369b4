"""Waiting for a copy that another cluster is starting (a migration's target, a new standby):
its STATUS as a long poll (the AC answers when the copy is ready or failed, or after
STATUS_WAIT), so readiness is heard one round trip after it happens instead of up to a poll
interval later. One loop for every caller; each turns `CopyNotReady` into its own error."""
from __future__ import annotations

import asyncio
import time

from peer.migration import wire
from peer.errors import RoamError
from peer.migration.wire import STATUS
from peer.peering.client import PeerClient

STATUS_WAIT = 2.0  # how long the AC may hold one STATUS call (wire.STATUS_WAIT_MAX at most)
STATUS_POLL = 0.05  # between calls answered early while still deploying (an AC that does not hold them)
WAIT_MARGIN = 10.0  # past the service's ready_timeout: the target itself says "failed" first


class CopyNotReady(RoamError):
    """The copy failed at its cluster, or nobody said it was ready in time."""


async def wait_copy_ready(client: PeerClient, url: str | None, *, migration_id: str, name: str, target: str,
                          ready_timeout: float) -> tuple[str, float]:
    """The copy's instance ("ip:port") and its deploy time in ms, once `target` reports it
    ready. The target removes a copy that is not ready within the service's `ready_timeout`
    and says "failed"; our own deadline (plus WAIT_MARGIN) is only a backstop for a target
    that stops answering about it."""
    if url is None:
        raise CopyNotReady(f"{target} has no known API address")
    limit = ready_timeout + WAIT_MARGIN
    deadline = time.monotonic() + limit
    while (asked := time.monotonic()) < deadline:
        wait = min(STATUS_WAIT, deadline - asked)
        reply = await client.call(url, STATUS, wire.Status(migration_id, name, wait).to_wire(),
                                  timeout=wait + 5.0)
        if not isinstance(reply, dict):
            raise CopyNotReady(f"{target} answered STATUS with {type(reply).__name__}, not a map")
        if reply.get("state") == "ready":
            return str(reply["instance"]), float(reply.get("deploy_ms") or 0.0)
        if reply.get("state") == "failed":
            raise CopyNotReady(f"copy at {target} failed: {reply.get('error')}")
        if time.monotonic() - asked < wait / 2:  # "deploying" before the wait was over: no long poll there
            await asyncio.sleep(STATUS_POLL)
    raise CopyNotReady(f"copy at {target} not ready within {limit:g}s")
