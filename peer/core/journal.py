"""The migration journal's keys and entries, and what a restarted coordinator does with an
entry left open (roll back before the reroute, finish after it).

Two kinds of entries, each under its own key: the coordinator's `mig:<id>` (one per move,
stage by stage) and the target's `target:<name>` (a copy arriving here). They were string
conventions in ten places before issue 13.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from peer.records.record import Record

MIGRATION = "mig:"
ARRIVAL = "target:"
#: Stages whose failure leaves nothing to finish: the copy at the target is aborted, nothing routed.
BEFORE_REROUTE = frozenset({"trigger", "pr", "replication", "wait", "state"})


def migration_key(migration_id: str) -> str:
    return MIGRATION + migration_id


def arrival_key(name: str) -> str:
    return ARRIVAL + name


def is_migration(key: str) -> bool:
    return key.startswith(MIGRATION)


def is_arrival(key: str) -> bool:
    return key.startswith(ARRIVAL)


def owned_service(key: str, entry: object) -> set[str]:
    """The service an open entry owns: the arriving copy's name, or the moving service."""
    if is_arrival(key):
        return {key[len(ARRIVAL):]}
    if is_migration(key) and isinstance(entry, dict) and isinstance(entry.get("service"), str):
        return {entry["service"]}
    return set()


def migration_entry(*, migration_id: str, service: str, stage: str, target: str | None, home: str,
                    source: str, **extra: Any) -> dict[str, Any]:
    """The coordinator's entry at `stage` (`instance` joins it from the wait on)."""
    return {"id": migration_id, "service": service, "stage": stage, "target": target, "home": home,
            "source": source, **extra}


def arrival_entry(*, migration_id: str, name: str) -> dict[str, Any]:
    return {"migration_id": migration_id, "name": name}


@dataclass(frozen=True)
class Finish:
    """The move stands: `commit` (not None) must still be written (the route had moved, the
    commit had not), then the old copy at `source` is cleaned up."""

    commit: bool
    source: str


@dataclass(frozen=True)
class RollBack:
    """The move never routed: abort the target's copy; `reroute`: this entry's frontend
    follows the record again (it still names the old copy)."""

    reroute: bool


def recovery(entry: dict[str, Any], record: Record | None, *, here: str, routed_to_target: bool) -> Finish | RollBack:
    """After a crash, from an open `mig:` entry, the record and whether this entry's frontend
    points at the journaled instance: a move is finished if it committed, or if it was at the
    reroute and the route here already moved (the commit is then written now: the frontend,
    not the record, is what clients follow); otherwise it is rolled back."""
    target = entry.get("target")
    done = record is not None and record.location == target
    if not done and entry.get("stage") == "reroute" and record is not None and here in record.entries \
            and routed_to_target and entry.get("instance"):
        return Finish(commit=True, source=entry["source"])
    if done:
        return Finish(commit=False, source=entry["source"])
    return RollBack(reroute=record is not None and here in record.entries and bool(record.instance))
