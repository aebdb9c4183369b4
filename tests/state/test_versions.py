"""Properties of roam's state version order (peer/state/versions.py)."""
from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from peer.state.versions import InstalledVersions, Version, may_install, observe

etags = st.sampled_from(['"1"', '"2"', '"3"', "abc", 'W/"x"'])


@settings(max_examples=300, deadline=None)
@given(st.lists(etags, max_size=40), st.integers(0, 100))
def test_sequence_grows_by_one_exactly_when_the_etag_changes(seen: list[str], floor: int) -> None:
    last: Version | None = None
    for etag in seen:
        version = observe(last, etag, floor=floor)
        if last is not None and last.etag == etag:
            assert version == last
        else:
            assert version.seq == max(last.seq if last else 0, floor) + 1
            assert version.seq > floor
        assert last is None or version.seq >= last.seq
        last = version


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["a", "b"]), st.integers(0, 30)), max_size=60))
def test_no_copy_ever_goes_back(pushes: list[tuple[str, int]]) -> None:
    """Pushes in any order (periodic pushes racing a migration's final copy): what each copy
    holds only ever grows, and it is always the newest version offered to it so far."""
    ledger = InstalledVersions()
    best: dict[str, int] = {}
    for copy, seq in pushes:
        before = ledger.get(copy)
        admitted = ledger.admit(copy, Version(seq, f'"{seq}"'))
        assert admitted == may_install(before, Version(seq, f'"{seq}"'))
        held = ledger.get(copy)
        assert held is not None
        assert before is None or held.seq >= before.seq
        best[copy] = max(best.get(copy, seq), seq)
        assert held.seq == best[copy]


class StewardsAndCopies(RuleBasedStateMachine):
    """Two stewards (a partition) observe the primary and push to one copy; with the record's
    `state_version` as the floor, the copy never receives a version older than it holds."""

    def __init__(self) -> None:
        super().__init__()
        self.last: dict[str, Version | None] = {"s1": None, "s2": None}
        self.record_floor = 0
        self.copy = InstalledVersions()
        self.history: list[int] = []

    @rule(steward=st.sampled_from(["s1", "s2"]), etag=etags)
    def pull(self, steward: str, etag: str) -> None:
        self.last[steward] = observe(self.last[steward], etag, floor=self.record_floor)

    @rule(steward=st.sampled_from(["s1", "s2"]))
    def commit(self, steward: str) -> None:
        v = self.last[steward]
        if v is not None:
            self.record_floor = max(self.record_floor, v.seq)

    @rule(steward=st.sampled_from(["s1", "s2"]))
    def push(self, steward: str) -> None:
        v = self.last[steward]
        if v is not None and self.copy.admit("copy", v):
            self.history.append(v.seq)

    @invariant()
    def never_backwards(self) -> None:
        assert self.history == sorted(self.history)
        assert len(set(self.history)) == len(self.history)


TestStewardsAndCopies = StewardsAndCopies.TestCase
