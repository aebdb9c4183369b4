"""Pure Kubernetes object building and judging, on the client's own model classes."""
from __future__ import annotations

from typing import Any

import pytest
from kubernetes import client as k8s

from peer.drivers import kube_objects
from peer.drivers.base import InstanceState
from peer.drivers.descriptor import ServiceDescriptor


def dep(generation: int, replicas: int, status: dict[str, Any]) -> Any:
    return k8s.V1Deployment.from_dict({
        "metadata": {"name": "a", "generation": generation},
        "spec": {"replicas": replicas, "selector": {}, "template": {}},
        "status": status,
    })


@pytest.mark.parametrize(
    ("generation", "replicas", "status", "state"),
    [
        (1, 1, {"observedGeneration": 1, "readyReplicas": 1}, InstanceState.READY),
        (1, 2, {"observedGeneration": 1, "readyReplicas": 1}, InstanceState.STARTING),
        (2, 1, {"observedGeneration": 1, "readyReplicas": 1}, InstanceState.STARTING),  # old generation's pods
        (1, 1, {}, InstanceState.STARTING),
        (1, 1, {"observedGeneration": 1, "conditions": [
            {"type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded", "message": "m"}]},
         InstanceState.FAILED),
        (1, 1, {"observedGeneration": 1, "readyReplicas": 1, "conditions": [
            {"type": "Progressing", "status": "True", "reason": "NewReplicaSetAvailable"}]}, InstanceState.READY),
    ],
)
def test_deployment_state(generation: int, replicas: int, status: dict[str, Any], state: InstanceState) -> None:
    assert kube_objects.deployment_state(dep(generation, replicas, status))[0] is state


def node(ready: str, addresses: dict[str, str]) -> Any:
    return k8s.V1Node.from_dict({
        "metadata": {"name": "n"},
        "status": {"addresses": [{"type": t, "address": a} for t, a in addresses.items()],
                   "conditions": [{"type": "Ready", "status": ready}]},
    })


def test_node_host_prefers_ready_nodes_and_external_addresses() -> None:
    assert kube_objects.node_host([node("False", {"InternalIP": "10.0.0.1"}),
                                   node("True", {"InternalIP": "10.0.0.2", "ExternalIP": "192.0.2.2"})]) == "192.0.2.2"
    assert kube_objects.node_host([node("True", {"InternalIP": "10.0.0.3", "Hostname": "n"})]) == "10.0.0.3"
    assert kube_objects.node_host([node("True", {"Hostname": "n"})]) is None


def test_tcp_probe_and_replicas_in_the_manifest() -> None:
    d = ServiceDescriptor.from_obj({"name": "a", "port": 9000, "image": "nginx", "replicas": 3, "cpu": 2,
                                    "memory": "1G", "health": {"tcp": True}})
    body = kube_objects.deployment(d, home="c1", cluster="k1", namespace="ns")
    container = body["spec"]["template"]["spec"]["containers"][0]
    assert body["spec"]["replicas"] == 3 and body["metadata"]["namespace"] == "ns"
    assert container["readinessProbe"]["tcpSocket"] == {"port": 9000}
    assert container["resources"]["limits"] == {"cpu": "2000m", "memory": "1G"}
    assert kube_objects.service(d, home="c1", namespace="ns")["spec"]["ports"][0]["targetPort"] == 9000


@pytest.mark.parametrize(("name", "home", "message"), [("a", "bad home", "home"), ("9a", "c1", "DNS-1035")])
def test_check_refuses(name: str, home: str, message: str) -> None:
    d = ServiceDescriptor.from_obj({"name": name, "port": 1, "image": "nginx"})
    with pytest.raises(kube_objects.ManifestError, match=message):
        kube_objects.check(d, home)


def test_object_names_of_qualified_services_are_valid_and_distinct() -> None:
    from peer.drivers.kube_objects import object_name

    assert object_name("web") == "web" and object_name("web@c3") == "web-at-c3"
    long_a, long_b = "a" * 60 + "@" + "c" * 30, "a" * 60 + "@" + "d" * 30
    for name in (long_a, long_b):
        assert len(object_name(name)) <= 63 and object_name(name)[0].isalpha()
    assert object_name(long_a) != object_name(long_b)
