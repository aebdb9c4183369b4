"""Scoring policies: how good a destination an acceptable member is (higher is better).

Policies only score members that `rank` already found able to take the service, so they never
need to re-check capacity or constraints. Every score lies in [0, 1] and comes with
human-readable reasons that show each term's contribution.

`Balanced` is the default. It is a weighted mean of six terms, each in [0, 1]:

| term      | weight | value                                                          |
| --------- | ------ | -------------------------------------------------------------- |
| cpu       | 0.25   | free CPU fraction after placing the service                    |
| memory    | 0.15   | free memory fraction after placing                             |
| slots     | 0.10   | free service-slot fraction after placing                       |
| rtt       | 0.20   | 1 / (1 + rtt_ms / 50): 1 at home, 0.5 at 50 ms, 0.5 if unknown  |
| bandwidth | 0.10   | mbps / (mbps + 100): 1 at home, 0.5 at 100 Mbps or unknown     |
| tier      | 0.20   | (n - i) / n for the i-th of n preferred tiers, 0 if not listed |

The default tier order `cloud > edge > deep-edge` suits compute-hungry services (the paper's
classifier): with a good link the cloud wins, with a degraded one the edge, and home is the
fallback. For a latency-bound service use `Nearest`, or `Balanced(tier_order=())`.
"""
from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, fields
from functools import cached_property
from typing import Protocol

from placement.errors import InvalidPolicy, UnknownPolicy
from placement.model import ClusterView, Requirements


class Policy(Protocol):
    """Scores one acceptable member for one service; `home` is the service's home cluster.

    A policy may also offer `values(req, views, *, home) -> list[float]`, the scores of many
    members without their reasons: `rank` then scores every acceptable member in one call and
    builds the reasons only when asked (formatting six strings per member was 80 % of ranking
    1,000 clusters; a call per member, a third of the rest). The two must agree exactly:
    `values(req, [view], home=h)[0] == score(req, view, home=h)[0]`.
    """

    @property
    def name(self) -> str: ...

    def score(
        self, req: Requirements, view: ClusterView, *, home: str
    ) -> tuple[float, tuple[str, ...]]: ...


def headroom(capacity: float, used: float, need: float) -> float:
    """Fraction of `capacity` still free once `need` is added, clamped to [0, 1]."""
    if capacity <= 0:
        return 0.0
    return min(1.0, max(0.0, (capacity - used - need) / capacity))


def rtt_to_home(view: ClusterView, *, home: str) -> float | None:
    """RTT between `view` and the home; the home is at distance 0 unless told otherwise."""
    if view.rtt_ms is None and view.name == home:
        return 0.0
    return view.rtt_ms


def bandwidth_to_home(view: ClusterView, *, home: str) -> float | None:
    """Bandwidth between `view` and the home; infinite for the home unless told otherwise."""
    if view.bandwidth_mbps is None and view.name == home:
        return math.inf
    return view.bandwidth_mbps


def _headrooms(req: Requirements, view: ClusterView) -> tuple[float, float, float]:
    return (
        headroom(view.cpu_capacity, view.cpu_used, req.cpu),
        headroom(view.mem_capacity, view.mem_used, req.memory),
        headroom(view.slots_capacity, view.slots_used, 1),
    )


@dataclass(frozen=True)
class Balanced:
    """Default policy: headroom after placing, nearness to home, bandwidth, tier (module doc)."""

    name: str = "balanced"
    tier_order: tuple[str, ...] = ("cloud", "edge", "deep-edge")
    cpu_weight: float = 0.25
    memory_weight: float = 0.15
    slots_weight: float = 0.10
    rtt_weight: float = 0.20
    bandwidth_weight: float = 0.10
    tier_weight: float = 0.20
    rtt_scale_ms: float = 50.0
    bandwidth_scale_mbps: float = 100.0

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name.endswith(("_weight", "_scale_ms", "_scale_mbps")) and not (
                math.isfinite(value) and value >= 0
            ):
                raise InvalidPolicy(f"Balanced.{f.name} must be finite and >= 0, got {value!r}")
        if self.rtt_scale_ms <= 0 or self.bandwidth_scale_mbps <= 0:
            raise InvalidPolicy("Balanced scales must be > 0")
        if self._total_weight() <= 0:
            raise InvalidPolicy("Balanced needs at least one positive weight")

    def _total_weight(self) -> float:
        return (
            self.cpu_weight + self.memory_weight + self.slots_weight
            + self.rtt_weight + self.bandwidth_weight + self.tier_weight
        )

    @cached_property
    def _tier_values(self) -> dict[str, float]:
        n = len(self.tier_order)
        values: dict[str, float] = {}
        for i, tier in enumerate(self.tier_order):
            values.setdefault(tier, (n - i) / n)  # the first listing wins, as with .index()
        return values

    @cached_property
    def _total(self) -> float:
        return self._total_weight()

    def tier_value(self, tier: str) -> float:
        return self._tier_values.get(tier, 0.0)

    def _terms(
        self, req: Requirements, view: ClusterView, home: str
    ) -> tuple[float, float, float, float | None, float, float | None, float, float]:
        cpu, mem, slots = _headrooms(req, view)
        rtt = rtt_to_home(view, home=home)
        bw = bandwidth_to_home(view, home=home)
        rtt_value = 0.5 if rtt is None else 1.0 / (1.0 + rtt / self.rtt_scale_ms)
        if bw is None:
            bw_value = 0.5
        elif math.isinf(bw):
            bw_value = 1.0
        else:
            bw_value = bw / (bw + self.bandwidth_scale_mbps)
        return cpu, mem, slots, rtt, rtt_value, bw, bw_value, self.tier_value(view.tier)

    def value(self, req: Requirements, view: ClusterView, *, home: str) -> float:
        """`score` without reasons."""
        return self.values(req, (view,), home=home)[0]

    def values(self, req: Requirements, views: Iterable[ClusterView], *, home: str) -> list[float]:
        """`score` without reasons for each of `views`, inlined: `rank` scores every acceptable
        member of the federation with one call, so the loop reads the weights once and calls
        nothing per member."""
        w_cpu, w_mem, w_slots = self.cpu_weight, self.memory_weight, self.slots_weight
        w_rtt, w_bw, w_tier = self.rtt_weight, self.bandwidth_weight, self.tier_weight
        rtt_scale, bw_scale, total = self.rtt_scale_ms, self.bandwidth_scale_mbps, self._total
        tier_value = self._tier_values.get
        need_cpu, need_mem = req.cpu, req.memory
        scores = []
        for view in views:
            cap = view.cpu_capacity
            cpu = (cap - view.cpu_used - need_cpu) / cap if cap > 0 else 0.0
            cpu = 0.0 if cpu < 0.0 else (1.0 if cpu > 1.0 else cpu)  # clamped as `headroom` is
            cap_m = view.mem_capacity
            mem = (cap_m - view.mem_used - need_mem) / cap_m if cap_m > 0 else 0.0
            mem = 0.0 if mem < 0.0 else (1.0 if mem > 1.0 else mem)
            cap_s = view.slots_capacity
            slots = (cap_s - view.slots_used - 1) / cap_s if cap_s > 0 else 0.0
            slots = 0.0 if slots < 0.0 else (1.0 if slots > 1.0 else slots)
            rtt = view.rtt_ms
            if rtt is None:
                rtt_value = 1.0 if view.name == home else 0.5
            else:
                rtt_value = 1.0 / (1.0 + rtt / rtt_scale)
            bw = view.bandwidth_mbps
            if bw is None:
                bw_value = 1.0 if view.name == home else 0.5
            elif bw == math.inf:
                bw_value = 1.0
            else:
                bw_value = bw / (bw + bw_scale)
            scores.append((
                w_cpu * cpu + w_mem * mem + w_slots * slots + w_rtt * rtt_value + w_bw * bw_value
                + w_tier * tier_value(view.tier, 0.0)
            ) / total)
        return scores

    def score(
        self, req: Requirements, view: ClusterView, *, home: str
    ) -> tuple[float, tuple[str, ...]]:
        cpu, mem, slots, rtt, rtt_value, bw, bw_value, tier_value = self._terms(req, view, home)
        total = self._total
        terms = (
            (self.cpu_weight, cpu, f"cpu headroom {cpu:.0%}"),
            (self.memory_weight, mem, f"memory headroom {mem:.0%}"),
            (self.slots_weight, slots, f"slot headroom {slots:.0%}"),
            (self.rtt_weight, rtt_value, _rtt_text(rtt)),
            (self.bandwidth_weight, bw_value, _bandwidth_text(bw)),
            (self.tier_weight, tier_value, f"tier {view.tier}"),
        )
        reasons = tuple(f"{text} (+{w * v / total:.3f})" for w, v, text in terms)
        return self.value(req, view, home=home), reasons


def _rtt_text(rtt: float | None) -> str:
    return "rtt to home unknown" if rtt is None else f"rtt to home {rtt:.1f} ms"


def _bandwidth_text(bw: float | None) -> str:
    if bw is None:
        return "bandwidth to home unknown"
    if math.isinf(bw):
        return "bandwidth: local"
    return f"bandwidth to home {bw:.0f} Mbps"


@dataclass(frozen=True)
class LeastLoaded:
    """Most headroom after placing wins, judged by the scarcest of CPU, memory and slots."""

    name: str = "least-loaded"

    def value(self, req: Requirements, view: ClusterView, *, home: str) -> float:
        return min(_headrooms(req, view))

    def values(self, req: Requirements, views: Iterable[ClusterView], *, home: str) -> list[float]:
        return [min(_headrooms(req, view)) for view in views]

    def score(
        self, req: Requirements, view: ClusterView, *, home: str
    ) -> tuple[float, tuple[str, ...]]:
        cpu, mem, slots = _headrooms(req, view)
        score = min(cpu, mem, slots)
        return score, (
            f"cpu headroom {cpu:.0%}",
            f"memory headroom {mem:.0%}",
            f"slot headroom {slots:.0%}",
            f"scarcest resource leaves {score:.0%}",
        )


@dataclass(frozen=True)
class Nearest:
    """Lowest RTT to home wins (score 1 / (1 + rtt_ms)); members with unknown RTT come last."""

    name: str = "nearest"

    def value(self, req: Requirements, view: ClusterView, *, home: str) -> float:
        rtt = rtt_to_home(view, home=home)
        return 0.0 if rtt is None else 1.0 / (1.0 + rtt)

    def values(self, req: Requirements, views: Iterable[ClusterView], *, home: str) -> list[float]:
        return [self.value(req, view, home=home) for view in views]

    def score(
        self, req: Requirements, view: ClusterView, *, home: str
    ) -> tuple[float, tuple[str, ...]]:
        rtt = rtt_to_home(view, home=home)
        if rtt is None:
            return 0.0, ("rtt to home unknown",)
        return 1.0 / (1.0 + rtt), (f"rtt to home {rtt:.1f} ms",)


DEFAULT_POLICY: Policy = Balanced()

POLICIES: dict[str, Policy] = {p.name: p for p in (DEFAULT_POLICY, LeastLoaded(), Nearest())}


def get_policy(name: str) -> Policy:
    """The registered policy called `name`; raises `UnknownPolicy` listing the known names."""
    try:
        return POLICIES[name]
    except KeyError as exc:
        raise UnknownPolicy(name, tuple(sorted(POLICIES))) from exc
