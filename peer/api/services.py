"""Admin API: services and migrations (DESIGN.md contract). Every 4xx changes nothing."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

from aiohttp import web

from lb.errors import LBError, NoFreeSlotError
from peer.api.http import APIError, NotFound, read_json
from peer.config import NAME_RE
from peer.drivers.base import DeployFailed, DriverError, PermanentDriverError
from peer.drivers.descriptor import DescriptorError, ServiceDescriptor
from peer.migration.engine import MigrationError
from peer.records.record import Record, role
from peer.records.vclock import counters
from peer.services import ServiceError

if TYPE_CHECKING:
    from peer.agent import Agent


def record_view(record: Record, here: str) -> dict[str, Any]:
    try:
        descriptor: Any = ServiceDescriptor.from_msgpack(record.descriptor).to_obj()
    except DescriptorError:
        descriptor = None
    return {
        "name": record.name,
        "home": record.home,
        "location": record.location,
        "role": role(record, here),
        "state": str(record.state),
        "endpoint": record.endpoint,
        "instance": record.instance,
        "vclock": counters(record.vclock),
        "migration_id": record.migration_id,
        "digest": record.digest,
        "descriptor": descriptor,
    }


def _name(request: web.Request) -> str:
    name = request.match_info["name"]
    if not NAME_RE.match(name):
        raise APIError(f"{name!r} is not a valid service name", field="name", status=400)
    return name


def _service_error(exc: ServiceError) -> APIError:
    return APIError(str(exc), status=exc.status, field=exc.field)


def add_service_routes(app: web.Application, agent: "Agent") -> None:
    def services() -> Any:
        assert agent.services is not None
        return agent.services

    async def list_services(request: web.Request) -> web.Response:
        return web.json_response([record_view(r, agent.here) for r in services().records()])

    async def create(request: web.Request) -> web.Response:
        body = await read_json(request)
        try:
            descriptor = ServiceDescriptor.from_obj(body)
        except DescriptorError as exc:
            raise APIError(str(exc), field=exc.field, status=422) from exc
        try:
            record = await services().create(descriptor)
        except ServiceError as exc:
            raise _service_error(exc) from exc
        except NoFreeSlotError as exc:
            raise APIError(f"no free load-balancer port: {exc}", status=507) from exc
        except DeployFailed as exc:
            raise APIError(f"service failed to start: {exc}", field="command", status=422) from exc
        except PermanentDriverError as exc:
            raise APIError(f"orchestrator refused: {exc}", status=422) from exc
        except (DriverError, LBError) as exc:
            raise APIError(f"could not deploy: {exc}", status=503) from exc
        agent.load_changed()
        return web.json_response(record_view(record, agent.here), status=201)

    async def get_one(request: web.Request) -> web.Response:
        record = services().get(_name(request))
        if record is None:
            raise NotFound(f"no service {request.match_info['name']!r}", field="name")
        return web.json_response(record_view(record, agent.here))

    async def delete(request: web.Request) -> web.Response:
        try:
            record = await services().delete(_name(request))
        except ServiceError as exc:
            raise _service_error(exc) from exc
        agent.load_changed()
        return web.json_response(record_view(record, agent.here))

    async def migrate(request: web.Request) -> web.Response:
        name = _name(request)
        body: Any = {}
        if request.can_read_body and request.content_length != 0:
            body = await read_json(request)
        if not isinstance(body, dict):
            raise APIError("expected a JSON object", status=422)
        unknown = sorted(set(body) - {"target"})
        if unknown:
            raise APIError(f"unknown field {unknown[0]!r}", field=unknown[0], status=422)
        target = body.get("target")
        if target is not None and (not isinstance(target, str) or not NAME_RE.match(target)):
            raise APIError("target must be a cluster name", field="target", status=422)
        assert agent.engine is not None
        try:
            migration = await agent.engine.migrate(name, target=target, reason="api request")
        except ServiceError as exc:
            raise _service_error(exc) from exc
        except MigrationError as exc:
            raise APIError(str(exc), status=409) from exc
        agent.load_changed()
        return web.json_response(migration.as_api())

    async def instances(request: web.Request) -> web.Response:
        """What the orchestrator actually runs here (for operators and the chaos checkers)."""
        assert agent.driver is not None
        return web.json_response([
            {"name": i.name, "home": i.home, "host": i.host, "port": i.port, "state": i.state.value,
             "pid": i.pid, "restarts": i.restarts}
            for i in await agent.driver.list()
        ])

    async def migrations(request: web.Request) -> web.Response:
        assert agent.history is not None
        return web.json_response(agent.history.recent())

    app.router.add_get("/v1/services", list_services)
    app.router.add_post("/v1/services", create)
    app.router.add_get("/v1/services/{name}", get_one)
    app.router.add_delete("/v1/services/{name}", delete)
    app.router.add_post("/v1/services/{name}/migrate", migrate)
    app.router.add_get("/v1/migrations", migrations)
    app.router.add_get("/v1/instances", instances)
