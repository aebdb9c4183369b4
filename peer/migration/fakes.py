"""In-memory fakes of the seams in peer/migration/seams.py, for unit tests of the migration
parts (the real ones are the Agent and the home-set client; integration tests use those).

`FakeFederation` is a federation as one cluster sees it: members and their views set by the
test, peer API addresses `http://NAME`, and everything the part did to it (published records,
load changes, background jobs) recorded for the test to assert on. Background jobs are not
run: their names are recorded and the coroutines closed, so a unit test stays deterministic
and leaks no task.
"""
from __future__ import annotations

from collections.abc import Coroutine, Iterable
from dataclasses import dataclass, field
from typing import Any

from peer.federation.membership import MemberView
from peer.migration.history import Migration
from peer.records.record import Record
from peer.homeset.stewardship import Observed
from placement import ClusterView


def member(name: str, status: str = "alive", *, since: float = 0.0) -> MemberView:
    """A member as gossip would show it (loopback address, API on 7070)."""
    return MemberView(name=name, addr="127.0.0.1", gossip_port=7946, status=status, tier=None, api_port=7070,
                      scheme="http", load=None, tags={}, rtt_ms=None, since=since)


def view(name: str, *, tier: str = "edge", alive: bool = True, cpu: float = 4.0, slots: int = 8) -> ClusterView:
    """Room for a few services, nothing used."""
    return ClusterView(name=name, alive=alive, tier=tier, cpu_capacity=cpu, cpu_used=0, mem_capacity=1 << 32,
                       mem_used=0, slots_capacity=slots, slots_used=0)


class FakeMembers:
    def __init__(self, members: Iterable[MemberView]) -> None:
        self.members = {m.name: m for m in members}

    def get(self, name: str) -> MemberView | None:
        return self.members.get(name)


@dataclass
class FakeFederation:
    """Implements every seam of peer/migration/seams.py but `EntryRoutes` and `Mover`
    (FakeEntries, FakeMover below)."""

    here: str
    clusters: list[str]
    stewards: dict[str, str] = field(default_factory=dict)  # service -> steward (default: here)
    published: list[tuple[str, str, frozenset[str]]] = field(default_factory=list)  # (how, name, extra)
    spawned: list[str] = field(default_factory=list)
    load_changes: int = 0

    def __post_init__(self) -> None:
        self.membership = FakeMembers(member(c) for c in self.clusters)
        self.views = {c: view(c) for c in self.clusters}

    def cluster_views(self) -> dict[str, ClusterView]:
        return dict(self.views)

    def own_view(self) -> ClusterView:
        return self.views[self.here]

    def api_url_of(self, cluster: str) -> str | None:
        found = self.membership.get(cluster)
        return None if found is None else f"http://{cluster}"

    def observed(self) -> dict[str, Observed]:
        return {m.name: Observed(m.status, m.since) for m in self.membership.members.values()}

    def steward_of(self, record: Record) -> str | None:
        return self.stewards.get(record.name, self.here)

    async def publish(self, record: Record, extra: frozenset[str] = frozenset()) -> None:
        self.published.append(("publish", record.name, extra))

    async def publish_now(self, record: Record, extra: frozenset[str] = frozenset(),
                          skip: frozenset[str] = frozenset()) -> None:
        self.published.append(("publish_now", record.name, extra))

    def load_changed(self) -> None:
        self.load_changes += 1

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        self.spawned.append(coro.__qualname__)
        coro.close()


@dataclass
class FakeEntries:
    """Every other entry routes at once; `missing` are the ones that do not confirm."""

    missing: list[str] = field(default_factory=list)
    routed: list[str] = field(default_factory=list)

    async def route_entries(self, record: Record, *, skip: frozenset[str] = frozenset(),
                            release: bool = False,
                            timings: dict[str, dict[str, float]] | None = None) -> list[str]:
        self.routed.append(record.name)
        return list(self.missing)


@dataclass
class FakeMover:
    """Records the migrations asked for; `error`, if set, is raised by each."""

    asked: list[tuple[str, str | None, str]] = field(default_factory=list)
    error: Exception | None = None

    async def migrate(self, name: str, *, target: str | None = None, reason: str = "api",
                      kind: str = "planned") -> Migration:
        self.asked.append((name, target, kind))
        if self.error is not None:
            raise self.error
        return Migration(service=name, kind=kind, reason=reason, coordinator="", home="", source="", target=target)
