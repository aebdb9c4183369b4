"""Issue 12 findings 3 and 4 on real agents: the records are the source of truth, and the
files derived from them (lb-slots.json, a service's instance.json) cost nothing when lost."""
from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from peer.drivers.process_state import proc_stat
from peer.drivers.strays import find_strays
from peer.runtime.waiting import wait_until
from tests.harness import Federation, dump_logs, federation

pytestmark = pytest.mark.integration

A, B = "127.0.4.31", "127.0.4.32"


def descriptor(name: str) -> dict[str, Any]:
    return {"name": name, "port": 8080, "cpu": 0.1, "memory": "64Mi", "health": {"path": "/healthz"},
            "command": [sys.executable, "-m", "peer.samples.classifier", "--host", "{host}", "--port", "{port}"]}


async def start_pair(fed: Federation) -> None:
    fed.add("c1", A).start()
    fed.add("c2", B, join=[A]).start()
    for name in ("c1", "c2"):
        await fed.wait_healthy(name)

    async def formed() -> bool:
        for n in ("c1", "c2"):
            members = await fed.get(n, "/v1/members")
            if sum(1 for m in members if m["status"] == "alive" and m["load"]) != 2:
                return False
        return True

    await wait_until(formed, timeout=30, what="pair formed")


async def who(fed: Federation, endpoint: str) -> str | None:
    """The service answering at `endpoint` (None for an error or no answer)."""
    assert fed.session is not None
    try:
        async with fed.session.get(f"http://{endpoint}/", timeout=aiohttp.ClientTimeout(total=2)) as r:
            return str((await r.json())["service"]) if r.status == 200 else None
    except (aiohttp.ClientError, asyncio.TimeoutError, ValueError, KeyError):
        return None


class Probe:
    """About 40 requests a second to each endpoint, each checked for the right service."""

    def __init__(self, fed: Federation, expected: dict[str, str]) -> None:
        self.ok = 0
        self.lost: list[tuple[str, str | None]] = []
        self._stop = asyncio.Event()
        self._tasks = [asyncio.create_task(self._run(fed, e, s)) for e, s in expected.items()]

    async def _run(self, fed: Federation, endpoint: str, service: str) -> None:
        while not self._stop.is_set():
            got = await who(fed, endpoint)
            if got == service:
                self.ok += 1
            else:
                self.lost.append((endpoint, got))
            await asyncio.sleep(0.025)

    async def more(self, n: int = 20) -> None:
        base = self.ok
        await wait_until(lambda: self.ok >= base + n, timeout=20, what="probes answered")

    async def stop(self) -> None:
        self._stop.set()
        await asyncio.gather(*self._tasks)


async def test_finding_3_lost_lb_slots_file_is_rebuilt_from_the_records(tmp_path: Path) -> None:
    """Restart c1 without lb-slots.json: every endpoint keeps serving its own service (no
    request lost across the restart), and a new deploy gets a port no service owns."""
    async with federation(tmp_path) as fed:
        try:
            await start_pair(fed)
            created = {n: await fed.call("c1", "POST", "/v1/services", descriptor(n), expect=201)
                       for n in ("alpha", "beta")}
            expected = {e: n for n, c in created.items() for e in c["endpoints"]}
            await wait_until(lambda: _all_serve(fed, expected), timeout=15, what="every entry serves")
            probe = Probe(fed, expected)
            await probe.more()
            agent = fed.agents["c1"]
            slots = agent.data_dir / "lb" / "lb-slots.json"
            for kill in (agent.stop, agent.kill):  # SIGTERM restart (HAProxy adopted), then SIGKILL
                kill()
                slots.unlink()
                t0 = time.monotonic()
                agent.start()
                await fed.wait_healthy("c1")
                await wait_until(slots.exists, timeout=10, what="lb-slots.json rebuilt")
                print(f"{kill.__name__}: API back after {time.monotonic() - t0:.2f}s")
                await probe.more()
            assert "rebuilt 2 slot(s) from the records" in agent.log_path.read_text()
            print(f"lost lb-slots.json twice: {probe.ok} ok, lost {probe.lost}")
            assert probe.lost == [], probe.lost

            gamma = await fed.call("c1", "POST", "/v1/services", descriptor("gamma"), expect=201)
            taken = set(expected)
            assert not taken & set(gamma["endpoints"]), (gamma["endpoints"], taken)
            expected.update({e: "gamma" for e in gamma["endpoints"]})
            await wait_until(lambda: _all_serve(fed, expected), timeout=15, what="three services, own endpoints")
            await probe.stop()
        except BaseException:
            print(dump_logs(fed))
            raise


async def _all_serve(fed: Federation, expected: dict[str, str]) -> bool:
    return all([await who(fed, e) == s for e, s in expected.items()])


def _alive(pid: int) -> bool:
    stat = proc_stat(pid)
    return stat is not None and stat[0] not in ("Z", "X")


async def test_finding_4_lost_instance_json_never_leaves_a_second_copy(tmp_path: Path) -> None:
    """Restart c1 without services/alpha/instance.json: the running copy provably runs the
    record's descriptor and answers, so it is adopted (same pid, no request lost, the file
    written again). Then a copy that does not answer (SIGSTOPped) is stopped and replaced.
    Never two copies; an operator's shell in that directory is left alone throughout."""
    async with federation(tmp_path) as fed:
        try:
            agent = fed.add("c1", A)
            agent.start()
            await fed.wait_healthy("c1")
            created = await fed.call("c1", "POST", "/v1/services", {**descriptor("alpha"), "entries": 1}, expect=201)
            endpoint = created["endpoint"]
            state = agent.data_dir / "services" / "alpha" / "instance.json"
            bystander = subprocess.Popen(["sleep", "120"], cwd=state.parent, start_new_session=True)
            probe = Probe(fed, {endpoint: "alpha"})
            try:
                await probe.more()
                pid = (await fed.get("c1", "/v1/instances"))[0]["pid"]
                await restart_without(fed, state)
                await wait_until(state.exists, timeout=10, what="instance.json written again")
                assert [i["pid"] for i in await fed.get("c1", "/v1/instances")] == [pid], "adopted"
                await probe.more()
                print(f"adopted across the restart: {probe.ok} ok, lost {probe.lost}")
                assert probe.lost == [], probe.lost
                assert "adopting the copy of alpha" in agent.log_path.read_text()
                await probe.stop()

                os.kill(pid, signal.SIGSTOP)  # alive, holding its port, but not answering
                t0 = time.monotonic()
                await restart_without(fed, state)

                async def replaced() -> bool:
                    inst = await fed.get("c1", "/v1/instances")
                    return len(inst) == 1 and inst[0]["pid"] != pid and inst[0]["state"] == "ready"

                await wait_until(replaced, timeout=30, what="one fresh copy")
                await wait_until(lambda: _serves(fed, endpoint, "alpha"), timeout=15, what="alpha serves")
                print(f"a stray that does not answer replaced, serving again after {time.monotonic() - t0:.2f}s")
                assert not _alive(pid), "the stray copy must be stopped"
                copies = find_strays(agent.data_dir / "services", cluster="c1", supervised=set())
                assert [s.service for s in copies] == ["alpha"], copies
                assert "stopping a stray copy of alpha" in agent.log_path.read_text()
                assert bystander.poll() is None, "a process without the service's environment is not ours"
            finally:
                bystander.kill()
                bystander.wait()
        except BaseException:
            print(dump_logs(fed))
            raise


async def restart_without(fed: Federation, state: Path) -> None:
    agent = fed.agents["c1"]
    agent.stop()
    state.unlink()
    agent.start()
    await fed.wait_healthy("c1")


async def _serves(fed: Federation, endpoint: str, service: str) -> bool:
    return await who(fed, endpoint) == service
