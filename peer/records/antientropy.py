"""Anti-entropy of service records between two peers over the peer API.

`sync_with` runs one round against one peer:
0. summary: one hash of our digests of every record the peer is interested in; if the peer's
   own digests of those hash the same, the two agree and the round ends (a round between
   peers in sync costs one small request and one indexed scan on each side, whatever N);
1. digests: our 8-byte version hashes of the records the peer is interested in (in name ranges
   of bounded size), and of the tombstones it once wrote to (to collect its acknowledgement);
   the peer answers only where it differs, including the records it holds that we are
   interested in and do not have;
2. push: our versions of every differing name we hold; the peer applies them and answers its
   own version wherever that is not the one we pushed (it was newer, or the merge resolved a
   conflict), which we apply in turn; where its merge kept our content under a joined clock it
   answers the clock alone, and we rebuild that version from our row (messages.py, "clocks");
3. fetch: the records only the peer holds.
Digest ranges, push and fetch batches are pipelined (`_pipelined`): up to `in_flight` requests
await their answers at once, so while the peer merges batch k this side sends batch k+1 and
merges the peer's answer to batch k-1; two agents on two hosts overlap their work instead of taking turns.
Each batch is a request of its own, as before: the wire is unchanged, and a peer handles
concurrent pushes as it does pushes from several peers (its store serialises the merges).
So each differing record crosses the wire at most once each way, and the cost of a round
grows with the records the two peers share, not with the federation. Every applied remote
version goes through `RecordStore.apply_remote_many` and its outcome to `on_outcome`; each
batch is decoded, checked and merged in a worker thread (`_off_loop`), so the event loop keeps
serving during a big round.

When to sync (on join, on alive after a partition, after a local change, periodically) is the
agent's policy.
"""
from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from aiohttp import web

from peer.peering.client import PeerBadReply, PeerClient, PeerRefused, msgpack_response, read_msgpack
from peer.peering.wire import PeerWireError
from peer.records import messages as msg
from peer.records import record as rec
from peer.records.merge import MergeOutcome
from peer.records.naming import base_name, is_qualified
from peer.records.batch import Reclocked
from peer.records.record import Record, interested, same_content
from peer.records.store import RecordStore
from peer.runtime.gcpause import collector_paused
from peer.trust.signing import Channel, channel_of

log = logging.getLogger(__name__)

OnOutcome = Callable[[MergeOutcome], Awaitable[None]]
Then = Callable[[], Awaitable[None]]  # what is left of a batch once its request is answered: its merge
T = TypeVar("T")
B = TypeVar("B")

#: Push or fetch requests of a round awaiting their answers at once (`_pipelined`). Measured
#: with the peer in its own process (bench/antientropy.py, docs/benchmarks.md): 1 is the
#: sequential round of before.
IN_FLIGHT = 2


@dataclass
class SyncStats:
    peer: str
    compared: int = 0  # digests we sent
    differing: int = 0
    pushed: int = 0
    returned: int = 0  # records the peer answered to our push
    fetched: int = 0
    applied: int = 0  # remote versions that changed our store
    conflicts: int = 0  # resolved on either side during this round
    requests: int = 0
    bytes_sent: int = 0
    bytes_received: int = 0
    seconds: float = 0.0


def name_ranges(names: list[str], size: int) -> Iterator[tuple[str | None, str | None, list[str]]]:
    """Split sorted `names` into chunks; each chunk owns [lo, hi) so the ranges cover every name."""
    if not names:
        yield None, None, []
        return
    for i in range(0, len(names), size):
        lo = None if i == 0 else names[i]
        hi = None if i + size >= len(names) else names[i + size]
        yield lo, hi, names[i:i + size]


def _tombstone_digests(records: Iterable[Record]) -> dict[str, bytes]:
    """What to acknowledge: only tombstones collect acks (see RecordStore.ack_tombstones)."""
    return {r.name: rec.version_digest(r) for r in records if r.tombstone}


class AntiEntropy:
    def __init__(
        self,
        *,
        store: RecordStore,
        here: str,
        client: PeerClient,
        on_outcome: OnOutcome,
        timeout: float = 10.0,
        digest_chunk: int = 4000,
        push_bytes: int = 512 * 1024,
        fetch_chunk: int = 500,
        in_flight: int = IN_FLIGHT,
        on_heard: Callable[[str], None] | None = None,
        on_in_sync: Callable[[str], None] | None = None,
    ) -> None:
        self.store = store
        self.here = here
        self.client = client
        self.on_outcome = on_outcome
        self.timeout = timeout
        self.digest_chunk = digest_chunk
        self.push_bytes = push_bytes
        self.fetch_chunk = fetch_chunk
        if in_flight < 1:
            raise ValueError(f"in_flight must be at least 1, not {in_flight}")
        self.in_flight = in_flight  # push or fetch requests awaiting their answers at once
        # Told the name of every peer that opens a round with us: proof that it is alive and
        # reaches us (a cluster back from a site loss, before gossip may have noticed it left).
        self.on_heard = on_heard
        # Told the name of every peer whose summary round with us matched with nothing else to
        # settle: the two stores agree on what they share, as a round of our own would find
        # (the agent's welcome then skips its own round with that peer).
        self.on_in_sync = on_in_sync
        self._inflight: set[asyncio.Task[Any]] = set()  # batches merging in a thread (_off_loop)

    def add_routes(self, app: web.Application) -> None:
        app.router.add_post(msg.PATH_DIGESTS, self._on_digests)
        app.router.add_post(msg.PATH_PUSH, self._on_push)
        app.router.add_post(msg.PATH_FETCH, self._on_fetch)
        app.router.add_post(msg.PATH_SUMMARY, self._on_summary)
        app.router.add_post(msg.PATH_NAMES, self._on_names)

    # --- client side -------------------------------------------------------------------------

    async def sync_with(self, peer_name: str, base_url: str) -> SyncStats:
        """One anti-entropy round with `peer_name`; raises PeerError if the peer fails us."""
        stats = SyncStats(peer=peer_name)
        started = time.monotonic()
        # (the round's own objects are acyclic: peer.runtime.gcpause; the summary step's too, a
        # row tuple per record read: a collection they set off, a full one at times, cost a
        # round between peers in sync more than the round itself)
        with collector_paused():
            mine = self.store.digests(peer=peer_name)
            # Tombstones the peer once wrote to but has no part in now: ask only whether it still
            # holds some version; "nothing" acknowledges them as well as "this one" does.
            gc_only = {n: d for n, d in self.store.tombstone_digests(written_by=peer_name).items() if n not in mine}
            if not gc_only and await self._summary_matches(base_url, mine, stats):
                self.store.ack_tombstones(peer_name, mine)
            else:
                mine.update(gc_only)
                await self._reconcile(base_url, peer_name, mine, gc_only, stats)
        stats.seconds = time.monotonic() - started
        return stats

    async def _reconcile(self, base_url: str, peer_name: str, mine: dict[str, bytes], gc_only: dict[str, bytes],
                         stats: SyncStats) -> None:
        """Steps 1 to 3 of `sync_with` (the module docstring)."""
        differing = await self._compare(base_url, mine, stats)
        for name in [n for n in gc_only if n in differing and differing[n] is None]:
            del differing[name]
        stats.differing = len(differing)
        self.store.ack_tombstones(peer_name, {n: d for n, d in mine.items() if n not in differing})
        # The peer may name records we hold without it being interested by our view: its copy
        # is stale (we push ours, so it learns to stop running it) or ours is (it answers). So
        # every differing name goes to the push, which sends the ones we hold (the rows it reads
        # tell: no lookup of those names first, while the peer waits), and the rest are fetched.
        names = sorted(differing)
        pushed = await self._push(base_url, peer_name, names, stats)
        await self._fetch(base_url, peer_name, [n for n in names if n not in pushed and differing[n] is not None],
                          stats)

    async def check_names(self, peer_name: str, base_url: str) -> int:
        """After a partition: has `peer_name` a service of the same name as one homed here?

        Records travel only between the clusters interested in them, so two services created
        under one name on the two sides of a partition would never meet. When a peer comes
        back, each cluster sends it the names it is an entry of (bare, with incarnations); the
        peer answers every record of those names it holds under another incarnation (including
        `name@home`). We merge them (merge.place renames the later creation) and push ours
        back, so the peer does too. Returns the records learnt."""
        mine = {r.name: r.incarnation for r in self.store.all()
                if self.here in r.entries and not is_qualified(r.name)}
        if not mine:
            return 0
        stats = SyncStats(peer=peer_name)
        reply = await self._call(base_url, msg.PATH_NAMES, msg.names_request(sender=self.here, names=mine), stats)
        try:
            theirs = msg.parse_records_reply(reply)
        except PeerWireError as exc:
            raise PeerBadReply(f"names reply: {exc}") from exc
        theirs = [r for r in theirs if base_name(r.name) in mine]
        if theirs:
            log.warning("%s holds %d other service(s) named as ones homed here: %s", peer_name, len(theirs),
                        ", ".join(sorted(r.name for r in theirs)))
            await self._apply(theirs, stats)
            bases = {base_name(r.name) for r in theirs}
            await self._push(base_url, peer_name, sorted({r.name for b in bases for r in self.store.named(b)}), stats)
        return len(theirs)

    async def _call(self, base_url: str, path: str, payload: object, stats: SyncStats) -> object:
        return (await self._exchange(base_url, path, payload, stats))[0]

    async def _exchange(self, base_url: str, path: str, payload: object,
                        stats: SyncStats) -> tuple[object, Channel | None]:
        """The reply, and the channel it came on (the server's verified certificate: its
        cluster's own stamps in the reply are taken on that authority, signing.vouches)."""
        exchange = await self.client.exchange(base_url, path, payload, timeout=self.timeout)
        stats.requests += 1
        stats.bytes_sent += exchange.sent
        stats.bytes_received += exchange.received
        return exchange.reply, channel_of(exchange.peercert)

    async def _audit(self, peer: str) -> None:
        """Before versions go to `peer`: verify what was taken on another channel's authority
        (RecordStore.audit), in a worker thread (ECDSA checks)."""
        if self.store.guard is not None:
            await asyncio.to_thread(self.store.audit, peer)

    async def _summary_matches(self, base_url: str, mine: dict[str, bytes], stats: SyncStats) -> bool:
        """Step 0. A peer that does not know the summary (404) or fails it just means "compare"."""
        payload = msg.summary_request(sender=self.here, summary=msg.summary_of(mine), count=len(mine))
        try:
            reply = await self._call(base_url, msg.PATH_SUMMARY, payload, stats)
            match = msg.parse_summary_reply(reply)
        except (PeerRefused, PeerBadReply, PeerWireError) as exc:
            log.debug("summary with %s failed (%s); comparing digests", base_url, exc)
            return False
        if match:
            stats.compared = len(mine)
        return match

    async def _compare(self, base_url: str, mine: dict[str, bytes], stats: SyncStats) -> dict[str, bytes | None]:
        differing: dict[str, bytes | None] = {}

        async def compare(part: tuple[str | None, str | None, list[str]]) -> None:  # (nothing left after the answer)
            lo, hi, chunk = part
            payload = msg.digests_request(sender=self.here, lo=lo, hi=hi, digests={n: mine[n] for n in chunk})
            reply = await self._call(base_url, msg.PATH_DIGESTS, payload, stats)
            try:
                answer = msg.parse_digests_reply(reply)
            except PeerWireError as exc:
                raise PeerBadReply(f"digests reply: {exc}") from exc
            differing.update((n, d) for n, d in answer.items() if (lo is None or n >= lo) and (hi is None or n < hi))
            stats.compared += len(chunk)

        await self._pipelined(name_ranges(sorted(mine), self.digest_chunk), compare)  # (ranges: disjoint)
        stats.differing = len(differing)
        return differing

    def _batches(self, names: list[str]) -> Iterator[list[tuple[str, bytes, bytes, bool]]]:
        """Our current versions of `names` as the store holds them (packed, with their version
        digest and tombstone flag: sent as they are, no decoding or packing again), in batches
        of about `push_bytes`, smaller at both ends (`_batch_limit`); names we do not hold are
        left out."""
        batch: list[tuple[str, bytes, bytes, bool]] = []
        size = sent = seen = seen_bytes = 0
        limit = self._batch_limit(0, 0)
        for start in range(0, len(names), 1000):
            for row in self.store.packed_many(names[start:start + 1000]):
                seen, seen_bytes = seen + 1, seen_bytes + len(row[1])
                if batch and size + len(row[1]) > limit:
                    yield batch
                    sent += 1
                    left = (len(names) - seen + 1) * seen_bytes // seen  # (this row's included: estimated)
                    batch, size, limit = [], 0, self._batch_limit(sent, left)
                batch.append(row)
                size += len(row[1])
        if batch:
            yield batch

    def _batch_limit(self, sent: int, left: int) -> int:
        """The bytes of the next push batch: a quarter of `push_bytes` first, then half, then
        whole, and half of what is left (down to a quarter) near the end. With batches in
        flight (`_pipelined`), the peer merges the first batch while this side has nothing to
        merge yet, and this side merges the last answer while the peer has nothing left: small
        batches at both ends shorten those two stretches (issue 16)."""
        quarter = max(self.push_bytes // 4, 1)
        if sent == 0:
            return quarter
        if sent == 1:
            return self.push_bytes // 2 or 1
        return min(self.push_bytes, max(quarter, left // 2))

    async def _push(self, base_url: str, peer: str, names: list[str], stats: SyncStats) -> set[str]:
        """Push our versions of those of `names` we hold; the names pushed (a batch that failed
        ends the round: `_pipelined`)."""
        if names:
            await self._audit(peer)
        pushed: set[str] = set()

        def batches() -> Iterator[list[tuple[str, bytes, bytes, bool]]]:
            for batch in self._batches(names):
                pushed.update(row[0] for row in batch)
                yield batch

        await self._pipelined(batches(), lambda batch: self._push_batch(base_url, peer, batch, stats))
        return pushed

    async def _push_batch(self, base_url: str, peer: str, batch: list[tuple[str, bytes, bytes, bool]],
                          stats: SyncStats) -> Then:
        """The push of one batch; returns the merge of the peer's answer (`_pipelined`)."""
        payload = msg.push_request(sender=self.here, records=[packed for _, packed, _, _ in batch], clocks=True)
        reply, channel = await self._exchange(base_url, msg.PATH_PUSH, payload, stats)
        try:
            stats.conflicts += msg.parse_conflicts(reply)
        except PeerWireError as exc:
            raise PeerBadReply(f"push reply: {exc}") from exc

        async def merge() -> None:
            returned, reclocked = await self._take(reply, {name for name, _, _, _ in batch}, stats, pushed=batch,
                                                   channel=channel)
            stats.pushed += len(batch)
            stats.returned += len(returned) + len(reclocked)
            back = {r.name for r in returned} | reclocked
            held_by_peer = {name: digest for name, _, digest, tomb in batch if tomb and name not in back}
            held_by_peer.update(_tombstone_digests(returned))
            self.store.ack_tombstones(peer, held_by_peer)
        return merge

    async def _fetch(self, base_url: str, peer: str, names: list[str], stats: SyncStats) -> None:
        chunks = (names[start:start + self.fetch_chunk] for start in range(0, len(names), self.fetch_chunk))
        await self._pipelined(chunks, lambda wanted: self._fetch_batch(base_url, peer, wanted, stats))

    async def _fetch_batch(self, base_url: str, peer: str, wanted: list[str], stats: SyncStats) -> Then:
        """The fetch of one batch; returns the merge of the peer's answer (`_pipelined`)."""
        payload = msg.fetch_request(sender=self.here, names=wanted)
        reply, channel = await self._exchange(base_url, msg.PATH_FETCH, payload, stats)

        async def merge() -> None:
            fetched, _ = await self._take(reply, set(wanted), stats, channel=channel)
            stats.fetched += len(fetched)
            self.store.ack_tombstones(peer, _tombstone_digests(fetched))
        return merge

    async def _pipelined(self, batches: Iterable[B], send: Callable[[B], Awaitable[Then | None]]) -> None:
        """`send` each batch: its request, which returns what is left to do with the answer
        (its merge), run as a task of its own. Up to `in_flight` requests await their answers
        at once, and up to `in_flight` answers merge (or wait for the store) at once. The next
        batch goes out as soon as the oldest request is answered, not once its answer merged:
        the peer merges batch k+2 while this side merges the answer to batch k. (Counting the
        merge in the window made the two sides take turns: a timeline of the signed concurrent
        round showed each side idle while the other merged, a third of the round; issue 16.)
        The batches name disjoint records, so their order does not matter to the merge. A
        batch that fails ends the round as before: nothing more is sent once its failure is
        seen, the requests and merges still under way are cancelled (a merge already started
        in a worker thread still commits and notifies: `_off_loop`) and the failure is raised."""
        requests: deque[asyncio.Future[Then | None]] = deque()
        merges: deque[asyncio.Future[None]] = deque()

        async def oldest_answered() -> None:
            then = await requests.popleft()
            if then is not None:
                merges.append(asyncio.ensure_future(then()))
            while merges and (merges[0].done() or len(merges) > self.in_flight):
                await merges.popleft()  # (a finished merge's failure is raised here)

        try:
            for batch in batches:
                requests.append(asyncio.ensure_future(send(batch)))
                if len(requests) >= self.in_flight:
                    await oldest_answered()
            while requests:
                await oldest_answered()
            while merges:
                await merges.popleft()
        finally:
            left: list[asyncio.Future[Any]] = [*requests, *merges]
            for task in left:
                task.cancel()
            if left:
                await asyncio.gather(*left, return_exceptions=True)

    async def _take(self, reply: object, asked: set[str], stats: SyncStats,
                    pushed: Sequence[tuple[str, bytes, bytes, bool]] = (),
                    channel: Channel | None = None) -> tuple[list[Record], set[str]]:
        """The records of a reply (a peer answers only what we asked), decoded, checked and
        merged in a worker thread (`_off_loop`); with `pushed` (the rows of a push), its
        clock-only answers too (Reclocked). The records, and the names answered by a clock."""
        def work() -> tuple[tuple[list[Record], set[str]], list[MergeOutcome]]:
            try:
                records = [r for r in msg.parse_records_reply(reply) if r.name in asked]
                clocks = msg.parse_clocks(reply) if pushed else []
                answers = msg.clock_answers(reply) if clocks else []
            except PeerWireError as exc:
                raise PeerBadReply(f"records reply: {exc}") from exc
            rows = {name: (packed, digest) for name, packed, digest, _ in pushed}
            reclocked = [Reclocked(name, rows[name][0], rows[name][1], clock, stamps, answer)
                         for (name, clock, stamps), answer in zip(clocks, answers) if name in rows]
            outcomes = self.store.apply_remote_many([*records, *reclocked], here=self.here, channel=channel)
            return (records, {r.name for r in reclocked}), outcomes

        (records, reclocked), applied, conflicts = await self._off_loop(work)
        stats.applied += applied
        stats.conflicts += conflicts
        return records, reclocked

    async def _apply(self, records: list[Record], stats: SyncStats) -> None:
        _, applied, conflicts = await self._off_loop(
            lambda: (None, self.store.apply_remote_many(records, here=self.here)))
        stats.applied += applied
        stats.conflicts += conflicts

    async def _off_loop(self, work: Callable[[], tuple[T, list[MergeOutcome]]]) -> tuple[T, int, int]:
        """Run `work` (decoding, signature checks, the merge and its commit: the CPU of a batch)
        in a worker thread, so the event loop keeps serving meanwhile (issues 16 and 19: a
        batch of a thousand versions holds a thread for tens of milliseconds, more with
        signatures), then hand each outcome to `on_outcome` on the loop. Once started it runs
        to the end, notifications included, even if the caller is cancelled: what the store
        committed must not lose its actions. `work`'s result, and how many of its outcomes
        changed the store and were conflicts.

        The cyclic collector stays paused (peer.runtime.gcpause) until the outcomes are handed
        on and let go: resumed while they were still held (the batch's Records, a dozen objects
        a version), its first young collection walked them all, after every batch (issue 16)."""
        def boxed() -> list[tuple[T, list[MergeOutcome]]]:
            return [work()]  # (taken out of the box below: the futures that carried it keep only the box)

        async def run() -> tuple[T, int, int]:
            with collector_paused():
                result, outcomes = (await asyncio.to_thread(boxed)).pop()
                for outcome in outcomes:  # (inline, not a helper coroutine: one coroutine less per version)
                    try:
                        await self.on_outcome(outcome)
                    except Exception:
                        log.exception("on_outcome failed for %s", outcome.result.name)
                counts = sum(o.changed for o in outcomes), sum(o.conflict for o in outcomes)
                del outcomes
            return result, *counts

        task = asyncio.ensure_future(run())
        self._inflight.add(task)
        task.add_done_callback(self._inflight.discard)
        return await asyncio.shield(task)

    # --- server side -------------------------------------------------------------------------

    def _heard(self, sender: str) -> None:
        if self.on_heard is not None and sender != self.here:
            self.on_heard(sender)

    async def _on_digests(self, request: web.Request) -> web.Response:
        body = await read_msgpack(request)
        with collector_paused():  # (thousands of acyclic digests and rows, no await: as sync_with's)
            return self._digests_answer(body)

    def _digests_answer(self, body: object) -> web.Response:
        sender, lo, hi, theirs = msg.parse_digests_request(body)
        self._heard(sender)
        theirs = {n: d for n, d in theirs.items() if (lo is None or n >= lo) and (hi is None or n < hi)}
        mine = self.store.digests(peer=sender, lo=lo, hi=hi)
        # Names the asker holds that we hold without it being interested (by our view): it has
        # a stale copy, or we do. Compare those too, so it learns what it must stop running.
        mine.update(self.store.digests_of(n for n in theirs if n not in mine))
        differing: dict[str, bytes | None] = {n: mine.get(n) for n, d in theirs.items() if mine.get(n) != d}
        differing.update({n: d for n, d in mine.items() if n not in theirs})
        self.store.ack_tombstones(sender, {n: d for n, d in theirs.items() if n not in differing})
        return msgpack_response(msg.digests_reply(differing))

    async def _on_push(self, request: web.Request) -> web.Response:
        body = await read_msgpack(request)
        channel = channel_of(request.transport.get_extra_info("peercert")) if request.transport is not None else None
        reply, _, _ = await self._off_loop(lambda: self._pushed(body, channel))
        return msgpack_response(reply)

    def _pushed(self, body: object, channel: Channel | None = None) -> tuple[dict[str, object], list[MergeOutcome]]:
        """A push received (in a worker thread): the versions merged, the reply and the outcomes.
        `channel`: the client's verified certificate, whose cluster's own stamps it vouches for
        (only if that is the push's sender: the identity middleware refuses any other)."""
        sender, records = msg.parse_push_request(body)
        if channel is not None and channel.cluster != sender:
            channel = None
        if self.store.guard is not None:
            self.store.audit(sender)  # (the reply may relay versions taken from other peers)
        # The versions of records we have no part in only if we hold their name (or its creation
        # under another name: a `name@home` twin, naming): the peer sends a stale copy we must answer.
        here = self.here
        accepted, outcomes = self.store.apply_remote_held(records, here=here, channel=channel,
                                                          if_held=lambda r: here not in interested(r))
        # (a merged version has a new clock: most differ there, without comparing whole records)
        same = [o.result is r or (o.result.vclock == r.vclock and o.result == r) for o, r in zip(outcomes, accepted)]
        back: list[Record] = []
        clocks: list[Record] = []  # the pushed content under another clock: its clock will do
        takes_clocks = msg.push_takes_clocks(body)
        for outcome, pushed, kept in zip(outcomes, accepted, same):
            if kept:
                continue
            result = outcome.result
            if takes_clocks and result.name == pushed.name and same_content(result, pushed):
                clocks.append(result)
            else:
                back.append(result)
        self.store.ack_tombstones(sender, _tombstone_digests(r for r, kept in zip(accepted, same) if kept))
        return msg.records_reply(back, conflicts=sum(o.conflict for o in outcomes), clocks=clocks), outcomes

    async def _on_names(self, request: web.Request) -> web.Response:
        sender, names = msg.parse_names_request(await read_msgpack(request))
        self._heard(sender)
        await self._audit(sender)
        other = [r for name, incarnation in names.items() for r in self.store.named(base_name(name))
                 if r.incarnation != incarnation and not r.tombstone]
        return msgpack_response(msg.records_reply(other))

    async def _on_summary(self, request: web.Request) -> web.Response:
        body = await read_msgpack(request)
        with collector_paused():  # (a row tuple per record read, no await: as sync_with's summary step)
            return self._summary_answer(body)

    def _summary_answer(self, body: object) -> web.Response:
        sender, theirs, _ = msg.parse_summary_request(body)
        self._heard(sender)
        mine = self.store.digests(peer=sender)
        match = msg.summary_of(mine) == theirs
        if match:
            self.store.ack_tombstones(sender, mine)
            # As sync_with: a round of ours would not stop at the summary while tombstones the
            # sender wrote to and has no part in await its acknowledgement.
            if self.on_in_sync is not None and sender != self.here and not any(
                    n not in mine for n in self.store.tombstone_digests(written_by=sender)):
                self.on_in_sync(sender)
        return msgpack_response(msg.summary_reply(match=match))

    async def _on_fetch(self, request: web.Request) -> web.Response:
        sender, names = msg.parse_fetch_request(await read_msgpack(request))
        await self._audit(sender)
        found = self.store.packed_many(names, interesting=sender)
        return msgpack_response(msg.packed_records_reply([packed for _, packed, _, _ in found]))
