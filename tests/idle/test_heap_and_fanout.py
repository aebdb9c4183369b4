"""The start-up storm's footprint (issue 18): background peer calls are bounded, and glibc keeps
large buffers out of its heap and gives freed pages back. Heap checks run in a fresh
interpreter: mallopt settings are process-wide and this one's heap has a history."""
from __future__ import annotations

import asyncio
import json
import subprocess
import sys

import pytest

from peer.runtime.fanout import FanOut

# mallinfo2().hblks: blocks glibc serves with mmap. Free a 1 MiB block (glibc raises its mmap
# threshold to 1 MiB unless fixed), then count whether a 256 KiB block is still mapped.
_HBLKS = """
import ctypes, json, sys
class MallInfo2(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in
                ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks",
                 "fordblks", "keepcost")]
libc = ctypes.CDLL(None)
libc.mallinfo2.restype = MallInfo2
libc.malloc.restype = ctypes.c_void_p
libc.free.argtypes = [ctypes.c_void_p]
if sys.argv[1] == "fixed":
    from peer.runtime import heap
    assert heap.fix_mmap_threshold()
libc.free(libc.malloc(1 << 20))
before = libc.mallinfo2().hblks
block = libc.malloc(256 * 1024)
mapped = libc.mallinfo2().hblks - before
libc.free(block)
from peer.runtime import heap
print(json.dumps({"mapped": mapped, "trim": isinstance(heap.give_back(), bool)}))
"""


def _hblks(mode: str) -> dict[str, object]:
    out = subprocess.run([sys.executable, "-c", _HBLKS, mode], capture_output=True, text=True, timeout=60, check=True)
    result: dict[str, object] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def test_a_256k_buffer_lands_in_the_heap_by_default_after_a_large_free() -> None:
    """The behaviour the fix is for (if glibc changes it, this says so)."""
    assert _hblks("default")["mapped"] == 0


def test_with_the_threshold_fixed_a_256k_buffer_is_mapped_and_given_back_on_free() -> None:
    assert _hblks("fixed") == {"mapped": 1, "trim": True}


@pytest.mark.asyncio
async def test_fanout_keeps_at_most_its_bound_in_flight_and_every_result_in_order() -> None:
    fanout = FanOut(3)
    in_flight = peak = 0
    gate, full = asyncio.Event(), asyncio.Event()

    async def call(key: int) -> int:
        nonlocal in_flight, peak
        in_flight += 1
        peak = max(peak, in_flight)
        if in_flight == 3:
            full.set()
        await gate.wait()
        in_flight -= 1
        if key == 4:
            raise LookupError("peer 4 did not answer")
        return key * 10

    task = asyncio.ensure_future(fanout.each(range(8), call))
    await asyncio.wait_for(full.wait(), timeout=5.0)
    assert in_flight == 3  # the gate is shut: no slot can free, the other five wait
    gate.set()
    results = await asyncio.wait_for(task, timeout=5.0)
    assert peak == 3  # over the whole burst, never a fourth at once
    assert results[:4] == [0, 10, 20, 30] and isinstance(results[4], LookupError) and results[5:] == [50, 60, 70]


@pytest.mark.asyncio
async def test_fanout_run_waits_for_a_slot_and_a_cancelled_waiter_leaves_no_coroutine_behind() -> None:
    fanout = FanOut(1)
    gate, holding = asyncio.Event(), asyncio.Event()
    started: list[str] = []

    async def hold() -> None:
        started.append("first")
        holding.set()
        await gate.wait()

    async def second() -> None:
        started.append("second")

    first = asyncio.ensure_future(fanout.run(hold))
    waiting = asyncio.ensure_future(fanout.run(second))
    await asyncio.wait_for(holding.wait(), timeout=5.0)
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    gate.set()
    await asyncio.wait_for(first, timeout=5.0)
    assert started == ["first"]  # the cancelled call was never made (and never created)
    assert await fanout.run(second) is None and started == ["first", "second"]


def test_fanout_refuses_a_bound_below_one() -> None:
    with pytest.raises(ValueError, match="at_once"):
        FanOut(0)
