"""Which failure detections a fault explains, and which it does not (false detections).

A member seen failed by an observer is *explained* when some fault applied before that moment
touched the member or the observer as a whole (its agent or Serf killed or paused, its link
down, its bandwidth cut, the cluster isolated), or cut the link between the two. Anything else
(say `c` seeing `a` failed while only `a|b` was cut) is a false detection: gossip got it wrong.

Pure functions over fault objects and observed episodes, so they are tested with plain values.
"""
from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from chaos.faults import Bandwidth, Composite, Fault, LinkDown, NetworkCut, SignalFault
from chaos.netns import Testbed

WHOLE_NODE_TARGETS = frozenset({"agent", "serf"})


@dataclass(frozen=True)
class Scope:
    """What a fault touches: whole nodes, and node pairs whose link it cuts."""

    nodes: frozenset[str] = frozenset()
    pairs: frozenset[frozenset[str]] = frozenset()

    def explains(self, observer: str, member: str) -> bool:
        return (observer in self.nodes or member in self.nodes
                or frozenset((observer, member)) in self.pairs)

    def __or__(self, other: Scope) -> Scope:
        return Scope(self.nodes | other.nodes, self.pairs | other.pairs)


def scope(fault: Fault, tb: Testbed) -> Scope:
    """The scope of a fault (see the module doc). Faults on HAProxy or a service touch no
    member: Serf should keep seeing that cluster alive."""
    if isinstance(fault, Composite):
        out = Scope()
        for part in fault.parts:
            out = out | scope(part, tb)
        return out
    if isinstance(fault, NetworkCut):
        return Scope(pairs=frozenset(frozenset(p) for p in fault.cuts(tb) if p[0] != p[1]))
    if isinstance(fault, (LinkDown, Bandwidth)):
        return Scope(nodes=frozenset({fault.cluster}))
    cluster = getattr(fault, "cluster", None)
    if isinstance(cluster, str):  # AgentCrash and the like
        return Scope(nodes=frozenset({cluster}))
    if isinstance(fault, SignalFault):
        node, _, what = fault.label.partition("/")
        if what in WHOLE_NODE_TARGETS:
            return Scope(nodes=frozenset({node}))
    return Scope()


@dataclass
class Episode:
    """`observer` saw `member` failed from `start` (monotonic) until `end` (None: still)."""

    observer: str
    member: str
    start: float
    end: float | None = None


@dataclass(frozen=True)
class AppliedFault:
    at: float  # monotonic time it was applied
    description: str
    scope: Scope = field(default_factory=Scope)


def false_detections(episodes: Iterable[Episode],
                     applied: Sequence[AppliedFault]) -> list[Episode]:
    """Episodes no fault applied before their start explains."""
    return [ep for ep in episodes
            if not any(f.at <= ep.start and f.scope.explains(ep.observer, ep.member)
                       for f in applied)]
