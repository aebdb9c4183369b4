"""rank and admit: constraints always hold, results are deterministic, admission agrees."""
from __future__ import annotations

import dataclasses
import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from placement import (
    POLICIES,
    ClusterView,
    DuplicateCluster,
    Placement,
    Policy,
    Rejection,
    Requirements,
    admit,
    rank,
)
from tests.placement.strategies import PROPERTY, homes, requirements, view_lists

policies = st.sampled_from(sorted(POLICIES)).map(POLICIES.__getitem__)


def fits(req: Requirements, v: ClusterView) -> bool:
    return (
        v.alive
        and v.accepting
        and v.name not in req.avoid
        and (not req.tiers or v.tier in req.tiers)
        and v.cpu_used + req.cpu <= v.cpu_capacity + 1e-9
        and v.mem_used + req.memory <= v.mem_capacity
        and v.slots_used + 1 <= v.slots_capacity
    )


@PROPERTY
@given(req=requirements, views=view_lists, home=homes, policy=policies)
def test_ranked_members_satisfy_every_constraint(
    req: Requirements, views: list[ClusterView], home: str, policy: Policy
) -> None:
    placement = rank(req, views, home=home, policy=policy)
    by_name = {v.name: v for v in views}
    ranked = {c.name for c in placement.ranked}
    rejected = {r.name for r in placement.rejected}
    assert ranked | rejected == set(by_name) and not ranked & rejected
    assert len(placement.ranked) + len(placement.rejected) == len(views)
    for name in ranked:
        assert fits(req, by_name[name]), name  # never failed, draining, avoided, wrong tier, full
    for name in rejected:
        assert not fits(req, by_name[name]), name  # nothing acceptable is thrown away


@PROPERTY
@given(req=requirements, views=view_lists, home=homes, policy=policies, data=st.data())
def test_any_input_order_gives_the_same_placement(
    req: Requirements, views: list[ClusterView], home: str, policy: Policy, data: st.DataObject
) -> None:
    shuffled = data.draw(st.permutations(views))
    assert rank(req, shuffled, home=home, policy=policy) == rank(req, views, home=home, policy=policy)
    assert rank(req, iter(views), home=home, policy=policy) == rank(req, views, home=home, policy=policy)


@PROPERTY
@given(req=requirements, views=view_lists, home=homes, policy=policies)
def test_ranked_best_first_ties_by_name_scores_bounded(
    req: Requirements, views: list[ClusterView], home: str, policy: Policy
) -> None:
    placement = rank(req, views, home=home, policy=policy)
    keys = [(-c.score, c.name) for c in placement.ranked]
    assert keys == sorted(keys)
    assert all(math.isfinite(c.score) and 0.0 <= c.score <= 1.0 for c in placement.ranked)
    assert all(c.reasons for c in placement.ranked)
    names = [r.name for r in placement.rejected]
    assert names == sorted(names)


@PROPERTY
@given(req=requirements, views=view_lists, home=homes)
def test_admission_agrees_with_rank_filter(
    req: Requirements, views: list[ClusterView], home: str
) -> None:
    placement = rank(req, views, home=home)
    rejected = {r.name: r for r in placement.rejected}
    for v in views:
        verdict = admit(req, v)
        assert verdict == rejected.get(v.name)
        # A target deciding on exactly the view it was ranked on never refuses.
        assert (verdict is None) == (v.name in {c.name for c in placement.ranked})


def test_empty_input_gives_empty_placement() -> None:
    assert rank(Requirements(cpu=1.0, memory=0), [], home="h") == Placement((), ())


def test_duplicate_names_are_refused() -> None:
    v = ClusterView("a", True, "edge", 4.0, 0.0, 100, 0, 4, 0)
    with pytest.raises(DuplicateCluster, match="'a'"):
        rank(Requirements(cpu=1.0, memory=0), [v, v], home="a")


BASE = ClusterView("x", True, "edge", cpu_capacity=2.0, cpu_used=1.0,
                   mem_capacity=1000, mem_used=500, slots_capacity=3, slots_used=2)
REQ = Requirements(cpu=1.0, memory=500, tiers=frozenset({"edge"}), avoid=frozenset({"y"}))


@pytest.mark.parametrize(
    "change, code",
    [
        ({}, None),  # exactly full after placing still fits
        ({"alive": False}, "not-alive"),
        ({"alive": False, "accepting": False}, "not-alive"),  # first failing check names it
        ({"accepting": False}, "not-accepting"),
        ({"name": "y"}, "avoided"),
        ({"tier": "cloud"}, "tier"),
        ({"cpu_used": 1.01}, "cpu"),
        ({"mem_used": 501}, "memory"),
        ({"slots_used": 3}, "slots"),
    ],
)
def test_admit_reason_codes(change: dict[str, object], code: str | None) -> None:
    verdict = admit(REQ, dataclasses.replace(BASE, **change))  # type: ignore[arg-type]
    if code is None:
        assert verdict is None
    else:
        assert isinstance(verdict, Rejection) and verdict.reason.startswith(code + ":"), verdict


def test_float_noise_does_not_reject_an_exact_fit() -> None:
    v = ClusterView("x", True, "edge", cpu_capacity=0.3, cpu_used=0.1 + 0.2 - 0.1,
                    mem_capacity=0, mem_used=0, slots_capacity=1, slots_used=0)
    assert admit(Requirements(cpu=0.1, memory=0), v) is None


@PROPERTY
@given(req=requirements, views=view_lists, home=homes, policy=policies)
def test_fast_scores_and_lazy_reasons_agree_with_score(
    req: Requirements, views: list[ClusterView], home: str, policy: Policy
) -> None:
    """rank scores with `values` and explains lazily: both must equal what `score` says."""
    by_name = {v.name: v for v in views}
    ranked = rank(req, views, home=home, policy=policy).ranked
    batch = dict(zip(by_name, policy.values(req, views, home=home)))  # type: ignore[attr-defined]
    for c in ranked:
        score, reasons = policy.score(req, by_name[c.name], home=home)
        assert c.score == score == policy.value(req, by_name[c.name], home=home)  # type: ignore[attr-defined]
        assert c.score == batch[c.name]  # a member's score does not depend on the others in the call
        assert c.reasons == reasons


@PROPERTY
@given(req=requirements, views=view_lists, home=homes)
def test_balanced_value_matches_its_reference_formula(
    req: Requirements, views: list[ClusterView], home: str
) -> None:
    """The inlined `Balanced.value` against the weighted mean of the documented terms."""
    from placement.policies import Balanced, _headrooms, bandwidth_to_home, rtt_to_home

    policy = Balanced()
    for v in views:
        cpu, mem, slots = _headrooms(req, v)
        rtt, bw = rtt_to_home(v, home=home), bandwidth_to_home(v, home=home)
        rtt_v = 0.5 if rtt is None else 1.0 / (1.0 + rtt / 50.0)
        bw_v = 0.5 if bw is None else (1.0 if math.isinf(bw) else bw / (bw + 100.0))
        tier_v = {"cloud": 1.0, "edge": 2 / 3, "deep-edge": 1 / 3}.get(v.tier, 0.0)
        expected = 0.25 * cpu + 0.15 * mem + 0.10 * slots + 0.20 * rtt_v + 0.10 * bw_v + 0.20 * tier_v
        assert math.isclose(policy.value(req, v, home=home), expected, rel_tol=1e-9, abs_tol=1e-12)


def test_candidates_are_immutable_and_compare_by_value() -> None:
    from placement import Candidate

    eager = Candidate("a", 0.5, ("x",))
    lazy = Candidate("a", 0.5, explain=lambda view: ("x", view.name)[:1], view=BASE)
    assert eager == lazy and hash(eager) == hash(lazy) and "reasons=('x',)" in repr(lazy)
    with pytest.raises(AttributeError):
        eager.name = "b"  # type: ignore[misc]
    with pytest.raises(TypeError):
        Candidate("a", 0.5)
    with pytest.raises(TypeError):
        Candidate("a", 0.5, explain=lambda view: ("x",))  # nothing to explain


@PROPERTY
@given(req=requirements, views=view_lists, home=homes)
def test_a_policy_with_only_score_ranks_like_its_batch_form(
    req: Requirements, views: list[ClusterView], home: str
) -> None:
    """A policy offering only `score` (the Protocol's minimum) is ranked by it, reasons eager."""
    balanced = POLICIES["balanced"]

    class ScoreOnly:
        name = "score-only"

        def score(self, req: Requirements, view: ClusterView, *, home: str) -> tuple[float, tuple[str, ...]]:
            return balanced.score(req, view, home=home)

    assert rank(req, views, home=home, policy=ScoreOnly()) == rank(req, views, home=home, policy=balanced)
