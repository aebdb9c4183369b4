"""Policies: registry, and that each one orders members the way its name promises."""
from __future__ import annotations

import dataclasses
import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from placement import (
    DEFAULT_POLICY,
    POLICIES,
    Balanced,
    ClusterView,
    InvalidPolicy,
    LeastLoaded,
    Nearest,
    PlacementError,
    Requirements,
    UnknownPolicy,
    get_policy,
    rank,
)
from tests.placement.strategies import PROPERTY, cluster_views, requirements

REQ = Requirements(cpu=1.0, memory=0)


def member(name: str, **kw: object) -> ClusterView:
    base: dict[str, object] = dict(
        name=name, alive=True, tier="edge", cpu_capacity=8.0, cpu_used=2.0,
        mem_capacity=1000, mem_used=200, slots_capacity=10, slots_used=2,
    )
    base.update(kw)
    return ClusterView(**base)  # type: ignore[arg-type]


def order(views: list[ClusterView], policy: object, home: str = "home") -> list[str]:
    return [c.name for c in rank(REQ, views, home=home, policy=policy).ranked]  # type: ignore[arg-type]


def test_registry_and_unknown_policy() -> None:
    assert set(POLICIES) == {"balanced", "least-loaded", "nearest"}
    assert get_policy("balanced") is DEFAULT_POLICY
    assert all(get_policy(n).name == n for n in POLICIES)
    with pytest.raises(UnknownPolicy, match="balanced, least-loaded, nearest") as caught:
        get_policy("fastest")
    assert isinstance(caught.value, LookupError) and isinstance(caught.value, PlacementError)
    assert isinstance(caught.value.__cause__, KeyError)


def test_nearest_orders_by_rtt_unknown_last() -> None:
    views = [member("far", rtt_ms=80.0), member("near", rtt_ms=3.0), member("unknown"),
             member("home", rtt_ms=None)]
    assert order(views, Nearest()) == ["home", "near", "far", "unknown"]


def test_least_loaded_judges_by_scarcest_resource() -> None:
    views = [
        member("cpu-rich-slot-poor", cpu_used=0.0, slots_used=8),  # slots: 10% left after placing
        member("even", cpu_used=3.0, slots_used=3),  # scarcest: cpu, 50% left
        member("busy", cpu_used=6.0),  # scarcest: cpu, 12.5% left
    ]
    assert order(views, LeastLoaded()) == ["even", "busy", "cpu-rich-slot-poor"]


def test_balanced_prefers_tiers_in_configured_order() -> None:
    views = [member("d", tier="deep-edge"), member("c", tier="cloud"), member("e", tier="edge"),
             member("x", tier="unlisted")]
    assert order(views, Balanced()) == ["c", "e", "d", "x"]
    assert order(views, Balanced(tier_order=("deep-edge", "edge"))) == ["d", "e", "c", "x"]
    # Without a tier preference all four are equal: the name decides.
    assert order(views, Balanced(tier_order=())) == ["c", "d", "e", "x"]


def test_balanced_reasons_add_up_to_the_score() -> None:
    score, reasons = Balanced().score(REQ, member("e", rtt_ms=10.0, bandwidth_mbps=100.0), home="h")
    parts = [float(r.rsplit("(+", 1)[1].rstrip(")")) for r in reasons]
    assert len(reasons) == 6 and math.isclose(sum(parts), score, abs_tol=0.004)
    assert any("rtt to home 10.0 ms" in r for r in reasons)


@PROPERTY
@given(req=requirements, view=cluster_views(), better=st.floats(0, 100, allow_nan=False))
def test_balanced_is_monotonic_in_link_quality(req: Requirements, view: ClusterView, better: float) -> None:
    """Lower RTT or more bandwidth never lowers the score; nor does more free CPU."""
    policy = Balanced()
    base = dataclasses.replace(view, rtt_ms=better + 1.0, bandwidth_mbps=better)
    score, _ = policy.score(req, base, home="elsewhere")
    closer, _ = policy.score(req, dataclasses.replace(base, rtt_ms=better), home="elsewhere")
    wider, _ = policy.score(req, dataclasses.replace(base, bandwidth_mbps=better + 1.0), home="elsewhere")
    roomier, _ = policy.score(req, dataclasses.replace(base, cpu_capacity=base.cpu_capacity + 1.0), home="elsewhere")
    assert closer >= score and wider >= score and roomier >= score


@pytest.mark.parametrize(
    "kw", [{"cpu_weight": -1.0}, {"rtt_scale_ms": 0.0}, {"bandwidth_weight": math.nan},
           {f.name: 0.0 for f in dataclasses.fields(Balanced) if f.name.endswith("_weight")}],
)
def test_balanced_rejects_meaningless_configuration(kw: dict[str, float]) -> None:
    with pytest.raises(InvalidPolicy):
        Balanced(**kw)  # type: ignore[arg-type]
