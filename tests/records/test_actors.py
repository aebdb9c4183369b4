"""Clock actors: a data dir never reuses a (node, counter) pair, even after its records are lost."""
from __future__ import annotations

import sqlite3
from dataclasses import replace
from pathlib import Path

from peer.records import vclock as vc
from peer.records.merge import droppable, rank, reconcile
from peer.records.record import Record, State, tombstone_of
from peer.records.store import CLOCK_EPOCH_KEY, RecordStore


def content(name: str = "web") -> Record:
    return Record(name=name, home="a", location="a", state=State.RUNNING, digest="d", descriptor=b"x",
                  instance="127.0.0.1:8000", incarnation="1-a")


def pairs(clock: vc.VClock) -> set[tuple[str, int]]:
    return {(e.node, e.counter) for e in clock.entries}


def test_a_new_store_writes_under_its_own_actor_and_keeps_it_across_reopen(tmp_path: Path) -> None:
    with RecordStore.open(tmp_path / "r.db") as s:
        assert s.fresh
        actor = s.clock_actor("a")
        written = s.put_local(content(), here="a", now=1.0)
    assert vc.cluster_of(actor) == "a" and actor != "a"
    assert vc.counters(written.vclock) == {actor: 1} and vc.by_cluster(written.vclock) == {"a": 1}
    with RecordStore.open(tmp_path / "r.db") as s:
        assert not s.fresh and s.clock_actor("a") == actor


def test_a_store_that_held_records_before_actors_keeps_the_bare_name(tmp_path: Path) -> None:
    with RecordStore.open(tmp_path / "r.db") as s:
        s.put_local(content(), here="a", now=1.0)
    conn = sqlite3.connect(tmp_path / "r.db")
    conn.execute("DELETE FROM meta WHERE key=?", (CLOCK_EPOCH_KEY,))  # as written by an older roam
    conn.commit()
    conn.close()
    with RecordStore.open(tmp_path / "r.db") as s:
        assert s.clock_actor("a") == "a"


def test_a_wiped_data_dir_never_reuses_a_pair_and_its_next_write_wins(tmp_path: Path) -> None:
    """The HC wrote twice; only the first write reached peer b. Its disk is lost; it recovers
    b's version and writes again: the new write must not carry the lost write's clock, and it
    must win over both old versions wherever they meet."""
    with RecordStore.open(tmp_path / "old.db") as old:
        first = old.put_local(content(), here="a", now=1.0)
        lost = old.put_local(replace(first, location="c"), here="a", now=2.0)
    with RecordStore.open(tmp_path / "new.db") as new:
        assert new.fresh
        new.apply_remote(first, here="a")
        again = new.put_local(replace(first, location="b"), here="a", now=3.0)
    assert not pairs(again.written) & (pairs(lost.written) - pairs(first.written))
    assert vc.dominates(again.vclock, first.vclock)
    assert rank(again) > rank(first)
    assert reconcile(first, again, here="b").result == again
    # The lost write shows up late (a peer that held it returns): still one deterministic winner.
    assert vc.concurrent(again.vclock, lost.vclock)
    assert reconcile(lost, again, here="b").result == reconcile(again, lost, here="b").result


def test_cluster_counters_sum_the_actors_of_a_cluster() -> None:
    clock = vc.increment(vc.increment(vc.fresh(), "a", timestamp=1.0), "a~01", timestamp=2.0)
    clock = vc.increment(clock, "b", timestamp=3.0)
    assert vc.cluster_counter(clock, "a") == 2 and vc.clusters(clock) == {"a", "b"}
    assert vc.by_cluster(clock) == {"a": 2, "b": 1}


def test_tombstone_acks_are_needed_from_clusters_not_actors(tmp_path: Path) -> None:
    with RecordStore.open(tmp_path / "r.db") as s:
        live = s.put_local(content(), here="a", now=1.0)
        tomb = s.put_local(tombstone_of(live), here="a", now=2.0)
        assert "web" in s.tombstone_digests(written_by="a")
    assert droppable(tomb, {"a"}, now=3.0, ttl=100.0)
    assert not droppable(tomb, set(), now=3.0, ttl=100.0)
