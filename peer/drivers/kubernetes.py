"""The Kubernetes driver: a service is a Deployment plus a NodePort Service.

Uses the official `kubernetes` client (blocking; every call runs in a thread). API failures are
mapped onto the driver error tree so the agent's retry policy needs no Kubernetes knowledge:
409 Conflict, 401/403 Forbidden, 404 ServiceNotFound, 400/422 permanent, 429/5xx/connection
errors temporary. A housekeeping poll reports readiness changes through `on_event`.
"""
from __future__ import annotations

import asyncio
import builtins
import logging
import os
import time
from collections.abc import Callable
from typing import Any

import urllib3
from kubernetes import client as k8s
from kubernetes import config as k8s_config
from kubernetes.client.exceptions import ApiException
from kubernetes.config.config_exception import ConfigException

from peer.drivers import base, kube_objects
from peer.drivers.base import (
    Conflict,
    DeployFailed,
    DriverError,
    DriverTimeout,
    EventCallback,
    Forbidden,
    Instance,
    InstanceState,
    PermanentDriverError,
    ServiceNotFound,
    TemporaryDriverError,
)
from peer.drivers.descriptor import ServiceDescriptor
from peer.runtime.supervision import Supervisor

log = logging.getLogger(__name__)
_NODE_CACHE_SECONDS = 30.0


def map_api_error(exc: ApiException, what: str) -> DriverError:
    """The driver error for an API server answer (status 0 = no answer at all)."""
    status = exc.status or 0
    message = f"{what}: {status} {exc.reason or ''}".strip()
    if status == 404:
        return ServiceNotFound(message)
    if status == 409:
        return Conflict(message)
    if status in (401, 403):
        return Forbidden(message)
    if status == 429 or status >= 500 or status == 0:
        retry_after = (exc.headers or {}).get("Retry-After")
        try:
            delay = min(60.0, max(0.1, float(retry_after))) if retry_after else 1.0
        except ValueError:
            delay = 1.0
        return TemporaryDriverError(message, delay=delay)
    return PermanentDriverError(message)


class KubernetesDriver:
    """Drives one Kubernetes cluster (one namespace) through its API server."""

    name = "kubernetes"

    def __init__(
        self,
        *,
        cluster: str,
        namespace: str = "default",
        kubeconfig: str | None = None,
        context: str | None = None,
        node_address: str | None = None,
        on_event: EventCallback | None = None,
        poll_interval: float = 0.5,
        watch_interval: float | None = 5.0,
        request_timeout: tuple[float, float] = (3.0, 15.0),
    ) -> None:
        self._cluster = cluster
        self._ns = namespace
        self._kubeconfig = kubeconfig
        self._context = context
        self._node_address = node_address
        self._on_event = on_event
        self._poll = poll_interval
        self._watch_interval = watch_interval
        self._timeout = request_timeout
        self._api: k8s.ApiClient | None = None
        self._node_cache: tuple[float, str] | None = None
        self._seen: dict[str, InstanceState] = {}  # housekeeping: last state of each service
        self._listed: set[str] = set()  # housekeeping: names in the previous list
        self._deleting: set[str] = set()
        self._objects: dict[str, str] = {}  # service -> objects' name, where a rename kept them
        self._jobs = Supervisor("kubernetes")  # housekeeping, restarted after a failure

    # -- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        if self._api is None:
            self._api = await asyncio.to_thread(self._connect)
        if self._watch_interval and not self._jobs:
            interval = self._watch_interval
            self._jobs.loop("housekeeping", lambda: self._housekeep(interval))

    def _connect(self) -> k8s.ApiClient:
        try:
            if self._kubeconfig is None and "KUBERNETES_SERVICE_HOST" in os.environ:
                cfg = k8s.Configuration()
                k8s_config.load_incluster_config(client_configuration=cfg)
                return k8s.ApiClient(cfg)
            return k8s_config.new_client_from_config(
                config_file=self._kubeconfig, context=self._context, persist_config=False
            )
        except (ConfigException, OSError, ValueError) as exc:
            raise PermanentDriverError(f"cannot load Kubernetes configuration: {exc}") from exc

    async def stop(self) -> None:
        """Stop housekeeping; Deployments keep running."""
        await self._jobs.stop()
        if self._api is not None:
            api, self._api = self._api, None
            await asyncio.to_thread(api.close)

    # -- the Driver API --------------------------------------------------------------------

    async def deploy(self, descriptor: ServiceDescriptor, *, home: str) -> Instance:
        name = self._object(descriptor.name)
        try:
            kube_objects.check(descriptor, home)
        except kube_objects.ManifestError as exc:
            raise PermanentDriverError(str(exc)) from exc
        body = kube_objects.deployment(descriptor, home=home, cluster=self._cluster, namespace=self._ns)
        created = False
        try:
            dep = await self._call(self._apps.create_namespaced_deployment, self._ns, body, what=f"create {name}")
            created = True
        except Conflict:
            dep = await self._call(self._apps.read_namespaced_deployment, name, self._ns, what=f"read {name}")
            # Objects kept by a rename carry the digest of the old name: they are this service's.
            renamed_here = name != descriptor.name and kube_objects.roam_name(dep) == descriptor.name
            if not kube_objects.is_ours(dep, name) or (kube_objects.digest_of(dep) != descriptor.digest()
                                                       and not renamed_here):
                raise Conflict(f"deployment {self._ns}/{name} exists and is not this descriptor's") from None
        svc_body = kube_objects.service(descriptor, home=home, namespace=self._ns)
        try:
            try:
                svc = await self._call(self._core.create_namespaced_service, self._ns, svc_body, what=f"service {name}")
            except Conflict:
                svc = await self._call(self._core.read_namespaced_service, name, self._ns, what=f"service {name}")
                if not kube_objects.is_ours(svc, name):
                    raise Conflict(f"service {self._ns}/{name} exists and is not roam's") from None
        except PermanentDriverError:
            if created:  # never leave half a service behind
                await self._delete_object(self._apps.delete_namespaced_deployment, name, dep.metadata.uid)
            raise
        self._seen.setdefault(descriptor.name, InstanceState.STARTING)
        return await self._instance(dep, svc)

    async def wait_ready(self, name: str, *, timeout: float) -> Instance:
        deadline = time.monotonic() + timeout
        last = "no answer from the API server"
        while True:
            try:
                dep = await self._read_deployment(name)
                state, detail = kube_objects.deployment_state(dep)
                if state is InstanceState.READY:
                    return await self.status(name)
                if state is InstanceState.FAILED:
                    raise DeployFailed(f"{name}: {detail}", log_tail=detail)
                last = detail
            except TemporaryDriverError as exc:
                last = str(exc)
            if time.monotonic() + self._poll > deadline:
                raise DriverTimeout(f"{name} not ready within {timeout:.1f}s ({last})", delay=1.0)
            await asyncio.sleep(self._poll)

    async def status(self, name: str) -> Instance:
        dep = await self._read_deployment(name)
        obj = self._object(name)
        svc = await self._call(self._core.read_namespaced_service, obj, self._ns, what=f"service {name}")
        return await self._instance(dep, svc)

    async def endpoint(self, name: str) -> tuple[str, int]:
        obj = self._object(name)
        svc = await self._call(self._core.read_namespaced_service, obj, self._ns, what=f"service {name}")
        port = kube_objects.node_port(svc) if kube_objects.is_ours(svc, obj) else None
        if port is None:
            raise ServiceNotFound(f"{name}: no roam NodePort service")
        return await self._node_host(), port

    async def rename(self, old: str, new: str) -> None:
        """Kubernetes renames nothing (and `name@home` is no object name): the objects keep their
        name and are annotated with the new service name (kube_objects.NAME_ANNOTATION), so the
        pods keep serving and a later agent finds them under it."""
        obj = self._object(old)
        patch = {"metadata": {"annotations": {kube_objects.NAME_ANNOTATION: new}}}
        dep = await self._read_deployment(old)
        await self._call(self._apps.patch_namespaced_deployment, obj, self._ns, patch, what=f"rename {old}")
        svc = await self._call(self._core.read_namespaced_service, obj, self._ns, what=f"service {old}")
        if kube_objects.is_ours(svc, obj):
            await self._call(self._core.patch_namespaced_service, obj, self._ns, patch, what=f"rename {old}")
        self._objects[new] = dep.metadata.name
        self._objects.pop(old, None)
        if old in self._seen:
            self._seen[new] = self._seen.pop(old)
        log.info("renamed %s to %s (objects %s/%s kept)", old, new, self._ns, obj)

    async def delete(self, name: str) -> None:
        self._deleting.add(name)
        obj_name = self._object(name)
        try:
            for read, remove in (
                (self._apps.read_namespaced_deployment, self._apps.delete_namespaced_deployment),
                (self._core.read_namespaced_service, self._core.delete_namespaced_service),
            ):
                try:
                    obj = await self._call(read, obj_name, self._ns, what=f"read {name}")
                except ServiceNotFound:
                    continue
                if not kube_objects.is_ours(obj, obj_name):
                    raise Conflict(f"{self._ns}/{obj_name} is not managed by roam; not deleting it")
                await self._delete_object(remove, obj_name, obj.metadata.uid)
            self._seen.pop(name, None)
            self._objects.pop(name, None)
        finally:
            self._deleting.discard(name)

    async def list(self) -> builtins.list[Instance]:
        deps = await self._call(
            self._apps.list_namespaced_deployment, self._ns, label_selector=kube_objects.SELECTOR_ALL, what="list"
        )
        svcs = await self._call(
            self._core.list_namespaced_service, self._ns, label_selector=kube_objects.SELECTOR_ALL, what="list"
        )
        by_name = {s.metadata.name: s for s in svcs.items}
        for dep in deps.items:
            self._objects[kube_objects.roam_name(dep)] = dep.metadata.name
        return [await self._instance(d, by_name.get(d.metadata.name)) for d in deps.items]

    async def rewrite_lost_state(self) -> builtins.list[str]:
        return []  # the API server keeps every object: nothing derived lives on this host

    async def adopt(self) -> builtins.list[Instance]:
        """Kubernetes keeps running what roam made: list it and watch it from now on."""
        found = await self.list()
        self._seen.update({i.name: i.state for i in found})
        return found

    # -- internals -------------------------------------------------------------------------

    @property
    def _apps(self) -> k8s.AppsV1Api:
        return k8s.AppsV1Api(self._client())

    @property
    def _core(self) -> k8s.CoreV1Api:
        return k8s.CoreV1Api(self._client())

    def _client(self) -> k8s.ApiClient:
        if self._api is None:
            raise DriverError("kubernetes driver not started")
        return self._api

    async def _call(self, fn: Callable[..., Any], *args: Any, what: str, **kwargs: Any) -> Any:
        """One blocking API call in a thread, its failures mapped to driver errors."""
        try:
            return await asyncio.to_thread(fn, *args, _request_timeout=self._timeout, **kwargs)
        except ApiException as exc:
            raise map_api_error(exc, what) from exc
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            raise TemporaryDriverError(f"{what}: API server unreachable: {exc}", delay=2.0) from exc

    def _object(self, name: str) -> str:
        """The objects' name of service `name` (kube_objects.object_name, or kept by a rename)."""
        return self._objects.get(name) or kube_objects.object_name(name)

    async def _read_deployment(self, name: str) -> Any:
        obj = self._object(name)
        dep = await self._call(self._apps.read_namespaced_deployment, obj, self._ns, what=f"read {name}")
        if not kube_objects.is_ours(dep, obj) or kube_objects.roam_name(dep) != name:
            raise ServiceNotFound(f"{self._ns}/{obj} is not roam's service {name}")
        return dep

    async def _delete_object(self, remove: Callable[..., Any], name: str, uid: str | None) -> None:
        """Delete exactly the object we read (uid precondition); already gone is fine."""
        options: dict[str, Any] = {"propagationPolicy": "Background"}
        if uid:
            options["preconditions"] = {"uid": uid}
        try:
            await self._call(remove, name, self._ns, body=options, what=f"delete {name}")
        except ServiceNotFound:
            pass

    async def _node_host(self) -> str:
        if self._node_address:
            return self._node_address
        now = time.monotonic()
        if self._node_cache and now - self._node_cache[0] < _NODE_CACHE_SECONDS:
            return self._node_cache[1]
        nodes = await self._call(self._core.list_node, what="list nodes")
        host = kube_objects.node_host(nodes.items)
        if host is None:
            raise TemporaryDriverError("no node with an address", delay=5.0)
        self._node_cache = (now, host)
        return host

    async def _instance(self, dep: Any, svc: Any | None) -> Instance:
        state, detail = kube_objects.deployment_state(dep)
        port = kube_objects.node_port(svc) if svc is not None else None
        created = dep.metadata.creation_timestamp
        return Instance(
            name=kube_objects.roam_name(dep), home=kube_objects.home_of(dep), host=await self._node_host(),
            port=port or 0,
            state=state, uid=dep.metadata.uid, detail=detail or ("" if port else "no NodePort service"),
            started_at=created.timestamp() if created is not None else 0.0, digest=kube_objects.digest_of(dep),
        )

    async def _housekeep(self, interval: float) -> None:
        """Report readiness changes and Deployments removed behind roam's back."""
        while True:
            await asyncio.sleep(interval)
            try:
                deps = await self._call(
                    self._apps.list_namespaced_deployment, self._ns,
                    label_selector=kube_objects.SELECTOR_ALL, what="list",
                )
            except DriverError as exc:
                log.warning("kubernetes housekeeping: %s", exc)
                continue
            now = {kube_objects.roam_name(d): kube_objects.deployment_state(d) for d in deps.items}
            for name, (state, detail) in now.items():
                before = self._seen.get(name)
                self._seen[name] = state
                if state is InstanceState.READY and before is not InstanceState.READY:
                    self._emit(name, base.EVENT_READY, detail)
                elif before is InstanceState.READY and state is not InstanceState.READY:
                    self._emit(name, base.EVENT_UNREADY, detail)
            for name in sorted(self._listed - now.keys() - self._deleting):
                self._seen.pop(name, None)
                self._emit(name, base.EVENT_LOST, "deployment disappeared")
            self._listed = set(now)

    def _emit(self, name: str, kind: str, detail: str) -> None:
        log.info("service %s: %s %s", name, kind, detail)
        if self._on_event is not None:
            try:
                self._on_event(name, kind, detail)
            except Exception:
                log.exception("on_event callback failed for %s %s", name, kind)
