"""The reconciliation rules: join laws, the DESIGN conflict rule, tombstones, actions."""
from __future__ import annotations

from dataclasses import replace

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from peer.records import vclock as vc
from peer.records.naming import incarnation_order
from peer.records.merge import (
    AdoptLocalCopy,
    Forget,
    KeepStandby,
    LocalWriteError,
    Reroute,
    StopLocalCopy,
    droppable,
    local_write,
    _compare_ranks,
    _transition,
    _view,
    rank,
    reconcile,
    superseded,
    transition,
)
from peer.records.record import Record, State, role, tombstone_of
from tests.records.strategies import CLUSTERS, addrs, histories, records


def join(a: Record, b: Record) -> Record:
    return reconcile(a, b, here="a").result


# --- laws ------------------------------------------------------------------------------------

@settings(max_examples=150)
@given(histories(), st.data())
def test_reconcile_is_a_join_on_reachable_versions(seen: list[Record], data: st.DataObject) -> None:
    a, b, c = (data.draw(st.sampled_from(seen)) for _ in range(3))
    assert join(a, b) == join(b, a)
    assert join(join(a, b), c) == join(a, join(b, c))
    assert join(a, a) == a
    assert not reconcile(a, a, here="b").changed


@given(records(name="web"), records(name="web"), records(name="web"))
def test_reconcile_is_a_join_even_on_arbitrary_versions(a: Record, b: Record, c: Record) -> None:
    assert join(a, b) == join(b, a)
    assert join(join(a, b), c) == join(a, join(b, c))
    assert join(a, a) == a


@settings(max_examples=150)
@given(histories(), st.data())
def test_dominating_version_wins_and_concurrent_ones_are_flagged(seen: list[Record], data: st.DataObject) -> None:
    a, b = data.draw(st.sampled_from(seen)), data.draw(st.sampled_from(seen))
    if a.incarnation != b.incarnation:
        later = max(a, b, key=lambda r: incarnation_order(r.incarnation))
        assert reconcile(a, b, here="c").result == later == reconcile(b, a, here="c").result
        return
    if vc.dominates(b.vclock, a.vclock):
        out = reconcile(a, b, here="c")
        assert out.result == b and out.changed and not out.conflict
        back = reconcile(b, a, here="c")
        assert back.result == b and not back.changed and not back.actions
    if vc.concurrent(a.vclock, b.vclock):
        out = reconcile(a, b, here="c")
        assert vc.dominates(out.result.vclock, a.vclock) and vc.dominates(out.result.vclock, b.vclock)
        assert out.conflict == (rank(a) != rank(b))
        assert replace(out.result, vclock=vc.fresh()) in (replace(a, vclock=vc.fresh()), replace(b, vclock=vc.fresh()))


# --- the DESIGN rule on concrete stories -----------------------------------------------------

def created(*, home: str = "a", location: str = "a", instance: str | None = "127.0.0.1:1") -> Record:
    content = Record(name="web", home=home, location=location, state=State.RUNNING, digest="d",
                     descriptor=b"x", instance=instance, endpoint="127.0.0.1:30000")
    return local_write(None, content, here=home, now=1.0)


def test_hc_view_wins_a_concurrent_conflict_whatever_the_order() -> None:
    base = created(location="b", instance="127.0.0.2:1")  # home a, running abroad at b
    # Partition: the HC redeploys at home (fail-safe); the AC restarts its copy on a new port.
    at_home = local_write(base, replace(base, location="a", instance="127.0.0.1:2"), here="a", now=2.0)
    abroad = local_write(base, replace(base, instance="127.0.0.2:9"), here="b", now=2.0)
    abroad = local_write(abroad, replace(abroad, state=State.MIGRATING), here="b", now=3.0)  # more changes
    assert vc.concurrent(at_home.vclock, abroad.vclock)
    at_b = reconcile(abroad, at_home, here="b")
    at_a = reconcile(at_home, abroad, here="a")
    assert at_a.result == at_b.result
    assert at_b.result.location == "a" and at_b.result.instance == "127.0.0.1:2"
    assert at_a.conflict and at_b.conflict
    assert at_b.actions == (StopLocalCopy("web"), Forget("web"))  # the losing copy is cleaned up
    assert at_a.actions == ()  # the HC keeps what it had; only the clock moved
    assert at_a.changed and at_a.result.vclock == vc.merge(at_home.vclock, abroad.vclock)


def test_two_resolvers_of_one_conflict_agree_without_a_new_conflict() -> None:
    base = created(location="b")
    x = local_write(base, replace(base, location="c"), here="b", now=2.0)
    y = local_write(base, replace(base, location="d"), here="c", now=2.0)
    r1, r2 = reconcile(x, y, here="c").result, reconcile(y, x, here="d").result
    assert r1 == r2
    assert not reconcile(r1, r2, here="a").changed


def test_a_delete_never_comes_back_from_a_stale_peer() -> None:
    live = created(location="b")
    stale = local_write(live, replace(live, state=State.RUNNING, instance="127.0.0.2:5"), here="b", now=2.0)
    dead = local_write(stale, tombstone_of(stale), here="a", now=3.0)
    for older in (live, stale):
        assert reconcile(dead, older, here="a").result == dead
        assert not reconcile(dead, older, here="a").changed
        assert reconcile(older, dead, here="b").result == dead


def test_delete_at_hc_beats_a_concurrent_update_abroad_and_stops_the_copy() -> None:
    live = created(location="b", instance="127.0.0.2:1")
    dead = local_write(live, tombstone_of(live), here="a", now=2.0)
    update = local_write(live, replace(live, instance="127.0.0.2:2"), here="b", now=2.0)
    out = reconcile(update, dead, here="b")
    assert out.result.tombstone and out.conflict
    assert out.actions == (StopLocalCopy("web"), Forget("web"))


def test_update_at_hc_beats_a_concurrent_delete_abroad() -> None:
    live = created(location="b", instance="127.0.0.2:1")
    dead = local_write(live, tombstone_of(live), here="b", now=2.0)
    moved = local_write(live, replace(live, location="a", instance="127.0.0.1:7"), here="a", now=2.0)
    assert not reconcile(dead, moved, here="b").result.tombstone
    assert not reconcile(moved, dead, here="a").result.tombstone


def test_recreating_a_name_at_another_home_outranks_the_old_tombstone() -> None:
    live = replace(created(home="a"), incarnation="1-old")
    for i in range(5):
        live = local_write(live, replace(live, instance=f"127.0.0.1:{i + 10}"), here="a", now=2.0 + i)
    dead = local_write(live, tombstone_of(live), here="a", now=10.0)
    reborn = local_write(None, replace(created(home="b", location="b"), incarnation="2-new"), here="b", now=11.0)
    # The old tombstone deletes only its own incarnation: the new service survives both ways ...
    assert reconcile(dead, reborn, here="a").result == reborn
    assert reconcile(reborn, dead, here="b").result == reborn
    assert reconcile(reborn, dead, here="c").actions == ()
    # ... and a stale live version of the deleted one never comes back over it.
    assert reconcile(reborn, live, here="c").result == reborn
    with pytest.raises(LocalWriteError):
        local_write(reborn, replace(reborn, home="c"), here="b", now=12.0)
    with pytest.raises(LocalWriteError):
        local_write(reborn, replace(live, incarnation="1-old"), here="a", now=12.0)


def test_a_repaired_home_set_outranks_its_history_without_the_hc() -> None:
    base = replace(created(home="a", location="c"), homes=("a", "b"), incarnation="1-x")
    base = local_write(None, base, here="a", now=1.0)
    repaired = local_write(base, replace(base, homes=("a", "b", "c")), here="b", now=2.0)
    assert repaired.epoch == base.epoch + 1
    assert rank(repaired) > rank(base)
    assert reconcile(base, repaired, here="a").result == repaired
    # Concurrent: the HC's own later write wins over the deputy's repair (the HC's view).
    hc_moved = local_write(base, replace(base, location="a"), here="a", now=3.0)
    assert reconcile(repaired, hc_moved, here="b").result.location == "a"


def test_local_write_ignores_the_callers_clocks_and_increments_here() -> None:
    base = created()
    forged = replace(base, vclock=vc.increment(vc.fresh(), "z", timestamp=1.0))
    out = local_write(base, forged, here="b", now=5.0)
    assert vc.counters(out.vclock) == {"a": 1, "b": 1}
    assert out.written == out.vclock and out.updated_at == 5.0


# --- a local write decided on an older version (merge.superseded) ---------------------------

def _content(r: Record) -> Record:
    return replace(r, vclock=vc.fresh())


@settings(max_examples=300)
@given(histories(), st.data())
def test_a_stale_local_write_gives_way_exactly_when_the_merge_would_drop_it(seen: list[Record],
                                                                            data: st.DataObject) -> None:
    """A cluster reads `base`, the peers' later writes on it are merged meanwhile (`held`),
    and the cluster writes its change of `base`. `superseded` says whether that write must give
    way, and must agree with the history where the write was stored at its read and `held`
    merged after it: the write gives way exactly when that merge keeps another content."""
    base = data.draw(st.sampled_from([r for r in seen if not r.tombstone] or seen))
    here = data.draw(st.sampled_from(CLUSTERS))
    held, now = base, 1500.0
    for peer in data.draw(st.lists(st.sampled_from([c for c in CLUSTERS if c != here]), min_size=1, max_size=3)):
        now += 1.0
        kind = data.draw(st.sampled_from(["move", "homes", "delete"]))
        if held.tombstone or kind == "move":
            change = replace(held, location=data.draw(st.sampled_from(CLUSTERS)), instance=data.draw(addrs))
        elif kind == "homes":
            change = replace(held, homes=(*held.entries, peer) if peer not in held.entries else held.entries[:1])
        else:
            change = tombstone_of(held)
        held = local_write(held, change, here=peer, now=now)
    mine = replace(base, location=data.draw(st.sampled_from(CLUSTERS)), instance=data.draw(st.none() | addrs))
    if data.draw(st.booleans()) and "d" not in base.entries:
        mine = replace(mine, homes=(*base.entries, "d"))
    assume(mine.entries == base.entries or held.epoch == base.epoch)  # (superseded's named limit)
    at_read = local_write(base, mine, here=here, now=2000.0)
    merged_after = reconcile(held, at_read, here=here).result
    gives_way = _content(merged_after) != _content(at_read)
    assert superseded(held, mine, actor=here, now=2000.0) == gives_way


def test_a_stale_write_abroad_gives_way_to_the_hcs_decision_and_the_hcs_own_wins() -> None:
    """The demo's lost update: the AC (b) read the record, the HC's fail-safe moved the service
    home meanwhile; the AC's write of its copy's address must not carry its old read over it.
    The HC's own stale write still wins: its view ranks first, as in any conflict."""
    base = local_write(None, replace(created(home="a", location="b"), homes=("a", "c")), here="a", now=1.0)
    failsafe = local_write(base, replace(base, location="a", instance="127.0.0.1:9"), here="a", now=2.0)
    assert superseded(failsafe, replace(base, instance="127.0.0.2:7"), actor="b", now=3.0)
    assert not superseded(failsafe, replace(failsafe, instance="127.0.0.2:7"), actor="b", now=3.0)  # (read now)
    abroad = local_write(base, replace(base, instance="127.0.0.2:7"), here="b", now=2.0)
    assert not superseded(abroad, replace(base, location="c"), actor="a", now=3.0)  # the HC's
    assert not superseded(base, replace(failsafe, location="c"), actor="b", now=3.0)  # (a version ahead: a peer's)
    repaired = local_write(base, replace(base, homes=("a", "c", "d")), here="c", now=2.0)
    assert superseded(repaired, replace(base, state=State.MIGRATING), actor="b", now=3.0)  # the deputy's


# --- actions ---------------------------------------------------------------------------------

@pytest.mark.parametrize("before, after, here, expected", [
    (None, {"location": "b"}, "b", [AdoptLocalCopy("web")]),
    (None, {"location": "b", "instance": "127.0.0.2:1"}, "a", [Reroute("web", "127.0.0.2:1")]),
    (None, {"location": "b"}, "c", []),
    ({"location": "b"}, {"location": "c"}, "b", [StopLocalCopy("web"), Forget("web")]),
    ({"location": "b"}, {"location": "c"}, "c", [AdoptLocalCopy("web")]),
    ({"location": "b", "instance": "127.0.0.2:1"}, {"location": "c", "instance": "127.0.0.3:1"}, "a",
     [Reroute("web", "127.0.0.3:1")]),
    ({"location": "b", "instance": "127.0.0.2:1"}, {"location": "b", "instance": "127.0.0.2:1", "state": State.MIGRATING},
     "a", []),
    ({"location": "a", "instance": "127.0.0.1:1"}, {"location": "a", "tombstone": True, "state": State.DELETED},
     "a", [StopLocalCopy("web"), Forget("web")]),
    # hot standby (issue 15): c becomes a standby holder, is promoted, is dropped, is deleted
    ({"location": "b"}, {"location": "b", "standbys": (("c", "127.0.0.3:1"),)}, "c", [KeepStandby("web")]),
    ({"location": "b"}, {"location": "b", "standbys": (("c", "127.0.0.3:1"),)}, "a", [Reroute("web", None)]),
    ({"location": "b", "standbys": (("c", "127.0.0.3:1"),)},
     {"location": "c", "instance": "127.0.0.3:1"}, "c", [AdoptLocalCopy("web")]),
    ({"location": "b", "standbys": (("c", "127.0.0.3:1"),)}, {"location": "b"}, "c",
     [StopLocalCopy("web"), Forget("web")]),
    ({"location": "b", "standbys": (("c", "127.0.0.3:1"),)},
     {"location": "b", "tombstone": True, "state": State.DELETED}, "c", [StopLocalCopy("web"), Forget("web")]),
    ({"location": "b", "standbys": (("c", "127.0.0.3:1"),)},
     {"location": "b", "standbys": (("c", "127.0.0.3:1"), ("d", "127.0.0.4:1"))}, "c", []),
])
def test_transition_actions(before: dict[str, object] | None, after: dict[str, object], here: str,
                            expected: list[object]) -> None:
    base = Record(name="web", home="a", location="a", state=State.RUNNING, digest="d", descriptor=b"")
    b = replace(base, **before) if before is not None else None  # type: ignore[arg-type]
    a = replace(base, **after)  # type: ignore[arg-type]
    assert list(transition(b, a, here=here)) == expected


@settings(max_examples=300)
@given(st.none() | records(name="web"), records(name="web"), st.sampled_from(CLUSTERS))
def test_a_copy_is_stopped_exactly_when_here_holds_it_no_more(before: Record | None, after: Record,
                                                                here: str) -> None:
    """Standbys (issue 15): the merge never stops a copy at a cluster the winner lists as a
    standby (or runs at), and always stops one the winner no longer lists (tombstone too)."""
    actions = transition(before, after, here=here)
    held_before = before is not None and before.copy_here(here)
    held_after = after.copy_here(here)
    assert (StopLocalCopy("web") in actions) == (held_before and not held_after)
    if not after.tombstone and here in after.standby_clusters and after.location != here:
        assert StopLocalCopy("web") not in actions
        assert (KeepStandby("web") in actions) == (not held_before)


@settings(max_examples=200)
@given(records(name="web"), records(name="web"), st.data())
def test_compare_ranks_is_the_order_of_rank(a: Record, b: Record, data: st.DataObject) -> None:
    """`_compare_ranks` computes the rank element by element, each only when the ones before tie:
    the same order as comparing whole `rank` tuples, whatever the two versions."""
    homes = st.sampled_from([(), ("a", "b"), ("a", "c", "b")])
    incarnations = st.sampled_from(["", "1-x", "2-y", "10-x"])
    a = replace(a, home="a", homes=data.draw(homes), incarnation=data.draw(incarnations), epoch=data.draw(st.integers(0, 2)))
    if data.draw(st.booleans()):  # often: ties on every element but some
        b = replace(a, **{k: v for k, v in vars(b).items() if k in data.draw(st.sets(st.sampled_from(
            ["written", "tombstone", "location", "instance", "vclock", "epoch"])))})
    else:
        b = replace(b, home="a", homes=data.draw(homes), incarnation=data.draw(incarnations))
    expected = (rank(a) > rank(b)) - (rank(a) < rank(b))
    assert _compare_ranks(a, b) == expected and _compare_ranks(b, a) == -expected


@settings(max_examples=200)
@given(st.none() | records(name="web"), st.sampled_from(CLUSTERS))
def test_view_is_what_roles_and_copies_say(r: Record | None, here: str) -> None:
    """The transition's one look at a version agrees with `role` and `copy_here`."""
    runs, standby, holds, entry, has_role = _view(r, here)
    live = r is not None and not r.tombstone
    assert runs == (live and r is not None and r.location == here)
    assert holds == (r is not None and r.copy_here(here))
    assert standby == (holds and not runs)
    assert entry == (live and r is not None and here in r.entries)
    assert has_role == (r is not None and role(r, here) is not None)


ROLE_FIELDS = {"tombstone": st.booleans(), "location": st.sampled_from(CLUSTERS),
               "instance": st.none() | st.sampled_from(["127.0.0.1:1", "127.0.0.2:2"]),
               "homes": st.sampled_from([(), ("a", "b"), ("a", "c", "b")]), "incarnation": st.sampled_from(["", "1-x"])}
OTHER_FIELDS = {"state": st.sampled_from(list(State)), "digest": st.sampled_from(["d1", "d2"]),
                "updated_at": st.floats(0, 10), "epoch": st.integers(0, 3), "migration_id": st.none() | st.just("m")}


@settings(max_examples=250)
@given(st.none() | records(name="web"), records(name="web"), st.sampled_from(CLUSTERS), st.data())
def test_transition_shortcut_is_the_full_rule(before: Record | None, after: Record, here: str,
                                              data: st.DataObject) -> None:
    """`transition` answers () at once when the two versions agree on every field its rules read;
    whatever the two versions, it answers what the full rules do (`_transition`)."""
    if before is not None:
        before = replace(before, home="a", homes=data.draw(ROLE_FIELDS["homes"]))
        # Often: `after` is `before` with some content changed, some role fields too or none.
        if data.draw(st.booleans()):
            changes = {k: data.draw(v) for k, v in OTHER_FIELDS.items() if data.draw(st.booleans())}
            changes |= {k: data.draw(v) for k, v in ROLE_FIELDS.items() if data.draw(st.integers(0, 4)) == 0}
            after = replace(before, **changes)  # type: ignore[arg-type]
    assert transition(before, after, here=here) == _transition(before, after, here=here)


@settings(max_examples=150)
@given(histories(), st.data())
def test_merged_standbys_are_the_winners(seen: list[Record], data: st.DataObject) -> None:
    """The standby set is part of the content: the merge takes the winner's, whole."""
    a, b = data.draw(st.sampled_from(seen)), data.draw(st.sampled_from(seen))
    out = reconcile(a, b, here="a").result
    assert out.standbys in (a.standbys, b.standbys)


# --- tombstone GC ----------------------------------------------------------------------------

def test_droppable_after_every_interested_writer_acked_or_after_ttl() -> None:
    live = created(location="b")
    live = local_write(live, replace(live, state=State.RUNNING), here="b", now=2.0)
    live = local_write(live, replace(live, location="c"), here="b", now=3.0)
    dead = local_write(live, tombstone_of(live), here="a", now=4.0)  # clock {a, b}; interested {a, c}
    assert not droppable(dead, {"a", "b"}, now=5.0, ttl=100.0)
    assert not droppable(dead, {"a", "c"}, now=5.0, ttl=100.0)
    assert droppable(dead, {"a", "b", "c"}, now=5.0, ttl=100.0)
    assert droppable(dead, set(), now=104.0, ttl=100.0)
    assert not droppable(live, set(CLUSTERS), now=1e9, ttl=1.0)  # live records are never "dropped"
