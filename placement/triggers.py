"""When should a running service move? Pure trigger logic with hysteresis, so services do not flap.

`decide` looks at one service (where it runs, where its home is) and the gossip views, and says
`Stay`, `Move(target)` or `ComeHome`. Checks, first match wins:

1. **lost**: the current host (not the home) is failed or unknown -> redeploy at the best
   eligible cluster, normally home (the paper's fail-safe). Ignores dwell time.
2. **link**: the link between home and the current host is BAD (bandwidth below
   `come_home_mbps` or RTT above `come_home_rtt_ms`) -> move to the best eligible cluster with a
   GOOD link, or home. Ignores dwell time: staying means every request crosses a bad link.
3. **dwell**: the service moved less than `min_dwell_s` ago -> stay.
4. **overload**: the current host's CPU load is above `overload_cpu` -> move to the best
   eligible cluster, whatever the score gain.
5. **improve**: the best eligible cluster scores at least `min_gain` above the current host
   (scored as if the service were not there yet) -> move.

A cluster other than the home is *eligible* only if it admits the service (see `rank.admit`),
its link to home is GOOD (bandwidth >= `move_out_mbps` when known, RTT <= `move_out_rtt_ms`
when known, at least one known), and, for voluntary moves (overload, improve), its CPU load
after placing stays at or below `target_max_cpu`. The home only has to admit the service, and
for voluntary moves stay under `target_max_cpu` too.

Hysteresis comes from three gaps: a link must be GOOD to move in but only BAD forces a move
out, with a FAIR band in between where nothing happens; a host must be over `overload_cpu` to
be left but under `target_max_cpu` to be chosen; an improvement must beat the current score by
`min_gain`. `min_dwell_s` bounds the rate of voluntary moves whatever the inputs do.

Defaults (the paper's deep-edge/edge/cloud use case with `Balanced`): move out at >= 50 Mbps
and <= 50 ms, come home below 10 Mbps or above 200 ms, overload above 90 % CPU, targets at most
75 % after placing, 60 s dwell, 0.1 score gain. With good links the classifier goes from the
deep-edge home to the cloud; when the cloud link degrades below 10 Mbps it moves to the edge if
that link is good, else home; on an outage it comes home.
"""
from __future__ import annotations

import enum
import math
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Literal, TypeAlias

from placement.errors import InvalidThresholds
from placement.model import Candidate, ClusterView, Requirements
from placement.policies import DEFAULT_POLICY, Policy
from placement.rank import rank

Trigger: TypeAlias = Literal["lost", "link", "overload", "improve"]


class LinkQuality(enum.IntEnum):
    BAD = 0
    FAIR = 1
    GOOD = 2


@dataclass(frozen=True)
class Thresholds:
    """Trigger thresholds; see the module docstring for what each gap prevents."""

    move_out_mbps: float = 50.0
    come_home_mbps: float = 10.0
    move_out_rtt_ms: float = 50.0
    come_home_rtt_ms: float = 200.0
    overload_cpu: float = 0.9
    target_max_cpu: float = 0.75
    min_dwell_s: float = 60.0
    min_gain: float = 0.1

    def __post_init__(self) -> None:
        for name, value in vars(self).items():
            if not (math.isfinite(value) and value >= 0):
                raise InvalidThresholds(f"{name} must be finite and >= 0, got {value!r}")
        if not self.come_home_mbps < self.move_out_mbps:
            raise InvalidThresholds("come_home_mbps must be below move_out_mbps (hysteresis)")
        if not self.move_out_rtt_ms < self.come_home_rtt_ms:
            raise InvalidThresholds("move_out_rtt_ms must be below come_home_rtt_ms (hysteresis)")
        if not self.target_max_cpu < self.overload_cpu:
            raise InvalidThresholds("target_max_cpu must be below overload_cpu (hysteresis)")


DEFAULT_THRESHOLDS = Thresholds()


@dataclass(frozen=True)
class Stay:
    reason: str


@dataclass(frozen=True)
class Move:
    target: str
    reason: str
    trigger: Trigger


@dataclass(frozen=True)
class ComeHome:
    reason: str
    trigger: Trigger


Decision: TypeAlias = Stay | Move | ComeHome


def link_quality(view: ClusterView | None, *, home: str, thresholds: Thresholds) -> LinkQuality:
    """Quality of the link between `view` and the home (the home's link to itself is GOOD)."""
    if view is None or not view.alive:
        return LinkQuality.BAD
    if view.name == home:
        return LinkQuality.GOOD
    bw, rtt = view.bandwidth_mbps, view.rtt_ms
    if (bw is not None and bw < thresholds.come_home_mbps) or (
        rtt is not None and rtt > thresholds.come_home_rtt_ms
    ):
        return LinkQuality.BAD
    if bw is None and rtt is None:
        return LinkQuality.FAIR
    if (bw is None or bw >= thresholds.move_out_mbps) and (
        rtt is None or rtt <= thresholds.move_out_rtt_ms
    ):
        return LinkQuality.GOOD
    return LinkQuality.FAIR


def _load_after(req: Requirements, view: ClusterView) -> float:
    if view.cpu_capacity <= 0:
        return math.inf
    return (view.cpu_used + req.cpu) / view.cpu_capacity


def _best_target(
    req: Requirements,
    views: Mapping[str, ClusterView],
    *,
    current: str,
    home: str,
    thresholds: Thresholds,
    policy: Policy,
    voluntary: bool,
) -> Candidate | None:
    """The best eligible cluster other than `current`, by `policy` (see module doc)."""
    excluded = {current}
    for view in views.values():
        link = link_quality(view, home=home, thresholds=thresholds)
        if view.name != home and link != LinkQuality.GOOD:
            excluded.add(view.name)
        elif voluntary and _load_after(req, view) > thresholds.target_max_cpu:
            excluded.add(view.name)
    placement = rank(
        replace(req, avoid=req.avoid | excluded), views.values(), home=home, policy=policy
    )
    return placement.best


def _without_service(req: Requirements, view: ClusterView) -> ClusterView:
    """`view` as if the service were not running there, to score staying like moving."""
    return replace(
        view,
        cpu_used=max(0.0, view.cpu_used - req.cpu),
        mem_used=max(0, view.mem_used - req.memory),
        slots_used=max(0, view.slots_used - 1),
    )


def _go(target: Candidate, *, home: str, reason: str, trigger: Trigger) -> Decision:
    if target.name == home:
        return ComeHome(reason, trigger)
    return Move(target.name, reason, trigger)


def decide(
    *,
    req: Requirements,
    current: str,
    home: str,
    views: Mapping[str, ClusterView],
    last_move_at: float,
    now: float,
    thresholds: Thresholds = DEFAULT_THRESHOLDS,
    policy: Policy | None = None,
) -> Decision:
    """Should the service homed at `home` and running at `current` move? See module doc.

    `views` maps member names to their views (the deciding cluster's gossip), `last_move_at`
    and `now` are seconds on one clock (pass `-math.inf` for a service that never moved).
    """
    chosen = DEFAULT_POLICY if policy is None else policy
    here = views.get(current)

    def best(voluntary: bool) -> Candidate | None:
        return _best_target(
            req, views, current=current, home=home,
            thresholds=thresholds, policy=chosen, voluntary=voluntary,
        )

    if here is None or not here.alive:
        if current == home:
            return Stay(f"home {home} is down or unknown: nowhere to reroute from")
        target = best(voluntary=False)
        if target is None:
            why = f"{current} is lost and no cluster admits the service; redeploy at home anyway"
            return ComeHome(why, "lost")
        why = f"{current} is lost; {target.name} is the best eligible"
        return _go(target, home=home, reason=why, trigger="lost")

    quality = link_quality(here, home=home, thresholds=thresholds)
    if quality == LinkQuality.BAD:
        target = best(voluntary=False)
        if target is None:
            return Stay(f"link {home}-{current} is bad but no cluster can take the service")
        why = f"link {home}-{current} is bad; {target.name} is the best eligible"
        return _go(target, home=home, reason=why, trigger="link")

    since = now - last_move_at
    if since < thresholds.min_dwell_s:
        return Stay(f"dwell: moved {since:.0f} s ago, minimum {thresholds.min_dwell_s:g} s")

    if here.cpu_load > thresholds.overload_cpu:
        overload = f"{current} is overloaded ({here.cpu_load:.0%} cpu)"
        target = best(voluntary=True)
        if target is None:
            return Stay(f"{overload} but no cluster is eligible")
        why = f"{overload}; {target.name} is the best eligible"
        return _go(target, home=home, reason=why, trigger="overload")

    target = best(voluntary=True)
    if target is None:
        return Stay("no other cluster is eligible")
    staying, _ = chosen.score(req, _without_service(req, here), home=home)
    versus = f"{target.name} scores {target.score:.3f} vs {staying:.3f} here"
    if target.score < staying + thresholds.min_gain:
        return Stay(f"{versus}: gain below {thresholds.min_gain:g}")
    return _go(target, home=home, reason=versus, trigger="improve")
