"""One migration as the coordinator (the steward) decides it: the checks before it starts,
the stages as a small state machine that returns commands, what a failure at each stage
leaves to undo, and the memory of workload refusals. No I/O: the engine
(peer/migration/engine.py) carries the commands out, and the model test of the whole protocol
(tests/core/test_protocol_model.py) drives the same machine over an in-memory federation.

The stages (paper II-C, Table I; the `state` stage of a stateful service is the engine's):

    replication -> wait -> reroute -> commit -> cleanup -> done
      StartCopy    (ready)  Route(here)  Commit+Route(others)  StopCopy(source)

Before the commit the move has a deadline: past it, or with the target lost, it is aborted
(the target's copy stopped, and from the reroute on this entry routed back to the old copy).
From the commit on the move stands and only the cleanup is left; the cleanup is one command
(an old location that does not hear it stops its copy when the record reaches it).
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

from peer.core import moves
from peer.core.journal import BEFORE_REROUTE
from peer.records.record import Record
from placement import Candidate

#: A cluster whose workload policy refused a descriptor is not proposed again for it this long
#: (placement learns policies from refusals; an explicit target is still asked).
REFUSAL_MEMORY = 600.0


# -- before a move --------------------------------------------------------------------------
@dataclass(frozen=True)
class TargetProblem:
    """Why an explicit target cannot be asked; `unknown`: no such cluster (bad input, 4xx)."""

    message: str
    unknown: bool = False


def target_problem(record: Record, target: str, status: str | None) -> TargetProblem | None:
    """An explicit target must be a known, alive cluster other than where it runs now."""
    if status is None:
        return TargetProblem(f"unknown cluster {target!r}", unknown=True)
    if status != "alive":
        return TargetProblem(f"cluster {target!r} is {status}")
    if target == record.location:
        return TargetProblem(f"{record.name!r} already runs at {target}")
    return None


class Refusals:
    """Which clusters refused which descriptor lately (cluster, digest) -> (rule, when)."""

    def __init__(self, memory: float = REFUSAL_MEMORY) -> None:
        self.memory = memory
        self.seen: dict[tuple[str, str], tuple[str, float]] = {}

    def remember(self, cluster: str, digest: str, rule: str, now: float) -> None:
        self.seen[(cluster, digest)] = (rule, now)

    def rule(self, cluster: str, digest: str, now: float) -> str | None:
        """The rule `cluster` refused this descriptor with lately, if it did (older is forgotten)."""
        seen = self.seen.get((cluster, digest))
        if seen is None or now - seen[1] > self.memory:
            self.seen.pop((cluster, digest), None)
            return None
        return seen[0]


def candidates(ranked: Sequence[Candidate], record: Record, *, explicit: bool, refusals: Refusals,
               now: float) -> list[Candidate]:
    """The order placement's candidates are asked in. A cluster that refused this descriptor
    lately is skipped (unless the caller named it). A standby's cluster comes first: its warm
    copy is reused (the driver adopts the running copy), so the move is a promotion with no
    deploy; its admission still applies."""
    asked = list(ranked) if explicit else [c for c in ranked if refusals.rule(c.name, record.digest, now) is None]
    standbys = set(record.standby_clusters)
    return sorted(asked, key=lambda c: c.name not in standbys)


# -- after a failure ------------------------------------------------------------------------
@dataclass(frozen=True)
class Failure:
    """What a move that failed at `stage` leaves to do: `route_back` (this entry had routed to
    the new copy, the commit did not happen), the history's outcome; the journal is closed."""

    route_back: bool
    outcome: str


def failure(stage: str) -> Failure:
    return Failure(route_back=stage == "reroute", outcome="aborted" if stage == "pr" else "failed")


def stands(record: Record | None, migration_id: str, target: str | None) -> bool:
    """Has the move's commit been written (the record runs it at the target under its id)?
    From then on the move stands whatever fails after: the target's copy is never aborted,
    the cleanup still runs (what failed after the commit is a note, not an outcome)."""
    return record is not None and not record.tombstone and record.migration_id == migration_id \
        and record.location == target


def interrupted_closes_journal(stage: str) -> bool:
    """A stop mid-move: before the reroute nothing is left to finish (close the journal); from
    the reroute on it stays open, so recovery decides from the route on the next start."""
    return stage in BEFORE_REROUTE


# -- the stages as a state machine ----------------------------------------------------------
@dataclass(frozen=True)
class StartCopy:
    cluster: str
    service: str
    migration_id: str


@dataclass(frozen=True)
class StopCopy:
    cluster: str
    service: str
    migration_id: str | None = None  # set when it aborts a copy arriving for this move


@dataclass(frozen=True)
class Route:
    entries: tuple[str, ...]
    service: str
    location: str


@dataclass(frozen=True)
class Commit:
    record: Record  # the content to write (the store adds the clock)


@dataclass(frozen=True)
class Abort:
    reason: str


Command = StartCopy | StopCopy | Route | Commit | Abort

STAGES = ("replication", "wait", "reroute", "commit", "cleanup", "done")


def journal_stage(stage: str) -> str:
    """The journal's stage for a machine stage: the engine journals `reroute` before it routes
    and commits in that same stage, so routed-not-committed (`commit` here) is still `reroute`
    there, and recovery (peer/core/journal.py) finishes it only if the route moved."""
    return "reroute" if stage == "commit" else stage


@dataclass(frozen=True)
class Move:
    id: str
    service: str
    coordinator: str
    source: str
    target: str
    deadline: float
    stage: str = "replication"
    instance: str | None = None

    @property
    def committed(self) -> bool:
        return self.stage in ("cleanup", "done")

    @property
    def running(self) -> bool:
        return self.stage != "done"


def arrival_expired(arrived_at: float, now: float, *, budget: float) -> bool:
    """May the target remove a copy arriving for a move that did not commit? Only once that
    move can no longer commit: its budget has run out since the copy arrived (the move began
    before, so its deadline has passed too). A shorter TTL removes a copy the move then
    commits to (the model test found it: the record runs the service where no copy is);
    the agent's PENDING_TTL (150 s) is above every readiness timeout for this reason."""
    return now - arrived_at > budget


def arrival_orphaned(*, ready: bool, since_poll: float, orphan_after: float, hold_max: float) -> bool:
    """Has the coordinator given up on an arriving copy (it died, or the move failed)? While the
    copy starts, the coordinator long-polls it, so `orphan_after` without a poll says so. Once it
    is ready the coordinator stops polling and reroutes, and a stateful move first holds the
    requests at the entries and transfers the state, for up to `hold_max`: a ready copy is
    orphaned only after `hold_max` more, or the move would commit to a copy that is gone."""
    return since_poll > (orphan_after + hold_max if ready else orphan_after)


def begin(*, migration_id: str, record: Record, coordinator: str, target: str, now: float, budget: float) -> Move:
    return Move(migration_id, record.name, coordinator, record.location, target, deadline=now + budget)


def step(move: Move, record: Record | None, *, now: float, target_alive: bool, ready_instance: str | None
         ) -> tuple[Move, tuple[Command, ...]]:
    """The next stage of `move` and the commands that get it there. `record`: what the
    coordinator holds now; `target_alive`: the target answers; `ready_instance`: the address
    of the target's copy once it is ready (None while it starts)."""
    if not move.running:
        return move, ()
    if not move.committed:
        why = _abort_reason(move, record, now=now, target_alive=target_alive)
        if why is not None:
            return abort(move, record, why)
    assert record is not None or move.committed
    if move.stage == "replication":
        return replace(move, stage="wait"), (StartCopy(move.target, move.service, move.id),)
    if move.stage == "wait":
        if ready_instance is None:
            return move, ()
        return replace(move, stage="reroute", instance=ready_instance), ()
    if move.stage == "reroute":  # the steward's own frontend first (make-before-break)
        return replace(move, stage="commit"), (Route((move.coordinator,), move.service, move.target),)
    if move.stage == "commit":
        assert record is not None and move.instance is not None
        done = moves.commit(record, location=move.target, instance=move.instance, migration_id=move.id)
        others = tuple(e for e in record.entries if e != move.coordinator)
        return replace(move, stage="cleanup"), (Commit(done), Route(others, move.service, move.target))
    # cleanup: the old copy stops only now that every entry routes to the new one
    return replace(move, stage="done"), (StopCopy(move.source, move.service),)


def _abort_reason(move: Move, record: Record | None, *, now: float, target_alive: bool) -> str | None:
    if now > move.deadline:
        return f"deadline passed at {move.stage}"
    if not target_alive:
        return f"target {move.target} lost at {move.stage}"
    if record is None or record.tombstone:
        return "the service was deleted"
    if record.location != move.source:
        return f"the service moved to {record.location} meanwhile"
    return None


def abort(move: Move, record: Record | None, reason: str) -> tuple[Move, tuple[Command, ...]]:
    """End a move that has not committed: the target's copy goes, and a frontend that already
    routed to it follows the record again (`failure(stage).route_back`)."""
    commands: list[Command] = [Abort(reason), StopCopy(move.target, move.service, move.id)]
    if failure(move.stage if move.stage != "commit" else "reroute").route_back and record is not None:
        commands.append(Route((move.coordinator,), move.service, record.location))
    return replace(move, stage="done"), tuple(commands)
