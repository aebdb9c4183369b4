"""Open-loop load: requests keep leaving on schedule through a partition, every one sent
while the client was cut off is counted lost, and the outage measures the cut."""
from __future__ import annotations

import asyncio
import time

import pytest

from chaos.faults import Nemesis, Partition
from chaos.load import LiveCounter, Sample, downtime, failures_between, outages, run_load
from chaos.netns import HOST
from tests.chaos.conftest import Bed

RATE = 50.0
TIMEOUT = 0.5


@pytest.mark.netns
@pytest.mark.integration
async def test_load_counts_failures_while_the_client_is_cut_off(bed: Bed) -> None:
    live = LiveCounter()
    stop = asyncio.Event()
    nemesis = Nemesis(bed.tb)
    load = asyncio.create_task(run_load([bed.url("a")], rate=RATE, stop=stop, timeout=TIMEOUT,
                                        live=live))
    await asyncio.sleep(1.0)  # the schedule of the experiment, not a synchronisation
    assert live.served > 0 and live.failed == 0, live.line()
    fault = await nemesis.apply(Partition([HOST], ["a"]))
    cut_at = nemesis.events[-1].at
    await asyncio.sleep(1.5)
    await nemesis.heal(fault)
    healed_at = nemesis.events[-1].at
    await asyncio.sleep(1.5)
    stop.set()
    result = await load

    # open loop: sends kept their schedule while requests hung
    sent = [s.sent_at for s in result.samples]
    assert max(b - a for a, b in zip(sent, sent[1:])) < 3 / RATE
    assert abs(len(sent) - RATE * (sent[-1] - sent[0])) <= 2
    assert live.sent == len(result.samples) and live.in_flight == 0
    assert live.failed == result.failed and live.served == result.served
    assert all(s.served_by == "a" for s in result.samples if s.ok)
    # nothing lost before the cut or once the heal had settled; everything lost inside it
    before = [s for s in result.samples if s.sent_at < cut_at - 0.05]
    inside = [s for s in result.samples if cut_at + 0.05 < s.sent_at < healed_at - 0.05]
    after = [s for s in result.samples if s.sent_at > healed_at + 0.2]
    assert before and all(s.ok for s in before)
    assert inside and all(not s.ok for s in inside)
    assert failures_between(result.samples, cut_at + 0.05, healed_at - 0.05) == inside
    assert after and all(s.ok for s in after)
    assert {s.error for s in inside} == {"timeout"}
    down = result.downtime()
    assert down is not None and not down.open_ended
    assert (healed_at - cut_at) - 0.2 < down.duration < (healed_at - cut_at) + 0.3, down
    assert len(result.outages()) == 1


def _samples(pattern: str, step: float = 0.1) -> list[Sample]:
    return [Sample(i * step, 1.0, ch == "o", 200 if ch == "o" else None,
                   None if ch == "o" else "timeout", None) for i, ch in enumerate(pattern)]


def test_outages_and_downtime_from_hand_made_samples() -> None:
    s = _samples("ooxxxooxoxxxxx")
    runs = outages(s)
    assert [(round(o.start, 2), round(o.end, 2), o.failed, o.open_ended) for o in runs] == [
        (0.2, 0.5, 3, False), (0.7, 0.8, 1, False), (0.9, 1.3, 5, True)]
    longest = downtime(s)
    assert longest is not None and longest.failed == 5 and longest.open_ended
    assert downtime(_samples("oooo")) is None
    assert len(failures_between(s, 0.25, 0.75)) == 3


async def test_run_load_refuses_bad_arguments() -> None:
    with pytest.raises(ValueError):
        await run_load(["http://127.0.0.1:9/"], rate=0, duration=1)
    with pytest.raises(ValueError):
        await run_load(["http://127.0.0.1:9/"], rate=10)
    with pytest.raises(ValueError):
        await run_load([], rate=10, duration=1)


async def test_stop_before_start_sends_nothing() -> None:
    stop = asyncio.Event()
    stop.set()
    t0 = time.monotonic()
    result = await run_load(lambda i: "http://127.0.0.1:9/", rate=10, stop=stop)
    assert result.samples == [] and time.monotonic() - t0 < 1
