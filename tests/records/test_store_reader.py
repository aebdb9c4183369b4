"""`RecordStore.packed_many` reads through its own read-only connection (issue 16: a round's next
push batch must not wait on the event loop for the merge transaction of the last answer)."""
from __future__ import annotations

import concurrent.futures
import threading
import time
from pathlib import Path

import pytest

from peer.records.record import Record, State
from peer.records.store import RecordStore, StoreError


def web(instance: str) -> Record:
    return Record(name="web", home="a", location="a", state=State.RUNNING, digest="d", descriptor=b"",
                  instance=instance)


def test_packed_many_reads_the_last_commit_while_a_transaction_runs(tmp_path: Path) -> None:
    store = RecordStore.open(tmp_path / "a.db")
    committed = store.put_local(web("127.0.160.20:8000"), here="a", now=time.time())
    before = store.packed_many(["web"])
    inside, release = threading.Event(), threading.Event()

    def transaction() -> None:  # (as a batch's merge: the store's lock and an open write transaction)
        with store._tx() as cur:
            cur.execute("DELETE FROM records WHERE name='web'")
            inside.set()
            release.wait(10)

    writer = threading.Thread(target=transaction)
    writer.start()
    try:
        assert inside.wait(10)
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            rows = pool.submit(store.packed_many, ["web", "db"]).result(timeout=5)  # (not held up by the lock)
        assert rows == before  # the last commit (the transaction's delete is not seen yet)
    finally:
        release.set()
        writer.join(10)
    assert store.packed_many(["web"]) == [] and store.get("web") is None  # the delete committed: seen now
    assert committed.instance == "127.0.160.20:8000"
    store.close()
    with pytest.raises(StoreError):
        store.packed_many(["web"])
