"""The link estimate's I/O: passive evidence from HAProxy's counters and Serf's coordinates,
and small budgeted probes over the peer API towards the peers a decision reads. The rules
(what counts as evidence, when a probe is due, the byte budget) are `peer.links.estimate`'s;
this module only gathers, sends and times.

Who reads it: the placement views (`Agent.cluster_views`: the policy triggers' `decide` and
every placement), and `GET /v1/members` (the dashboard's links, field `link`).
"""
from __future__ import annotations

import asyncio
import logging
import time
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from aiohttp import web

from lb.errors import LBError
from lb.runtime import ServerTraffic
from peer.links.estimate import (OVERHEAD_BYTES, Estimate, LinkState, ProbeBudget, ProbeKind, estimate,
                               measured, peers_that_matter, probe_due, record_ping, record_probe,
                               record_response_time, record_traffic, record_traffic_rtt, record_unreachable,
                               sent, spent)
from peer.federation.membership import MemberView
from peer.peering.client import PeerClient, PeerError, msgpack_response, read_msgpack
from peer.federation.metaorchestrator import requirements
from peer.runtime.supervision import Supervisor
from placement import ClusterView, PlacementError, rank

if TYPE_CHECKING:
    from peer.records.record import Record
    from peer.copies.manager import ServiceManager

log = logging.getLogger(__name__)

PROBE = "/peer/v1/probe"
TICK = 1.0  # seconds between two looks at what is due
TRAFFIC_EVERY = 2.0  # seconds between two reads of HAProxy's counters
WANTED_EVERY = 5.0  # seconds between two computations of the peers that matter
PING_TIMEOUT = 2.0
PROBE_TIMEOUT = 5.0  # a 64 KiB probe that takes longer measured a link below 0.1 Mbit/s


class TrafficSource(Protocol):
    """HAProxy's per-server counters (`lb.LoadBalancer.traffic`)."""

    async def traffic(self) -> list[ServerTraffic]: ...


class Members(Protocol):
    """The gossiped membership (`peer.federation.membership.Membership`)."""

    def all(self) -> list[MemberView]: ...

    def get(self, name: str) -> MemberView | None: ...


@dataclass(frozen=True)
class Responsibility:
    """One service this cluster decides for: where its copies run, and its placement ranking."""

    hosts: tuple[str, ...]
    ranked: tuple[str, ...]


class LinkProbe:
    """Per-peer link estimates (module doc); `run` keeps them fresh for the peers that matter."""

    def __init__(self, *, here: str, client: PeerClient, members: Members,
                 responsibilities: Callable[[], Iterable[Responsibility]],
                 traffic: TrafficSource | None = None, budget: ProbeBudget | None = None,
                 candidates: int = 3, on_sent: Callable[[str, int], None] | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.here = here
        self.client = client
        self.members = members
        self.responsibilities = responsibilities
        self.traffic = traffic
        self.budget = budget or ProbeBudget()
        self.candidates = candidates
        self.on_sent = on_sent
        self.clock = clock
        self._links: defaultdict[str, LinkState] = defaultdict(LinkState)
        self._payload = bytes(self.budget.probe_bytes)
        self._inflight: dict[str, asyncio.Task[None]] = {}
        self._jobs = Supervisor(f"{here}:link-probe")  # the probes in flight (`_done` reports them)
        self._counters: dict[tuple[str, str, str, int], tuple[int, int]] = {}
        self._counted_at: float | None = None
        self._wanted: frozenset[str] = frozenset()
        self._wanted_at = -WANTED_EVERY

    # -- what the rest of the agent reads ----------------------------------------------------
    def estimates(self) -> dict[str, Estimate]:
        now = self.clock()
        out: dict[str, Estimate] = {}
        for m in self.members.all():
            if m.name == self.here:
                continue
            state = self._links.get(m.name)
            out[m.name] = estimate(state or LinkState(), now, budget=self.budget, serf_rtt_ms=m.rtt_ms)
        return out

    def bandwidth(self) -> dict[str, float]:
        """Estimated Mbit/s to each peer with an estimate (0 for one that does not answer).
        Read by every placement: it looks only at the peers ever measured, not at every member."""
        now = self.clock()
        out: dict[str, float] = {}
        for peer, state in self._links.items():
            bw = estimate(state, now, budget=self.budget).bandwidth_mbps
            if bw is not None:
                out[peer] = bw
        return out

    def link(self, peer: str) -> LinkState:
        """The mutable evidence about one peer (for diagnostics and tests)."""
        return self._links[peer]

    def probed_last_minute(self, peer: str) -> int:
        """Bytes the probe sent towards `peer` in the last 60 s (for the API and the tests)."""
        state = self._links.get(peer)
        return 0 if state is None else spent(state, self.clock())

    def wanted(self) -> frozenset[str]:
        """The peers that matter now (`peers_that_matter`), recomputed every WANTED_EVERY."""
        now = self.clock()
        if now - self._wanted_at >= WANTED_EVERY:
            duties = list(self.responsibilities())
            self._wanted = peers_that_matter(here=self.here, hosts=[h for d in duties for h in d.hosts],
                                             rankings=[d.ranked for d in duties], candidates=self.candidates)
            self._wanted_at = now
        return self._wanted

    # -- the loop ------------------------------------------------------------------------------
    async def run(self) -> None:
        next_traffic = self.clock()
        try:
            while True:
                await asyncio.sleep(TICK)
                if self.traffic is not None and self.clock() >= next_traffic:
                    next_traffic = self.clock() + TRAFFIC_EVERY
                    await self.observe_traffic()
                self.probe_due_peers()
        finally:
            for task in self._inflight.values():
                task.cancel()
            await asyncio.gather(*self._inflight.values(), return_exceptions=True)
            self._inflight.clear()

    def probe_due_peers(self) -> list[str]:
        """Start a probe towards every peer that matters and is due (never two at once to one);
        the peers probed."""
        now = self.clock()
        started: list[str] = []
        for peer in sorted(self.wanted()):
            member = self.members.get(peer)
            if member is None or member.status != "alive" or member.peer_url is None or peer in self._inflight:
                continue
            kind = probe_due(self._links[peer], now, budget=self.budget)
            if kind is not None:
                task = self._jobs.spawn(self.probe(peer, member.peer_url, kind), name=f"probe:{peer}", report=False)
                self._inflight[peer] = task
                task.add_done_callback(self._done)
                started.append(peer)
        return started

    def _done(self, task: asyncio.Task[None]) -> None:
        for peer, t in list(self._inflight.items()):
            if t is task:
                del self._inflight[peer]
        if not task.cancelled() and task.exception() is not None:
            log.error("link probe failed", exc_info=task.exception())

    async def probe(self, peer: str, url: str, kind: ProbeKind) -> None:
        """A ping, and for a full probe the padded request right after it (module doc of
        peer.links.estimate: the ping's time is subtracted)."""
        state = self._links[peer]
        started = self._send(peer, state, OVERHEAD_BYTES)
        try:
            await self.client.call(url, PROBE, {"pad": b""}, timeout=PING_TIMEOUT)
        except PeerError as exc:
            log.debug("link probe: %s does not answer a ping: %s", peer, exc)
            record_unreachable(state, self.clock(), sent_bytes=OVERHEAD_BYTES, waited_s=self.clock() - started)
            return
        pinged = self.clock()
        ping_s = pinged - started
        if kind == "ping":
            record_ping(state, pinged)
            return
        size = self.budget.probe_bytes
        self._send(peer, state, size + OVERHEAD_BYTES)
        try:
            await self.client.call(url, PROBE, {"pad": self._payload}, timeout=PROBE_TIMEOUT)
        except PeerError as exc:
            # A timeout after a good ping says "slower than this"; any other failure, that the
            # peer stopped answering.
            timed_out = isinstance(exc.__cause__, TimeoutError)
            log.info("link probe: %s did not take %d bytes: %s", peer, size, exc)
            record_unreachable(state, self.clock(), sent_bytes=size if timed_out else OVERHEAD_BYTES,
                               waited_s=self.clock() - pinged)
            return
        done = self.clock()
        record_probe(state, done, measured(ping_s, done - pinged, size))

    def _send(self, peer: str, state: LinkState, size: int) -> float:
        now = self.clock()
        sent(state, now, size)
        if self.on_sent is not None:
            self.on_sent(peer, size)
        return now

    async def observe_traffic(self) -> None:
        """Fold HAProxy's counters since the last read into the estimates (passive evidence)."""
        assert self.traffic is not None
        try:
            rows = await self.traffic.traffic()
        except LBError as exc:
            log.debug("link estimate: no HAProxy counters: %s", exc)
            return
        now = self.clock()
        interval = None if self._counted_at is None else now - self._counted_at
        self._counted_at = now
        by_addr = {m.addr: m.name for m in self.members.all() if m.name != self.here}
        carried: defaultdict[str, int] = defaultdict(int)
        counters: dict[tuple[str, str, str, int], tuple[int, int]] = {}
        for row in rows:
            peer = by_addr.get(row.addr)
            if peer is None:
                continue  # a copy in this cluster, or an address no member has
            key = (row.backend, row.name, row.addr, row.port)
            counters[key] = (row.bytes_in, row.bytes_out)
            before = self._counters.get(key)
            if before is not None and row.bytes_in >= before[0] and row.bytes_out >= before[1]:
                carried[peer] += max(row.bytes_in - before[0], row.bytes_out - before[1])
            state = self._links[peer]
            if row.rtime_ms is not None and row.rtime_ms > 0:
                record_response_time(state, row.rtime_ms)
            rtt = row.ctime_ms if row.ctime_ms else row.check_ms
            if rtt is not None:
                record_traffic_rtt(state, float(rtt))
        self._counters = counters
        if interval is not None:
            for peer, nbytes in carried.items():
                record_traffic(self._links[peer], now, carried_bytes=nbytes, interval_s=interval, budget=self.budget)

    @staticmethod
    def add_routes(app: web.Application) -> None:
        async def probe(request: web.Request) -> web.Response:
            await read_msgpack(request)
            return msgpack_response({"ok": True})

        app.router.add_post(PROBE, probe)


class DutyAgent(Protocol):
    """What `stewarded` reads of the agent."""

    here: str
    services: ServiceManager | None

    def steward_of(self, record: Record) -> str | None: ...

    def cluster_views(self) -> dict[str, ClusterView]: ...


def stewarded(agent: DutyAgent) -> list[Responsibility]:
    """The services whose policy decisions this cluster takes (it is their steward, as the
    policy triggers read it), each with its hosts and its placement ranking."""
    if agent.services is None:
        return []
    views = None
    out: list[Responsibility] = []
    for record in agent.services.records():
        if record.tombstone or agent.steward_of(record) != agent.here:
            continue
        views = views if views is not None else agent.cluster_views()
        try:
            req = requirements(agent.services.descriptor_of(record), home=record.home)
            ranked = tuple(c.name for c in rank(req, views.values(), home=record.home).ranked)
        except (PlacementError, ValueError) as exc:
            log.debug("link probe: no ranking for %s: %s", record.name, exc)
            ranked = ()
        out.append(Responsibility(hosts=(record.location, *record.standby_clusters), ranked=ranked))
    return out
