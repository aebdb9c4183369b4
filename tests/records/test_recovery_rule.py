"""peer.copies.recovery.judge: a running copy no record accounted for at start is stopped only on
positive evidence from the records (here or at a peer), never on a guess."""
from __future__ import annotations

from dataclasses import replace

from peer.copies.recovery import judge
from peer.records.record import Record, State, tombstone_of
from peer.copies.manager import NameHolder


def record(location: str) -> Record:
    return Record(name="web", home="c1", location=location, state=State.RUNNING, digest="d", descriptor=b"x",
                  incarnation="1-a", homes=("c1", "c2"))


def holder(cluster: str, *, tombstone: bool = False) -> NameHolder:
    return NameHolder(cluster=cluster, home="c1", incarnation="1-a", tombstone=tombstone)


def test_a_record_that_says_here_adopts_the_copy() -> None:
    assert judge(record("c1"), here="c1", reached=True, holders=None).action == "adopt"
    assert judge(record("c1"), here="c1", reached=False, holders=None).action == "adopt"


def test_a_record_that_says_elsewhere_or_a_tombstone_stops_it() -> None:
    assert judge(record("c3"), here="c1", reached=True, holders=None).action == "stop"
    assert judge(tombstone_of(record("c1")), here="c1", reached=False, holders=None).action == "stop"


def test_without_any_peer_asked_the_copy_is_kept() -> None:
    assert judge(None, here="c1", reached=False, holders=None).action == "keep"
    assert judge(None, here="c1", reached=True, holders=None).action == "keep"


def test_peers_answer_for_a_name_we_hold_nothing_of() -> None:
    verdict = judge(None, here="c1", reached=True, holders=[holder("c2"), holder("c3", tombstone=True)])
    assert verdict.action == "stop" and "c2" in verdict.reason
    deleted = judge(None, here="c1", reached=True, holders=[holder("c3", tombstone=True)])
    assert deleted.action == "stop" and "deleted" in deleted.reason
    nowhere = judge(None, here="c1", reached=True, holders=[])
    assert nowhere.action == "keep" and "no cluster" in nowhere.reason


def test_the_rule_does_not_depend_on_the_record_state() -> None:
    for state in State:
        if state is not State.DELETED:
            assert judge(replace(record("c1"), state=state), here="c1", reached=True, holders=None).action == "adopt"
