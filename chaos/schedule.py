"""A randomised, reproducible nemesis schedule (after Jepsen): from a seed, a list of
(time offset, fault, duration), and a runner that plays it against a `Nemesis`.

Generation is pure (only `random.Random(seed)` and cluster names), so a failing run is
replayed by its seed alone.
"""
from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from chaos.errors import FaultError
from chaos.faults import (
    Bandwidth,
    Bridge,
    Fault,
    Halves,
    Isolate,
    Kill,
    Nemesis,
    OneWayCut,
    Pause,
    PidSource,
)
from peer.runtime.waiting import sleep_until

FaultKind = Callable[[random.Random, Sequence[str]], Fault]


def isolate_one(rng: random.Random, clusters: Sequence[str]) -> Fault:
    return Isolate(rng.choice(list(clusters)))


def halves(rng: random.Random, clusters: Sequence[str]) -> Fault:
    order = list(clusters)
    rng.shuffle(order)
    return Halves(order)


def bridge(rng: random.Random, clusters: Sequence[str]) -> Fault:
    order = list(clusters)
    rng.shuffle(order)
    node, rest = order[0], order[1:]
    half = max(1, len(rest) // 2)
    return Bridge(node, rest[:half], rest[half:])


def one_way(rng: random.Random, clusters: Sequence[str]) -> Fault:
    src, dst = rng.sample(list(clusters), 2)
    return OneWayCut(src, dst)


def bandwidth_drop(rng: random.Random, clusters: Sequence[str]) -> Fault:
    return Bandwidth(rng.choice(list(clusters)), rng.choice([0.5, 1.0, 2.0, 5.0]))


NETWORK_KINDS: tuple[FaultKind, ...] = (isolate_one, halves, bridge, one_way, bandwidth_drop)


def process_kinds(targets: Mapping[str, PidSource]) -> list[FaultKind]:
    """Kill (SIGKILL) and Pause kinds over named pid sources ("a/agent", "b/haproxy"...)."""
    names = sorted(targets)

    def kill(rng: random.Random, _: Sequence[str]) -> Fault:
        label = rng.choice(names)
        return Kill(targets[label], label=label)

    def pause(rng: random.Random, _: Sequence[str]) -> Fault:
        label = rng.choice(names)
        return Pause(targets[label], label=label)

    return [kill, pause]


@dataclass(frozen=True)
class ScheduledFault:
    at: float  # seconds from the schedule's start
    fault: Fault
    duration: float

    def describe(self) -> str:
        return f"t+{self.at:.2f}s for {self.duration:.2f}s: {self.fault.describe()}"


@dataclass(frozen=True)
class FaultSchedule:
    """Faults one after another: a random quiet gap, then a random fault for a random time,
    until `total` seconds. Needs at least 3 clusters (bridge needs a node and two sides)."""

    seed: int
    clusters: tuple[str, ...]
    total: float
    kinds: tuple[FaultKind, ...] = NETWORK_KINDS
    gap: tuple[float, float] = (1.0, 5.0)
    duration: tuple[float, float] = (2.0, 10.0)

    def entries(self) -> list[ScheduledFault]:
        if len(self.clusters) < 3:
            raise ValueError("a nemesis schedule needs at least 3 clusters")
        rng = random.Random(self.seed)
        out: list[ScheduledFault] = []
        t = 0.0
        while True:
            at = t + rng.uniform(*self.gap)
            dur = rng.uniform(*self.duration)
            if at + dur > self.total:
                return out
            kind = rng.choice(self.kinds)
            out.append(ScheduledFault(round(at, 3), kind(rng, self.clusters), round(dur, 3)))
            t = at + dur


async def play(entries: Sequence[ScheduledFault], nemesis: Nemesis, *,
               stop: asyncio.Event | None = None, skip_failed: bool = False) -> None:
    """Apply each fault at its offset and heal it after its duration; heal all at the end.

    With `skip_failed`, a fault that cannot be applied (say, a kill whose target is not
    running right now) is skipped (the nemesis logs it as an error event) instead of ending
    the schedule. The sleeps here are the schedule itself, not synchronisation.
    """
    t0 = time.monotonic()
    stop = stop or asyncio.Event()
    try:
        for entry in entries:
            if await sleep_until(t0 + entry.at, stop):
                return
            try:
                fault = await nemesis.apply(entry.fault)
            except FaultError:
                if not skip_failed:
                    raise
                continue
            stopped = await sleep_until(t0 + entry.at + entry.duration, stop)
            await nemesis.heal(fault)
            if stopped:
                return
    finally:
        await nemesis.heal_all()
