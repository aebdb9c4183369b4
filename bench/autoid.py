"""Automatic identity (issue 19): what mTLS by default costs a bare federation. Real agents on
127.0.101.11-13 (loopback), started with the CLI contract's flags and --peer-tls, against the same with
--no-peer-tls (the federation secret only), interleaved run by run.

  formed      first agent started -> every agent sees all three alive with their load
              (c1 founds the CA, c2 and c3 enrol with it first)
  migration   a classifier deployed at c1 and moved to c2: the Table I stages (ms)

Usage: .venv/bin/python bench/autoid.py [--runs 5]
"""
from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from chaos.agent_processes import run_services_as_root_if_needed  # noqa: E402
from tests.harness import federation  # noqa: E402

if (_AS_ROOT := run_services_as_root_if_needed()) is not None:  # the classifier is this checkout's sample
    print(f"bench: services run as root ($ROAM_RUN_AS=root): {_AS_ROOT}", file=sys.stderr)

ADDRS = {"c1": "127.0.101.11", "c2": "127.0.101.12", "c3": "127.0.101.13"}
CLASSIFIER = [sys.executable, "-m", "peer.samples.classifier", "--host", "{host}", "--port", "{port}"]
STAGES = ("pr", "replication", "wait", "reroute", "deploy")


async def one_run(auto: bool) -> dict[str, float]:
    extra = ["--no-auto-migrate", "--peer-tls" if auto else "--no-peer-tls"]
    with tempfile.TemporaryDirectory(prefix="roam-autoid-") as tmp:
        async with federation(Path(tmp)) as fed:
            started = time.monotonic()
            for name, addr in ADDRS.items():
                fed.add(name, addr, join=[] if name == "c1" else [ADDRS["c1"]], extra=extra).start()
            for name in ADDRS:
                await fed.wait_healthy(name, timeout=60)
            await fed.wait_formed(ADDRS, timeout=60)
            out = {"formed": (time.monotonic() - started) * 1000}
            await fed.call("c1", "POST", "/v1/services", {"name": "classifier", "port": 8080,
                                                           "health": {"path": "/healthz"}, "command": CLASSIFIER},
                           expect=201)
            moved = await fed.call("c1", "POST", "/v1/services/classifier/migrate", {"target": "c2"})
            assert moved["outcome"] == "succeeded", moved
            out.update({k: float(moved[k]) for k in STAGES if moved.get(k) is not None})
            return out


def show(label: str, runs: list[dict[str, float]]) -> None:
    parts = []
    for key in ("formed", *STAGES):
        xs = [r[key] for r in runs if key in r]
        if xs:
            parts.append(f"{key} {statistics.median(xs):.1f} ({min(xs):.1f}-{max(xs):.1f})")
    print(f"{label} (n={len(runs)}, ms, median (min-max)): " + ", ".join(parts))


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    results: dict[bool, list[dict[str, float]]] = {True: [], False: []}
    for _ in range(args.runs):
        for auto in (True, False):
            results[auto].append(await one_run(auto))
    show("automatic identity (mTLS)", results[True])
    show("--no-peer-tls (secret only)", results[False])


if __name__ == "__main__":
    asyncio.run(main())
