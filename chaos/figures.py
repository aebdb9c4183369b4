"""The figures a chaos report carries, computed from what was recorded (pure functions):

- downtime per fault: each outage of a service's load (first failure .. first success after)
  attributed to the latest fault applied before it started;
- fail-safe timings (detection, wait/deploy, reroute...) from the agents' `/v1/migrations`;
- stage timings of planned migrations;
- the fail-safe's copies started ahead, from the agents' `/metrics` (false suspicions).
"""
from __future__ import annotations

import re
import statistics
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from chaos.detections import AppliedFault
from chaos.load import LoadResult
from peer.stages import TABLE_STAGES as STAGES

ATTRIBUTION_SLACK = 0.3  # a request sent just before a fault can fail because of it
NO_FAULT = "(no fault)"
FAILSAFE_FIELDS = ("detection", "wait", "deploy", "reroute", "cleanup", "downtime_estimate")


def outage_rows(loads: Mapping[str, LoadResult], applied: Sequence[AppliedFault], *,
                t0: float) -> list[dict[str, Any]]:
    """One row per outage: service, times relative to `t0`, duration, lost requests, and the
    fault it is attributed to (named with the time it was applied: faults repeat)."""
    ordered = sorted(applied, key=lambda f: f.at)
    rows = []
    for service, result in sorted(loads.items()):
        for outage in result.outages():
            cause = [f for f in ordered if f.at <= outage.start + ATTRIBUTION_SLACK]
            fault = (f"{cause[-1].description} @{cause[-1].at - t0:.1f}s" if cause
                     else NO_FAULT)
            rows.append({
                "service": service, "start": round(outage.start - t0, 3),
                "duration_s": round(outage.duration, 3), "failed": outage.failed,
                "open_ended": outage.open_ended,
                "fault": fault,
            })
    return sorted(rows, key=lambda r: r["start"])


def downtime_per_fault(rows: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Per fault and service: the span from the first failed request the fault caused to
    the first success after its last one (outages split by a few lucky requests count as
    one), and the requests lost in it."""
    spans: dict[tuple[str, str], list[float]] = {}
    for row in rows:
        key = (str(row["fault"]), str(row["service"]))
        start, end = float(row["start"]), float(row["start"]) + float(row["duration_s"])
        span = spans.setdefault(key, [start, end, 0.0])
        span[0], span[1] = min(span[0], start), max(span[1], end)
        span[2] += float(row["failed"])
    return [{"fault": fault, "service": service, "downtime_s": round(end - start, 3),
             "lost": int(lost)}
            for (fault, service), (start, end, lost) in sorted(spans.items())]


def fault_kind(description: str, clusters: Iterable[str]) -> str:
    """A fault's description without its targets: "partition", "SIGKILL haproxy", "crash
    agent"... (composites keep each part's kind, joined by " + ")."""
    names = set(clusters)
    parts = []
    for part in description.split(" + "):
        words: list[str] = []
        for token in part.split():
            if "/" in token:
                node, _, what = token.partition("/")
                words.append("service" if node == "svc" else what)
                break
            if token.split(",")[0] in names or token.startswith("@"):
                break
            words.append(token)
        parts.append(" ".join(words))
    return " + ".join(parts)


def downtime_by_kind(spans: Iterable[Mapping[str, Any]],
                     clusters: Iterable[str]) -> list[dict[str, Any]]:
    """Per kind of fault: how many (fault, service) outages, their mean and max downtime and
    the requests lost, over `downtime_per_fault` rows."""
    names = list(clusters)
    grouped: dict[str, list[Mapping[str, Any]]] = {}
    for span in spans:
        if span["fault"] != NO_FAULT:
            grouped.setdefault(fault_kind(str(span["fault"]), names), []).append(span)
    out = []
    for kind, rows in sorted(grouped.items()):
        stats = summary_stats(r["downtime_s"] for r in rows)
        assert stats is not None
        out.append({"kind": kind, "outages": len(rows), "mean_s": stats["mean"],
                    "max_s": stats["max"], "lost": sum(int(r["lost"]) for r in rows)})
    return out


_AHEAD = re.compile(r'^roam_failsafe_copies_ahead_total\{outcome="(\w+)"\} (\S+)$', re.MULTILINE)


def copies_ahead(metrics_text: str) -> dict[str, int]:
    """An agent's fail-safe copies started ahead, by outcome ("confirmed", "removed"), from its
    /metrics text. A removed one is a false suspicion: the fail-safe saw a route down and
    started the home copy, and the loss was not confirmed. (Counted since the agent started:
    an agent restarted by the scenario forgets what it counted before.)"""
    return {outcome: int(float(value)) for outcome, value in _AHEAD.findall(metrics_text)}


def failsafe_rows(histories: Mapping[str, Sequence[Mapping[str, Any]]], *,
                  since_wall: float,
                  faults_wall: Sequence[tuple[float, str]] = ()) -> list[dict[str, Any]]:
    """Fail-safe redeploys (and standby promotions, issue 15) every HC recorded since
    `since_wall` (time.time()). With the
    faults' wall-clock apply times, each row also says which fault preceded it and how long
    after it the HC decided (`fault_to_decision_ms`: detection plus decision, as seen from
    outside, where `detection_ms` counts from the HC's own first evidence)."""
    ordered = sorted(faults_wall)
    rows = []
    for cluster, history in sorted(histories.items()):
        for m in history:
            started = float(m.get("started_at") or 0)
            if m.get("kind") not in ("failsafe", "promotion") or started < since_wall:
                continue
            durations = m.get("durations_ms") or {}
            before = [(t, d) for t, d in ordered if t <= started]
            rows.append({"hc": cluster, "kind": m.get("kind"), "service": m.get("service"), "lost": m.get("source"),
                         "outcome": m.get("outcome"), "reason": m.get("reason"),
                         "after_fault": before[-1][1] if before else None,
                         "fault_to_decision_ms": round((started - before[-1][0]) * 1000, 1)
                         if before else None,
                         **{f"{k}_ms": durations.get(k) for k in FAILSAFE_FIELDS}})
    return rows


def migration_row(result: Mapping[str, Any], *, label: str, lost: int) -> dict[str, Any]:
    return {"label": label, "outcome": result.get("outcome"), "lost": lost,
            **{f"{s}_ms": result.get(s) for s in STAGES}}


def summary_stats(values: Iterable[float | int | None]) -> dict[str, float] | None:
    """mean / max / min of the numbers present, or None if there are none."""
    nums = [float(v) for v in values if isinstance(v, (int, float))]
    if not nums:
        return None
    return {"mean": round(statistics.fmean(nums), 3), "max": round(max(nums), 3),
            "min": round(min(nums), 3), "n": len(nums)}
