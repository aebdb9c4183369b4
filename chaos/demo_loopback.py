"""The demo without root: agents on loopback addresses, no bandwidth shaping, no partitions.

The same three clusters and the same client, but the script's network events are stood in
for by what a non-root user can do: an API-requested move where the degraded link would
have triggered one, and a killed abroad cluster (agent and service) for the outage.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import aiohttp

from chaos.agent_processes import kill_left_behind
from chaos.demo import CLUSTERS, DWELL, Demo, finish, play, work_dir

ADDRS = {"deep-edge": "127.0.0.61", "edge": "127.0.0.62", "cloud": "127.0.0.63"}


class LoopbackFederation:
    """Agents as plain subprocesses, each in its own process group."""

    def __init__(self, demo: Demo, work: Path) -> None:
        self.demo = demo
        self.work = work
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def start(self, name: str) -> None:
        cpu, mem = CLUSTERS[name]
        args = ["--name", name, "--addr", ADDRS[name], "--data-dir", str(self.work / name), "--tier", name,
                "--cpu", cpu, "--memory", mem, "--dwell", DWELL, "--auto-migrate", "--secret-file", str(self.work / "secret"),
                "--token-file", str(self.work / "token")]
        if name != "deep-edge":
            args += ["--join", ADDRS["deep-edge"]]
        with open(self.work / f"{name}.log", "ab") as log:
            self.procs[name] = subprocess.Popen([sys.executable, "-m", "peer.cli", "agent", *args], stdout=log,
                                                stderr=subprocess.STDOUT, start_new_session=True)

    def crash(self, name: str) -> None:
        """The whole cluster goes: its agent (with Serf), its HAProxy and its services."""
        proc = self.procs[name]
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        kill_left_behind(self.work / name)

    def stop_all(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for name, proc in self.procs.items():
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
            kill_left_behind(self.work / name)


async def run_loopback_demo(report_dir: Path, *, work: Path | None = None) -> int:
    keep = work is not None
    work = work_dir(work)
    demo = Demo(report_dir=report_dir, work=work)
    demo.result.mode = "loopback"
    demo.addrs = dict(ADDRS)
    fed = LoopbackFederation(demo, work)
    reached: list[bool] = [False]
    for path, value in ((work / "secret", os.urandom(24).hex()), (work / "token", demo.token)):
        path.write_text(value)
        path.chmod(0o600)
    try:
        async with aiohttp.ClientSession() as session:
            demo.session = session
            for name in CLUSTERS:
                fed.start(name)
            await demo.wait_federation()
            await demo.deploy()
            async def good() -> None:
                demo.say("phase good: links unshaped; the classifier should move out for compute")

            async def degraded() -> None:
                demo.say("phase degraded: no tc without root; asking for the move a degraded cloud link triggers")
                await demo.api("deep-edge", "POST", "/v1/services/classifier/migrate", {"target": "edge"})

            async def outage() -> None:
                where = demo._where or "edge"
                demo.say(f"phase outage: no iptables without root; {where} crashes (agent, Serf, HAProxy, service)")
                fed.crash(where)
                demo.crashed = where

            async def recovery() -> None:
                fed.start(demo.crashed)
                demo.say(f"phase recovery: {demo.crashed} restarted")

            reached = await play(demo, [("good", good, {"cloud", "edge"}, 60), ("degraded", degraded, {"edge"}, 30),
                                        # the standby is promoted where it runs, else the HC redeploys
                                        ("outage", outage, {"deep-edge", "cloud"}, 30),
                                        ("recovery", recovery, {"cloud", "edge"}, 60)])
    finally:
        fed.stop_all()
    return finish(demo, reached, report_dir, work, keep=keep)
