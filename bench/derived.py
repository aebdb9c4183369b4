"""Issue 12's close-out figures: requests lost across a SIGTERM restart, and the time to heal
after the loss of each file derived from the records (lb-slots.json, a service's
instance.json, HAProxy's state, the records store itself).

Two agents on loopback (c1 at 127.0.22.21, c2 at 127.0.22.22), one service homed at c1 with
entries [c1, c2] and running at c1. An open-loop probe sends 100 requests/s through c1's
entry the whole time (a request is lost on any error or non-200). Each case runs RUNS times:

- `sigterm`: c1 restarted with SIGTERM, nothing deleted.
- `<file> + restart`: the file deleted, then c1 restarted with SIGTERM: from the start of the
  new agent until the file is back, the service is adopted with the same pid, the route is
  the record's, and (records store) the record is recovered from c2.
- `<file> while running`: the file deleted under the running agent: until it is written again
  (the convergence round).
- `haproxy routes wiped`: every server of the service's backend deleted through the runtime
  API; `haproxy killed`: HAProxy's process (group) SIGKILLed (the supervisor starts a new
  one, which has no dynamic servers): until the entry serves the record's route again.

Run: .venv/bin/python bench/derived.py [RUNS]
"""
from __future__ import annotations

import asyncio
import os
import signal
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import aiohttp  # noqa: E402

from bench.common import CLASSIFIER, LocalFederation, Spread, machine_line  # noqa: E402
from lb.client import RuntimeClient  # noqa: E402
from peer.runtime.waiting import wait_until  # noqa: E402

ADDRS = {"c1": "127.0.22.21", "c2": "127.0.22.22"}
RATE = 100.0
DEADLINE = 30.0


class Probe:
    """Open loop: a request every 1/RATE s whether or not the last one answered."""

    def __init__(self, endpoint: str) -> None:
        self.url = f"http://{endpoint}/"
        self.sent = self.lost = 0
        self._stop = asyncio.Event()
        self._task = asyncio.create_task(self._run())
        self._inflight: set[asyncio.Task[None]] = set()

    async def _one(self, session: aiohttp.ClientSession) -> None:
        try:
            async with session.get(self.url, timeout=aiohttp.ClientTimeout(total=2)) as r:
                await r.read()
                ok = r.status == 200
        except (aiohttp.ClientError, asyncio.TimeoutError):
            ok = False
        self.lost += not ok

    async def _run(self) -> None:
        async with aiohttp.ClientSession() as session:
            start = time.monotonic()
            while not self._stop.is_set():
                self.sent += 1
                task = asyncio.create_task(self._one(session))
                self._inflight.add(task)
                task.add_done_callback(self._inflight.discard)
                await asyncio.sleep(max(0.0, start + self.sent / RATE - time.monotonic()))
            await asyncio.gather(*self._inflight)

    async def stop(self) -> None:
        self._stop.set()
        await self._task


async def main(runs: int) -> None:
    base = Path(tempfile.mkdtemp(prefix="roam-derived-"))
    local = LocalFederation(base, ADDRS)
    await local.start()
    fed = local.fed
    try:
        record = await fed.call("c1", "POST", "/v1/services", {**CLASSIFIER, "entries": 2}, expect=201)
        endpoint, data = record["endpoint"], fed.agents["c1"].data_dir
        port = int(endpoint.rsplit(":", 1)[1])
        await wait_until(lambda: serves(endpoint), timeout=20, what="the service serves")
        probe = Probe(endpoint)
        results: dict[str, list[float]] = {}
        lost: dict[str, list[int]] = {}
        pid0 = await pid_of(local)

        async def healed() -> bool:
            rec = await fed.get("c1", "/v1/services/classifier")
            instances = [i for i in await fed.get("c1", "/v1/instances") if i["name"] == "classifier"]
            return (rec["location"] == "c1" and len(instances) == 1 and instances[0]["state"] == "ready"
                    and instances[0]["pid"] == pid0 and (data / "lb" / "lb-slots.json").exists()
                    and (data / "services" / "classifier" / "instance.json").exists()
                    and await routed(data, port, rec["instance"]) and await serves(endpoint))

        async def restart_case(label: str, lose: Callable[[], None]) -> None:
            before = probe.lost
            agent = fed.agents["c1"]
            agent.stop()  # SIGTERM; HAProxy and the service keep serving
            lose()
            started = time.monotonic()
            agent.start()
            await fed.wait_healthy("c1", timeout=DEADLINE)
            await wait_until(healed, timeout=DEADLINE, interval=0.02, what=f"healed after {label}")
            results.setdefault(label, []).append(time.monotonic() - started)
            await asyncio.sleep(1.0)  # the probe keeps counting past the heal
            lost.setdefault(label, []).append(probe.lost - before)

        async def running_case(label: str, lose: Callable[[], Awaitable[None]]) -> None:
            before = probe.lost
            await lose()
            started = time.monotonic()
            await wait_until(healed, timeout=DEADLINE, interval=0.02, what=f"healed after {label}")
            results.setdefault(label, []).append(time.monotonic() - started)
            await asyncio.sleep(1.0)
            lost.setdefault(label, []).append(probe.lost - before)

        def unlink(*paths: Path) -> Callable[[], None]:
            def go() -> None:
                for p in paths:
                    p.unlink(missing_ok=True)
            return go

        async def unlink_now(path: Path) -> None:
            path.unlink()

        store = [data / f"records.sqlite3{s}" for s in ("", "-wal", "-shm")]
        for _ in range(runs):
            await restart_case("sigterm", lambda: None)
            await restart_case("lb-slots.json + restart", unlink(data / "lb" / "lb-slots.json"))
            await restart_case("instance.json + restart", unlink(data / "services" / "classifier" / "instance.json"))
            await restart_case("haproxy.state + restart", unlink(data / "lb" / "haproxy.state"))
            await restart_case("records.sqlite3 + restart", unlink(*store))
            await running_case("lb-slots.json while running", lambda: unlink_now(data / "lb" / "lb-slots.json"))
            await running_case("instance.json while running",
                               lambda: unlink_now(data / "services" / "classifier" / "instance.json"))
            await running_case("haproxy routes wiped", lambda: wipe_routes(data, port))
            await running_case("haproxy killed", lambda: kill_haproxy(data))
        await probe.stop()
        print(f"\n{machine_line()}; {runs} runs per case, probe {RATE:g} req/s through c1's entry "
              f"({probe.sent} sent, {probe.lost} lost in all)")
        print(f"{'case':32} {'heal median':>12} {'min-max':>16}   lost per run")
        for label, values in results.items():
            s = Spread.of(values)
            print(f"{label:32} {s.median:>10.2f} s {s.lo:>7.2f}-{s.hi:<6.2f} s   {lost[label]}")
    finally:
        await local.close()


async def serves(endpoint: str) -> bool:
    try:
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as session:
            async with session.get(f"http://{endpoint}/", timeout=aiohttp.ClientTimeout(total=1)) as r:
                return r.status == 200
    except (aiohttp.ClientError, asyncio.TimeoutError):
        return False


async def routed(data: Path, port: int, instance: str) -> bool:
    client = RuntimeClient(data / "lb" / "haproxy.sock")
    try:
        servers = await client.servers_state(f"be_{port}")
    finally:
        await client.close()
    return len(servers) == 1 and f"{servers[0].addr}:{servers[0].port}" == instance and servers[0].serving


async def pid_of(local: LocalFederation) -> int:
    return int(next(i["pid"] for i in await local.fed.get("c1", "/v1/instances") if i["name"] == "classifier"))


async def wipe_routes(data: Path, port: int) -> None:
    client = RuntimeClient(data / "lb" / "haproxy.sock")
    try:
        for st in await client.servers_state(f"be_{port}"):
            await client.set_server_state(f"be_{port}", st.name, "maint")
            await client.del_server(f"be_{port}", st.name)
    finally:
        await client.close()


async def kill_haproxy(data: Path) -> None:
    pid = int((data / "lb" / "haproxy.pid").read_text().split()[0])
    os.killpg(os.getpgid(pid), signal.SIGKILL)


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]) if len(sys.argv) > 1 else 5))
