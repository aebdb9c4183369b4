"""Sample stream source (a camera or sensor stand-in) that POSTs frames to a classifier URL.

`python -m peer.samples.stream http://HC:PORT/classify --rate 10 [--count N | --duration S]`

Open loop: a frame leaves every 1/rate seconds whether or not earlier ones were answered, so
a stall during a reroute shows up as failures or latency instead of being hidden. Every
non-2xx answer and every transport error counts as failed. Prints one JSON line per second
(cumulative) and a final summary, also on SIGTERM/SIGINT.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import random
import signal
import sys
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

import aiohttp
from aiohttp import web

from peer.samples.running import inherited_socket, run
from peer.runtime.supervision import Supervisor


@dataclass
class StreamStats:
    sent: int = 0
    ok: int = 0
    failed: int = 0
    by_cluster: Counter[str] = field(default_factory=Counter)
    latencies_ms: list[float] = field(default_factory=list)

    def summary(self) -> dict[str, object]:
        lat = sorted(self.latencies_ms)
        return {
            "sent": self.sent, "ok": self.ok, "failed": self.failed, "clusters": dict(self.by_cluster),
            "p50_ms": round(lat[len(lat) // 2], 2) if lat else None,
            "max_ms": round(lat[-1], 2) if lat else None,
        }


async def _send(session: aiohttp.ClientSession, url: str, frame: bytes, stats: StreamStats, timeout: float) -> None:
    began = time.perf_counter()
    try:
        async with session.post(url, data=frame, timeout=aiohttp.ClientTimeout(total=timeout)) as resp:
            body = await resp.json(content_type=None) if resp.status < 300 else None
            if 200 <= resp.status < 300:
                stats.ok += 1
                stats.latencies_ms.append((time.perf_counter() - began) * 1000)
                stats.by_cluster[str(body.get("cluster", "")) if isinstance(body, dict) else ""] += 1
                return
    except (TimeoutError, aiohttp.ClientError, ValueError):
        pass
    stats.failed += 1


async def run_stream(
    url: str,
    *,
    rate: float,
    frame_bytes: int = 8192,
    count: int | None = None,
    duration: float | None = None,
    timeout: float = 2.0,
    stop: asyncio.Event | None = None,
    report_every: float | None = None,
    stats: StreamStats | None = None,
) -> StreamStats:
    """Send frames at `rate` per second until `count`, `duration` or `stop`; wait for answers."""
    stop = stop or asyncio.Event()
    stats = stats if stats is not None else StreamStats()
    rng = random.Random(0)
    pending = Supervisor("stream")  # frames in flight: every one is awaited before the stats
    began = time.monotonic()
    next_report = began + (report_every or 0)
    async with aiohttp.ClientSession() as session:
        while not stop.is_set():
            if count is not None and stats.sent >= count:
                break
            now = time.monotonic()
            if duration is not None and now - began >= duration:
                break
            pending.spawn(_send(session, url, rng.randbytes(frame_bytes), stats, timeout), name="frame")
            stats.sent += 1
            if report_every and now >= next_report:
                print(json.dumps(stats.summary()), flush=True)
                next_report = now + report_every
            # Fixed schedule: the n-th frame leaves at began + n/rate, however slow the answers.
            delay = began + stats.sent / rate - time.monotonic()
            if delay > 0:
                try:
                    await asyncio.wait_for(stop.wait(), delay)
                except TimeoutError:
                    pass
        if pending:
            await asyncio.wait(pending.tasks)
    return stats


async def _status_server(host: str, port: int, stats: StreamStats) -> web.AppRunner:
    """When run as a roam service: /healthz for readiness and / with the running counts."""
    async def status(request: web.Request) -> web.Response:
        return web.json_response(stats.summary())

    async def healthz(request: web.Request) -> web.Response:
        return web.json_response({"ok": True})

    app = web.Application()
    app.router.add_get("/", status)
    app.router.add_get("/healthz", healthz)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    sock = inherited_socket()
    await (web.TCPSite(runner, host, port) if sock is None else web.SockSite(runner, sock)).start()
    return runner


async def _main(args: argparse.Namespace) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    stats = StreamStats()
    runner = await _status_server(args.host, args.port, stats) if args.port else None
    try:
        stats = await run_stream(
            args.url, rate=args.rate, frame_bytes=args.frame_bytes, count=args.count, duration=args.duration,
            timeout=args.timeout, stop=stop, report_every=args.report_every, stats=stats,
        )
    finally:
        if runner is not None:
            await runner.cleanup()
    print(json.dumps({"final": True, **stats.summary()}), flush=True)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m peer.samples.stream", description=__doc__.split("\n")[0])
    parser.add_argument("url", help="classifier URL, e.g. http://127.0.0.11:30001/classify")
    parser.add_argument("--rate", type=float, default=10.0, help="frames per second")
    parser.add_argument("--frame-bytes", type=int, default=8192)
    parser.add_argument("--count", type=int, help="stop after this many frames")
    parser.add_argument("--duration", type=float, help="stop after this many seconds")
    parser.add_argument("--timeout", type=float, default=2.0, help="per-frame timeout, seconds")
    parser.add_argument("--report-every", type=float, default=1.0, help="progress line period, 0 = none")
    parser.add_argument("--host", default="127.0.0.1", help="address of the status server (with --port)")
    parser.add_argument("--port", type=int, help="serve /healthz and / (counts) here, as a roam service")
    args = parser.parse_args(argv)
    if args.rate <= 0 or args.frame_bytes < 0:
        parser.error("--rate must be > 0 and --frame-bytes >= 0")
    run(_main(args))
    sys.exit(0)


if __name__ == "__main__":
    main()
