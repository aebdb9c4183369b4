"""The rules of keeping the automatic CA on several clusters (peer.trust.keeping), property-tested:
the CA order is total and a lone founder yields only to an older CA; deputies are picked by one
keeper only and never push the count past the goal; two keepers' indexes merge to the same union
whatever the order, and a revocation is never lost in a merge."""
from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from peer.trust.ca import Issued
from peer.trust.keeping import CaId, deputies, lone, merge_index, older_ca, revoke_listed

names = st.sampled_from([f"c{i}" for i in range(8)])
ca_ids = st.builds(CaId, st.integers(0, 2**40), st.text("0123456789abcdef", min_size=8, max_size=8))
stamps = st.sampled_from([None, "2026-12-07T06:00:00+00:00", "2026-12-07T07:00:00+00:00"])
# A serial names one certificate: its cluster and expiry follow from it (the CA's serials are random).
issued = st.builds(lambda serial, at: Issued(serial, f"c{serial % 8}", "2027-03-01T00:00:00+00:00", at),
                   st.integers(1, 40), stamps)
indexes = st.lists(issued, max_size=12).map(lambda xs: list({i.serial: i for i in xs}.values()))


@given(ca_ids)
def test_a_ca_id_survives_its_tag(ca: CaId) -> None:
    assert CaId.decode(ca.encode()) == ca
    assert len(ca.encode()) <= 20


def test_malformed_tags_are_no_ca() -> None:
    for text in (None, "", "1", "x.12345678", "1.1234567", "1.12345678.9", "1.1234567g"):
        assert CaId.decode(text) is None, text


@given(ca_ids, st.lists(st.one_of(st.none(), ca_ids), max_size=6))
def test_a_lone_founder_yields_only_to_the_oldest_older_ca(own: CaId, seen: list[CaId | None]) -> None:
    target = older_ca(own, seen)
    older = [s for s in seen if s is not None and s < own]
    if not older:
        assert target is None
    else:
        assert target == min(older) and target < own


@given(names, st.sets(names, max_size=8), st.sets(names, max_size=8), st.integers(1, 5))
def test_one_keeper_picks_deputies_and_never_past_the_goal(here: str, keepers: set[str], alive: set[str],
                                                            want: int) -> None:
    keepers = keepers | {here}
    picked = deputies(here, keepers, alive, want)
    if here != min(keepers):
        assert picked == []  # only the first keeper by name acts: no two hand-overs at once
    assert not set(picked) & keepers and set(picked) <= alive
    assert len(keepers) + len(picked) <= max(want, len(keepers))
    if here == min(keepers):
        assert len(picked) == min(max(0, want - len(keepers)), len(alive - keepers))
        assert picked == sorted(picked)


@given(indexes, indexes)
def test_merging_indexes_is_order_free_and_keeps_every_revocation(a: list[Issued], b: list[Issued]) -> None:
    merged = merge_index(a, b)
    assert merged == merge_index(b, a)
    assert merge_index(merged, a) == merged  # idempotent
    assert {i.serial for i in merged} == {i.serial for i in a} | {i.serial for i in b}
    revoked = {i.serial for i in a + b if i.revoked_at}
    assert {i.serial for i in merged if i.revoked_at} == revoked


@given(indexes, st.frozensets(st.integers(1, 40)))
def test_a_list_marks_what_it_revokes_and_nothing_else(index: list[Issued], serials: frozenset[int]) -> None:
    marked = revoke_listed(index, serials, at="2026-12-07T08:00:00+00:00")
    for before, after in zip(index, marked):
        if before.serial in serials:
            assert after.revoked_at == (before.revoked_at or "2026-12-07T08:00:00+00:00")
        else:
            assert after == before


def test_lone_means_issued_to_itself_only() -> None:
    own = Issued(1, "c1", "2027-01-01")
    assert lone([], "c1") and lone([own], "c1")
    assert not lone([own, Issued(2, "c2", "2027-01-01")], "c1")
