"""Admin API routes (JSON, bearer token). Paths and field names are the contract in DESIGN.md."""
from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

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

    app.router.add_get("/v1/health", health)
    app.router.add_get("/v1/members", members)
    app.router.add_get("/metrics", metrics)
