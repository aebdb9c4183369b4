"""Deploy time (request to ready) of the process driver with the sample classifier.

The paper's Table I reports Deploy ~9.5 s for one nginx pod plus its Service on Minikube; this
measures the same stage for roam's embedded process driver: `deploy()` until `wait_ready()`
returns (the HTTP health check answered 2xx), then `delete()` (timed apart). Each run is
preceded by a cold start of the same command without the agent (`bench/coldstart.py`: spawn
to first 200, polled every ms), so the driver's own overhead shows as a ratio to it.

    .venv/bin/python bench/deploy.py [--runs 20] [--host 127.0.4.10] [--json]
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.coldstart import cold_start  # noqa: E402
from peer.drivers.descriptor import ServiceDescriptor
from peer.drivers.process import ProcessDriver
from peer.samples.running import run

PAPER_DEPLOY_S = 9.5


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


async def measure(*, runs: int, host: str) -> dict[str, object]:
    descriptor = ServiceDescriptor.from_obj({
        "name": "classifier", "port": 8080, "health": {"path": "/healthz"},
        "command": [sys.executable, "-m", "peer.samples.classifier", "--host", "{host}", "--port", "{port}"],
    })
    deploys: list[float] = []
    deletes: list[float] = []
    colds: list[float] = []
    with tempfile.TemporaryDirectory(prefix="roam-bench-") as data_dir:
        driver = ProcessDriver(data_dir=Path(data_dir), host=host, port_range=range(41200, 41250), cluster="bench")
        await driver.start()
        try:
            for i in range(runs):
                colds.append(cold_start(descriptor.command, host=host, port=41300 + i))
                began = time.perf_counter()
                await driver.deploy(descriptor, home="bench")
                await driver.wait_ready(descriptor.name, timeout=60)
                deploys.append(time.perf_counter() - began)
                began = time.perf_counter()
                await driver.delete(descriptor.name)
                deletes.append(time.perf_counter() - began)
        finally:
            for inst in await driver.list():
                await driver.delete(inst.name)
            await driver.stop()
    return {
        "runs": runs,
        "deploy_median_s": round(statistics.median(deploys), 3),
        "deploy_p95_s": round(percentile(deploys, 0.95), 3),
        "deploy_min_s": round(min(deploys), 3),
        "deploy_max_s": round(max(deploys), 3),
        "delete_median_s": round(statistics.median(deletes), 3),
        "cold_median_s": round(statistics.median(colds), 3),
        "cold_min_s": round(min(colds), 3),
        "cold_max_s": round(max(colds), 3),
        "deploy_over_cold": round(statistics.median(deploys) / statistics.median(colds), 2),
        "paper_deploy_s": PAPER_DEPLOY_S,
        "speedup_vs_paper": round(PAPER_DEPLOY_S / statistics.median(deploys), 1),
    }


async def main(args: argparse.Namespace) -> None:
    result = await measure(runs=args.runs, host=args.host)
    if args.json:
        print(json.dumps(result))
        return
    print(f"process driver, sample classifier, {result['runs']} runs (request -> ready):")
    print(f"  deploy median {result['deploy_median_s']} s, p95 {result['deploy_p95_s']} s "
          f"(min {result['deploy_min_s']}, max {result['deploy_max_s']})")
    print(f"  cold start of the same command without the agent (spawn -> first 200): median "
          f"{result['cold_median_s']} s (min {result['cold_min_s']}, max {result['cold_max_s']}); "
          f"deploy / cold start = {result['deploy_over_cold']}")
    print(f"  delete median {result['delete_median_s']} s")
    print(f"  paper (Kubernetes/Minikube, one nginx pod + Service): ~{PAPER_DEPLOY_S} s "
          f"-> {result['speedup_vs_paper']}x faster")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--host", default="127.0.4.10")
    parser.add_argument("--json", action="store_true")
    run(main(parser.parse_args()))
