"""Admin API routes (JSON, bearer token). Paths and field names are the contract in DESIGN.md."""
from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from aiohttp import web

from peer import keys
from peer.api.http import APIError, ConflictError, Unavailable, read_json
from peer.api.openapi import build_spec
from peer.serf.errors import SerfRPCError

if TYPE_CHECKING:
    from peer.agent import Agent


def add_admin_routes(app: web.Application, agent: "Agent") -> None:
    async def health(request: web.Request) -> web.Response:
        return web.json_response({"cluster": agent.config.name, "status": "ok"})

    async def members(request: web.Request) -> web.Response:
        return web.json_response([m.as_api() for m in agent.membership.all()])

    async def metrics(request: web.Request) -> web.Response:
        agent.refresh_gauges()
        return web.Response(body=agent.metrics.render(), headers={"Content-Type": "text/plain; version=0.0.4; charset=utf-8"})

    spec = build_spec()

    async def openapi(request: web.Request) -> web.Response:
        return web.json_response(spec)

    app.router.add_get("/v1/health", health)
    app.router.add_get("/v1/members", members)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/v1/openapi.json", openapi)
    _add_key_routes(app, agent)


def _add_key_routes(app: web.Application, agent: "Agent") -> None:
    """`/v1/keys`: Serf's gossip keyring, by fingerprint; rotation through this agent's Serf."""
    rotating = asyncio.Lock()

    async def serf() -> Any:
        assert agent.creds is not None
        try:
            return await keys.connect(addr=agent.config.addr, rpc_port=agent.config.rpc_port,
                                      secret=agent.creds.federation_secret)
        except SerfRPCError as exc:
            raise Unavailable(f"cannot reach this agent's serf: {exc}") from exc

    async def list_keys(request: web.Request) -> web.Response:
        client = await serf()
        try:
            return web.json_response(keys.keyring_view(await client.list_keys()))
        except SerfRPCError as exc:
            raise Unavailable(f"serf list-keys failed: {exc}") from exc
        finally:
            await client.close()

    async def rotate(request: web.Request) -> web.Response:
        force = _force_flag(await read_json(request) if request.can_read_body and request.content_length != 0 else {})
        if rotating.locked():
            raise ConflictError("a key rotation is already running on this agent")
        async with rotating:
            client = await serf()
            try:
                rotation = await keys.rotate(client, force=force)
            except keys.RotationRefused as exc:
                raise ConflictError(str(exc)) from exc
            except keys.RotationFailed as exc:
                raise APIError(str(exc), status=502) from exc
            finally:
                await client.close()
        return web.json_response(rotation.as_api())

    app.router.add_get("/v1/keys", list_keys)
    app.router.add_post("/v1/keys/rotate", rotate)


def _force_flag(body: Any) -> bool:
    if not isinstance(body, dict):
        raise APIError("expected a JSON object", status=422)
    unknown = sorted(set(body) - {"force"})
    if unknown:
        raise APIError(f"unknown field {unknown[0]!r}", field=unknown[0], status=422)
    force = body.get("force", False)
    if not isinstance(force, bool):
        raise APIError("force must be true or false", field="force", status=422)
    return force
