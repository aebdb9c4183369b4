"""A model-based test of the whole protocol (issue 13), like riak_dt's convergence harness: a
Hypothesis state machine of 3-5 clusters on an in-memory network with a fake clock
(tests/core/federation.py), driving the pure core (peer/core: moves, fail-safe verdicts,
recovery) and the real records, merge and vector clocks (peer/records) through random
deploys, migrations, fail-safes, partitions, heals and crashes at every stage of a move.

After every step:
  * no migration is left running past its deadline before its commit;
  * every entry routes where its record says, and to a live copy, unless the service is being
    healed (a move or fail-safe under way, the holders' records disagree, or the location is
    cut off from that entry);
  * a cluster advances only its own vclock entry (no version anywhere carries a counter its
    cluster never wrote).
At quiescence (everything healed and restarted, time run on): one copy per service, one
route, and every holder of a record holds the same version.

A unit test (no processes, no network): it runs in CI in a few seconds; the crash points it
reached are Hypothesis events (`pytest --hypothesis-show-statistics`).
"""
from __future__ import annotations

from collections import Counter

from hypothesis import HealthCheck, event, settings, strategies as st
from hypothesis.control import currently_in_test_context
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from peer.core import move as mv, policy
from placement import ComeHome, Move, Stay
from peer.records import vclock as vc
from peer.records.record import interested
from tests.core.federation import MOVE_BUDGET, Federation

MAX_SERVICES = 3
#: Across the runs of this process: steps taken, crash points reached, moves started (the report's figures).
TALLY: Counter[str] = Counter()


def note(what: str) -> None:
    TALLY[what] += 1
    if currently_in_test_context():
        event(what)
DWELL = 3.0  # the policy's dwell time in the model
SETTLE_ROUNDS = 40  # x 0.5 model seconds: past every grace, deadline and arrival TTL


class Protocol(RuleBasedStateMachine):
    fed: Federation

    @initialize(n=st.integers(3, 5))
    def start(self, n: int) -> None:
        self.fed = Federation([f"c{i}" for i in range(1, n + 1)])
        self.fed.note = note
        self.names: list[str] = []
        self.last_move: dict[str, float] = {}

    def _cluster(self, i: int) -> str:
        return sorted(self.fed.clusters)[i % len(self.fed.clusters)]

    # -- what happens ------------------------------------------------------------------------
    @precondition(lambda self: len(self.names) < MAX_SERVICES)
    @rule(home=st.integers(0, 4), deputy=st.integers(0, 4))
    def deploy(self, home: int, deputy: int) -> None:
        h = self._cluster(home)
        if not self.fed.clusters[h].up:
            return
        name = f"s{len(self.names)}"
        self.names.append(name)
        self.fed.deploy(h, self._cluster(deputy), name)

    @precondition(lambda self: bool(self.names))
    @rule(service=st.integers(0, MAX_SERVICES - 1), to=st.integers(0, 4), via=st.integers(0, 4))
    def migrate(self, service: int, to: int, via: int) -> None:
        """An API call at `via`, forwarded to the steward (its own view decides who that is)."""
        fed, name = self.fed, self.names[service % len(self.names)]
        holders = sorted(n for n, c in fed.clusters.items() if c.up and name in c.records)
        if not holders:
            return
        c = fed.clusters[holders[via % len(holders)]]
        record = c.records[name]
        if record.tombstone:
            return
        steward = fed.steward(c.name, record)
        if steward is None or not fed.reachable(c.name, steward) and steward != c.name:
            return
        s = fed.clusters[steward]
        held = s.records.get(name)
        if held is None or name in s.moves or name in s.redeploys or fed.steward(s.name, held) != s.name:
            return
        others = sorted(n for n in fed.clusters if n != held.location)
        dest = others[to % len(others)]
        status = fed.view(s.name)[dest].status if dest != s.name else "alive"
        if mv.target_problem(held, dest, status) is not None:
            return
        move = mv.begin(migration_id=fed.new_id(), record=held, coordinator=s.name, target=dest, now=fed.now,
                        budget=MOVE_BUDGET)
        fed.execute(s, move, ())
        note("migration started")

    @precondition(lambda self: bool(self.names))
    @rule(service=st.integers(0, MAX_SERVICES - 1), choice=st.integers(0, 6))
    def policy_tick(self, service: int, choice: int) -> None:
        """The policy loop at each steward: `placement.decide` is pure and tested on its own,
        so its decision is drawn here; the gates, the dwell and the target are the core's."""
        fed, name = self.fed, self.names[service % len(self.names)]
        for c in fed.clusters.values():
            record = c.records.get(name)
            if not c.up or record is None or record.tombstone or fed.steward(c.name, record) != c.name:
                continue
            view = fed.view(c.name)
            status = "alive" if record.location == c.name else view[record.location].status
            if not policy.may_consider(location=record.location, here=c.name, status=status) \
                    or name in c.suspicions or name in c.moves or name in c.redeploys:
                continue  # lost hosts and copies that stopped serving are the fail-safe's
            if fed.now < policy.dwell_from(0.0, self.last_move.get(name)) + DWELL:
                continue
            clusters = sorted(fed.clusters)
            decision = Stay("ok") if choice >= len(clusters) + 1 else ComeHome("link", "link") \
                if choice == len(clusters) else Move(clusters[choice], "load", "overload")
            dest = policy.target_of(decision, location=record.location, home=record.home)
            if dest is None or mv.target_problem(record, dest, "alive" if dest == c.name else view[dest].status):
                continue
            self.last_move[name] = fed.now
            fed.execute(c, mv.begin(migration_id=fed.new_id(), record=record, coordinator=c.name, target=dest,
                                    now=fed.now, budget=MOVE_BUDGET), ())
            note("policy move started")

    @precondition(lambda self: any(c.moves for c in self.fed.clusters.values()))
    @rule(pick=st.integers(0, 20))
    def advance(self, pick: int) -> None:
        under_way = [(c, n) for c in self.fed.clusters.values() for n in sorted(c.moves)]
        c, name = under_way[pick % len(under_way)]
        self.fed.advance(c, name)

    @rule(dt=st.sampled_from([0.1, 0.5, 1.0, 2.5, 5.0]))
    def tick(self, dt: float) -> None:
        self.fed.tick(dt)

    @rule()
    def sync(self) -> None:
        self.fed.sync()

    @rule(side=st.sets(st.integers(0, 4), min_size=1, max_size=2))
    def partition(self, side: set[int]) -> None:
        self.fed.partition({self._cluster(i) for i in side})

    @rule()
    def heal(self) -> None:
        self.fed.heal()

    @rule(which=st.integers(0, 4))
    def crash(self, which: int) -> None:
        self._crash(self._cluster(which))

    @precondition(lambda self: bool(self.names))
    @rule(pick=st.integers(0, 20), steps=st.integers(0, 4), role=st.sampled_from(["coordinator", "target", "source"]),
          to=st.integers(0, 4))
    def crash_mid_move(self, pick: int, steps: int, role: str, to: int) -> None:
        """A crash at every stage: a move under way (one is started if none is) takes `steps`
        steps, then its coordinator, target or source crashes."""
        if not any(c.moves for c in self.fed.clusters.values()):
            self.migrate(pick, to, pick)
        under_way = [(c, n) for c in self.fed.clusters.values() for n in sorted(c.moves)]
        if not under_way:
            return
        c, name = under_way[pick % len(under_way)]
        move = c.moves[name]
        for _ in range(steps):
            if name not in c.moves or c.moves[name].id != move.id:
                break
            self.fed.advance(c, name)
        self._crash(getattr(move, role))

    @precondition(lambda self: bool(self.names))
    @rule(service=st.integers(0, MAX_SERVICES - 1), dt=st.sampled_from([0.5, 2.5, 5.0]))
    def lose_the_location(self, service: int, dt: float) -> None:
        """The site running a service is lost, and time passes: the fail-safe's case."""
        name = self.names[service % len(self.names)]
        locations = {c.records[name].location for c in self.fed.clusters.values() if c.up and name in c.records}
        for location in sorted(locations):
            self._crash(location)
        self.fed.tick(dt)

    @precondition(lambda self: any(c.redeploys for c in self.fed.clusters.values()))
    @rule()
    def crash_mid_failsafe(self) -> None:
        self._crash(next(c.name for c in self.fed.clusters.values() if c.redeploys))

    def _crash(self, name: str) -> None:
        c = self.fed.clusters[name]
        if not c.up:
            return
        for other in self.fed.clusters.values():  # the crash point, for the statistics
            for move in other.moves.values():
                role = "coordinator" if other is c else "target" if move.target == name else \
                    "source" if move.source == name else None
                if role is not None:
                    note(f"crash point: {role} at {move.stage}")
        if c.redeploys:
            note("crash point: steward mid fail-safe")
        self.fed.crash(name)

    @rule(which=st.integers(0, 4))
    def restart(self, which: int) -> None:
        name = self._cluster(which)
        if not self.fed.clusters[name].up:
            self.fed.restart(name)

    @rule()
    def quiesce(self) -> None:
        self.settle_and_check()

    def teardown(self) -> None:
        if hasattr(self, "fed"):
            self.settle_and_check()

    # -- what must hold after every step -------------------------------------------------------
    def _in_flight(self, name: str) -> bool:
        return any(name in c.moves or name in c.redeploys for c in self.fed.clusters.values() if c.up)

    def _disagree(self, name: str, e: str) -> bool:
        """Anti-entropy has work left: the up holders hold different versions, or the location
        `e`'s record names (if up) does not hold `e`'s version (e.g. it dropped the record
        after releasing its copy, and `e` was down meanwhile)."""
        up = [c for c in self.fed.clusters.values() if c.up]
        versions = {c.records[name] for c in up if name in c.records}
        held = self.fed.clusters[e].records[name]
        at = self.fed.clusters[held.location]
        return len(versions) > 1 or (at.up and at.records.get(name) != held)

    @invariant()
    def no_move_runs_past_its_deadline(self) -> None:
        if not hasattr(self, "fed"):
            return
        TALLY["steps"] += 1
        for c in self.fed.clusters.values():
            for move in c.moves.values():
                assert move.committed or self.fed.now <= move.deadline, (c.name, move)

    @invariant()
    def a_cluster_advances_only_its_own_clock_entry(self) -> None:
        if not hasattr(self, "fed"):
            return
        for c in self.fed.clusters.values():
            for name, record in c.records.items():
                for node, count in vc.counters(record.vclock).items():
                    assert count <= self.fed.wrote.get((node, name), 0), (c.name, name, node)

    @invariant()
    def every_route_points_at_its_record_and_a_live_copy_unless_healing(self) -> None:
        if not hasattr(self, "fed"):
            return
        fed = self.fed
        for e in fed.clusters.values():
            if not e.up:
                continue
            for name, location in e.routes.items():
                record = e.records.get(name)
                if record is None or record.tombstone or self._in_flight(name) or self._disagree(name, e.name):
                    continue
                assert location == record.location, (e.name, name, location, record.location)
                if (fed.reachable(e.name, location) or location == e.name) and name not in e.suspicions:
                    assert name in fed.clusters[location].copies, (e.name, name, location)

    # -- at quiescence -------------------------------------------------------------------------
    def settle_and_check(self) -> None:
        fed = self.fed
        fed.heal()
        for name in sorted(fed.clusters):
            if not fed.clusters[name].up:
                fed.restart(name)
        for _ in range(SETTLE_ROUNDS):
            fed.tick(0.5)
            fed.sync()
        for c in fed.clusters.values():
            assert not c.moves and not c.redeploys and not c.arriving, (c.name, c.moves, c.redeploys, c.arriving)
        for name in self.names:
            holders = {c.name: c.records[name] for c in fed.clusters.values() if name in c.records}
            versions = set(holders.values())
            assert len(versions) == 1, (name, holders)
            record = versions.pop()
            assert interested(record) <= set(holders), (name, record, set(holders))
            copies = {c.name for c in fed.clusters.values() if name in c.copies}
            assert copies == {record.location}, (name, copies, record.location)
            routes = {e: fed.clusters[e].routes.get(name) for e in record.entries}
            assert set(routes.values()) == {record.location}, (name, routes, record.location)
        note("quiescent: converged")


TestProtocol = Protocol.TestCase
TestProtocol.settings = settings(max_examples=100, stateful_step_count=50, deadline=None,
                                 suppress_health_check=[HealthCheck.too_slow])
