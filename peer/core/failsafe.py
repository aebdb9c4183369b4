"""When the location of a service counts as lost, and what the fail-safe does then: the timing
math of peer/migration/failsafe.py, apart from its timers and probes (as memberlist keeps
`suspicion.go` apart from its transport). The loop feeds in what it sees (gossip's status of
the location, this entry's HAProxy check, a ping's answer when asked) and the time; the core
answers with a verdict.

Rules (the module docstring of peer/migration/failsafe.py says why):
  * nothing is wrong while the route is up and gossip does not report the location failed;
  * the first evidence opens a suspicion; Serf's own timestamp dates it when Serf noticed;
  * Serf's "failed"/"left" is a loss at once when this entry's check of the recorded copy
    agrees (its route is down); otherwise a ping decides: an answer means gossip is stale (a
    partition healed and Serf has not seen the location alive again yet), no loss;
  * a location gossip does not know is lost after UNKNOWN_GRACE if it does not answer a ping;
  * a route down: for LB_DOWN_GRACE the steward starts the home copy ahead (unless a standby
    can be promoted, or a copy started ahead was removed less than AHEAD_EVERY ago), then a
    ping decides: no answer is a loss; an answer is a hung copy only after STUCK_GRACE;
  * only the steward acts; the other entries keep the evidence (for stewardship);
  * a failed fail-safe is retried RETRY_AFTER later (a failed promotion PROMOTE_RETRY later).
"""
from __future__ import annotations

from dataclasses import dataclass, replace

LB_DOWN_GRACE = 0.3  # seconds the route must stay down before the AC is pinged
UNKNOWN_GRACE = 2.0  # ...before an AC gossip does not know (e.g. it died while this agent was down)
STUCK_GRACE = 5.0  # ...before a copy the AC answers for but that serves nothing is replaced
AHEAD_EVERY = 5.0  # after a copy started ahead was removed (loss not confirmed), confirm first this long
CONFIRM_TICK = 0.02  # how often the route is looked at while a copy started ahead and the grace runs
RETRY_AFTER = 5.0  # a fail-safe that failed (e.g. home cannot admit it) is retried this much later
PROMOTE_RETRY = 1.0  # a promotion that failed: the redeploy is tried this much later
LOST = ("failed", "left")


@dataclass(frozen=True)
class Seen:
    """What this entry sees of the location now: gossip's status (None: unknown to gossip) and
    since when (monotonic seconds), whether its HAProxy check of the primary is up, and whether
    that primary is the copy the record names (`route_current`)."""

    status: str | None
    since: float | None
    route_up: bool
    route_current: bool = True

    @property
    def serf_lost(self) -> bool:
        return self.status in LOST

    @property
    def gossip_alone(self) -> bool:
        """Gossip reports the location lost, but this entry's check of the recorded copy does
        not agree: the location is asked (`assess`), as gossip may be stale."""
        return self.serf_lost and not self.route_down

    @property
    def route_down(self) -> bool:
        """The checks say the location's copy does not serve. Only a route to the copy the
        record names is evidence: one still at the copy the record left (a record merged a
        moment ago, whose Reroute action has not run yet) is down because that copy is gone,
        and says nothing of the location. Seen at an HC back from a site loss: its restored
        route named its own dead copy, the merged record named the deputy's, and it started a
        copy ahead beside the deputy's."""
        return self.route_current and not self.route_up


@dataclass(frozen=True)
class Suspicion:
    location: str
    since: float  # monotonic time of the first evidence
    retry_at: float = 0.0


# -- verdicts -------------------------------------------------------------------------------
@dataclass(frozen=True)
class Wait:
    """Nothing to do now (within a grace, or before a retry, or the AC answers for its copy)."""


@dataclass(frozen=True)
class Ping:
    """Ask the location (peer API PING), then assess again with the answer."""


@dataclass(frozen=True)
class StartAhead:
    """First evidence at the steward: start the home copy now, confirm the loss while it starts."""


@dataclass(frozen=True)
class Lost:
    """The location is lost. `act`: this cluster is the steward and fails over; `unreachable`:
    the probes found it unreachable (the stewardship view is told)."""

    evidence: str
    since: float
    act: bool
    unreachable: bool


Verdict = Wait | Ping | StartAhead | Lost


def suspect(previous: Suspicion | None, location: str, seen: Seen, now: float) -> Suspicion | None:
    """The suspicion after this observation: None when nothing is wrong (no route down and
    gossip not reporting a loss), else the one under way for this location or a new one."""
    if not seen.serf_lost and not seen.route_down:
        return None
    if previous is not None and previous.location == location:
        return previous
    first = min(now, seen.since) if seen.serf_lost and seen.since is not None else now
    return Suspicion(location, first)


def assess(suspicion: Suspicion, seen: Seen, now: float, *, reachable: bool | None, steward: bool,
           ahead_ok: bool) -> Verdict:
    """The verdict on a suspicion. `reachable` None: not pinged yet (the answer may be `Ping`);
    `ahead_ok`: a copy may be started ahead (no standby to promote, none removed lately)."""
    if now < suspicion.retry_at:
        return Wait()
    down_for = now - suspicion.since
    location = suspicion.location
    unreachable = False
    if seen.gossip_alone:
        # Gossip alone, while this entry's check of the recorded copy passes (or its route
        # is not at that copy yet): right after a partition heals, Serf keeps a returned
        # cluster "failed" for a second or more after its records arrived. Acting on that
        # word ran a second steward's fail-safe on the HC's own copy in the demo's recovery.
        if reachable is None:
            return Ping()
        if reachable:
            return Wait()
        evidence = f"serf reports {location} {seen.status} and it does not answer"
        unreachable = True
    elif seen.serf_lost:
        evidence = f"serf reports {location} {seen.status}"
    elif seen.status is None:
        # Unknown right after a restart is not lost; unknown and not serving for a while is.
        if down_for < UNKNOWN_GRACE:
            return Wait()
        if reachable is None:
            return Ping()
        if reachable:
            return Wait()
        evidence = f"haproxy checks down and {location} unknown to gossip"
    elif down_for < LB_DOWN_GRACE:
        return StartAhead() if steward and ahead_ok else Wait()
    elif reachable is None:
        return Ping()
    elif reachable:
        if down_for < STUCK_GRACE:
            return Wait()  # the AC is there: its driver restarts a crashed copy
        evidence = f"haproxy checks down for {down_for:.1f}s although {location} answers (hung copy)"
    else:
        evidence = f"haproxy checks down and {location} unreachable"
        unreachable = True
    return Lost(evidence, suspicion.since, act=steward, unreachable=unreachable)


def ahead_ok(*, standbys: bool, dropped_at: float | None, now: float) -> bool:
    """May the steward start the home copy at the first evidence? Not when a standby may be
    promoted instead, nor again within AHEAD_EVERY of removing one the loss did not confirm."""
    return not standbys and (dropped_at is None or now - dropped_at >= AHEAD_EVERY)


def confirm(suspicion: Suspicion, seen: Seen, now: float, *, reachable: bool | None) -> Lost | Wait | Ping | None:
    """While a copy started ahead: the evidence `assess` would act on. `Lost` at Serf's word
    with the route down, or once the route stayed down through LB_DOWN_GRACE and the ping went
    unanswered; None (not a loss: the copy ahead is removed) as soon as the route is up or the
    location answers;
    `Wait` (look again in `confirm_delay`) while the grace runs; `Ping` once it ran out."""
    location = suspicion.location
    if not seen.route_down:
        return None  # it serves (whatever gossip says: `assess`)
    if seen.serf_lost:
        return Lost(f"serf reports {location} {seen.status}", suspicion.since, act=True, unreachable=False)
    if now < suspicion.since + LB_DOWN_GRACE:
        return Wait()
    if reachable is None:
        return Ping()
    if reachable:
        return None
    return Lost(f"haproxy checks down and {location} unreachable", suspicion.since, act=True, unreachable=True)


def confirm_delay(suspicion: Suspicion, now: float) -> float:
    """How long the confirmation waits before it looks again."""
    return max(0.0, min(CONFIRM_TICK, suspicion.since + LB_DOWN_GRACE - now))


def retry_later(suspicion: Suspicion | None, now: float, *, after: float = RETRY_AFTER) -> Suspicion | None:
    """A fail-safe (or promotion) that failed: the same suspicion, acted on again `after` later."""
    return None if suspicion is None else replace(suspicion, retry_at=now + after)
