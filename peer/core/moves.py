"""The rules of where a service runs and what a cluster does with its own copy, written once.

Before issue 13 each was restated by every part that needed it: "the home cluster commits
where a service runs" in the engine (twice), the replica's REROUTE handler and the fail-safe
(twice, with the promotion); "stop the local copy, then maybe drop the record" in the
engine's cleanup, the replica's RELEASE and ABORT handlers and the merge's actions.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

from peer.records.record import Record, State, interested

#: `commit(..., state_version=KEEP)` keeps the record's own.
KEEP: int | None = -1


def commit(record: Record, *, location: str, instance: str, migration_id: str,
           state_version: int | None = KEEP) -> Record:
    """The content the steward writes when a service runs at `location` now (a planned move,
    a reroute, a fail-safe redeploy or a standby's promotion alike): running there under
    `migration_id`, and no longer a standby there (a location is never its own standby: the
    promoted warm copy is the primary now). The store's `put_local` adds the clock."""
    return replace(record, location=location, instance=instance, state=State.RUNNING, migration_id=migration_id,
                   state_version=record.state_version if state_version == KEEP else state_version,
                   standbys=tuple(p for p in record.standbys if p[0] != location))


def promoted(before: Record, after: Record) -> bool:
    """Did the commit take the new location's warm copy (its standby) as the primary?"""
    return len(after.standbys) < len(before.standbys)


@dataclass(frozen=True)
class Release:
    """What `here` does with its own copy once a record says where the service runs."""

    stop: bool  # stop the copy running here
    drop: bool  # then forget the record (here has no part in it any more)


def release(current: Record | None, here: str, *, arriving: bool = False) -> Release:
    """Stop the local copy unless the record still wants one here (the primary or a standby)
    or a newer copy is arriving here (a pending migration's); then drop a live record in which
    `here` has no part left (no entry, no location, no standby). A tombstone is never dropped
    here: the tombstone GC does that once every holder acknowledged it."""
    stop = not arriving and (current is None or not current.copy_here(here))
    drop = current is not None and not current.tombstone and here not in interested(current)
    return Release(stop=stop, drop=drop)
