"""The store's 16 KiB pages (issue 16): a new file is made so, and a file of 4 KiB pages (made by
an older roam) is rebuilt once when opened, its records, WAL mode and durability unchanged."""
from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from peer.records import store as store_module
from peer.records.record import Record, State
from peer.records.store import PAGE_SIZE, RecordStore


def record(name: str) -> Record:
    return Record(name=name, home="c1", location="c1", state=State.RUNNING, digest="d", descriptor=b"x")


def pragma(path: Path, name: str) -> object:
    conn = sqlite3.connect(path)
    try:
        return conn.execute(f"PRAGMA {name}").fetchone()[0]
    finally:
        conn.close()


def test_new_and_older_files_get_large_pages(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with RecordStore.open(tmp_path / "new.sqlite3") as fresh:
        fresh.put_local(record("web"), here="c1", now=1.0)
    assert pragma(tmp_path / "new.sqlite3", "page_size") == PAGE_SIZE

    old = tmp_path / "old.sqlite3"
    monkeypatch.setattr(store_module, "PAGE_SIZE", 4096)
    with RecordStore.open(old) as before:
        written = [before.put_local(record(f"svc-{i}"), here="c1", now=1.0) for i in range(50)]
    assert pragma(old, "page_size") == 4096
    monkeypatch.setattr(store_module, "PAGE_SIZE", PAGE_SIZE)
    with RecordStore.open(old) as after:
        assert [after.get(r.name) for r in written] == written
        assert after._conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert after._conn.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
        assert after.integrity_check() == "ok"
    assert pragma(old, "page_size") == PAGE_SIZE
