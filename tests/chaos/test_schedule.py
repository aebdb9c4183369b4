"""The nemesis schedule: reproducible from its seed, well-formed, and playable."""
from __future__ import annotations

import pytest

from chaos.faults import Kill, Nemesis, Pause
from chaos.schedule import FaultSchedule, ScheduledFault, play, process_kinds
from tests.chaos.conftest import Bed

CLUSTERS = ("a", "b", "c", "d")


def described(entries: list[ScheduledFault]) -> list[str]:
    return [e.describe() for e in entries]


def test_same_seed_same_schedule_other_seed_other_schedule() -> None:
    one = FaultSchedule(seed=42, clusters=CLUSTERS, total=300).entries()
    two = FaultSchedule(seed=42, clusters=CLUSTERS, total=300).entries()
    other = FaultSchedule(seed=43, clusters=CLUSTERS, total=300).entries()
    assert len(one) > 10
    assert described(one) == described(two)
    assert described(one) != described(other)
    kinds = {type(e.fault).__name__ for e in one}
    assert {"Isolate", "Halves", "Bridge", "OneWayCut", "Bandwidth"} <= kinds


def test_schedule_is_sequential_and_within_total() -> None:
    sched = FaultSchedule(seed=7, clusters=CLUSTERS, total=120, gap=(1, 3), duration=(2, 4))
    entries = sched.entries()
    end = 0.0
    for e in entries:
        assert e.at >= end + 1 - 1e-6 and 2 - 1e-6 <= e.duration <= 4 + 1e-6
        end = e.at + e.duration
    assert end <= 120
    with pytest.raises(ValueError):
        FaultSchedule(seed=1, clusters=("a", "b"), total=10).entries()


def test_process_kinds_target_named_sources() -> None:
    targets = {"a/agent": lambda: [101], "b/haproxy": lambda: [202]}
    entries = FaultSchedule(seed=3, clusters=CLUSTERS, total=200,
                            kinds=tuple(process_kinds(targets))).entries()
    assert entries and all(isinstance(e.fault, (Kill, Pause)) for e in entries)
    assert {e.fault.describe().split()[1] for e in entries} <= set(targets)


@pytest.mark.netns
@pytest.mark.integration
async def test_play_applies_and_heals_everything(bed: Bed) -> None:
    entries = FaultSchedule(seed=5, clusters=("a", "b", "c"), total=1.6, gap=(0.1, 0.2),
                            duration=(0.2, 0.4)).entries()
    assert len(entries) >= 2
    nemesis = Nemesis(bed.tb)
    await play(entries, nemesis)
    applied = [e.fault for e in nemesis.events if e.action == "apply"]
    healed = [e.fault for e in nemesis.events if e.action == "heal"]
    assert applied == described_faults(entries)
    assert healed[:-1] == applied and healed[-1] == "heal all"
    for node in ("a", "b", "c"):
        res = await bed.tb.iptables(node, ["-S"])
        assert bed.tb.comment not in res.stdout
    await bed.wait_reaches("a", "b")


def described_faults(entries: list[ScheduledFault]) -> list[str]:
    return [e.fault.describe() for e in entries]
