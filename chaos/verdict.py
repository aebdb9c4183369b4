"""Judging a federation: one snapshot of every peer run through the checkers, and a poll that
waits (with a deadline) until the federation is settled, i.e. healed and quiet:

- every peer answers its admin API and sees every cluster alive (`members_alive`);
- every service exists with a live record on its HC, and its HC endpoint serves;
- exactly one running copy per service, from the orchestrators' own view (`/v1/instances`);
- every peer keeping a record agrees with the others (`records_agree`);
- optionally (`homes`), one steward per service and every entry of its home set serving.
"""
from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from chaos import checkers
from chaos.checkers import CheckResult
from chaos.cluster import Federation, running_by_cluster
from chaos.workload import served_by


@dataclass
class Evaluation:
    at: float  # monotonic
    snapshot: dict[str, dict[str, Any]]
    results: list[CheckResult] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(r.ok for r in self.results)

    def result(self, name: str) -> CheckResult | None:
        return next((r for r in self.results if r.name == name), None)

    def failing(self) -> str:
        return "; ".join(f"{r.name}: {r.detail}" for r in self.results if not r.ok)


async def probe_endpoints(session: aiohttp.ClientSession,
                          endpoints: Mapping[str, str]) -> dict[str, bool]:
    """{service: its HC endpoint answered a GET} (from the root namespace)."""
    names = list(endpoints)
    answers = await asyncio.gather(*(served_by(session, endpoints[n]) for n in names))
    return {n: a is not None for n, a in zip(names, answers)}


def peers_answer(snapshot: Mapping[str, Any], clusters: list[str]) -> CheckResult:
    missing = sorted(set(clusters) - set(snapshot))
    return CheckResult("peers_answer", not missing,
                       f"no answer from {missing}" if missing else f"{len(clusters)} peers answer")


async def probe_entries(session: aiohttp.ClientSession, snapshot: Mapping[str, Any]
                        ) -> dict[str, dict[str, str | None]]:
    """{service: {entry endpoint: the cluster that answered through it, or None}}."""
    wanted = checkers.entry_endpoints(snapshot)
    pairs = [(name, ep) for name, eps in wanted.items() for ep in eps]
    answers = await asyncio.gather(*(served_by(session, ep) for _, ep in pairs))
    out: dict[str, dict[str, str | None]] = {}
    for (name, ep), who in zip(pairs, answers):
        out.setdefault(name, {})[ep] = who
    return out


async def evaluate(fed: Federation, session: aiohttp.ClientSession,
                   endpoints: Mapping[str, str], *, members: bool = True,
                   homes: bool = False) -> Evaluation:
    """Snapshot every peer and run the state checkers on it (members too, if asked; with
    `homes`, also one steward per service and every entry of its home set serving)."""
    snapshot = await fed.snapshot()
    at = time.monotonic()
    probes = await probe_endpoints(session, endpoints)
    names = sorted(endpoints)
    results = [
        peers_answer(snapshot, fed.clusters),
        checkers.every_service_exists_and_serves(snapshot, probes, expected=names),
        checkers.exactly_one_copy(running_by_cluster(snapshot), expected=names,
                                  standbys=checkers.standby_clusters(snapshot)),
        checkers.records_agree(snapshot),
    ]
    if homes:
        results.append(checkers.one_steward(snapshot))
        results.append(checkers.every_entry_serves(snapshot, await probe_entries(session,
                                                                                 snapshot)))
    if members:
        results.append(checkers.members_alive(snapshot, fed.clusters))
    return Evaluation(at, snapshot, results)


async def wait_settled(fed: Federation, session: aiohttp.ClientSession,
                       endpoints: Mapping[str, str], *, timeout: float,
                       members: bool = True, homes: bool = False, interval: float = 0.5,
                       on_change: Callable[[Evaluation], None] | None = None,
                       ) -> tuple[Evaluation, float | None]:
    """Evaluate until everything passes or `timeout`; return the last evaluation and how
    long it took to pass (None if it never did). `on_change` sees every evaluation whose
    failures differ from the previous one's (what kept the federation from settling)."""
    started = time.monotonic()
    last = ""
    while True:
        ev = await evaluate(fed, session, endpoints, members=members, homes=homes)
        if on_change is not None and ev.failing() != last:
            last = ev.failing()
            on_change(ev)
        if ev.ok:
            return ev, ev.at - started
        if time.monotonic() - started >= timeout:
            return ev, None
        await asyncio.sleep(interval)  # polling period
