"""Cross-cutting HTTP behaviour of the admin API: JSON errors, bearer-token auth, rate limit.

Every error leaves as JSON naming what was wrong; nothing escapes as an HTML page or a bare 500.
"""
from __future__ import annotations

import hashlib
import hmac
import json
import logging
import math
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import ClientPayloadError, web
from aiohttp.http_exceptions import HttpProcessingError

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
#: /v1/trust/ca is the public CA certificate; /v1/trust/enrol is authenticated by its one-time
#: join token (peer.trust.enrol); /v1/trust/join by the federation secret's HMAC (peer.trust.auto).
OPEN_PATHS = frozenset({"/v1/health", "/ui", "/v1/trust/ca", "/v1/trust/enrol", "/v1/trust/join"})
#: The dashboard's static files hold no secret; the API calls they make carry the token.
OPEN_PREFIXES = ("/peer/", "/ui/")
MAX_BODY = 64 * 1024
#: Admin requests per second per client IP, and the burst allowed above that rate.
RATE_LIMIT = 50.0
RATE_BURST = 100.0
#: Client IPs tracked at once; the least recently seen is forgotten first.
RATE_CLIENTS = 4096
#: A client's broken requests are logged at most once per this many seconds (per source).
BROKEN_LOG_INTERVAL = 60.0


class APIError(Exception):
    """An error with its HTTP status; `field` names the offending input when there is one."""

    status = 400

    def __init__(self, message: str, *, field: str | None = None, status: int | None = None,
                 extra: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field
        self.extra = extra or {}  # more fields for the JSON body (e.g. the workload `rule` refused)
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
        body = {**exc.extra, **error_body(exc.message, status=exc.status, field=exc.field)}
        return web.json_response(body, status=exc.status)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        reason = exc.text if exc.text and not exc.text.startswith(f"{exc.status}:") else exc.reason
        return json_error(reason, status=exc.status)
    except ConnectionResetError:
        # The client left mid-body (a truncated upload, a flood of them): nobody to answer, and
        # nothing of ours went wrong. One DEBUG line, no traceback: anyone can send these.
        log.debug("%s %s from %s: client disconnected mid-request", request.method, request.path,
                  request.remote)
        return json_error("client disconnected", status=400)
    except (ClientPayloadError, HttpProcessingError) as exc:  # a malformed body (chunking, encoding)
        _broken_requests.warn(request, exc)
        return json_error("malformed request body", status=400)
    except Exception:
        log.exception("unhandled error in %s %s", request.method, request.path)
        return json_error("internal error", status=500)


class BrokenRequestLog:
    """One WARNING per source per `interval` for malformed requests: a client sending garbage
    must not be able to flood the log. Bounded like the rate limiter (oldest forgotten first)."""

    def __init__(self, *, interval: float = BROKEN_LOG_INTERVAL, max_sources: int = RATE_CLIENTS,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.interval = interval
        self.max_sources = max_sources
        self._clock = clock
        self._last: OrderedDict[str, float] = OrderedDict()

    def should_log(self, source: str) -> bool:
        now = self._clock()
        last = self._last.get(source)
        if last is not None and now - last < self.interval:
            return False
        self._last[source] = now
        self._last.move_to_end(source)
        while len(self._last) > self.max_sources:
            self._last.popitem(last=False)
        return True

    def warn(self, request: web.Request, exc: Exception) -> None:
        source = request.remote or "?"
        if self.should_log(source):
            log.warning("malformed request %s %s from %s: %s (further ones from it muted for %.0fs)",
                        request.method, request.path, source, str(exc).splitlines()[0] if str(exc) else
                        type(exc).__name__, self.interval)


_broken_requests = BrokenRequestLog()


class ProtocolErrorFilter(logging.Filter):
    """aiohttp's own parser logs a malformed request (bad chunking, a bad header) at ERROR with
    a traceback before any middleware runs. Turn that into one WARNING line without the
    traceback, at most once per source per minute; real server errors pass unchanged."""

    def __init__(self, broken: BrokenRequestLog) -> None:
        super().__init__()
        self._broken = broken

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if not isinstance(exc, (HttpProcessingError, ConnectionResetError)):
            return True
        source = str(record.args[0]) if isinstance(record.args, tuple) and record.args else "?"
        if not self._broken.should_log(source):
            return False
        record.levelno, record.levelname = logging.WARNING, "WARNING"
        record.msg = "malformed request from %s: %s (further ones from it muted for %.0fs)"
        record.args = (source, (exc.message if isinstance(exc, HttpProcessingError) else str(exc)).split("\n")[0]
                       or type(exc).__name__, self._broken.interval)
        record.exc_info, record.exc_text = None, None
        return True


def quiet_protocol_errors(logger: logging.Logger | None = None) -> None:
    """Install `ProtocolErrorFilter` on aiohttp's server logger (once per process)."""
    target = logger or logging.getLogger("aiohttp.server")
    if not any(isinstance(f, ProtocolErrorFilter) for f in target.filters):
        target.addFilter(ProtocolErrorFilter(_broken_requests))


WHO_KEY = "audit_who"


def token_id(token: str) -> str:
    """A stable, non-secret name for a token (for the audit log): never the token itself."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()[:12]


def identify(request: web.Request, *, role: str, token: str) -> None:
    """Who is asking, once the token matched (read by peer.api.audit)."""
    request[WHO_KEY] = {"role": role, "token_id": token_id(token)}


ROLE_OPERATOR = "operator"
ROLE_READER = "reader"
#: What a reader token may do: read. Anything else is a 403 naming the role.
READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def bearer_auth_middleware(token: str, *, reader: str | None = None) -> Callable[..., Awaitable[web.StreamResponse]]:
    """Admin roles: `token` (--token-file) is the operator and may do everything; `reader`
    (--reader-token-file) may only read. Both are compared in constant time, every time."""
    tokens = [(f"Bearer {token}".encode(), ROLE_OPERATOR, token)]
    if reader is not None:
        tokens.append((f"Bearer {reader}".encode(), ROLE_READER, reader))

    @web.middleware
    async def auth(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path in OPEN_PATHS or request.path.startswith(OPEN_PREFIXES):
            return await handler(request)
        given = request.headers.get("Authorization", "").encode("utf-8", "replace")
        matched = [(role, value) for expected, role, value in tokens if hmac.compare_digest(given, expected)]
        if not matched:
            return web.json_response(
                error_body("missing or wrong bearer token", status=401),
                status=401,
                headers={"WWW-Authenticate": 'Bearer realm="roam"'},
            )
        role, value = matched[0]
        identify(request, role=role, token=value)
        if role == ROLE_READER and request.method not in READ_METHODS:
            body = error_body(f"role {role} may only read (GET); {request.method} needs the operator token",
                              status=403)
            return web.json_response({**body, "role": role}, status=403)
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
    """Parse a JSON body; 415/400 name the problem rather than passing garbage on.

    The body must say it is JSON (`Content-Type: application/json`, any charset): a form, a
    text/plain or a header-less body is a 415 (docs/security.md). A browser can send text/plain
    cross-origin without a preflight; requiring the JSON type keeps such a request from ever
    being read as a command, should a token ever leak into a page."""
    if "Content-Type" not in request.headers:
        raise APIError("Content-Type: application/json is required for a body", status=415)
    ctype = request.content_type
    if ctype != "application/json":
        raise APIError(f"expected Content-Type application/json, got {ctype}", status=415)
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


def bool_flag(body: Any, name: str) -> bool:
    """The one optional boolean of a small POST body (`{"force": true}`, `{"stop": true}`):
    callers pass {} when there is no body (a JSON null is not an object: 422); any other field
    or type is a 422 naming it."""
    if not isinstance(body, dict):
        raise APIError("expected a JSON object", status=422)
    unknown = sorted(set(body) - {name})
    if unknown:
        raise APIError(f"unknown field {unknown[0]!r}", field=unknown[0], status=422)
    value = body.get(name, False)
    if not isinstance(value, bool):
        raise APIError(f"{name} must be true or false", field=name, status=422)
    return value
