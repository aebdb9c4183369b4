"""A planned migration of a stateful service: iterative pre-copy, then the handover.

Pre-copy (stage `state`, after `wait`): while the old copy serves, its state is copied to the
new copy, again and again while it changes, at most `PRECOPY_ROUNDS` times (seed 003's
iterative pre-copy: each round moves what changed during the previous one, so the last copy,
made with clients waiting, is as short as it can be). The state is opaque, so a round moves
it whole; the If-None-Match GET ends the rounds early once it stops changing.

Handover (stage `handover`, make-before-break, around the reroute):
  1. hold: every entry's HAProxy holds new requests to the service (lb/hold.lua), with a
     deadline so a coordinator that dies lets them go on by themselves;
  2. each entry waits until no request is at a server any more: the old copy's writes are over;
  3. the last version is read from the old copy and PUT into the new one (skipped if the
     If-None-Match GET says nothing changed since the last pre-copy round);
  4. each entry reroutes (the new copy serves, the old one is drained) and releases its held
     requests, which go to the new copy: none is lost, and none saw an older state.
  5. the old copy is asked once more (If-None-Match): unchanged means the copy was exact,
     reported as `exact` in the migration's `state`.
An entry that cannot hold (unreachable) is named in `not_held`; requests through it may reach
the old copy until it reroutes, and `exact` then tells whether any did.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, Protocol

from lb.errors import LBError
from peer.state.hook import Snapshot, StateHook

log = logging.getLogger(__name__)

PRECOPY_ROUNDS = 4
HOLD_MIN = 3.0  # seconds a hold lasts at most, plus a margin for the final copy's size
HOLD_MAX = 60.0
IDLE_TIMEOUT = 2.0  # in-flight requests at the old copy must finish within this
IDLE_POLL = 0.002

Addr = tuple[str, int]


class HoldingLB(Protocol):
    """This cluster's HAProxy as the handover needs it (lb.LoadBalancer)."""

    async def hold(self, service: str, *, ttl: float) -> None: ...

    async def release(self, service: str) -> None: ...

    async def idle(self, service: str) -> bool: ...


class EntryHolds(Protocol):
    """The other entries' HAProxies (peer/migration/homes.py over the peer API)."""

    async def hold_entries(self, entries: list[str], name: str, *, ttl: float) -> list[str]: ...

    async def release_entries(self, entries: list[str], name: str) -> None: ...


@dataclass
class Precopy:
    last: Snapshot
    rounds: int
    bytes: int
    last_round_s: float


async def precopy(hook: StateHook, *, src: Addr, dst: Addr, path: str, rounds: int = PRECOPY_ROUNDS) -> Precopy:
    """Copy the state from src to dst while src serves (module doc). Raises StateError."""
    t0 = time.monotonic()
    first = await hook.get(*src, path)
    assert first is not None
    await hook.put(*dst, path, first)
    last, moved, done, took = first, first.size, 1, time.monotonic() - t0
    while done < rounds:
        t0 = time.monotonic()
        fresh = await hook.get(*src, path, if_none_match=last.etag)
        if fresh is None:
            break
        await hook.put(*dst, path, fresh)
        last, moved, done, took = fresh, moved + fresh.size, done + 1, time.monotonic() - t0
    return Precopy(last=last, rounds=done, bytes=moved, last_round_s=took)


def hold_ttl(pre: Precopy) -> float:
    """How long the holds may last: a margin plus a few times the last round's copy time."""
    return min(HOLD_MAX, HOLD_MIN + 4 * pre.last_round_s)


@dataclass
class Handover:
    """One handover's holds and its figures (module doc, steps 1-2 and 5)."""

    name: str
    lb: HoldingLB
    entries: EntryHolds
    others: list[str]  # the other entries of the home set
    started: float = 0.0
    window_ms: float | None = None
    not_held: list[str] = field(default_factory=list)
    released: set[str] = field(default_factory=set)  # entries that released on their reroute
    steps: dict[str, float] = field(default_factory=dict)  # ms since the hold began, per step
    not_held_here: bool = False

    def step(self, name: str) -> None:
        self.steps[name] = round((time.monotonic() - self.started) * 1000.0, 3)

    @contextlib.asynccontextmanager
    async def held(self, *, ttl: float) -> AsyncIterator["Handover"]:
        """Hold at every entry and wait until idle; on the way out release whatever still
        holds (after an error too) and take the window."""
        self.started = time.monotonic()
        try:
            try:
                await self.lb.hold(self.name, ttl=ttl)
            except LBError as exc:  # e.g. an HAProxy adopted from before lb/hold.lua: move on, unheld
                log.warning("%s: requests not held at this entry (%s); the state may miss their writes",
                            self.name, exc)
                self.not_held_here = True
            self.step("held_here")
            self.not_held = await self.entries.hold_entries(self.others, self.name, ttl=ttl)
            await self._wait_idle()
            yield self
        finally:
            with contextlib.suppress(Exception):
                await self.lb.release(self.name)
            if self.window_ms is None:
                self.window_ms = (time.monotonic() - self.started) * 1000.0
            rest = [e for e in self.others if e not in self.released and e not in self.not_held]
            if rest:
                with contextlib.suppress(Exception):
                    await self.entries.release_entries(rest, self.name)

    async def _wait_idle(self) -> None:
        deadline = time.monotonic() + IDLE_TIMEOUT
        while not await self.lb.idle(self.name):
            if time.monotonic() > deadline:
                log.warning("%s: requests still at the old copy after %.1fs of hold", self.name, IDLE_TIMEOUT)
                return
            await asyncio.sleep(IDLE_POLL)

    def done(self, confirmed: list[str]) -> None:
        """Every entry in `confirmed` rerouted and released: the window closes now."""
        self.released.update(confirmed)
        self.window_ms = (time.monotonic() - self.started) * 1000.0
        self.step("released")


async def final_copy(hook: StateHook, *, src: Addr, dst: Addr, path: str, last: Snapshot) -> tuple[Snapshot, int]:
    """Step 3: the old copy's last version into the new one; (that version, bytes moved)."""
    fresh = await hook.get(*src, path, if_none_match=last.etag)
    if fresh is None:
        return last, 0
    await hook.put(*dst, path, fresh)
    return fresh, fresh.size


async def unchanged_since(hook: StateHook, *, src: Addr, path: str, final: Snapshot) -> bool | None:
    """Step 5: did the old copy's state stay as copied? None if it cannot be asked."""
    try:
        return await hook.get(*src, path, if_none_match=final.etag) is None
    except Exception as exc:  # noqa: BLE001 - a verdict we cannot reach is reported as unknown
        log.warning("could not ask the old copy whether its state stayed as copied: %s", exc)
        return None


def report(pre: Precopy, final: Snapshot, final_bytes: int, version: int, hand: Handover,
           exact: bool | None) -> dict[str, Any]:
    return {"version": version, "etag": final.etag, "size": final.size, "bytes": pre.bytes + final_bytes,
            "rounds": pre.rounds, "final_bytes": final_bytes, "exact": exact,
            "not_held": [*(["here"] if hand.not_held_here else []), *hand.not_held],
            "handover_ms": round(hand.window_ms or 0.0, 3), "steps_ms": dict(hand.steps)}
