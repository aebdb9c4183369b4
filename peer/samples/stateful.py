"""Sample stateful service: the classifier keeping per-stream counters, with a state hook.

Run as `roam-sample stateful --host H --port P` (or `python -m peer.samples.stateful`). Its
descriptor says `"state": {"path": "/roam/state", "interval": 1.0}`; roam copies the counters
to every new copy before it takes traffic, so a client can check that a migration kept them
exactly (`total` equals the classify requests it saw answered).

    GET  /classify?stream=S&seed=N  classify a generated frame; count it under stream S
    GET  /counters                   {"version", "total", "streams": {S: {label: n}}, ...}
    GET  /roam/state                 the state (JSON bytes) with ETag "<version>"; 304 on If-None-Match
    PUT  /roam/state                 install a state read from another copy; 204
    GET  /, /healthz                 as the classifier

`--pad BYTES` adds that many bytes of ballast to the state (benchmarks of state size).
The version is an integer that grows by one per counted request; a PUT takes the version of
the state it installs.
"""
from __future__ import annotations

import argparse
import json
import os
import random
from collections.abc import Sequence
from typing import Any

from aiohttp import web

from peer.samples.classifier import Classifier, classify
from peer.samples.running import run

STATE_PATH = "/roam/state"
FRAME_BYTES = 512  # a small frame: the sample must keep up with 200 req/s on a shared core
MAX_BODY = 32 * 1024 * 1024


class Counters:
    """The service's whole state: what it would lose in a stateless migration."""

    def __init__(self, *, pad: int = 0) -> None:
        self.version = 0
        self.total = 0
        self.streams: dict[str, dict[str, int]] = {}
        self.pad = "x" * pad

    def count(self, stream: str, label: str) -> int:
        per = self.streams.setdefault(stream, {})
        per[label] = per.get(label, 0) + 1
        self.total += 1
        self.version += 1
        return per[label]

    def etag(self) -> str:
        return f'"{self.version}"'

    def to_bytes(self) -> bytes:
        return json.dumps({"version": self.version, "total": self.total, "streams": self.streams,
                           "pad": self.pad}, separators=(",", ":")).encode()

    def install(self, body: bytes) -> None:
        obj = json.loads(body)
        if not isinstance(obj, dict) or not isinstance(obj.get("version"), int) or not isinstance(obj.get("total"), int):
            raise ValueError("expected {version: int, total: int, streams: {...}}")
        streams = obj.get("streams")
        if not isinstance(streams, dict):
            raise ValueError("streams: expected an object")
        self.version, self.total = obj["version"], obj["total"]
        self.streams = {str(k): {str(label): int(n) for label, n in v.items()} for k, v in streams.items()}
        self.pad = str(obj.get("pad", ""))

    def view(self) -> dict[str, Any]:
        return {"version": self.version, "total": self.total, "streams": self.streams, "state_bytes": len(self.to_bytes())}


class StatefulClassifier(Classifier):
    def __init__(self, *, service: str, cluster: str, pad: int = 0) -> None:
        super().__init__(service=service, cluster=cluster)
        self.state = Counters(pad=pad)

    async def classify_counted(self, request: web.Request) -> web.Response:
        stream = request.query.get("stream", "default")[:64]
        try:
            seed = int(request.query.get("seed", "0"))
        except ValueError:
            return web.json_response({"error": "seed: must be an integer"}, status=400)
        label, score = classify(random.Random(seed).randbytes(FRAME_BYTES))
        count = self.state.count(stream, label)
        return web.json_response({**self._who(), "label": label, "score": score, "stream": stream,
                                  "count": count, "version": self.state.version})

    async def counters(self, request: web.Request) -> web.Response:
        return web.json_response({**self._who(), **self.state.view()})

    async def get_state(self, request: web.Request) -> web.Response:
        etag = self.state.etag()
        if request.headers.get("If-None-Match") == etag:
            return web.Response(status=304, headers={"ETag": etag})
        return web.Response(body=self.state.to_bytes(), content_type="application/octet-stream",
                            headers={"ETag": etag})

    async def put_state(self, request: web.Request) -> web.Response:
        try:
            self.state.install(await request.read())
        except (ValueError, TypeError, AttributeError) as exc:
            return web.json_response({"error": f"state: {exc}"}, status=400)
        return web.Response(status=204, headers={"ETag": self.state.etag()})

    def app(self) -> web.Application:
        app = web.Application(client_max_size=MAX_BODY)
        app.router.add_get("/", self.index)
        app.router.add_get("/healthz", self.healthz)
        app.router.add_get("/classify", self.classify_counted)
        app.router.add_get("/counters", self.counters)
        app.router.add_get(STATE_PATH, self.get_state)
        app.router.add_put(STATE_PATH, self.put_state)
        return app


def main(argv: Sequence[str] | None = None) -> None:
    from peer.samples import classifier

    parser = argparse.ArgumentParser(prog="python -m peer.samples.stateful", description=__doc__.split("\n")[0])
    parser.add_argument("--host", default=os.environ.get("ROAM_HOST", "127.0.0.1"))
    parser.add_argument("--port", type=int, default=int(os.environ.get("ROAM_PORT", "8080")))
    parser.add_argument("--cluster", default=os.environ.get("ROAM_CLUSTER", ""))
    parser.add_argument("--service", default=os.environ.get("ROAM_SERVICE", "classifier"))
    parser.add_argument("--pad", type=int, default=0, help="bytes of ballast in the state")
    args = parser.parse_args(argv)
    handlers = StatefulClassifier(service=args.service, cluster=args.cluster, pad=args.pad)
    run(classifier.serve(host=args.host, port=args.port, service=args.service, cluster=args.cluster,
                         handlers=handlers))


if __name__ == "__main__":
    main()
