"""Service descriptor: every bad field is refused by name; the canonical forms are byte-stable."""
from __future__ import annotations

import copy
import math
from typing import Any

import msgpack
import pytest

from peer.drivers.descriptor import DescriptorError, ServiceDescriptor
from peer.drivers.quantity import QuantityError, parse_quantity

VALID: dict[str, Any] = {
    "name": "classifier",
    "port": 8080,
    "command": ["python", "-m", "peer.samples.classifier", "--host", "{host}", "--port", "{port}"],
    "image": "roam/classifier:1",
    "cpu": "500m",
    "memory": "128Mi",
    "replicas": 1,
    "health": {"path": "/healthz"},
    "constraints": {"tiers": ["edge", "fog"]},
}
# Peers compare digests: changing the canonical form silently would split the federation.
# (Issue 15: `standby` became an integer left out when 0, as `entries` is when unset; records
# written before keep their stored digest, and their `"standby": false` still decodes as 0.)
GOLDEN_JSON = (
    b'{"command":["python","-m","peer.samples.classifier","--host","{host}","--port","{port}"],'
    b'"constraints":{"affinity":{},"tiers":["edge","fog"]},"cpu":0.5,"health":{"path":"/healthz"},'
    b'"image":"roam/classifier:1","memory":"128Mi","name":"classifier","port":8080,"replicas":1}'
)
GOLDEN_DIGEST = "sha256:0e26ea5e2fa5052d50e9bece8d8b411e815336bf0075d1b50f318c12b4826881"

_DROP = object()


def with_(**changes: Any) -> dict[str, Any]:
    obj = copy.deepcopy(VALID)
    for key, value in changes.items():
        if value is _DROP:
            obj.pop(key, None)
        else:
            obj[key] = value
    return obj


INVALID = [
    # (descriptor, field named by the error)
    (with_(colour="red"), "colour"),
    (with_(name=_DROP), "name"),
    (with_(name="Classifier"), "name"),
    (with_(name="-svc"), "name"),
    (with_(name="svc-"), "name"),
    (with_(name="a" * 64), "name"),
    (with_(name="a.b"), "name"),
    (with_(name=7), "name"),
    (with_(port=_DROP), "port"),
    (with_(port=0), "port"),
    (with_(port=65536), "port"),
    (with_(port=True), "port"),
    (with_(port="8080"), "port"),
    (with_(port=8080.0), "port"),
    (with_(port=2**200), "port"),
    (with_(command="python -m app"), "command"),
    (with_(command=[]), "command"),
    (with_(command={"0": "python"}), "command"),
    (with_(command=["python", 3]), "command[1]"),
    (with_(command=["python", "a\x00b"]), "command[1]"),
    (with_(command=["python", "\ud800"]), "command[1]"),
    (with_(command=[""]), "command[0]"),
    (with_(command=["x"] * 257), "command"),
    (with_(command=["x" * 4097]), "command[0]"),
    (with_(command=["x" * 4000] * 20), "command"),
    (with_(command=_DROP, image=_DROP), "command"),
    (with_(image="Roam/Classifier"), "image"),
    (with_(image="roam/classifier:"), "image"),
    (with_(image="a" * 300), "image"),
    (with_(image=3), "image"),
    (with_(cpu=0), "cpu"),
    (with_(cpu=-1), "cpu"),
    (with_(cpu=0.0001), "cpu"),
    (with_(cpu=257), "cpu"),
    (with_(cpu=math.nan), "cpu"),
    (with_(cpu=math.inf), "cpu"),
    (with_(cpu=True), "cpu"),
    (with_(cpu="lots"), "cpu"),
    (with_(cpu="500x"), "cpu"),
    (with_(cpu="1e999"), "cpu"),
    (with_(cpu=[1]), "cpu"),
    (with_(memory="128MB"), "memory"),
    (with_(memory="-1Mi"), "memory"),
    (with_(memory="0"), "memory"),
    (with_(memory="2Ti"), "memory"),
    (with_(memory="1e99"), "memory"),
    (with_(memory=1.5), "memory"),
    (with_(memory=math.inf), "memory"),
    (with_(memory=True), "memory"),
    (with_(memory="1" * 40), "memory"),
    (with_(standby=True), "standby"),  # an integer: a boolean is refused (DESIGN)
    (with_(standby=False), "standby"),
    (with_(standby=-1), "standby"),
    (with_(standby=9), "standby"),
    (with_(standby=1.0), "standby"),
    (with_(replicas=0), "replicas"),
    (with_(replicas=101), "replicas"),
    (with_(replicas=True), "replicas"),
    (with_(replicas=1.0), "replicas"),
    (with_(health="/healthz"), "health"),
    (with_(health={}), "health"),
    (with_(health={"path": "/x", "tcp": True}), "health"),
    (with_(health={"grpc": 1}), "health.grpc"),
    (with_(health={"path": "healthz"}), "health.path"),
    (with_(health={"path": "/a b"}), "health.path"),
    (with_(health={"path": "/" + "a" * 2000}), "health.path"),
    (with_(health={"path": 5}), "health.path"),
    (with_(health={"tcp": False}), "health.tcp"),
    (with_(health={"tcp": 1}), "health.tcp"),
    (with_(constraints=["edge"]), "constraints"),
    (with_(constraints={"zone": "a"}), "constraints.zone"),
    (with_(constraints={"tiers": "edge"}), "constraints.tiers"),
    (with_(constraints={"tiers": ["edge", "edge"]}), "constraints.tiers[1]"),
    (with_(constraints={"tiers": ["-edge"]}), "constraints.tiers[0]"),
    (with_(constraints={"tiers": [1]}), "constraints.tiers[0]"),
    (with_(constraints={"tiers": ["t"] * 33}), "constraints.tiers"),
    (with_(constraints={"affinity": ["a"]}), "constraints.affinity"),
    (with_(constraints={"affinity": {"zone": 1}}), "constraints.affinity.zone"),
    (with_(constraints={"affinity": {"bad key": "x"}}), "constraints.affinity.bad key"),
    (with_(constraints={"affinity": {"zone": "-x"}}), "constraints.affinity.zone"),
    (with_(standby="yes"), "standby"),
]


@pytest.mark.parametrize(("obj", "field"), INVALID, ids=[f"{i}-{f}" for i, (_, f) in enumerate(INVALID)])
def test_invalid_field_is_named(obj: dict[str, Any], field: str) -> None:
    with pytest.raises(DescriptorError) as info:
        ServiceDescriptor.from_obj(obj)
    assert info.value.field == field
    assert str(info.value).startswith(f"{field}: ")


@pytest.mark.parametrize("obj", [None, [], "classifier", 3, {1: "x"}])
def test_not_an_object(obj: object) -> None:
    with pytest.raises(DescriptorError) as info:
        ServiceDescriptor.from_obj(obj)
    assert info.value.field in ("descriptor", "1")


def test_unknown_fields_are_all_named() -> None:
    with pytest.raises(DescriptorError, match="colour, size") as info:
        ServiceDescriptor.from_obj(with_(size=1, colour="red"))
    assert info.value.field == "colour"


def test_valid_descriptor_values() -> None:
    d = ServiceDescriptor.from_obj(VALID)
    assert d.cpu_cores == 0.5
    assert d.memory_bytes == 128 * 2**20
    assert d.command[4] == "{host}"
    assert d.health is not None and d.health.path == "/healthz"
    assert d.constraints.tiers == ("edge", "fog")
    assert d.standby == 0


def test_defaults_for_a_minimal_descriptor() -> None:
    d = ServiceDescriptor.from_obj({"name": "a", "port": 1, "command": ["true"]})
    assert (d.cpu_cores, d.memory, d.replicas, d.health, d.image) == (0.1, "64Mi", 1, None, None)
    assert ServiceDescriptor.from_obj({"name": "b", "port": 1, "image": "nginx"}).command == ()


@pytest.mark.parametrize(
    ("memory", "size"),
    [("128Mi", 128 * 2**20), ("1G", 10**9), ("512M", 512 * 10**6), ("1e3", 1000), ("1.5Gi", 3 * 2**29),
     ("1k", 1000), ("100m", 1), (1048576, 2**20), ("1Ti", 2**40)],
)
def test_memory_quantities(memory: object, size: int) -> None:
    assert ServiceDescriptor.from_obj(with_(memory=memory)).memory_bytes == size


@pytest.mark.parametrize(("cpu", "cores"), [("500m", 0.5), (2, 2.0), ("0.25", 0.25), ("1", 1.0), (0.001, 0.001)])
def test_cpu_quantities(cpu: object, cores: float) -> None:
    assert ServiceDescriptor.from_obj(with_(cpu=cpu)).cpu_cores == cores


@pytest.mark.parametrize("text", ["", "1.2.3", "Mi", "1 Mi", "1MiB", "+1", "1e", "0x10"])
def test_bad_quantities(text: str) -> None:
    with pytest.raises(QuantityError):
        parse_quantity(text)


@pytest.mark.parametrize(
    "image",
    ["nginx", "nginx:1.25", "registry.local:5000/team/app:v1.2", "localhost/app", "a/b__c/d-e.f",
     "ghcr.io/x/y@sha256:" + "ab" * 32, "app:latest@sha256:" + "0" * 64],
)
def test_image_references(image: str) -> None:
    assert ServiceDescriptor.from_obj(with_(image=image)).image == image


def test_health_tcp() -> None:
    d = ServiceDescriptor.from_obj(with_(health={"tcp": True}))
    assert d.health is not None and d.health.tcp
    assert d.to_obj()["health"] == {"tcp": True}


def test_canonical_json_and_digest_are_golden() -> None:
    d = ServiceDescriptor.from_obj(VALID)
    assert d.canonical_json() == GOLDEN_JSON
    assert d.digest() == GOLDEN_DIGEST


def test_digest_ignores_key_order_and_spelling() -> None:
    reordered = dict(reversed(list(VALID.items())))
    reordered["cpu"] = 0.5  # "500m" and 0.5 are the same amount
    reordered["constraints"] = {"affinity": {}, "tiers": ["edge", "fog"]}
    assert ServiceDescriptor.from_obj(reordered).digest() == GOLDEN_DIGEST
    assert ServiceDescriptor.from_obj(with_(replicas=2)).digest() != GOLDEN_DIGEST


def test_round_trips() -> None:
    d = ServiceDescriptor.from_obj(VALID)
    assert ServiceDescriptor.from_obj(d.to_obj()) == d
    assert ServiceDescriptor.from_json(d.canonical_json()) == d
    assert ServiceDescriptor.from_msgpack(d.canonical_msgpack()) == d
    assert d.canonical_msgpack() == ServiceDescriptor.from_msgpack(d.canonical_msgpack()).canonical_msgpack()


@pytest.mark.parametrize(
    "data",
    [b"", b"\xc1", msgpack.packb([1, 2]), msgpack.packb(VALID) + b"\x00", b"\x81\xc4\x01a\x01",
     b"\xdd\xff\xff\xff\xff", b"\x91" * 100_000],
)
def test_from_msgpack_refuses_garbage(data: bytes) -> None:
    with pytest.raises(DescriptorError):
        ServiceDescriptor.from_msgpack(data)


def test_from_json_refuses_garbage() -> None:
    with pytest.raises(DescriptorError):
        ServiceDescriptor.from_json(b"{")
    with pytest.raises(DescriptorError):
        ServiceDescriptor.from_json("[" * 100_000)


@pytest.mark.parametrize("state, field", [
    ({"interval": 1.0}, "state.path"),
    ({"path": "roam/state"}, "state.path"),
    ({"path": "/roam/state?x=1"}, "state.path"),
    ({"path": "/" + "a" * 300}, "state.path"),
    ({"path": 7}, "state.path"),
    ({"path": "/s", "interval": "1"}, "state.interval"),
    ({"path": "/s", "interval": True}, "state.interval"),
    ({"path": "/s", "interval": 0.01}, "state.interval"),
    ({"path": "/s", "interval": 7200}, "state.interval"),
    ({"path": "/s", "every": 1}, "state.every"),
    ("/roam/state", "state"),
])
def test_state_hook_refused_naming_the_field(state: object, field: str) -> None:
    with pytest.raises(DescriptorError) as err:
        ServiceDescriptor.from_obj({**VALID, "state": state})
    assert err.value.field == field


def test_state_hook_round_trips() -> None:
    d = ServiceDescriptor.from_obj({**VALID, "state": {"path": "/roam/state", "interval": 2}})
    assert d.state is not None and d.state.path == "/roam/state" and d.state.interval == 2.0
    assert ServiceDescriptor.from_msgpack(d.canonical_msgpack()) == d
    assert ServiceDescriptor.from_obj({**VALID, "state": {"path": "/s"}}).state.interval == 1.0  # type: ignore[union-attr]
