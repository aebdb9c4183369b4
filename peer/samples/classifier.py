"""Sample stateless service: a tiny "frame classifier" that says which cluster answered.

Run as `python -m peer.samples.classifier --host H --port P --cluster NAME` (the process
driver's command is `[python, -m, peer.samples.classifier, --host, {host}, --port, {port}]`
and the cluster comes from ROAM_CLUSTER). Every answer names the cluster and pid, so a
client watching answers sees a migration happen.

    GET  /          {"service", "cluster", "pid"}
    GET  /healthz   200 "ok"
    GET  /classify  classify a generated frame (?seed=N)
    POST /classify  classify the posted bytes (up to 1 MiB)
"""
from __future__ import annotations

import argparse
import asyncio
import os
import random
import signal
import time
from collections.abc import Sequence

from aiohttp import web

from peer.samples.running import inherited_socket, run

LABELS = ("person", "bicycle", "car", "dog", "cat", "tree", "sign", "empty")
FRAME_BYTES = 8192
_KERNEL_SHIFT = 4  # the 1-4-6-4-1 kernel sums to 16


def classify(frame: bytes) -> tuple[str, float]:
    """A 5-tap smoothing convolution, then the fullest bin of an 8-bin histogram: a few ms."""
    samples = frame[:FRAME_BYTES]
    hist = [0] * len(LABELS)
    for i in range(len(samples) - 4):
        value = (samples[i] + 4 * samples[i + 1] + 6 * samples[i + 2] + 4 * samples[i + 3] + samples[i + 4])
        hist[(value >> _KERNEL_SHIFT) >> 5] += 1
    total = sum(hist)
    if total == 0:
        return "empty", 1.0
    best = max(range(len(hist)), key=hist.__getitem__)
    return LABELS[best], round(hist[best] / total, 4)


class Classifier:
    """The HTTP handlers; one instance per process."""

    def __init__(self, *, service: str, cluster: str) -> None:
        self.service = service
        self.cluster = cluster
        self.pid = os.getpid()
        self.served = 0

    def _who(self) -> dict[str, object]:
        return {"service": self.service, "cluster": self.cluster, "pid": self.pid}

    async def index(self, request: web.Request) -> web.Response:
        return web.json_response(self._who())

    async def healthz(self, request: web.Request) -> web.Response:
        return web.Response(text="ok")

    async def classify(self, request: web.Request) -> web.Response:
        if request.method == "POST":
            frame = await request.read()
        else:
            try:
                seed = int(request.query.get("seed", "0"))
            except ValueError:
                return web.json_response({"error": "seed: must be an integer"}, status=400)
            frame = random.Random(seed).randbytes(FRAME_BYTES)
        began = time.perf_counter()
        label, score = classify(frame)
        self.served += 1
        return web.json_response({
            **self._who(), "label": label, "score": score, "bytes": len(frame),
            "ms": round((time.perf_counter() - began) * 1000, 3),
        })

    def app(self) -> web.Application:
        app = web.Application(client_max_size=1024 * 1024)
        app.router.add_get("/", self.index)
        app.router.add_get("/healthz", self.healthz)
        app.router.add_route("GET", "/classify", self.classify)
        app.router.add_route("POST", "/classify", self.classify)
        return app


async def serve(*, host: str, port: int, service: str, cluster: str, handlers: Classifier | None = None) -> None:
    """Serve until SIGTERM/SIGINT, then finish in-flight requests and exit."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    app = (handlers or Classifier(service=service, cluster=cluster)).app()
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    try:
        sock = inherited_socket()
        site: web.BaseSite = (web.TCPSite(runner, host, port, shutdown_timeout=2.0) if sock is None
                              else web.SockSite(runner, sock, shutdown_timeout=2.0))
        await site.start()
        how = "" if sock is None else ", socket from the agent"
        print(f"classifier {service} of cluster {cluster!r} listening on {host}:{port} (pid {os.getpid()}{how})",
              flush=True)
        await stop.wait()
        print("classifier: stopping", flush=True)
    finally:
        await runner.cleanup()


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m peer.samples.classifier", description=__doc__.split("\n")[0])
    parser.add_argument("--host", default=os.environ.get("ROAM_HOST", "127.0.0.1"))
    parser.add_argument("--port", type=int, default=int(os.environ.get("ROAM_PORT", "8080")))
    parser.add_argument("--cluster", default=os.environ.get("ROAM_CLUSTER", ""))
    parser.add_argument("--service", default=os.environ.get("ROAM_SERVICE", "classifier"))
    args = parser.parse_args(argv)
    run(serve(host=args.host, port=args.port, service=args.service, cluster=args.cluster))


if __name__ == "__main__":
    main()
