"""The home set over the peer API (beyond the paper): entries open frontends, follow the record,
forward admin operations to the steward, and the steward keeps the set whole.

* create: the HC asks every cluster whether it holds the name (`LOOKUP`), then each chosen entry
  to open a frontend (`ENTRY_OPEN`), then writes the record naming them all;
* a planned move: the steward commits, then hands the record to every other entry (`ROUTE`),
  which reroutes its own HAProxy make-before-break before answering, so the old copy is
  stopped only once every reachable entry routes to the new one;
* any cluster asked to migrate or delete a service it is not steward of forwards the call
  (`FORWARD`), as the paper's Controller forwards calls on migrated resources;
* `HomeSetKeeper`: at the steward, an entry lost for `repair_after` is replaced (placement
  chooses); at the cluster running a service whose every entry is lost, it adds itself.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from typing import Any

from aiohttp import web

from lb.errors import LBError, NoFreeSlotError
from peer.migration import wire
from peer.peering.client import PeerClient, PeerError, PeerRefused, msgpack_response, read_msgpack
from peer.records.merge import SupersededWrite
from peer.records.naming import MAX_REPLACED, base_name
from peer.records.record import Record
from peer.api.statuses import status_of
from peer.drivers.descriptor import DescriptorError, ServiceDescriptor
from peer.errors import UpstreamKind
from peer.copies.manager import NameHolder, ServiceError, ServiceManager, WorkloadRefused
from peer.state.handover import IDLE_POLL, IDLE_TIMEOUT
from peer.homeset.stewardship import Liveness, Observed, must_adopt_home, repair_needed
from placement import ClusterView
from placement.homes import choose_entries

log = logging.getLogger(__name__)

KEEPER_TICK = 1.0
LOOKUP_TIMEOUT = 1.5
ENTRY_TIMEOUT = 3.0
ROUTE_TIMEOUT = 5.0
REFUSAL_MEMORY = 600.0  # a cluster whose policy refused to be an entry of a service is not asked again this long

UrlOf = Callable[[str], str | None]


class StewardUnreachable(ServiceError):
    """The steward in our view did not answer a forwarded call (a conflict: ask again)."""


class StewardBadReply(ServiceError, UpstreamKind):
    """The steward answered a forwarded call with something that is not (status, body)."""


class HomeSetClient:
    """The calling side, and the `HomeSetPeers` the service manager needs."""

    def __init__(self, *, here: str, client: PeerClient, url_of: UrlOf, views: Callable[[], Mapping[str, ClusterView]],
                 publish_now: Callable[[Record, frozenset[str]], Any]) -> None:
        self.here = here
        self.client = client
        self.url_of = url_of
        self._views = views
        self._publish_now = publish_now
        self.refused: dict[tuple[str, str], float] = {}  # (cluster, service) -> when its policy refused

    def live_views(self) -> Sequence[ClusterView]:
        return [v for v in self._views().values() if v.alive]

    async def publish_now(self, record: Record, extra: frozenset[str] = frozenset()) -> None:
        await self._publish_now(record, extra)

    async def lookup(self, name: str) -> list[NameHolder]:
        peers = [v.name for v in self.live_views() if v.name != self.here]
        answers = await asyncio.gather(*(self._lookup_one(p, name) for p in peers))
        return [h for found in answers for h in found]

    async def _lookup_one(self, cluster: str, name: str) -> list[NameHolder]:
        url = self.url_of(cluster)
        if url is None:
            return []
        try:
            reply = await self.client.call(url, wire.LOOKUP, wire.Lookup(name).to_wire(), timeout=LOOKUP_TIMEOUT)
        except PeerError:
            return []  # a peer we cannot ask holds nothing we could learn now
        if not isinstance(reply, dict) or not isinstance(reply.get("holders"), list):
            return []
        out = []
        for h in reply["holders"]:
            if isinstance(h, dict) and all(isinstance(h.get(k), str) for k in ("home", "incarnation")):
                replaces = h.get("replaces", [])
                out.append(NameHolder(cluster=cluster, home=h["home"], incarnation=h["incarnation"],
                                      tombstone=bool(h.get("tombstone")),
                                      replaces=tuple(i for i in replaces if isinstance(i, str))[:MAX_REPLACED]
                                      if isinstance(replaces, list) else ()))
        return out

    async def open_entry(self, cluster: str, name: str, incarnation: str, *, home: str,
                         descriptor: bytes) -> str | None:
        """Ask `cluster` to open a frontend; it judges the home and descriptor by its workload policy."""
        url = self.url_of(cluster)
        refused_at = self.refused.get((cluster, name))
        if url is None or (refused_at is not None and time.monotonic() - refused_at < REFUSAL_MEMORY):
            return None
        try:
            message = wire.EntryOpen(name=name, incarnation=incarnation, home=home, descriptor=descriptor)
            reply = await self.client.call(url, wire.ENTRY_OPEN, message.to_wire(), timeout=ENTRY_TIMEOUT)
        except PeerRefused as exc:
            if exc.status == 403 and exc.rule is not None:  # its workload policy: not asked again for a while
                self.refused[(cluster, name)] = time.monotonic()
            log.warning("entry %s did not open a frontend for %s: %s", cluster, name, exc)
            return None
        except PeerError as exc:
            log.warning("entry %s did not open a frontend for %s: %s", cluster, name, exc)
            return None
        endpoint = reply.get("endpoint") if isinstance(reply, dict) else None
        return endpoint if isinstance(endpoint, str) else None

    async def route_entries(self, record: Record, *, skip: frozenset[str] = frozenset(),
                            release: bool = False, timings: dict[str, dict[str, float]] | None = None) -> list[str]:
        """Hand the committed record to every other entry and wait until each routes (bounded);
        returns the entries that did not confirm. `release`: each entry then lets the requests
        it holds for a handover go on (peer/state/handover.py). `timings`: filled per entry with
        the call as this side timed it (`call`) and the parts its handler timed (ms)."""
        others = [e for e in record.entries if e != self.here and e not in skip]
        body = wire.Route(record=record, release=release).to_wire()

        async def one(entry: str) -> bool:
            started = time.perf_counter()
            reply = await self._call_entry(entry, wire.ROUTE, body, f"confirm the route of {record.name}")
            if timings is not None and reply is not None:
                parts = reply.get("timings_ms") if isinstance(reply, dict) else None
                timings[entry] = {"call": round((time.perf_counter() - started) * 1000.0, 3),
                                  **({k: float(v) for k, v in parts.items() if isinstance(v, (int, float))}
                                     if isinstance(parts, dict) else {})}
            return reply is not None

        confirmed = await asyncio.gather(*(one(e) for e in others))
        return [e for e, ok in zip(others, confirmed) if not ok]

    async def hold_entries(self, entries: list[str], name: str, *, ttl: float) -> list[str]:
        """Ask each entry to hold requests to `name` and answer once its old server is idle;
        returns the entries that did not (peer/state/handover.py, `EntryHolds`)."""
        answers = await asyncio.gather(*(self._hold_one(e, wire.Hold(name=name, ttl=ttl)) for e in entries))
        return [e for e, ok in zip(entries, answers) if not ok]

    async def release_entries(self, entries: list[str], name: str) -> None:
        await asyncio.gather(*(self._hold_one(e, wire.Hold(name=name, release=True)) for e in entries))

    async def _hold_one(self, entry: str, message: wire.Hold) -> bool:
        what = f"{'release' if message.release else 'hold'} {message.name}"
        return await self._call_entry(entry, wire.HOLD, message.to_wire(), what) is not None

    async def _call_entry(self, entry: str, path: str, body: dict[str, Any], what: str) -> object | None:
        """One peer call to an entry (bounded): its reply; None, logged, if it did not answer."""
        url = self.url_of(entry)
        if url is None:
            return None
        try:
            reply = await self.client.call(url, path, body, timeout=ROUTE_TIMEOUT)
        except PeerError as exc:
            log.warning("entry %s did not %s: %s", entry, what, exc)
            return None
        return {} if reply is None else reply

    async def forward(self, steward: str, op: wire.ForwardedOp, name: str,
                      target: str | None) -> tuple[int, Any]:
        """Run an admin operation at the steward; (HTTP status, JSON body) of its answer."""
        url = self.url_of(steward)
        if url is None:
            raise StewardUnreachable(f"{name!r} is stewarded by {steward}, which cannot be reached", field="name")
        try:
            reply = await self.client.call(url, wire.FORWARD, wire.Forward(op=op, name=name, target=target).to_wire(),
                                           timeout=130.0)
        except PeerRefused as exc:
            return exc.status, {"error": str(exc)}
        except PeerError as exc:
            raise StewardUnreachable(f"{name!r} is stewarded by {steward}, which did not answer: {exc}",
                                     field="name") from exc
        if not isinstance(reply, dict):
            raise StewardBadReply(f"steward {steward} gave a malformed answer")
        return int(reply.get("status", 200)), reply.get("body")


class HomeSetHandlers:
    """The answering side of the home-set calls."""

    def __init__(self, *, services: ServiceManager,
                 run_forwarded: Callable[[wire.ForwardedOp, str, str | None], Any]) -> None:
        self.services = services
        self._run_forwarded = run_forwarded

    def add_routes(self, app: web.Application) -> None:
        app.router.add_post(wire.LOOKUP, self.lookup)
        app.router.add_post(wire.ENTRY_OPEN, self.entry_open)
        app.router.add_post(wire.ROUTE, self.route)
        app.router.add_post(wire.FORWARD, self.forward)
        app.router.add_post(wire.HOLD, self.hold)

    async def lookup(self, request: web.Request) -> web.Response:
        name = wire.Lookup.from_wire(await read_msgpack(request)).name
        record = self.services.stored(name)
        holders = [] if record is None else [
            {"home": record.home, "incarnation": record.incarnation, "tombstone": record.tombstone,
             "replaces": list(record.replaces)}]
        return msgpack_response({"holders": holders})

    async def entry_open(self, request: web.Request) -> web.Response:
        msg = wire.EntryOpen.from_wire(await read_msgpack(request))
        name, incarnation, home, raw = msg.name, msg.incarnation, msg.home, msg.descriptor
        try:
            descriptor = None if raw is None else ServiceDescriptor.from_msgpack(raw)
        except DescriptorError as exc:
            return msgpack_response({"error": f"descriptor.{exc.field}: {exc}"}, status=422)
        if descriptor is not None and base_name(descriptor.name) != base_name(name):
            return msgpack_response({"error": "descriptor name does not match"}, status=422)
        try:
            host, port = await self.services.reserve_entry(name, incarnation, home=home, descriptor=descriptor)
        except WorkloadRefused as exc:
            log.warning("refused to open an entry for %s (home %s): %s", name, home, exc)
            return msgpack_response(exc.refusal.as_api(), status=403)
        except ServiceError as exc:
            return msgpack_response({"error": str(exc)}, status=status_of(exc))
        except NoFreeSlotError as exc:
            return msgpack_response({"error": f"no free frontend: {exc}"}, status=409)
        return msgpack_response({"endpoint": f"{host}:{port}"})

    async def route(self, request: web.Request) -> web.Response:
        """Apply the committed record, route to it (make-before-break, drain included), answer.
        The answer's `timings_ms`: ms since the handler began at the end of each part (`read`,
        `locked`, `applied`, `acted`, `up`, `routed`), for the steward's profile of a move."""
        started = time.perf_counter()
        timings: dict[str, float] = {}

        def mark(part: str) -> None:
            timings[part] = round((time.perf_counter() - started) * 1000.0, 3)

        msg = wire.Route.from_wire(await read_msgpack(request))
        record = msg.record
        mark("read")
        services = self.services
        async with services.lock(record.name):
            mark("locked")
            # The commit of a move to here reaches an entry that is also the AC by ROUTE before
            # any gossip: its actions (AdoptLocalCopy settles the pending copy) run now. A move
            # away from here keeps the old copy: other entries may still route to it.
            outcome = services.merge(record)
            mark("applied")
            await services.act_locked(outcome, keep_copy=True)
            mark("acted")
            current = services.get(record.name)
            if current is not None and current.location == services.here:
                # A copy that arrived here by migration is ours now: a later move back here is
                # no "other migration arriving" (AdoptLocalCopy above settles it already when
                # this version changed the location; this also covers an earlier merge).
                services.settle_arrival(record.name, current.migration_id)
            if current is not None and services.here in current.entries:
                services.reserved.pop(record.name, None)
                try:
                    await services.ensure_route(current, on_up=lambda: mark("up"))
                except WorkloadRefused as exc:
                    return msgpack_response(exc.refusal.as_api(), status=403)
                except LBError as exc:
                    return msgpack_response({"error": f"reroute failed: {exc}"}, status=502)
                finally:
                    if msg.release:  # held requests never wait out the deadline
                        with contextlib.suppress(LBError):
                            await services.lb.release(record.name)
        mark("routed")
        return msgpack_response({"routed": True, "timings_ms": timings})

    async def hold(self, request: web.Request) -> web.Response:
        """A handover's hold at this entry: hold requests to the service, wait (bounded) until
        none is at a server, answer; or, with `release`, let them go on."""
        msg = wire.Hold.from_wire(await read_msgpack(request))
        name, lb = msg.name, self.services.lb
        try:
            if msg.release or msg.ttl is None:
                await lb.release(name)
                return msgpack_response({"released": True})
            await lb.hold(name, ttl=msg.ttl)
            deadline = time.monotonic() + min(msg.ttl, IDLE_TIMEOUT)
            while not await lb.idle(name) and time.monotonic() < deadline:
                await asyncio.sleep(IDLE_POLL)
        except LBError as exc:
            return msgpack_response({"error": f"hold failed: {exc}"}, status=502)
        return msgpack_response({"held": True})

    async def forward(self, request: web.Request) -> web.Response:
        msg = wire.Forward.from_wire(await read_msgpack(request))
        status, answer = await self._run_forwarded(msg.op, msg.name, msg.target)
        return msgpack_response({"status": status, "body": answer})


class HomeSetKeeper:
    """Keeps every home set whole (see module docstring); one pass per second."""

    def __init__(self, *, services: ServiceManager, peers: HomeSetClient, liveness: Liveness,
                 observed: Callable[[], Mapping[str, Observed]], repair_after: float,
                 publish: Callable[[Record, frozenset[str]], Any]) -> None:
        self.services = services
        self.peers = peers
        self.liveness = liveness
        self.observed = observed
        self.repair_after = repair_after
        self.publish = publish

    async def run(self) -> None:
        while True:
            await asyncio.sleep(KEEPER_TICK)
            for record in self.services.records():
                try:
                    await self.keep(record)
                except (ServiceError, LBError, PeerError) as exc:
                    log.warning("home set of %s not repaired: %s", record.name, exc)

    def _lost(self, record: Record) -> dict[str, float | None]:
        members, now = self.observed(), time.monotonic()
        return {e: self.liveness.lost_for(e, members, now) for e in record.entries}

    async def keep(self, record: Record) -> None:
        here = self.services.here
        lost = self._lost(record)
        if must_adopt_home(record, here=here, lost_for=lost, repair_after=self.repair_after):
            await self._adopt(record)
            return
        if self.liveness.steward(record, self.observed(), time.monotonic()) != here:
            return
        wanted = self.services.descriptor_of(record).entries or 2
        plan = repair_needed(record, wanted=wanted, lost_for=lost, repair_after=self.repair_after)
        if plan is not None:
            await self._repair(record, drop=plan.drop, need=plan.need)

    async def _adopt(self, record: Record) -> None:
        services, here = self.services, self.services.here
        async with services.lock(record.name):
            current = services.get(record.name)
            if current is None or current != record:
                return
            host, port = await services.lb.open_frontend(record.name)
            try:
                adopted = services.commit(
                    replace(current, homes=(*current.entries, here),
                            endpoints=tuple(sorted((*current.endpoints, (here, f"{host}:{port}"))))))
            except SupersededWrite as exc:  # (a version merged since the read decides: no entry here)
                log.warning("%s: not added to the home set: %s", record.name, exc)
                await services.lb.close_frontend(record.name)
                return
            await services.ensure_route(adopted)
        log.warning("every entry of %s lost: %s added itself to its home set", record.name, here)
        await self.publish(adopted, frozenset())

    async def _repair(self, record: Record, *, drop: tuple[str, ...], need: int) -> None:
        services = self.services
        keep = [e for e in record.entries if e not in drop]
        views = self.peers.live_views()
        tiers = [v.tier for v in views if v.name in keep]
        fresh = choose_entries(views, chosen=keep, tiers=tiers, count=need, exclude=record.entries, home=record.home)
        if not fresh and not drop:
            return
        opened = [(c, ep) for c in fresh
                  if (ep := await self.peers.open_entry(c, record.name, record.incarnation, home=record.home,
                                                        descriptor=record.descriptor))]
        if not opened and not drop:
            return  # nobody took it (unreachable, or refused by policy): nothing to write
        async with services.lock(record.name):
            current = services.get(record.name)
            if current is None or current != record:
                return
            endpoints = tuple(sorted([p for p in current.endpoints if p[0] not in drop] + opened))
            try:
                repaired = services.commit(
                    replace(current, homes=tuple(keep + [c for c, _ in opened]), endpoints=endpoints))
            except SupersededWrite as exc:  # (the entries opened for it lapse: ENTRY_RESERVATION)
                log.warning("home set of %s not repaired: %s", record.name, exc)
                return
        log.warning("home set of %s repaired: dropped %s, added %s", record.name, list(drop), [c for c, _ in opened])
        await self.publish(repaired, frozenset(drop))
        with contextlib.suppress(PeerError):
            await self.peers.route_entries(repaired)
