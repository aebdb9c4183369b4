"""Properties: untrusted input only ever fails as DescriptorError; valid ones round-trip exactly."""
from __future__ import annotations

import json
import random
from typing import Any

import msgpack
from hypothesis import given, settings
from hypothesis import strategies as st

from peer.drivers.descriptor import DescriptorError, ServiceDescriptor
from tests.drivers.test_descriptor import VALID

scalars = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=20),
    st.sampled_from(["500m", "128Mi", "1e3", "/healthz", "edge", "{port}", "nginx:1", "", "-"]),
)
jsonish = st.recursive(
    scalars, lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=10), inner, max_size=5),
    max_leaves=30,
)
field_names = st.sampled_from(sorted(VALID) + ["standby", "colour", "state"])


@st.composite
def mutated(draw: st.DrawFn) -> dict[str, Any]:
    """A valid descriptor with a few fields replaced by junk: reaches the deep checks."""
    obj = json.loads(json.dumps(VALID))
    for _ in range(draw(st.integers(1, 3))):
        key = draw(field_names)
        if draw(st.booleans()):
            obj.pop(key, None)
        else:
            obj[key] = draw(jsonish)
    return obj


def check_accepted(d: ServiceDescriptor) -> None:
    assert ServiceDescriptor.from_obj(d.to_obj()) == d
    assert ServiceDescriptor.from_msgpack(d.canonical_msgpack()) == d
    assert ServiceDescriptor.from_json(d.canonical_json()).digest() == d.digest()


@settings(max_examples=300, deadline=None)
@given(st.one_of(jsonish, mutated()))
def test_only_descriptor_errors(obj: Any) -> None:
    try:
        d = ServiceDescriptor.from_obj(obj)
    except DescriptorError as exc:
        assert exc.field
        return
    check_accepted(d)


def packed(obj: Any) -> bytes:
    try:
        data: bytes = msgpack.packb(obj, use_bin_type=True)
        return data
    except OverflowError:  # an integer msgpack cannot carry: no peer could send it
        return b""


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=200) | mutated().map(packed))
def test_msgpack_bytes_only_descriptor_errors(data: bytes) -> None:
    try:
        ServiceDescriptor.from_msgpack(data)
    except DescriptorError:
        pass


argchars = st.characters(exclude_categories=["Cs"], exclude_characters="\x00")  # what argv can carry
valid: st.SearchStrategy[dict[str, Any]] = st.fixed_dictionaries(
    {
        "name": st.from_regex(r"[a-z]([-a-z0-9]{0,20}[a-z0-9])?", fullmatch=True),
        "port": st.integers(1, 65535),
        "command": st.lists(st.text(argchars, min_size=1, max_size=30), min_size=1, max_size=5),
    },
    optional={
        "image": st.sampled_from(["nginx", "roam/classifier:1", "r.io:5000/a/b@sha256:" + "f" * 64]),
        "cpu": st.integers(1, 256) | st.sampled_from(["500m", "1", "0.25"]),
        "memory": st.sampled_from(["64Mi", "1G", "1e3", "1048576"]) | st.integers(1, 2**40),
        "replicas": st.integers(1, 100),
        "health": st.sampled_from([{"tcp": True}, {"path": "/"}, {"path": "/healthz?full=1"}]),
        "constraints": st.fixed_dictionaries({"tiers": st.lists(st.sampled_from(["edge", "fog", "cloud"]), unique=True)}),
        "standby": st.integers(0, 8),  # an integer; booleans are refused (issue 15)
        "state": st.fixed_dictionaries(
            {"path": st.from_regex(r"/[A-Za-z0-9_./-]{0,40}", fullmatch=True)},
            optional={"interval": st.floats(0.1, 3600.0) | st.integers(1, 3600)}),
    },
)


@settings(max_examples=200, deadline=None)
@given(valid, st.randoms(use_true_random=False))
def test_valid_descriptors_round_trip_and_digest_ignores_order(obj: dict[str, Any], rnd: random.Random) -> None:
    d = ServiceDescriptor.from_obj(obj)
    check_accepted(d)
    items = list(obj.items())
    rnd.shuffle(items)
    assert ServiceDescriptor.from_obj(dict(items)).digest() == d.digest()


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(st.sampled_from(["path", "interval", "every", "url"]), jsonish, max_size=3) | jsonish)
def test_state_hook_errors_name_a_state_field(state: Any) -> None:
    """Whatever `state` holds, it is accepted (and round-trips) or refused naming `state...`."""
    obj = {**json.loads(json.dumps(VALID)), "state": state}
    try:
        d = ServiceDescriptor.from_obj(obj)
    except DescriptorError as exc:
        assert exc.field == "state" or exc.field.startswith("state."), exc.field
        return
    check_accepted(d)
