"""peer.links.probe against real parts on loopback 127.0.32.x (this area's addresses): a real
HAProxy carrying real traffic (passive evidence), real peer-API probes (signed, timed, counted),
and real agents (only a cluster with services to decide for probes, within its budget)."""
from __future__ import annotations

import itertools
import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from lb import LoadBalancer
from peer.links.estimate import OVERHEAD_BYTES, ProbeBudget, full_cost, record_probe
from peer.links.probe import LinkProbe, Responsibility
from peer.federation.membership import MemberView
from peer.peering.client import PeerClient, peer_auth_middleware
from peer.runtime.waiting import wait_until
from tests.harness import Federation, dump_logs, federation
from tests.lb.conftest import assert_no_haproxy

pytestmark = pytest.mark.integration

FRONT, SERVICE, PEER, NOBODY = "127.0.32.1", "127.0.32.2", "127.0.32.3", "127.0.32.4"
SECRET = b"link-probe-test-secret-0123456789"
BIG = bytes(1 << 20)
_ports = itertools.count(32200 + (os.getpid() % 40) * 20, 10)


def member(name: str, addr: str, port: int) -> MemberView:
    return MemberView(name=name, addr=addr, gossip_port=7946, status="alive", tier="edge", api_port=port,
                      scheme="http", load=None, tags={}, rtt_ms=None, since=0.0)


class Members:
    def __init__(self, *views: MemberView) -> None:
        self.views = {v.name: v for v in views}

    def all(self) -> list[MemberView]:
        return list(self.views.values())

    def get(self, name: str) -> MemberView | None:
        return self.views.get(name)


async def serve(app: web.Application, host: str, port: int) -> web.AppRunner:
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    return runner


@pytest.fixture
async def service() -> AsyncIterator[int]:
    """A copy at 'the peer': answers /big with 1 MiB."""
    async def big(request: web.Request) -> web.Response:
        return web.Response(body=BIG)

    app = web.Application()
    app.router.add_get("/big", big)
    port = next(_ports)
    runner = await serve(app, SERVICE, port)
    try:
        yield port
    finally:
        await runner.cleanup()


async def test_haproxy_traffic_confirms_a_stale_estimate(tmp_path: Path, service: int) -> None:
    """Bytes HAProxy carried to the copy at a peer are passive evidence: a stale estimate is
    confirmed without a probe, and HAProxy's connect/check times give an RTT."""
    start = next(_ports)
    lb = LoadBalancer(data_dir=tmp_path / "lb", bind_addr=FRONT, ports=range(start, start + 4), max_slots=2)
    await lb.start()
    try:
        _, port = await lb.open_frontend("svc")
        await lb.route("svc", SERVICE, service)
        clock = [1000.0]
        probe = LinkProbe(here="me", client=PeerClient(SECRET), members=Members(member("peer", SERVICE, 1)),
                          responsibilities=lambda: [Responsibility(hosts=("peer",), ranked=())], traffic=lb,
                          clock=lambda: clock[0])
        for i in range(3):
            record_probe(probe.link("peer"), 900.0 + i, 80.0)  # an old estimate: stale now
        assert probe.estimates()["peer"].age_s == pytest.approx(98.0)
        await probe.observe_traffic()  # the baseline read
        async with aiohttp.ClientSession() as s:
            for _ in range(10):
                async with s.get(f"http://{FRONT}:{port}/big") as r:
                    assert len(await r.read()) == len(BIG)
        rows = [r for r in await lb.traffic() if r.addr == SERVICE]
        assert rows and rows[0].bytes_out >= 10 * len(BIG) and rows[0].check_ms is not None
        clock[0] += 1.0  # 10 MiB in one (fake) second: 84 Mbit/s carried, more than half of 80
        await probe.observe_traffic()
        e = probe.estimates()["peer"]
        assert (e.source, e.age_s, e.rtt_ms is not None) == ("traffic", 0.0, True), e
        assert e.bandwidth_mbps is not None and e.bandwidth_mbps >= 80.0
        assert probe.probed_last_minute("peer") == 0  # confirmed without sending anything
    finally:
        await lb.stop()
        assert_no_haproxy(tmp_path / "lb")


async def test_probes_are_timed_counted_and_an_unreachable_peer_reads_zero() -> None:
    """A full probe (ping + padded request) against a real signed peer API measures a rate and
    counts its bytes; a peer that does not answer measures 0 at once."""
    app = web.Application(middlewares=[peer_auth_middleware(SECRET)], client_max_size=1 << 20)
    LinkProbe.add_routes(app)
    port = next(_ports)
    runner = await serve(app, PEER, port)
    counted: list[tuple[str, int]] = []
    client = PeerClient(SECRET)
    try:
        probe = LinkProbe(here="me", client=client, members=Members(member("p", PEER, port), member("q", NOBODY, port)),
                          responsibilities=lambda: [Responsibility(hosts=("p", "q"), ranked=())],
                          budget=ProbeBudget(), on_sent=lambda peer, n: counted.append((peer, n)))
        assert probe.wanted() == {"p", "q"}
        probe.probe_due_peers()
        await wait_until(lambda: probe.estimates()["p"].source == "probe"
                         and probe.estimates()["q"].source == "unreachable", timeout=10)
        e = probe.estimates()["p"]
        assert e.bandwidth_mbps is not None and e.bandwidth_mbps > 10.0  # loopback
        assert probe.estimates()["q"].bandwidth_mbps == 0.0
        assert probe.probed_last_minute("p") == full_cost(probe.budget)
        assert sum(n for peer, n in counted if peer == "q") == OVERHEAD_BYTES  # a failed ping: no big probe
        assert probe.probe_due_peers() == []  # p is fresh, q's next ping is not due yet: nothing is sent
        assert probe.probed_last_minute("p") == full_cost(probe.budget)
        assert probe.probed_last_minute("q") == OVERHEAD_BYTES
    finally:
        await client.close()
        await runner.cleanup()


AGENTS = {"lp1": "127.0.32.11", "lp2": "127.0.32.12", "lp3": "127.0.32.13"}
BUDGET = 140_000  # two full probes per peer per minute


async def links(fed: Federation, observer: str) -> dict[str, dict[str, object]]:
    return {m["name"]: m["link"] for m in await fed.get(observer, "/v1/members") if m["link"] is not None}


async def probe_bytes(fed: Federation, name: str) -> float:
    text = await fed.metrics(name)
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith("roam_link_probe_bytes_total{"))


async def test_only_a_cluster_with_services_probes_and_within_its_budget(tmp_path: Path) -> None:
    async with federation(tmp_path) as fed:
        seed = AGENTS["lp1"]
        for name, addr in AGENTS.items():
            fed.add(name, addr, join=None if addr == seed else [seed],
                    extra=["--auto-migrate", "--dwell", "3600", "--probe-budget", str(BUDGET)]).start()
        try:
            for name in AGENTS:
                await fed.wait_healthy(name)

            async def joined() -> bool:
                return all(m["status"] == "alive" for m in await fed.get("lp1", "/v1/members")) and \
                    len(await fed.get("lp1", "/v1/members")) == 3

            await wait_until(joined, timeout=20, what="three members")
            descriptor = {"name": "echo", "port": 8080, "cpu": 0.1, "memory": "32Mi", "entries": 1,
                          "health": {"path": "/healthz"},
                          "command": [sys.executable, "-m", "peer.samples", "classifier", "--host", "{host}",
                                      "--port", "{port}"]}
            record = await fed.call("lp1", "POST", "/v1/services", descriptor, expect=201)
            assert record["home"] == "lp1"

            async def measured() -> bool:
                seen = await links(fed, "lp1")
                return all(seen.get(p, {}).get("source") == "probe" for p in ("lp2", "lp3"))

            await wait_until(measured, timeout=30, what="lp1 measured its links to lp2 and lp3")
            seen = await links(fed, "lp1")
            for peer in ("lp2", "lp3"):
                assert 0 < int(seen[peer]["probed_bytes_last_minute"]) <= BUDGET  # type: ignore[call-overload]
                assert float(seen[peer]["bandwidth_mbps"]) > 0  # type: ignore[arg-type]
            # lp2 and lp3 decide for nothing: they never probe.
            assert await probe_bytes(fed, "lp2") == 0 and await probe_bytes(fed, "lp3") == 0
            assert await probe_bytes(fed, "lp1") > 0
        except BaseException:
            print(dump_logs(fed))
            raise
