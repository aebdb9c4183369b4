"""Gossip: the agent's own Serf child, its RPC connection, and the loops that keep the view current.

Serf alone re-merges a healed partition only every `reconnect_interval` and forgets failed
peers after a day, so the agent re-joins failed peers itself every couple of seconds.
Membership is fed by the event stream, plus a cheap poll for fast failure detection (Serf
coalesces member events for about a second).

The idle cost must not grow with the federation (issue 18): the fast poll asks Serf only for
the clusters this one has business with (`watched`: the entries, locations and standbys its
records name), with `members-filtered`; the whole list is read only every
`FULL_POLL_INTERVAL` (reaped members, a safety net), or every `LONELY_POLL_INTERVAL` while
this cluster sees nobody else alive (a rebuilt site finding its federation). Coordinates are
read for the watched clusters plus a small rotating sweep of the others (the dashboard's RTT
column fills in over a few rounds).

Serf answers the requests of one RPC connection in order, and a `join` towards a cut-off peer
blocks for seconds (a `tags` call for hundreds of ms): so the agent keeps four connections,
for the event stream, for joins, for tags and leave, and for fast reads (members,
coordinates), and a partition never stalls failure detection or load gossip.
"""
from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import time
from collections.abc import Awaitable, Callable, Iterable
from pathlib import Path

from peer.config import AgentConfig
from peer.federation.tags import Load, SelfTags, meaningful_change
from peer.federation.membership import Membership, StatusChange
from peer.runtime.metrics import Metrics
from peer.serf.client import SerfClient
from peer.serf.codec import MemberEvent, QueryEvent, UserEvent
from peer.serf.coordinates import rtt_seconds
from peer.serf.errors import SerfRPCError
from peer.serf.keys import derive_encrypt_key, derive_rpc_auth
from peer.serf.process import SerfConfig, SerfProcess
from peer.runtime.supervision import Supervisor
from peer.runtime.waiting import wait_set

log = logging.getLogger(__name__)

StatusListener = Callable[[StatusChange], Awaitable[None]]
UserEventListener = Callable[[UserEvent], Awaitable[None]]

POLL_INTERVAL = 0.25
FULL_POLL_INTERVAL = 30.0
LONELY_POLL_INTERVAL = 1.0
COORD_INTERVAL = 2.0
COORD_SWEEP = 3  # unwatched members whose coordinate is read per round
REJOIN_INTERVAL = 2.0
TAG_MIN_INTERVAL = 1.0
KNOWN_PEERS = "known-peers.json"


class Gossip:
    def __init__(
        self,
        *,
        config: AgentConfig,
        secret: bytes,
        membership: Membership,
        metrics: Metrics,
        initial_load: Load,
        watched: Callable[[], Iterable[str]] = frozenset,
        peer_port: int | None = None,
        keeps_ca: bool = False,
        ca_id: str | None = None,
    ) -> None:
        self.config = config
        self._watched = watched  # the clusters this one has business with (fast failure detection)
        self._sweep = 0  # rotating position of the coordinate sweep over unwatched members
        self.membership = membership
        self.metrics = metrics
        self._rpc_auth = derive_rpc_auth(secret)
        self._load = initial_load
        self._published: Load | None = None
        self._tags_dirty = asyncio.Event()
        self._draining = False
        self.peer_port = peer_port  # the mTLS peer listener, advertised (`pp`: peer.trust.auto)
        self.keeps_ca = keeps_ca  # this cluster keeps the automatic federation CA (`ca` tag)
        self.ca_id = ca_id  # the automatic CA this cluster's certificate is from (`cid` tag)
        self._serf = SerfProcess(
            SerfConfig(
                node_name=config.name,
                bind_addr=config.addr,
                bind_port=config.gossip_port,
                rpc_port=config.rpc_port,
                data_dir=config.data_dir / "serf",
                encrypt_key=derive_encrypt_key(secret),
                rpc_auth=self._rpc_auth,
                tags=self._self_tags().encode(),
            ),
            binary=config.serf_binary,
        )
        self._client: SerfClient | None = None  # fast reads: members, coordinates, user events
        self._slow: SerfClient | None = None  # tags, leave: hundreds of ms
        self._joiner: SerfClient | None = None  # join: seconds towards a cut-off peer
        self._events: SerfClient | None = None  # the event stream
        self._connected = asyncio.Event()
        self._loops = Supervisor(config.name)  # its loops (restarted after a failure) and the join
        self._status_listeners: list[StatusListener] = []
        self._event_listeners: list[UserEventListener] = []
        self._known_path = config.data_dir / KNOWN_PEERS
        self._stopping = False
        self._join_task: asyncio.Task[None] | None = None

    # -- lifecycle -------------------------------------------------------------------------
    async def start(self) -> None:
        await self._serf.start()
        await self._connect()
        await self._refresh_members()
        self._loops.spawn(self._supervise(), name="serf-supervisor")  # restarts Serf itself; ends on stop
        for name, run in (
            ("serf-stream", self._stream_loop),
            ("members-poll", self._poll_loop),
            ("coordinates", self._coordinate_loop),
            ("rejoin", self._rejoin_loop),
            ("tags", self._tag_loop),
        ):
            self._loops.loop(name, run)

    async def stop(self, *, leave: bool = True) -> None:
        self._stopping = True
        if leave and self._slow is not None and not self._slow.closed:
            with contextlib.suppress(SerfRPCError, asyncio.TimeoutError, OSError):
                await asyncio.wait_for(self._slow.leave(), timeout=3.0)
        await self._loops.stop()
        await self._close_clients()
        await self._serf.stop()

    def on_status_change(self, listener: StatusListener) -> None:
        self._status_listeners.append(listener)

    def on_user_event(self, listener: UserEventListener) -> None:
        self._event_listeners.append(listener)

    @property
    def serf_pid(self) -> int | None:
        return self._serf.pid

    # -- publishing ------------------------------------------------------------------------
    def _self_tags(self) -> SelfTags:
        scheme = "https" if self.config.tls else "http"
        return SelfTags(tier=self.config.tier, api_port=self.config.api_port, load=self._load, scheme=scheme,
                        draining=self._draining, accepts=self.config.workload.accept_from,
                        peer_port=self.peer_port, ca=self.keeps_ca, ca_id=self.ca_id)

    def set_keeps_ca(self) -> None:
        """This cluster now keeps the automatic federation CA too (a deputy, peer.trust.keepers)."""
        self.keeps_ca = True
        self._tags_dirty.set()

    def set_draining(self) -> None:
        """Tell peers this cluster is being drained (`POST /v1/drain`): not a placement target."""
        self._draining = True
        self._tags_dirty.set()

    def set_load(self, load: Load) -> None:
        """Record the current load; published on meaningful change, at most once a second."""
        self._load = load
        if meaningful_change(self._published, load):
            self._tags_dirty.set()

    @property
    def load(self) -> Load:
        return self._load

    async def user_event(self, name: str, payload: bytes, *, coalesce: bool = True) -> None:
        client = await self._ready_client()
        await client.user_event(name, payload, coalesce=coalesce)

    async def join(self, addrs: list[str]) -> int:
        client = await self._ready_client(join=True)
        return await client.join(addrs)

    async def rtt_ms(self, a: str, b: str) -> float | None:
        client = await self._ready_client()
        ca, cb = await client.get_coordinate(a), await client.get_coordinate(b)
        if ca is None or cb is None:
            return None
        return rtt_seconds(ca, cb) * 1000.0

    # -- internals -------------------------------------------------------------------------
    async def _connect(self) -> None:
        self._connected.clear()
        connect = SerfClient.connect
        addr, port, key = self.config.addr, self.config.rpc_port, self._rpc_auth
        self._client = await connect(addr, port, auth_key=key)
        self._slow = await connect(addr, port, auth_key=key)
        self._joiner = await connect(addr, port, auth_key=key)
        self._events = await connect(addr, port, auth_key=key)
        self._connected.set()
        # In the background: a seed that is down must not hold the agent's start for seconds.
        self._join_task = self._loops.spawn(self._join_known(), name="join-known")

    async def _close_clients(self) -> None:
        for client in (self._client, self._slow, self._joiner, self._events):
            if client is not None:
                await client.close()

    async def _ready_client(self, *, slow: bool = False, join: bool = False) -> SerfClient:
        # (wait_set, not wait_for: 3.11's wait_for swallowed `stop`'s cancellation here, as
        # wait_set's docstring tells; the agent never exited on SIGTERM)
        if not await wait_set(self._connected, 10.0):
            raise TimeoutError("serf RPC not connected within 10 s")
        client = self._joiner if join else self._slow if slow else self._client
        assert client is not None
        return client

    async def _join_known(self) -> None:
        targets = list(dict.fromkeys([*self.config.join, *self._load_known()]))
        if not targets or self._joiner is None:
            return
        with contextlib.suppress(SerfRPCError, asyncio.TimeoutError):
            async with asyncio.timeout(10.0):  # (not wait_for: see peer.runtime.waiting.wait_set)
                await self._joiner.join(targets)

    def _load_known(self) -> list[str]:
        return known_peers(self.config.data_dir)

    def _save_known(self) -> None:
        known = sorted(f"{m.addr}:{m.gossip_port}" for m in self.membership.all() if m.name != self.config.name)
        if known == sorted(self._load_known()):
            return
        tmp = self._known_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(known))
        tmp.replace(self._known_path)

    async def _supervise(self) -> None:
        """Restart Serf if it dies; reconnect the RPC client."""
        backoff = 0.2
        while not self._stopping:
            code = await self._serf.wait()
            if self._stopping:
                return
            self._connected.clear()
            log.warning("serf exited with %s; restarting", code)
            self.metrics.serf_restarts.inc()
            await self._close_clients()
            try:
                await self._serf.start()
                await self._connect()
                backoff = 0.2
            except Exception as exc:  # noqa: BLE001 - keep supervising whatever went wrong
                log.error("serf restart failed: %s", exc)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)

    async def _stream_loop(self) -> None:
        while not self._stopping:
            await self._ready_client()
            client = self._events
            assert client is not None
            try:
                stream = await client.stream("*")
                # Joins that happened before the stream was subscribed (at start, or while it
                # was being re-established) come as no event: read the list once it is.
                with contextlib.suppress(SerfRPCError, asyncio.TimeoutError):
                    await self._refresh_members()
                async for event in stream:
                    await self._on_event(event)
            except SerfRPCError as exc:
                log.debug("event stream ended: %s", exc)
                await asyncio.sleep(0.1)

    async def _on_event(self, event: MemberEvent | UserEvent | QueryEvent) -> None:
        if isinstance(event, MemberEvent):
            self.metrics.gossip_events.labels(type=event.kind).inc()
            await self._apply(self.membership.observe(event.members, now=time.monotonic()))
        elif isinstance(event, UserEvent):
            self.metrics.gossip_events.labels(type="user").inc()
            for listener in self._event_listeners:
                await _guard(listener(event))
        else:
            self.metrics.gossip_events.labels(type="query").inc()

    async def _refresh_members(self) -> None:
        client = await self._ready_client()
        members = await client.members()
        await self._apply(self.membership.observe(members, now=time.monotonic(), full=True))

    async def _poll_loop(self) -> None:
        last_full = time.monotonic()
        while not self._stopping:
            await asyncio.sleep(POLL_INTERVAL)
            now = time.monotonic()
            lonely = len(self.membership.alive()) <= 1
            with contextlib.suppress(SerfRPCError, asyncio.TimeoutError):
                if now - last_full >= (LONELY_POLL_INTERVAL if lonely else FULL_POLL_INTERVAL):
                    last_full = now
                    await self._refresh_members()
                else:
                    await self._refresh_watched()

    async def _refresh_watched(self) -> None:
        """The fast poll: only the clusters this one has business with (`members-filtered`)."""
        pattern = watched_pattern(self._watched(), here=self.config.name)
        if pattern is None:
            return
        client = await self._ready_client()
        members = await client.members_filtered(name=pattern)
        await self._apply(self.membership.observe(members, now=time.monotonic()))

    async def _apply(self, changes: list[StatusChange]) -> None:
        for status, count in self.membership.counts().items():
            self.metrics.members.labels(status=status).set(count)
        if changes:
            self._save_known()
        for change in changes:
            self.metrics.status_changes.labels(to=change.new).inc()
            log.info("member %s: %s -> %s", change.name, change.old, change.new)
            for listener in self._status_listeners:
                await _guard(listener(change))

    async def _coordinate_loop(self) -> None:
        while not self._stopping:
            with contextlib.suppress(SerfRPCError, asyncio.TimeoutError):
                client = await self._ready_client()
                mine = await client.get_coordinate(self.config.name)
                self.membership.set_rtt(self.config.name, 0.0)
                for name in self._coordinate_round():
                    theirs = await client.get_coordinate(name) if mine else None
                    rtt = rtt_seconds(mine, theirs) * 1000.0 if mine and theirs else None
                    self.membership.set_rtt(name, rtt)
            await asyncio.sleep(COORD_INTERVAL)

    def _coordinate_round(self) -> list[str]:
        """The watched members, plus the next COORD_SWEEP of the others in turn."""
        watched = set(self._watched())
        names = [m.name for m in self.membership.all() if m.name != self.config.name]
        others = [n for n in names if n not in watched]
        picked: list[str] = []
        if others:
            start = self._sweep % len(others)
            picked = (others[start:] + others[:start])[:COORD_SWEEP]
            self._sweep = start + len(picked)
        return [n for n in names if n in watched] + picked

    async def _rejoin_loop(self) -> None:
        while not self._stopping:
            await asyncio.sleep(REJOIN_INTERVAL)
            targets = self.membership.rejoin_targets()
            if len(self.membership.alive()) <= 1:
                targets += [t for t in [*self.config.join, *self._load_known()] if t not in targets]
            if not targets:
                continue
            self.metrics.rejoins.inc()
            with contextlib.suppress(SerfRPCError, asyncio.TimeoutError):
                client = await self._ready_client(join=True)
                async with asyncio.timeout(5.0):  # (not wait_for: see peer.runtime.waiting.wait_set)
                    await client.join(targets)

    async def _tag_loop(self) -> None:
        while not self._stopping:
            await self._tags_dirty.wait()
            self._tags_dirty.clear()
            load = self._load
            try:
                client = await self._ready_client(slow=True)
                await client.tags(add=self._self_tags().encode())
                self._published = load
                self.metrics.tag_updates.inc()
            except (SerfRPCError, asyncio.TimeoutError) as exc:
                log.debug("tag update failed: %s", exc)
                self._tags_dirty.set()
            await asyncio.sleep(TAG_MIN_INTERVAL)


def known_peers(data_dir: Path) -> list[str]:
    """The gossip addresses (IP:PORT) of the members this agent last knew, kept across restarts:
    joined again at start, and where an agent without an identity enrols (peer.trust.auto)."""
    try:
        data = json.loads((data_dir / KNOWN_PEERS).read_text())
        return [str(x) for x in data] if isinstance(data, list) else []
    except (OSError, ValueError):
        return []


async def _guard(result: Awaitable[None]) -> None:
    try:
        await result
    except Exception:  # noqa: BLE001 - one listener's bug must not stop gossip
        log.exception("listener failed")


def watched_pattern(names: Iterable[str], *, here: str) -> str | None:
    """An RE2 pattern matching exactly these member names (None: nothing to watch). Cluster
    names are DNS-1123 labels (peer.config), so they need no escaping; a name outside that
    alphabet is left out rather than trusted into a regular expression."""
    wanted = sorted({n for n in names if n != here and _PLAIN_NAME.match(n)})
    return None if not wanted else "^(" + "|".join(wanted) + ")$"


_PLAIN_NAME = re.compile(r"^[a-z0-9][-a-z0-9]*$")


def serf_log_path(data_dir: Path) -> Path:
    return data_dir / "serf" / "serf.log"
