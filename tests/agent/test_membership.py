"""The membership view and the gossip tag codec, without Serf."""
from __future__ import annotations

from dataclasses import dataclass, field

import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st

from peer.federation.tags import Load, SelfTags, TagError, decode_load, decode_tags, encode_load, meaningful_change
from peer.federation.membership import Membership


@dataclass
class FakeMember:
    name: str
    addr: str = "127.0.0.1"
    port: int = 7946
    tags: dict[str, str] = field(default_factory=dict)
    status: str = "alive"


LOAD = Load(cpu_capacity=4, cpu_used=0.5, mem_capacity=2048, mem_used=128, slots_capacity=16, slots_used=1)


def test_first_observation_reports_every_member_as_new() -> None:
    view = Membership("c1")
    changes = view.observe([FakeMember("c1"), FakeMember("c2")], now=1.0, full=True)
    assert [(c.name, c.old, c.new) for c in changes] == [("c1", None, "alive"), ("c2", None, "alive")]


def test_status_transition_is_reported_once_and_since_moves() -> None:
    view = Membership("c1")
    view.observe([FakeMember("c2")], now=1.0)
    assert view.observe([FakeMember("c2")], now=2.0) == []
    changes = view.observe([FakeMember("c2", status="failed")], now=3.0)
    assert [(c.old, c.new) for c in changes] == [("alive", "failed")]
    member = view.get("c2")
    assert member is not None and member.since == 3.0
    assert view.rejoin_targets() == ["127.0.0.1:7946"]


def test_member_missing_from_full_list_becomes_left() -> None:
    view = Membership("c1")
    view.observe([FakeMember("c1"), FakeMember("c2")], now=1.0, full=True)
    changes = view.observe([FakeMember("c1")], now=2.0, full=True)
    assert [(c.name, c.new) for c in changes] == [("c2", "left")]
    assert view.counts()["left"] == 1 and view.counts()["alive"] == 1


def test_tags_decode_into_tier_api_and_load() -> None:
    tags = SelfTags(tier="edge", api_port=7070, load=LOAD).encode()
    view = Membership("c1")
    view.observe([FakeMember("c2", addr="127.0.0.12", tags=tags)], now=1.0)
    m = view.get("c2")
    assert m is not None
    api = m.as_api()
    assert api["tier"] == "edge" and api["api"] == "http://127.0.0.12:7070"
    assert api["load"] == LOAD.as_dict()


def test_malformed_tags_do_not_break_the_view() -> None:
    peer = decode_tags({"api": "99999", "ld": "x,y"})
    assert peer.api_port is None and peer.load is None


def test_tags_over_serf_limit_are_refused() -> None:
    with pytest.raises(TagError):
        SelfTags(tier="t" * 600, api_port=7070, load=LOAD).encode()


def test_meaningful_change_ignores_noise() -> None:
    assert meaningful_change(None, LOAD)
    assert not meaningful_change(LOAD, Load(4, 0.51, 2048, 130, 16, 1))
    assert meaningful_change(LOAD, Load(4, 0.5, 2048, 128, 16, 2))
    assert meaningful_change(LOAD, Load(4, 1.5, 2048, 128, 16, 1))


loads = st.builds(
    Load,
    cpu_capacity=st.floats(0, 1024).map(lambda x: round(x, 2)),
    cpu_used=st.floats(0, 1024).map(lambda x: round(x, 2)),
    mem_capacity=st.integers(0, 10**7),
    mem_used=st.integers(0, 10**7),
    slots_capacity=st.integers(0, 10**4),
    slots_used=st.integers(0, 10**4),
    bandwidth_mbps=st.none() | st.floats(0, 10**5).map(lambda x: round(x, 2)),
)


@given(loads)
def test_load_round_trips_and_fits_in_tags(load: Load) -> None:
    assert decode_load(encode_load(load)) == load
    tags = SelfTags(tier="deep-edge", api_port=65535, load=load).encode()
    assert len(msgpack.packb(tags)) <= 512


@given(st.text(max_size=80))
def test_decode_load_only_raises_tag_error(text: str) -> None:
    try:
        decode_load(text)
    except TagError:
        pass
