"""Policy triggers at the HC: move a homed service when conditions say so, and bring it back
when they recover (failback). The decision itself is `placement.decide` (pure, with
hysteresis and a dwell time); this loop only feeds it the live view and acts."""
from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

from lb.errors import LBError
from peer.errors import RoamError
from peer.core import policy as rules
from peer.migration.engine import MigrationEngine, MigrationError
from peer.migration.seams import PolicySeams
from peer.records.record import Record
from peer.federation.metaorchestrator import requirements
from peer.copies.manager import ServiceError, ServiceManager
from placement import Stay, Thresholds, decide

log = logging.getLogger(__name__)

TICK = 1.0


class PolicyTriggers:
    def __init__(self, *, services: ServiceManager, engine: MigrationEngine, agent: PolicySeams,
                 thresholds: Thresholds, failing: Callable[[Record], Awaitable[bool]]) -> None:
        self.failing = failing  # FailSafe.owns: a service whose copy does not serve is not ours
        self.services = services
        self.engine = engine
        self.agent = agent  # the agent, seen through the seams the policy needs (peer/migration/seams.py)
        self.thresholds = thresholds
        self._last_move: dict[str, float] = {}

    async def run(self) -> None:
        while True:
            await asyncio.sleep(TICK)
            for record in self.services.records():
                if self.agent.steward_of(record) != self.services.here or self.services.lock(record.name).locked():
                    continue
                try:
                    await self._consider(record.name, record.location)
                except (RoamError, LBError) as exc:  # one service's trouble: the others still get their turn
                    log.warning("policy: considering %s failed: %s", record.name, exc)

    async def _consider(self, name: str, location: str) -> None:
        record = self.services.get(name)
        if record is None:
            return
        views = self.agent.cluster_views()
        member = self.agent.membership.get(location)
        if not rules.may_consider(location=location, here=self.services.here,
                                  status=None if member is None else member.status):
            return  # lost hosts are the fail-safe's job
        if await self.failing(record):
            return  # ...and so are copies that stopped serving before gossip noticed
        now = time.time()
        first_seen = self._last_move.setdefault(name, now)
        last_move = rules.dwell_from(first_seen, self.engine.history.last_move(name))
        decision = decide(
            req=requirements(self.services.descriptor_of(record)), current=location, home=record.home,
            views=views, last_move_at=last_move, now=now,
            thresholds=self.thresholds, policy=self.engine.policy,
        )
        target = rules.target_of(decision, location=location, home=record.home)
        if target is None or isinstance(decision, Stay):
            return
        log.info("policy: %s %s -> %s (%s)", name, location, target, decision.reason)
        self._last_move[name] = now  # also paces retries when the move fails
        try:
            await self.engine.migrate(name, target=target, reason=f"{decision.trigger}: {decision.reason}",
                                      kind="policy")
        except (MigrationError, ServiceError) as exc:
            log.warning("policy move of %s failed: %s", name, exc)
