"""The roam agent: one per cluster, the paper's Controller. Composes its parts in one readable place.

Start order is dependency order (address lock, private data dir, credentials, store, load
balancer, driver, gossip, HTTP, background loops); stop is the reverse. A crash at any point
loses nothing: records are in SQLite, services run in their own process groups, HAProxy in its
own session. SIGTERM/SIGINT stop the agent only, the data plane (HAProxy, services) keeps
serving and is re-adopted at the next start, exactly as after a crash; taking the cluster out
of the federation is the explicit drain (peer/api/drain.py).
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import ssl
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from pathlib import Path

from aiohttp import web

from lb.balancer import Claim, LoadBalancer
from lb.hostport import join_hostport
from peer.migration.wire import ForwardedOp
from peer.api.admin import add_admin_routes
from peer.api.audit import AUDIT_FILE, AuditLog, add_audit_routes, audit_middleware
from peer.api.drain import add_drain_routes
from peer.ui import add_ui_routes
from peer.api.http import (MAX_BODY, bearer_auth_middleware, error_middleware, quiet_protocol_errors,
                           rate_limit_middleware)
from peer.api.services import add_service_routes
from peer.config import AgentConfig, write_local_hint
from peer.runtime.credentials import Credentials, load_credentials
from peer.runtime.datadir import AddressLock, make_private
from peer.runtime import heap
from peer.runtime.fanout import FanOut
from peer.drivers.base import Driver
from peer.drivers.confine import Confinement
from peer.drivers.process_state import DEFAULT_PATH
from peer.federation.tags import Load
from peer.federation.gossip import Gossip
from peer.copies.convergence import Converger
from peer.federation.membership import Membership, StatusChange
from peer.peering.nonces import NONCE_FILE, PersistentNonceCache
from peer.runtime.metrics import Metrics
from peer.migration.engine import MigrationEngine
from peer.migration.failsafe import FailSafe
from peer.migration.history import MigrationLog
from peer.migration.homes import HomeSetClient, HomeSetHandlers, HomeSetKeeper
from peer.migration.policy import PolicyTriggers
from peer.migration.replica import ReplicaHandlers
from peer.migration.standby import StandbyKeeper, StateTransfer
from peer.state.hook import HttpStateHook
from peer.state.keeper import StandbySeam, StateKeeper
from peer.state.saved import SavedStates
from peer.state.wire import StateHandlers, StatePeerClient
from peer.homeset.watch import HomeWatch
from peer.links.probe import LinkProbe, stewarded
from peer.peering.client import PeerClient, PeerError, peer_auth_middleware
from peer.federation.metaorchestrator import views as build_views
from peer.records.antientropy import AntiEntropy
from peer.records.merge import MergeOutcome
from peer.records.record import Record, interested
from peer.records.store import RecordStore
from peer.copies import recovery
from peer.copies.manager import ServiceManager, WorkloadGate, split_addr
from peer.trust.workload import resolve_executable, resolve_lexical
from peer.runtime.waiting import wait_until
from peer.homeset.stewardship import Liveness, Observed
from peer.serf.errors import SerfRPCError
from peer.runtime.supervision import Supervisor
from peer.trust.enrol import add_enrol_routes
from peer.trust.authorship import record_guard
from peer.trust.guard import identity_middleware
from peer.trust.renew import Renewer, add_renew_route
from peer.trust.identity import Identity
from peer.trust.auto import EnrolmentAborted, automatic_identity, forget_identity
from peer.trust.keepers import CaKeepers
from peer.trust.joining import JoinRoutes, listener_middleware
from peer.trust.spread import TrustSpread
from placement import ClusterView, Thresholds

log = logging.getLogger(__name__)

ANTI_ENTROPY_INTERVAL = 5.0
ANTI_ENTROPY_FANOUT = 4  # sharing peers per backstop round
# A peer this cluster shares no record with gets a summary round only every OTHERS_EVERY rounds:
# whatever the two should share, the side holding it counts the other as sharing and syncs it
# every round, so this is the backstop's backstop. Every 5 s it made an idle agent with automatic
# identity open a TLS connection (a handshake of about 4 KB) every 5 s (issue 18).
ANTI_ENTROPY_OTHERS_EVERY = 6
# Peers called at once by the catch-up and the welcomes of members seen alive (peer.runtime.fanout):
# at start-up every member comes alive at once, and each call was a TLS connection of its own.
BACKGROUND_CALLS_AT_ONCE = 4
# Freed heap handed back this often (peer.runtime.heap; 0.03-0.1 ms a time): what the start-up
# storm, a round or the peers' calls to this agent left behind.
HEAP_TRIM_EVERY = 10.0
HYGIENE_EVERY = 60.0  # seconds between two rounds of tombstone GC and journal pruning
TOMBSTONE_TTL = 7 * 24 * 3600.0  # merge.droppable: longer than the longest partition accepted
JOURNAL_KEEP = 24 * 3600.0  # closed journal entries are kept this long (post-mortems)
CLEANUP_GRACE = 5.0  # a stop waits this long for migrations' cleanups (the rest: `recover` on restart)
PEER_BODY_LIMIT = 8 * 1024 * 1024
INTRODUCE_EVERY = 10.0  # seconds between two Serf joins towards a member showing another CA's certificate


class Agent:
    def __init__(self, config: AgentConfig) -> None:
        self.config = config
        self.here = config.name
        self.metrics = Metrics(config.name)
        self.membership = Membership(config.name)
        self.creds: Credentials | None = None
        self.gossip: Gossip | None = None
        self.store: RecordStore | None = None
        self.lb: LoadBalancer | None = None
        self.driver: Driver | None = None
        self.services: ServiceManager | None = None
        self.engine: MigrationEngine | None = None
        self.state: StateKeeper | None = None  # stateful services' state (peer/state)
        self.history: MigrationLog | None = None
        self.client: PeerClient | None = None
        self.antientropy: AntiEntropy | None = None
        self.probe: LinkProbe | None = None
        self.homes: HomeSetClient | None = None
        self.liveness = Liveness(config.name, home_grace=config.home_grace, caught_up=False)
        self.state_transfer: StateTransfer | None = None  # the state hook's seam (issue 15), set before start
        self._runner: web.AppRunner | None = None
        self._loops = Supervisor(f"{config.name}")  # the control loops, restarted after a failure
        self._jobs = Supervisor(f"{config.name}")  # one-shot background jobs (syncs, releases, recovery)
        # peer -> when the last completed records sync with it began (a welcome skips a sync begun since)
        self._synced_from: dict[str, float] = {}
        self.fanout = FanOut(BACKGROUND_CALLS_AT_ONCE)  # catch-up and welcomes (peer.runtime.fanout)
        self.accepting = True
        self._lock = AddressLock(config.addr)
        self.audit = AuditLog(config.data_dir / AUDIT_FILE)
        self.confinement: Confinement | None = None  # --run-as (peer.drivers.confine)
        self.nonces: PersistentNonceCache | None = None
        self.identity: Identity | None = None  # per-cluster identity, mTLS on the peer API (peer.trust)
        self.trust: TrustSpread | None = None  # revocation lists to and from peers (peer.trust.spread)
        self.ca_dir: Path | None = config.ca_dir  # the CA kept here: --ca-dir, or the automatic one (peer.trust.auto)
        self.keepers: CaKeepers | None = None  # the automatic CA on several clusters (peer.trust.keepers)
        self.yielded_to: str | None = None  # why this agent dropped its own CA (it starts again)
        self._introduced: dict[str, float] = {}  # member -> when we last joined it through Serf (_introduce)
        self._stop_requested = asyncio.Event()
        self._stop_everything = False
        self._business: frozenset[str] = frozenset()  # clusters our records name (refreshed each second)
        self._sweep = 0  # round number of the anti-entropy backstop (whose turn it is)

    # -- what other components ask of the agent ---------------------------------------------
    def current_load(self) -> Load:
        cap = self.config.capacity
        cpu, mem, slots = self.services.usage() if self.services else (0.0, 0, 0)
        return Load(cpu_capacity=cap.cpu, cpu_used=round(cpu, 2), mem_capacity=cap.memory >> 20,
                    mem_used=mem >> 20, slots_capacity=cap.slots, slots_used=slots)

    def load_changed(self) -> None:
        if self.gossip is not None:
            self.gossip.set_load(self.current_load())

    def cluster_views(self) -> dict[str, ClusterView]:
        bandwidth = self.probe.bandwidth() if self.probe else None
        return build_views(self.membership.all(), here=self.here, own_load=self.current_load(),
                           accepting=self.accepting, bandwidth=bandwidth)

    def homes_services(self) -> bool:
        return self.services is not None and any(r.home == self.here for r in self.services.records())

    def own_view(self) -> ClusterView:
        return self.cluster_views()[self.here]

    def observed(self) -> dict[str, Observed]:
        return {m.name: Observed(m.status, m.since) for m in self.membership.all()}

    def steward_of(self, record: Record) -> str | None:
        """The entry acting as home for `record` now, in this cluster's view (peer.homeset.stewardship)."""
        return self.liveness.steward(record, self.observed(), time.monotonic())

    def lost_for(self, cluster: str) -> float | None:
        """Seconds `cluster` has counted as lost in this view (peer.homeset.stewardship), None if alive."""
        return self.liveness.lost_for(cluster, self.observed(), time.monotonic())

    def api_url_of(self, cluster: str) -> str | None:
        member = self.membership.get(cluster)
        return None if member is None else member.peer_url

    async def publish(self, record: Record, extra: frozenset[str] = frozenset()) -> None:
        """Push a changed record to the clusters that share it, in the background."""
        for peer in sorted((interested(record) | extra) - {self.here}):
            self._spawn(self._sync(peer))

    async def publish_now(self, record: Record, extra: frozenset[str] = frozenset(),
                          skip: frozenset[str] = frozenset()) -> None:
        """Push and wait (bounded): a migration is committed once its AC holds the record.
        `skip`: clusters not pushed to now (they learn it otherwise, e.g. by `ROUTE`)."""
        peers = sorted((interested(record) | extra) - {self.here} - skip)
        await asyncio.gather(*(asyncio.wait_for(self._sync(p), timeout=5.0) for p in peers), return_exceptions=True)

    # -- lifecycle ---------------------------------------------------------------------------
    async def start(self) -> None:
        cfg = self.config
        self._lock.acquire()  # a second agent on this address stops here, before anything is written
        heap.fix_mmap_threshold()  # TLS read buffers out of the heap (peer.runtime.heap)
        try:
            # Credentials next: they are checked before anything is written (a bad secret leaves no files).
            self.creds = load_credentials(data_dir=cfg.data_dir, token_file=cfg.token_file,
                                          secret_file=cfg.secret_file, reader_token_file=cfg.reader_token_file)
            changed = make_private(cfg.data_dir)  # also sets umask 077 for what the agent writes later
            if cfg.auto_identity:  # made here, or enrolled at a --join target (may wait for one)
                self.identity, self.ca_dir = await automatic_identity(
                    cfg, secret=self.creds.federation_secret, stop=self._stop_requested, owner_of=self._owner_of,
                    peer_url=self.peer_url)
            else:
                self.identity = self._make_identity()  # a bad certificate, key or CA: one line, nothing started
        except BaseException:
            self._lock.release()
            raise
        for path in self.creds.generated:
            log.warning("generated %s (mode 0600)", path)
        self.store = RecordStore.open(cfg.data_dir / "records.sqlite3")
        if self.identity is not None:
            self.store.guard = record_guard(self.identity, self.metrics)  # author-signed versions (issue 19)
        self.history = MigrationLog(store=self.store, metrics=self.metrics)
        self.nonces = PersistentNonceCache(cfg.data_dir / NONCE_FILE)  # replay protection across restarts
        if self.nonces.loaded:
            log.info("replay cache: %d peer nonces still in their window reloaded", self.nonces.loaded)
        self.client = PeerClient(self.creds.federation_secret, max_bytes=PEER_BODY_LIMIT, sender=cfg.name,
                                 tls=self.identity, lasting=lambda url: self._owner_of(url) in self._business)
        if self.identity is not None:
            self.identity.on_revoked.append(self.client.drop_connections)
            self.identity.on_new_cert.append(self.client.drop_connections)
            self.client.on_foreign_certificate.append(self._introduce)
        self.trust = TrustSpread(identity=self.identity, client=self.client, here=self.here, members=self._live_apis,
                                 fanout=self.fanout)
        if cfg.auto_identity and self.identity is not None:
            self.keepers = CaKeepers(here=self.here, data_dir=cfg.data_dir, ca_dir=self.ca_dir, identity=self.identity,
                                     client=self.client, membership=self.membership, want=cfg.ca_keepers,
                                     on_keeping=self._keep_ca, on_yield=self._yield_ca)
            if self.identity.auto is not None:
                self.identity.auto["ca_id"] = self.keepers.own.encode()  # the `cid` tag: which CA
        self.lb = LoadBalancer(data_dir=cfg.data_dir / "lb", bind_addr=cfg.addr, ports=cfg.lb_ports,
                               max_slots=cfg.lb_slots, haproxy_binary=cfg.haproxy_binary)
        try:
            await self._start_parts()
        except BaseException:
            await self.stop(leave=False, data_plane=False)  # an adopted HAProxy keeps serving
            raise
        write_local_hint(cfg, token_file=self.creds.token_path)  # for `roam` on this host (no secret in it)
        if changed:  # said once up, so that a refusal to start stays one line
            log.warning("made %d path(s) in %s private (0700 dirs, 0600 files)", changed, cfg.data_dir)
        log.info("agent %s up: api %s, dashboard %s/ui/%s", cfg.name, cfg.api_url, cfg.api_url,
                 f", peer API (mTLS) {self.peer_url}" if cfg.auto_identity else "")

    def request_stop(self, *, everything: bool = False) -> None:
        """End `run_until_signalled`: the agent only (a restart), or with its data plane (drain)."""
        self._stop_everything = self._stop_everything or everything
        self._stop_requested.set()

    async def _start_parts(self) -> None:
        assert self.lb and self.store and self.client and self.history and self.creds and self.trust
        await self.lb.start(claims=self._lb_claims())
        self.driver = self._make_driver()
        self.homes = HomeSetClient(here=self.here, client=self.client, url_of=self.api_url_of,
                                   views=self.cluster_views, publish_now=self.publish_now)
        self.services = ServiceManager(here=self.here, store=self.store, driver=self.driver, lb=self.lb,
                                       publish=self.publish, peers=self.homes, workload=self._workload_gate())
        await self.driver.start()
        self.antientropy = AntiEntropy(store=self.store, here=self.here, client=self.client,
                                       on_outcome=self._on_outcome, on_heard=self.liveness.mark_reachable,
                                       on_in_sync=self._peer_found_in_sync)
        self.probe = LinkProbe(here=self.here, client=self.client, members=self.membership, traffic=self.lb,
                               responsibilities=lambda: stewarded(self), budget=self.config.probe_budget,
                               on_sent=lambda peer, n: self.metrics.link_probe_bytes.labels(peer=peer).inc(n))
        self.state = StateKeeper(services=self.services, hook=HttpStateHook(),
                                 saved=SavedStates(self.config.data_dir), steward_of=self.steward_of,
                                 peers=StatePeerClient(client=self.client, url_of=self.api_url_of))
        self.services.state_check = self.state
        self.services.on_rename.append(self.state.saved.rename)  # `name@home` keeps its saved state
        self.services.on_rename.append(self.services.fresh.renamed)  # ...and its copy's fresh mark
        if self.state_transfer is None:
            self.state_transfer = StandbySeam(self.state)  # new standbys get the latest state first
        self.engine = MigrationEngine(here=self.here, services=self.services, client=self.client,
                                      history=self.history, agent=self, homes=self.homes,
                                      steward_of=self.steward_of, policy=self.config.policy, state=self.state)
        self.services.recovered.clear()  # until _catch_up has pulled the records from peers
        await self.services.reconcile()
        self.refresh_business()
        self.gossip = Gossip(config=self.config, secret=self.creds.federation_secret, membership=self.membership,
                             metrics=self.metrics, initial_load=self.current_load(), watched=self.business,
                             peer_port=self.config.peer_listen_port if self.config.auto_identity else None,
                             keeps_ca=self.config.auto_identity and self.ca_dir is not None,
                             ca_id=self.keepers.own.encode() if self.keepers is not None else None)
        self.gossip.on_status_change(self._on_status_change)
        await self.gossip.start()
        await self._start_http()
        self._spawn(self.engine.recover())
        failsafe = FailSafe(services=self.services, client=self.client, history=self.history, agent=self,
                            homes=self.homes, liveness=self.liveness, steward_of=self.steward_of, state=self.state,
                            engine=self.engine, metrics=self.metrics)
        keeper = HomeSetKeeper(services=self.services, peers=self.homes, liveness=self.liveness,
                               observed=self.observed, repair_after=self.config.repair_after, publish=self.publish)
        standbys = StandbyKeeper(services=self.services, client=self.client, history=self.history, agent=self,
                                 homes=self.homes, steward_of=self.steward_of, lost_for=self.lost_for,
                                 state=self.state_transfer, policy=self.config.policy)
        homewatch = HomeWatch(here=self.here, records=self.services.records, client=self.client,
                              url_of=self.api_url_of, liveness=self.liveness)
        converger = Converger(services=self.services)
        loops: list[tuple[str, Callable[[], Awaitable[None]]]] = [
            ("failsafe", failsafe.run), ("anti-entropy", self._anti_entropy_loop),
            ("housekeeping", self._housekeeping_loop), ("home-sets", keeper.run),
            ("standbys", standbys.run), ("catch-up", self._catch_up), ("state", self.state.run),
            ("convergence", converger.run), ("home-watch", homewatch.run),
        ]
        if self.identity is not None:
            renewer = Renewer(identity=self.identity, client=self.client, here=self.here, members=self._live_apis,
                              ca_dir=self.ca_dir, renewed=self.trust.push_all)
            loops += [("identity", self.identity.watch), ("trust-sync", self.trust.run),
                      ("cert-renewal", renewer.run)]
        if self.keepers is not None:
            loops.append(("ca-keepers", self.keepers.run))
        if self.config.auto_migrate:
            assert self.probe is not None
            policy = PolicyTriggers(services=self.services, engine=self.engine, agent=self,
                                    thresholds=self.config.thresholds, failing=failsafe.owns)
            loops += [("link-probe", self.probe.run), ("policy", policy.run)]
        for name, run in loops:  # each restarted after a failure, logged (peer.runtime.supervision)
            self._loops.loop(name, run)

    def _lb_claims(self) -> dict[str, Claim]:
        """The slots the records give this cluster (its entry port per service, and where the
        service runs): HAProxy's state is derived from them, so losing lb-slots.json costs
        nothing and a new deploy is never handed a port a live service owns."""
        assert self.store is not None
        claims: dict[str, Claim] = {}
        for record in self.store.all():
            endpoint = record.endpoint_at(self.here) if self.here in record.entries else None
            if record.tombstone or endpoint is None:
                continue
            with contextlib.suppress(ValueError):
                port = split_addr(endpoint)[1]
                route = split_addr(record.instance) if record.instance else None
                claims[record.name] = (port, route)
        return claims

    def _workload_gate(self) -> WorkloadGate:
        """The policy with the resolver of this cluster's driver: the process driver runs argv[0]
        from this host's PATH; a container's command is judged lexically."""
        cfg = self.config
        if cfg.workload.permissive:
            log.info("workload policy: none (every home, command and image is accepted)")
        else:
            log.info("workload policy: %s", cfg.workload.as_api())
        if cfg.driver == "kubernetes":
            return WorkloadGate(self.here, cfg.workload, resolve=resolve_lexical)
        path = os.environ.get("PATH", DEFAULT_PATH)
        return WorkloadGate(self.here, cfg.workload, resolve=lambda arg0: resolve_executable(arg0, path=path))

    def _make_driver(self) -> Driver:
        cfg = self.config
        on_event = self._on_driver_event
        if cfg.driver == "kubernetes":
            from peer.drivers.kubernetes import KubernetesDriver

            k = cfg.kubernetes
            return KubernetesDriver(cluster=cfg.name, namespace=k.namespace, kubeconfig=k.kubeconfig,
                                    context=k.context, node_address=k.node_address, on_event=on_event)
        from peer.drivers.process import ProcessDriver

        if cfg.run_as is not None:
            from peer.drivers.confine import Confinement

            self.confinement = Confinement(user=cfg.run_as, scope=cfg.addr, strict=cfg.run_as_given)
            log.info("services run as %s in %s; cgroup %s; limits %s", cfg.run_as, self.confinement.work_root,
                     self.confinement.cgroup_root, "applied" if self.confinement.limits else
                     f"not applied: {self.confinement.limits_reason}")
        return ProcessDriver(data_dir=cfg.data_dir, host=cfg.addr, port_range=cfg.service_ports,
                             on_event=on_event, cluster=cfg.name, confine=self.confinement)

    def _on_driver_event(self, name: str, kind: str, detail: str) -> None:
        log.info("service %s: %s %s", name, kind, detail.splitlines()[0] if detail else "")
        if self.services is not None:
            self.services.on_driver_event(name, kind, detail)

    async def _start_http(self) -> None:
        assert self.creds is not None and self.antientropy and self.services
        cfg = self.config
        split = [listener_middleware(peer_port=cfg.peer_listen_port, admin_url=cfg.api_url, peer_url=self.peer_url)
                 ] if cfg.auto_identity else []
        app = web.Application(
            client_max_size=PEER_BODY_LIMIT,
            middlewares=[*split, audit_middleware(self.audit), error_middleware, rate_limit_middleware(),
                         bearer_auth_middleware(self.creds.admin_token, reader=self.creds.reader_token),
                         *([identity_middleware(self.identity)] if self.identity is not None else []),
                         peer_auth_middleware(self.creds.federation_secret, nonces=self.nonces)],
        )
        assert self.trust is not None
        self.trust.add_routes(app)
        if self.identity is not None:
            add_renew_route(app, identity=self.identity, ca_dir=self.ca_dir)
        if cfg.auto_identity:
            assert self.nonces is not None and self.client is not None
            assert self.keepers is not None
            JoinRoutes(here=self.here, secret=self.creds.federation_secret, nonces=self.nonces,
                       ca_dir=lambda: self.ca_dir, ca_id=self.keepers.own.encode(), membership=self.membership,
                       client=self.client).add_routes(app)
            self.keepers.add_routes(app)
        add_enrol_routes(app, ca_dir=self.ca_dir,
                         ca_pem=self.identity.paths[0].read_bytes() if self.identity is not None else None)
        add_audit_routes(app, self.audit)
        app["admin_body_limit"] = MAX_BODY
        quiet_protocol_errors()  # a malformed request from anyone: one WARNING a minute, no traceback
        add_admin_routes(app, self)
        add_ui_routes(app)
        add_service_routes(app, self)
        add_drain_routes(app, self)
        self.antientropy.add_routes(app)
        ReplicaHandlers(services=self.services, agent=self).add_routes(app)
        HomeSetHandlers(services=self.services, run_forwarded=self._run_forwarded).add_routes(app)
        assert self.state is not None
        StateHandlers(services=self.services, keeper=self.state).add_routes(app)
        LinkProbe.add_routes(app)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.config.addr, self.config.api_port, ssl_context=self._ssl_context())
        await site.start()
        if cfg.auto_identity and self.identity is not None:  # the peer API's own listener: mTLS only
            await web.TCPSite(self._runner, cfg.addr, cfg.peer_listen_port, ssl_context=self.identity.peer_server).start()

    def _make_identity(self) -> Identity | None:
        cfg = self.config
        if cfg.ca_cert is None or cfg.cert is None or cfg.key is None:
            return None

        return Identity(name=cfg.name, ca_cert=cfg.ca_cert, cert=cfg.cert, key=cfg.key, data_dir=cfg.data_dir,
                        owner_of=self._owner_of)

    @property
    def peer_url(self) -> str:
        """Where peers reach this agent's peer API."""
        cfg = self.config
        if cfg.auto_identity:
            return f"https://{join_hostport(cfg.addr, cfg.peer_listen_port)}"
        return cfg.api_url

    def _owner_of(self, url: str) -> str | None:
        return next((m.name for m in self.membership.all() if m.peer_url == url.rstrip("/")), None)

    def _live_apis(self) -> list[tuple[str, str]]:
        return [(m.name, m.peer_url) for m in self.membership.alive() if m.name != self.here and m.peer_url]

    def _ssl_context(self) -> ssl.SSLContext | None:
        if self.identity is not None and not self.config.auto_identity:
            return self.identity.server
        if not self.config.tls_cert or not self.config.tls_key:
            return None
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(self.config.tls_cert, self.config.tls_key)
        return ctx

    async def stop(self, *, leave: bool = True, data_plane: bool = True, services: bool = False) -> None:
        """Stop the agent; with `data_plane=False` HAProxy keeps serving for the next agent to
        adopt. Services keep running (the driver never kills them on stop) unless `services`
        (a drain with stop)."""
        self.accepting = False
        if self.services is not None:
            # From now on nothing new is taken on, and a STATUS long poll that outlives this
            # agent's API does not answer "ready" for a copy it can no longer answer for.
            self.services.closing = True
        await self._loops.stop()
        if self._runner is not None:
            await self._runner.cleanup()
        if self.engine is not None:  # old copies being stopped after a move's answer (also one that
            await self.engine.settle(timeout=CLEANUP_GRACE)  # a request finishing just now started)
        if self.services is not None:
            await self.services.close()
        if self.state is not None:
            await self.state.hook.close()
        await self._jobs.stop()
        if self.gossip is not None:
            await self.gossip.stop(leave=leave)
        if self.driver is not None:
            if services:
                await self._stop_services(self.driver)
            await self.driver.stop()
        if self.lb is not None:
            with contextlib.suppress(Exception):
                await self.lb.stop(keep_running=not data_plane)
        if self.client is not None:
            await self.client.close()
        if self.store is not None:
            self.store.close()
        if self.nonces is not None:
            self.nonces.close()
        self._lock.release()

    @staticmethod
    async def _stop_services(driver: Driver) -> None:
        """Drained with stop: what could not move is stopped too (a restart never comes here)."""
        with contextlib.suppress(Exception):
            for instance in await driver.list():
                try:
                    await driver.delete(instance.name)
                except Exception as exc:  # noqa: BLE001 - stop the others anyway
                    log.warning("stopping %s failed: %s", instance.name, exc)

    async def run_until_signalled(self) -> bool:
        """SIGTERM/SIGINT: stop the agent, keep the data plane (systemd's restart, an upgrade).
        Serf is not told to leave either: peers see a restart of a second or two, not a
        departure that would start fail-safes for what runs here. True: start again, with the
        identity forgotten (a lone founder yielded to an older CA, peer.trust.keepers)."""
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.request_stop)
        try:
            await self.start()
        except EnrolmentAborted as exc:  # stopped before the federation CA answered: nothing to stop
            log.warning("%s", exc)
            return False
        identity = self.identity
        if identity is not None:  # SIGHUP: re-read the certificate and key now (rotation)
            loop.add_signal_handler(signal.SIGHUP, lambda: identity.reload(why="SIGHUP"))
        try:
            await self._stop_requested.wait()
        finally:
            everything = self._stop_everything
            log.info("shutting down%s", " with the data plane (drained)" if everything else
                     "; haproxy and services keep serving")
            await self.stop(leave=everything, data_plane=everything, services=everything)
        if self.yielded_to is None:
            return False
        forget_identity(self.config.data_dir)
        return True

    def _yield_ca(self, reason: str) -> None:
        """A lone founder meets an older federation CA: start again and enrol there."""
        log.warning("dropping this cluster's own federation CA and identity: %s", reason)
        self.yielded_to = reason
        self.request_stop()

    def _introduce(self, url: str) -> None:
        """A member's peer API shows a certificate of another CA: most likely its site was rebuilt
        on an empty data dir and, knowing nobody yet, founded a CA of its own. Joining it through
        Serf (at most every INTRODUCE_EVERY seconds) hands it the member list at once, instead of
        at the next push-pull (up to 30 s), so it can yield and enrol here (peer.trust.keepers)."""
        member = next((m for m in self.membership.all() if m.peer_url == url.rstrip("/")), None)
        now = time.monotonic()
        if member is None or self.gossip is None or now - self._introduced.get(member.name, -INTRODUCE_EVERY) \
                < INTRODUCE_EVERY:
            return
        self._introduced[member.name] = now
        log.info("%s shows a certificate of another CA: joining it through Serf so it meets this federation",
                 member.name)
        self._spawn(self._join_quietly(join_hostport(member.addr, member.gossip_port)))

    async def _join_quietly(self, target: str) -> None:
        assert self.gossip is not None
        try:
            await asyncio.wait_for(self.gossip.join([target]), timeout=5.0)
        except (SerfRPCError, TimeoutError) as exc:
            log.info("joining %s through Serf failed: %s", target, exc)

    def _keep_ca(self, ca_dir: Path) -> None:
        """Handed the CA by a keeper (peer.trust.keepers): sign joins and say so in the tags."""
        self.ca_dir = ca_dir
        if self.gossip is not None:
            self.gossip.set_keeps_ca()
        if self.identity is not None and self.identity.auto is not None:
            self.identity.auto.update(ca_keeper=True, ca_dir=str(ca_dir))

    # -- replication triggers ----------------------------------------------------------------
    async def _on_outcome(self, outcome: MergeOutcome) -> None:
        assert self.services is not None
        self.services.apply_soon(outcome)
        self.load_changed()

    async def _run_forwarded(self, op: ForwardedOp, name: str, target: str | None) -> tuple[int, Any]:
        from peer.api.services import run_admin_op

        return await run_admin_op(self, op, name, target)

    async def _catch_up(self) -> None:
        """A (re)started cluster recovers its records from live peers before it acts: before
        it resumes stewardship (DESIGN: the HC resumes once it has caught up), accepts
        creations, or judges a running copy no record accounts for (peer.copies.recovery). With an
        empty store (a rebuilt site, a deleted records.sqlite3) this is what brings back the
        records of what it runs and homes; no peer reachable within `recovery_wait` (the first
        cluster of a new federation) and it proceeds, keeping every such copy running."""
        assert self.services is not None and self.store is not None
        started = time.monotonic()
        synced = await self._recover_records()
        self.liveness.caught_up = True
        expected = self._expects_peers()
        why = "" if synced else (f": no peer answered within {self.config.recovery_wait:g}s, proceeding alone"
                                 if expected else ": no peer known (no --join), proceeding at once")
        log.log(logging.INFO if synced or not expected else logging.WARNING,
                "caught up with %d peers in %.2fs (%s store)%s; acting as steward where first", len(synced),
                time.monotonic() - started, "empty" if self.store.fresh else "existing", why)
        kept = await recovery.settle(self.services, reached=bool(synced))
        await recovery.start_deferred(self.services)
        if synced:
            await self.services.close_stale_frontends()
        self.services.recovered.set()
        while kept and not synced:  # judge the kept copies again once a peer first answers
            await asyncio.sleep(0.5)
            synced = await self._sync_alive(exclude=set())
            if synced:
                kept = await recovery.settle(self.services, reached=True)
                await self.services.close_stale_frontends()
        await asyncio.Event().wait()  # supervised loops run until cancelled

    def _expects_peers(self) -> bool:
        """Wait for peers when told whom to join, or when our records name other clusters."""
        assert self.store is not None
        return bool(self.config.join) or any(
            interested(r) - {self.here} for r in self.store.all(include_tombstones=True))

    async def _recover_records(self) -> set[str]:
        """Sync with every live peer until one answered (bounded by `recovery_wait` when peers
        are expected), then once more with peers that came alive meanwhile; returns the synced."""
        deadline = time.monotonic() + (self.config.recovery_wait if self._expects_peers() else 0.0)
        synced: set[str] = set()
        while not synced:
            synced = await self._sync_alive(exclude=set())
            if synced or time.monotonic() >= deadline:
                break
            await asyncio.sleep(0.1)
        if synced:
            synced |= await self._sync_alive(exclude=synced)
        return synced

    async def _sync_alive(self, *, exclude: set[str]) -> set[str]:
        """Meet every live peer not in `exclude` (`_meet`, its round bounded at 5 s); the peers
        whose round completed, or was covered since they came alive."""
        peers = [m.name for m in self.membership.alive() if m.name != self.here and m.name not in exclude]

        async def catch_up(peer: str) -> bool:
            member = self.membership.get(peer)
            if member is None or member.status != "alive":
                return False
            return await self._meet(peer, since=member.since, sync_timeout=5.0)
        done = await self.fanout.each(peers, catch_up)
        return {p for p, ok in zip(peers, done) if ok is True}

    async def _meet(self, peer: str, *, since: float, sync_timeout: float | None = None) -> bool:
        """A certificate exchange, then a records round, with `peer`, one after the other over one
        connection; True if the round completed. Certificates first: a version whose writer's
        certificate is not known here yet is refused (author-signed records), and the peer knows
        the certificate of every writer of the records it holds. An exchange or a round that
        began at or after `since` and completed is not made again: one of ours (the catch-up's,
        a backstop round's) or one the peer made with us that left both sides the same. At
        start-up every member comes alive at once, and each pair's two catch-ups and two
        welcomes made the same calls up to four times."""
        if self.trust is not None and self.identity is not None and not self.trust.exchanged_since(peer, since):
            await self.trust.exchange_with(peer)  # a revocation list or certificate it missed
        if self._synced_from.get(peer, float("-inf")) >= since:
            return True
        sync = self._sync(peer)
        return await (sync if sync_timeout is None else asyncio.wait_for(sync, timeout=sync_timeout))

    def _synced(self, peer: str, *, began: float) -> None:
        """A records round with `peer` that began at `began` left both sides the same."""
        self._synced_from[peer] = max(began, self._synced_from.get(peer, began))

    def _peer_found_in_sync(self, peer: str) -> None:
        """`peer`'s summary round with us matched (AntiEntropy.on_in_sync): as good as ours."""
        self._synced(peer, began=time.monotonic())

    async def _on_status_change(self, change: StatusChange) -> None:
        if change.new == "alive" and change.name != self.here:
            self._spawn(self._welcome(change.name))
            if self.keepers is not None:
                self.keepers.poke()  # a new member may be a deputy to hand the CA to, at once

    async def _welcome(self, peer: str) -> None:
        """A member came alive: what it may have missed while away, and what we missed from it.
        One call after the other over one kept-alive connection, at most BACKGROUND_CALLS_AT_ONCE
        members at once (peer.runtime.fanout): `_meet` (what another call covered since it came
        alive is not made again: at start-up that was most of the calls, and the tail of the
        storm outlasted the first idle minute), then the names check."""
        came = time.monotonic()
        if self.services is not None:
            # At start-up every member comes alive before the catch-up has run: it exchanges and
            # syncs with all of them, so wait for it and only check names with those it reached.
            await self.services.recovered.wait()

        async def calls() -> None:
            await self._meet(peer, since=came)
            await self._check_names(peer)
        await self.fanout.run(calls)

    async def _check_names(self, peer: str) -> None:
        """A peer is back: a service of the same name created on its side meets ours (naming)."""
        url = self.api_url_of(peer)
        if url is None or self.antientropy is None:
            return
        try:
            await self.antientropy.check_names(peer, url)
        except PeerError as exc:
            log.debug("name check with %s failed: %s", peer, exc)

    async def _sync(self, peer: str) -> bool:
        """One anti-entropy round with `peer`; True if it completed."""
        url = self.api_url_of(peer)
        member = self.membership.get(peer)
        if url is None or self.antientropy is None or member is None or member.status != "alive":
            return False
        started = time.monotonic()
        try:
            await self.antientropy.sync_with(peer, url)
        except PeerError as exc:
            log.debug("anti-entropy with %s failed: %s", peer, exc)
            return False
        self.liveness.mark_reachable(peer)  # it answered: clears stale probe evidence of its loss
        self._synced(peer, began=started)
        return True

    async def _anti_entropy_loop(self) -> None:
        """The backstop: pushes and member-alive syncs do the fast work. Each round checks the
        names homed here with one live peer in turn (AntiEntropy.check_names) and syncs with
        at most ANTI_ENTROPY_FANOUT of the clusters this one shares records with, in turn, plus
        every ANTI_ENTROPY_OTHERS_EVERY rounds one other live peer in turn (a cheap summary
        round when nothing differs): the cost of a
        round is bounded whatever the federation and the records held, and a full cycle over
        the sharing peers takes |peers| / fanout rounds (issue 18; bench/simulate.py)."""
        while True:
            await asyncio.sleep(ANTI_ENTROPY_INTERVAL)
            alive = [m.name for m in self.membership.alive() if m.name != self.here]
            sharing = [p for p in alive if p in self._business]
            others = [p for p in alive if p not in self._business]
            peers = backstop_round(sharing, others, turn=self._sweep, fanout=ANTI_ENTROPY_FANOUT,
                                   others_every=ANTI_ENTROPY_OTHERS_EVERY)
            # Names too, one live peer per round in turn: twins created while a partition was too
            # short to be noticed (no member-alive transition) still meet (naming).
            checks = [self._check_names(sorted(alive)[self._sweep % len(alive)])] if alive else []
            self._sweep += 1
            await asyncio.gather(*(self._sync(p) for p in peers), *checks, return_exceptions=True)

    def business(self) -> frozenset[str]:
        """The clusters this one has business with: every entry, location and standby its
        records name (fast failure detection and the anti-entropy backstop watch these)."""
        return self._business

    def refresh_business(self) -> None:
        if self.store is not None:
            names: set[str] = set()
            for record in self.store.all(include_tombstones=True):
                names |= interested(record)
            self._business = frozenset(names - {self.here})

    async def _housekeeping_loop(self) -> None:
        assert self.services is not None and self.store is not None
        next_hygiene = time.monotonic() + HYGIENE_EVERY
        next_trim = time.monotonic() + HEAP_TRIM_EVERY
        while True:
            await asyncio.sleep(1.0)
            if time.monotonic() >= next_hygiene:
                next_hygiene = time.monotonic() + HYGIENE_EVERY
                records_hygiene(self.store, here=self.here, now=time.time())
            if time.monotonic() >= next_trim:
                next_trim = time.monotonic() + HEAP_TRIM_EVERY
                heap.give_back()  # (peer.runtime.heap)
            await self.services.expire_pending()
            self.refresh_business()
            self.load_changed()
            self.refresh_gauges()

    def refresh_gauges(self) -> None:
        for status, count in self.membership.counts().items():
            self.metrics.members.labels(status=status).set(count)
        if self.services is not None:
            roles = {"LR": 0, "AR": 0, "FR": 0, "SR": 0}
            from peer.records.record import role

            for r in self.services.records():
                rl = role(r, self.here)
                if rl:
                    roles[rl] += 1
            for label, n in roles.items():
                self.metrics.services.labels(role=label).set(n)

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        """Run a background job owned by the agent (cancelled on stop)."""
        self._spawn(coro)

    def _spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        self._jobs.spawn(coro)  # kept, its error logged, cancelled on stop (peer.runtime.supervision)


def backstop_round(sharing: list[str], others: list[str], *, turn: int, fanout: int,
                   others_every: int = 1) -> list[str]:
    """The peers of anti-entropy backstop round number `turn`: the next `fanout` of the
    sharing peers, and every `others_every` rounds the next one of the others, each list taken
    in turn (pure)."""
    picked: list[str] = []
    if sharing:
        start = (turn * fanout) % len(sharing)
        picked = (sharing[start:] + sharing[:start])[:fanout]
    if others and turn % others_every == 0:
        picked.append(others[(turn // others_every) % len(others)])
    return picked


def records_hygiene(store: RecordStore, *, here: str, now: float) -> tuple[list[str], int]:
    """Keep the store from growing without bound: forget the tombstones every holder has
    acknowledged (or older than TOMBSTONE_TTL, merge.droppable), and closed journal entries
    older than JOURNAL_KEEP. Returns (tombstones dropped, journal entries pruned)."""
    dropped = store.gc_tombstones(here=here, now=now, ttl=TOMBSTONE_TTL)
    pruned = store.journal_prune(before=now - JOURNAL_KEEP)
    if dropped or pruned:
        log.info("records hygiene: %d tombstone(s) forgotten, %d closed journal entr%s pruned",
                  len(dropped), pruned, "y" if pruned == 1 else "ies")
    return dropped, pruned

