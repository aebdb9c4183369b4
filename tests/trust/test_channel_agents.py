"""Channel authority with three real agents, automatic identity on (the default), on loopback
(127.0.151.x): a cluster's own version reaches a peer on the authority of its mTLS certificate
(counted in roam_record_versions_channel_total); a version one cluster relays for another is
still verified, so a forged one is refused; and a cluster's own version whose signature is not
its own, taken on its channel's word, is found by the audit before it is relayed, undone, never
reaches the third cluster, and its sender's versions are checked one by one from then on."""
from __future__ import annotations

import sqlite3
import ssl
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from peer.peering.client import PeerClient
from peer.records import messages as msg
from peer.records import record as rec
from peer.records.merge import local_write
from peer.records.record import Record
from peer.runtime.waiting import wait_until
from peer.trust import signing
from peer.trust.authorship import sign_with
from tests.harness import SECRET, TOKEN, Federation, dump_logs, federation
from tests.trust.test_mtls_agents import CertTLS

pytestmark = pytest.mark.integration

ADDRS = {"c1": "127.0.151.11", "c2": "127.0.151.12", "c3": "127.0.151.13"}
BARE = ["--no-auto-migrate", "--ca-keepers", "1"]  # identity is automatic
CLASSIFIER = [sys.executable, "-m", "peer.samples.classifier", "--host", "{host}", "--port", "{port}"]


def held(base: Path, cluster: str, name: str) -> Record | None:
    conn = sqlite3.connect(f"file:{base / cluster / 'records.sqlite3'}?mode=ro", uri=True)
    try:
        row = conn.execute("SELECT data FROM records WHERE name=?", (name,)).fetchone()
    finally:
        conn.close()
    return None if row is None else rec.unpack(row[0])


def holder(base: Path, cluster: str) -> CertTLS:
    """A peer client holding `cluster`'s certificate and key from its data dir."""
    ctx = ssl.create_default_context(cafile=str(base / "c1" / "identity" / "ca.pem"))
    ctx.check_hostname = False
    d = base / cluster / "identity"
    ctx.load_cert_chain(d / "cluster.pem", d / "cluster.key")
    return CertTLS(ctx)


async def push(base: Path, *, cert: str, to: str, records: list[Record]) -> list[Record]:
    async with PeerClient(SECRET.encode(), sender=cert, tls=holder(base, cert)) as client:
        reply = await client.call(f"https://{ADDRS[to]}:7071", msg.PATH_PUSH,
                                  msg.push_request(sender=cert, records=[rec.pack(r) for r in records]))
    return msg.parse_records_reply(reply)


async def counters(fed: Federation, name: str) -> dict[str, float]:
    """roam_record_versions_refused_total by reason, and the channel counter as 'channel'."""
    assert fed.session is not None
    async with fed.session.get(fed.agents[name].api + "/metrics", headers={"Authorization": f"Bearer {TOKEN}"}) as r:
        text = await r.text()
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("roam_record_versions_refused_total{"):
            out[line.split('reason="')[1].split('"')[0]] = float(line.rsplit(" ", 1)[1])
        elif line.startswith("roam_record_versions_channel_total "):
            out["channel"] = float(line.rsplit(" ", 1)[1])
    return out


def falsely_signed(honest: Record, actor: str) -> Record:
    """`actor`'s cluster's write on top of `honest`, signed with a key that is no cluster's."""
    stored = local_write(honest, honest, here=actor.partition("~")[0], now=time.time(), actor=actor)
    stray = ec.generate_private_key(ec.SECP256R1())
    return signing.sign_write(honest, stored, actor=actor, sign=lambda m: sign_with(stray, m))


async def test_own_versions_on_the_channel_relayed_ones_verified_a_false_own_one_undone(tmp_path: Path) -> None:
    async with federation(tmp_path) as fed:
        fed.add("c1", ADDRS["c1"], extra=BARE).start()
        for name in ("c2", "c3"):
            fed.add(name, ADDRS[name], join=[ADDRS["c1"]], extra=BARE).start()
        try:
            for name in ADDRS:
                await fed.wait_healthy(name, timeout=60)
            await fed.wait_formed(ADDRS, timeout=60)
        except Exception:
            print(dump_logs(fed)[-6000:])
            raise
        await fed.call("c1", "POST", "/v1/services", {"name": "victim", "port": 8080, "health": {"path": "/healthz"},
                                                       "command": CLASSIFIER, "entries": 3}, expect=201)

        async def alike() -> Record | None:
            versions = [held(tmp_path, n, "victim") for n in ADDRS]
            first = versions[0]
            return first if first is not None and first.state.value == "running" and \
                all(v == first for v in versions) else None

        found = await wait_until(alike, timeout=60, what="victim running and held alike by c1, c2, c3")
        assert isinstance(found, Record)
        honest = found
        assert honest.writer is not None and honest.signature, "automatic identity: versions are signed"
        # versions reached c2 and c3 on their writers' channels (anti-entropy pushes, fetch replies)
        counts = {n: await counters(fed, n) for n in ADDRS}
        assert all(counts[n].get("channel", 0) > 0 for n in ("c2", "c3")), counts
        assert all(set(c) <= {"channel"} for c in counts.values()), f"nothing refused: {counts}"

        # A relayed version is still verified: c2 hands c3 a version in c1's name, falsely signed.
        c1_actor = next((e.node for e in honest.vclock.entries if e.node.partition("~")[0] == "c1"), "c1")
        relayed = falsely_signed(honest, c1_actor)
        channel_before = (await counters(fed, "c3")).get("channel", 0)
        assert await push(tmp_path, cert="c2", to="c3", records=[relayed]) == [honest]
        assert (await counters(fed, "c3")).get("bad-signature") == 1
        assert (await counters(fed, "c3")).get("channel", 0) == channel_before
        assert held(tmp_path, "c3", "victim") == honest

        # c2's own version, falsely signed, on c2's own channel: c1 takes it on the channel's word...
        own = falsely_signed(honest, "c2")
        assert await push(tmp_path, cert="c2", to="c1", records=[own]) == []
        # ... and the audit before c1 relays anything to c3 finds it false and undoes it.
        logs = fed.agents["c1"].log_path

        async def undone() -> bool:
            return "versions undone" in logs.read_text(errors="replace") and held(tmp_path, "c1", "victim") == honest

        try:
            await wait_until(undone, timeout=60, what="c1 undoing c2's falsely signed version")
        except Exception:
            print(dump_logs(fed)[-8000:])
            raise
        text = logs.read_text(errors="replace")
        assert "cluster c2 sent a version of victim whose own stamp does not verify" in text
        assert (await counters(fed, "c1")).get("channel-bad-signature") == 1
        assert (await counters(fed, "c3")).get("bad-signature") == 1, "c3 never received it from c1"
        assert held(tmp_path, "c3", "victim") == honest
        # From now on c1 checks c2's versions one by one: the same push is refused outright.
        assert await push(tmp_path, cert="c2", to="c1", records=[own]) == [honest]
        assert (await counters(fed, "c1")).get("bad-signature", 0) >= 1
        assert held(tmp_path, "c1", "victim") == honest
