"""Trust between clusters with real agents: workload policy, admin roles, the audit log.

One federation of three agents on 127.0.23.1-3:
* t1 (tier edge): no workload policy; an operator token and a reader token;
* t2 (tier cloud, ranked first by placement): `--accept-from t3 --allow-command /usr/lib/nowhere`;
* t3 (tier deep-edge): no workload policy.
Each refusal must be a 403 naming the rule and leave nothing behind.
"""
from __future__ import annotations

import json
import os
import time
import stat
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from dataclasses import replace
from typing import Any

import aiohttp
import pytest

from chaos.agent_processes import kill_left_behind
from peer.api.http import token_id
from peer.migration import wire
from peer.peering.client import PeerClient, PeerRefused
from peer.records import messages as msg
from peer.records import record as rec
from peer.records.merge import local_write
from peer.records.vclock import actor_id
from peer.runtime.waiting import wait_until
from tests.harness import SECRET, TOKEN, Federation, dump_logs
from tests.security.conftest import start_and_wait

pytestmark = pytest.mark.integration

ADDRS = {"t1": "127.0.23.1", "t2": "127.0.23.2", "t3": "127.0.23.3"}
READER = "reader-token-0123456789abcdefXYZ"
CLASSIFIER = [sys.executable, "-m", "peer.samples.classifier", "--host", "{host}", "--port", "{port}"]


def descriptor(name: str, **extra: Any) -> dict[str, Any]:
    return {"name": name, "port": 8080, "health": {"path": "/healthz"}, "command": CLASSIFIER, **extra}


async def call(fed: Federation, name: str, method: str, path: str, body: Any = None,
               *, token: str = TOKEN) -> tuple[int, Any]:
    assert fed.session is not None
    async with fed.session.request(method, fed.agents[name].api + path, json=body,
                                   headers={"Authorization": f"Bearer {token}"},
                                   timeout=aiohttp.ClientTimeout(total=60)) as resp:
        return resp.status, await resp.json(content_type=None)


@pytest.fixture(scope="module")
def trio(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Federation]:
    base = tmp_path_factory.mktemp("trust")
    reader = base / "reader.token"
    reader.write_text(READER)
    reader.chmod(0o600)
    f = Federation(base=base)
    # --no-peer-tls: these tests play a member holding the federation secret and nothing else
    # (the workload policy must hold even then); with identity on, see tests/trust/.
    f.add("t1", ADDRS["t1"], extra=["--no-auto-migrate", "--no-peer-tls", "--tier", "edge", "--reader-token-file", str(reader)])
    f.add("t2", ADDRS["t2"], join=[ADDRS["t1"]],
          extra=["--no-auto-migrate", "--no-peer-tls", "--tier", "cloud", "--accept-from", "t3", "--allow-command", "/usr/lib/nowhere"])
    f.add("t3", ADDRS["t3"], join=[ADDRS["t1"]], extra=["--no-auto-migrate", "--no-peer-tls", "--tier", "deep-edge"])
    try:
        for agent in f.agents.values():
            start_and_wait(agent, timeout=40)
        yield f
    finally:
        print(dump_logs(f))
        f.stop_all()


@pytest.fixture
async def fed(trio: Federation) -> AsyncIterator[Federation]:
    trio.session = aiohttp.ClientSession()
    try:
        async def all_alive() -> bool:
            members = await trio.get("t1", "/v1/members")
            return sum(m["status"] == "alive" for m in members) == 3

        await wait_until(all_alive, timeout=40, what="three members alive")
        yield trio
    finally:
        await trio.session.close()
        trio.session = None


async def test_deploy_outside_policy_is_403_naming_the_rule_and_changes_nothing(fed: Federation) -> None:
    status, body = await call(fed, "t2", "POST", "/v1/services", descriptor("outside"))
    assert status == 403, body
    assert body["rule"] == "allow-command" and body["field"] == "command" and "/usr/lib/nowhere" in body["error"]
    assert await fed.get("t2", "/v1/services") == []
    assert await fed.get("t2", "/v1/instances") == []
    policy = (await fed.get("t2", "/v1/status"))["workload"]
    assert policy == {"accept_from": ["t3"], "allow_command": ["/usr/lib/nowhere"], "allow_image": []}


async def test_entry_migration_and_placement_respect_the_policy(fed: Federation) -> None:
    # t2's accept-from is gossiped: t1 sees it, and never picks t2 for a service homed at t1.
    views = {m["name"]: m for m in await fed.get("t1", "/v1/members")}
    assert views["t2"]["accept_from"] == ["t3"] and views["t3"]["accept_from"] is None
    created = await fed.call("t1", "POST", "/v1/services", descriptor("trusted", entries=3), expect=201)
    assert created["homes"] == ["t1", "t3"], created
    assert "trusted" not in [s["name"] for s in await fed.get("t2", "/v1/services")]
    status, body = await call(fed, "t1", "POST", "/v1/services/trusted/migrate", {"target": "t2"})
    assert status == 403 and body["rule"] == "accept-from" and body["cluster"] == "t2", body
    assert (await fed.get("t1", "/v1/services/trusted"))["location"] == "t1"

    # Homed at t3, which t2 accepts: t2 is asked and refuses by its command rule, as an entry
    # (left out of the home set) and at replication (the engine goes on to the next candidate).
    created = await fed.call("t3", "POST", "/v1/services", descriptor("trusted-b", entries=3), expect=201)
    assert created["homes"] == ["t3", "t1"], created
    status, body = await call(fed, "t3", "POST", "/v1/services/trusted-b/migrate", {"target": "t2"})
    assert status == 403 and body["rule"] == "allow-command" and body["cluster"] == "t2", body
    [failed] = [m for m in await fed.get("t3", "/v1/migrations") if m["service"] == "trusted-b"]
    assert failed["outcome"] == "failed" and failed["stage"] == "replication", failed
    assert await fed.get("t2", "/v1/instances") == []
    await fed.call("t3", "POST", "/v1/services", descriptor("trusted-c", entries=1), expect=201)
    moved = await fed.call("t3", "POST", "/v1/services/trusted-c/migrate", {})
    assert moved["candidates"][0]["name"] == "t2", moved["candidates"]  # cloud tier ranks first
    assert moved["target"] == "t1" and moved["outcome"] == "succeeded", moved
    assert moved["refusals"] == [{"cluster": "t2", "rule": "allow-command", "error": moved["refusals"][0]["error"]}]
    assert await fed.get("t2", "/v1/instances") == []
    # Back home, then away again: t2 is no longer proposed for this descriptor (learnt).
    await fed.call("t3", "POST", "/v1/services/trusted-c/migrate", {"target": "t3"})
    again = await fed.call("t3", "POST", "/v1/services/trusted-c/migrate", {})
    assert again["target"] == "t1" and again["refusals"] == [], again
    assert "t2" not in [c["name"] for c in again["candidates"]]


async def test_reader_token_reads_but_cannot_write(fed: Federation, tmp_path: Path) -> None:
    status, members = await call(fed, "t1", "GET", "/v1/members", token=READER)
    assert status == 200 and len(members) == 3
    for path in ("/v1/services", "/v1/migrations", "/v1/status"):  # what the dashboard reads
        assert (await call(fed, "t1", "GET", path, token=READER))[0] == 200, path
    status, body = await call(fed, "t1", "POST", "/v1/services", descriptor("by-reader"), token=READER)
    assert status == 403 and body["role"] == "reader", body
    status, body = await call(fed, "t1", "DELETE", "/v1/services/trusted", token=READER)
    assert status == 403 and body["role"] == "reader", body
    assert (await fed.get("t1", "/v1/services/trusted"))["location"] == "t1"
    assert "by-reader" not in [s["name"] for s in await fed.get("t1", "/v1/services")]
    # The CLI: reads work with a reader token; a write is one line and a non-zero exit.
    token_file = tmp_path / "reader"
    token_file.write_text(READER)
    desc = tmp_path / "d.json"
    desc.write_text(json.dumps(descriptor("by-reader-cli")))
    roam = [sys.executable, "-m", "peer.cli"]
    api = ["--api", fed.agents["t1"].api, "--token-file", str(token_file)]
    listing = subprocess.run([*roam, "services", *api], capture_output=True, text=True, timeout=60)
    assert listing.returncode == 0 and "trusted" in listing.stdout, listing.stderr
    refused = subprocess.run([*roam, "deploy", str(desc), *api], capture_output=True, text=True, timeout=60)
    assert refused.returncode != 0
    assert len(refused.stderr.strip().splitlines()) == 1 and "403" in refused.stderr and "reader" in refused.stderr


async def test_audit_log_records_every_write_and_no_token(fed: Federation) -> None:
    await fed.call("t1", "POST", "/v1/services", descriptor("audited", entries=1), expect=201)
    await fed.call("t1", "POST", "/v1/services/audited/migrate", {"target": "t3"})
    await fed.call("t1", "DELETE", "/v1/services/audited")
    await call(fed, "t1", "POST", "/v1/services/audited/migrate", {}, token=READER)
    await call(fed, "t1", "DELETE", "/v1/services/audited", token="wrong-token-0123456789")
    entries = await fed.get("t1", "/v1/audit?limit=5")
    assert len(entries) == 5
    newest_first = [(e["what"]["method"], e["what"]["path"], e["status"], e["who"]["role"]) for e in entries]
    assert newest_first == [
        ("DELETE", "/v1/services/audited", 401, None),
        ("POST", "/v1/services/audited/migrate", 403, "reader"),
        ("DELETE", "/v1/services/audited", 200, "operator"),
        ("POST", "/v1/services/audited/migrate", 200, "operator"),
        ("POST", "/v1/services", 201, "operator"),
    ], newest_first
    assert entries[3]["what"]["target"] == "t3" and entries[4]["what"]["service"] == "audited"
    assert entries[1]["who"]["token_id"] == token_id(READER) and entries[2]["who"]["token_id"] == token_id(TOKEN)
    assert entries[1]["outcome"] == "refused" and entries[2]["outcome"] == "done"
    assert all(e["who"]["remote"] == "127.0.0.1" for e in entries)
    # The refused policy deploy of the first test is there too, with its status.
    older = await fed.get("t2", "/v1/audit?limit=1000")
    assert any(e["status"] == 403 and e["what"]["path"] == "/v1/services" for e in older)
    # On disk: 0600, JSON lines, and no token anywhere in it.
    path = fed.agents["t1"].data_dir / "audit.log"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    text = path.read_text()
    assert TOKEN not in text and READER not in text
    assert all(isinstance(json.loads(line), dict) for line in text.splitlines())
    status, body = await call(fed, "t1", "GET", "/v1/audit?limit=0")
    assert status == 400 and body["field"] == "limit"
    status, _ = await call(fed, "t1", "GET", "/v1/audit", token=READER)
    assert status == 200  # readers may read the audit log (documented)
    token_file = fed.base / "reader.token"
    shown = subprocess.run([sys.executable, "-m", "peer.cli", "audit", "--limit", "2", "--api", fed.agents["t1"].api,
                            "--token-file", str(token_file)], capture_output=True, text=True, timeout=60)
    assert shown.returncode == 0, shown.stderr
    lines = shown.stdout.splitlines()
    assert len(lines) == 2 and "DELETE /v1/services/audited" in lines[0] and "-> 401 refused" in lines[0]
    assert f"reader:{token_id(READER)}@127.0.0.1" in lines[1]
    assert os.environ.get("ROAM_TOKEN") != TOKEN  # the test never leaked it into the environment


async def test_a_record_saying_a_refused_service_runs_here_starts_nothing(fed: Federation) -> None:
    """A member holding the federation secret forges a version of t1's record saying the copy
    runs at t2 and pushes it by anti-entropy: t2 stores the record but its policy keeps it from
    starting the copy (the policy is checked at every local start, not only at the API)."""
    await fed.call("t1", "POST", "/v1/services", descriptor("forged", entries=1), expect=201)
    async with PeerClient(SECRET.encode()) as client:
        reply = await client.call(fed.agents["t1"].api, msg.PATH_FETCH, msg.fetch_request(sender="t1", names=["forged"]))
        [current] = msg.parse_records_reply(reply)
        forged = local_write(current, replace(current, location="t2"), here="t1", now=time.time(),
                             actor=actor_id("t1", "forger"))
        await client.call(fed.agents["t2"].api, msg.PATH_PUSH, msg.push_request(sender="t1", records=[rec.pack(forged)]))

    def refused_in_log() -> bool:
        return "AdoptLocalCopy on forged failed" in fed.agents["t2"].log_text() or \
            "could not restore forged" in fed.agents["t2"].log_text()

    await wait_until(refused_in_log, timeout=30, what="t2 refusing to start the forged copy")
    assert "does not accept services homed at 't1'" in fed.agents["t2"].log_text()
    assert await fed.get("t2", "/v1/instances") == []


async def test_entry_open_without_home_and_descriptor_is_refused_by_a_restrictive_cluster(fed: Federation) -> None:
    """An older caller (no home, no descriptor) cannot get an entry opened where a policy is set."""
    async with PeerClient(SECRET.encode()) as client:
        with pytest.raises(PeerRefused) as refused:
            await client.call(fed.agents["t2"].api, wire.ENTRY_OPEN, {"name": "bare", "incarnation": "1-x"})
        assert refused.value.status == 403 and refused.value.rule == "accept-from"
        opened = await client.call(fed.agents["t3"].api, wire.ENTRY_OPEN, {"name": "bare", "incarnation": "1-x"})
        assert isinstance(opened, dict) and "endpoint" in opened  # no policy: as before


async def test_failsafe_refused_by_the_steward_goes_where_placement_says(fed: Federation) -> None:
    """Last in this module (it restarts t1 and t2 and kills t3). The service runs at t3; t1, its
    HC and steward, now refuses its command, and t2 now accepts every home; t3 is lost: the
    fail-safe at t1 refuses to redeploy it at home (recorded with the rule, nothing started
    there) and redeploys it where placement says: t2."""
    await fed.call("t1", "POST", "/v1/services", descriptor("fs-svc", entries=2), expect=201)
    moved = await fed.call("t1", "POST", "/v1/services/fs-svc/migrate", {"target": "t3"})
    assert moved["outcome"] == "succeeded"
    t1, t2 = fed.agents["t1"], fed.agents["t2"]
    for agent, args in ((t1, [*t1.args, "--allow-command", "/usr/lib/nowhere"]),
                        (t2, [a for a in t2.args if a not in ("--accept-from", "t3", "--allow-command",
                                                               "/usr/lib/nowhere")])):
        agent.stop()
        agent.args = args
        start_and_wait(agent, timeout=40)
    assert (await fed.get("t1", "/v1/status"))["workload"]["allow_command"] == ["/usr/lib/nowhere"]
    assert (await fed.get("t2", "/v1/status"))["workload"]["accept_from"] is None

    async def t2_alive() -> bool:
        return await fed.member_status("t1", "t2") == "alive"

    await wait_until(t2_alive, timeout=40, what="t1 sees t2 alive again")
    fed.agents["t3"].kill()
    kill_left_behind(fed.agents["t3"].data_dir)  # the site is lost: its services and HAProxy too

    async def failsafes() -> list[dict[str, Any]] | None:
        found = [m for m in await fed.get("t1", "/v1/migrations") if m["service"] == "fs-svc" and m["kind"] == "failsafe"]
        return found if any(m["outcome"] == "succeeded" for m in found) else None

    history = await wait_until(failsafes, timeout=90, what="fs-svc redeployed by a fail-safe")
    record = await fed.get("t1", "/v1/services/fs-svc")
    assert record["location"] == "t2", record
    refused = [m for m in history if m["outcome"] == "failed"]
    assert refused and "allow-command" in refused[0]["error"], history
    assert any(m["outcome"] == "succeeded" and m["target"] == "t2" for m in history), history
    assert "fs-svc" not in [i["name"] for i in await fed.get("t1", "/v1/instances")]
    assert "fs-svc" in [i["name"] for i in await fed.get("t2", "/v1/instances")]
    host, port = record["endpoint"].rsplit(":", 1)  # the HC's entry reaches the new copy
    assert fed.session is not None
    async with fed.session.get(f"http://{host}:{port}/healthz", timeout=aiohttp.ClientTimeout(total=10)) as resp:
        assert resp.status == 200
