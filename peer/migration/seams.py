"""What the migration parts see of the agent (issue 13): one small `Protocol` per thing they
need, instead of the whole `Agent` as `Any`. Each part declares the few seams it uses, so mypy
checks every call across them and a unit test can hand in the in-memory fake beside them
(peer/migration/fakes.py), as memberlist ships its mock transport beside the real one.

The real `peer.agent.Agent` implements all of them; each seam is named for what it gives:
    Members        gossip's view of one cluster (status, API address)
    ClusterViews   placement's views of the federation (load, tiers, link estimates)
    PeerDirectory  where a cluster's peer API answers
    Observations   every cluster's gossip status and since when (stewardship, fail-safe)
    Stewards       which entry acts as a service's home now
    Publisher      push a changed record to the clusters that share it
    LoadSignal     this cluster's load changed: gossip it
    Spawner        run a job in the background, owned (and cancelled) by the agent
    EntryRoutes    make every entry's HAProxy follow a committed record
    Mover          run a migration (the fail-safe moves through the engine)
"""
from __future__ import annotations

from collections.abc import Coroutine
from typing import Any, Protocol

from peer.federation.membership import MemberView
from peer.migration.history import Migration
from peer.records.record import Record
from peer.homeset.stewardship import Observed
from placement import ClusterView


class MemberLookup(Protocol):
    def get(self, name: str) -> MemberView | None: ...


class Members(Protocol):
    @property
    def membership(self) -> MemberLookup: ...


class ClusterViews(Protocol):
    def cluster_views(self) -> dict[str, ClusterView]: ...

    def own_view(self) -> ClusterView: ...


class PeerDirectory(Protocol):
    def api_url_of(self, cluster: str) -> str | None: ...


class Observations(Protocol):
    def observed(self) -> dict[str, Observed]: ...


class Stewards(Protocol):
    def steward_of(self, record: Record) -> str | None: ...


class Publisher(Protocol):
    async def publish(self, record: Record, extra: frozenset[str] = frozenset()) -> None: ...

    async def publish_now(self, record: Record, extra: frozenset[str] = frozenset(),
                          skip: frozenset[str] = frozenset()) -> None: ...


class LoadSignal(Protocol):
    def load_changed(self) -> None: ...


class Spawner(Protocol):
    def spawn(self, coro: Coroutine[Any, Any, Any]) -> None: ...


class EntryRoutes(Protocol):
    async def route_entries(self, record: Record, *, skip: frozenset[str] = frozenset(),
                            release: bool = False,
                            timings: dict[str, dict[str, float]] | None = None) -> list[str]: ...


class Mover(Protocol):
    async def migrate(self, name: str, *, target: str | None = None, reason: str = "api",
                      kind: str = "planned") -> Migration: ...


# -- what each part needs: the sum of its seams ------------------------------------------------
class EngineSeams(Members, ClusterViews, PeerDirectory, Publisher, Spawner, Protocol):
    """MigrationEngine: checks a target's status, ranks views, calls peers, publishes the commit."""


class FailSafeSeams(Members, Observations, ClusterViews, PeerDirectory, Publisher, LoadSignal, Spawner,
                    Protocol):
    """FailSafe: confirms a loss, admits a redeploy here, publishes and releases in the background."""


class StandbySeams(ClusterViews, PeerDirectory, Publisher, LoadSignal, Spawner, Protocol):
    """StandbyKeeper: places warm copies by the views, publishes what it commits."""


class PolicySeams(Members, ClusterViews, Stewards, Protocol):
    """PolicyTriggers: decides from the views for the services it stewards."""


class ReplicaSeams(ClusterViews, Publisher, LoadSignal, Protocol):
    """ReplicaHandlers: admits copies by its own view, publishes a reroute's commit."""
