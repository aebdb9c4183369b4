"""How long, and how many bytes, two peers take to reconcile record sets that diverge by N records.

Two real aiohttp servers on 127.0.3.40/41 (loopback; `--addr A B` moves them), two SQLite stores (WAL, synchronous=FULL)
in a temporary directory, one `AntiEntropy.sync_with` round per scenario:

  missing     N records homed at a and running at b, unknown to b (pushed)
  fetch       N records homed at b and running at a, unknown to a (fetched)
  both-ways   N shared records, half updated on each side
  concurrent  N shared records updated on both sides during a "partition" (N conflicts)
  in-sync     N shared records already equal (the steady-state cost of a round)
  unshared    a also holds N records b has no part in, 100 shared ones differ

By default side b runs in a process of its own (a child `python` running this file's `--serve`
entry point: its own store, event loop and GIL, as the second agent of a federation would), so
the two sides' work overlaps as it does between two agents; the round is driven from side a and
timed there. Both stores are seeded in this process before b's process starts (not timed).
`--one-process` runs both peers in this process instead (one event loop, one GIL): the round's
wall time is then the sum of both sides' CPU. The mode is printed on the first line.

`seconds` is the round's wall time, `cpu s` the CPU time of both sides during it (this
process's, plus the child's in the two-process mode: the round's whole work, which a busy
neighbour does not inflate as much as the wall time).

With --signed both sides run with a per-cluster identity (issue 19): every version is signed
by its writer (peer/trust/signing.py) and the peers talk mTLS as agents do, so the sender's own
stamps are taken on the channel's authority (signing.vouches) and every other one is checked
before it is merged; --signed --plain-http runs without TLS, where every received stamp is
checked (the cost before channel authority, or of versions relayed by a third cluster).

Usage: .venv/bin/python bench/antientropy.py [--records 10000] [--runs 3] [--signed [--plain-http]] [--one-process]
       [--in-flight 2] [--push-kb KB] [--only SCENARIO...] [--split-cpu] [--profile DIR] [--addr 127.0.3.40 127.0.3.41]
"""
from __future__ import annotations

import argparse
import asyncio
import cProfile
import functools
import logging
import pstats
import ssl
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any
from dataclasses import replace
from pathlib import Path

import msgpack
from aiohttp import web
from cryptography.hazmat.primitives import serialization
from prometheus_client import CollectorRegistry, Counter

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import Spread, machine_line, record_goal
from peer.peering.client import PeerClient, peer_auth_middleware
from peer.records import antientropy
from peer.records import messages as msg
from peer.records.antientropy import AntiEntropy, SyncStats
from peer.records.merge import MergeOutcome, local_write
from peer.records.record import Record, State
from peer.records.store import RecordStore
from peer.runtime import heap
from peer.trust import ca
from peer.trust.authorship import CertBook, RecordGuard
from peer.trust.certs import NO_REVOCATIONS, load_cert

SECRET = b"bench-federation-secret-000000000"
GOAL_DIFFERING_S = 1.0  # issue 16: 10,000 differing records
GOAL_IN_SYNC_S = 0.05  # issue 16: 10,000 records already in sync
ADDRS = ["127.0.3.40", "127.0.3.41"]  # --addr moves them
SPLIT: list[bool] = [False]  # --split-cpu
IN_FLIGHT = [antientropy.IN_FLIGHT]  # --in-flight changes it (both sides)
PUSH_KB: list[int] = []  # --push-kb: AntiEntropy's push_bytes, if given


def descriptor(name: str) -> bytes:
    data: bytes = msgpack.packb({
        "name": name, "port": 8080, "command": ["python3", "-m", "http.server", "{port}"],
        "image": "nginx:1.25", "cpu": 0.5, "memory": "128Mi", "replicas": 1,
        "health": {"path": "/healthz"}, "constraints": {"tiers": ["edge", "cloud"]},
    })
    return data


def created(name: str, *, home: str, location: str, now: float) -> Record:
    content = Record(name=name, home=home, location=location, state=State.RUNNING, digest="0123456789abcdef",
                     descriptor=descriptor(name), instance="127.0.3.41:31000", endpoint="127.0.3.40:30000")
    return signed_by(home, None, local_write(None, content, here=home, now=now))


GUARDS: dict[str, RecordGuard] = {}  # --signed: each side's guard (signs its writes, checks what it receives)
TLS: dict[str, "SideTLS"] = {}  # --signed without --plain-http: each side's mTLS contexts


class Profiles:
    """`--profile DIR`: cProfile of a side's round in the loop's thread and in every worker
    thread that decodes and merges a batch (AntiEntropy._off_loop), written as one pstats file."""

    def __init__(self) -> None:
        self.loop = cProfile.Profile()
        self.done: list[cProfile.Profile] = []
        off_loop = AntiEntropy._off_loop

        async def profiled(ae: AntiEntropy, work: Callable[[], Any]) -> Any:
            def run() -> Any:
                prof = cProfile.Profile()
                prof.enable()
                try:
                    return work()
                finally:
                    prof.disable()
                    self.done.append(prof)
            return await off_loop(ae, run)

        AntiEntropy._off_loop = profiled  # type: ignore[method-assign,assignment]

    def dump(self, path: Path) -> None:
        self.loop.disable()
        stats = pstats.Stats(self.loop)
        for prof in self.done:
            stats.add(prof)
        stats.dump_stats(path)
        self.loop, self.done = cProfile.Profile(), []


PROFILE: list[Path] = []  # --profile DIR


class SideTLS:
    """A side's contexts as an agent's identity makes them (peer/trust/identity.py): its
    certificate both ways, the federation CA's verified, a client certificate required."""

    def __init__(self, tmp: Path, name: str) -> None:
        pair = (tmp / name / "cluster.pem", tmp / name / "cluster.key")
        self.server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.server.verify_mode = ssl.CERT_REQUIRED
        self.client = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        self.client.check_hostname = False  # (as an agent's `member` context: the chain is verified)
        for ctx in (self.server, self.client):
            ctx.load_cert_chain(*pair)
            ctx.load_verify_locations(cafile=str(tmp / "ca" / "ca.pem"))

    def client_ssl(self, base_url: str) -> tuple[ssl.SSLContext, str | None]:
        return self.client, None

    def server_refusal(self, peercert: dict[str, object] | None, url: str) -> str | None:
        return None  # (no revocation list in this bench)


def signed_by(cluster: str, previous: Record | None, stored: Record) -> Record:
    guard = GUARDS.get(cluster)
    return stored if guard is None else guard.sign(previous, stored, actor=cluster)


def make_guards(tmp: Path, *, tls: bool) -> None:
    """A CA and a certificate for `a` and `b`, as `roam ca` makes them."""
    ca.init(tmp / "ca")
    for name in ("a", "b"):
        ca.issue(tmp / "ca", cluster=name, out=tmp / name, ips=())
    load_identities(tmp, ("a", "b"), tls=tls)


def load_identities(tmp: Path, sides: Iterable[str], *, tls: bool) -> None:
    """The guards (and with `tls` the mTLS contexts) of `sides`, from what `make_guards` wrote:
    b's own process loads its identity from the files, as an agent does."""
    book = CertBook(load_cert((tmp / "ca" / "ca.pem").read_bytes(), what="ca"))
    for name in ("a", "b"):
        book.add(load_cert((tmp / name / "cluster.pem").read_bytes(), what=name))
    for name in sides:
        KEYS[name] = serialization.load_pem_private_key((tmp / name / "cluster.key").read_bytes(), password=None)
        if tls:
            TLS[name] = SideTLS(tmp, name)
    BOOK.append(book)
    fresh_guards()


KEYS: dict[str, object] = {}
BOOK: list[CertBook] = []


def fresh_guards() -> None:
    """New guards for a scenario (its stores are new too): nothing checked, cached or taken on
    a channel's authority by an earlier scenario carries over."""
    refusals = Counter("refused", "refused", ["reason"], registry=CollectorRegistry())
    for name, key in KEYS.items():
        GUARDS[name] = RecordGuard(key=lambda k=key: k, book=BOOK[-1], revocations=lambda: NO_REVOCATIONS,
                                   refusals=refusals)


class Seeded:
    """A side's store, seeded before the round (bulk writes, not timed)."""

    def __init__(self, name: str, ip: str, path: Path) -> None:
        self.name, self.ip, self.path = name, ip, path
        self.store = RecordStore.open(path)
        self.store.guard = GUARDS.get(name)
        self.url = ""

    def load(self, records: Iterable[Record]) -> None:
        """Bulk setup: one transaction instead of one fsync per record."""
        self.store.apply_remote_many(list(records), here=self.name)

    def update(self, names: Iterable[str], now: float, **changes: object) -> None:
        """Local writes, committed in one transaction (setup speed only)."""
        current = self.store.get_many(list(names))
        self.load(signed_by(self.name, r, local_write(r, replace(r, **changes), here=self.name,  # type: ignore[arg-type]
                                                      now=now)) for r in current.values())

    async def start(self) -> None:
        raise NotImplementedError

    async def stop(self) -> None:
        raise NotImplementedError

    async def cpu(self) -> float:
        """The CPU time this side's own process has used (0: it runs in this process)."""
        return 0.0


class Side(Seeded):
    """A peer served from this process's event loop."""

    def __init__(self, name: str, ip: str, path: Path) -> None:
        super().__init__(name, ip, path)
        self.tls = TLS.get(name)
        self.client = PeerClient(SECRET, sender=name, tls=self.tls)
        self.outcomes = 0

        async def on_outcome(outcome: MergeOutcome) -> None:
            self.outcomes += 1

        sizes: dict[str, Any] = {"push_bytes": PUSH_KB[0] * 1024} if PUSH_KB else {}
        self.ae = AntiEntropy(store=self.store, here=name, client=self.client, on_outcome=on_outcome,
                              in_flight=IN_FLIGHT[0], **sizes)
        self.runner: web.AppRunner | None = None

    async def start(self) -> None:
        app = web.Application(middlewares=[peer_auth_middleware(SECRET)], client_max_size=8 * 1024 * 1024)
        self.ae.add_routes(app)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        await web.TCPSite(self.runner, self.ip, 0, ssl_context=self.tls.server if self.tls else None).start()
        host, port = self.runner.addresses[0][:2]
        self.url = f"{'https' if self.tls else 'http'}://{host}:{port}"

    async def stop(self) -> None:
        await self.client.close()
        if self.runner is not None:
            await self.runner.cleanup()
        self.store.close()


class ProcessSide(Seeded):
    """A peer served by a process of its own (`--serve`): seeded here, then its store is closed
    and the child opens it, loads its identity from the files and serves, as a second agent
    would. Commands on its stdin, answers on its stdout, one line each ("cpu", "stop")."""

    def __init__(self, name: str, ip: str, path: Path, *, tmp: Path, signed: bool, plain_http: bool) -> None:
        super().__init__(name, ip, path)
        self.argv = [sys.executable, str(Path(__file__).resolve()), "--serve", name, "--db", str(path),
                     "--tmp", str(tmp), "--addr", *ADDRS, "--in-flight", str(IN_FLIGHT[0]),
                     *(["--push-kb", str(PUSH_KB[0])] if PUSH_KB else []),
                     *(["--profile", str(PROFILE[0])] if PROFILE else []), *(["--signed"] if signed else []),
                     *(["--plain-http"] if plain_http else [])]
        self.proc: asyncio.subprocess.Process | None = None
        self.stderr = path.with_suffix(".stderr")  # (bench.common's import says a line there: shown on failure)

    async def start(self) -> None:
        self.store.close()
        with self.stderr.open("wb") as err:
            self.proc = await asyncio.create_subprocess_exec(*self.argv, stdin=asyncio.subprocess.PIPE,
                                                             stdout=asyncio.subprocess.PIPE, stderr=err)
        self.url = (await self._answer()).removeprefix("ready ")

    async def _answer(self, command: str | None = None) -> str:
        assert self.proc is not None and self.proc.stdin is not None and self.proc.stdout is not None
        if command is not None:
            self.proc.stdin.write(command.encode() + b"\n")
            await self.proc.stdin.drain()
        line = (await asyncio.wait_for(self.proc.stdout.readline(), 60)).decode().strip()
        if not line:
            raise RuntimeError(f"side {self.name}'s process ended (exit {await self.proc.wait()}): "
                               f"{self.stderr.read_text(errors='replace')}")
        return line

    async def cpu(self) -> float:
        return float(await self._answer("cpu"))

    async def stop(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            try:
                await self._answer("stop")
                await asyncio.wait_for(self.proc.wait(), 30)
            finally:
                if self.proc.returncode is None:
                    self.proc.kill()
                    await self.proc.wait()


async def serve(name: str, path: Path, tmp: Path, *, signed: bool, plain_http: bool) -> None:
    """`--serve`: side `name` alone in this process, until "stop" on stdin (see ProcessSide)."""
    logging.getLogger("peer.records").setLevel(logging.ERROR)
    if signed:
        load_identities(tmp, (name,), tls=not plain_http)
    side = Side(name, ADDRS[ord(name) - ord("a")], path)
    await side.start()
    loop = asyncio.get_running_loop()
    stopping = asyncio.Event()

    def commands() -> None:  # (a thread: the loop keeps serving while it waits for a line)
        for line in sys.stdin:
            if line.strip() == "cpu":
                print(f"{time.process_time():.6f}", flush=True)
            else:
                break
        loop.call_soon_threadsafe(stopping.set)

    threading.Thread(target=commands, daemon=True).start()
    # Warm: one summary exchange with itself (TLS handshake, the handlers' first run), as a
    # running agent's process is; it changes nothing (its own summary never matches).
    await side.client.exchange(side.url, msg.PATH_SUMMARY, msg.summary_request(
        sender=name, summary=bytes(len(msg.summary_of({}))), count=0))
    profiles = Profiles() if PROFILE else None
    if profiles is not None:
        profiles.loop.enable()
    print(f"ready {side.url}", flush=True)
    await stopping.wait()
    if profiles is not None:
        profiles.dump(PROFILE[0] / f"{path.stem}.pstats")
    await side.stop()
    print(f"stopped {side.outcomes}", flush=True)


Setup = Callable[["Seeded", "Seeded", int], None]


async def scenario(title: str, n: int, tmp: Path, setup: Setup,
                   spawn: Callable[[str, str, Path], Seeded] | None = None) -> tuple[str, SyncStats, bool, float]:
    """One round of `title` from a to b; `spawn` makes side b (default: in this process)."""
    if GUARDS:
        fresh_guards()
    a = Side("a", ADDRS[0], tmp / f"{title}-a.db")
    b = (spawn or Side)("b", ADDRS[1], tmp / f"{title}-b.db")
    try:
        setup(a, b, n)  # (not timed: both stores are seeded before b serves)
        await a.start()
        await b.start()
        b_cpu = await b.cpu()
        profiles = Profiles() if PROFILE else None
        if profiles is not None:
            profiles.loop.enable()
        cpu = time.process_time()
        stats = await a.ae.sync_with("b", b.url)
        cpu = time.process_time() - cpu
        if profiles is not None:
            profiles.dump(PROFILE[0] / f"{title}-a.pstats")
        b_cpu = await b.cpu() - b_cpu
        cpu += b_cpu
        if SPLIT[0]:
            print(f"  (cpu: a {cpu - b_cpu:.3f}, b {b_cpu:.3f})")
    finally:
        await a.stop()
        await b.stop()
    with RecordStore.open(a.path) as sa, RecordStore.open(b.path) as sb:  # (as each side left it)
        names = set(sb.digests()) | set(sa.digests(peer="b"))
        agree = sa.digests_of(names) == sb.digests_of(names)
    return title, stats, agree, cpu


def missing(a: Seeded, b: Seeded, n: int) -> None:
    a.load(created(f"svc-{i}", home="a", location="b", now=1.0) for i in range(n))


def fetch(a: Seeded, b: Seeded, n: int) -> None:
    b.load(created(f"svc-{i}", home="b", location="a", now=1.0) for i in range(n))


def both_ways(a: Seeded, b: Seeded, n: int) -> None:
    records = [created(f"svc-{i}", home="a", location="b", now=1.0) for i in range(n)]
    a.load(records)
    b.load(records)
    a.update((f"svc-{i}" for i in range(0, n, 2)), 2.0, state=State.MIGRATING)
    b.update((f"svc-{i}" for i in range(1, n, 2)), 2.0, instance="127.0.3.41:31001")


def concurrent(a: Seeded, b: Seeded, n: int) -> None:
    records = [created(f"svc-{i}", home="a", location="b", now=1.0) for i in range(n)]
    a.load(records)
    b.load(records)
    a.update((f"svc-{i}" for i in range(n)), 2.0, location="a", instance="127.0.3.40:31002")
    b.update((f"svc-{i}" for i in range(n)), 2.0, instance="127.0.3.41:31003")


def in_sync(a: Seeded, b: Seeded, n: int) -> None:
    records = [created(f"svc-{i}", home="a", location="b", now=1.0) for i in range(n)]
    a.load(records)
    b.load(records)


def unshared(a: Seeded, b: Seeded, n: int) -> None:
    a.load(created(f"own-{i}", home="a", location="a", now=1.0) for i in range(n))
    records = [created(f"svc-{i}", home="a", location="b", now=1.0) for i in range(100)]
    a.load(records)
    b.load(records)
    a.update((f"svc-{i}" for i in range(100)), 2.0, state=State.MIGRATING)


def goal_text(scenario: str, seconds: float, n: int) -> str:
    if scenario == "unshared":
        return ""
    goal = GOAL_IN_SYNC_S if scenario == "in-sync" else GOAL_DIFFERING_S
    if n != 10_000:
        return f"<= {goal:g} s at 10,000 (run with --records 10000)"
    return f"<= {goal:g} s: {'met' if seconds <= goal else 'NOT met'}"


SCENARIOS: tuple[tuple[str, Setup], ...] = (
    ("missing", missing), ("fetch", fetch), ("both-ways", both_ways), ("concurrent", concurrent),
    ("in-sync", in_sync), ("unshared", unshared))


def mode_text(one_process: bool) -> str:
    return ("one process (both peers on one event loop and GIL: wall = both sides' CPU)" if one_process
            else "two processes (b serves from its own process, as a second agent)")


async def main(n: int, runs: int, signed: bool, plain_http: bool = False, one_process: bool = False) -> None:
    logging.getLogger("peer.records").setLevel(logging.ERROR)  # one warning per conflict is noise here
    print(f"anti-entropy, one sync_with round, {n} records, {mode_text(one_process)}, "
          f"{IN_FLIGHT[0]} request(s) in flight, loopback, "
          f"SQLite WAL synchronous=FULL"
          f"{', signed versions (identity on)' if signed else ''}"
          f"{', plain HTTP (every stamp checked)' if signed and plain_http else ', mTLS' if signed else ''}; "
          f"{machine_line()}")
    print(f"{'scenario':<11} {'seconds':>8} {'cpu s':>6} {'reqs':>5} {'differ':>7} {'pushed':>7} {'back':>6} {'fetched':>7} "
          f"{'conflicts':>9} {'KB sent':>8} {'KB recv':>8} {'B/diff':>7}  agree  goal (issue 16, at 10,000)")
    walls: dict[str, list[float]] = {title: [] for title, _ in SCENARIOS}
    cpus: dict[str, list[float]] = {title: [] for title, _ in SCENARIOS}
    with tempfile.TemporaryDirectory(prefix="roam-bench-ae-") as tmp:
        if signed:
            make_guards(Path(tmp), tls=not plain_http)
        spawn = None if one_process else functools.partial(ProcessSide, tmp=Path(tmp), signed=signed,
                                                               plain_http=plain_http)
        for run in range(runs):
            for title, setup in SCENARIOS:
                name, s, agree, cpu = await scenario(f"{title}-{run}", n, Path(tmp), setup, spawn)
                name = title
                walls[title].append(s.seconds)
                cpus[title].append(cpu)
                total = s.bytes_sent + s.bytes_received
                per = total / s.differing if s.differing else float("nan")
                print(f"{name:<11} {s.seconds:8.3f} {cpu:6.3f} {s.requests:5d} {s.differing:7d} {s.pushed:7d} "
                      f"{s.returned:6d} {s.fetched:7d} {s.conflicts:9d} {s.bytes_sent / 1024:8.1f} "
                      f"{s.bytes_received / 1024:8.1f} {per:7.0f}  {agree!s:<5}  {goal_text(name, s.seconds, n)}")
    if runs > 1:
        print(f"\n{runs} runs, {mode_text(one_process)}, seconds: median (min-max); {machine_line()}")
        for title, _ in SCENARIOS:
            wall, used = Spread.of(walls[title]), Spread.of(cpus[title])
            print(f"{title:<11} wall {wall.median:.3f} ({wall.lo:.3f}-{wall.hi:.3f})  cpu {used.median:.3f} "
                  f"({used.lo:.3f}-{used.hi:.3f})  {goal_text(title, wall.median, n)}")
    for title, _ in SCENARIOS:
        if title == "unshared":
            continue
        wall, used = Spread.of(walls[title]), Spread.of(cpus[title])
        goal = GOAL_IN_SYNC_S if title == "in-sync" else GOAL_DIFFERING_S
        record_goal(f"anti-entropy, {n:,} records, {title}{', signed' if signed else ''}"
                    f"{', plain HTTP' if signed and plain_http else ''}{', one process' if one_process else ''}", median=wall.median * 1000, lo=wall.lo * 1000,
                    hi=wall.hi * 1000, unit="ms", goal=f"<= {goal * 1000:g} ms at 10,000",
                    met=wall.median <= goal if n == 10_000 else None, source="bench/antientropy.py",
                    note=f"CPU of both sides {used.median * 1000:.0f} ms ({used.lo * 1000:.0f}-{used.hi * 1000:.0f}), "
                         f"{runs} runs, {'one process' if one_process else 'b in its own process'}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", type=int, default=10_000)
    parser.add_argument("--addr", nargs=2, default=ADDRS, help="the two peers' loopback addresses")
    parser.add_argument("--runs", type=int, default=3, help="rounds of every scenario (medians printed at the end)")
    parser.add_argument("--signed", action="store_true", help="identity on: signed versions, mTLS, checked on receipt")
    parser.add_argument("--plain-http", action="store_true", help="with --signed: no TLS, so every stamp is checked")
    parser.add_argument("--one-process", action="store_true",
                        help="both peers in this process (one event loop and GIL) instead of b in its own")
    parser.add_argument("--in-flight", type=int, default=IN_FLIGHT[0],
                        help="push/fetch requests of a round under way at once (1: one after the other)")
    parser.add_argument("--profile", type=Path, metavar="DIR",
                        help="write each side's cProfile of each round to DIR (SCENARIO-RUN-a/b.pstats)")
    parser.add_argument("--split-cpu", action="store_true", help="print each side's CPU of each round too")
    parser.add_argument("--only", nargs="+", choices=[t for t, _ in SCENARIOS], help="run these scenarios alone")
    parser.add_argument("--push-kb", type=int, help="push batches of about this many KB (AntiEntropy's default if not given)")
    parser.add_argument("--serve", metavar="SIDE", help=argparse.SUPPRESS)  # (b's process: ProcessSide)
    parser.add_argument("--db", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--tmp", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    heap.fix_mmap_threshold()  # both sides' allocations cost what they cost in an agent (peer.agent)
    ADDRS[:] = args.addr
    IN_FLIGHT[0] = args.in_flight
    SPLIT[0] = args.split_cpu
    if args.only:
        SCENARIOS = tuple((t, f) for t, f in SCENARIOS if t in args.only)
    PUSH_KB[:] = [args.push_kb] if args.push_kb else []
    if args.profile:
        args.profile.mkdir(parents=True, exist_ok=True)
        PROFILE.append(args.profile.resolve())
    if args.serve:
        run = serve(args.serve, args.db, args.tmp, signed=args.signed, plain_http=args.plain_http)
    else:
        run = main(args.records, args.runs, args.signed, args.plain_http, args.one_process)
    try:
        import uvloop
        uvloop.run(run)
    except ImportError:
        asyncio.run(run)
