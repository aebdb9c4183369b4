"""The admin API's OpenAPI 3.0 description, built here and served at `GET /v1/openapi.json`.

One source: the agent serves `build_spec()`, and `docs/openapi.json` is its output
(`python -m peer.api.openapi > docs/openapi.json`); a test fails when the two drift apart, and
schemathesis checks the running agent against it. Schemas describe what the handlers return
(see peer/api/*.py); request schemas follow `ServiceDescriptor.from_obj`, which stays the
authority: a few of its rules (the command's first argument must not be empty, quantities are
bounded by value) are checked there and answered with 422 naming the field.
"""
from __future__ import annotations

import json
import sys
from typing import Any

from peer.api.http import MAX_BODY, RATE_BURST, RATE_LIMIT
from peer.stages import STAGES
from peer.version import VERSION

JSON = "application/json"
NAME_PATTERN = r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$"
SERVICE_PATTERN = r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?(@[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?)?$"
LABEL_PATTERN = r"^[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$"
Schema = dict[str, Any]


def _ref(name: str) -> Schema:
    return {"$ref": f"#/components/schemas/{name}"}


def _nullable(schema: Schema) -> Schema:
    return {**schema, "nullable": True}


def _obj(props: dict[str, Schema], *, required: tuple[str, ...] | None = None, closed: bool = False) -> Schema:
    out: Schema = {"type": "object", "properties": props}
    needed = list(required if required is not None else props)
    if needed:  # OpenAPI 3.0 wants a non-empty `required` or none
        out["required"] = needed
    if closed:
        out["additionalProperties"] = False
    return out


def _list_of(name: str) -> Schema:
    return {"type": "array", "items": _ref(name)}


STRING: Schema = {"type": "string"}
NUMBER: Schema = {"type": "number"}
INT: Schema = {"type": "integer"}


def _descriptor() -> Schema:
    """The descriptor a client posts: every field bounded, unknown fields refused."""
    quantity = {"oneOf": [{"type": "number"}, {"type": "string", "maxLength": 32}],
                "description": "a number or a Kubernetes quantity string (500m, 128Mi, 1G)"}
    health = {"oneOf": [
        _obj({"path": {"type": "string", "pattern": r"^/[\x21-\x7e]*$", "maxLength": 1024}}, closed=True),
        _obj({"tcp": {"type": "boolean", "enum": [True]}}, closed=True),
    ]}
    constraints = _obj({
        "tiers": {"type": "array", "maxItems": 32, "uniqueItems": True, "nullable": True,
                  "items": {"type": "string", "maxLength": 63, "pattern": LABEL_PATTERN}},
        "affinity": {"type": "object", "nullable": True, "maxProperties": 32,
                     "additionalProperties": {"type": "string", "maxLength": 63}},
    }, required=(), closed=True)
    descriptor_fields: dict[str, Schema] = {
        "name": {"type": "string", "pattern": NAME_PATTERN, "maxLength": 63,
                 "description": "DNS-1123 label; also the record's key in the federation ('@' is "
                                "reserved for name@home)"},
        "port": {"type": "integer", "minimum": 1, "maximum": 65535},
        "command": {"type": "array", "minItems": 1, "maxItems": 256,
                    "items": {"type": "string", "maxLength": 4096, "pattern": "^[^\\u0000]*$"},
                    "description": "argv for the process driver, run without a shell; {host} and {port} "
                                   "are replaced. A single string is refused."},
        "image": _nullable({"type": "string", "maxLength": 255, "description": "OCI image reference (kubernetes driver)"}),
        "cpu": quantity,
        "memory": quantity,
        "replicas": {"type": "integer", "minimum": 1, "maximum": 100},
        "health": _nullable(health),
        "constraints": _nullable(constraints),
        "standby": {"type": "integer", "minimum": 0, "maximum": 8,
                    "description": "warm copies in other clusters; a boolean is refused (422)"},
        "entries": {"type": "integer", "minimum": 1, "maximum": 16,
                    "description": "size of the home set (default 2 when two or more clusters are alive)"},
        "ready_timeout": {"type": "number", "minimum": 1, "maximum": 120,
                          "description": "seconds a new copy may take to become ready (default 30); a copy "
                                         "that is not ready by then is removed: 422 with its log tail"},
        "state": _nullable(_obj({
            "path": {"type": "string", "pattern": r"^/[\x21-\x22\x24-\x3e\x40-\x7e]*$", "maxLength": 256},
            "interval": {"type": "number", "minimum": 0.1, "maximum": 3600}}, required=("path",), closed=True)),
    }
    descriptor = _obj(descriptor_fields, required=("name", "port"), closed=True)
    descriptor["anyOf"] = [{"required": ["command"]}, {"required": ["image"]}]
    descriptor["description"] = "Service descriptor. Unknown fields are refused (422 naming the field)."
    return descriptor


def _stored_descriptor() -> Schema:
    """The descriptor as a record carries it (normalised: defaults filled in)."""
    return _obj({
        "name": STRING, "port": INT, "cpu": NUMBER, "memory": STRING, "replicas": INT,
        "constraints": _obj({"tiers": {"type": "array", "items": STRING},
                             "affinity": {"type": "object", "additionalProperties": STRING}}),
        "standby": {"type": "integer"},
        "command": {"type": "array", "items": STRING},
        "image": STRING,
        "health": {"type": "object", "properties": {"path": STRING, "tcp": {"type": "boolean"}}},
        "entries": INT, "ready_timeout": NUMBER,
        "state": {"type": "object", "properties": {"path": STRING, "interval": NUMBER}},
    }, required=("name", "port", "cpu", "memory", "replicas", "constraints"))


def _migration() -> Schema:
    """One migration or fail-safe redeploy, with its stage timings (DESIGN: Table I stages)."""
    migration_props: dict[str, Schema] = {
        "id": STRING, "service": STRING,
        "kind": {"type": "string", "enum": ["planned", "policy", "failsafe"]},
        "reason": STRING, "coordinator": STRING, "home": STRING, "source": STRING,
        "target": _nullable(STRING), "started_at": NUMBER, "finished_at": _nullable(NUMBER),
        "committed_at": _nullable(NUMBER),
        "outcome": {"type": "string", "enum": ["running", "succeeded", "failed", "aborted"]},
        "stage": STRING, "error": _nullable(STRING),
        "candidates": {"type": "array", "items": _obj(
            {"name": STRING, "score": NUMBER, "reasons": {"type": "array", "items": STRING}})},
        "refusals": {"type": "array", "description": "candidates whose workload policy refused the service",
                     "items": _obj({"cluster": STRING, "rule": STRING, "error": STRING})},
        **{stage: _nullable({"type": "number", "description": f"{stage} stage duration, ms"}) for stage in STAGES},
        "durations_ms": {"type": "object", "additionalProperties": NUMBER},
        "state_transfer": _nullable({
            "type": "object", "description": "stateful services: version, bytes moved, pre-copy rounds, "
                                             "exact, not_held, handover_ms (planned); version, restored (fail-safe)"}),
    }
    return _obj(migration_props, required=tuple(k for k in migration_props
                                                if k not in ("durations_ms", "state_transfer")))


def _keyring() -> Schema:
    key = _obj({"fingerprint": {"type": "string", "pattern": "^sha256:[0-9a-f]{16}$"},
                "members": {"type": "integer", "description": "members holding this key"}})
    keyring = _obj({
        "keys": {"type": "array", "items": key},
        "members": {"type": "integer", "description": "members asked"},
        "responses": INT, "errors": INT,
        "messages": {"type": "object", "additionalProperties": STRING},
    })
    return keyring


def _common_schemas() -> dict[str, Schema]:
    """Errors, the audit log, the federation's members and this agent's status."""
    load = {"type": "object", "description": "empty until the member gossiped its load",
            "properties": {
                "cpu_capacity": NUMBER, "cpu_used": NUMBER, "mem_capacity_mib": INT, "mem_used_mib": INT,
                "slots_capacity": INT, "slots_used": INT, "bandwidth_mbps": _nullable(NUMBER)}}
    return {
        "Error": _obj({"error": STRING, "status": {"type": "integer", "minimum": 400, "maximum": 599},
                       "field": {"type": "string", "description": "the offending input, as a dotted path"},
                       "rule": {"type": "string", "enum": ["accept-from", "allow-command", "allow-image"],
                                "description": "403: the workload-policy rule that refused the service"},
                       "role": {"type": "string", "enum": ["reader"],
                                "description": "403: the admin role that may not do this"}},
                      required=("error", "status")),
        "AuditEntry": _obj({
            "time": NUMBER,
            "who": _obj({"role": _nullable({"type": "string", "enum": ["operator", "reader"]}),
                         "token_id": _nullable(STRING), "remote": _nullable(STRING)}),
            "what": _obj({"method": STRING, "path": STRING, "service": STRING, "target": STRING},
                         required=("method", "path")),
            "status": INT,
            "outcome": {"type": "string", "enum": ["done", "refused", "failed"]}}),
        "Health": _obj({"cluster": STRING, "status": {"type": "string", "enum": ["ok"]}}),
        "Load": load,
        "Member": _obj({
            "name": STRING, "status": {"type": "string", "enum": ["alive", "leaving", "left", "failed"]},
            "addr": STRING, "api": _nullable(STRING), "tier": _nullable(STRING), "load": _ref("Load"),
            "rtt_ms": _nullable(NUMBER),
            "accept_from": _nullable({"type": "array", "items": STRING, "description":
                                      "the homes its workload policy accepts, as gossiped (null: any, or unknown)"}),
            "bandwidth_mbps": _nullable({"type": "number", "description":
                                         "this agent's estimate of its link to the member (`link.bandwidth_mbps`)"}),
            "link": _nullable(_obj({
                "bandwidth_mbps": _nullable(NUMBER), "rtt_ms": _nullable(NUMBER),
                "age_s": _nullable({"type": "number", "description": "seconds since the last evidence"}),
                "confidence": NUMBER,
                "source": {"type": "string", "enum": ["probe", "traffic", "unreachable", "none"]},
                "suspect": {"type": "boolean"}, "probed_bytes_last_minute": INT},
                required=("bandwidth_mbps", "rtt_ms", "age_s", "confidence", "source")))},
            required=("name", "status", "addr", "api", "tier", "load", "rtt_ms")),
        "Status": _obj({
            "cluster": STRING, "version": STRING, "addr": STRING, "api": STRING, "tier": STRING, "driver": STRING,
            "auto_migrate": {"type": "boolean"}, "data_dir": STRING, "run_as": _nullable(STRING),
            "confinement": _nullable(_obj({
                "user": STRING, "uid": INT, "work_root": STRING, "cgroup": _nullable(STRING),
                "limits": {"type": "boolean"}, "limits_unavailable": _nullable(STRING)})),
            "workload": _obj({"accept_from": _nullable({"type": "array", "items": STRING}),
                              "allow_command": {"type": "array", "items": STRING},
                              "allow_image": {"type": "array", "items": STRING}}),
            "serf": _obj({"rpc_addr": STRING, "gossip_addr": STRING, "log": STRING}),
            "warnings": {"type": "array", "items": _obj({
                "kind": STRING, "message": STRING, "count": INT, "at": NUMBER, "line": STRING, "log": STRING},
                required=("kind", "message"))},
        }),
        "ServiceLog": _obj({"service": STRING, "cluster": STRING, "text": STRING,
                            "offset": {"type": "integer", "description": "pass back as ?offset= to follow"}}),
    }


def _service_schemas() -> dict[str, Schema]:
    """Descriptors, records, migrations and copies."""
    return {
        "Descriptor": _descriptor(),
        "StoredDescriptor": _stored_descriptor(),
        "ServiceRecord": _obj({
            "name": STRING, "home": STRING, "location": STRING,
            "role": _nullable({"type": "string", "enum": ["LR", "AR", "FR", "SR"],
                               "description": "null for a tombstone or a record this cluster keeps no part of; "
                                              "SR where only a standby copy is held"}),
            "standbys": {"type": "array", "items": STRING, "description": "clusters holding a warm copy"},
            "standby_instances": {"type": "array", "items": _obj({"cluster": STRING, "instance": STRING})},
            "state": {"type": "string",
                      "enum": ["pending", "deploying", "running", "migrating", "failed", "deleted"]},
            "endpoint": _nullable({"type": "string", "description": "host:port of the HC frontend"}),
            "instance": _nullable(STRING), "vclock": {"type": "object", "additionalProperties": INT},
            "migration_id": _nullable(STRING), "digest": STRING,
            "descriptor": _nullable(_ref("StoredDescriptor")),
            "state_version": _nullable({
                "type": "integer", "description": "stateful services: roam's version of the last state saved "
                                                  "(the record's, or this cluster's newer saved one)"})},
            required=("name", "home", "location", "role", "state", "endpoint", "instance", "vclock",
                      "migration_id", "digest", "descriptor")),
        "MigrateRequest": _obj({"target": {"type": "string", "pattern": NAME_PATTERN,
                                           "description": "cluster to move to; placement decides if absent"}},
                               required=(), closed=True),
        "Migration": _migration(),
        "Instance": _obj({
            "name": STRING, "home": STRING, "host": STRING, "port": INT,
            "state": {"type": "string", "enum": ["starting", "ready", "failed", "stopped"]},
            "pid": _nullable(INT), "restarts": INT}),
    }


def _operation_schemas() -> dict[str, Schema]:
    """Gossip keys, drain, and the trust between clusters (CA, CRL, enrolment)."""
    return {
        "Keyring": _keyring(),
        "RotateRequest": _obj({"force": {"type": "boolean", "description":
                                         "rotate although some members are failed (they must then get "
                                         "the keyring file by hand)"}}, required=(), closed=True),
        "DrainRequest": _obj({"stop": {"type": "boolean", "description":
                                       "then stop what could not move, HAProxy and the agent (leaves the federation)"}},
                             required=(), closed=True),
        "Drain": _obj({
            "cluster": STRING,
            "migrated": {"type": "array", "items": _obj({"name": STRING, "target": _nullable(STRING),
                                                          "id": _nullable(STRING), "outcome": _nullable(STRING)})},
            "failed": {"type": "array", "items": _obj({"name": STRING, "error": STRING})},
            "stopping": {"type": "boolean"}}),
        "Trust": _obj({
            "mode": {"type": "string", "enum": ["mtls", "off"]}, "cluster": STRING, "ca": _nullable(STRING),
            "cert": _nullable(_obj({"serial": STRING, "not_after": STRING, "expires_in_s": INT})),
            "crl": _nullable(_obj({"number": _nullable(INT), "revoked": {"type": "array", "items": _obj(
                {"serial": STRING, "cluster": _nullable(STRING)})}})),
            "auto": _nullable(_obj({
                "peer": {"type": "string", "description": "this agent's mTLS peer listener"},
                "ca_keeper": {"type": "boolean", "description": "it keeps the automatic CA (founder or deputy)"},
                "ca_dir": _nullable(STRING),
                "ca_id": {"type": "string", "description": "which automatic CA (the `cid` Serf tag)"}},
                required=("peer", "ca_keeper", "ca_dir")))}, required=("mode", "cluster", "ca", "cert", "crl")),
        "CrlRequest": _obj({"crl": {"type": "string",
                                    "description": "the CA's revocation list, PEM (`roam ca revoke` writes it)"}},
                           closed=True),
        "CrlResult": _obj({"outcome": {"type": "string", "enum": ["applied", "same"]}, "number": INT,
                           "pushed": {"type": "array", "items": STRING,
                                      "description": "the live members that took or already had it"}}),
        "TrustCA": _obj({"ca": {"type": "string", "description": "the federation CA certificate, PEM"}}),
        "EnrolRequest": _obj({
            "token": {"type": "string", "description": "a one-time join token (`roam ca token`)"},
            "csr": {"type": "string", "description": "a PEM CSR naming the token's cluster in its CN"},
            "ip": {"type": "array", "items": STRING, "maxItems": 8, "description": "IP SANs to add"}},
            required=("token", "csr"), closed=True),
        "Enrolled": _obj({"cert": STRING, "ca": STRING}),
        "Rotation": _obj({"new": STRING, "removed": {"type": "array", "items": STRING},
                          "members": INT, "keyring": _ref("Keyring")}),
        }


def _schemas() -> dict[str, Schema]:
    return {**_common_schemas(), **_service_schemas(), **_operation_schemas()}


_ERRORS = {
    "400": "Malformed request: body not JSON, or a bad name in the path",
    "401": "Missing or wrong bearer token",
    "403": "Refused: a reader token tried to write (`role`), or this cluster's workload policy refuses "
           "the service (`rule`)",
    "404": "No such service",
    "409": "Refused in the current state (exists, not homed here, migration failed, no free "
           "load-balancer slot: the message says how to raise --lb-slots, ...)",
    "413": f"Body over {MAX_BODY} bytes",
    "415": "Body is not JSON",
    "422": "Schema error; `field` names the offending input",
    "429": f"Over {RATE_LIMIT:g} requests/s (burst {RATE_BURST:g}) from this client address",
    "502": "A federation-wide Serf command failed part-way (safe to retry)",
    "503": "A dependency (orchestrator, load balancer, Serf) is unavailable; retry",
}


def _responses() -> dict[str, Schema]:
    out: dict[str, Schema] = {}
    for code, text in _ERRORS.items():
        resp: Schema = {"description": text, "content": {JSON: {"schema": _ref("Error")}}}
        if code == "401":
            resp["headers"] = {"WWW-Authenticate": {"schema": STRING}}
        if code == "429":
            resp["headers"] = {"Retry-After": {"schema": {"type": "integer", "minimum": 1},
                                               "description": "seconds"}}
        out[code] = resp
    return out


def _op(summary: str, ok: tuple[str, Schema | None], *errors: str, body: Schema | None = None,
        body_required: bool = False, open_path: bool = False, name_param: bool = False,
        text: bool = False) -> Schema:
    status, schema = ok
    content = {"text/plain": {"schema": STRING}} if text else {JSON: {"schema": schema}}
    responses: dict[str, Schema] = {status: {"description": "OK", "content": content}}
    codes = errors if open_path else ("401", "429", *errors)
    for code in sorted(set(codes)):
        responses[code] = {"$ref": f"#/components/responses/{code}"}
    op: Schema = {"summary": summary, "operationId": _operation_id(summary), "responses": responses}
    if open_path:
        op["security"] = []
    if name_param:
        op["parameters"] = [{"name": "name", "in": "path", "required": True,
                             "description": "a service name, or name@home: the name roam gives the later of "
                                            "two services created under one name on both sides of a "
                                            "partition (name@<its own home> also names the bare one)",
                             "schema": {"type": "string", "pattern": SERVICE_PATTERN, "maxLength": 127}}]
    if body is not None:
        op["requestBody"] = {"required": body_required, "content": {JSON: {"schema": body}}}
    return op


def _logs_op() -> Schema:
    op = _op("A service's output where it runs (the last `tail` lines, or from `offset`)",
             ("200", _ref("ServiceLog")), "400", "404", name_param=True)
    op["parameters"] += [
        {"name": "tail", "in": "query", "required": False, "schema": {"type": "integer", "minimum": 0, "maximum": 10000}},
        {"name": "offset", "in": "query", "required": False, "schema": {"type": "integer", "minimum": -1}},
    ]
    return op


def _audit_op() -> Schema:
    op = _op("Recent admin writes from the audit log, newest first (operator and reader tokens)",
             ("200", _list_of("AuditEntry")), "400")
    op["parameters"] = [{"name": "limit", "in": "query", "required": False,
                         "schema": {"type": "integer", "minimum": 1, "maximum": 1000}}]
    return op


def _operation_id(summary: str) -> str:
    words = "".join(c if c.isalnum() else " " for c in summary).split()
    return words[0].lower() + "".join(w.capitalize() for w in words[1:])


def build_spec() -> dict[str, Any]:
    """The whole OpenAPI document (a fresh dict each call)."""
    body_errors = ("400", "413", "415", "422")
    paths = {
        "/v1/health": {"get": _op("Health of this agent (no token)", ("200", _ref("Health")), open_path=True)},
        "/v1/members": {"get": _op("Federation members as this agent sees them",
                                   ("200", _list_of("Member")))},
        "/v1/services": {
            "get": _op("Service records this cluster keeps", ("200", _list_of("ServiceRecord"))),
            "post": _op("Deploy a service here (this cluster becomes its HC)", ("201", _ref("ServiceRecord")),
                        *body_errors, "403", "409", "503", body=_ref("Descriptor"), body_required=True),
        },
        "/v1/services/{name}": {
            "get": _op("One service record", ("200", _ref("ServiceRecord")), "400", "404", name_param=True),
            "delete": _op("Delete a service homed here (leaves a tombstone)", ("200", _ref("ServiceRecord")),
                          "400", "403", "404", "409", "503", name_param=True),
        },
        "/v1/services/{name}/migrate": {
            "post": _op("Migrate a service (to `target`, or where placement says)", ("200", _ref("Migration")),
                        *body_errors, "403", "404", "409", "503", body=_ref("MigrateRequest"), name_param=True),
        },
        "/v1/migrations": {"get": _op("Recent migrations and fail-safe redeploys, newest first",
                                      ("200", _list_of("Migration")))},
        "/v1/status": {"get": _op("This agent at a glance, with warnings to act on", ("200", _ref("Status")))},
        "/v1/services/{name}/logs": {"get": _logs_op()},
        "/v1/instances": {"get": _op("What the orchestrator runs here", ("200", _list_of("Instance")))},
        "/v1/keys": {"get": _op("Gossip keyring by fingerprint (never the keys)", ("200", _ref("Keyring")), "503")},
        "/v1/keys/rotate": {"post": _op("Rotate the gossip key federation-wide", ("200", _ref("Rotation")),
                                        *body_errors, "403", "409", "502", "503", body=_ref("RotateRequest"))},
        "/v1/audit": {"get": _audit_op()},
        "/v1/drain": {"post": _op("Drain this cluster: migrate every service away (then stop, with `stop`)",
                                  ("200", _ref("Drain")), *body_errors, body=_ref("DrainRequest"))},
        "/v1/trust": {"get": _op("This cluster's identity: certificate, CA, revocation list in force",
                                 ("200", _ref("Trust")))},
        "/v1/trust/crl": {"post": _op("Apply the CA's revocation list here and push it to every live member",
                                      ("200", _ref("CrlResult")), *body_errors, "403", "409",
                                      body=_ref("CrlRequest"), body_required=True)},
        "/v1/trust/ca": {"get": _op("The federation CA certificate (no token: it is public)",
                                    ("200", _ref("TrustCA")), "409", "429", open_path=True)},
        "/v1/trust/enrol": {"post": _op("A new cluster's certificate for a one-time join token (no bearer token)",
                                        ("200", _ref("Enrolled")), *body_errors, "403", "409", "429",
                                        body=_ref("EnrolRequest"), body_required=True, open_path=True)},
        "/v1/openapi.json": {"get": _op("This document", ("200", {"type": "object"}))},
        "/metrics": {"get": _op("Prometheus metrics", ("200", None), text=True)},
    }
    return {
        "openapi": "3.0.3",
        "info": {
            "title": "roam admin API",
            "version": VERSION,
            "description": (
                "Admin API of one roam agent (one per cluster). Every path except /v1/health needs "
                "`Authorization: Bearer <admin token>`. Errors are JSON {error, status, field?}; a 4xx "
                "changes nothing. Bodies are limited to "
                f"{MAX_BODY} bytes; each client address may send {RATE_LIMIT:g} requests/s "
                f"(burst {RATE_BURST:g}), /v1/health exempt. The peer API under /peer/ "
                "(msgpack, HMAC-signed with the federation secret) is internal and not described here."),
        },
        "servers": [{"url": "http://127.0.0.1:7070", "description": "an agent's --addr and --api-port"}],
        "security": [{"bearer": []}],
        "paths": paths,
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer",
                                           "description": "the admin token (--token-file)"}},
            "schemas": _schemas(),
            "responses": _responses(),
        },
    }


def render() -> str:
    """The spec as kept in docs/openapi.json (stable key order, trailing newline)."""
    return json.dumps(build_spec(), indent=2, sort_keys=True) + "\n"


if __name__ == "__main__":
    sys.stdout.write(render())
