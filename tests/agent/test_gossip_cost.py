"""The idle cost of gossip follows the clusters an agent has business with, not the federation
(issue 18): what the fast poll and the coordinate rounds ask of Serf. Pure parts only; the
poll against a real Serf is in tests/serf/test_client.py."""
from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from peer.agent import backstop_round
from peer.federation.gossip import COORD_SWEEP, Gossip, watched_pattern
from peer.federation.membership import Membership

names = st.from_regex(r"\A[a-z][a-z0-9-]{0,8}[a-z0-9]\Z")


def test_nothing_watched_means_no_fast_poll() -> None:
    assert watched_pattern([], here="c1") is None
    assert watched_pattern(["c1"], here="c1") is None


def test_names_outside_the_cluster_alphabet_are_never_put_in_a_regex() -> None:
    assert watched_pattern(["c2", "a|.*", "x)"], here="c1") == "^(c2)$"


@settings(deadline=None)
@given(st.sets(names, max_size=20))
def test_the_pattern_lists_each_watched_name_once_in_order(watched: set[str]) -> None:
    pattern = watched_pattern(watched | {"here"}, here="here")
    expected = sorted(watched - {"here"})
    assert pattern == (None if not expected else "^(" + "|".join(expected) + ")$")


def _gossip_with(members: list[str], watched: set[str]) -> Any:
    """A Gossip without its Serf: only the round selection is exercised."""
    membership = Membership("c0")
    membership.observe([SimpleNamespace(name=n, addr="10.0.0.1", port=7946, tags={}, status="alive")
                        for n in ["c0", *members]], now=0.0)
    gossip = Gossip.__new__(Gossip)
    gossip.config = SimpleNamespace(name="c0")
    gossip.membership = membership
    gossip._watched = lambda: watched
    gossip._sweep = 0
    return gossip


def test_coordinate_rounds_read_the_watched_and_sweep_the_rest_in_turn() -> None:
    members = [f"c{i}" for i in range(1, 11)]
    gossip = _gossip_with(members, {"c3", "c7"})
    seen: set[str] = set()
    rounds = 0
    while seen != set(members) - {"c3", "c7"}:
        picked = gossip._coordinate_round()
        assert picked[:2] == ["c3", "c7"]  # every round
        assert len(picked) == 2 + COORD_SWEEP  # bounded, whatever the federation's size
        seen |= set(picked[2:])
        rounds += 1
    assert rounds == -(-8 // COORD_SWEEP)  # every other member within ceil(8 / sweep) rounds


def test_a_round_never_reads_a_member_twice() -> None:
    gossip = _gossip_with(["c1", "c2"], {"c1"})
    for _ in range(5):
        picked = gossip._coordinate_round()
        assert sorted(picked) == ["c1", "c2"]


@settings(deadline=None)  # a loaded 2-core machine: no per-example deadline
@given(st.lists(names, unique=True, max_size=30), st.lists(names, unique=True, max_size=30),
       st.integers(min_value=1, max_value=6), st.integers(min_value=1, max_value=8))
def test_the_backstop_is_bounded_and_reaches_every_peer_in_a_cycle(sharing: list[str], others: list[str],
                                                                     fanout: int, others_every: int) -> None:
    others = [o for o in others if o not in sharing]
    cycle = max(-(-len(sharing) // fanout), len(others) * others_every, 1)
    seen: set[str] = set()
    others_picked = 0
    for turn in range(cycle):
        picked = backstop_round(sharing, others, turn=turn, fanout=fanout, others_every=others_every)
        assert len(picked) <= fanout + 1 and len(set(picked)) == len(picked)
        others_picked += len(set(picked) & set(others))
        seen |= set(picked)
    assert seen == set(sharing) | set(others)
    assert others_picked == (-(-cycle // others_every) if others else 0)  # one every others_every rounds
