"""The peer calls of the state keeper (msgpack, signed like every peer call):

    STATE_COPY     entry -> the primary's cluster: {name} -> {boot, epoch, fresh} of its copy
    STATE_RESTORE  a fresh copy's cluster -> steward: {name, incarnation, instance} -> {version}

STATE_COPY lets an entry check, around each pull, that the primary did not restart in place
(peer/state/fresh.py); STATE_RESTORE has the steward install its latest saved state into a
copy that did. Only the record's own copies (its instance or a standby's address) are
restored, so the call cannot be used to push state anywhere else.
"""
from __future__ import annotations

from typing import Any

from aiohttp import web

from peer.peering.client import PeerClient, PeerError, msgpack_response, read_msgpack
from peer.records.record import Record
from peer.copies.manager import ServiceManager, split_addr
from peer.state.fresh import CopyView
from peer.state.hook import StateError
from peer.state.keeper import StateKeeper

STATE_COPY = "/peer/v1/state/copy"
STATE_RESTORE = "/peer/v1/state/restore"


def _text(body: Any, key: str) -> str:
    value = body.get(key) if isinstance(body, dict) else None
    if not isinstance(value, str) or not value or len(value) > 256:
        raise web.HTTPBadRequest(reason=f"{key}: expected a non-empty string")
    return value


class StateHandlers:
    def __init__(self, *, services: ServiceManager, keeper: StateKeeper) -> None:
        self.services = services
        self.keeper = keeper

    def add_routes(self, app: web.Application) -> None:
        app.router.add_post(STATE_COPY, self.copy)
        app.router.add_post(STATE_RESTORE, self.restore)

    async def copy(self, request: web.Request) -> web.Response:
        name = _text(await read_msgpack(request), "name")
        record = self.services.get(name)
        if record is None or record.location != self.services.here:
            return msgpack_response({"error": f"{name} does not run here"}, status=404)
        view = self.services.fresh.view(name)
        return msgpack_response({"boot": view.boot, "epoch": view.epoch, "fresh": view.fresh})

    async def restore(self, request: web.Request) -> web.Response:
        body = await read_msgpack(request)
        name, incarnation, instance = _text(body, "name"), _text(body, "incarnation"), _text(body, "instance")
        record = self.services.get(name)
        if record is None or record.incarnation != incarnation:
            return msgpack_response({"error": f"no service {name} of incarnation {incarnation} here"}, status=404)
        if instance != record.instance and instance not in (addr for _, addr in record.standbys):
            return msgpack_response({"error": f"{instance} is not a copy of {name}"}, status=409)
        try:
            host, port = split_addr(instance)
            version = await self.keeper.restore(record, host, port)
        except ValueError:
            raise web.HTTPBadRequest(reason="instance: expected ip:port") from None
        except StateError as exc:
            return msgpack_response({"error": f"state of {name} not installed at {instance}: {exc}"}, status=502)
        return msgpack_response({"version": None if version is None else version.seq})


class StatePeerClient:
    """`peer.state.keeper.StatePeers` over the signed peer API."""

    def __init__(self, *, client: PeerClient, url_of: Any) -> None:
        self.client = client
        self.url_of = url_of

    def _url(self, cluster: str) -> str:
        url = self.url_of(cluster)
        if url is None:
            raise PeerError(f"{cluster}: address unknown")
        return str(url)

    async def copy_view(self, cluster: str, name: str) -> CopyView:
        reply = await self.client.call(self._url(cluster), STATE_COPY, {"name": name}, timeout=2.0)
        if (not isinstance(reply, dict) or not isinstance(reply.get("boot"), str)
                or not isinstance(reply.get("epoch"), int) or not isinstance(reply.get("fresh"), bool)):
            raise PeerError(f"{cluster}: malformed answer to {STATE_COPY}")
        return CopyView(reply["boot"], reply["epoch"], reply["fresh"])

    async def restore(self, cluster: str, record: Record, instance: str) -> None:
        await self.client.call(self._url(cluster), STATE_RESTORE, {
            "name": record.name, "incarnation": record.incarnation, "instance": instance}, timeout=30.0)
