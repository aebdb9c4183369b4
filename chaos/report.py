"""Scenario reports: every event with its time, the figures measured, the checker results and
the load samples, written as one JSON file, plus a short human summary.

Times inside are seconds relative to the report's `t0` (a `time.monotonic()` value, the clock
of faults and load samples); the wall-clock start is kept once for orientation.
"""
from __future__ import annotations

import json
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any, TextIO

from chaos.checkers import CheckResult
from chaos.faults import FaultEvent
from chaos.load import LoadResult

SAMPLE_COLUMNS = ["t", "latency_ms", "ok", "status", "error", "served_by"]


class Report:
    def __init__(self, scenario: str, *, seed: int | None = None,
                 t0: float | None = None) -> None:
        self.scenario = scenario
        self.seed = seed
        self.t0 = time.monotonic() if t0 is None else t0
        self.started_wall = time.time()
        self.events: list[dict[str, Any]] = []
        self.figures: dict[str, dict[str, Any]] = {}
        self.checks: list[CheckResult] = []
        self.loads: dict[str, dict[str, Any]] = {}
        self.tables: dict[str, list[dict[str, Any]]] = {}

    def rel(self, monotonic_t: float) -> float:
        return round(monotonic_t - self.t0, 4)

    def event(self, kind: str, *, at: float | None = None, **fields: Any) -> None:
        """Record that something happened (at `at`, monotonic; now by default)."""
        when = time.monotonic() if at is None else at
        self.events.append({"t": self.rel(when), "kind": kind, **fields})

    def fault_event(self, ev: FaultEvent) -> None:
        """Suitable as `Nemesis(on_event=report.fault_event)`."""
        self.event(f"fault.{ev.action}", at=ev.at, fault=ev.fault,
                   **({"detail": ev.detail} if ev.detail else {}))

    def figure(self, name: str, value: float | int | None, unit: str = "") -> None:
        self.figures[name] = {"value": value, "unit": unit}

    def row(self, table: str, **fields: Any) -> None:
        """Add a row to a named table (per-fault downtime, per-migration stage timings...)."""
        self.tables.setdefault(table, []).append(fields)

    def check(self, result: CheckResult) -> CheckResult:
        self.checks.append(result)
        self.event("check", name=result.name, ok=result.ok)
        return result

    def load(self, label: str, result: LoadResult, *, samples: bool = True) -> None:
        down = result.downtime()
        entry: dict[str, Any] = {
            "t0": self.rel(result.t0), "rate": result.rate, "sent": len(result.samples),
            "served": result.served, "failed": result.failed,
            "p50_ms": result.latency_ms(0.5), "p99_ms": result.latency_ms(0.99),
            "served_by": result.served_by(),
            "served_by_entry": result.served_by_entry(),
            "failed_tries_by_entry": dict(sorted(result.attempt_failures.items())),
            "outages": [{"start": self.rel(o.start), "end": self.rel(o.end),
                         "failed": o.failed, "open_ended": o.open_ended}
                        for o in result.outages()],
            "downtime_s": round(down.duration, 4) if down else 0.0,
        }
        if samples:
            entry["sample_columns"] = SAMPLE_COLUMNS
            entry["samples"] = [[self.rel(s.sent_at), round(s.latency_ms, 2), s.ok, s.status,
                                 s.error, s.served_by] for s in result.samples]
        self.loads[label] = entry

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.checks)

    def to_dict(self) -> dict[str, Any]:
        return {
            "scenario": self.scenario, "seed": self.seed, "ok": self.ok,
            "started": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(self.started_wall)),
            "events": sorted(self.events, key=lambda e: e["t"]),
            "figures": self.figures,
            "checks": [asdict(c) for c in self.checks],
            "tables": self.tables,
            "loads": self.loads,
        }

    def write(self, path: Path) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(path.suffix + ".tmp")
        tmp.write_text(json.dumps(self.to_dict(), indent=1))
        tmp.replace(path)
        return path

    def summary(self, *, max_rows: int = 20) -> str:
        lines = [f"scenario {self.scenario}" + (f" (seed {self.seed})" if self.seed is not None
                                                else "") + (": OK" if self.ok else ": FAILED")]
        for label, ld in self.loads.items():
            lines.append(f"  load {label}: {ld['sent']} sent, {ld['served']} served, "
                         f"{ld['failed']} failed, longest outage {ld['downtime_s']:.3f}s, "
                         f"p50 {_ms(ld['p50_ms'])} p99 {_ms(ld['p99_ms'])}")
        for name, fig in self.figures.items():
            lines.append(f"  {name}: {fig['value']} {fig['unit']}".rstrip())
        for table, rows in self.tables.items():
            lines.append(f"  {table}:")
            lines += [f"    {_row(r)}" for r in rows[:max_rows]]
            if len(rows) > max_rows:
                lines.append(f"    ... {len(rows) - max_rows} more rows in the JSON report")
        for c in self.checks:
            lines.append(f"  [{'ok' if c.ok else 'FAIL'}] {c.name}: {c.detail}")
        return "\n".join(lines)

    def print_summary(self, file: TextIO = sys.stdout) -> None:
        print(self.summary(), file=file)


def _row(fields: dict[str, Any]) -> str:
    return " ".join(f"{k}={v}" for k, v in fields.items())


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}ms"
