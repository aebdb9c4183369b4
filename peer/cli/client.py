"""How `roam` finds and calls an agent's admin API.

The address: `--api`, else `$ROAM_API`, else the agent running on this host (the hint file it
writes into its data dir, `DATA/agent.json`), else /etc/roam/agent.toml's `addr`, else
http://127.0.0.1:7070. The scheme and port are optional (`--api 127.0.2.5`). The token:
`--token-file`, else `$ROAM_TOKEN`, else the token file of the local agent found above.
"""
from __future__ import annotations

import ipaddress
import json
import os
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lb.hostport import join_hostport
from peer.errors import RoamError

DEFAULT_API = "http://127.0.0.1:7070"
DEFAULT_TIMEOUT = 30.0


class ClientError(RoamError, RuntimeError):
    """One line for the user; never a traceback."""


def normalize_api(text: str) -> str:
    """`127.0.2.5` -> `http://127.0.2.5:7070`; `https://h` keeps its scheme; bad input -> ClientError."""
    raw = text.strip()
    if not raw:
        raise ClientError("--api: empty address")
    if "://" not in raw:
        try:
            if ipaddress.ip_address(raw).version == 6:
                raw = f"[{raw}]"
        except ValueError:
            pass
        raw = "http://" + raw
    try:
        url = urllib.parse.urlsplit(raw)
        port = url.port
    except ValueError as exc:
        raise ClientError(f"--api: {text!r} is not an address ({exc})") from exc
    if url.scheme not in ("http", "https") or not url.hostname:
        raise ClientError(f"--api: {text!r} is not an http(s) address like 127.0.0.11 or http://IP:7070")
    return f"{url.scheme}://{join_hostport(url.hostname, port or 7070)}{url.path.rstrip('/')}"


@dataclass
class Target:
    api: str
    token_file: str | None  # from the local agent's hint, used only when no token was given
    source: str  # where the address came from (for error messages)
    data_dir: str | None = None
    ca_cert: str | None = None  # the local agent's federation CA (per-cluster identity): its https is checked with it


def resolve_target(api: str | None) -> Target:
    from peer.config import SYSTEM_CONFIG, api_from_config_file, find_local_agents

    if api:
        return Target(normalize_api(api), None, "--api")
    if os.environ.get("ROAM_API"):
        return Target(normalize_api(os.environ["ROAM_API"]), None, "$ROAM_API")
    hints = find_local_agents()
    if hints:
        h = hints[0]
        return Target(normalize_api(h["api"]), h.get("token_file"), f"the local agent {h.get('name')}",
                      h.get("data_dir"), h.get("ca_cert"))
    from_config = api_from_config_file(SYSTEM_CONFIG) if SYSTEM_CONFIG.exists() else None
    if from_config:
        return Target(normalize_api(from_config), None, str(SYSTEM_CONFIG))
    return Target(DEFAULT_API, None, "the default")


class Client:
    def __init__(self, *, api: str | None, token_file: str | None, timeout: float) -> None:
        self.target = resolve_target(api)
        self.api = self.target.api
        self._token_file = token_file
        self.timeout = timeout
        self.ssl_context: Any = None  # an ssl.SSLContext trusting a private CA (`roam ca push --ca-cert`)
        if self.target.ca_cert and self.api.startswith("https://"):
            import ssl

            try:
                self.ssl_context = ssl.create_default_context(cafile=self.target.ca_cert)
            except (OSError, ssl.SSLError) as exc:
                raise ClientError(f"CA of {self.target.source} ({self.target.ca_cert}) not readable: {exc}") from exc

    def token(self) -> str:
        if self._token_file:
            return _read_token(self._token_file, "--token-file")
        token = os.environ.get("ROAM_TOKEN", "")
        if token:
            return token
        if self.target.token_file:
            return _read_token(self.target.token_file, f"token of {self.target.source}")
        raise ClientError("no admin token: set ROAM_TOKEN or pass --token-file")

    def call(self, method: str, path: str, body: Any = None, *, api: str | None = None) -> Any:
        base = api or self.api
        data = None if body is None else json.dumps(body).encode()
        headers = {"Content-Type": "application/json"}
        if path != "/v1/health":  # the only open path
            headers["Authorization"] = f"Bearer {self.token()}"
        req = urllib.request.Request(base + path, data=data, method=method, headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=self.timeout, context=self.ssl_context) as resp:
                raw = resp.read()
        except urllib.error.HTTPError as exc:
            raise ClientError(f"{method} {path}: {exc.code} {_error_text(exc)}") from exc
        except TimeoutError as exc:
            raise ClientError(f"{base} did not answer within {self.timeout:g} s (--timeout)") from exc
        except (urllib.error.URLError, OSError, ValueError) as exc:
            reason = getattr(exc, "reason", exc)
            hint = "" if self.target.source == "--api" else f" (address from {self.target.source}; set --api or ROAM_API)"
            raise ClientError(f"cannot reach {base}: {reason}{hint}") from exc
        try:
            return json.loads(raw) if raw else None
        except ValueError as exc:
            raise ClientError(f"{method} {path}: the answer is not JSON") from exc

    def get(self, path: str, *, api: str | None = None) -> Any:
        return self.call("GET", path, api=api)


def _read_token(path: str, what: str) -> str:
    try:
        return Path(path).read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise ClientError(f"{what}: cannot read {path}: {exc.strerror}") from exc


def _error_text(exc: urllib.error.HTTPError) -> str:
    try:
        err = json.loads(exc.read())
        msg = str(err.get("error", exc.reason))
        field = err.get("field")
        if field and not msg.startswith(f"{field}:"):
            msg = f"{field}: {msg}"
        return msg
    except ValueError:
        return str(exc.reason)


def quote(name: str) -> str:
    return urllib.parse.quote(name, safe="")
