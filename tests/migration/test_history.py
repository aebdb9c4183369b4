"""The migration history (GET /v1/migrations) kept as rows: finishing a migration appends one
row instead of rewriting the list (issue 13), the list survives a restart, stays bounded, and a
history an older roam kept whole in `meta` is moved over once."""
from __future__ import annotations

from pathlib import Path

from peer.runtime.metrics import Metrics
from peer.migration.history import HISTORY_KEY, Migration, MigrationLog
from peer.records.store import RecordStore


def _finish(log: MigrationLog, n: int) -> None:
    for i in range(n):
        m = log.begin(Migration(service=f"s{i}", kind="planned", reason="test", coordinator="c1", home="c1", source="c1"))
        log.finish(m, outcome="succeeded")


def test_history_survives_a_restart_and_stays_bounded(tmp_path: Path) -> None:
    store = RecordStore.open(tmp_path / "records.sqlite3")
    log = MigrationLog(store=store, metrics=Metrics("c1"))
    _finish(log, 7)
    store.history_append([{"service": "x"}] * 3, keep=5)  # the bound holds at every append
    assert [e["service"] for e in store.history_load(limit=100)] == ["s5", "s6", "x", "x", "x"]
    store.close()
    again = RecordStore.open(tmp_path / "records.sqlite3")
    assert len(MigrationLog(store=again, metrics=Metrics("c1")).recent()) == 5


def test_an_older_history_in_meta_is_moved_once(tmp_path: Path) -> None:
    store = RecordStore.open(tmp_path / "records.sqlite3")
    old = MigrationLog(store=store, metrics=Metrics("c1"))
    _finish(old, 2)
    entries = store.history_load(limit=10)
    store.meta_put(HISTORY_KEY, entries)  # as an older roam left it
    store.history_append([], keep=0)  # and no rows
    log = MigrationLog(store=store, metrics=Metrics("c1"))
    assert [e["service"] for e in reversed(log.recent())] == ["s0", "s1"]
    assert store.meta_get(HISTORY_KEY) is None
    assert len(MigrationLog(store=store, metrics=Metrics("c1")).recent()) == 2  # not moved twice
