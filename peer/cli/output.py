"""What `roam` prints: tables (kubectl's manner: -o table|wide|json|yaml), one-line summaries."""
from __future__ import annotations

import json
import time
from typing import Any

from peer.stages import TABLE_STAGES as STAGES


#: Columns per listing: (default, extra ones for -o wide).
COLUMNS: dict[str, tuple[list[str], list[str]]] = {
    "members": (["name", "status", "addr", "tier", "rtt_ms", "load"], ["api", "bandwidth_mbps"]),
    "services": (["name", "role", "state", "steward", "location", "endpoints"], ["homes", "standbys", "state_version", "instance"]),
    "migrations": (["started", "service", "kind", "source", "target", "outcome", "took_ms"],
                   ["id", *STAGES, "reason"]),
}


def render(kind: str, rows: list[dict[str, Any]], output: str) -> str:
    if output == "json":
        return json.dumps(rows, indent=2, sort_keys=True)
    if output == "yaml":
        return to_yaml(rows)
    base, wide = COLUMNS[kind]
    columns = base + wide if output == "wide" else base
    return table([view(kind, r) for r in rows], columns)


def view(kind: str, row: dict[str, Any]) -> dict[str, Any]:
    """Derived cells: load summary, home set and endpoints with fallbacks, clock times."""
    if kind == "members":
        return {**row, "load": load_summary(row.get("load") or {})}
    if kind == "services":
        return {**row, "homes": row.get("homes") or [row.get("home")], "endpoints": endpoints_of(row),
                "steward": row.get("steward") or row.get("home")}
    if kind == "migrations":
        return {**row, "started": clock(row.get("started_at")), "took_ms": total_ms(row)}
    return row


def endpoints_of(record: dict[str, Any]) -> list[str]:
    """The entry endpoints: the record's `endpoints` list when present, else `[endpoint]`."""
    eps = record.get("endpoints")
    if isinstance(eps, list) and eps:
        return [str(e) for e in eps]
    return [str(record["endpoint"])] if record.get("endpoint") else []


def total_ms(m: dict[str, Any]) -> float | None:
    """Wall time from start to finish (stages may overlap: deploy includes the wait)."""
    start, end = m.get("started_at"), m.get("finished_at")
    if isinstance(start, (int, float)) and isinstance(end, (int, float)):
        return round((end - start) * 1000.0, 1)
    return None


def clock(ts: Any) -> str | None:
    if not isinstance(ts, (int, float)):
        return None
    fmt = "%H:%M:%S" if time.time() - ts < 86400 else "%Y-%m-%d %H:%M"
    return time.strftime(fmt, time.localtime(ts))


def table(rows: list[dict[str, Any]], columns: list[str]) -> str:
    cells = [[cell(r.get(c)) for c in columns] for r in rows]
    widths = [max([len(c)] + [len(row[i]) for row in cells]) for i, c in enumerate(columns)]
    lines = ["  ".join(c.upper().ljust(w) for c, w in zip(columns, widths)).rstrip()]
    lines += ["  ".join(v.ljust(w) for v, w in zip(row, widths)).rstrip() for row in cells]
    return "\n".join(lines)


def table_rows(rows: list[dict[str, Any]], columns: list[str], widths_from: list[dict[str, Any]]) -> list[str]:
    """Rows alone (for --watch), aligned as in a table of `widths_from`."""
    every = widths_from + rows
    widths = [max([len(c)] + [len(cell(r.get(c))) for r in every]) for c in columns]
    return ["  ".join(cell(r.get(c)).ljust(w) for c, w in zip(columns, widths)).rstrip() for r in rows]


def cell(value: Any) -> str:
    if value is None or value == [] or value == [None]:
        return "-"
    if isinstance(value, list):
        return ",".join(cell(v) for v in value)
    if isinstance(value, dict):
        return ",".join(f"{k}={cell(v)}" for k, v in value.items() if v is not None)
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def load_summary(load: dict[str, Any]) -> str:
    if not load:
        return "-"
    return (f"cpu {load.get('cpu_used', 0):g}/{load.get('cpu_capacity', 0):g} "
            f"mem {load.get('mem_used_mib', 0)}/{load.get('mem_capacity_mib', 0)}Mi "
            f"slots {load.get('slots_used', 0)}/{load.get('slots_capacity', 0)}")


def to_yaml(obj: Any) -> str:
    import yaml  # type: ignore[import-untyped]

    return str(yaml.safe_dump(obj, sort_keys=True, default_flow_style=False)).rstrip()


def detail(record: dict[str, Any]) -> str:
    """One service, `key: value` lines (roam services NAME)."""
    shown = view("services", record)
    keys = ["name", "role", "state", "steward", "homes", "location", "standbys", "endpoints", "instance",
            "state_version", "vclock"]
    lines = [f"{k + ':':15} {cell(shown.get(k))}" for k in keys if k in shown or k in ("homes", "endpoints", "steward")]
    desc = record.get("descriptor") or {}
    if desc:
        lines.append(f"{'descriptor:':15} {json.dumps(desc, sort_keys=True)}")
    return "\n".join(lines)


def migration_line(m: dict[str, Any]) -> str:
    stages = " ".join(f"{s} {m[s]:g}" for s in STAGES if isinstance(m.get(s), (int, float)))
    took = total_ms(m)
    pending = took is None and isinstance(m.get("committed_at"), (int, float))
    if pending:  # the answer to `migrate` comes at the commit; the old copy is stopped after it
        took = total_ms({"started_at": m.get("started_at"), "finished_at": m.get("committed_at")})
    where = f"{m.get('source')} -> {m.get('target') or '?'}"
    if m.get("outcome") == "succeeded":
        head = f"{m.get('service')}: migrated {where} in {took:g} ms" if took is not None else f"{m.get('service')}: migrated {where}"
    else:
        head = f"{m.get('service')}: migration {where} {m.get('outcome')}" + (f": {m['error']}" if m.get("error") else "")
    return head + (f" ({stages}, ms)" if stages else "") + ("; the old copy is being stopped" if pending else "")
