"""The audit log of admin writes: who changed what, when, and what came of it.

Every POST/PUT/PATCH/DELETE under /v1/ is appended to DATA/audit.log as one JSON line (mode
0600), whatever its outcome: done, refused by role (403), unauthenticated (401), rate-limited
(429) or failed. Who is the role and a token id (the first 12 hex digits of the token's
SHA-256: enough to tell tokens apart, useless to act with; never the token) and the remote
address; what is the method, path, service and target. Handlers add what only they know
(a created service's name, a migration's target) with `note()`.

`GET /v1/audit?limit=N` answers the newest N entries (default 100, at most 1000), to operator
and reader tokens alike: the log holds no secret, and a read-only token is what an auditor is
given. The file is rotated once (audit.log.1) when it passes `max_bytes`, so hostile clients,
already throttled by the rate limiter, cannot fill the disk.
"""
from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from aiohttp import web

from peer.api.http import WHO_KEY, APIError

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
WRITE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
AUDIT_FILE = "audit.log"
MAX_BYTES = 16 * 1024 * 1024
DEFAULT_LIMIT = 100
MAX_LIMIT = 1000
NOTE_KEY = "audit_note"


def note(request: web.Request, **fields: Any) -> None:
    """Add what a handler learnt (service name, target) to this request's audit entry."""
    request.setdefault(NOTE_KEY, {}).update({k: v for k, v in fields.items() if v is not None})


class AuditLog:
    """Append-only JSON lines, 0600, rotated once at `max_bytes`."""

    def __init__(self, path: Path, *, max_bytes: int = MAX_BYTES, clock: Callable[[], float] = time.time) -> None:
        self.path = path
        self.max_bytes = max_bytes
        self._clock = clock

    def append(self, entry: dict[str, Any]) -> None:
        line = (json.dumps({"time": round(self._clock(), 3), **entry}, sort_keys=True) + "\n").encode("utf-8")
        try:
            if self.path.exists() and self.path.stat().st_size + len(line) > self.max_bytes:
                self.path.replace(self.path.with_name(self.path.name + ".1"))
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            try:
                if os.fstat(fd).st_mode & 0o077:
                    os.fchmod(fd, 0o600)
                os.write(fd, line)  # one write with O_APPEND: lines never interleave
            finally:
                os.close(fd)
        except OSError as exc:  # the write itself is not undone; say loudly that it went unrecorded
            log.error("audit log %s not written (%s): %s", self.path, exc, line.decode().strip())

    def recent(self, limit: int) -> list[dict[str, Any]]:
        """The newest `limit` entries, newest first (from this file and, if needed, the rotated one)."""
        newest: list[bytes] = []
        for path in (self.path, self.path.with_name(self.path.name + ".1")):
            if len(newest) >= limit:
                break
            try:
                with open(path, "rb") as fh:
                    size = fh.seek(0, os.SEEK_END)
                    fh.seek(max(0, size - 1024 * limit))  # a window: its first line may be cut
                    chunk = fh.read().splitlines()
            except FileNotFoundError:
                continue
            newest += chunk[::-1][: limit - len(newest)]
        out = []
        for raw in newest:
            try:
                entry = json.loads(raw)
            except ValueError:
                continue  # a partial first line of the window
            if isinstance(entry, dict):
                out.append(entry)
        return out


def audit_middleware(audit: AuditLog) -> Callable[..., Awaitable[web.StreamResponse]]:
    """Outermost middleware: sees the final status of every admin write, refusals included."""

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.method not in WRITE_METHODS or not request.path.startswith("/v1/"):
            return await handler(request)
        status = 500
        try:
            response = await handler(request)
            status = response.status
            return response
        except web.HTTPException as exc:
            status = exc.status
            raise
        finally:
            audit.append(_entry(request, status))

    return middleware


def _entry(request: web.Request, status: int) -> dict[str, Any]:
    who = request.get(WHO_KEY) or {"role": None, "token_id": None}
    what: dict[str, Any] = {"method": request.method, "path": request.path}
    name = request.match_info.get("name")
    if name is not None:
        what["service"] = name[:63]
    what.update(request.get(NOTE_KEY, {}))
    return {"who": {**who, "remote": request.remote}, "what": what, "status": status,
            "outcome": "done" if status < 400 else "refused" if status < 500 else "failed"}


def add_audit_routes(app: web.Application, audit: AuditLog) -> None:
    async def recent(request: web.Request) -> web.Response:
        raw = request.query.get("limit", str(DEFAULT_LIMIT))
        try:
            limit = int(raw)
        except ValueError as exc:
            raise APIError("limit must be an integer", field="limit", status=400) from exc
        if not 1 <= limit <= MAX_LIMIT:
            raise APIError(f"limit must be between 1 and {MAX_LIMIT}", field="limit", status=400)
        return web.json_response(audit.recent(limit))

    app.router.add_get("/v1/audit", recent)
