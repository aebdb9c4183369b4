"""The Kubernetes objects roam writes for a service, and how it reads their state back.

Pure: builds plain dict bodies (what the API server receives) and judges the client's model
objects it gets back. Every object carries `app.kubernetes.io/managed-by=roam`, so roam lists
and deletes only what it made, and the descriptor digest, so a repeated deploy of the same
descriptor is recognised as such.
"""
from __future__ import annotations

import hashlib
import re
from typing import Any

from peer.drivers.base import InstanceState
from peer.drivers.descriptor import ServiceDescriptor
from peer.drivers.quantity import millicores
from peer.errors import InvalidKind

MANAGED_BY = "app.kubernetes.io/managed-by"
SERVICE_LABEL = "roam.io/service"
HOME_LABEL = "roam.io/home"
DIGEST_ANNOTATION = "roam.io/digest"
# The roam service name when it is not the object's name: `name@home` (peer.records.naming) is
# no valid object name, and a service renamed so keeps its objects (Kubernetes renames nothing).
NAME_ANNOTATION = "roam.io/name"
OWNER = "roam"
SELECTOR_ALL = f"{MANAGED_BY}={OWNER}"
PORT_NAME = "service"

_DNS_1035 = re.compile(r"[a-z]([-a-z0-9]*[a-z0-9])?")
_LABEL_VALUE = re.compile(r"([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)?")


class ManifestError(InvalidKind, ValueError):
    """The descriptor cannot be expressed as Kubernetes objects."""


def selector(name: str) -> dict[str, str]:
    """Pod selector of a service's Deployment and Service (immutable once created)."""
    return {MANAGED_BY: OWNER, SERVICE_LABEL: name}


def labels(name: str, home: str) -> dict[str, str]:
    return {**selector(name), HOME_LABEL: home, "app.kubernetes.io/name": name}


def object_name(name: str) -> str:
    """The objects' name for a service deployed under `name`: itself, or for `base@home`
    "base-at-home" (shortened with a hash past 63 characters)."""
    base, at, home = name.partition("@")
    if not at:
        return name
    plain = f"{base}-at-{home}"
    if len(plain) <= 63:
        return plain
    return f"{base[:50].rstrip('-')}-{hashlib.sha256(name.encode()).hexdigest()[:12]}"


def roam_name(obj: Any) -> str:
    """The service an object (a client model) belongs to."""
    return str((obj.metadata.annotations or {}).get(NAME_ANNOTATION) or obj.metadata.name)


def check(descriptor: ServiceDescriptor, home: str) -> None:
    """What Kubernetes needs beyond a valid descriptor."""
    if descriptor.image is None:
        raise ManifestError(f"{descriptor.name}: the kubernetes driver needs an image")
    if not _DNS_1035.fullmatch(object_name(descriptor.name)):
        raise ManifestError(f"{descriptor.name}: a Kubernetes Service name must start with a letter (DNS-1035)")
    if len(home) > 63 or not _LABEL_VALUE.fullmatch(home):
        raise ManifestError(f"home cluster {home!r} is not a valid label value")


def _probe(descriptor: ServiceDescriptor) -> dict[str, Any]:
    health = descriptor.health
    action: dict[str, Any] = (
        {"httpGet": {"path": health.path, "port": descriptor.port}}
        if health is not None and health.path is not None
        else {"tcpSocket": {"port": descriptor.port}}
    )
    return {**action, "periodSeconds": 2, "timeoutSeconds": 1, "failureThreshold": 3}


def _annotations(descriptor: ServiceDescriptor) -> dict[str, str]:
    out = {DIGEST_ANNOTATION: descriptor.digest()}
    if object_name(descriptor.name) != descriptor.name:
        out[NAME_ANNOTATION] = descriptor.name
    return out


def deployment(descriptor: ServiceDescriptor, *, home: str, cluster: str, namespace: str) -> dict[str, Any]:
    """apps/v1 Deployment body. The descriptor's `command` is for the process driver, unused here."""
    annotations = _annotations(descriptor)
    service_name, name = descriptor.name, object_name(descriptor.name)
    resources = {"cpu": millicores(descriptor.cpu_cores), "memory": descriptor.memory}
    container = {
        "name": name,
        "image": descriptor.image,
        "ports": [{"name": PORT_NAME, "containerPort": descriptor.port, "protocol": "TCP"}],
        "env": [
            {"name": "ROAM_SERVICE", "value": service_name},
            {"name": "ROAM_HOME", "value": home},
            {"name": "ROAM_CLUSTER", "value": cluster},
            {"name": "ROAM_PORT", "value": str(descriptor.port)},
        ],
        "resources": {"requests": resources, "limits": dict(resources)},
        "readinessProbe": _probe(descriptor),
    }
    meta = {"labels": labels(name, home), "annotations": annotations}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": namespace, **meta},
        "spec": {
            "replicas": descriptor.replicas,
            "selector": {"matchLabels": selector(name)},
            "template": {"metadata": meta, "spec": {"containers": [container]}},
        },
    }


def service(descriptor: ServiceDescriptor, *, home: str, namespace: str) -> dict[str, Any]:
    """v1 Service of type NodePort: reachable on every node, so from other clusters."""
    name = object_name(descriptor.name)
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": name, "namespace": namespace, "labels": labels(name, home),
            "annotations": _annotations(descriptor),
        },
        "spec": {
            "type": "NodePort",
            "selector": selector(name),
            "ports": [{"name": PORT_NAME, "port": descriptor.port, "targetPort": descriptor.port, "protocol": "TCP"}],
        },
    }


def is_ours(obj: Any, name: str) -> bool:
    """Was this object (a client model) made by roam for service `name`?"""
    found = (getattr(obj.metadata, "labels", None) or {})
    return found.get(MANAGED_BY) == OWNER and found.get(SERVICE_LABEL) == name


def digest_of(obj: Any) -> str:
    return str((obj.metadata.annotations or {}).get(DIGEST_ANNOTATION, ""))


def home_of(obj: Any) -> str:
    return str((obj.metadata.labels or {}).get(HOME_LABEL, ""))


def deployment_state(dep: Any) -> tuple[InstanceState, str]:
    """Ready once the controller saw the current generation and enough replicas are ready."""
    wanted = dep.spec.replicas if dep.spec.replicas is not None else 1
    status = dep.status
    ready = (status.ready_replicas or 0) if status else 0
    observed = (status.observed_generation or 0) if status else 0
    for cond in (status.conditions or []) if status else []:
        if cond.type == "Progressing" and cond.status == "False" and cond.reason == "ProgressDeadlineExceeded":
            return InstanceState.FAILED, f"{cond.reason}: {cond.message or ''}".strip()
    if observed >= (dep.metadata.generation or 0) and ready >= wanted:
        return InstanceState.READY, ""
    return InstanceState.STARTING, f"{ready}/{wanted} replicas ready"


def node_port(svc: Any) -> int | None:
    for port in svc.spec.ports or []:
        if port.name == PORT_NAME and port.node_port:
            return int(port.node_port)
    return None


def node_host(nodes: list[Any]) -> str | None:
    """Address of a ready node: ExternalIP when it has one (reachable from other clusters), else InternalIP."""
    def ready(node: Any) -> bool:
        conds = (node.status.conditions or []) if node.status else []
        return any(c.type == "Ready" and c.status == "True" for c in conds)

    for node in sorted(nodes, key=lambda n: not ready(n)):
        addresses = {a.type: a.address for a in ((node.status.addresses or []) if node.status else [])}
        for kind in ("ExternalIP", "InternalIP"):
            if addresses.get(kind):
                return str(addresses[kind])
    return None
