"""An in-memory federation for the model test of the whole protocol (test_protocol_model.py):
clusters with the real records, merge and vector clocks (peer/records), the pure core's
decisions (peer/core, peer/homeset/stewardship.py), and everything else faked: a network of groups
(a partition splits it, a heal joins it), a clock that only moves when told, copies and
frontends as sets and dicts. Like riak_dt's convergence harness, nothing here decides
anything the agent decides: each choice is the core's, each record change the merge's.

What each cluster keeps across a crash is what the agent keeps on disk: its records, its
journal (`mig:` entries) and its HAProxy routes (lb state files). Its copies (the site's
processes), the moves and fail-safes under way, its arrivals and suspicions are lost.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from peer.core import failsafe as fs, journal, moves
from peer.core import move as mv
from peer.records import vclock as vc
from peer.records.merge import AdoptLocalCopy, Forget, Reroute, StopLocalCopy, local_write, reconcile
from peer.records.record import Record, State, interested
from peer.homeset.stewardship import Liveness, Observed

MOVE_BUDGET = 8.0  # a move's deadline (the engine's readiness and call timeouts, in model seconds)


def instance_of(cluster: str, name: str) -> str:
    return f"{cluster}/{name}"


@dataclass
class Redeploy:
    """A fail-safe under way at the steward: its copy started, the commit next."""

    source: str
    since: float


@dataclass
class Cluster:
    name: str
    up: bool = True
    records: dict[str, Record] = field(default_factory=dict)
    journal: dict[str, dict[str, Any]] = field(default_factory=dict)  # on disk
    routes: dict[str, str] = field(default_factory=dict)  # frontend -> location it routes to (lb state, on disk)
    copies: set[str] = field(default_factory=set)
    moves: dict[str, mv.Move] = field(default_factory=dict)  # service -> move it coordinates
    arriving: dict[str, tuple[str, float]] = field(default_factory=dict)  # service -> (migration id, since)
    suspicions: dict[str, fs.Suspicion] = field(default_factory=dict)
    redeploys: dict[str, Redeploy] = field(default_factory=dict)
    liveness: Liveness = field(default_factory=lambda: Liveness(here=""))

    def __post_init__(self) -> None:
        self.liveness = Liveness(here=self.name)


class Federation:
    def __init__(self, names: list[str]) -> None:
        self.now = 0.0
        self.clusters = {n: Cluster(n) for n in names}
        self.group = {n: 0 for n in names}  # a partition: clusters in different groups do not hear each other
        self.changed: dict[tuple[str, str], float] = {}  # when a's sight of b last changed
        self.wrote: dict[tuple[str, str], int] = {}  # (cluster, service) -> highest counter it wrote
        self.ids = 0
        self.note: Callable[[str], None] = lambda what: None  # what happened, for the statistics

    # -- network and view ------------------------------------------------------------------
    def reachable(self, a: str, b: str) -> bool:
        ca, cb = self.clusters[a], self.clusters[b]
        return ca.up and cb.up and self.group[a] == self.group[b]

    def _sight_changes(self, before: dict[tuple[str, str], bool]) -> None:
        for (a, b), was in before.items():
            if self.reachable(a, b) != was:
                self.changed[(a, b)] = self.now

    def _sights(self) -> dict[tuple[str, str], bool]:
        return {(a, b): self.reachable(a, b) for a in self.clusters for b in self.clusters if a != b}

    def partition(self, side: set[str]) -> None:
        before = self._sights()
        for n in self.clusters:
            self.group[n] = 1 if n in side else 0
        self._sight_changes(before)

    def heal(self) -> None:
        before = self._sights()
        self.group = {n: 0 for n in self.clusters}
        self._sight_changes(before)

    def view(self, here: str) -> dict[str, Observed]:
        """Gossip's view at `here`: alive when it hears the cluster, failed when not, since the change."""
        return {b: Observed("alive" if self.reachable(here, b) else "failed", self.changed.get((here, b), 0.0))
                for b in self.clusters if b != here}

    def steward(self, here: str, record: Record) -> str | None:
        return self.clusters[here].liveness.steward(record, self.view(here), self.now)

    # -- records ---------------------------------------------------------------------------
    def put_local(self, c: Cluster, record: Record) -> Record:
        previous = c.records.get(record.name)
        stored = local_write(previous, record, here=c.name, now=self.now, actor=c.name)
        if previous is not None:  # the rule under test: a write advances only its own entry
            for node, count in vc.counters(stored.vclock).items():
                assert node == c.name or count <= vc.get_counter(previous.vclock, node), (node, c.name)
        self.wrote[(c.name, record.name)] = vc.get_counter(stored.vclock, c.name)
        c.records[record.name] = stored
        return stored

    def publish(self, c: Cluster, record: Record, only: tuple[str, ...] | None = None) -> None:
        for b in self.clusters.values():
            if b is c or not self.reachable(c.name, b.name) or (only is not None and b.name not in only):
                continue
            if b.name in interested(record) or record.name in b.records:
                self.merge(b, record)

    def merge(self, b: Cluster, remote: Record) -> None:
        outcome = reconcile(b.records.get(remote.name), remote, here=b.name)
        if not outcome.changed:
            return
        b.records[remote.name] = outcome.result
        for action in outcome.actions:
            self._act(b, action)

    def _act(self, b: Cluster, action: Any) -> None:
        """peer/copies/manager.py `_act`, over the model's copies and routes."""
        current = b.records.get(action.name)
        if isinstance(action, StopLocalCopy):
            if action.name not in b.arriving:
                b.copies.discard(action.name)
        elif isinstance(action, AdoptLocalCopy) and current is not None and not current.tombstone:
            if b.arriving.pop(action.name, None) is not None:
                self.publish(b, self.put_local(b, replace(current, state=State.RUNNING)))
            b.copies.add(action.name)
        elif isinstance(action, Reroute) and current is not None and b.name in current.entries:
            b.routes[action.name] = current.location
        elif isinstance(action, Forget) and current is not None and not current.tombstone \
                and b.name not in interested(current):
            b.routes.pop(action.name, None)
            del b.records[action.name]

    def sync(self) -> None:
        """A round of anti-entropy between every pair that hears each other."""
        for a in self.clusters.values():
            for record in list(a.records.values()):
                self.publish(a, a.records[record.name])

    # -- what the agent does with the core's answers -----------------------------------------
    def deploy(self, home: str, deputy: str, name: str) -> None:
        c = self.clusters[home]
        homes = (home,) if deputy == home else (home, deputy)
        self.ids += 1
        record = Record(name=name, home=home, homes=homes, location=home, state=State.RUNNING, digest="d",
                        descriptor=b"svc", instance=instance_of(home, name), incarnation=f"{1000 + self.ids}-0-0")
        c.copies.add(name)
        c.routes[name] = home
        self.publish(c, self.put_local(c, record))

    def release_here(self, c: Cluster, name: str) -> None:
        """The old location (or an aborted target) applies `moves.release`."""
        plan = moves.release(c.records.get(name), c.name, arriving=name in c.arriving)
        if plan.stop:
            c.copies.discard(name)
        if plan.drop:
            c.records.pop(name, None)

    def abort_at(self, coordinator: str, target: str, name: str, migration_id: str) -> None:
        t = self.clusters[target]
        if not self.reachable(coordinator, target) or t.arriving.get(name, ("",))[0] != migration_id:
            return  # not heard: the arrival expires there (`mv.arrival_expired`)
        del t.arriving[name]
        if moves.release(t.records.get(name), t.name).stop:
            t.copies.discard(name)

    def execute(self, c: Cluster, move: mv.Move, commands: tuple[mv.Command, ...]) -> None:
        for command in commands:
            if isinstance(command, mv.StartCopy):
                t = self.clusters[command.cluster]
                if self.reachable(c.name, t.name) and command.service not in t.arriving \
                        and not (t.records.get(command.service) and t.records[command.service].location == t.name):
                    t.arriving[command.service] = (command.migration_id, self.now)
                    t.copies.add(command.service)
            elif isinstance(command, mv.Route) and command.entries == (c.name,):
                c.routes[command.service] = command.location
            elif isinstance(command, mv.Route):  # the other entries follow the committed record
                self.publish(c, c.records[command.service], only=command.entries)
            elif isinstance(command, mv.Commit):
                committed = self.put_local(c, command.record)
                if committed.location == c.name:
                    c.arriving.pop(committed.name, None)
                self.publish(c, committed, only=(committed.location,))  # the AC holds it before the answer
            elif isinstance(command, mv.StopCopy) and command.migration_id is not None:
                self.abort_at(c.name, command.cluster, command.service, command.migration_id)
            elif isinstance(command, mv.StopCopy):  # cleanup: the old location releases its copy
                self._cleanup(c, command.cluster, command.service)
        if move.running:
            c.journal[journal.migration_key(move.id)] = journal.migration_entry(
                migration_id=move.id, service=move.service, stage=mv.journal_stage(move.stage), target=move.target,
                home=c.records[move.service].home, source=move.source, instance=move.instance)
            c.moves[move.service] = move
        else:
            c.journal.pop(journal.migration_key(move.id), None)
            c.moves.pop(move.service, None)

    def _cleanup(self, c: Cluster, source: str, name: str) -> None:
        committed = c.records.get(name)
        if source == c.name:
            self.release_here(c, name)
        elif committed is not None and self.reachable(c.name, source):
            s = self.clusters[source]
            self.merge(s, committed)
            self.release_here(s, name)
        if committed is not None:
            self.publish(c, committed)

    def new_id(self) -> str:
        self.ids += 1
        return f"m{self.ids}"

    # -- the fail-safe, over the core's verdicts ----------------------------------------------
    def failsafe(self, c: Cluster) -> None:
        """peer/migration/failsafe.py `_check` and `_redeploy`, one look per service."""
        for name in list(c.redeploys):  # under way since the last look: commit, or drop the copy
            self._commit_redeploy(c, name, c.redeploys[name])
        for name, record in sorted(c.records.items()):
            if record.tombstone or c.name not in record.entries or record.location == c.name or name in c.moves:
                c.suspicions.pop(name, None)
                continue
            seen_of = self.view(c.name).get(record.location)
            route_up = self.reachable(c.name, record.location) and name in self.clusters[record.location].copies
            seen = fs.Seen(None if seen_of is None else seen_of.status, None if seen_of is None else seen_of.since,
                           route_up)
            suspicion = fs.suspect(c.suspicions.get(name), record.location, seen, self.now)
            if suspicion is None:
                c.suspicions.pop(name, None)
                c.liveness.mark_reachable(record.location)
                continue
            c.suspicions[name] = suspicion
            steward = self.steward(c.name, record) == c.name
            verdict = fs.assess(suspicion, seen, self.now, reachable=self.reachable(c.name, record.location),
                                steward=steward, ahead_ok=False)
            if not isinstance(verdict, fs.Lost):
                continue
            if verdict.unreachable:
                c.liveness.mark_unreachable(record.location, suspicion.since)
            if verdict.act:
                c.copies.add(name)  # the home copy starts; the commit follows on the next look
                c.redeploys[name] = Redeploy(record.location, self.now)

    def _commit_redeploy(self, c: Cluster, name: str, pending: Redeploy) -> None:
        del c.redeploys[name]
        current = c.records.get(name)
        if current is None or current.location != pending.source or self.steward(c.name, current) != c.name:
            self.release_here(c, name)  # nothing to fail over any more: the copy started goes
            return
        committed = self.put_local(c, moves.commit(current, location=c.name, instance=instance_of(c.name, name),
                                                   migration_id=self.new_id()))
        c.routes[name] = c.name
        c.suspicions.pop(name, None)
        self.note("fail-safe committed")
        self.publish(c, committed)
        if self.reachable(c.name, pending.source):  # RELEASE to the lost location, if it hears
            s = self.clusters[pending.source]
            self.merge(s, committed)
            self.release_here(s, name)

    # -- crashes and restarts ---------------------------------------------------------------
    def crash(self, name: str) -> None:
        before = self._sights()
        c = self.clusters[name]
        c.up = False
        c.copies.clear()
        c.moves.clear()
        c.arriving.clear()
        c.suspicions.clear()
        c.redeploys.clear()
        c.liveness = Liveness(here=name)
        self._sight_changes(before)

    def restart(self, name: str) -> None:
        """The agent starts again: recovery of its open moves (`journal.recovery`), then its
        copies and routes follow its records (services.reconcile)."""
        before = self._sights()
        c = self.clusters[name]
        c.up = True
        self._sight_changes(before)
        for key, entry in sorted(c.journal.items()):
            record = c.records.get(entry["service"])
            decision = journal.recovery(entry, record, here=c.name,
                                        routed_to_target=c.routes.get(entry["service"]) == entry["target"])
            self.note(f"recovery: {type(decision).__name__} from {entry['stage']}")
            if isinstance(decision, journal.Finish) and record is not None:
                if decision.commit:
                    record = self.put_local(c, moves.commit(record, location=entry["target"],
                                                            instance=entry["instance"], migration_id=entry["id"]))
                self._cleanup(c, decision.source, record.name)
            else:
                if entry.get("target"):
                    self.abort_at(c.name, entry["target"], entry["service"], entry["id"])
                if isinstance(decision, journal.RollBack) and decision.reroute and record is not None:
                    c.routes[record.name] = record.location
            del c.journal[key]
        for record in c.records.values():
            if record.tombstone:
                continue
            if record.location == c.name:
                c.copies.add(record.name)
            if c.name in record.entries and record.name not in c.routes:
                c.routes[record.name] = record.location

    # -- time ---------------------------------------------------------------------------------
    def tick(self, dt: float) -> None:
        """Time passes: arrivals expire, every coordinator's moves take a step (past the
        deadline that is an abort), every entry's fail-safe looks once."""
        self.now += dt
        for c in self.clusters.values():
            if not c.up:
                continue
            for name, (_, since) in list(c.arriving.items()):
                # (a fail-safe under way holds the service's lock, as the agent's expiry takes it)
                if name not in c.redeploys and mv.arrival_expired(since, self.now, budget=MOVE_BUDGET):
                    del c.arriving[name]
                    self.release_here(c, name)
            for name in sorted(c.moves):
                self.advance(c, name)
            self.failsafe(c)

    def advance(self, c: Cluster, name: str) -> None:
        move = c.moves[name]
        t = self.clusters[move.target]
        ready = instance_of(t.name, name) if self.reachable(c.name, t.name) and name in t.copies and \
            t.arriving.get(name, ("",))[0] == move.id else None
        move, commands = mv.step(move, c.records.get(name), now=self.now,
                                 target_alive=self.reachable(c.name, t.name), ready_instance=ready)
        if any(isinstance(command, mv.Abort) for command in commands):
            self.note(f"move aborted: {next(c for c in commands if isinstance(c, mv.Abort)).reason.split(' at ')[0]}")
        elif not move.running:
            self.note("move done")
        self.execute(c, move, commands)
