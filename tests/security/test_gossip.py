"""Gossip security with real agents and real Serf: outsiders cannot join, inject events or use
the RPC; key rotation through `roam keys rotate` keeps the federation gossiping.

g1-g3 run on 127.0.6.11-13; outsiders (bare `serf agent`s) on 127.0.6.21-22; g4 (.14) comes
later to show that a new agent needs the current keyring, not just the federation secret.
"""
from __future__ import annotations

import asyncio
import base64
import json
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from peer.federation.keyrotation import fingerprint
from peer.serf.client import SerfClient
from peer.serf.codec import UserEvent
from peer.serf.errors import SerfAuthError, SerfCommandError
from peer.serf.keys import derive_encrypt_key, derive_rpc_auth
from peer.serf.process import KEYRING_NAME, SerfConfig, SerfProcess
from peer.runtime.waiting import wait_until
from tests.harness import SECRET, TOKEN, AgentProc, Federation
from tests.security.client import Client
from tests.security.conftest import start_and_wait, stop_all

pytestmark = pytest.mark.integration

ADDRS = {"g1": "127.0.6.11", "g2": "127.0.6.12", "g3": "127.0.6.13", "g4": "127.0.6.14"}
RPC_AUTH = derive_rpc_auth(SECRET.encode())


def _random_key() -> str:
    return base64.b64encode(os.urandom(32)).decode()


@pytest.fixture(scope="module")
def trio(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Federation]:
    fed = Federation(base=tmp_path_factory.mktemp("gossip"))
    try:
        for name in ("g1", "g2", "g3"):
            start_and_wait(fed.add(name, ADDRS[name], join=[] if name == "g1" else [ADDRS["g1"]]))
        yield fed
    finally:
        stop_all(fed)
        for agent in fed.agents.values():  # a SIGKILLed agent leaves its HAProxy (by design)
            _kill_pidfile(agent.data_dir / "lb" / "haproxy.pid")


def _kill_pidfile(path: Path) -> None:
    try:
        pid = int(path.read_text().split()[0])
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            if b"haproxy" not in fh.read():
                return
        os.kill(pid, signal.SIGTERM)
    except (OSError, ValueError, IndexError):
        pass


@pytest.fixture
async def clients(trio: Federation) -> AsyncIterator[dict[str, Client]]:
    out = {name: Client(agent.api) for name, agent in trio.agents.items()}
    try:
        yield out
    finally:
        for c in out.values():
            await c.close()


async def member_names(client: Client, status: str = "alive") -> set[str]:
    return {m["name"] for m in await client.get_json("/v1/members") if m["status"] == status}


async def serf_rpc(name: str) -> SerfClient:
    return await SerfClient.connect(ADDRS[name], 7373, auth_key=RPC_AUTH)


def outsider(tmp: Path, host: int, *, key: str) -> SerfProcess:
    """A bare Serf agent that is not one of ours: `key` "" means no encryption at all."""
    return SerfProcess(SerfConfig(node_name=f"outsider{host}", bind_addr=f"127.0.6.{host}", data_dir=tmp / f"o{host}",
                                  encrypt_key=key, rpc_auth="outsider-rpc-token", keyring_file=False))


async def test_outsiders_without_the_key_cannot_join_nor_inject_events(
        trio: Federation, clients: dict[str, Client], tmp_path: Path) -> None:
    await wait_until(lambda: _all_see(clients, {"g1", "g2", "g3"}), timeout=30, what="trio formed")
    observer = await serf_rpc("g1")
    seen: list[UserEvent] = []
    stream = await observer.stream("user")
    try:
        for host, key in ((21, ""), (22, _random_key())):
            intruder = outsider(tmp_path, host, key=key)
            await intruder.start()
            try:
                rpc = await intruder.client()
                for target in ("g1", "g2", "g3"):
                    with pytest.raises(SerfCommandError, match="encrypt|decrypt"):
                        await rpc.join([f"{ADDRS[target]}:7946"])
                await rpc.user_event("roam-evil", b"from outside", coalesce=False)
                assert [m.name for m in await rpc.members()] == [f"outsider{host}"]
                await rpc.close()
            finally:
                await intruder.stop()
        # A legitimate event sent after the outsiders' is delivered: by then theirs would have been.
        member = await serf_rpc("g2")
        await member.user_event("roam-legit", b"from inside", coalesce=False)
        await member.close()

        async def legit_arrived() -> bool:
            async with asyncio.timeout(0.5):
                event = await stream.__anext__()
            if isinstance(event, UserEvent):
                seen.append(event)
            return any(e.name == "roam-legit" for e in seen)

        await wait_until(legit_arrived, timeout=15, what="the legitimate user event")
    finally:
        await stream.close()
        await observer.close()
    assert [e.name for e in seen] == ["roam-legit"]
    for c in clients.values():
        members = await c.get_json("/v1/members")
        assert sorted(m["name"] for m in members) == ["g1", "g2", "g3"], members


async def _all_see(clients: dict[str, Client], names: set[str]) -> bool:
    for c in clients.values():
        if await member_names(c) != names:
            return False
    return True


async def test_serf_rpc_refuses_outsiders_and_listens_only_on_the_agent_address(trio: Federation) -> None:
    for auth in (None, "wrong-token", derive_rpc_auth(b"another federation's secret"), RPC_AUTH.upper(), ""):
        with pytest.raises(SerfAuthError):
            client = await SerfClient.connect(ADDRS["g1"], 7373, auth_key=auth, timeout=5)
            try:
                await client.members()  # without auth, only the handshake passes
            finally:
                await client.close()
    listening = _listening_ports(trio.agents["g1"])
    assert listening, "no listening sockets found for g1's processes"
    assert {addr for addr, _ in listening} == {ADDRS["g1"]}, listening
    assert {7070, 7946, 7373} <= {port for _, port in listening}, listening


def _listening_ports(agent: AgentProc) -> set[tuple[str, int]]:
    """TCP listeners of the agent's process group other than HAProxy's (frontends, stats socket)."""
    assert agent.proc is not None
    out = subprocess.run(["ss", "-Hltnp"], check=True, capture_output=True, text=True).stdout
    pids = {agent.proc.pid, *_children(agent.proc.pid)}
    found = set()
    for line in out.splitlines():
        if any(f"pid={pid}," in line for pid in pids) and "haproxy" not in line:
            local = line.split()[3]
            host, _, port = local.rpartition(":")
            found.add((host.strip("[]"), int(port)))
    return found


def _children(pid: int) -> list[int]:
    out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(pid)], capture_output=True, text=True).stdout
    return [int(p) for p in out.split()]


def _roam(*args: str) -> Any:
    proc = subprocess.run([sys.executable, "-m", "peer.cli", *args, "--json"], capture_output=True, text=True,
                          timeout=60, env={**os.environ, "ROAM_TOKEN": TOKEN})
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def _keyring(agent: AgentProc) -> list[str]:
    keys: list[str] = json.loads((agent.data_dir / "serf" / KEYRING_NAME).read_text())
    return keys


async def test_key_rotation_keeps_the_federation_gossiping_and_locks_out_the_old_key(
        trio: Federation, clients: dict[str, Client], tmp_path: Path) -> None:
    await wait_until(lambda: _all_see(clients, {"g1", "g2", "g3"}), timeout=30, what="trio formed")
    derived = derive_encrypt_key(SECRET.encode())
    before = _roam("keys", "list", "--api", trio.agents["g2"].api)
    assert before["keys"] == [{"fingerprint": fingerprint(derived), "members": 3}]

    rotation = _roam("keys", "rotate", "--api", trio.agents["g1"].api)
    assert rotation["removed"] == [fingerprint(derived)] and rotation["members"] == 3
    for name in ("g1", "g2", "g3"):  # the same single new key everywhere, persisted by Serf
        listed = await clients[name].get_json("/v1/keys")
        assert listed["keys"] == [{"fingerprint": rotation["new"], "members": 3}], listed
        ring = _keyring(trio.agents[name])
        assert len(ring) == 1 and fingerprint(ring[0]) == rotation["new"]
        assert ring[0] not in json.dumps(rotation) + json.dumps(listed)  # fingerprints only, never keys
    new_key = _keyring(trio.agents["g1"])[0]

    # Still gossiping under the new key: a killed member is detected...
    trio.agents["g3"].kill(signal.SIGKILL)
    await wait_until(lambda: _sees_failed(clients["g1"], "g3"), timeout=30, what="g3 detected as failed")
    # ...and rotating now is refused: g3 would come back with a key nobody uses any more.
    refused = await clients["g1"].admin("POST", "/v1/keys/rotate", {})
    assert refused.status == 409 and "g3" in refused.json["error"], refused.raw
    assert _keyring(trio.agents["g1"]) == [new_key]
    # g3 restarts from its persisted keyring and is back under the new key.
    start_and_wait(trio.agents["g3"])
    await wait_until(lambda: _sees_alive(clients["g1"], "g3"), timeout=30, what="g3 back after restart")
    assert _keyring(trio.agents["g3"]) == [new_key]

    # An outsider holding the old (derived) key cannot join any more.
    intruder = outsider(tmp_path, 22, key=derived)
    await intruder.start()
    try:
        rpc = await intruder.client()
        with pytest.raises(SerfCommandError, match="decrypt"):
            await rpc.join([f"{ADDRS['g1']}:7946"])
        await rpc.close()
    finally:
        await intruder.stop()

    # Operational caveat (docs/security.md): a new agent with only the federation secret derives
    # the old key and stays outside; seeded with a current keyring file it joins.
    g4 = trio.add("g4", ADDRS["g4"], join=[ADDRS["g1"]])
    start_and_wait(g4)
    g4_client = Client(g4.api)
    try:
        serf_log = g4.data_dir / "serf" / "serf.log"
        await wait_until(lambda: "No installed keys could decrypt" in serf_log.read_text(errors="replace"),
                         timeout=20, what="g4's join refused for its key")
        assert await member_names(g4_client) == {"g4"}
        assert "g4" not in await member_names(clients["g1"])
        g4.stop()
        shutil.copy(trio.agents["g1"].data_dir / "serf" / KEYRING_NAME, g4.data_dir / "serf" / KEYRING_NAME)
        start_and_wait(g4)
        await wait_until(lambda: _sees_alive(clients["g1"], "g4"), timeout=30, what="g4 joined with the keyring")
        assert _keyring(g4) == [new_key]
    finally:
        await g4_client.close()


async def _sees_failed(client: Client, name: str) -> bool:
    return name in await member_names(client, "failed")


async def _sees_alive(client: Client, name: str) -> bool:
    return name in await member_names(client, "alive")
