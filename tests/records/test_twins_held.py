"""The store looks up the `name@home` twin of a bare name only if it holds some twin (issue 16:
half the lookups of a batch); the set it keeps of them must never miss one: written by a batch,
by a local write, or already in the file when the store opens."""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from peer.records.merge import local_write
from peer.records.record import Record, State
from peer.records.store import RecordStore


def created(name: str, home: str, incarnation: str, *, now: float = 1.0) -> Record:
    record = Record(name=name, home=home, location=home, state=State.RUNNING, digest="d", descriptor=b"x",
                    incarnation=incarnation)
    return local_write(None, record, here=home, now=now)


def test_a_held_twin_keeps_its_rename_in_a_batch_before_and_after_a_restart(tmp_path: Path) -> None:
    late = created("dupe", "c3", "200-bb-0")
    others = [created(f"svc-{i}", "c1", f"100-{i:02x}-0") for i in range(5)]
    path = tmp_path / "records.sqlite3"
    with RecordStore.open(path) as store:
        store.apply_remote_many([*others, replace(late, name="dupe@c3")], here="c2")
        newer = local_write(late, replace(late, location="c5"), here="c3", now=5.0)
        store.apply_remote_many([others[0], newer], here="c2")  # sent bare by a stale peer
        assert store.get("dupe") is None and store.get("dupe@c3").location == "c5"  # type: ignore[union-attr]
    with RecordStore.open(path) as store:
        newest = local_write(newer, replace(newer, location="c6"), here="c3", now=6.0)
        store.apply_remote_many([newest, others[1]], here="c2")
        assert store.get("dupe") is None and store.get("dupe@c3").location == "c6"  # type: ignore[union-attr]
        assert sorted(store.digests()) == sorted(["dupe@c3", *(r.name for r in others)])
