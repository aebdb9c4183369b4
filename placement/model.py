"""What placement decides from and what it answers: plain frozen values, validated on construction.

The agent builds one `ClusterView` per member from Serf tags (load) and Serf coordinates (RTT);
placement never looks anything up itself. Validation happens here, once, so that the policies and
the trigger logic can do arithmetic without guarding against NaN or negative gossip.
"""
from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

from placement.errors import InvalidRequirements, InvalidView


def _finite_nonneg(value: float) -> bool:
    if isinstance(value, int):  # math.isfinite overflows on huge ints; ints are always finite
        return value >= 0
    return math.isfinite(value) and value >= 0


@dataclass(frozen=True)
class ClusterView:
    """What gossip tells about one member, as seen by the cluster that places.

    `rtt_ms` and `bandwidth_mbps` describe the link between this member and the service's home
    cluster (Serf coordinates estimate the RTT of any pair, so the agent can fill it in wherever
    it places). `None` means unknown; for the home itself both are treated as perfect.
    `*_used` may exceed `*_capacity` (overcommit); such a member is simply full.
    """

    name: str
    alive: bool
    tier: str
    cpu_capacity: float
    cpu_used: float
    mem_capacity: int
    mem_used: int
    slots_capacity: int
    slots_used: int
    rtt_ms: float | None = None
    bandwidth_mbps: float | None = None
    accepting: bool = True
    accepts_homes: frozenset[str] | None = None  # its workload policy's accept-from; None: any home

    def takes_home(self, home: str | None) -> bool:
        """Whether its gossiped policy accepts services homed at `home` (its own always)."""
        return home is None or self.accepts_homes is None or home == self.name or home in self.accepts_homes

    def __post_init__(self) -> None:
        if not self.name:
            raise InvalidView("a cluster view needs a name")
        numbers = {
            "cpu_capacity": self.cpu_capacity,
            "cpu_used": self.cpu_used,
            "mem_capacity": self.mem_capacity,
            "mem_used": self.mem_used,
            "slots_capacity": self.slots_capacity,
            "slots_used": self.slots_used,
        }
        if self.rtt_ms is not None:
            numbers["rtt_ms"] = self.rtt_ms
        if self.bandwidth_mbps is not None:
            numbers["bandwidth_mbps"] = self.bandwidth_mbps
        for field, value in numbers.items():
            if not _finite_nonneg(value):
                raise InvalidView(f"{self.name}: {field} must be finite and >= 0, got {value!r}")

    @property
    def cpu_load(self) -> float:
        """Fraction of CPU in use (1.0 when a member with no CPU is asked)."""
        return self.cpu_used / self.cpu_capacity if self.cpu_capacity > 0 else 1.0


@dataclass(frozen=True)
class Requirements:
    """What one instance of a service needs from its host, plus where it may (not) go.

    Every instance takes one service slot. `tiers`, when not empty, lists the allowed tiers;
    `avoid` names clusters not to pick (e.g. the current location when migrating away);
    `home`, when given, is checked against each member's gossiped accept-from policy.
    Plain sets are accepted and frozen.
    """

    cpu: float
    memory: int
    tiers: frozenset[str] = frozenset()
    avoid: frozenset[str] = frozenset()
    home: str | None = None  # the service's HC: a member whose policy refuses its home is not chosen

    def __post_init__(self) -> None:
        if not _finite_nonneg(self.cpu):
            raise InvalidRequirements(f"cpu must be finite and >= 0, got {self.cpu!r}")
        if self.memory < 0:
            raise InvalidRequirements(f"memory must be >= 0, got {self.memory!r}")
        object.__setattr__(self, "tiers", frozenset(self.tiers))
        object.__setattr__(self, "avoid", frozenset(self.avoid))


class Candidate:
    """One acceptable destination, with its score and why it got it (for logs and the API).

    `reasons` may be given, or computed on first use as `explain(view)` (`rank` passes the
    policy's explanation and the member's view, so a ranking of 1,000 members formats the
    reasons of only those someone reads, and allocates nothing per member but the candidate).
    Immutable and compared by value (name, score, reasons) like the frozen dataclass it replaces.
    """

    __slots__ = ("_name", "_score", "_reasons", "_explain", "_view")

    def __init__(self, name: str, score: float, reasons: tuple[str, ...] | None = None,
                 explain: Callable[[ClusterView], tuple[str, ...]] | None = None,
                 view: ClusterView | None = None) -> None:
        if reasons is None and (explain is None or view is None):
            raise TypeError("Candidate needs reasons, or explain and the view it explains")
        self._name = name
        self._score = score
        self._reasons = reasons
        self._explain = explain
        self._view = view

    @property
    def name(self) -> str:
        return self._name

    @property
    def score(self) -> float:
        return self._score

    @property
    def reasons(self) -> tuple[str, ...]:
        if self._reasons is None:
            assert self._explain is not None and self._view is not None
            self._reasons = tuple(self._explain(self._view))
            self._explain = self._view = None
        return self._reasons

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Candidate):
            return NotImplemented
        return (self.name, self.score, self.reasons) == (other.name, other.score, other.reasons)

    def __hash__(self) -> int:
        return hash((self.name, self.score, self.reasons))

    def __repr__(self) -> str:
        return f"Candidate(name={self.name!r}, score={self.score!r}, reasons={self.reasons!r})"


@dataclass(frozen=True)
class Rejection:
    """One member that cannot take the service, and why (`reason` starts with a stable code)."""

    name: str
    reason: str


@dataclass(frozen=True)
class Placement:
    """The answer to a Placement Request: acceptable members best first, and the rest."""

    ranked: tuple[Candidate, ...]
    rejected: tuple[Rejection, ...]

    @property
    def best(self) -> Candidate | None:
        return self.ranked[0] if self.ranked else None
