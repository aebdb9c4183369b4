"""Admin API routes (JSON, bearer token). Paths and field names are the contract (docs/openapi.json)."""
from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aiohttp import web

from peer.federation import keyrotation as keys
from peer.records.naming import SERVICE_RE
from peer.version import VERSION
from peer.api.http import APIError, ConflictError, NotFound, Unavailable, bool_flag, read_json
from peer.drivers.process_state import LOG_FILE
from peer.serf.process import recent_key_mismatch
from peer.serf.errors import SerfRPCError

if TYPE_CHECKING:
    from peer.agent import Agent


def add_admin_routes(app: web.Application, agent: "Agent") -> None:
    async def health(request: web.Request) -> web.Response:
        return web.json_response({"cluster": agent.config.name, "status": "ok"})

    async def members(request: web.Request) -> web.Response:
        probe = agent.probe
        links = probe.estimates() if probe is not None else {}

        def link(name: str) -> dict[str, Any] | None:
            if name not in links or probe is None:
                return None
            return {**links[name].as_api(), "probed_bytes_last_minute": probe.probed_last_minute(name)}

        return web.json_response([{**m.as_api(), "bandwidth_mbps": links[m.name].bandwidth_mbps if m.name in links
                                   else None, "link": link(m.name)} for m in agent.membership.all()])

    async def metrics(request: web.Request) -> web.Response:
        agent.refresh_gauges()
        return web.Response(body=agent.metrics.render(), headers={"Content-Type": "text/plain; version=0.0.4; charset=utf-8"})

    async def openapi(request: web.Request) -> web.Response:
        # Imported and built per request, not at start: the generator module costs an idle
        # daemon about 0.8 MB of RSS for a path that is rarely read (issue 18's memory).
        from peer.api.openapi import build_spec

        return web.json_response(build_spec())

    app.router.add_get("/v1/health", health)
    app.router.add_get("/v1/members", members)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/v1/openapi.json", openapi)
    async def status_route(request: web.Request) -> web.Response:
        return await status(agent)

    async def logs_route(request: web.Request) -> web.Response:
        return await service_logs(agent, request)

    app.router.add_get("/v1/status", status_route)
    app.router.add_get("/v1/services/{name}/logs", logs_route)
    _add_key_routes(app, agent)


async def status(agent: "Agent") -> web.Response:
    """This agent at a glance, with what an operator must act on (`warnings`), for `roam status`."""
    cfg = agent.config
    serf_log = cfg.data_dir / "serf" / "serf.log"
    warnings: list[dict[str, Any]] = []
    mismatch = recent_key_mismatch(serf_log)
    if mismatch is not None:
        warnings.append(mismatch.as_api(serf_log))
    if agent.identity is not None:
        warnings += agent.identity.warnings()  # certificate expiring or revoked (peer.trust)
    return web.json_response({
        "cluster": cfg.name, "version": VERSION, "addr": cfg.addr, "api": cfg.api_url, "tier": cfg.tier,
        "driver": cfg.driver, "auto_migrate": cfg.auto_migrate, "data_dir": str(cfg.data_dir),
        "serf": {"rpc_addr": f"{cfg.addr}:{cfg.rpc_port}", "gossip_addr": f"{cfg.addr}:{cfg.gossip_port}",
                 "log": str(serf_log)},
        "workload": cfg.workload.as_api(), "run_as": cfg.run_as,
        "confinement": agent.confinement.as_api() if agent.confinement is not None else None,
        "warnings": warnings,
    })


async def service_logs(agent: "Agent", request: web.Request) -> web.Response:
    """The output of a service's process here: the last `tail` lines, or what follows `offset`.

    Served by the cluster running the service (the CLI asks the record's location); a cluster
    that does not run it answers 404 naming where it runs, when it knows.
    """
    name = request.match_info["name"]
    if not SERVICE_RE.match(name):
        raise APIError(f"{name!r} is not a service name", field="name", status=400)
    tail = _int_query(request, "tail", default=100, high=10_000)
    offset = _int_query(request, "offset", default=-1, low=-1, high=1 << 50)
    path = agent.config.data_dir / "services" / name / LOG_FILE
    if agent.config.driver != "process":
        raise NotFound("logs are kept by the process driver only; use kubectl logs for the kubernetes driver")
    if not path.is_file():
        record = next((r for r in agent.services.records() if r.name == name), None) if agent.services else None
        where = f"; it runs at {record.location}" if record is not None and record.location else ""
        raise NotFound(f"service {name} has no log at {agent.config.name}{where}")
    text, end = _read_log(path, tail=tail, offset=offset)
    return web.json_response({"service": name, "cluster": agent.config.name, "text": text, "offset": end})


def _read_log(path: Path, *, tail: int, offset: int, max_bytes: int = 256 * 1024) -> tuple[str, int]:
    with open(path, "rb") as fh:
        size = fh.seek(0, os.SEEK_END)
        if 0 <= offset <= size:
            fh.seek(offset)
            data = fh.read(max_bytes)
            return data.decode("utf-8", "replace"), offset + len(data)
        fh.seek(max(0, size - max_bytes))  # no offset, or the log was truncated: start from the tail
        lines = fh.read().decode("utf-8", "replace").splitlines(keepends=True)
        return "".join(lines[-tail:] if tail else []), size


def _int_query(request: web.Request, key: str, *, default: int, low: int = 0, high: int) -> int:
    raw = request.query.get(key)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError as exc:
        raise APIError(f"{key} must be an integer", field=key, status=400) from exc
    if not low <= value <= high:
        raise APIError(f"{key} must be between {low} and {high}", field=key, status=400)
    return value


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
        body = await read_json(request) if request.can_read_body and request.content_length != 0 else {}
        force = bool_flag(body, "force")
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
