"""Named chaos scenarios. Each is a small coroutine taking a `ScenarioContext`; the runner
(`chaos.runner`) builds the testbed and federation around it, heals everything afterwards,
and runs the generic checkers once the federation is quiet.
"""
from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from chaos.scenarios.context import ScenarioContext

ScenarioFn = Callable[[ScenarioContext], Awaitable[None]]


@dataclass(frozen=True)
class Scenario:
    name: str
    run: ScenarioFn
    about: str
    min_clusters: int = 3
    services: int = 1  # default number of services
    duration: float = 60.0  # default --duration (used by scenarios that run for a time)
    agent_args: tuple[str, ...] = ()  # more `roam agent` flags (e.g. a shorter --repair-after)
    home_checks: bool = False  # the final checks also want one steward and every entry serving


def _registry() -> dict[str, Scenario]:
    from chaos.scenarios import crashes, partitions, planned, randomised, restarts, sites, standby, state
    found = [*planned.SCENARIOS, *crashes.SCENARIOS, *partitions.SCENARIOS, *randomised.SCENARIOS,
             *sites.SCENARIOS, *standby.SCENARIOS, *state.SCENARIOS, *restarts.SCENARIOS]
    return {s.name: s for s in found}


def all_scenarios() -> dict[str, Scenario]:
    return _registry()


def get(name: str) -> Scenario:
    scenarios = _registry()
    try:
        return scenarios[name]
    except KeyError as exc:
        raise KeyError(f"no scenario {name!r}; known: {', '.join(sorted(scenarios))}") from exc


__all__ = ["Scenario", "ScenarioContext", "ScenarioFn", "all_scenarios", "get"]
