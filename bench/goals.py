"""Issue 16's goal table of one `make bench`: every figure the scripts recorded (bench/common.py
`record_goal`, a JSON-lines file named by ROAM_BENCH_GOALS), beside its goal and the paper's
Table I, with the machine's load at the end. The cold start is the one measured in the same run
(bench/migration.py), and so are the figures given as a ratio of it.

Usage: .venv/bin/python bench/goals.py FILE [--keep]
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import machine_line  # noqa: E402


def digits(median: float) -> int:
    """One precision per row, from its median: 2 decimals under 10, 1 under 100, else none."""
    return 2 if abs(median) < 10 else 1 if abs(median) < 100 else 0


def table(rows: list[dict[str, object]]) -> list[str]:
    lines = [f"{'figure':<50} {'median':>9} {'min':>9} {'max':>9} {'unit':<11} {'goal (issues 16, 18)':<26} "
             f"{'paper':<17} {'status':<8} source / note"]
    for r in rows:
        unit = str(r["unit"])
        met = r["met"]
        status = "-" if met is None else ("met" if met else "NOT met")
        places = 0 if unit == "" else digits(float(r["median"]))  # type: ignore[arg-type]
        cells = [f"{float(r[k]):,.{places}f}" for k in ("median", "lo", "hi")]  # type: ignore[arg-type]
        note = f"{r['source']}" + (f"; {r['note']}" if r["note"] else "")
        lines.append(f"{str(r['figure']):<50} {cells[0]:>9} {cells[1]:>9} {cells[2]:>9} {unit:<11} "
                     f"{str(r['goal']):<26} {str(r['paper']):<17} {status:<8} {note}")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("file", type=Path)
    parser.add_argument("--keep", action="store_true", help="leave the file (default: remove it)")
    args = parser.parse_args()
    try:
        rows = [json.loads(line) for line in args.file.read_text().splitlines() if line.strip()]
    except OSError as exc:
        print(f"bench/goals.py: {args.file}: {exc}", file=sys.stderr)
        raise SystemExit(1) from exc
    print(f"\n=== issues 16 and 18: every goal of this run ({len(rows)} figures); {machine_line()} ===")
    for line in table(rows):
        print(line)
    met = sum(1 for r in rows if r["met"] is True)
    missed = [str(r["figure"]) for r in rows if r["met"] is False]
    print(f"{met} met, {len(missed)} not met" + (f": {', '.join(missed)}" if missed else ""))
    if not args.keep:
        args.file.unlink()


if __name__ == "__main__":
    main()
