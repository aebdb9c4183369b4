"""The testbed itself: namespaces reach each other and the root namespace, processes are
tracked, and nothing survives teardown or a crash followed by `cleanup_leftovers`."""
from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from chaos import leftovers
from chaos.errors import TestbedError
from chaos.faults import Partition
from chaos.netns import CLIENT, HOST, REPO_ROOT, Testbed, cleanup_leftovers
from peer.runtime.waiting import wait_until
from tests.chaos.conftest import PREFIX, SUBNET, Bed

pytestmark = [pytest.mark.netns, pytest.mark.integration]


async def test_layout_and_reachability(bed: Bed) -> None:
    tb = bed.tb
    assert [tb.addr(c) for c in tb.clusters] == ["10.231.0.10", "10.231.0.11", "10.231.0.12"]
    assert tb.addr(HOST) == tb.bridge_addr == "10.231.0.1"
    assert tb.host_veth("b") == "roamt-h1" and tb.netns("b") == "roamt-b"
    assert leftovers.list_netns(PREFIX) == ["roamt-a", "roamt-b", "roamt-c"]
    assert set(leftovers.list_links(PREFIX)) == {"roamtbr0", "roamt-h0", "roamt-h1", "roamt-h2"}
    # root namespace -> each cluster, and the answer says who served it
    for c in tb.clusters:
        ok, _ = await bed.fetch(HOST, c)
        assert ok
    # namespace -> namespace, both ways
    assert await bed.reaches("a", "b") and await bed.reaches("c", "a")
    # each server runs inside its own namespace, nowhere else
    for c in tb.clusters:
        assert await tb.pids(c) == [bed.servers[c].pid]
    res = await tb.run("a", ["ip", "-j", "addr", "show", "eth0"])
    assert json.loads(res.stdout)[0]["addr_info"][0]["local"] == "10.231.0.10"


async def test_client_namespace(tmp_path: Path) -> None:
    async with Testbed(["a"], prefix=PREFIX, subnet=SUBNET, client=True) as tb:
        assert tb.addr(CLIENT) == "10.231.0.2"
        proc = await tb.spawn("a", [sys.executable, "-m", "http.server", "--bind",
                                    tb.addr("a"), "--directory", str(tmp_path), "8000"],
                              log_path=tmp_path / "a.log")
        probe = Path(__file__).with_name("probe_http.py")
        argv = [sys.executable, "-S", str(probe), f"http://{tb.addr('a')}:8000/", "1"]

        async def client_reaches_a() -> bool:
            return (await tb.run(CLIENT, argv, check=False)).ok

        await wait_until(client_reaches_a, timeout=15, what="client reaching a")
    assert leftovers.probe(PREFIX, pgids=[proc.pid]).empty


async def test_teardown_kills_stubborn_processes_and_leaves_nothing(tmp_path: Path) -> None:
    tb = Testbed(["a", "b"], prefix=PREFIX, subnet=SUBNET, term_grace=0.5)
    await tb.setup()
    try:
        # ignores SIGTERM, and forks a grandchild that leaves the process group
        stubborn = await tb.spawn("a", [sys.executable, "-c", _STUBBORN],
                                  log_path=tmp_path / "s.log")
        await wait_until(_has_pids(tb, "a", 2), timeout=15, what="grandchild up")
        await Partition(["a"], ["b"]).apply(tb)
        assert leftovers.probe(PREFIX).iptables_rules  # the probe does see rules
    finally:
        await tb.teardown()
    assert await stubborn.wait() == -9
    left = leftovers.probe(PREFIX, pgids=[stubborn.pid])
    assert left.empty, left


_STUBBORN = """
import signal, subprocess, sys, time
signal.signal(signal.SIGTERM, signal.SIG_IGN)
subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(600)'], start_new_session=True)
time.sleep(600)
"""


def _has_pids(tb: Testbed, node: str, n: int) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        return len(await tb.pids(node)) >= n
    return check


async def test_cleanup_after_a_crash_leaves_nothing(tmp_path: Path) -> None:
    tb = Testbed(["a", "b"], prefix=PREFIX, subnet=SUBNET)
    await tb.setup()
    try:
        proc = await tb.spawn("a", [sys.executable, "-c", _STUBBORN], log_path=tmp_path / "s.log")
        orphan = await tb.spawn("b", [sys.executable, "-c", "import time; time.sleep(600)"],
                                log_path=tmp_path / "o.log")
        await wait_until(_has_pids(tb, "a", 2), timeout=15, what="grandchild up")
        await wait_until(_has_pids(tb, "b", 1), timeout=15, what="b up")
        await Partition(["a"], ["b"]).apply(tb)
        # a crash half-way through an earlier teardown: b's namespace is unmounted but its
        # process lives on in the anonymous namespace; only the environment marker finds it
        subprocess.run(["ip", "netns", "del", tb.netns("b")], check=True)
        assert orphan.returncode is None and leftovers.marked_pids(PREFIX)
        # the crashed run never tears down: a later run cleans up by prefix alone
        found = await asyncio.to_thread(cleanup_leftovers, PREFIX)
        assert found.namespaces == ["roamt-a"] and "roamtbr0" in found.links
        assert len(found.processes) == 3
        left = leftovers.probe(PREFIX, pgids=[proc.pid, orphan.pid])
        assert left.empty, left
        assert await proc.wait() == -9 and await orphan.wait() == -9
    finally:
        await tb.teardown()  # idempotent after cleanup


async def test_misuse_is_refused() -> None:
    with pytest.raises(ValueError):
        Testbed(["a", "client"], prefix=PREFIX, subnet=SUBNET)
    with pytest.raises(ValueError):
        Testbed(["a"], prefix="Bad-Prefix", subnet=SUBNET)
    tb = Testbed(["a"], prefix=PREFIX, subnet=SUBNET)
    with pytest.raises(TestbedError):
        await tb.run("a", ["true"])  # not set up
    with pytest.raises(TestbedError):
        tb.addr("zz")


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
async def test_emergency_cleanup_on_signal(tmp_path: Path, sig: signal.Signals) -> None:
    runner = await asyncio.create_subprocess_exec(
        sys.executable, str(Path(__file__).with_name("crash_runner.py")), PREFIX, SUBNET,
        str(tmp_path), stdout=asyncio.subprocess.PIPE, cwd=str(REPO_ROOT),
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)})
    try:
        assert runner.stdout is not None
        line = await asyncio.wait_for(runner.stdout.readline(), 30)
        assert line.strip() == b"READY"
        assert not leftovers.probe(PREFIX).empty
        runner.send_signal(sig)
        rc = await asyncio.wait_for(runner.wait(), 30)
        assert rc != 0
        left = leftovers.probe(PREFIX)
        assert left.empty, left
    finally:
        if runner.returncode is None:
            runner.kill()
            await runner.wait()
        await asyncio.to_thread(cleanup_leftovers, PREFIX)


def test_neighbour_room_raises_only_what_is_too_low_and_puts_back_what_it_found(tmp_path: Path) -> None:
    from chaos.netns import NeighbourRoom, neighbour_thresholds

    for i, value in enumerate((128, 512, 1024), start=1):
        (tmp_path / f"gc_thresh{i}").write_text(f"{value}\n")
    small = NeighbourRoom(5, root=tmp_path)
    small.raise_limits()
    assert [int((tmp_path / f"gc_thresh{i}").read_text()) for i in (1, 2, 3)] == [128, 512, 1024]
    big = NeighbourRoom(51, root=tmp_path)
    big.raise_limits()
    assert [int((tmp_path / f"gc_thresh{i}").read_text()) for i in (1, 2, 3)] == list(neighbour_thresholds(51))
    (tmp_path / "gc_thresh3").write_text("99999")  # somebody else changed it meanwhile: left alone
    big.restore()
    assert [int((tmp_path / f"gc_thresh{i}").read_text()) for i in (1, 2, 3)] == [128, 512, 99999]
