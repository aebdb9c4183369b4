"""The SQLite record store: durability, crash safety, schema versions, digests, tombstones, journal."""
from __future__ import annotations

import logging
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from peer.records import record as rec
from peer.records import vclock as vc
from peer.records.merge import AdoptLocalCopy, SupersededWrite, local_write
from peer.records.record import Record, State, tombstone_of
from peer.records.store import SCHEMA_VERSION, RecordStore, StoreVersionError, _parties
from peer.runtime.waiting import wait_until_sync
from peer.trust import signing
from tests.records.strategies import full_records, standby_sets

REPO = Path(__file__).resolve().parents[2]


def content(name: str = "web", *, home: str = "a", location: str = "a") -> Record:
    return Record(name=name, home=home, location=location, state=State.RUNNING, digest="d",
                  descriptor=b"\x81\xa4name\xa3web", instance="127.0.0.1:8000", endpoint="127.0.0.1:30000")


@pytest.fixture
def store(tmp_path: Path) -> Iterator[RecordStore]:
    s = RecordStore.open(tmp_path / "records.db")
    yield s
    s.close()


def test_put_local_increments_here_and_survives_reopen(tmp_path: Path) -> None:
    path = tmp_path / "r.db"
    with RecordStore.open(path) as s:
        first = s.put_local(content(), here="a", now=1.0)
        second = s.put_local(replace(first, state=State.MIGRATING), here="a", now=2.0)
        assert vc.by_cluster(first.vclock) == {"a": 1} and vc.by_cluster(second.vclock) == {"a": 2}
        assert s.get("web") == second
    with RecordStore.open(path) as s:
        assert s.get("web") == second
        assert s.all() == [second]
        assert s.integrity_check() == "ok"
        assert s.schema_version() == SCHEMA_VERSION
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    conn.close()


def test_apply_remote_reconciles_commits_and_reports_actions(tmp_path: Path) -> None:
    path = tmp_path / "r.db"
    remote = local_write(None, content(location="b"), here="a", now=1.0)
    with RecordStore.open(path) as s:
        out = s.apply_remote(remote, here="b")
        assert out.changed and out.actions == (AdoptLocalCopy("web"),)
        again = s.apply_remote(remote, here="b")
        assert not again.changed and again.actions == ()
    with RecordStore.open(path) as s:
        assert s.get("web") == remote


def test_all_hides_tombstones_unless_asked(store: RecordStore) -> None:
    live = store.put_local(content("web"), here="a", now=1.0)
    dead = store.put_local(tombstone_of(store.put_local(content("db"), here="a", now=1.0)), here="a", now=2.0)
    assert store.all() == [live]
    assert store.all(include_tombstones=True) == [dead, live]


def test_digests_follow_interest_and_name_ranges(store: RecordStore) -> None:
    for name, home, location in (("a1", "a", "a"), ("a2", "a", "b"), ("c1", "c", "a"), ("c2", "c", "d")):
        store.put_local(content(name, home=home, location=location), here="a", now=1.0)
    assert set(store.digests()) == {"a1", "a2", "c1", "c2"}
    assert set(store.digests(peer="b")) == {"a2"}
    assert set(store.digests(peer="c")) == {"c1", "c2"}
    assert set(store.digests(lo="a2", hi="c2")) == {"a2", "c1"}
    assert store.digests()["a1"] == rec.version_digest(store.get("a1"))  # type: ignore[arg-type]
    assert set(store.digests_of(["a1", "zz"])) == {"a1"}
    store.drop("a1")
    assert store.get("a1") is None and "a1" not in store.digests()


def test_tombstone_acks_are_tied_to_the_exact_version_and_gc(store: RecordStore) -> None:
    live = store.put_local(content(location="b"), here="a", now=1.0)
    store.ack_tombstones("b", {"web": rec.version_digest(live)})
    assert store.acked_by("web") == set()  # live records collect no acks
    dead = store.put_local(tombstone_of(live), here="a", now=2.0)
    store.ack_tombstones("b", {"web": rec.version_digest(live)})  # an old version: not an ack
    assert store.acked_by("web") == set()
    assert store.gc_tombstones(here="a", now=3.0, ttl=100.0) == []
    store.ack_tombstones("b", {"web": rec.version_digest(dead)})
    assert store.acked_by("web") == {"b"}
    assert store.gc_tombstones(here="a", now=3.0, ttl=100.0) == ["web"]
    assert store.get("web") is None


def test_tombstones_expire_after_ttl_without_acks(store: RecordStore) -> None:
    dead = store.put_local(tombstone_of(store.put_local(content(location="b"), here="a", now=1.0)), here="a", now=2.0)
    assert store.gc_tombstones(here="a", now=dead.updated_at + 99, ttl=100.0) == []
    assert store.gc_tombstones(here="a", now=dead.updated_at + 100, ttl=100.0) == ["web"]


def test_meta_and_journal(tmp_path: Path) -> None:
    path = tmp_path / "r.db"
    with RecordStore.open(path) as s:
        assert s.meta_get("k", 7) == 7
        s.meta_put("k", {"x": [1, b"2"]})
        s.journal_put("m1", {"stage": "pr", "service": "web"}, now=1.0)
        s.journal_put("m2", {"stage": "pr"}, now=2.0)
        s.journal_put("m1", {"stage": "wait", "service": "web"}, now=3.0)
        s.journal_close("m2", now=4.0)
    with RecordStore.open(path) as s:
        assert s.meta_get("k") == {"x": [1, b"2"]}
        assert s.journal_open() == [("m1", {"stage": "wait", "service": "web"})]
        assert s.journal_get("m2") == {"stage": "pr"}
        assert s.journal_get("nope") is None
        assert s.journal_prune(before=5.0) == 1
        assert s.journal_get("m2") is None


def test_a_prepared_write_is_stored_as_built_unless_the_record_changed_meanwhile(store: RecordStore) -> None:
    """Issue 16: the migration engine builds and signs its commit's version while HAProxy
    answers (`prepare_local`); `put_local` stores it only if it was built on the row held."""
    first = store.put_local(content(), here="a", now=1.0)
    moved = replace(first, location="b")
    prepared = store.prepare_local(moved, here="a", now=2.0)
    assert store.get("web") == first  # nothing written yet
    assert store.put_local(moved, here="a", now=3.0, prepared=prepared) is prepared.stored
    assert store.get("web") == prepared.stored and vc.by_cluster(prepared.stored.vclock) == {"a": 2}

    stale = store.prepare_local(replace(moved, location="c"), here="a", now=4.0)
    between = store.put_local(replace(moved, state=State.MIGRATING), here="a", now=5.0)  # (a write since)
    again = replace(moved, location="c")
    stored = store.put_local(again, here="a", now=6.0, prepared=replace(stale, record=again))
    assert stored != stale.stored and stored.location == "c"
    assert vc.by_cluster(stored.vclock) == {"a": 4} and vc.descends(stored.vclock, between.vclock)


def test_a_write_decided_on_an_older_version_gives_way_to_the_one_merged_since(store: RecordStore) -> None:
    """The lost update at the AC (issue 16): `b` read the record, the HC's version arrived by a
    merge while `b` waited, then `b` wrote its change of what it read. The HC's version stands
    and nothing is written (prepared ahead or not); a change of the version held now is taken."""
    base = store.apply_remote(local_write(None, replace(content(location="b"), homes=("a", "c")), here="a", now=1.0),
                              here="b").result
    read = store.get("web")
    assert read == base
    prepared = store.prepare_local(replace(read, instance="127.0.0.2:7"), here="b", now=2.0)
    hc = store.apply_remote(local_write(base, replace(base, location="a", instance="127.0.0.1:9"), here="a",
                                        now=2.0), here="b").result
    with pytest.raises(SupersededWrite, match="web: the change was decided on an older version"):
        store.put_local(replace(read, instance="127.0.0.2:7"), here="b", now=3.0)
    with pytest.raises(SupersededWrite):
        store.put_local(prepared.record, here="b", now=3.0, prepared=prepared)
    assert store.get("web") == hc  # untouched
    on_held = store.put_local(replace(hc, state=State.MIGRATING), here="b", now=4.0)
    assert on_held.location == "a" and vc.descends(on_held.vclock, hc.vclock)


class _SigningFails:
    """A record guard whose signing fails, inside put_local's transaction."""

    def pending(self, base: str) -> bool:
        return False

    def sign(self, previous: Record | None, stored: Record, *, actor: str) -> Record:
        raise RuntimeError("no signing key")


def test_a_local_write_closes_its_journal_entry_in_the_same_transaction(tmp_path: Path) -> None:
    """Issue 16: a move's commit at its AC closes the arrival's entry with the record (one
    fsync): both happen, or neither."""
    path = tmp_path / "r.db"
    with RecordStore.open(path) as s:
        s.journal_put("arrive:web", {"migration_id": "m1", "name": "web"}, now=1.0)
        s.guard = _SigningFails()  # type: ignore[assignment]
        with pytest.raises(RuntimeError):
            s.put_local(content(location="b"), here="b", now=2.0, close="arrive:web")
        assert s.get("web") is None and [key for key, _ in s.journal_open()] == ["arrive:web"]
        s.guard = None
        stored = s.put_local(content(location="b"), here="b", now=3.0, close="arrive:web")
    with RecordStore.open(path) as s:
        assert s.get("web") == stored and s.journal_open() == []
        assert s.journal_get("arrive:web") == {"migration_id": "m1", "name": "web"}


def test_anti_entropy_scans_read_indexes_only(store: RecordStore) -> None:
    """Issue 16: a peer's digests come from a covering index, tombstones from a partial one."""
    def plan(sql: str, *params: object) -> str:
        return " ".join(row[-1] for row in store._conn.execute("EXPLAIN QUERY PLAN " + sql, params))

    assert "COVERING INDEX records_parties" in plan("SELECT name, digest FROM records WHERE parties LIKE ?", "%,b,%")
    assert "INDEX records_tombstones" in plan("SELECT name, digest FROM records WHERE tombstone=1")


def test_schema_from_zero_and_refusal_of_a_newer_file(tmp_path: Path) -> None:
    path = tmp_path / "r.db"
    with RecordStore.open(path) as s:
        assert s.schema_version() == SCHEMA_VERSION == 6
    conn = sqlite3.connect(path)
    indexes = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='index' AND sql IS NOT NULL")}
    assert indexes == {"records_parties", "records_tombstones"}  # home and location: read by no query
    conn.close()
    conn = sqlite3.connect(path)
    conn.execute(f"PRAGMA user_version={SCHEMA_VERSION + 1}")
    conn.commit()
    conn.close()
    with pytest.raises(StoreVersionError):
        RecordStore.open(path)


def test_a_schema_5_file_gains_the_body_column_and_reads_as_before(tmp_path: Path) -> None:
    """Schema 6 keeps each row's signing digest beside it; a file of schema 5 (no such column,
    rows written before) opens, its rows read as they were (no digest known: hashed when
    needed), and what is written after keeps its digest."""
    path = tmp_path / "r.db"
    with RecordStore.open(path) as s:
        old = s.put_local(content("web"), here="a", now=1.0)
    conn = sqlite3.connect(path)
    conn.execute("ALTER TABLE records DROP COLUMN body")
    conn.execute("PRAGMA user_version=5")
    conn.commit()
    conn.close()
    with RecordStore.open(path) as s:
        assert s.schema_version() == SCHEMA_VERSION
        held = s.get("web")
        assert held is not None and held == old and signing.known_body_digest(held) is None
        assert s._conn.execute("SELECT body FROM records").fetchall() == [(None,)]
        newer = local_write(held, replace(held, instance="127.0.0.1:8001"), here="b", now=2.0)
        digest = signing.body_digest(newer)  # (as a signed write or a checked remote version has it)
        assert s.apply_remote_many([newer], here="a")[0].changed
        assert s._conn.execute("SELECT body FROM records").fetchall() == [(digest,)]
        after = s.get("web")
        assert after is not None and signing.known_body_digest(after) == digest


@given(full_records(), st.booleans())
def test_a_rows_kept_body_digest_is_its_contents(r: Record, known: bool) -> None:
    """The digest kept beside a row is exactly `body_digest` of the row's content, computed
    afresh; none is kept (nor invented on reading) where the written Record had none."""
    r = rec.unpack(rec.pack(r))
    if known:
        signing.body_digest(r)
    row = RecordStore._row(r)
    assert row[-1] == (signing.body_digest(rec.unpack(row[5])) if known else None)
    back = RecordStore._decode_row(r.name, row[5], row[-1])
    assert back == r
    assert signing.known_body_digest(back) == row[-1]
    if known:
        assert signing.known_body_digest(back) == signing.body_digest(rec.unpack(rec.pack(back)))


WRITER = textwrap.dedent("""
    import sys
    from pathlib import Path
    from peer.records.record import Record, State
    from peer.records.store import RecordStore
    store = RecordStore.open(Path(sys.argv[1]))
    i = 0
    while True:
        name = f"svc-{i % 300}"
        store.put_local(Record(name=name, home="a", location="a", state=State.RUNNING, digest="d",
                               descriptor=bytes(200), instance=f"127.0.0.1:{1000 + i % 5000}"), here="a", now=float(i))
        print(name, i, flush=True)  # only after the commit returned
        i += 1
""")


@pytest.mark.integration
def test_sigkill_mid_write_loses_nothing_committed(tmp_path: Path) -> None:
    path = tmp_path / "crash.db"
    out_path = tmp_path / "out.txt"
    env = dict(os.environ, PYTHONPATH=str(REPO))
    with open(out_path, "w") as out:
        proc = subprocess.Popen([sys.executable, "-c", WRITER, str(path)], stdout=out, env=env)
    try:
        wait_until_sync(lambda: out_path.read_text().count("\n") >= 400, timeout=60, what="writer progress")
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    committed: dict[str, int] = {}
    text = out_path.read_text()
    # A kill can land inside a print: only complete lines are reports of committed writes.
    for line in text[:text.rfind("\n") + 1].splitlines():
        name, count = line.split()
        committed[name] = int(count)
    with RecordStore.open(path) as s:
        assert s.integrity_check() == "ok"
        for name, last in committed.items():
            stored = s.get(name)
            assert stored is not None
            # The last acknowledged write (or the one in flight when killed) is there.
            assert stored.updated_at >= last
        assert len(s.all()) >= len(committed)


def test_the_agents_hygiene_round_forgets_acknowledged_tombstones_and_old_journal(store: RecordStore) -> None:
    """What the agent's housekeeping runs every minute (peer.agent.records_hygiene)."""
    from peer.agent import JOURNAL_KEEP, records_hygiene

    live = store.put_local(content(location="b"), here="a", now=1.0)
    dead = store.put_local(tombstone_of(live), here="a", now=2.0)
    store.journal_put("old", {"stage": "cleanup"}, now=10.0)
    store.journal_close("old", now=11.0)
    store.journal_put("open", {"stage": "wait"}, now=10.0)
    assert records_hygiene(store, here="a", now=12.0) == ([], 0)  # b has not acknowledged yet
    store.ack_tombstones("b", {"web": rec.version_digest(dead)})
    assert records_hygiene(store, here="a", now=11.0 + JOURNAL_KEEP + 1) == (["web"], 1)
    assert store.get("web") is None and store.journal_get("old") is None
    assert store.journal_open() == [("open", {"stage": "wait"})]  # an open entry is never pruned


@given(full_records(), standby_sets(), st.sampled_from(["a", "b", "c"]))
def test_parties_of_a_row_are_the_interested_clusters(r: Record, standbys: tuple[tuple[str, str], ...],
                                                       location: str) -> None:
    """The `parties` column, with its shortcut for a record of one home and no standbys."""
    for version in (r, replace(r, standbys=standbys), replace(r, location=location, homes=())):
        assert _parties(version) == "," + ",".join(sorted(rec.interested(version))) + ","


def test_a_batch_logs_its_first_conflicts_and_counts_the_rest(store: RecordStore,
                                                              caplog: pytest.LogCaptureFixture) -> None:
    """A heal may resolve thousands of conflicts in a round: the first CONFLICTS_LOGGED of a
    batch are logged each at WARNING, the rest at DEBUG with one WARNING line counting them."""
    from peer.records.store import CONFLICTS_LOGGED

    names = [f"svc{i:02d}" for i in range(CONFLICTS_LOGGED + 7)]
    bases = [local_write(None, content(n), here="a", now=1.0) for n in names]
    store.apply_remote_many(bases, here="b")
    for base in bases:  # b's own change ...
        store.put_local(replace(base, location="b"), here="b", now=2.0)
    theirs = [local_write(base, replace(base, state=State.MIGRATING), here="a", now=3.0) for base in bases]  # ... and a's
    with caplog.at_level(logging.WARNING, logger="peer.records.store"):
        outcomes = store.apply_remote_many(theirs, here="b")
    assert sum(o.conflict for o in outcomes) == len(names)
    lines = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert [line.split(":")[0] for line in lines[:CONFLICTS_LOGGED]] == [f"record conflict on {n}" for n in names[:CONFLICTS_LOGGED]]
    assert lines[CONFLICTS_LOGGED:] == [
        f"7 more record conflicts in this batch, resolved by the same rule "
        f"({', '.join(names[CONFLICTS_LOGGED:2 * CONFLICTS_LOGGED])}, ...; each at DEBUG)"]
