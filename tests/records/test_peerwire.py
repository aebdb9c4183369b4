"""The peer API codec and request signatures (no I/O)."""
from __future__ import annotations

import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st

from peer.peering.wire import (
    HEADER_NONCE,
    HEADER_SIGNATURE,
    HEADER_TIMESTAMP,
    NonceCache,
    PeerAuthError,
    PeerWireError,
    decode,
    encode,
    sign,
    verify,
)

SECRET = b"federation-secret-0123456789"
BODY = encode({"from": "a", "names": ["web"]})


def signed(**kw: object) -> dict[str, str]:
    args: dict[str, object] = {"method": "POST", "path": "/peer/v1/records/fetch", "body": BODY, "now": 1000.0}
    args.update(kw)
    return sign(SECRET, **args)  # type: ignore[arg-type]


def check(headers: dict[str, str], *, cache: NonceCache | None = None, secret: bytes = SECRET, **kw: object) -> None:
    args: dict[str, object] = {"method": "POST", "path": "/peer/v1/records/fetch", "body": BODY, "now": 1001.0}
    args.update(kw)
    verify(secret, headers=headers, seen_nonces=cache if cache is not None else NonceCache(), **args)  # type: ignore[arg-type]


plain = st.recursive(
    st.none() | st.booleans() | st.integers(-2**63, 2**64 - 1) | st.floats(allow_nan=False) | st.text() | st.binary(),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=5), inner, max_size=5),
    max_leaves=20,
)


@given(plain)
def test_codec_round_trip(obj: object) -> None:
    assert decode(encode(obj)) == obj


@given(st.binary(max_size=300))
def test_arbitrary_bytes_only_ever_raise_peer_wire_error(data: bytes) -> None:
    try:
        decode(data)
    except PeerWireError:
        pass


@given(plain, st.integers(0, 40), st.binary(max_size=4))
def test_corrupted_valid_bodies_only_raise_peer_wire_error(obj: object, cut: int, junk: bytes) -> None:
    data = encode(obj)
    for mutated in (data[:cut], data + junk, junk + data):
        try:
            decode(mutated)
        except PeerWireError:
            pass


@pytest.mark.parametrize("data", [
    b"", msgpack.packb({1: "int key"}), msgpack.packb(msgpack.ExtType(5, b"x")),
    msgpack.packb(1) + msgpack.packb(2), b"\x91" * 5000 + b"\xc0", b"\xc1",
])
def test_decode_refuses_non_plain_or_malformed(data: bytes) -> None:
    with pytest.raises(PeerWireError):
        decode(data)


def test_size_limits_apply_both_ways() -> None:
    with pytest.raises(PeerWireError):
        encode(b"x" * 100, max_bytes=50)
    with pytest.raises(PeerWireError):
        decode(encode(b"x" * 100), max_bytes=50)
    with pytest.raises(PeerWireError):
        encode(object())


def test_signed_request_verifies() -> None:
    headers = signed()
    assert set(headers) == {HEADER_TIMESTAMP, HEADER_NONCE, HEADER_SIGNATURE}
    check(headers)


@pytest.mark.parametrize("change", [
    {"secret": b"another-secret-of-the-same-size"}, {"method": "PUT"}, {"path": "/peer/v1/records/push"},
    {"body": BODY + b"\x00"},
])
def test_any_change_breaks_the_signature(change: dict[str, object]) -> None:
    with pytest.raises(PeerAuthError, match="bad signature"):
        check(signed(), **change)  # type: ignore[arg-type]


def test_tampered_headers_are_refused() -> None:
    for key, value in ((HEADER_SIGNATURE, "0" * 64), (HEADER_NONCE, "other"), (HEADER_TIMESTAMP, "1000.001")):
        headers = signed()
        headers[key] = value
        with pytest.raises(PeerAuthError):
            check(headers)
    for key in (HEADER_SIGNATURE, HEADER_NONCE, HEADER_TIMESTAMP):
        headers = signed()
        del headers[key]
        with pytest.raises(PeerAuthError, match="missing"):
            check(headers)
    with pytest.raises(PeerAuthError):
        check({**signed(), HEADER_TIMESTAMP: "nan"})


@pytest.mark.parametrize("now", [1031.0, 969.0])
def test_outside_the_window_is_refused(now: float) -> None:
    with pytest.raises(PeerAuthError, match="window"):
        check(signed(), now=now)
    check(signed(), now=1029.0)


def test_replay_within_the_window_is_refused() -> None:
    cache = NonceCache()
    headers = signed()
    check(headers, cache=cache)
    with pytest.raises(PeerAuthError, match="replayed"):
        check(headers, cache=cache, now=1030.0)  # last instant of the window: still remembered
    with pytest.raises(PeerAuthError, match="window"):
        check(headers, cache=cache, now=1031.0)  # after it: refused by the clock instead


def test_forged_requests_do_not_fill_the_cache_and_a_full_cache_fails_closed() -> None:
    cache = NonceCache(max_size=2)
    for _ in range(5):
        with pytest.raises(PeerAuthError):
            check(signed(), cache=cache, secret=b"wrong-secret-wrong-secret")
    assert len(cache) == 0
    check(signed(), cache=cache)
    check(signed(), cache=cache)
    with pytest.raises(PeerAuthError, match="too many"):
        check(signed(), cache=cache)
    check(signed(now=1100.0), cache=cache, now=1101.0)  # old nonces expired and were purged
    assert len(cache) == 1


def test_clock_only_answers_round_trip_and_bad_ones_are_named() -> None:
    """The push reply's "clocks" (issue 16): packed [name, clock, stamps] each, checked strictly."""
    from peer.peering.wire import PeerWireError
    from peer.records import messages as msg
    from peer.records import vclock as vc
    from peer.records.record import Record, State

    clock = vc.increment(vc.increment(vc.fresh(), "a", timestamp=1.0), "b~1f", timestamp=2.0)
    r = Record(name="web", home="a", location="a", state=State.RUNNING, digest="d", descriptor=b"", vclock=clock,
               stamps=(("b~1f", b"d" * 16, b"sig"),))
    body = msg.records_reply([], conflicts=1, clocks=[r])
    assert msg.parse_clocks(body) == [("web", clock, r.stamps)] and msg.parse_records_reply(body) == []
    assert msg.parse_clocks(msg.records_reply([r])) == []  # (none: an older server, or nothing to say)
    for bad, where in ((["web"], "clocks[0]"), ([b"\xc1"], "clocks[0]"),
                       ([msgpack.packb(["web", [["a", 0, 1.0]], []])], "clocks[0].vclock"),
                       ([msgpack.packb(["web", [], [["b", 3, b"s"]]])], "clocks[0].stamps")):
        with pytest.raises(PeerWireError) as info:
            msg.parse_clocks({"records": [], "clocks": bad})
        assert str(info.value).startswith(where), info.value
    assert msg.push_takes_clocks(msg.push_request(sender="a", records=[], clocks=True))
    assert not msg.push_takes_clocks(msg.push_request(sender="a", records=[]))
    with pytest.raises(PeerWireError, match="clocks"):
        msg.push_takes_clocks({"from": "a", "records": [], "clocks": 1})
