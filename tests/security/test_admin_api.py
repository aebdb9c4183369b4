"""Hostile requests against every admin endpoint of a real agent: each gets the documented 4xx
with a JSON error (naming the field where there is one), and none changes anything: the same
records, the same running processes (same pids), the same gossip key, no unhandled error.
"""
from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest

from peer.api.http import MAX_BODY
from peer.api.openapi import build_spec
from tests.harness import TOKEN, AgentProc
from tests.security.client import Client, Reply
from tests.security.conftest import CLASSIFIER, VICTIM

pytestmark = pytest.mark.integration

NAME = str(VICTIM["name"])
GOOD = {"name": "hostile", "port": 8080, "command": CLASSIFIER}
# The body each POST would accept, so that only the one thing under test is wrong.
VALID_BODY: dict[tuple[str, str], Any] = {
    ("POST", "/v1/services"): GOOD,
    ("POST", "/v1/services/{name}/migrate"): {},
    ("POST", "/v1/keys/rotate"): {},
    ("POST", "/v1/drain"): {},  # (only ever sent without a valid token: it would drain the agent)
}


def operations() -> list[tuple[str, str]]:
    ops = [(m.upper(), p) for p, item in build_spec()["paths"].items() for m, op in item.items()
           if op.get("security") != []]
    assert len(ops) == 18  # with GET /v1/audit, POST /v1/drain, GET /v1/trust and POST /v1/trust/crl
    return ops


BAD_AUTH: list[str | None] = [
    None, "", "Bearer", "Bearer ", "Bearer wrong-token", f"Bearer {TOKEN[:-1]}", f"Bearer {TOKEN}x",
    f"Bearer {TOKEN.upper()}", f"bearer{TOKEN}", f"Token {TOKEN}", f"Basic {base64.b64encode(TOKEN.encode()).decode()}",
    f"Bearer {TOKEN},Bearer {TOKEN}", "Bearer " + "A" * 7000, f"Bearer {TOKEN[:16]}", TOKEN,
]
TOKEN_ELSEWHERE = [f"?token={TOKEN}", f"?access_token={TOKEN}", f"?Authorization=Bearer%20{TOKEN}"]
# Paths that try to reach an admin handler around the token check: none may answer 2xx.
SNEAKY_PATHS = ["/peer/../v1/services", "/peer/%2e%2e/v1/services", "/peer%2F..%2Fv1/services",
                "/v1/health/../services", "/v1/health/%2e%2e/members", "//v1/services", "/v1//services",
                "/v1/./members", "/v1/services/", "/V1/services", "/peer/v1/../../v1/keys",
                "/ui/../v1/services", "/ui/%2e%2e/v1/members", "/ui%2F..%2Fv1/services", "/ui/..%2Fv1/keys"]


def _any(*values: Any) -> tuple[Any, ...]:
    return values


def with_field(**changes: Any) -> dict[str, Any]:
    return {**GOOD, **changes}


def without(*keys: str) -> dict[str, Any]:
    return {k: v for k, v in GOOD.items() if k not in keys}


def nested(depth: int) -> Any:
    value: Any = "junk"
    for _ in range(depth):
        value = [value]
    return value


# (descriptor, the field the 422 must name)
BAD_DESCRIPTORS: list[tuple[Any, str]] = [
    # names: path traversal, shell metacharacters, NUL, not DNS-1123, wrong types
    *[(with_field(name=n), "name") for n in (
        "../etc", "..", ".", "a/b", "/abs", "..%2F..", "a\\b", "a\x00b", "a;reboot", "$(id)", "`id`", "a b", "A",
        "a" * 64, "", "-a", "a-", "ñame", "a\n", "\u202ename", 5, None, ["a"], {"n": 1}, True)],
    # port: wrong types, out of range, huge
    *[(with_field(port=v), "port") for v in _any("80", 1.5, True, 0, -1, 65536, 10**30, -(10**30), None, {}, [80], 1e308)],
    (without("port"), "port"),
    # command: shell strings instead of argv, empty, NUL bytes, too many/long args, nested junk
    *[(with_field(command=v), "command") for v in (
        "rm -rf /", "python -m http.server", "$(reboot)", "", [], None, {"sh": "-c"}, 42, ["x"] * 257)],
    (with_field(command=[""]), "command[0]"),
    (with_field(command=["python", "a\x00b"]), "command[1]"),
    (with_field(command=["a" * 4097]), "command[0]"),
    (with_field(command=[1]), "command[0]"),
    (with_field(command=[["nested"]]), "command[0]"),
    (with_field(command=["x", None]), "command[1]"),
    (with_field(command=["x", "\ud800"]), "command[1]"),
    (without("command"), "command"),
    # resources: huge, negative, non-finite spelled as strings, wrong types
    *[(with_field(cpu=v), "cpu") for v in _any(1e308, 257, -1, 0, "1e999999", "NaN", "inf", "-1", "1" * 40, True, [], 10**30)],
    *[(with_field(memory=v), "memory") for v in _any("1Ei", "-5", 1.5, "1e400", 10**20, {}, "64 Mi", "x", True)],
    *[(with_field(replicas=v), "replicas") for v in (0, 101, 10**100, "1", 1.0, -1, None)],
    # health: traversal, spaces, NUL, both kinds, exec smuggling
    (with_field(health={"path": "../../etc/passwd"}), "health.path"),
    (with_field(health={"path": "/a b"}), "health.path"),
    (with_field(health={"path": "/\x00"}), "health.path"),
    (with_field(health={"path": "/" + "a" * 2000}), "health.path"),
    (with_field(health={"tcp": False}), "health.tcp"),
    (with_field(health={"path": "/", "tcp": True}), "health"),
    (with_field(health={"exec": ["sh", "-c", "id"]}), "health.exec"),
    (with_field(health="GET /"), "health"),
    # constraints and nested junk
    (with_field(constraints={"tiers": "edge"}), "constraints.tiers"),
    (with_field(constraints={"tiers": ["a"] * 33}), "constraints.tiers"),
    (with_field(constraints={"tiers": ["../x"]}), "constraints.tiers[0]"),
    (with_field(constraints={"tiers": ["a", "a"]}), "constraints.tiers[1]"),
    (with_field(constraints={"tiers": [nested(50)]}), "constraints.tiers[0]"),
    (with_field(constraints={"affinity": {"k": {"nested": [1]}}}), "constraints.affinity.k"),
    (with_field(constraints={"affinity": []}), "constraints.affinity"),
    (with_field(constraints={"zone": 1}), "constraints.zone"),
    (with_field(constraints=nested(200)), "constraints"),
    # image (kubernetes) references with traversal or shell syntax
    *[(with_field(image=v), "image") for v in ("../../x", "a;rm -rf /", "a b", 5, "a" * 300, "Case", "x:tag:tag")],
    (with_field(standby="yes"), "standby"),
    (with_field(standby=True), "standby"),
    (with_field(standby=99), "standby"),
    # unknown fields, at the top and nested
    (with_field(shell=True), "shell"),
    (with_field(__proto__={}), "__proto__"),
    (with_field(Name="x"), "Name"),
    (with_field(env={"LD_PRELOAD": "/tmp/x.so"}), "env"),
    (with_field(cwd="/"), "cwd"),
    # not an object at all
    *[(v, "descriptor") for v in ([], [GOOD], "descriptor", 1, None, True)],
    ({}, "name"),
]

# (raw body, why it is not JSON): all 400
NOT_JSON: list[bytes] = [
    b"{", b"nul", b"\xff\xfe\x00", b"{}x", b'{"a":NaN}', b'{"a":Infinity}', b'{"a":-Infinity}',
    b"[" * 20000 + b"]" * 20000, b'{"port": 1' + b"0" * 5000 + b"}", b"\x00", b'{"a":1,}', b"'single'", b'{"a" 1}',
    b'{"name": "a"', b"\x80\x81", "{\"name\": \"é\"}".encode("latin-1"),
]
WRONG_TYPES = ["application/xml", "text/html", "multipart/form-data; boundary=x", "application/x-www-form-urlencoded",
               "image/png", "application/msgpack", "application/json-patch+json", "text/plain",
               "text/plain; charset=utf-8", "application/octet-stream", None]
HOSTILE_NAMES = ["..", "%2e%2e", "..%2F..%2Fetc%2Fpasswd", "a%00b", "A", "a" * 64, "-a", "%20", "victim-svc%0A",
                 "victim-svc%00", "%24(id)", "a;b", "%E2%80%AE"]


@pytest.fixture
async def snapshot(client: Client, lone_agent: AgentProc) -> AsyncIterator[Any]:
    """Fails the test if anything changed: records, processes (pids), keys, or a 500 was logged."""
    async def take() -> Any:
        services = sorted(json.dumps(s, sort_keys=True) for s in await client.get_json("/v1/services"))
        instances = sorted(json.dumps(i, sort_keys=True) for i in await client.get_json("/v1/instances"))
        return services, instances, (await client.get_json("/v1/keys"))["keys"]

    before = await take()
    assert any(NAME in s for s in before[0]) and any(NAME in i for i in before[1])
    yield before
    assert await take() == before
    assert "unhandled error" not in lone_agent.log_path.read_text(errors="replace")


def assert_error(reply: Reply, status: int, field: str | None = None) -> None:
    assert reply.status == status, (reply.status, reply.raw[:300])
    assert reply.headers["Content-Type"].startswith("application/json"), reply.headers
    body = reply.json
    assert isinstance(body["error"], str) and body["error"] and body["status"] == status, body
    assert set(body) <= {"error", "status", "field"}, body
    if field is not None:
        assert body.get("field") == field, (field, body)


async def test_every_endpoint_refuses_missing_and_wrong_tokens(client: Client, snapshot: Any) -> None:
    tried = 0
    for method, template in operations():
        path = template.replace("{name}", NAME)
        body = VALID_BODY.get((method, template))
        raw = None if body is None else json.dumps(body).encode()
        for auth in BAD_AUTH:
            headers = {"Content-Type": "application/json"}
            if auth is not None:
                headers["Authorization"] = auth
            reply = await client.request(method, path, body=raw, headers=headers)
            assert_error(reply, 401)
            assert reply.headers.get("WWW-Authenticate") == 'Bearer realm="roam"'
            tried += 1
        for query in TOKEN_ELSEWHERE:
            assert_error(await client.request(method, path + query, body=raw), 401)
            tried += 1
    # The federation secret is not an admin credential either.
    from tests.harness import SECRET
    assert_error(await client.request("GET", "/v1/services", headers={"Authorization": f"Bearer {SECRET}"}), 401)
    print(f"auth: {tried + 1} refused requests")


async def test_paths_around_the_token_check_are_refused(client: Client, snapshot: Any) -> None:
    for path in SNEAKY_PATHS:
        for method in ("GET", "POST", "DELETE"):
            reply = await client.request(method, path, body=json.dumps(GOOD).encode(),
                                         headers={"Content-Type": "application/json"})
            # 401 as JSON from the admin side, or as msgpack from the peer side (/peer/ prefix)
            assert reply.status in (400, 401, 404, 405), (method, path, reply.status, reply.raw[:200])
    # /v1/health is the one open path, and it tells nothing but the cluster name.
    health = await client.request("GET", "/v1/health")
    assert health.status == 200 and health.json == {"cluster": "sec1", "status": "ok"}


async def test_hostile_descriptors_get_422_naming_the_field(client: Client, snapshot: Any) -> None:
    for descriptor, field in BAD_DESCRIPTORS:
        raw = json.dumps(descriptor).encode()
        assert len(raw) <= MAX_BODY, field
        reply = await client.admin("POST", "/v1/services", raw=raw)
        assert_error(reply, 422, field)
    print(f"descriptors: {len(BAD_DESCRIPTORS)} refused")


async def test_a_descriptor_that_cannot_start_changes_nothing(client: Client, snapshot: Any) -> None:
    # Valid to the schema, but the program does not exist (the agent's PATH is a sandbox):
    # the frontend it opened for the service is closed again and no record is written.
    for command in (["no-such-program"], ["./relative"], ["/nonexistent/bin/x", "{port}"]):
        assert_error(await client.admin("POST", "/v1/services", with_field(command=command)), 422, "command")
    # An existing name is refused before anything starts.
    assert_error(await client.admin("POST", "/v1/services", with_field(name=NAME)), 409, "name")


async def test_bodies_that_are_not_json_or_too_big(client: Client, snapshot: Any) -> None:
    posts = [("/v1/services", GOOD), (f"/v1/services/{NAME}/migrate", {"target": "nowhere"}), ("/v1/keys/rotate", {}),
             ("/v1/drain", {"stop": "no"})]  # a bad value: should a check let it through, nothing drains
    for path, _good in posts:
        for raw in NOT_JSON:
            assert_error(await client.admin("POST", path, raw=raw), 413 if len(raw) > MAX_BODY else 400)
        for ctype in WRONG_TYPES:
            assert_error(await client.admin("POST", path, raw=json.dumps(_good).encode(), ctype=ctype), 415)
        for size in (MAX_BODY + 1, 10 * MAX_BODY, 9 * 1024 * 1024):
            assert_error(await client.admin("POST", path, raw=b" " * size), 413)

        async def chunks() -> AsyncIterator[bytes]:
            for _ in range(20):
                yield b" " * 8192

        assert_error(await client.request("POST", path, body=chunks, headers={
            "Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}), 413)
    assert_error(await client.admin("POST", "/v1/services", raw=b""), 400)
    padded = with_field(name="a" * 63, command=["x" * 4096] * 16)
    assert_error(await client.admin("POST", "/v1/services", padded), 413)


async def test_hostile_names_in_paths(client: Client, snapshot: Any) -> None:
    for name in HOSTILE_NAMES:
        for method, suffix, body in (("GET", "", None), ("DELETE", "", None), ("POST", "/migrate", b"{}")):
            reply = await client.request(method, f"/v1/services/{name}{suffix}", body=body, headers={
                "Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"})
            assert reply.status in (400, 404), (method, name, reply.status, reply.raw[:200])
            assert_error(reply, reply.status)


async def test_hostile_migrate_and_rotate_bodies(client: Client, snapshot: Any) -> None:
    migrate = f"/v1/services/{NAME}/migrate"
    cases: list[tuple[str, Any, int, str | None]] = [
        *[(migrate, {"target": t}, 422, "target") for t in ("../x", 1, "", "A", "a" * 64, ["sec1"], {"n": 1}, "nowhere")],
        (migrate, {"target": "sec1", "force": True}, 422, "force"),
        (migrate, {"x": 1}, 422, "x"),
        (migrate, [], 422, None), (migrate, "sec1", 422, None), (migrate, None, 422, None), (migrate, 5, 422, None),
        (migrate, {"target": "sec1"}, 409, "target"),  # already runs there
        ("/v1/services/no-such-svc/migrate", {}, 404, None),
        *[("/v1/keys/rotate", {"force": v}, 422, "force") for v in _any("yes", 1, None, [], {})],
        ("/v1/keys/rotate", {"x": 1}, 422, "x"),
        ("/v1/keys/rotate", [], 422, None), ("/v1/keys/rotate", "rotate", 422, None),
    ]
    for path, body, status, field in cases:
        assert_error(await client.admin("POST", path, raw=json.dumps(body).encode()), status, field)
    # No body at all means "placement decides": with one cluster that is a 409, and nothing moves.
    assert_error(await client.admin("POST", migrate), 409)

