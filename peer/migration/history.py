"""One migration (or fail-safe redeploy) as recorded: stages timed in ms, outcome, reason.

Kept in memory for `GET /v1/migrations` and saved to the store's meta table, so the history
survives a restart.
"""
from __future__ import annotations

import time
import uuid
from collections import deque
from contextlib import contextmanager
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

from peer.runtime.metrics import Metrics
from peer.records.store import RecordStore
from peer.stages import STAGES

HISTORY_KEY = "migrations"
HISTORY_LEN = 500


@dataclass
class Migration:
    service: str
    kind: str  # planned | policy | failsafe | promotion | standby (a warm copy placed)
    reason: str
    coordinator: str
    home: str
    source: str  # where the service ran before
    target: str | None = None
    id: str = field(default_factory=lambda: uuid.uuid4().hex[:12])
    started_at: float = field(default_factory=time.time)
    # Wall time the move was committed and routed, when the API answers; `finished_at` comes
    # after the cleanup (the old copy stopped), which no caller waits for.
    committed_at: float | None = None
    finished_at: float | None = None
    outcome: str = "running"  # running | succeeded | failed | aborted
    stage: str = "trigger"
    error: str | None = None
    durations: dict[str, float] = field(default_factory=dict)
    candidates: list[dict[str, Any]] = field(default_factory=list)
    notes: str | None = None  # e.g. entries that did not confirm their reroute
    # Stateful services: {"version", "bytes", "rounds", "exact", "held_at"} (peer/state/handover.py).
    state_transfer: dict[str, Any] | None = None
    refusals: list[dict[str, Any]] = field(default_factory=list)  # candidates whose policy refused it

    @contextmanager
    def timed(self, stage: str) -> Iterator[None]:
        self.stage = stage
        started = time.monotonic()
        try:
            yield
        finally:
            self.durations[stage] = round((time.monotonic() - started) * 1000.0, 3)

    @contextmanager
    def part(self, key: str) -> Iterator[None]:
        """Time one await inside a stage (durations_ms only: where a stage's time goes)."""
        started = time.monotonic()
        try:
            yield
        finally:
            self.durations[key] = round((time.monotonic() - started) * 1000.0, 3)

    def as_api(self) -> dict[str, Any]:
        out = asdict(self)
        out.pop("durations")
        for stage in STAGES:
            out[stage] = self.durations.get(stage)
        out["durations_ms"] = dict(self.durations)
        return out


class MigrationLog:
    def __init__(self, *, store: RecordStore, metrics: Metrics) -> None:
        self._store = store
        self._metrics = metrics
        older = store.meta_get(HISTORY_KEY)  # kept whole in `meta` by an older roam: moved once
        if isinstance(older, list):
            store.history_append(older[-HISTORY_LEN:], keep=HISTORY_LEN)
            store.meta_delete(HISTORY_KEY)
        saved = store.history_load(limit=HISTORY_LEN)
        for entry in saved:  # entries saved before a stage existed show it as null, like the API says
            for stage in STAGES:
                entry.setdefault(stage, None)
            entry.setdefault("state_transfer", None)
            entry.setdefault("committed_at", None)
        self._done: deque[dict[str, Any]] = deque(saved[-HISTORY_LEN:], maxlen=HISTORY_LEN)
        self._running: dict[str, Migration] = {}

    def begin(self, migration: Migration) -> Migration:
        self._running[migration.id] = migration
        return migration

    def finish(self, migration: Migration, *, outcome: str, error: str | None = None) -> None:
        migration.outcome = outcome
        migration.error = error
        migration.finished_at = time.time()
        self._running.pop(migration.id, None)
        self._done.append(migration.as_api())
        self._store.history_append([self._done[-1]], keep=HISTORY_LEN)
        self._metrics.migrations.labels(kind=migration.kind, outcome=outcome).inc()
        if outcome == "succeeded":
            for stage, ms in migration.durations.items():
                if stage in STAGES:
                    self._metrics.stage_seconds.labels(stage=stage).observe(ms / 1000.0)

    def last_move(self, service: str) -> float | None:
        """Wall time the service last finished moving (any kind), for the policy's dwell time."""
        for entry in reversed(self._done):
            if entry["service"] == service and entry["outcome"] == "succeeded" and entry["kind"] != "standby":
                return float(entry["finished_at"])
        return None

    def recent(self) -> list[dict[str, Any]]:
        running = [m.as_api() for m in self._running.values()]
        return list(reversed([*self._done, *running]))
