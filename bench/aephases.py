"""Where one anti-entropy round's time goes, per phase (issue 16): bench/antientropy.py's
scenarios, one round each, with a stack of phase timers around the functions that do each part.

  wire decode        records (and the outer msgpack body) received from the peer, checked
  signature checks   RecordGuard.refused and its pre-checks (`--signed`)
  stored decode      our own rows rebuilt as Records
  merge              merge.place/reconcile (their reads of our rows: stored decode)
  row encode         a merged version packed, hashed and given its parties for its row
  sqlite             statements and commits of the store (what the phases above leave of it)
  wire encode        the outer msgpack body of requests and replies
  rest               HTTP, HMAC, the round's own bookkeeping, other coroutines

Timers nest (entering a phase pauses the one it is called from) and are kept per thread, so a
phase's figure is its own time, whichever thread ran it; with work in threads the phases can add
up to more than the wall time. `loop stall` is the longest the event loop did not run a 1 ms
ticker during the round. A timer costs about a microsecond a call: the round runs slower here
than in bench/antientropy.py.

Usage: .venv/bin/python bench/aephases.py [--records 10000] [--runs 3] [--signed [--plain-http]] [--addr A B] [SCENARIO...]
(phases: medians over the runs; round and stall: median (min-max))
"""
from __future__ import annotations

import argparse
import asyncio
import functools
import logging
import statistics
import sys
import tempfile
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import bench.antientropy as ae  # noqa: E402
from bench.common import Spread  # noqa: E402
from peer.peering import client  # noqa: E402
from peer.records import messages, store  # noqa: E402
from peer.trust import authorship  # noqa: E402

PHASES = ("wire decode", "signature checks", "stored decode", "merge", "row encode", "sqlite", "wire encode")


class PhaseClock:
    """Own time per phase, per thread (see the module docstring)."""

    def __init__(self) -> None:
        self.spent: dict[str, float] = defaultdict(float)
        self._local = threading.local()

    def _stack(self) -> list[list[Any]]:
        stack: list[list[Any]] | None = getattr(self._local, "stack", None)
        if stack is None:
            stack = self._local.stack = []
        return stack

    def wrap(self, phase: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(fn)
        def timed(*args: Any, **kwargs: Any) -> Any:
            stack = self._stack()
            now = time.perf_counter()
            if stack:
                self.spent[stack[-1][0]] += now - stack[-1][1]
            stack.append([phase, now])
            try:
                return fn(*args, **kwargs)
            finally:
                end = time.perf_counter()
                top = stack.pop()
                self.spent[top[0]] += end - top[1]
                if stack:
                    stack[-1][1] = end
        return timed


def instrument(clock: PhaseClock) -> None:
    """Wrap the functions of each phase where their callers look them up."""
    messages._records = clock.wrap("wire decode", messages._records)
    client.decode = clock.wrap("wire decode", client.decode)
    client.encode = clock.wrap("wire encode", client.encode)
    store.place = clock.wrap("merge", store.place)
    rs = store.RecordStore
    rs._decode_row = staticmethod(clock.wrap("stored decode", rs._decode_row))  # type: ignore[method-assign]
    rs._row = staticmethod(clock.wrap("row encode", rs._row))  # type: ignore[method-assign]
    for name in ("apply_remote_many", "digests", "digests_of", "packed_many", "ack_tombstones",
                 "tombstone_digests", "get_many"):
        setattr(rs, name, clock.wrap("sqlite", getattr(rs, name)))
    guard = authorship.RecordGuard
    for name in ("refused", "prepare", "audit"):
        if hasattr(guard, name):
            setattr(guard, name, clock.wrap("signature checks", getattr(guard, name)))


async def ticker(stalls: list[float], stop: asyncio.Event) -> None:
    last = time.perf_counter()
    while not stop.is_set():
        await asyncio.sleep(0.001)
        now = time.perf_counter()
        stalls.append(now - last - 0.001)
        last = now


async def one(title: str, n: int, tmp: Path, clock: PhaseClock) -> tuple[float, dict[str, float], float]:
    """One round: its wall time, the time of each phase and the loop's longest stall (s)."""
    if ae.GUARDS:
        ae.fresh_guards()
    a = ae.Side("a", ae.ADDRS[0], tmp / f"{title}-a.db")
    b = ae.Side("b", ae.ADDRS[1], tmp / f"{title}-b.db")
    await a.start()
    await b.start()
    try:
        dict(ae.SCENARIOS)[title](a, b, n)
        clock.spent.clear()
        stalls: list[float] = []
        stop = asyncio.Event()
        tick = asyncio.ensure_future(ticker(stalls, stop))
        stats = await a.ae.sync_with("b", b.url)
        stop.set()
        await tick
    finally:
        await a.stop()
        await b.stop()
    spent = {p: clock.spent.get(p, 0.0) for p in PHASES}
    spent["rest"] = max(stats.seconds - sum(spent.values()), 0.0)
    return stats.seconds, spent, max(stalls, default=0.0)


async def main(n: int, titles: list[str], signed: bool, runs: int, plain_http: bool = False) -> None:
    logging.getLogger("peer.records").setLevel(logging.ERROR)
    clock = PhaseClock()
    instrument(clock)
    print(f"anti-entropy phases (ms), {n} records{', signed' if signed else ''}"
          f"{', plain HTTP' if signed and plain_http else ', mTLS' if signed else ''}; {ae.machine_line()}")
    with tempfile.TemporaryDirectory(prefix="roam-bench-aephases-") as tmp:
        if signed:
            ae.make_guards(Path(tmp), tls=not plain_http)
        for title in titles:
            results = [await one(f"{title}", n, Path(tmp) / str(run), clock) for run in range(runs)]
            wall = Spread.of([r[0] for r in results])
            parts = "  ".join(f"{p} {statistics.median(r[1][p] for r in results) * 1000:.0f}" for p in (*PHASES, "rest"))
            stall = Spread.of([r[2] for r in results])
            print(f"{title:<11} round {wall.median * 1000:5.0f} ms ({wall.lo * 1000:.0f}-{wall.hi * 1000:.0f}): {parts}"
                  f"  | loop stall {stall.median * 1000:.0f} ms ({stall.lo * 1000:.0f}-{stall.hi * 1000:.0f})")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("scenarios", nargs="*", default=[t for t, _ in ae.SCENARIOS])
    parser.add_argument("--records", type=int, default=10_000)
    parser.add_argument("--addr", nargs=2, default=ae.ADDRS)
    parser.add_argument("--signed", action="store_true")
    parser.add_argument("--plain-http", action="store_true", help="with --signed: no TLS, every stamp checked")
    parser.add_argument("--runs", type=int, default=3, help="rounds per scenario (medians printed)")
    args = parser.parse_args()
    ae.ADDRS[:] = args.addr
    try:  # as bench/antientropy.py
        import uvloop
        uvloop.run(main(args.records, args.scenarios, args.signed, args.runs, args.plain_http))
    except ImportError:
        asyncio.run(main(args.records, args.scenarios, args.signed, args.runs, args.plain_http))
