"""What a scenario gets: the testbed, the federation, a recording nemesis, per-service loads,
a member watch and the report, plus the steps scenarios are written in (deploy, migrate,
inject, heal, wait for a fail-over, converge). Every step logs an event with its time.
"""
from __future__ import annotations

import asyncio
import random
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from chaos.checkers import CheckResult
from chaos.cluster import AdminAPIError, Federation
from chaos.detections import AppliedFault, scope
from chaos.faults import Fault, FaultEvent, Nemesis
from chaos.netns import Testbed
from chaos.report import Report
from chaos.verdict import Evaluation, wait_settled
from chaos.watch import MemberWatch
from chaos.workload import ServiceLoads, descriptor, served_by
from peer.runtime.waiting import WaitTimeout, wait_until

MIGRATION_TAIL = 1.0  # a planned migration's no-loss window runs this long past its answer


class RecordingNemesis(Nemesis):
    """A nemesis that remembers what each applied fault touched, and when the last heal was."""

    def __init__(self, tb: Testbed, on_event: Callable[[FaultEvent], None]) -> None:
        super().__init__(tb, on_event=on_event)
        self.applied: list[AppliedFault] = []
        self.last_heal: float | None = None

    async def apply(self, fault: Fault) -> Fault:
        applied = await super().apply(fault)
        self.applied.append(AppliedFault(time.monotonic(), fault.describe(),
                                         scope(fault, self.tb)))
        return applied

    async def heal(self, fault: Fault) -> None:
        await super().heal(fault)
        self.last_heal = time.monotonic()

    async def heal_all(self) -> None:
        """Heal everything; only a heal of active faults counts as the last heal."""
        had_faults = bool(self.active)
        try:
            await super().heal_all()
        finally:
            if had_faults:
                self.last_heal = time.monotonic()


@dataclass(frozen=True)
class Deployed:
    name: str
    home: str
    endpoint: str


@dataclass
class ScenarioContext:
    tb: Testbed
    fed: Federation
    report: Report
    seed: int
    services: int
    duration: float
    rate: float
    verbose: bool = True
    rng: random.Random = field(init=False)
    nemesis: RecordingNemesis = field(init=False)
    loads: ServiceLoads = field(init=False)
    watch: MemberWatch = field(init=False)
    deployed: dict[str, Deployed] = field(default_factory=dict, init=False)
    windows: dict[str, dict[str, tuple[float, float]]] = field(default_factory=dict, init=False)
    started_wall: float = field(default_factory=time.time, init=False)
    _probe: aiohttp.ClientSession | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)
        self.nemesis = RecordingNemesis(self.tb, self._fault_event)
        self.loads = ServiceLoads(rate=self.rate)
        self.watch = MemberWatch(self.fed)

    @property
    def clusters(self) -> list[str]:
        return self.fed.clusters

    @property
    def probe(self) -> aiohttp.ClientSession:
        """A plain client session (no admin token) for requests through HC endpoints."""
        if self._probe is None:
            self._probe = aiohttp.ClientSession()
        return self._probe

    @property
    def endpoints(self) -> dict[str, str]:
        return {name: d.endpoint for name, d in self.deployed.items()}

    async def close(self) -> None:
        await self.watch.stop()
        if self._probe is not None:
            await self._probe.close()
            self._probe = None

    def log(self, kind: str, **fields: Any) -> None:
        self.report.event(kind, **fields)
        if self.verbose:
            detail = " ".join(f"{k}={v}" for k, v in fields.items())
            print(f"[{time.monotonic() - self.report.t0:7.2f}s] {kind} {detail}",
                  file=sys.stderr, flush=True)

    def _fault_event(self, ev: FaultEvent) -> None:
        self.report.fault_event(ev)
        if self.verbose:
            detail = f" ({ev.detail})" if ev.detail else ""
            print(f"[{ev.at - self.report.t0:7.2f}s] fault.{ev.action} {ev.fault}{detail}",
                  file=sys.stderr, flush=True)

    async def hold(self, seconds: float) -> None:
        """Let time pass as part of the experiment (load running, faults active)."""
        await asyncio.sleep(seconds)

    # -- services and migrations ---------------------------------------------------------

    async def deploy(self, name: str, home: str, *, load: bool = True) -> Deployed:
        record = await self.fed.create_service(home, descriptor(name))
        deployed = Deployed(name, home, str(record["endpoint"]))
        self.deployed[name] = deployed
        self.log("deploy", service=name, home=home, endpoint=deployed.endpoint)
        if load:
            self.loads.add(name, deployed.endpoint)
        return deployed

    async def migrate(self, coordinator: str, name: str, target: str | None, *,
                      planned: bool = True, timeout: float = 60.0) -> dict[str, Any]:
        """A migration that must succeed; if `planned`, its window must lose nothing."""
        t0 = time.monotonic()
        result = await self.fed.migrate(coordinator, name, target, timeout=timeout)
        t1 = time.monotonic()
        label = f"{name} {result.get('source')}->{result.get('target')} by {coordinator}"
        if planned:
            self.windows.setdefault(name, {})[label] = (t0, t1 + MIGRATION_TAIL)
        self.log("migrate", service=name, coordinator=coordinator, target=result.get("target"),
                 outcome=result.get("outcome"), took_s=round(t1 - t0, 3))
        self.report.row("migrations", label=label, planned=planned,
                        **{f"{s}_ms": result.get(s)
                           for s in ("pr", "replication", "wait", "reroute", "cleanup",
                                     "deploy")})
        return result

    async def attempt_migrate(self, coordinator: str, name: str, target: str | None, *,
                              planned: bool = False, timeout: float = 60.0
                              ) -> dict[str, Any] | None:
        """A migration that may fail (target cut off, coordinator paused...): the failure
        is recorded, not raised. Returns the migration on success."""
        try:
            return await self.migrate(coordinator, name, target, planned=planned,
                                      timeout=timeout)
        except AdminAPIError as exc:
            self.log("migrate.refused", service=name, coordinator=coordinator, target=target,
                     status=exc.status, error=str(exc.body)[:200])
            return None

    async def location(self, name: str) -> str | None:
        """Where the HC's record says the service runs (None if the HC does not answer)."""
        try:
            record = await self.fed.record(self.deployed[name].home, name)
        except AdminAPIError:
            return None
        return None if record is None else str(record["location"])

    async def served_by(self, name: str) -> str | None:
        return await served_by(self.probe, self.deployed[name].endpoint)

    async def wait_served_from(self, name: str, clusters: Iterable[str], *,
                               timeout: float, what: str) -> float | None:
        """Wait until the service's HC endpoint answers from one of `clusters`; return the
        seconds it took, or None (logged) if it never did."""
        wanted = set(clusters)
        t0 = time.monotonic()

        async def ok() -> bool:
            return await self.served_by(name) in wanted

        try:
            await wait_until(ok, timeout=timeout, interval=0.05, what=what)
        except WaitTimeout:
            self.log("timeout", what=what, after_s=timeout)
            return None
        took = time.monotonic() - t0
        self.log("served", service=name, by=sorted(wanted), after_s=round(took, 3))
        return took

    def expect(self, name: str, ok: bool, detail: str) -> CheckResult:
        """A scenario-specific check, reported next to the generic ones."""
        return self.report.check(CheckResult(name, ok, detail))

    # -- faults ------------------------------------------------------------------------

    async def inject(self, fault: Fault) -> Fault:
        """Apply a fault (the nemesis logs it, and remembers what it touched)."""
        return await self.nemesis.apply(fault)

    async def heal(self, fault: Fault | None = None) -> None:
        """Heal one fault, or everything (network swept too) when `fault` is None."""
        if fault is None:
            await self.nemesis.heal_all()
        else:
            await self.nemesis.heal(fault)

    def trace_settling(self, ev: Evaluation) -> None:
        """Log what still keeps the federation from settling, each time it changes."""
        self.log("settling", failing=ev.failing()[:500] or "nothing")

    async def converge(self, label: str, *, timeout: float = 90.0) -> Evaluation:
        """Wait until one copy per service, agreeing records and serving endpoints (members
        may still be re-merging); report the time from the last heal."""
        ev, _ = await wait_settled(self.fed, self.probe, self.endpoints, timeout=timeout,
                                   members=False, on_change=self.trace_settling)
        since = self.nemesis.last_heal
        took = None if not ev.ok or since is None else round(ev.at - since, 3)
        self.report.figure(f"heal_to_converged_s[{label}]", took, "s")
        self.log("converged" if ev.ok else "not-converged", label=label, after_heal_s=took,
                 **({} if ev.ok else {"failing": ev.failing()[:400]}))
        return ev
