"""Issue 12, finding 9, on real agents: a client's condition is a 4xx that says what to do,
never a 5xx, and no request blocks for minutes.

- A full load balancer is a 409 that says how to raise `--lb-slots` (it was a 507).
- A service that never becomes ready is a 422 with its log tail after its `ready_timeout`
  (it was a 503 after 120 s), and nothing of it is left behind; a migration whose copy never
  becomes ready fails the same way and the service keeps serving where it was.
- A JSON endpoint refuses a body that does not say it is JSON with a 415.
"""
from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from peer.runtime.waiting import wait_until
from tests.harness import TOKEN, Federation, dump_logs, federation

pytestmark = pytest.mark.integration

A, B = "127.0.22.1", "127.0.22.2"
NO_AUTO = ["--no-auto-migrate"]


def classifier(name: str, **extra: Any) -> dict[str, Any]:
    return {"name": name, "port": 8080, "cpu": 0.1, "memory": "64Mi", "health": {"path": "/healthz"},
            "command": [sys.executable, "-m", "peer.samples.classifier", "--host", "{host}", "--port", "{port}"],
            **extra}


# Prints a line, then never listens: never ready.
NEVER_READY = [sys.executable, "-c",
               "import time; print('warming up: loading a model that never finishes', flush=True); time.sleep(3600)"]
# Serves at c1 only; anywhere else it never becomes ready (a migration target that cannot warm up).
ONLY_AT_C1 = [sys.executable, "-c", (
    "import os, runpy, sys, time\n"
    "if os.environ.get('ROAM_CLUSTER') != 'c1':\n"
    "    print('no model cache on', os.environ.get('ROAM_CLUSTER'), flush=True)\n"
    "    time.sleep(3600)\n"
    "sys.argv = ['classifier', '--host', sys.argv[1], '--port', sys.argv[2]]\n"
    "runpy.run_module('peer.samples.classifier', run_name='__main__')\n"), "{host}", "{port}"]


async def post(fed: Federation, agent: str, path: str, body: bytes | None, *,
               ctype: str | None = "application/json") -> tuple[int, Any]:
    """POST raw bytes with exactly the Content-Type given (None: no such header at all)."""
    assert fed.session is not None
    headers = {"Authorization": f"Bearer {TOKEN}"}
    if ctype is not None:
        headers["Content-Type"] = ctype
    async with fed.session.post(fed.agents[agent].api + path, data=body, headers=headers,
                                skip_auto_headers=() if ctype is not None else ("Content-Type",),
                                timeout=aiohttp.ClientTimeout(total=60)) as resp:
        return resp.status, await resp.json(content_type=None)


async def serves(fed: Federation, endpoint: str) -> bool:
    assert fed.session is not None
    try:
        async with fed.session.get(f"http://{endpoint}/", timeout=aiohttp.ClientTimeout(total=2)) as r:
            return r.status == 200
    except (aiohttp.ClientError, asyncio.TimeoutError):
        return False


def processes_of(service: str, cluster: str) -> list[int]:
    """Pids whose environment says they are `service` run by `cluster` (the process driver's mark)."""
    mark = {f"ROAM_SERVICE={service}".encode(), f"ROAM_CLUSTER={cluster}".encode()}
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            env = set(Path(f"/proc/{entry}/environ").read_bytes().split(b"\0"))
        except OSError:
            continue
        if mark <= env:
            found.append(int(entry))
    return found


async def nothing_left_of(fed: Federation, agent: str, name: str) -> None:
    """No record, no copy, no process, no state dir, no frontend: as if never asked."""
    await fed.call(agent, "GET", f"/v1/services/{name}", expect=404)
    assert name not in [i["name"] for i in await fed.get(agent, "/v1/instances")]
    data = fed.agents[agent].data_dir
    assert not (data / "services" / name).exists()
    slots = data / "lb" / "lb-slots.json"  # written once a first frontend was opened
    assert not slots.exists() or name not in json.loads(slots.read_text())["services"]
    assert processes_of(name, agent) == []


def test_finding_9_lb_slots_flag_is_validated_and_documented(tmp_path: Path) -> None:
    """`--lb-slots` is in --help and the README; a bad value is one line and exit 2, before
    anything starts."""
    def agent(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "peer.cli", "agent", "--name", "x", "--addr", A,
                               "--data-dir", str(tmp_path / "x"), *args], capture_output=True, text=True, timeout=60)

    assert "--lb-slots" in agent("--help").stdout
    assert "`--lb-slots`" in (Path(__file__).resolve().parents[2] / "README.md").read_text()
    for args, words in ((["--lb-slots", "0"], "between 1 and"), (["--lb-slots", "1001"], "between 1 and"),
                        (["--lb-slots", "20", "--lb-ports", "30000-30009"], "widen --lb-ports")):
        done = agent(*args)
        assert done.returncode == 2, (args, done.stderr)
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1 and "--lb-slots" in lines[0] and words in lines[0], (args, done.stderr)
    assert not (tmp_path / "x").exists()  # refused before anything was written


async def test_finding_9_no_free_lb_slot_is_a_409_that_says_how_to_raise_the_limit(tmp_path: Path) -> None:
    async with federation(tmp_path) as fed:
        try:
            c1 = fed.add("c1", A, extra=[*NO_AUTO, "--lb-slots", "1"])
            c1.start()
            await fed.wait_healthy("c1")
            one = await fed.call("c1", "POST", "/v1/services", classifier("one"), expect=201)
            status, body = await post(fed, "c1", "/v1/services", json.dumps(classifier("two")).encode())
            assert status == 409, body
            assert "--lb-slots" in body["error"] and "lb_slots" in body["error"], body
            print(f"full: {status} {body['error']}")
            await nothing_left_of(fed, "c1", "two")

            c1.stop()  # raise the limit: the agent restarts, `one` keeps its port
            c1.args[c1.args.index("--lb-slots") + 1] = "2"
            c1.start()
            await fed.wait_healthy("c1")
            two = await fed.call("c1", "POST", "/v1/services", classifier("two"), expect=201)
            assert two["endpoint"] != one["endpoint"]
            for endpoint in (one["endpoint"], two["endpoint"]):
                await wait_until(lambda e=endpoint: serves(fed, e), timeout=15, what=f"{endpoint} serves")
        except BaseException:
            print(dump_logs(fed))
            raise


async def test_finding_9_a_service_never_ready_is_a_422_with_its_log_tail_and_nothing_left(tmp_path: Path) -> None:
    async with federation(tmp_path) as fed:
        try:
            fed.add("c1", A).start()
            await fed.wait_healthy("c1")
            for value in (0, 0.5, 121, "30", True, [], {"s": 1}):
                status, body = await post(fed, "c1", "/v1/services",
                                          json.dumps(classifier("bad", ready_timeout=value)).encode())
                assert status == 422 and body.get("field") == "ready_timeout", (value, status, body)
            await nothing_left_of(fed, "c1", "bad")

            started = time.monotonic()
            slow = {**classifier("slow", ready_timeout=2), "command": NEVER_READY}
            status, body = await post(fed, "c1", "/v1/services", json.dumps(slow).encode())
            took = time.monotonic() - started
            print(f"never ready: {status} after {took:.2f}s: {body}")
            assert status == 422 and body["field"] == "ready_timeout", body
            assert "warming up: loading a model that never finishes" in body["error"], body
            assert took < 2 + 8, took
            await nothing_left_of(fed, "c1", "slow")

            # The name is free and the slot reusable: the same name with a working command deploys.
            record = await fed.call("c1", "POST", "/v1/services", classifier("slow", ready_timeout=2), expect=201)
            await wait_until(lambda: serves(fed, record["endpoint"]), timeout=15, what="slow serves")
        except BaseException:
            print(dump_logs(fed))
            raise


async def test_finding_9_a_migration_whose_copy_never_becomes_ready_fails_cleanly(tmp_path: Path) -> None:
    """The target removes a copy that is not ready within the service's ready_timeout; the
    migration fails (409) within seconds and the service never stopped serving at c1."""
    async with federation(tmp_path) as fed:
        try:
            fed.add("c1", A).start()
            fed.add("c2", B, join=[A]).start()
            for name in ("c1", "c2"):
                await fed.wait_healthy(name)

            async def pair() -> bool:
                return [m["status"] for m in await fed.get("c1", "/v1/members")] == ["alive", "alive"]

            await wait_until(pair, timeout=30, what="pair formed")
            desc = {**classifier("picky", ready_timeout=3, entries=1), "command": ONLY_AT_C1}
            record = await fed.call("c1", "POST", "/v1/services", desc, expect=201)
            endpoint = record["endpoint"]
            await wait_until(lambda: serves(fed, endpoint), timeout=15, what="picky serves at c1")

            ok, lost, stop = 0, 0, asyncio.Event()

            async def probe() -> None:
                nonlocal ok, lost
                while not stop.is_set():
                    if await serves(fed, endpoint):
                        ok += 1
                    else:
                        lost += 1
                    await asyncio.sleep(0.02)

            prober = asyncio.create_task(probe())
            started = time.monotonic()
            status, body = await post(fed, "c1", "/v1/services/picky/migrate", json.dumps({"target": "c2"}).encode())
            took = time.monotonic() - started
            stop.set()
            await prober
            print(f"migration to a target that never warms up: {status} after {took:.2f}s "
                  f"({body.get('error', '')[:300]}); probes ok {ok} lost {lost}")
            assert status == 409, body
            assert "no model cache on c2" in body["error"], body
            assert took < 3 + 15, took
            assert lost == 0 and ok > 0
            after = await fed.get("c1", "/v1/services/picky")
            assert after["location"] == "c1", after
            migrations = await fed.get("c1", "/v1/migrations")
            assert migrations[0]["service"] == "picky" and migrations[0]["outcome"] == "failed", migrations[0]

            async def target_clean() -> bool:
                return "picky" not in [i["name"] for i in await fed.get("c2", "/v1/instances")]

            await wait_until(target_clean, timeout=10, what="no copy left at c2")
            assert processes_of("picky", "c2") == []
            assert await serves(fed, endpoint)
        except BaseException:
            print(dump_logs(fed))
            raise


async def test_finding_9_json_endpoints_refuse_bodies_not_typed_as_json_with_415(tmp_path: Path) -> None:
    """text/plain, a header-less body or octet-stream: 415 on every JSON endpoint, and nothing
    happens (no service created, no migration, no drain, no key rotation)."""
    async with federation(tmp_path) as fed:
        try:
            fed.add("c1", A).start()
            await fed.wait_healthy("c1")
            await fed.call("c1", "POST", "/v1/services", classifier("kept"), expect=201)
            keys_before = await fed.get("c1", "/v1/keys")
            bodies = [("/v1/services", classifier("sneaky")), ("/v1/services/kept/migrate", {}),
                      ("/v1/keys/rotate", {"force": True}), ("/v1/drain", {"stop": True})]
            for path, obj in bodies:
                raw = json.dumps(obj).encode()
                for ctype in ("text/plain", "text/plain; charset=utf-8", None, "application/octet-stream",
                              "application/x-www-form-urlencoded"):
                    status, body = await post(fed, "c1", path, raw, ctype=ctype)
                    assert status == 415, (path, ctype, status, body)
                    assert "application/json" in body["error"], body
            await fed.call("c1", "GET", "/v1/services/sneaky", expect=404)
            assert await fed.get("c1", "/v1/migrations") == []
            assert await fed.get("c1", "/v1/keys") == keys_before
            status, _ = await post(fed, "c1", "/v1/services", json.dumps(classifier("typed")).encode(),
                                   ctype="application/json; charset=utf-8")
            assert status == 201
            assert (await fed.get("c1", "/v1/health"))["status"] == "ok"  # not drained, not stopped
        except BaseException:
            print(dump_logs(fed))
            raise
