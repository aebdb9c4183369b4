"""Cross-cutting HTTP behaviour of the admin API: JSON errors and bearer-token auth.

Every error leaves as JSON naming what was wrong; nothing escapes as an HTML page or a bare 500.
"""
from __future__ import annotations

import hmac
import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
OPEN_PATHS = frozenset({"/v1/health"})
MAX_BODY = 64 * 1024


class APIError(Exception):
    """An error with its HTTP status; `field` names the offending input when there is one."""

    status = 400

    def __init__(self, message: str, *, field: str | None = None, status: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field
        if status is not None:
            self.status = status


class NotFound(APIError):
    status = 404


class ConflictError(APIError):
    status = 409


class Unavailable(APIError):
    status = 503


def error_body(message: str, *, status: int, field: str | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"error": message, "status": status}
    if field is not None:
        body["field"] = field
    return body


def json_error(message: str, *, status: int, field: str | None = None) -> web.Response:
    return web.json_response(error_body(message, status=status, field=field), status=status)


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except APIError as exc:
        return json_error(exc.message, status=exc.status, field=exc.field)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        reason = exc.text if exc.text and not exc.text.startswith(f"{exc.status}:") else exc.reason
        return json_error(reason, status=exc.status)
    except Exception:
        log.exception("unhandled error in %s %s", request.method, request.path)
        return json_error("internal error", status=500)


def bearer_auth_middleware(token: str) -> Callable[..., Awaitable[web.StreamResponse]]:
    expected = f"Bearer {token}".encode()

    @web.middleware
    async def auth(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path in OPEN_PATHS or request.path.startswith("/peer/"):
            return await handler(request)
        given = request.headers.get("Authorization", "").encode("utf-8", "replace")
        if not hmac.compare_digest(given, expected):
            return web.json_response(
                error_body("missing or wrong bearer token", status=401),
                status=401,
                headers={"WWW-Authenticate": 'Bearer realm="roam"'},
            )
        return await handler(request)

    return auth


async def read_json(request: web.Request) -> Any:
    """Parse a JSON body; 415/400 name the problem rather than passing garbage on."""
    ctype = request.content_type
    if ctype not in ("application/json", "application/octet-stream", "text/plain", ""):
        raise APIError(f"expected application/json, got {ctype}", status=415)
    if request.content_length is not None and request.content_length > MAX_BODY:
        raise APIError(f"body over {MAX_BODY} bytes", status=413)
    raw = await request.content.read(MAX_BODY + 1)
    if len(raw) > MAX_BODY:
        raise APIError(f"body over {MAX_BODY} bytes", status=413)
    if not raw:
        raise APIError("request body is empty; expected JSON")
    try:
        return json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise APIError(f"body is not valid JSON: {exc}") from exc
