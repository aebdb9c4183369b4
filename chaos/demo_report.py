"""The demo's results: stage medians beside the paper's Table I, losses, downtime, JSON and a PNG."""
from __future__ import annotations

import json
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from chaos.load import Sample

PAPER_TABLE_I = {"pr": "3 ms", "replication": "21 ms", "reroute": "47 ms", "wait": "~10 s",
                 "cleanup": "~1.5 s", "deploy": "~9.5 s"}
STAGE_NAMES = {"pr": "PR", "replication": "Replication", "reroute": "Reroute", "wait": "Wait",
               "cleanup": "Cleanup", "deploy": "Deploy"}


@dataclass
class Phase:
    name: str
    start: float  # monotonic
    end: float | None = None


# The outage phase before hot standbys existed (issue 15's measurement: fail-safe redeploy at home).
STATELESS_OUTAGE = "51 of 185 lost"


@dataclass
class DemoResult:
    mode: str
    phases: list[Phase] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)
    migrations: list[dict[str, Any]] = field(default_factory=list)
    samples: list[Sample] = field(default_factory=list)
    checks: list[dict[str, Any]] = field(default_factory=list)
    clock_offset: float = 0.0  # wall - monotonic, to place agents' wall-clock stamps on our clock
    state_counted: int | None = None  # the stateful classifier's own count at the end
    state_version: str | None = None

    def mono(self, wall: float) -> float:
        return wall - self.clock_offset

    def planned_windows(self) -> list[tuple[float, float]]:
        return [(self.mono(m["started_at"]), self.mono(m["finished_at"]) + 0.2)
                for m in self.migrations if m["kind"] in ("policy", "planned") and m.get("finished_at")]

    def failed_in(self, windows: Sequence[tuple[float, float]]) -> tuple[int, int]:
        inside = [s for s in self.samples if any(a <= s.sent_at <= b for a, b in windows)]
        return len(inside), sum(1 for s in inside if not s.ok)

    def phase_window(self, name: str) -> tuple[float, float] | None:
        for p in self.phases:
            if p.name == name and p.end is not None:
                return p.start, p.end
        return None

    def downtime(self, window: tuple[float, float] | None) -> float | None:
        """Longest run of failures inside the window: first failure to first success after it."""
        if window is None:
            return None
        longest, start = 0.0, None
        for s in sorted(self.samples, key=lambda x: x.sent_at):
            if not window[0] <= s.sent_at <= window[1] + 30:
                continue
            if not s.ok and start is None:
                start = s.sent_at
            elif s.ok and start is not None:
                longest, start = max(longest, s.sent_at - start), None
        return longest

    def stage_medians(self) -> dict[str, float | None]:
        done = [m for m in self.migrations if m["outcome"] == "succeeded" and m["kind"] in ("policy", "planned")]
        out: dict[str, float | None] = {}
        for stage in STAGE_NAMES:
            values = [m[stage] for m in done if m.get(stage) is not None]
            out[stage] = statistics.median(values) if values else None
        return out

    def summary_lines(self) -> list[str]:
        medians = self.stage_medians()
        lines = ["", "Stage timings (median over planned/policy migrations) beside the paper's Table I:",
                 f"  {'stage':<12} {'roam':>12} {'paper':>10}"]
        for stage, label in STAGE_NAMES.items():
            value = medians[stage]
            shown = "-" if value is None else (f"{value:.1f} ms" if value < 1000 else f"{value / 1000:.2f} s")
            lines.append(f"  {label:<12} {shown:>12} {PAPER_TABLE_I[stage]:>10}")
        sent, lost = self.failed_in(self.planned_windows())
        lines.append("")
        lines.append(f"Requests during planned migrations: {sent} sent, {lost} lost")
        outage = self.phase_window("outage")
        if outage is not None:
            o_sent, o_lost = self.failed_in([outage])
            lines.append(f"Requests during the outage: {o_sent} sent, {o_lost} lost, with one hot standby "
                         f"(without one, stateless: {STATELESS_OUTAGE})")
            lines.append(f"Failover downtime (client-observed): {self.downtime(outage) or 0.0:.2f} s")
        per_phase = []
        for p in self.phases:
            if p.end is not None:
                p_sent, p_lost = self.failed_in([(p.start, p.end)])
                per_phase.append(f"{p.name} {p_lost}/{p_sent}")
        if per_phase:
            lines.append("Requests lost per phase (lost/sent): " + ", ".join(per_phase))
        site = self.phase_window("site loss")
        if site is not None:
            s_sent, s_lost = self.failed_in([site])
            lines.append(f"Requests during the site loss (client on the entry list): {s_sent} sent, {s_lost} lost")
        by_entry: dict[str, int] = {}
        for sample in self.samples:
            if sample.ok and sample.entry is not None:
                by_entry[sample.entry] = by_entry.get(sample.entry, 0) + 1
        if by_entry:
            lines.append("Requests served per entry: " + ", ".join(f"{e} {n}" for e, n in sorted(by_entry.items())))
        failsafes = [m for m in self.migrations if m["kind"] == "failsafe" and m["outcome"] == "succeeded"]
        for m in failsafes:
            d = m.get("durations_ms", {})
            lines.append(f"Fail-safe {m['source']} -> {m['target']}: detection {d.get('detection', 0):.0f} ms, "
                         f"deploy {d.get('deploy', 0):.0f} ms, reroute {d.get('reroute', 0):.0f} ms")
        if self.state_counted is not None:
            lines.append(f"State kept across the moves: the classifier counted {self.state_counted} requests "
                         f"(state version {self.state_version}); the client saw "
                         f"{sum(1 for s in self.samples if s.ok)} answered (the stream source's are counted too)")
        total = len(self.samples)
        lines.append(f"Requests in total: {total} sent, {sum(1 for s in self.samples if s.ok)} served, "
                     f"{sum(1 for s in self.samples if not s.ok)} failed")
        lines.append("")
        for check in self.checks:
            lines.append(f"  [{'ok' if check['ok'] else 'FAIL'}] {check['name']}: {check['detail']}")
        return lines

    def write(self, folder: Path) -> tuple[Path, Path | None]:
        folder.mkdir(parents=True, exist_ok=True)
        t0 = self.phases[0].start if self.phases else 0.0
        data = {
            "mode": self.mode,
            "phases": [{"name": p.name, "start_s": p.start - t0, "end_s": None if p.end is None else p.end - t0}
                       for p in self.phases],
            "events": self.events,
            "migrations": self.migrations,
            "stage_medians_ms": self.stage_medians(),
            "paper_table_i": PAPER_TABLE_I,
            "checks": self.checks,
            "requests": {"sent": len(self.samples), "failed": sum(1 for s in self.samples if not s.ok)},
            "samples": [{"t": round(s.sent_at - t0, 4), "ok": s.ok, "latency_ms": round(s.latency_ms, 3),
                         "status": s.status, "error": s.error, "served_by": s.served_by, "entry": s.entry,
                         "tries": s.tries} for s in self.samples],
        }
        report = folder / "report.json"
        report.write_text(json.dumps(data, indent=1))
        return report, self._plot(folder / "latency.png", t0)

    def _plot(self, path: Path, t0: float) -> Path | None:
        try:
            import matplotlib

            matplotlib.use("Agg")
            import matplotlib.pyplot as plt
        except ImportError:
            return None
        fig, (ax, ax2) = plt.subplots(2, 1, figsize=(12, 6.5), sharex=True, gridspec_kw={"height_ratios": [3, 1]})
        colors = {"deep-edge": "tab:green", "edge": "tab:blue", "cloud": "tab:purple"}
        for cluster, color in colors.items():
            pts = [(s.sent_at - t0, s.latency_ms) for s in self.samples if s.ok and s.served_by == cluster]
            if pts:
                ax.scatter(*zip(*pts), s=3, color=color, label=f"served by {cluster}")
        other = [(s.sent_at - t0, s.latency_ms) for s in self.samples if s.ok and s.served_by not in colors]
        if other:
            ax.scatter(*zip(*other), s=3, color="gray", label="served (other)")
        fails = [s.sent_at - t0 for s in self.samples if not s.ok]
        if fails:
            ax.scatter(fails, [1.0] * len(fails), s=12, color="red", marker="x", label="failed")
        ax.set_yscale("log")
        ax.set_ylabel("latency (ms)")
        ax.set_title("roam demo: classifier requests through its home-cluster endpoint")
        shades = {"good": "#e8f5e9", "degraded": "#fff8e1", "outage": "#ffebee", "recovery": "#e3f2fd"}
        for p in self.phases:
            end = (p.end if p.end is not None else p.start) - t0
            for axis in (ax, ax2):
                axis.axvspan(p.start - t0, end, color=shades.get(p.name, "#f5f5f5"), zorder=0)
            ax.text(p.start - t0 + 0.5, ax.get_ylim()[1] * 0.6 if ax.get_ylim()[1] > 0 else 1, p.name, fontsize=9)
        for m in self.migrations:
            x = self.mono(m["started_at"]) - t0
            style = "--" if m["kind"] == "failsafe" else "-"
            for axis in (ax, ax2):
                axis.axvline(x, color="black", linestyle=style, linewidth=0.8)
            ax2.text(x, 0.5, f"{m['source']}→{m.get('target')}\n({m['kind']})", fontsize=7, rotation=90, va="center")
        # success rate per second
        if self.samples:
            end = int(max(s.sent_at for s in self.samples) - t0) + 1
            ok = [0] * end
            total = [0] * end
            for s in self.samples:
                i = int(s.sent_at - t0)
                if 0 <= i < end:
                    total[i] += 1
                    ok[i] += s.ok
            ax2.plot(range(end), [o / t if t else None for o, t in zip(ok, total)], color="black", linewidth=1)
        ax2.set_ylim(-0.05, 1.05)
        ax2.set_ylabel("success")
        ax2.set_xlabel("seconds since start")
        ax.legend(loc="upper right", fontsize=8, markerscale=3)
        fig.tight_layout()
        fig.savefig(path, dpi=110)
        plt.close(fig)
        return path
