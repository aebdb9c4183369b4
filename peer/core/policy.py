"""The policy loop's rules around `placement.decide` (which is pure already and holds the
hysteresis): which services it may consider, when their dwell time starts, and the target
of a decision. The loop (peer/migration/policy.py) feeds the live view and acts."""
from __future__ import annotations

from placement import ComeHome, Decision, Move


def may_consider(*, location: str, here: str, status: str | None) -> bool:
    """Lost hosts are the fail-safe's job: a service whose location is not alive (in gossip's
    view) is not the policy's, unless it runs here."""
    return location == here or status == "alive"


def dwell_from(first_seen: float, last_move: float | None) -> float:
    """Dwell counts from the last move of any kind (a fail-safe too); a service first seen now
    (just deployed, or the agent restarted) starts its dwell time when first seen."""
    return max(first_seen, last_move if last_move is not None else first_seen)


def target_of(decision: Decision, *, location: str, home: str) -> str | None:
    """Where the decision moves the service, or None (stay)."""
    if isinstance(decision, Move):
        target = decision.target
    elif isinstance(decision, ComeHome):
        target = home
    else:
        return None
    return None if target == location else target
