"""Cross-cutting HTTP behaviour of the admin API: JSON errors, bearer-token auth, rate limit.

Every error leaves as JSON naming what was wrong; nothing escapes as an HTML page or a bare 500.
"""
from __future__ import annotations

import hmac
import json
import logging
import math
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
OPEN_PATHS = frozenset({"/v1/health", "/ui"})
#: The dashboard's static files hold no secret; the API calls they make carry the token.
OPEN_PREFIXES = ("/peer/", "/ui/")
MAX_BODY = 64 * 1024
#: Admin requests per second per client IP, and the burst allowed above that rate.
RATE_LIMIT = 50.0
RATE_BURST = 100.0
#: Client IPs tracked at once; the least recently seen is forgotten first.
RATE_CLIENTS = 4096


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
        if request.path in OPEN_PATHS or request.path.startswith(OPEN_PREFIXES):
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


@dataclass
class TokenBucket:
    """`rate` tokens per second up to `burst`; time is passed in, so this is plain arithmetic."""

    rate: float
    burst: float
    tokens: float
    updated: float

    def take(self, now: float) -> float:
        """Take one token: 0.0 if granted, else the seconds until one is available."""
        self.tokens = min(self.burst, self.tokens + max(0.0, now - self.updated) * self.rate)
        self.updated = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return 0.0
        return (1.0 - self.tokens) / self.rate


class RateLimiter:
    """One token bucket per client key, in a bounded LRU table. Forgetting a client only ever
    gives it a full bucket again, so the bound costs accuracy, never availability."""

    def __init__(self, *, rate: float = RATE_LIMIT, burst: float = RATE_BURST, max_clients: int = RATE_CLIENTS) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError("rate must be > 0 and burst >= 1")
        self.rate = rate
        self.burst = burst
        self.max_clients = max_clients
        self._buckets: OrderedDict[str, TokenBucket] = OrderedDict()

    def __len__(self) -> int:
        return len(self._buckets)

    def check(self, key: str, *, now: float) -> float:
        """0.0 to let a request from `key` through, else how long it should wait."""
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = TokenBucket(rate=self.rate, burst=self.burst, tokens=self.burst, updated=now)
            self._buckets[key] = bucket
            while len(self._buckets) > self.max_clients:
                self._buckets.popitem(last=False)
        else:
            self._buckets.move_to_end(key)
        return bucket.take(now)


def rate_limit_middleware(
    limiter: RateLimiter | None = None, *, clock: Callable[[], float] = time.monotonic
) -> Callable[..., Awaitable[web.StreamResponse]]:
    """429 (JSON, with Retry-After) for an admin client over its rate. Runs before the token
    check, so guessing tokens is throttled too. `/v1/health` (liveness probes) and the peer API
    (`/peer/`, HMAC-signed, replication must never be throttled) are exempt."""
    limits = limiter if limiter is not None else RateLimiter()

    @web.middleware
    async def rate_limit(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path == "/v1/health" or request.path.startswith("/peer/"):
            return await handler(request)
        wait = limits.check(request.remote or "?", now=clock())
        if wait > 0.0:
            retry = max(1, math.ceil(wait))
            return web.json_response(
                error_body(f"rate limit of {limits.rate:g} requests/s exceeded; retry in {retry}s", status=429),
                status=429,
                headers={"Retry-After": str(retry)},
            )
        return await handler(request)

    return rate_limit


async def _read_at_most(request: web.Request, limit: int) -> bytes:
    """The whole body, or 413 once it passes `limit` (a chunked body has no Content-Length,
    and one `read(n)` returns only what has arrived: stopping there would parse a prefix)."""
    chunks: list[bytes] = []
    size = 0
    while chunk := await request.content.read(limit + 1 - size):
        size += len(chunk)
        if size > limit:
            raise APIError(f"body over {limit} bytes", status=413)
        chunks.append(chunk)
    return b"".join(chunks)


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


async def read_json(request: web.Request) -> Any:
    """Parse a JSON body; 415/400 name the problem rather than passing garbage on."""
    ctype = request.content_type
    if ctype not in ("application/json", "application/octet-stream", "text/plain", ""):
        raise APIError(f"expected application/json, got {ctype}", status=415)
    if request.content_length is not None and request.content_length > MAX_BODY:
        raise APIError(f"body over {MAX_BODY} bytes", status=413)
    raw = await _read_at_most(request, MAX_BODY)
    if not raw:
        raise APIError("request body is empty; expected JSON")
    try:
        # NaN/Infinity are not JSON; ValueError also covers integers over Python's digit limit.
        return json.loads(raw, parse_constant=_refuse_constant)
    except ValueError as exc:
        raise APIError(f"body is not valid JSON: {exc}") from exc
    except RecursionError as exc:
        raise APIError("body is not acceptable JSON: nested too deeply") from exc
