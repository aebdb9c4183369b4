"""The OpenAPI document: valid OpenAPI 3.0, the same as docs/openapi.json, served only with the
token, and covering exactly the routes the agent registers (so a new route without a spec, or
a spec entry without a route, fails here)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from aiohttp import web

from peer.api.admin import add_admin_routes
from peer.api.audit import AuditLog, add_audit_routes
from peer.api.drain import add_drain_routes
from peer.api.openapi import build_spec, render
from peer.trust.enrol import add_enrol_routes
from peer.trust.spread import TrustSpread
from peer.api.services import add_service_routes
from tests.harness import AgentProc
from tests.security.client import Client

DOC = Path(__file__).resolve().parents[2] / "docs" / "openapi.json"


def test_the_spec_is_valid_openapi_3_0_and_the_repo_copy_is_current() -> None:
    schemathesis.openapi.from_dict(build_spec()).validate()
    assert DOC.read_text() == render(), "docs/openapi.json is stale: python -m peer.api.openapi > docs/openapi.json"


def test_the_spec_covers_exactly_the_registered_admin_routes() -> None:
    app = web.Application()
    add_admin_routes(app, agent=None)  # type: ignore[arg-type]  # handlers only close over it
    add_service_routes(app, agent=None)  # type: ignore[arg-type]
    add_audit_routes(app, AuditLog(Path("/nonexistent/audit.log")))
    add_drain_routes(app, agent=None)  # type: ignore[arg-type]
    TrustSpread(identity=None, client=None, here="c1", members=list).add_routes(app)  # type: ignore[arg-type]
    add_enrol_routes(app, ca_dir=None, ca_pem=None)
    routes = {(r.method, r.resource.canonical) for r in app.router.routes()
              if r.method != "HEAD" and r.resource is not None and not r.resource.canonical.startswith("/peer/")}
    documented = {(m.upper(), p) for p, item in build_spec()["paths"].items() for m in item}
    assert routes == documented


def test_every_protected_operation_documents_401_429_and_json_errors() -> None:
    spec = build_spec()
    assert spec["security"] == [{"bearer": []}]
    for path, item in spec["paths"].items():
        for method, op in item.items():
            codes = set(op["responses"])
            if path == "/v1/health":
                assert op["security"] == [] and codes == {"200"}
                continue
            if path in ("/v1/trust/ca", "/v1/trust/enrol"):  # public CA certificate; a join token instead
                assert op["security"] == [] and "429" in codes and "401" not in codes, (method, path)
            else:
                assert "security" not in op and {"401", "429"} <= codes, (method, path)
            if "requestBody" in op:
                assert {"400", "413", "415", "422"} <= codes, (method, path)
            for code in codes - {"200", "201"}:
                ref: Any = op["responses"][code]["$ref"].rsplit("/", 1)[-1]
                content = spec["components"]["responses"][ref]["content"]
                assert content == {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}


@pytest.mark.integration
async def test_the_served_spec_equals_the_repo_copy_and_needs_the_token(client: Client, lone_agent: AgentProc) -> None:
    served = await client.get_json("/v1/openapi.json")
    assert served == json.loads(DOC.read_text())
    assert (await client.admin("GET", "/v1/openapi.json", token=None)).status == 401
    assert (await client.admin("GET", "/v1/openapi.json", token="wrong")).status == 401
