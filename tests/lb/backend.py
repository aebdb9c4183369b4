"""A tiny HTTP backend run as a real subprocess: answers every request with its own name.

`Backend` starts one and waits until it listens.

`GET /slow?ms=N` answers after N ms (to have requests in flight while a server drains).
Run: python -m tests.lb.backend --host 127.0.2.10 --port 21000 --name a
"""
from __future__ import annotations

import argparse
import asyncio
import signal
import socket
import subprocess
import sys
from pathlib import Path

from aiohttp import web

from peer.runtime.waiting import wait_until_sync

REPO = Path(__file__).resolve().parents[2]
BACKEND_PORT = 21000


def make_app(name: str) -> web.Application:
    async def hello(request: web.Request) -> web.Response:
        ms = int(request.query.get("ms", "0"))
        if ms:
            await asyncio.sleep(ms / 1000)
        return web.Response(text=name)

    app = web.Application()
    app.router.add_route("GET", "/{tail:.*}", hello)
    return app


def port_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.2):
            return True
    except OSError:
        return False


class Backend:
    """One `tests.lb.backend` subprocess answering with its name."""

    def __init__(self, host: str, name: str, port: int = BACKEND_PORT) -> None:
        self.host, self.port, self.name = host, port, name
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.lb.backend", "--host", host, "--port", str(port),
             "--name", name], cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_until_sync(lambda: self.proc.poll() is None and port_open(host, port), timeout=15,
                        what=f"backend {name} on {host}:{port}")

    @property
    def addr(self) -> tuple[str, int]:
        return (self.host, self.port)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.kill()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--host", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--name", required=True)
    args = parser.parse_args()
    web.run_app(make_app(args.name), host=args.host, port=args.port, print=None,
                access_log=None, handle_signals=True)


if __name__ == "__main__":
    main()
