"""The floor a migration is measured against: the cold start of the service's own command.

Spawn the command exactly as an operator would (no agent, no socket activation: it binds its
own port), then ask `GET <health path>` every millisecond over a raw socket until the first
200; the figure is spawn to that answer. The issue's goal is stated as a ratio to it
("planned migration at most 1.3 times the cold start of the same command"), so every
benchmark that reports a migration or a deploy measures this in the same run, beside it.

    .venv/bin/python bench/coldstart.py [--runs 10] [--host 127.0.3.80]
"""
from __future__ import annotations

import argparse
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CLASSIFIER_COMMAND = (sys.executable, "-m", "peer.samples.classifier", "--host", "{host}", "--port", "{port}")
POLL = 0.001


def _answers_200(host: str, port: int, path: str) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1.0) as sock:
            sock.sendall(f"GET {path} HTTP/1.0\r\nHost: {host}\r\n\r\n".encode())
            return sock.recv(64).startswith((b"HTTP/1.0 200", b"HTTP/1.1 200"))
    except OSError:
        return False


def cold_start(command: Sequence[str], *, host: str, port: int, path: str = "/healthz",
               timeout: float = 30.0) -> float:
    """Seconds from spawn to the first 200 on `path`; the process is killed afterwards."""
    argv = [arg.replace("{host}", host).replace("{port}", str(port)) for arg in command]
    began = time.perf_counter()
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, cwd=REPO)
    try:
        while not _answers_200(host, port, path):
            if proc.poll() is not None:
                raise RuntimeError(f"{argv!r} exited with {proc.returncode} before answering")
            if time.perf_counter() - began > timeout:
                raise TimeoutError(f"{argv!r} did not answer within {timeout:.0f}s")
            time.sleep(POLL)
        return time.perf_counter() - began
    finally:
        proc.kill()
        proc.wait()


def cold_starts(runs: int, *, host: str, port: int, command: Sequence[str] = CLASSIFIER_COMMAND) -> list[float]:
    """`runs` cold starts in milliseconds (one port per run: no TIME_WAIT or reuse effects)."""
    return [cold_start(command, host=host, port=port + i) * 1000.0 for i in range(runs)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--host", default="127.0.3.80")
    parser.add_argument("--port", type=int, default=41500)
    args = parser.parse_args()
    sys.path.insert(0, str(REPO))
    from bench.common import Spread

    s = Spread.of(cold_starts(args.runs, host=args.host, port=args.port))
    print(f"cold start of the sample classifier (spawn -> first 200), {s.n} runs: median {s.median:.0f} ms "
          f"(min {s.lo:.0f}, max {s.hi:.0f})")


if __name__ == "__main__":
    main()
