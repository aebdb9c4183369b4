"""Views and requirements reject garbage once, at construction."""
from __future__ import annotations

import math

import pytest

from placement import ClusterView, InvalidRequirements, InvalidView, Placement, Requirements


def view(**overrides: object) -> ClusterView:
    base: dict[str, object] = dict(
        name="a", alive=True, tier="edge", cpu_capacity=4.0, cpu_used=1.0,
        mem_capacity=100, mem_used=10, slots_capacity=5, slots_used=1,
    )
    base.update(overrides)
    return ClusterView(**base)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "field, value",
    [
        ("cpu_capacity", math.nan),
        ("cpu_used", -0.5),
        ("cpu_capacity", math.inf),
        ("mem_used", -1),
        ("slots_capacity", -1),
        ("rtt_ms", math.nan),
        ("bandwidth_mbps", -3.0),
        ("name", ""),
    ],
)
def test_view_rejects_unusable_values(field: str, value: object) -> None:
    with pytest.raises(InvalidView, match=field):
        view(**{field: value})


def test_view_allows_overcommit_and_huge_memory() -> None:
    v = view(cpu_used=9.0, mem_capacity=10**30, mem_used=10**31)
    assert v.cpu_load == 2.25


def test_cpu_load_of_member_without_cpu_is_full() -> None:
    assert view(cpu_capacity=0.0, cpu_used=0.0).cpu_load == 1.0


@pytest.mark.parametrize("cpu, mem", [(-1.0, 0), (math.nan, 0), (math.inf, 0), (0.5, -1)])
def test_requirements_reject_bad_numbers(cpu: float, mem: int) -> None:
    with pytest.raises(InvalidRequirements):
        Requirements(cpu=cpu, memory=mem)


def test_requirements_freeze_plain_sets() -> None:
    req = Requirements(cpu=1.0, memory=0, tiers={"edge"}, avoid={"a"})  # type: ignore[arg-type]
    assert req.tiers == frozenset({"edge"}) and isinstance(req.avoid, frozenset)
    hash(req)


def test_placement_best() -> None:
    assert Placement((), ()).best is None
