"""The Kubernetes driver through the official client, against the in-process fake API server."""
from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes.client.exceptions import ApiException

from peer.drivers.base import (
    Conflict,
    DeployFailed,
    DriverTimeout,
    Forbidden,
    InstanceState,
    PermanentDriverError,
    ServiceNotFound,
    TemporaryDriverError,
)
from peer.drivers.descriptor import ServiceDescriptor
from peer.drivers.kubernetes import KubernetesDriver, map_api_error
from peer.runtime.waiting import wait_until
from tests.drivers.conftest import Events
from tests.drivers.fake_kube import NODE_IP, FakeKube

DEP = ("deployments", "default", "classifier")
SVC = ("services", "default", "classifier")


def descriptor(**extra: Any) -> ServiceDescriptor:
    return ServiceDescriptor.from_obj({
        "name": "classifier", "port": 8080, "image": "roam/classifier:1", "cpu": "500m", "memory": "128Mi",
        "health": {"path": "/healthz"}, **extra,
    })


@pytest.fixture
async def kube(fake_kube: tuple[FakeKube, Path], events: Events) -> AsyncIterator[tuple[FakeKube, KubernetesDriver]]:
    fake, kubeconfig = fake_kube
    driver = KubernetesDriver(cluster="k1", kubeconfig=str(kubeconfig), on_event=events,
                              poll_interval=0.05, watch_interval=0.1)
    await driver.start()
    try:
        yield fake, driver
    finally:
        await driver.stop()


async def test_create_ready_endpoint_delete(kube: tuple[FakeKube, KubernetesDriver]) -> None:
    fake, driver = kube
    inst = await driver.deploy(descriptor(), home="c1")
    assert inst.state is InstanceState.STARTING and inst.uid == fake.objects[DEP]["metadata"]["uid"]

    dep, svc = fake.objects[DEP], fake.objects[SVC]
    assert dep["metadata"]["labels"] == {
        "app.kubernetes.io/managed-by": "roam", "roam.io/service": "classifier", "roam.io/home": "c1",
        "app.kubernetes.io/name": "classifier",
    }
    assert dep["metadata"]["annotations"]["roam.io/digest"] == descriptor().digest()
    container = dep["spec"]["template"]["spec"]["containers"][0]
    assert container["image"] == "roam/classifier:1"
    assert container["resources"]["requests"] == {"cpu": "500m", "memory": "128Mi"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/healthz", "port": 8080}
    assert {"name": "ROAM_CLUSTER", "value": "k1"} in container["env"]
    assert svc["spec"]["type"] == "NodePort" and svc["spec"]["selector"] == dep["spec"]["selector"]["matchLabels"]

    with pytest.raises(DriverTimeout):
        await driver.wait_ready("classifier", timeout=0.3)
    fake.set_ready("classifier")
    ready = await driver.wait_ready("classifier", timeout=10)
    assert ready.state is InstanceState.READY
    node_port = svc["spec"]["ports"][0]["nodePort"]
    assert await driver.endpoint("classifier") == (NODE_IP, node_port) == ready.endpoint
    assert [i.name for i in await driver.list()] == ["classifier"]

    await driver.delete("classifier")
    assert DEP not in fake.objects and SVC not in fake.objects
    await driver.delete("classifier")  # idempotent
    with pytest.raises(ServiceNotFound):
        await driver.status("classifier")
    with pytest.raises(ServiceNotFound):
        await driver.endpoint("classifier")


async def test_deploy_is_idempotent_and_refuses_what_is_not_its_own(kube: tuple[FakeKube, KubernetesDriver]) -> None:
    fake, driver = kube
    first = await driver.deploy(descriptor(), home="c1")
    again = await driver.deploy(descriptor(), home="c1")
    assert again.uid == first.uid and again.port == first.port
    with pytest.raises(Conflict):
        await driver.deploy(descriptor(image="roam/classifier:2"), home="c1")

    # Somebody else's Deployment of the same name is neither taken over nor deleted.
    foreign = ServiceDescriptor.from_obj({"name": "web", "port": 80, "image": "nginx"})
    fake.handle("POST", "/apis/apps/v1/namespaces/default/deployments",
                b'{"metadata": {"name": "web"}, "spec": {"replicas": 1, "selector": {}, "template": {}}}',
                "Bearer fake-token")
    with pytest.raises(Conflict):
        await driver.deploy(foreign, home="c1")
    assert ("services", "default", "web") not in fake.objects
    with pytest.raises(Conflict):
        await driver.delete("web")
    assert ("deployments", "default", "web") in fake.objects


async def test_a_new_driver_adopts_what_runs(
    kube: tuple[FakeKube, KubernetesDriver], fake_kube: tuple[FakeKube, Path]
) -> None:
    fake, driver = kube
    await driver.deploy(descriptor(), home="c9")
    fake.set_ready("classifier")
    await driver.stop()
    again = KubernetesDriver(cluster="k1", kubeconfig=str(fake_kube[1]), watch_interval=None)
    await again.start()
    try:
        (inst,) = await again.adopt()
        assert (inst.name, inst.home, inst.state, inst.digest) == (
            "classifier", "c9", InstanceState.READY, descriptor().digest()
        )
        assert inst.endpoint == (NODE_IP, fake.objects[SVC]["spec"]["ports"][0]["nodePort"])
    finally:
        await again.stop()


async def test_api_errors_map_to_driver_errors(kube: tuple[FakeKube, KubernetesDriver]) -> None:
    fake, driver = kube
    fake.fail("POST", r".*/deployments", 403)
    with pytest.raises(Forbidden):
        await driver.deploy(descriptor(), home="c1")
    fake.fail("POST", r".*/deployments", 500)
    with pytest.raises(TemporaryDriverError) as info:
        await driver.deploy(descriptor(), home="c1")
    assert not isinstance(info.value, PermanentDriverError)
    assert DEP not in fake.objects

    # A refused Service rolls back the Deployment made in the same call: never half a service.
    fake.fail("POST", r".*/services", 403)
    with pytest.raises(Forbidden):
        await driver.deploy(descriptor(), home="c1")
    assert DEP not in fake.objects and SVC not in fake.objects

    fake.fail("GET", r".*/deployments/classifier", 409)
    await driver.deploy(descriptor(), home="c1")
    with pytest.raises(Conflict):
        await driver.status("classifier")


async def test_bad_descriptors_for_kubernetes(kube: tuple[FakeKube, KubernetesDriver]) -> None:
    fake, driver = kube
    with pytest.raises(PermanentDriverError, match="image"):
        await driver.deploy(ServiceDescriptor.from_obj({"name": "p", "port": 1, "command": ["x"]}), home="c1")
    with pytest.raises(PermanentDriverError, match="DNS-1035"):
        await driver.deploy(descriptor(name="1st"), home="c1")
    assert fake.calls == []


async def test_progress_deadline_is_a_failed_deploy(kube: tuple[FakeKube, KubernetesDriver]) -> None:
    fake, driver = kube
    await driver.deploy(descriptor(), home="c1")
    fake.set_progress_deadline_exceeded("classifier")
    with pytest.raises(DeployFailed, match="ProgressDeadlineExceeded"):
        await driver.wait_ready("classifier", timeout=10)
    assert (await driver.status("classifier")).state is InstanceState.FAILED


async def test_housekeeping_reports_readiness_changes(kube: tuple[FakeKube, KubernetesDriver], events: Events) -> None:
    fake, driver = kube
    await driver.deploy(descriptor(), home="c1")
    fake.set_ready("classifier")
    await wait_until(lambda: events.kinds("classifier") == ["ready"], timeout=10, what="ready event")
    fake.set_ready("classifier", 0)
    await wait_until(lambda: events.kinds("classifier") == ["ready", "unready"], timeout=10, what="unready event")
    with fake.lock:  # removed behind roam's back
        del fake.objects[DEP]
    await wait_until(lambda: events.kinds("classifier")[-1:] == ["lost"], timeout=10, what="lost event")


async def test_unreachable_api_server_is_temporary(tmp_path: Path) -> None:
    fake = FakeKube()
    kubeconfig = fake.kubeconfig(tmp_path / "kubeconfig", "http://127.0.4.3:9")  # nothing listens there
    driver = KubernetesDriver(cluster="k1", kubeconfig=str(kubeconfig), watch_interval=None,
                              request_timeout=(1.0, 1.0))
    await driver.start()
    try:
        with pytest.raises(TemporaryDriverError):
            await driver.list()
    finally:
        await driver.stop()


@pytest.mark.parametrize(
    ("status", "headers", "cls", "delay"),
    [(404, None, ServiceNotFound, None), (409, None, Conflict, None), (403, None, Forbidden, None),
     (401, None, Forbidden, None), (422, None, PermanentDriverError, None),
     (429, {"Retry-After": "7"}, TemporaryDriverError, 7.0), (503, None, TemporaryDriverError, 1.0),
     (500, {"Retry-After": "soon"}, TemporaryDriverError, 1.0)],
)
def test_status_mapping(status: int, headers: dict[str, str] | None, cls: type, delay: float | None) -> None:
    exc = ApiException(status=status, reason="x")
    exc.headers = headers
    mapped = map_api_error(exc, "call")
    assert type(mapped) is cls
    if delay is not None:
        assert isinstance(mapped, TemporaryDriverError) and mapped.delay == delay


async def test_a_renamed_service_keeps_its_objects_and_is_found_under_its_new_name(
    kube: tuple[FakeKube, KubernetesDriver], fake_kube: tuple[FakeKube, Path]
) -> None:
    """A concurrent creation renamed `name@home` (peer.records.naming): Kubernetes renames
    nothing, so the same Deployment and Service (same uid, same NodePort) serve under the new
    name, a new driver adopts them under it, and the old name no longer finds them."""
    fake, driver = kube
    first = await driver.deploy(descriptor(), home="c3")
    fake.set_ready("classifier")
    await driver.rename("classifier", "classifier@c3")
    renamed = await driver.status("classifier@c3")
    assert (renamed.name, renamed.uid, renamed.port) == ("classifier@c3", first.uid, first.port)
    with pytest.raises(ServiceNotFound):
        await driver.status("classifier")
    await driver.stop()
    again = KubernetesDriver(cluster="k1", kubeconfig=str(fake_kube[1]), watch_interval=None)
    await again.start()
    try:
        (inst,) = await again.adopt()
        assert (inst.name, inst.uid) == ("classifier@c3", first.uid)
        await again.delete("classifier@c3")
        assert DEP not in fake.objects and SVC not in fake.objects
    finally:
        await again.stop()


async def test_a_qualified_name_deploys_under_a_valid_object_name(kube: tuple[FakeKube, KubernetesDriver]) -> None:
    """A renamed service migrating to a Kubernetes cluster: objects `base-at-home`."""
    fake, driver = kube
    moved = ServiceDescriptor.from_obj({**descriptor().to_obj(), "name": "classifier@c3"})
    inst = await driver.deploy(moved, home="c3")
    assert inst.name == "classifier@c3"
    assert ("deployments", "default", "classifier-at-c3") in fake.objects
    again = await driver.deploy(moved, home="c3")  # idempotent under the qualified name
    assert again.uid == inst.uid
    await driver.delete("classifier@c3")
    assert ("deployments", "default", "classifier-at-c3") not in fake.objects
