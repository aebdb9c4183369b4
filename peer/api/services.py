"""Admin API: services and migrations (the contract: docs/openapi.json, README "Admin API and CLI"). Every 4xx changes nothing."""
from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from aiohttp import web

from lb.errors import LBError, NoFreeSlotError
from peer.migration.wire import ForwardedOp
from peer.api.audit import note
from peer.api.http import APIError, NotFound, read_json
from peer.api.statuses import status_of
from peer.config import NAME_RE
from peer.records.naming import SERVICE_RE, base_name, home_part, is_qualified
from peer.drivers.base import DeployFailed, DriverError, NeverReady, PermanentDriverError
from peer.drivers.descriptor import DescriptorError, ServiceDescriptor
from peer.migration.engine import MigrationError
from peer.migration.homes import StewardUnreachable
from peer.records.record import Record, role
from peer.records.vclock import by_cluster
from peer.copies.manager import ServiceError, WorkloadRefused

if TYPE_CHECKING:
    from peer.agent import Agent


def record_view(record: Record, here: str, *, steward: str | None = None,
                saved_state: int | None = None) -> dict[str, Any]:
    """`state_version`: the newer of the record's (written at commits) and the state this
    cluster saved since (pulled every interval, not written to the record: peer/state/keeper.py)."""
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
        "homes": list(record.entries),
        "endpoints": record.entry_endpoints(),
        "steward": steward,
        "standbys": list(record.standby_clusters),
        "standby_instances": [{"cluster": c, "instance": a} for c, a in record.standbys],
        "incarnation": record.incarnation,
        "instance": record.instance,
        "vclock": by_cluster(record.vclock),
        "migration_id": record.migration_id,
        "digest": record.digest,
        "descriptor": descriptor,
        "state_version": max((v for v in (record.state_version, saved_state) if v is not None), default=None),
    }


def _name(request: web.Request, agent: "Agent") -> str:
    """The record a path names: `name`, or `name@home` (peer.records.naming). `name@home` of
    the bare name's own home is accepted as an alias of it, so a client that learnt to qualify
    names can always do so."""
    name = request.match_info["name"]
    if not SERVICE_RE.match(name):
        raise APIError(f"{name!r} is not a valid service name", field="name", status=400)
    home = home_part(name)
    if home is not None and agent.services is not None and agent.services.get(name) is None:
        bare = agent.services.get(base_name(name))
        if bare is not None and bare.home == home:
            return bare.name
    return name


def no_slot_message(agent: "Agent", exc: NoFreeSlotError) -> str:
    """A full load balancer is the operator's condition, not a server fault (409, not 5xx):
    say what the limit is and how to raise it."""
    cfg = agent.config
    ports = cfg.lb_ports
    return (f"no free load-balancer slot at {agent.here} ({exc}): each service this cluster is an entry of "
            f"takes one of its {cfg.lb_slots} frontends. Raise the limit with `roam agent --lb-slots N` "
            f"(lb_slots in the TOML file; at most the {len(ports)} ports of --lb-ports "
            f"{ports.start}-{ports.stop - 1}) and restart the agent, or delete a service homed here")


def _service_error(exc: ServiceError) -> APIError:
    extra = {"rule": exc.rule} if isinstance(exc, WorkloadRefused) else None
    return APIError(str(exc), status=status_of(exc), field=exc.field, extra=extra)


def view(agent: "Agent", record: Record) -> dict[str, Any]:
    saved = agent.state.saved_version(record) if agent.state is not None else None
    return record_view(record, agent.here, steward=agent.steward_of(record), saved_state=saved)


async def _migrate_here(agent: "Agent", name: str, target: str | None) -> dict[str, Any]:
    assert agent.engine is not None
    try:
        migration = await agent.engine.migrate(name, target=target, reason="api request")
    except ServiceError as exc:
        raise _service_error(exc) from exc
    except MigrationError as exc:
        if target is not None and exc.refusals:  # the one cluster asked for refuses it by policy
            refusal = exc.refusals[0]
            raise APIError(str(exc), status=403, field="target",
                           extra={"rule": refusal["rule"], "cluster": refusal["cluster"]}) from exc
        raise APIError(str(exc), status=409) from exc
    agent.load_changed()
    return migration.as_api()


async def _delete_here(agent: "Agent", name: str) -> dict[str, Any]:
    assert agent.services is not None
    try:
        record = await agent.services.delete(name)
    except ServiceError as exc:
        raise _service_error(exc) from exc
    agent.load_changed()
    return view(agent, record)


async def run_admin_op(agent: "Agent", op: ForwardedOp, name: str, target: str | None) -> tuple[int, Any]:
    """Run `migrate` or `delete` of `name` at its steward: here, or forwarded to it (once: a
    forwarded call that arrives at a cluster that is not steward either is refused with 409)."""
    assert agent.services is not None and agent.homes is not None
    record = agent.services.get(name)
    if record is None:
        return 404, {"error": f"no service {name!r}", "field": "name"}
    for _ in record.entries:  # a steward that does not answer is passed over, as gossip would soon
        steward = agent.steward_of(record)
        if steward is None:
            return 409, {"error": f"{name!r} has no live entry to act as steward", "field": "name"}
        try:
            if steward == agent.here:
                body = await (_migrate_here(agent, name, target) if op == "migrate" else _delete_here(agent, name))
                return 200, body
            return await agent.homes.forward(steward, op, name, target)
        except StewardUnreachable as exc:
            agent.liveness.mark_unreachable(steward, time.monotonic())
            last = exc
        except APIError as exc:
            return exc.status, {**exc.extra, "error": str(exc), "field": exc.field}
        except ServiceError as exc:
            return status_of(exc), {"error": str(exc), "field": exc.field}
    return status_of(last), {"error": str(last), "field": last.field}


def _answer(status: int, body: Any) -> web.Response:
    """The steward's (status, body) of an admin operation as this API's answer."""
    if status >= 400:
        message = body.get("error") if isinstance(body, dict) else str(body)
        field = body.get("field") if isinstance(body, dict) else None
        extra = {k: body[k] for k in ("rule", "cluster") if isinstance(body, dict) and k in body}
        raise APIError(str(message), status=status, field=field, extra=extra)
    return web.json_response(body, status=status)


async def _migrate_target(request: web.Request) -> str | None:
    """The optional `target` of a migrate request's body (none, or `{"target": NAME}`)."""
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
    return target


def add_service_routes(app: web.Application, agent: "Agent") -> None:
    def services() -> Any:
        assert agent.services is not None
        return agent.services

    async def list_services(request: web.Request) -> web.Response:
        return web.json_response([view(agent, r) for r in services().records()])

    async def create(request: web.Request) -> web.Response:
        body = await read_json(request)
        try:
            descriptor = ServiceDescriptor.from_obj(body)
        except DescriptorError as exc:
            raise APIError(str(exc), field=exc.field, status=422) from exc
        if is_qualified(descriptor.name):
            raise APIError("name: '@' is reserved for name@home, the name roam gives one of two services "
                           "created under one name on both sides of a partition", field="name", status=422)
        note(request, service=descriptor.name)
        try:
            record = await services().create(descriptor)
        except ServiceError as exc:
            raise _service_error(exc) from exc
        except NoFreeSlotError as exc:
            raise APIError(no_slot_message(agent, exc), status=409) from exc
        except NeverReady as exc:
            raise APIError(f"service never became ready: {exc}", field="ready_timeout", status=422) from exc
        except DeployFailed as exc:
            raise APIError(f"service failed to start: {exc}", field="command", status=422) from exc
        except PermanentDriverError as exc:
            raise APIError(f"orchestrator refused: {exc}", status=422) from exc
        except (DriverError, LBError) as exc:
            raise APIError(f"could not deploy: {exc}", status=503) from exc
        agent.load_changed()
        return web.json_response(view(agent, record), status=201)

    async def get_one(request: web.Request) -> web.Response:
        record = services().get(_name(request, agent))
        if record is None:
            raise NotFound(f"no service {request.match_info['name']!r}", field="name")
        return web.json_response(view(agent, record))

    async def delete(request: web.Request) -> web.Response:
        return _answer(*await run_admin_op(agent, "delete", _name(request, agent), None))

    async def migrate(request: web.Request) -> web.Response:
        name = _name(request, agent)
        target = await _migrate_target(request)
        note(request, target=target)
        return _answer(*await run_admin_op(agent, "migrate", name, target))

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
