"""Running one scenario end to end: testbed, federation, load and member watch up; the scenario;
everything healed and dead agents restarted; a deadline for the federation to become quiet;
the checkers and the figures; teardown; the leftover probe. The report says it all, and is
written even when something in between blew up (that becomes a failed check).
"""
from __future__ import annotations

import shutil
import tempfile
import time
import traceback
from dataclasses import dataclass
from pathlib import Path

from chaos import leftovers
from chaos.checkers import CheckResult, no_loss_during, nothing_left_behind
from chaos.cluster import AdminAPIError, AgentCrash, Federation
from chaos.detections import false_detections
from chaos.errors import ChaosError
from chaos.figures import (
    NO_FAULT, copies_ahead, downtime_by_kind, downtime_per_fault, failsafe_rows, outage_rows, summary_stats,
)
from chaos.load import LoadResult
from chaos.netns import Testbed
from chaos.report import Report
from chaos.scenarios import Scenario, get
from chaos.scenarios.context import ScenarioContext
from chaos.verdict import wait_settled

DEFAULT_PREFIX = "roam"
DEFAULT_SUBNET = "10.77.0.0/24"
MAX_SAMPLES = 300_000  # beyond this the JSON report keeps load summaries only


@dataclass(frozen=True)
class RunOptions:
    scenario: str
    seed: int = 1
    clusters: int = 3
    services: int | None = None
    duration: float | None = None
    report_dir: Path = Path("chaos-reports")
    prefix: str = DEFAULT_PREFIX
    subnet: str = DEFAULT_SUBNET
    rate: float = 200.0  # requests per second over all services together
    quiet_timeout: float = 120.0
    auto_migrate: bool = False
    keep_data: bool = False
    verbose: bool = True
    log_level: str = "INFO"  # the agents' log level
    identity: bool = False  # per-cluster identity: mTLS between the agents (peer.trust)


def cluster_names(n: int) -> list[str]:
    return [f"c{i + 1}" for i in range(n)]


async def run(options: RunOptions) -> Report:
    """Run one scenario; return its report (also written to `report_dir/report.json`)."""
    scenario = get(options.scenario)
    if options.clusters < scenario.min_clusters:
        raise ValueError(f"{scenario.name} needs at least {scenario.min_clusters} clusters")
    report = Report(scenario.name, seed=options.seed)
    report.event("options", options={k: str(v) for k, v in vars(options).items()})
    # short path: HAProxy's and Serf's unix sockets live under it (108-byte limit)
    work = Path(tempfile.mkdtemp(prefix=f"{options.prefix}-chaos-"))
    tb = Testbed(cluster_names(options.clusters), prefix=options.prefix, subnet=options.subnet)
    fed: Federation | None = None
    try:
        async with tb:
            fed = Federation(tb, work / "fed", auto_migrate=options.auto_migrate,
                             log_level=options.log_level, extra_args=scenario.agent_args,
                             identity=options.identity)
            await _run_in(tb, fed, scenario, options, report)
    except Exception as exc:  # noqa: BLE001 - setup/teardown trouble: a failed run, reported
        report.event("traceback", text=traceback.format_exc())
        report.check(CheckResult("testbed", False, f"{type(exc).__name__}: {exc}"))
    left = leftovers.probe(options.prefix)
    report.check(nothing_left_behind(left.as_dict()))
    report_dir = options.report_dir
    if fed is not None and (not report.ok or options.keep_data):
        fed.collect_logs(report_dir / "logs")
    report.write(report_dir / "report.json")
    if not options.keep_data:
        shutil.rmtree(work, ignore_errors=True)
    return report


async def _run_in(tb: Testbed, fed: Federation, scenario: Scenario, options: RunOptions,
                  report: Report) -> None:
    services = options.services if options.services is not None else scenario.services
    duration = options.duration if options.duration is not None else scenario.duration
    ctx = ScenarioContext(tb=tb, fed=fed, report=report, seed=options.seed,
                          services=services, duration=duration,
                          rate=max(5.0, options.rate / max(1, services)),
                          verbose=options.verbose)
    loads: dict[str, LoadResult] = {}
    try:
        t0 = time.monotonic()
        await fed.start()
        ctx.log("federation.up", clusters=len(fed.clusters), after_s=round(time.monotonic() - t0, 2))
        ctx.watch.start()
        try:
            await scenario.run(ctx)
        except Exception as exc:  # noqa: BLE001 - the scenario failed: say how, then judge
            ctx.log("scenario.error", error=f"{type(exc).__name__}: {exc}")
            report.event("traceback", text=traceback.format_exc())
            report.check(CheckResult("scenario_completed", False, f"{type(exc).__name__}: {exc}"))
        await _heal_everything(ctx)
        await _settle(ctx, options.quiet_timeout, homes=scenario.home_checks)
        loads = await ctx.loads.finish()
        await _figures(ctx, loads)
    finally:
        if not ctx.loads.stop.is_set():
            await ctx.loads.finish()
        await ctx.close()
        await fed.close()


async def _heal_everything(ctx: ScenarioContext) -> None:
    try:
        await ctx.heal()
    except ChaosError as exc:
        ctx.report.check(CheckResult("heal", False, str(exc)))
    for name, agent in ctx.fed.agents.items():
        if not agent.running:
            ctx.log("restart", cluster=name)
            try:
                await AgentCrash(ctx.fed, name).heal(ctx.tb)
            except ChaosError as exc:
                ctx.report.check(CheckResult(f"restart[{name}]", False, str(exc)))


async def _settle(ctx: ScenarioContext, timeout: float, *, homes: bool = False) -> None:
    """Wait (with a deadline) for a quiet federation; report the final checks and the time
    from the last heal."""
    ev, _ = await wait_settled(ctx.fed, ctx.probe, ctx.endpoints, timeout=timeout,
                               homes=homes, on_change=ctx.trace_settling)
    since = ctx.nemesis.last_heal
    if ctx.nemesis.applied:
        ctx.report.figure("heal_to_quiet_s", None if not ev.ok or since is None
                          else round(ev.at - since, 3), "s")
    ctx.log("quiet" if ev.ok else "not-quiet", **({} if ev.ok else {"failing": ev.failing()}))
    for result in ev.results:
        ctx.report.check(result)


async def _figures(ctx: ScenarioContext, loads: dict[str, LoadResult]) -> None:
    report = ctx.report
    total = sum(len(r.samples) for r in loads.values())
    for name, result in loads.items():
        report.load(name, result, samples=total <= MAX_SAMPLES)
    _planned_figures(ctx, loads)
    rows = outage_rows(loads, ctx.nemesis.applied, t0=report.t0)
    for row in rows:
        report.row("outages", **row)
    spans = downtime_per_fault(rows)
    for span in spans:
        report.row("downtime_per_fault", **span)
    for row in downtime_by_kind(spans, ctx.clusters):
        report.row("downtime_by_fault_kind", **row)
    faulted = [s["downtime_s"] for s in spans if s["fault"] != NO_FAULT]
    report.figure("max_downtime_per_fault_s", max(faulted, default=0.0), "s")
    await _failsafe_figures(ctx)
    false = false_detections(ctx.watch.episodes, ctx.nemesis.applied)
    report.figure("failure_detections", len(ctx.watch.episodes))
    report.figure("false_failure_detections", len(false))
    for ep in false:
        report.row("false_detections", observer=ep.observer, member=ep.member,
                   start=report.rel(ep.start),
                   end=None if ep.end is None else report.rel(ep.end))


def _planned_figures(ctx: ScenarioContext, loads: dict[str, LoadResult]) -> None:
    if not ctx.windows:
        return
    results = [no_loss_during(loads[name].samples if name in loads else [], windows)
               for name, windows in sorted(ctx.windows.items())]
    lost = sum(1 for name, windows in ctx.windows.items() if name in loads
               for t0, t1 in windows.values()
               for s in loads[name].failures_between(t0, t1))
    ctx.report.figure("lost_in_planned_migrations", lost, "requests")
    ctx.report.figure("planned_windows", sum(len(w) for w in ctx.windows.values()))
    ctx.report.check(CheckResult(
        "no_loss_during_planned_migrations", all(r.ok for r in results),
        "; ".join(r.detail for r in results)))


async def _failsafe_figures(ctx: ScenarioContext) -> None:
    histories = {}
    for name in ctx.clusters:
        try:
            histories[name] = await ctx.fed.migrations(name)
        except AdminAPIError:
            continue
    report = ctx.report
    faults_wall = [(report.started_wall + (f.at - report.t0), f.description)
                   for f in ctx.nemesis.applied]
    rows = failsafe_rows(histories, since_wall=ctx.started_wall, faults_wall=faults_wall)
    for row in rows:
        report.row("failsafe", **row)
    removed = 0
    for name in ctx.clusters:
        try:
            ahead = copies_ahead(await ctx.fed.metrics_text(name))
        except AdminAPIError:
            continue
        if ahead:
            report.row("failsafe_copies_ahead", cluster=name, **ahead)
        removed += ahead.get("removed", 0)
    report.figure("failsafe_false_starts", removed)  # (copies started ahead on a loss not confirmed)
    for stage in ("fault_to_decision", "detection", "deploy", "reroute", "downtime_estimate"):
        stats = summary_stats(r[f"{stage}_ms"] for r in rows if r["outcome"] == "succeeded")
        if stats is not None:
            ctx.report.figure(f"failsafe_{stage}_ms", stats["mean"],
                              f"ms mean (max {stats['max']}, n={stats['n']})")
