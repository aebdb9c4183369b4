"""A tiny in-process Kubernetes API server for the calls KubernetesDriver makes, nothing more.

Serves the real REST paths and bodies (Deployments, Services, Nodes; labelSelector on lists;
Status bodies for 404/409; uid preconditions on delete) on a loopback address, so the official
client runs unmodified against it. Knobs: `set_ready()` plays the Deployment controller,
`fail()` injects an error status, `calls` records every request.
"""
from __future__ import annotations

import itertools
import json
import re
import threading
import uuid
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

NODE_IP = "127.0.4.9"
TOKEN = "fake-token"

_ROUTES = [
    (re.compile(r"/apis/apps/v1/namespaces/([^/]+)/deployments(?:/([^/]+))?"), "deployments", "apps", "Deployment"),
    (re.compile(r"/api/v1/namespaces/([^/]+)/services(?:/([^/]+))?"), "services", "", "Service"),
]


def _status(code: int, reason: str, message: str, *, name: str = "", kind: str = "", group: str = "") -> dict[str, Any]:
    body: dict[str, Any] = {
        "kind": "Status", "apiVersion": "v1", "metadata": {},
        "status": "Success" if code < 300 else "Failure", "message": message, "reason": reason, "code": code,
    }
    if name:
        body["details"] = {"name": name, "group": group, "kind": kind}
    return body


def _merge(target: dict[str, Any], patch: dict[str, Any]) -> None:
    for key, value in patch.items():
        if isinstance(value, dict) and isinstance(target.get(key), dict):
            _merge(target[key], value)
        elif value is None:
            target.pop(key, None)
        else:
            target[key] = value


def _matches(labels: dict[str, str], selector: str) -> bool:
    for term in filter(None, selector.split(",")):
        if "!=" in term:
            key, value = term.split("!=", 1)
            if labels.get(key) == value:
                return False
        elif "=" in term:
            key, value = term.replace("==", "=").split("=", 1)
            if labels.get(key) != value:
                return False
        elif term not in labels:
            return False
    return True


class FakeKube:
    """State and knobs; `serve()` starts the HTTP server in a thread."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.objects: dict[tuple[str, str, str], dict[str, Any]] = {}  # (resource, ns, name) -> object
        self.calls: list[tuple[str, str]] = []
        self._failures: list[tuple[str, re.Pattern[str], int, int]] = []  # method, path, code, times
        self._node_ports = itertools.count(30000)
        self._server: ThreadingHTTPServer | None = None

    # knobs -----------------------------------------------------------------------------

    def set_ready(self, name: str, ready: int | None = None, *, namespace: str = "default") -> None:
        """What the Deployment controller would write once pods pass their readiness probe."""
        with self.lock:
            dep = self.objects[("deployments", namespace, name)]
            wanted = dep["spec"].get("replicas", 1)
            count = wanted if ready is None else ready
            dep["status"] = {
                "observedGeneration": dep["metadata"]["generation"], "replicas": wanted,
                "readyReplicas": count, "availableReplicas": count, "updatedReplicas": wanted,
            }

    def set_progress_deadline_exceeded(self, name: str, *, namespace: str = "default") -> None:
        with self.lock:
            dep = self.objects[("deployments", namespace, name)]
            dep["status"] = {
                "observedGeneration": dep["metadata"]["generation"], "replicas": 1, "unavailableReplicas": 1,
                "conditions": [{
                    "type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded",
                    "message": f'ReplicaSet "{name}-5d4f" has timed out progressing.',
                }],
            }

    def fail(self, method: str, path_regex: str, code: int, *, times: int = 1) -> None:
        """The next `times` requests matching method and path get `code` with a Status body."""
        with self.lock:
            self._failures.append((method, re.compile(path_regex), code, times))

    # serving ---------------------------------------------------------------------------

    def serve(self, host: str) -> str:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True

            def log_message(self, format: str, *args: Any) -> None:  # quiet
                pass

            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                code, body = fake.handle(self.command, self.path, raw, self.headers.get("Authorization", ""))
                data = json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_DELETE = do_PATCH = _handle

        self._server = ThreadingHTTPServer((host, 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        return f"http://{host}:{self._server.server_address[1]}"

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    def kubeconfig(self, path: Path, server: str) -> Path:
        path.write_text(json.dumps({
            "apiVersion": "v1", "kind": "Config", "current-context": "fake",
            "clusters": [{"name": "fake", "cluster": {"server": server}}],
            "users": [{"name": "fake", "user": {"token": TOKEN}}],
            "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "fake", "namespace": "default"}}],
        }))
        return path

    # the API ---------------------------------------------------------------------------

    def handle(self, method: str, target: str, raw: bytes, auth: str) -> tuple[int, dict[str, Any]]:
        url = urlsplit(target)
        with self.lock:
            self.calls.append((method, url.path))
            if auth != f"Bearer {TOKEN}":
                return 401, _status(401, "Unauthorized", "Unauthorized")
            for i, (m, pattern, code, times) in enumerate(self._failures):
                if m == method and pattern.fullmatch(url.path):
                    self._failures[i] = (m, pattern, code, times - 1)
                    if times <= 1:
                        del self._failures[i]
                    reason = {403: "Forbidden", 409: "Conflict", 429: "TooManyRequests"}.get(code, "InternalError")
                    return code, _status(code, reason, f"injected {code}")
            if method == "GET" and url.path == "/api/v1/nodes":
                return 200, self._nodes()
            for pattern, resource, group, kind in _ROUTES:
                match = pattern.fullmatch(url.path)
                if match:
                    ns, name = match.groups()
                    query = {k: v[0] for k, v in parse_qs(url.query).items()}
                    body = json.loads(raw) if raw else {}
                    return self._resource(method, resource, group, kind, ns, name, query, body)
            return 404, _status(404, "NotFound", "the server could not find the requested resource")

    def _resource(
        self, method: str, resource: str, group: str, kind: str, ns: str, name: str | None,
        query: dict[str, str], body: dict[str, Any],
    ) -> tuple[int, dict[str, Any]]:
        qualified = f"{resource}.{group}" if group else resource
        if name is None and method == "GET":
            items = [o for (r, n, _), o in sorted(self.objects.items()) if r == resource and n == ns
                     and _matches(o["metadata"].get("labels", {}), query.get("labelSelector", ""))]
            api = f"{group}/v1" if group else "v1"
            return 200, {"kind": f"{kind}List", "apiVersion": api, "metadata": {"resourceVersion": "1"}, "items": items}
        if name is None and method == "POST":
            name = body["metadata"]["name"]
            key = (resource, ns, name)
            if key in self.objects:
                msg = f'{qualified} "{name}" already exists'
                return 409, _status(409, "AlreadyExists", msg, name=name, kind=resource, group=group)
            self.objects[key] = obj = self._created(resource, ns, body)
            return 201, obj
        key = (resource, ns, name or "")
        if key not in self.objects:
            return 404, _status(404, "NotFound", f'{qualified} "{name}" not found', name=name or "", kind=resource,
                                group=group)
        if method == "GET":
            return 200, self.objects[key]
        if method == "PATCH":  # a merge patch (roam patches annotations only)
            _merge(self.objects[key], body)
            self.objects[key]["metadata"]["resourceVersion"] = str(int(self.objects[key]["metadata"]["resourceVersion"]) + 1)
            return 200, self.objects[key]
        if method == "DELETE":
            uid = ((body.get("preconditions") or {}).get("uid"))
            actual = self.objects[key]["metadata"]["uid"]
            if uid and uid != actual:
                msg = f"Precondition failed: UID in precondition: {uid}, UID in object meta: {actual}"
                return 409, _status(409, "Conflict", msg, name=name or "", kind=resource, group=group)
            gone = self.objects.pop(key)
            if resource == "services":  # the API server returns a deleted Service itself
                return 200, gone
            return 200, _status(200, "", "", name=name or "", kind=resource, group=group)
        return 405, _status(405, "MethodNotAllowed", "method not allowed")

    def _created(self, resource: str, ns: str, body: dict[str, Any]) -> dict[str, Any]:
        obj = json.loads(json.dumps(body))
        meta = obj["metadata"]
        meta.update(namespace=ns, uid=str(uuid.uuid4()), resourceVersion="1", generation=1,
                    creationTimestamp=datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"))
        if resource == "deployments":
            obj["status"] = {"observedGeneration": 1, "replicas": 0}
        else:
            obj["spec"]["clusterIP"] = "10.96.0.10"
            for port in obj["spec"]["ports"]:
                port.setdefault("nodePort", next(self._node_ports))
            obj["status"] = {"loadBalancer": {}}
        return obj

    def _nodes(self) -> dict[str, Any]:
        node = {
            "metadata": {"name": "node-1", "uid": "n1"},
            "status": {
                "addresses": [{"type": "InternalIP", "address": NODE_IP}, {"type": "Hostname", "address": "node-1"}],
                "conditions": [{"type": "Ready", "status": "True"}],
            },
        }
        return {"kind": "NodeList", "apiVersion": "v1", "metadata": {"resourceVersion": "1"}, "items": [node]}
