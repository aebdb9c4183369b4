"""The pure core's rules (peer/core/), property-tested: each rule once, whatever the record,
the view and the time."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest
from hypothesis import given, settings, strategies as st

from peer.core import failsafe as fs, journal, moves, policy
from peer.core import move as mv
from peer.records.record import Record, State, interested
from placement import ComeHome, Move, Stay

CLUSTERS = ("c1", "c2", "c3", "c4")
cluster = st.sampled_from(CLUSTERS)
times = st.floats(min_value=0.0, max_value=100.0, allow_nan=False)


@st.composite
def records(draw: st.DrawFn) -> Record:
    homes = tuple(draw(st.permutations(CLUSTERS))[:draw(st.integers(1, 3))])
    location = draw(cluster)
    standbys = tuple(sorted((c, f"10.0.0.{i}:80") for i, c in enumerate(CLUSTERS)
                            if c != location and draw(st.booleans()) and c != "c4"))
    return Record(name="web", home=homes[0], homes=homes, location=location, state=State.RUNNING, digest="d",
                  descriptor=b"x", instance="10.0.1.1:80", standbys=standbys, tombstone=draw(st.booleans()),
                  state_version=draw(st.none() | st.integers(0, 9)))


@given(records(), cluster, st.none() | st.integers(0, 9))
def test_a_commit_runs_it_at_the_location_and_never_keeps_a_standby_there(record: Record, location: str,
                                                                          version: int | None) -> None:
    done = moves.commit(record, location=location, instance="10.9.9.9:1", migration_id="m1", state_version=version)
    assert (done.location, done.instance, done.state, done.migration_id) == (location, "10.9.9.9:1", State.RUNNING, "m1")
    assert location not in done.standby_clusters
    assert set(done.standbys) == {p for p in record.standbys if p[0] != location}
    assert (done.name, done.home, done.entries, done.state_version) == (record.name, record.home, record.entries, version)
    assert moves.commit(record, location=location, instance="i", migration_id="m").state_version == record.state_version
    assert moves.promoted(record, done) == (location in record.standby_clusters)


@given(st.none() | records(), cluster, st.booleans())
def test_a_release_spares_every_copy_the_record_wants_and_drops_only_what_is_not_ours(
        record: Record | None, here: str, arriving: bool) -> None:
    plan = moves.release(record, here, arriving=arriving)
    if record is not None and record.copy_here(here) or arriving:
        assert not plan.stop
    if record is None or not record.copy_here(here):
        assert plan.stop or arriving
    if plan.drop:
        assert record is not None and not record.tombstone and here not in interested(record)


@given(records(), cluster, cluster, st.sampled_from(["replication", "wait", "state", "reroute", "cleanup"]),
       st.booleans(), st.booleans())
def test_recovery_finishes_only_a_committed_or_routed_move(record: Record, source: str, target: str, stage: str,
                                                           routed: bool, gone: bool) -> None:
    held = None if gone else record
    entry = journal.migration_entry(migration_id="m", service="web", stage=stage, target=target, home="c1",
                                    source=source, instance="10.0.0.9:1")
    decision = journal.recovery(entry, held, here="c1", routed_to_target=routed)
    committed = held is not None and held.location == target
    if isinstance(decision, journal.Finish):
        assert committed or (stage == "reroute" and routed and held is not None and "c1" in held.entries)
        assert decision.commit == (not committed)
        assert decision.source == source
    else:
        assert not committed
        assert decision.reroute == (held is not None and "c1" in held.entries)
    assert journal.is_migration(journal.migration_key("m")) and not journal.is_arrival(journal.migration_key("m"))
    assert journal.is_arrival(journal.arrival_key("web")) and not journal.is_migration(journal.arrival_key("web"))


seen_strategy = st.builds(fs.Seen, st.none() | st.sampled_from(["alive", "failed", "left", "suspect"]),
                          st.none() | times, st.booleans(), st.booleans())


@given(seen_strategy, times, times, st.none() | st.booleans(), st.booleans(), st.booleans(), times)
def test_the_failsafe_never_acts_early_nor_at_a_non_steward(seen: fs.Seen, since: float, now: float,
                                                            reachable: bool | None, steward: bool, ahead: bool,
                                                            retry_at: float) -> None:
    suspicion = fs.Suspicion("c2", since, retry_at)
    verdict = fs.assess(suspicion, seen, now, reachable=reachable, steward=steward, ahead_ok=ahead)
    if now < retry_at:
        assert isinstance(verdict, fs.Wait)
    if isinstance(verdict, fs.Lost):
        assert verdict.act == steward and verdict.since == since
        down = now - since
        if seen.serf_lost and not seen.route_down:
            assert reachable is False  # gossip's word alone is checked by a ping (it may be stale)
        if not seen.serf_lost:
            assert reachable is not None  # a loss the probes did not check is Serf's word only
            if reachable:
                assert seen.status is not None and down >= fs.STUCK_GRACE
            else:
                assert down >= (fs.UNKNOWN_GRACE if seen.status is None else fs.LB_DOWN_GRACE)
    if isinstance(verdict, fs.Ping):
        assert reachable is None
    if isinstance(verdict, fs.StartAhead):
        assert steward and ahead and not seen.serf_lost and seen.status is not None


@given(seen_strategy, times, st.none() | st.sampled_from(["c2", "c3"]))
def test_a_suspicion_opens_on_evidence_and_keeps_its_first_time(seen: fs.Seen, now: float,
                                                                 prev_loc: str | None) -> None:
    previous = None if prev_loc is None else fs.Suspicion(prev_loc, 1.0)
    s = fs.suspect(previous, "c2", seen, now)
    route_evidence = seen.route_current and not seen.route_up  # a route still at a copy the record left is none
    assert (s is None) == (not route_evidence and not seen.serf_lost)
    if s is not None:
        assert s.location == "c2" and s.since <= now or (previous is not None and s is previous)
        if previous is not None and prev_loc == "c2":
            assert s is previous
    assert fs.retry_later(None, now) is None
    again = fs.retry_later(fs.Suspicion("c2", 1.0), now, after=fs.RETRY_AFTER)
    assert again is not None and again.retry_at == now + fs.RETRY_AFTER and again.since == 1.0


def test_a_route_still_at_the_copy_the_record_left_is_no_evidence() -> None:
    """An HC back from a site loss restores its route to its own dead copy; the record it then
    merges names the deputy's. Until its Reroute action runs, that route is down: no suspicion
    of the deputy, so no copy is started ahead beside it. Gossip's word still counts."""
    stale = fs.Seen("alive", 1.0, route_up=False, route_current=False)
    assert fs.suspect(None, "c2", stale, 5.0) is None
    assert fs.confirm(fs.Suspicion("c2", 4.9), stale, 5.0, reachable=None) is None
    current = fs.Seen("alive", 1.0, route_up=False, route_current=True)
    suspicion = fs.suspect(None, "c2", current, 5.0)
    assert suspicion is not None
    assert isinstance(fs.assess(suspicion, current, 5.0, reachable=None, steward=True, ahead_ok=True), fs.StartAhead)
    lost = fs.Seen("failed", 1.0, route_up=False, route_current=False)
    assert fs.suspect(None, "c2", lost, 5.0) is not None


@pytest.mark.parametrize("route_up, route_current", [(True, True), (False, False), (True, False)])
def test_gossip_alone_is_checked_by_a_ping(route_up: bool, route_current: bool) -> None:
    """Right after a partition heals, Serf keeps the returned cluster "failed" for a second or
    more after its records arrived (seen in the demo: the deputy, steward on its side, ran a
    fail-safe on the HC's own serving copy). Unless this entry's check of the recorded copy
    agrees, gossip's word is asked of the location first: an answer is no loss."""
    seen = fs.Seen("failed", 1.0, route_up=route_up, route_current=route_current)
    suspicion = fs.suspect(None, "c1", seen, 5.0)
    assert suspicion is not None and suspicion.since == 1.0

    def verdict(reachable: bool | None) -> fs.Verdict:
        return fs.assess(suspicion, seen, 5.0, reachable=reachable, steward=True, ahead_ok=True)

    assert isinstance(verdict(None), fs.Ping)
    assert isinstance(verdict(True), fs.Wait)
    lost = verdict(False)
    assert isinstance(lost, fs.Lost) and lost.act and lost.unreachable and "does not answer" in lost.evidence
    assert fs.confirm(suspicion, seen, 5.0, reachable=None) is None  # a copy started ahead goes


def test_gossip_with_the_route_down_is_a_loss_at_once() -> None:
    seen = fs.Seen("left", 1.0, route_up=False, route_current=True)
    suspicion = fs.Suspicion("c1", 1.0)
    verdict = fs.assess(suspicion, seen, 1.01, reachable=None, steward=True, ahead_ok=True)
    assert isinstance(verdict, fs.Lost) and verdict.evidence == "serf reports c1 left" and not verdict.unreachable
    assert isinstance(fs.confirm(suspicion, seen, 1.01, reachable=None), fs.Lost)


@given(seen_strategy, times, times, st.none() | st.booleans())
def test_a_confirmation_removes_the_copy_ahead_as_soon_as_the_location_serves(seen: fs.Seen, since: float,
                                                                             now: float, reachable: bool | None) -> None:
    verdict = fs.confirm(fs.Suspicion("c2", since), seen, now, reachable=reachable)
    if seen.serf_lost and seen.route_down:
        assert isinstance(verdict, fs.Lost)
    elif seen.route_up or not seen.route_current or reachable:
        assert verdict is None or isinstance(verdict, fs.Wait)
        assert verdict is None if seen.route_up or not seen.route_current else True
    if isinstance(verdict, fs.Wait):
        assert now < since + fs.LB_DOWN_GRACE and 0.0 <= fs.confirm_delay(fs.Suspicion("c2", since), now)
    assert fs.ahead_ok(standbys=True, dropped_at=None, now=now) is False


@given(times, times, st.text(min_size=1, max_size=3))
def test_a_refusal_is_remembered_for_its_memory_and_no_longer(at: float, later: float, rule: str) -> None:
    refusals = mv.Refusals(memory=10.0)
    refusals.remember("c2", "d", rule, at)
    expect = rule if at + later - at <= 10.0 else None
    assert refusals.rule("c2", "d", at + later) == expect
    assert refusals.rule("c3", "d", at) is None


@given(records(), cluster, st.none() | st.sampled_from(["alive", "failed", "left"]))
def test_a_target_is_known_alive_and_elsewhere(record: Record, target: str, status: str | None) -> None:
    problem = mv.target_problem(record, target, status)
    assert (problem is None) == (status == "alive" and target != record.location)
    if status is None:
        assert problem is not None and problem.unknown


@given(st.sampled_from(["pr", "replication", "wait", "state", "reroute", "cleanup"]))
def test_only_a_failed_reroute_routes_back(stage: str) -> None:
    assert mv.failure(stage).route_back == (stage == "reroute")
    assert mv.interrupted_closes_journal(stage) == (stage in ("pr", "replication", "wait", "state"))


@given(cluster, cluster, st.sampled_from(["alive", "failed", None]), times, st.none() | times)
def test_the_policy_leaves_lost_hosts_alone_and_never_moves_in_place(location: str, home: str, status: str | None,
                                                                     first: float, last: float | None) -> None:
    assert policy.may_consider(location=location, here="c1", status=status) == (location == "c1" or status == "alive")
    assert policy.dwell_from(first, last) >= first
    for decision in (Move(target=location, reason="r", trigger="overload"), ComeHome(reason="r", trigger="link"),
                     Stay(reason="r")):
        target = policy.target_of(decision, location=location, home=home)
        assert target != location


@settings(max_examples=200)
@given(records().filter(lambda r: not r.tombstone), cluster,
       st.lists(st.tuples(st.floats(0.0, 3.0), st.booleans(), st.booleans()), min_size=1, max_size=12))
def test_a_move_ends_and_never_runs_past_its_deadline_before_the_commit(
        record: Record, target: str, steps: list[tuple[float, bool, bool]]) -> None:
    move = mv.begin(migration_id="m", record=record, coordinator=record.home, target=target, now=0.0, budget=5.0)
    now, seen_commit, commands = 0.0, False, list[mv.Command]()
    for dt, alive, ready in steps + [(10.0, True, True)] * 6:
        now += dt
        move, cmds = mv.step(move, record, now=now, target_alive=alive, ready_instance="10.0.0.7:1" if ready else None)
        commands.extend(cmds)
        if not move.committed and move.running:
            assert now <= move.deadline
        seen_commit = seen_commit or any(isinstance(c, mv.Commit) for c in cmds)
        if any(isinstance(c, mv.Abort) for c in cmds):
            assert not seen_commit  # an abort never follows a commit
    assert not move.running
    kinds = [type(c) for c in commands]
    if mv.Commit in kinds:  # the old copy stops only after the commit, and once
        assert [c for c in commands if isinstance(c, mv.StopCopy)] == [mv.StopCopy(record.location, "web")]
        assert kinds.index(mv.StopCopy) > kinds.index(mv.Commit)
    else:
        assert mv.Abort in kinds


def test_the_core_reads_no_clock() -> None:
    """The clock is an argument: no module of peer/core imports time (or asyncio, see setup.cfg)."""
    for path in Path(mv.__file__).parent.glob("*.py"):
        tree = ast.parse(path.read_text())
        names = {a.name for n in ast.walk(tree) if isinstance(n, (ast.Import, ast.ImportFrom))
                 for a in n.names} | {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
        assert not names & {"time", "asyncio", "datetime"}, path


@given(records(), cluster, st.sampled_from(["m1", "m2"]), st.none() | cluster)
def test_a_move_stands_exactly_when_its_commit_is_in_the_record(record: Record, location: str, mid: str,
                                                                 target: str | None) -> None:
    committed = moves.commit(record, location=location, instance="10.0.0.9:1", migration_id="m1")
    assert mv.stands(committed, mid, target) == (not record.tombstone and mid == "m1" and target == location)
    assert not mv.stands(None, mid, target)


@given(records(), st.lists(cluster, unique=True), st.sets(cluster), st.booleans())
def test_candidates_skip_recent_refusers_unless_named_and_put_standbys_first(
        record: Record, names: list[str], refusers: set[str], explicit: bool) -> None:
    from placement import Candidate
    ranked = [Candidate(n, 1.0 - i / 10, ()) for i, n in enumerate(names)]
    refusals = mv.Refusals()
    for n in refusers:
        refusals.remember(n, record.digest, "deny", 0.0)
    asked = [c.name for c in mv.candidates(ranked, record, explicit=explicit, refusals=refusals, now=1.0)]
    expected = [n for n in names if explicit or n not in refusers]
    assert sorted(asked) == sorted(expected)
    flags = [n in record.standby_clusters for n in asked]
    assert flags == sorted(flags, reverse=True)  # standbys first, the rest in placement's order
    assert [n for n in asked if n not in record.standby_clusters] == \
        [n for n in expected if n not in record.standby_clusters]


@given(ready=st.booleans(), since_poll=st.floats(min_value=0.0, max_value=500.0),
       orphan_after=st.floats(min_value=1.0, max_value=60.0), hold_max=st.floats(min_value=0.0, max_value=120.0))
def test_a_ready_arriving_copy_outlives_a_stateful_moves_hold(ready: bool, since_poll: float, orphan_after: float,
                                                              hold_max: float) -> None:
    orphaned = mv.arrival_orphaned(ready=ready, since_poll=since_poll, orphan_after=orphan_after, hold_max=hold_max)
    if since_poll <= orphan_after:
        assert not orphaned  # the coordinator polled recently enough
    if ready and since_poll <= orphan_after + hold_max:
        assert not orphaned  # rerouting, or holding the requests for the state transfer
    if since_poll > orphan_after + hold_max:
        assert orphaned  # nobody is coming for it
    if not ready:
        assert orphaned == (since_poll > orphan_after)
