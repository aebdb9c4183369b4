"""The peer API of a real agent: signed requests only, no replays, and bad msgpack is a 4xx.

Decoder-level fuzzing lives in tests/records/test_peerwire.py (arbitrary and corrupted bytes
into `peerwire.decode`, signature tampering) and tests/serf/test_codec.py (Serf RPC codec);
here the same kinds of bodies go through HTTP to every peer endpoint, correctly signed, so the
handlers behind the decoder are exercised too.
"""
from __future__ import annotations

import struct
import time
from typing import Any

import msgpack
import pytest
import requests
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from peer.links.probe import PROBE
from peer.migration import wire
from peer.peering.wire import CONTENT_TYPE, HEADER_NONCE, HEADER_SIGNATURE, HEADER_TIMESTAMP, sign
from peer.records import messages
from tests.harness import SECRET, TOKEN, AgentProc
from tests.security.client import Client, Reply
from tests.security.conftest import VICTIM

pytestmark = pytest.mark.integration

KEY = SECRET.encode()
PEER_PATHS = [wire.REPLICATE, wire.STATUS, wire.ABORT, wire.RELEASE, wire.PING,
              messages.PATH_DIGESTS, messages.PATH_PUSH, messages.PATH_FETCH, PROBE]


def packed(obj: Any) -> bytes:
    data: bytes = msgpack.packb(obj, use_bin_type=True)
    return data


NAN = b"\xcb" + struct.pack(">d", float("nan"))
# Bodies that are not acceptable peer msgpack at all: 400 everywhere.
NOT_MSGPACK: list[bytes] = [
    b"", b"\xc1", b"\x82\xa1a", b"\xd4\x01\x00", b"\xc7\x00\x05", b"\xd6\xff\x00\x00\x00\x00",
    b"\xdd\xff\xff\xff\xff", b"\xdf\xff\xff\xff\xff", b"\xdb\xff\xff\xff\xff", b"\xc6\xff\xff\xff\xff",
    b"\x91" * 100_000 + b"\xc0", b"\x81\x01\x02", b"\x81\xc0\x01", b"\x81\x91\x01\x02", b"\x80\x80", b"\xa5abc",
    b"\xc4\xff", b"\xd9\x05\xff\xfe\xfd\xfc\xfb", bytes(range(256)) * 4,
]
# Well-formed msgpack of the wrong shape (or hostile content): never a 5xx, nothing changes.
WRONG_SHAPE: list[bytes] = [
    packed([]), packed("x"), packed(1), packed(None), packed(True), packed(2**64 - 1), packed(-(2**63)),
    packed({"migration_id": 1, "name": None}), packed({"name": VICTIM["name"]}), packed({"from": "x" * 1000}),
    packed({"from": "x", "digests": {"a": "not-bytes"}}), packed({"from": "x", "digests": [1]}),
    packed({"from": "x", "records": [{"name": 1}]}), packed({"from": "x", "names": "victim-svc"}),
    packed({"record": {"name": VICTIM["name"]}}), packed({"record": "x"}),
    b"\x81\xa2lo" + NAN, packed({"migration_id": "m", "name": "x", "home": "h", "descriptor": b"\x80"}),
    packed({"migration_id": "m", "name": "x", "home": "h", "descriptor": packed({"name": "x", "port": 1,
                                                                              "command": "rm -rf /"})}),
    packed({"migration_id": "m", "name": "../etc", "home": "h",
            "descriptor": packed({"name": "../etc", "port": 1, "command": ["x"]})}),
    packed([[[[[[[[[[[]]]]]]]]]]] * 1000),
]


def assert_refused(reply: Reply, *, status: int | None = None) -> None:
    assert 400 <= reply.status < 500, (reply.status, reply.raw[:300])
    if status is not None:
        assert reply.status == status, (reply.status, reply.raw[:300])
    body = msgpack.unpackb(reply.raw, raw=False)
    assert isinstance(body, dict) and isinstance(body["error"], str), body


async def test_a_captured_signed_request_cannot_be_replayed(client: Client) -> None:
    body = packed({"from": "test"})
    headers = {**sign(KEY, method="POST", path=wire.PING, body=body, now=time.time()), "Content-Type": CONTENT_TYPE}
    first = await client.request("POST", wire.PING, body=body, headers=headers)
    assert first.status == 200 and msgpack.unpackb(first.raw)["ok"] is True
    for _ in range(3):
        again = await client.request("POST", wire.PING, body=body, headers=headers)
        assert_refused(again, status=401)
        assert "replayed" in msgpack.unpackb(again.raw)["error"]
    # The replay is refused on every path, not only the one it was signed for.
    for path in PEER_PATHS:
        assert_refused(await client.request("POST", path, body=body, headers=headers), status=401)
    # A fresh signature for the same body still works: the cache blocks replays, not peers.
    assert (await client.peer(wire.PING, {"from": "test"})).status == 200


async def test_unsigned_forged_stale_and_misdirected_requests_get_401(client: Client) -> None:
    body = packed({"from": "test"})
    now = time.time()
    good = sign(KEY, method="POST", path=wire.PING, body=body, now=now)

    def variant(**changes: str | None) -> dict[str, str]:
        out = {**good, **{k: v for k, v in changes.items() if v is not None}}
        for k, v in changes.items():
            if v is None:
                out.pop(k, None)
        return out

    cases: list[tuple[str, bytes, dict[str, str]]] = [
        (wire.PING, body, {}),
        (wire.PING, body, {"Authorization": f"Bearer {TOKEN}"}),  # the admin token is no peer credential
        (wire.PING, body, sign(b"another federation's secret", method="POST", path=wire.PING, body=body, now=now)),
        (wire.PING, body, sign(b"", method="POST", path=wire.PING, body=body, now=now)),
        (wire.PING, body, sign(KEY, method="POST", path=wire.PING, body=body, now=now - 31)),
        (wire.PING, body, sign(KEY, method="POST", path=wire.PING, body=body, now=now - 86400)),
        (wire.PING, body, sign(KEY, method="POST", path=wire.PING, body=body, now=now + 3600)),
        (wire.PING, body, sign(KEY, method="GET", path=wire.PING, body=body, now=now)),
        (wire.PING, body, sign(KEY, method="POST", path=wire.STATUS, body=body, now=now)),
        (wire.PING, body, sign(KEY, method="POST", path=wire.PING + "?x=1", body=body, now=now)),
        (wire.PING + "?x=1", body, sign(KEY, method="POST", path=wire.PING, body=body, now=now)),
        (wire.PING, packed({"from": "evil"}), sign(KEY, method="POST", path=wire.PING, body=body, now=now)),
        (wire.PING, body + b"\x00", sign(KEY, method="POST", path=wire.PING, body=body, now=now)),
        (wire.PING, body, variant(**{HEADER_SIGNATURE: good[HEADER_SIGNATURE].upper()})),
        (wire.PING, body, variant(**{HEADER_SIGNATURE: good[HEADER_SIGNATURE][:-1]})),
        (wire.PING, body, variant(**{HEADER_SIGNATURE: "0" * 64})),
        (wire.PING, body, variant(**{HEADER_SIGNATURE: "x" * 129})),
        (wire.PING, body, variant(**{HEADER_SIGNATURE: None})),
        (wire.PING, body, variant(**{HEADER_NONCE: None})),
        (wire.PING, body, variant(**{HEADER_NONCE: "n" * 65})),
        (wire.PING, body, variant(**{HEADER_NONCE: good[HEADER_NONCE] + "x"})),
        (wire.PING, body, variant(**{HEADER_TIMESTAMP: None})),
        *[(wire.PING, body, variant(**{HEADER_TIMESTAMP: ts}))
          for ts in ("nan", "inf", "-inf", "1e999", "abc", "", "0x10", f"{now:.3f}0", "9" * 33)],  # (a padded copy of the timestamp is not a case: HTTP strips header whitespace)
        *[(path, body, {}) for path in PEER_PATHS],
    ]
    for path, sent, headers in cases:
        reply = await client.request("POST", path, body=sent, headers={**headers, "Content-Type": CONTENT_TYPE})
        assert_refused(reply, status=401)
    print(f"peer auth: {len(cases)} refused")
    # Unauthenticated bodies are bounded too, and signed requests do not open the admin API.
    assert (await client.request("POST", wire.PING, body=b"\x00" * (8 * 1024 * 1024 + 1))).status == 413
    admin = await client.request("GET", "/v1/services", headers=sign(KEY, method="GET", path="/v1/services",
                                                                    body=b"", now=time.time()))
    assert admin.status == 401


def log_size(agent: AgentProc) -> int:
    return agent.log_path.stat().st_size


def new_log(agent: AgentProc, since: int) -> str:
    with open(agent.log_path, "rb") as fh:
        fh.seek(since)
        return fh.read().decode("utf-8", "replace")


async def test_malformed_msgpack_correctly_signed_gets_4xx_on_every_peer_endpoint(
        client: Client, lone_agent: AgentProc) -> None:
    since = log_size(lone_agent)
    before = await client.get_json("/v1/services"), await client.get_json("/v1/instances")
    for path in PEER_PATHS:
        for raw in NOT_MSGPACK:
            assert_refused(await client.peer(path, raw=raw), status=400)
        for raw in WRONG_SHAPE:
            reply = await client.peer(path, raw=raw)
            assert reply.status < 500, (path, raw[:80], reply.status, reply.raw[:300])
            assert isinstance(msgpack.unpackb(reply.raw, raw=False), dict)
    print(f"peer bodies: {len(PEER_PATHS) * (len(NOT_MSGPACK) + len(WRONG_SHAPE))} signed malformed requests")
    assert (await client.get_json("/v1/services"), await client.get_json("/v1/instances")) == before
    assert "unhandled error" not in new_log(lone_agent, since)


async def test_the_old_reroute_endpoint_is_gone(client: Client) -> None:
    """`/peer/v1/migration/reroute` let any peer point an entry's frontend anywhere and commit
    the move there, with no migration recorded anywhere. Nothing in roam has sent it since the
    home set (the steward's `ROUTE` carries the whole record instead): it answers 404 now, even
    signed and well formed, and changes nothing."""
    before = await client.get_json("/v1/services")
    reply = await client.peer("/peer/v1/migration/reroute", {"migration_id": "m", "name": VICTIM["name"],
                                                             "location": "sec1", "instance": "127.0.0.1:1"})
    assert reply.status == 404, (reply.status, reply.raw[:200])
    assert await client.get_json("/v1/services") == before


# -- Hypothesis: random msgpack, signed, to random peer endpoints -----------------------------------

FIELDS = ["migration_id", "name", "home", "descriptor", "location", "instance", "expect_location", "record",
          "from", "lo", "hi", "digests", "records", "names", "state", "vclock"]
scalars = st.one_of(st.none(), st.booleans(), st.integers(-(2**63), 2**64 - 1), st.floats(),
                    st.text(max_size=40), st.binary(max_size=40))
values = st.recursive(scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.one_of(st.sampled_from(FIELDS), st.text(max_size=8)), inner,
                                                  max_size=5)), max_leaves=20)
# Bodies shaped like each endpoint's request (right keys, mostly right types, hostile values),
# to get past the decoder into the handlers. No name here is a service the agent runs.
names = st.one_of(st.sampled_from(["ghost", "far-away", "sec1", "../etc", "", "A"]), st.text(max_size=70))
addrs = st.one_of(st.sampled_from(["127.0.6.1:1", "abc", ":", "1.2.3.4:99999", "[::1]:80", "host:1"]), st.text(max_size=30))
maybe = st.one_of(values, names)
records = st.fixed_dictionaries(
    {"name": names, "home": names, "location": names,
     "state": st.sampled_from(["pending", "running", "deleted", "bogus"]), "digest": st.text(max_size=20),
     "descriptor": st.binary(max_size=60), "vclock": values, "written": values, "tombstone": st.booleans()},
    optional={"instance": addrs, "endpoint": addrs, "migration_id": maybe, "updated_at": scalars})
shaped = st.one_of(
    st.fixed_dictionaries({"migration_id": maybe, "name": names, "home": names,
                           "descriptor": st.one_of(st.binary(max_size=60), values.map(packed))}),
    st.fixed_dictionaries({"migration_id": maybe, "name": names}),
    st.fixed_dictionaries({"migration_id": maybe, "name": names, "location": names, "instance": addrs},
                          optional={"expect_location": maybe}),
    st.fixed_dictionaries({"record": st.one_of(records, values)}),
    st.fixed_dictionaries({"from": names, "digests": st.one_of(st.dictionaries(names, st.binary(max_size=10)), values)},
                          optional={"lo": maybe, "hi": maybe}),
    st.fixed_dictionaries({"from": names, "records": st.one_of(st.lists(records, max_size=3), values)}),
    st.fixed_dictionaries({"from": names, "names": st.one_of(st.lists(names, max_size=5), values)}),
).map(packed)
bodies = st.one_of(
    shaped, shaped,
    st.dictionaries(st.sampled_from(FIELDS), values, max_size=8).map(packed),
    values.map(packed),
    st.binary(max_size=200),
    st.tuples(values.map(packed), st.integers(0, 50), st.binary(max_size=4)).map(lambda t: t[0][:t[1]] + t[2]),
)


def test_random_signed_msgpack_never_gets_a_5xx(lone_agent: AgentProc) -> None:
    since = log_size(lone_agent)
    session = requests.Session()
    statuses: dict[int, int] = {}

    @given(path=st.sampled_from(PEER_PATHS), body=bodies)
    @settings(max_examples=300, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    def post(path: str, body: bytes) -> None:
        headers = {**sign(KEY, method="POST", path=path, body=body, now=time.time()), "Content-Type": CONTENT_TYPE}
        reply = session.post(lone_agent.api + path, data=body, headers=headers, timeout=30)
        statuses[reply.status_code] = statuses.get(reply.status_code, 0) + 1
        assert reply.status_code < 500, (path, body[:100], reply.status_code, reply.content[:300])

    post()
    print(f"peer fuzz: {sum(statuses.values())} requests, statuses {dict(sorted(statuses.items()))}")
    assert "unhandled error" not in new_log(lone_agent, since)
