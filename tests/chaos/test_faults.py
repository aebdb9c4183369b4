"""Faults against real namespaces: each cut blocks exactly what it says, heals restore it,
tbf measurably slows transfers, and signals reach the target processes."""
from __future__ import annotations

import asyncio
import signal
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from chaos.faults import (
    Bandwidth, Bridge, Composite, Heal, Isolate, Kill, LinkDown, Nemesis, OneWayCut, Partition,
    Pause,
)
from chaos.errors import FaultError
from chaos.load import OVER_LIMIT, run_load
from chaos.netns import HOST, Testbed
from peer.runtime.waiting import wait_until
from tests.chaos.conftest import HERE, Bed

pytestmark = [pytest.mark.netns, pytest.mark.integration]


async def rules(tb: Testbed, node: str) -> list[str]:
    res = await tb.iptables(node, ["-S"])
    return [line for line in res.stdout.splitlines() if tb.comment in line]


async def test_partition_blocks_both_ways_only_between_sides(bed: Bed) -> None:
    tb = bed.tb
    nemesis = Nemesis(tb)
    fault = await nemesis.apply(Partition(["a"], ["b"]))
    assert await bed.blocked("a", "b")
    assert await bed.blocked("b", "a")
    assert await bed.reaches("a", "c") and await bed.reaches("c", "b")
    assert await bed.reaches(HOST, "a") and await bed.reaches(HOST, "b")
    assert len(await rules(tb, "a")) == 1 and len(await rules(tb, "b")) == 1
    assert await rules(tb, "c") == []
    assert all("-A INPUT" in r for r in await rules(tb, "a") + await rules(tb, "b"))
    await nemesis.heal(fault)
    assert await rules(tb, "a") == [] and await rules(tb, "b") == []
    await bed.wait_reaches("a", "b")
    await bed.wait_reaches("b", "a")
    assert [e.action for e in nemesis.events] == ["apply", "heal"]


async def test_overlapping_cuts_stack(bed: Bed) -> None:
    tb = bed.tb
    first = Partition(["a"], ["b"])
    second = Isolate("a", from_client=False)  # also cuts a<->b
    await first.apply(tb)
    await second.apply(tb)
    await first.heal(tb)
    assert await bed.blocked("a", "b")  # still cut by the second fault
    assert await bed.reaches(HOST, "a")  # clients were spared
    await second.heal(tb)
    await bed.wait_reaches("a", "b")


async def test_one_way_cut_drops_only_one_direction(bed: Bed) -> None:
    tb, log_a, log_b = bed.tb, bed.root / "udp-a.log", bed.root / "udp-b.log"
    udp = [sys.executable, "-S", str(HERE / "udp_probe.py")]
    for node, log in (("a", log_a), ("b", log_b)):
        await tb.spawn(node, [*udp, "recv", tb.addr(node), "9000", str(log)],
                       log_path=bed.root / f"udp-{node}.out")

    def got(log: Path, payload: str) -> bool:
        return log.exists() and payload in log.read_text().split()

    async def send(src: str, dst: str, payload: str) -> None:
        await tb.run(src, [*udp, "send", tb.addr(dst), "9000", payload])

    def hello_reaches(node: str, log: Path) -> Callable[[], Awaitable[bool]]:
        async def check() -> bool:
            await send("c", node, "hello")
            return got(log, "hello")
        return check

    for node, log in (("a", log_a), ("b", log_b)):  # receivers up
        await wait_until(hello_reaches(node, log), timeout=15, what=f"udp receiver {node}")
    await OneWayCut("a", "b").apply(tb)
    await send("a", "b", "from-a")  # dropped at b
    await send("b", "a", "from-b")  # still arrives at a
    await send("c", "b", "after")  # control, sent after the dropped one
    await wait_until(lambda: got(log_a, "from-b") and got(log_b, "after"), timeout=10,
                     what="datagrams that should pass")
    assert not got(log_b, "from-a")
    assert await bed.blocked("a", "b")  # TCP needs both directions
    assert await rules(tb, "a") == [] and len(await rules(tb, "b")) == 1
    await OneWayCut("a", "b").heal(tb)
    await send("a", "b", "healed")
    await wait_until(lambda: got(log_b, "healed"), timeout=10, what="a->b after heal")


async def test_bridge_node_sees_both_sides(bed: Bed) -> None:
    fault = Bridge("a", ["b"], ["c"])
    await fault.apply(bed.tb)
    assert await bed.blocked("b", "c") and await bed.blocked("c", "b")
    assert await bed.reaches("a", "b") and await bed.reaches("a", "c")
    assert await bed.reaches("b", "a") and await bed.reaches("c", "a")
    await fault.heal(bed.tb)
    await bed.wait_reaches("b", "c")


async def test_isolate_and_heal_all_sweep(bed: Bed) -> None:
    nemesis = Nemesis(bed.tb)
    await nemesis.apply(Composite((Isolate("a"), Bandwidth("b", 1.0))))
    assert await bed.blocked(HOST, "a")
    assert await bed.blocked("b", "a") and await bed.blocked("a", "c")
    assert await bed.reaches("b", "c")
    await Partition(["b"], ["c"]).apply(bed.tb)  # applied behind the nemesis' back
    await nemesis.apply(Heal())
    assert nemesis.active == []
    for node in ("a", "b", "c"):
        assert await rules(bed.tb, node) == []
    qdiscs = (await bed.tb.tc(["qdisc", "show", "dev", bed.tb.host_veth("b")])).stdout
    assert "tbf" not in qdiscs
    await bed.wait_reaches(HOST, "a")
    await bed.wait_reaches("b", "c")


async def test_bandwidth_limit_slows_transfers_in_the_chosen_direction(bed: Bed) -> None:
    """1 MiB at 8 Mbit/s takes about 1.05 s; unshaped it takes milliseconds."""
    ok, base = await bed.fetch(HOST, "a", path="blob", timeout=10)
    assert ok
    out_only = Bandwidth("a", 8.0, direction="out")
    await out_only.apply(bed.tb)
    ok, shaped = await bed.fetch(HOST, "a", path="blob", timeout=20)
    assert ok and shaped > 0.7 and shaped > 3 * base, (base, shaped)
    ok, inbound = await bed.fetch("a", "b", path="blob", timeout=20)  # b -> a: not shaped
    assert ok and inbound < 0.6, inbound
    await out_only.heal(bed.tb)
    in_only = Bandwidth("a", 8.0, direction="in")
    await in_only.apply(bed.tb)
    ok, inbound = await bed.fetch("a", "b", path="blob", timeout=20)
    assert ok and inbound > 0.7, inbound
    await in_only.heal(bed.tb)
    ok, after = await bed.fetch(HOST, "a", path="blob", timeout=10)
    assert ok and after < 0.6, after


async def test_pause_stalls_a_server_and_overload_counts_as_lost(bed: Bed) -> None:
    proc = bed.servers["a"]
    pause = Pause(lambda: [proc.pid], label="server a")
    await pause.apply(bed.tb)
    assert proc.returncode is None
    assert await bed.blocked(HOST, "a")
    result = await run_load([bed.url("a")], rate=20, duration=0.5, timeout=1.0,
                            max_in_flight=3)
    errors = [s.error for s in result.samples]
    assert len(errors) == 10 and result.served == 0
    assert errors.count("timeout") == 3 and errors.count(OVER_LIMIT) == 7, errors
    await pause.heal(bed.tb)
    await bed.wait_reaches(HOST, "a")


async def test_kill_a_server(bed: Bed) -> None:
    proc = bed.servers["b"]
    await Kill(proc.pid, signal.SIGKILL, group=True, label="server b").apply(bed.tb)
    assert await asyncio.wait_for(proc.wait(), 10) == -signal.SIGKILL
    assert await bed.blocked(HOST, "b")
    with pytest.raises(FaultError):
        await Kill(lambda: [proc.pid]).apply(bed.tb)  # nothing left to kill


async def test_link_down_cuts_everything_until_healed(bed: Bed) -> None:
    fault = LinkDown("c")
    await fault.apply(bed.tb)
    assert await bed.blocked(HOST, "c") and await bed.blocked("a", "c")
    assert await bed.reaches("a", "b")
    await fault.heal(bed.tb)
    await bed.wait_reaches(HOST, "c")
    await bed.wait_reaches("c", "a")
