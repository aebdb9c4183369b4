"""The peer API over HTTP: a signing msgpack client, and the server-side middleware and helpers.

One `PeerClient` per agent (it owns one aiohttp ClientSession, so connections to peers are
reused). Requests are signed with the federation secret (see peerwire); the server side checks
every request under `/peer/` before any handler runs and answers errors as msgpack
`{"error": message}`.
"""
from __future__ import annotations

import asyncio
import ssl
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol, Self

import aiohttp
from aiohttp import web
from yarl import URL

from peer.errors import RoamError
from peer.peering.wire import (
    CONTENT_TYPE,
    DEFAULT_MAX_BYTES,
    DEFAULT_WINDOW,
    HEADER_FROM,
    NonceCache,
    PeerAuthError,
    PeerWireError,
    decode,
    encode,
    sign,
    verify,
)
from peer.runtime.supervision import Supervisor

PEER_PREFIX = "/peer/"
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class PeerError(RoamError):
    """A peer-API call failed."""


class PeerUnreachable(PeerError, ConnectionError):
    """No answer: connection refused or reset, or timed out. Retry later or elsewhere."""


class PeerRefused(PeerError):
    """The peer answered 4xx: it will not do this (bad auth, bad input). Do not retry as is."""

    def __init__(self, status: int, message: str, *, rule: str | None = None) -> None:
        super().__init__(f"{status}: {message}")
        self.status = status
        self.message = message
        self.rule = rule  # the peer's workload-policy rule, on a 403 refusal (peer.trust.workload)


class PeerIdentityError(PeerRefused):
    """The server's certificate is revoked: the connection is closed before a request is sent."""


class PeerTLS(Protocol):
    """Per-cluster identity, client side (peer.trust.identity.Identity)."""

    def client_ssl(self, base_url: str) -> tuple[ssl.SSLContext, str | None]: ...

    def server_refusal(self, peercert: dict[str, Any] | None, url: str) -> str | None: ...


class PeerServerError(PeerError):
    """The peer answered 5xx."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"{status}: {message}")
        self.status = status
        self.message = message


class PeerBadReply(PeerError):
    """The peer answered 2xx with a body that is not acceptable msgpack."""


@dataclass(frozen=True)
class Exchange:
    reply: Any
    sent: int  # request body bytes
    received: int  # reply body bytes
    # The server's certificate as the TLS handshake verified it (`getpeercert()`), if any: the
    # cluster that answered, for what its own stamps say (peer/trust/signing.py, channel authority).
    peercert: dict[str, Any] | None = None


IDLE_CLOSE = 10.0  # seconds an idle connection to a peer this cluster has business with is kept for reuse
# ... and to any other peer: long enough for the calls a welcome or a catch-up makes one after
# the other, no longer. At start-up every member is called within seconds; kept for IDLE_CLOSE,
# their connections (TLS state and buffers) raised each agent's lasting RSS by about 1 MB at 50
# agents (bench/scale.py; issue 18).
BRIEF_CLOSE = 1.0


class PeerClient:
    def __init__(
        self,
        secret: bytes,
        *,
        max_bytes: int = DEFAULT_MAX_BYTES,
        clock: Callable[[], float] = time.time,
        sender: str | None = None,
        tls: PeerTLS | None = None,
        lasting: Callable[[str], bool] | None = None,
    ) -> None:
        self._secret = secret
        # Whether connections to a base URL are kept IDLE_CLOSE (a peer this cluster has business
        # with: the agent says, from the clusters its records name) or only BRIEF_CLOSE; None:
        # every one lasts.
        self._lasting = lasting
        self._max_bytes = max_bytes
        self._clock = clock
        self._sender = sender  # sent as X-Roam-From: under mTLS it must be the name our certificate holds
        self._tls = tls
        self._session: aiohttp.ClientSession | None = None
        self._brief: aiohttp.ClientSession | None = None  # the pool of BRIEF_CLOSE connections
        self._system_context: ssl.SSLContext | None = None
        self._retired: dict[aiohttp.ClientSession, asyncio.Task[None]] = {}  # closed after a grace
        self._jobs = Supervisor(f"{sender or 'peer'}:client")
        # Told the base URL of a peer whose certificate our CA does not verify (another CA: a
        # site rebuilt on an empty data dir that founded its own, peer.trust.keepers).
        self.on_foreign_certificate: list[Callable[[str], None]] = []

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        for session in (self._session, self._brief):
            if session is not None:
                await session.close()
        self._session = self._brief = None
        retired = list(self._retired)
        self._retired.clear()
        await self._jobs.stop()
        for old in retired:
            await old.close()

    def drop_connections(self, *, grace: float = 6.0) -> None:
        """Stop reusing pooled connections (a peer's certificate was revoked): new calls open
        new connections at once; calls in flight finish on the old ones, closed after `grace`."""
        retiring = [s for s in (self._session, self._brief) if s is not None and not s.closed]
        self._session = self._brief = None
        for old in retiring:
            self._retire(old, grace)

    def _retire(self, old: aiohttp.ClientSession, grace: float) -> None:
        async def close_later() -> None:
            await asyncio.sleep(grace)
            self._retired.pop(old, None)
            await old.close()

        self._retired[old] = self._jobs.spawn(close_later(), name="close-retired")

    def _get_session(self, base_url: str) -> aiohttp.ClientSession:
        """The pool for `base_url`. Idle keep-alive connections close after IDLE_CLOSE, or after
        BRIEF_CLOSE to a peer this cluster has no business with: it keeps connections only to
        those it works with, not one to every member (issue 18)."""
        if self._lasting is None or self._lasting(base_url):
            if self._session is None or self._session.closed:
                self._session = self._new_session(IDLE_CLOSE)
            return self._session
        if self._brief is None or self._brief.closed:
            self._brief = self._new_session(BRIEF_CLOSE)
        return self._brief

    def _new_session(self, keepalive: float) -> aiohttp.ClientSession:
        connector = (aiohttp.TCPConnector(keepalive_timeout=keepalive) if self._tls is None
                     else _IdentityConnector(self._tls, keepalive_timeout=keepalive))
        return aiohttp.ClientSession(auto_decompress=False, connector=connector)

    def _system_ssl(self) -> ssl.SSLContext:
        """A verifying context made on first use, with the trust store as the environment
        names it then (SSL_CERT_FILE): not aiohttp's default, built at import time, which the
        agent imports without the CA bundle (peer.runtime.lazyimport.lean_imports)."""
        if self._system_context is None:
            self._system_context = ssl.create_default_context()
        return self._system_context

    async def call(self, base_url: str, path: str, payload: object, *, timeout: float = 5.0) -> object:
        """POST `payload` as signed msgpack to `base_url + path`; the decoded reply."""
        return (await self.exchange(base_url, path, payload, timeout=timeout)).reply

    async def exchange(self, base_url: str, path: str, payload: object, *, timeout: float = 5.0) -> Exchange:
        """`call`, also reporting the bytes sent and received."""
        body = encode(payload, max_bytes=self._max_bytes)
        url = URL(base_url.rstrip("/") + path)
        headers = sign(self._secret, method="POST", path=url.raw_path_qs, body=body, now=self._clock())
        headers["Content-Type"] = CONTENT_TYPE
        if self._sender is not None:
            headers[HEADER_FROM] = self._sender
        tls: dict[str, Any] = {}
        if self._tls is not None:
            tls["ssl"], tls["server_hostname"] = self._tls.client_ssl(base_url)
        elif url.scheme == "https":  # --tls-cert without identity: the system's trust store
            tls["ssl"] = self._system_ssl()
        try:
            async with self._get_session(base_url).post(
                url, data=body, headers=headers, timeout=aiohttp.ClientTimeout(total=timeout), **tls
            ) as resp:
                peercert = _peercert(resp)
                raw = await self._read_limited(resp)
                status = resp.status
        except (TimeoutError, aiohttp.ClientConnectionError, aiohttp.ClientPayloadError) as exc:
            if isinstance(exc, aiohttp.ClientConnectorCertificateError):
                for callback in self.on_foreign_certificate:
                    callback(base_url)
            raise PeerUnreachable(f"{url}: {exc.__class__.__name__}: {exc}") from exc
        except aiohttp.ClientError as exc:
            raise PeerError(f"{url}: {exc.__class__.__name__}: {exc}") from exc
        if status >= 300:
            message = _error_message(raw)
            if 400 <= status < 500:
                raise PeerRefused(status, message, rule=_error_rule(raw))
            raise PeerServerError(status, message)
        try:
            reply = decode(raw, max_bytes=self._max_bytes)
        except PeerWireError as exc:
            raise PeerBadReply(f"{url}: {exc}") from exc
        return Exchange(reply, len(body), len(raw), peercert or None)

    async def _read_limited(self, resp: aiohttp.ClientResponse) -> bytes:
        chunks: list[bytes] = []
        size = 0
        async for chunk in resp.content.iter_chunked(64 * 1024):
            size += len(chunk)
            if size > self._max_bytes:
                raise PeerBadReply(f"reply exceeds {self._max_bytes} bytes")
            chunks.append(chunk)
        return b"".join(chunks)


def _peercert(resp: aiohttp.ClientResponse) -> dict[str, Any] | None:
    """The server's verified certificate on the connection that carried `resp`. A small reply
    arrives whole with its headers, and aiohttp hands the connection back to its pool before
    the caller sees the response (`resp.connection` is None then); its protocol (kept by the
    response since `start`, aiohttp 3.x) still holds the transport, open in the pool."""
    connection = resp.connection
    protocol = connection.protocol if connection is not None else getattr(resp, "_protocol", None)
    transport = getattr(protocol, "transport", None)
    peercert = transport.get_extra_info("peercert") if transport is not None else None
    return peercert if isinstance(peercert, dict) else None


class _IdentityConnector(aiohttp.TCPConnector):
    """Checks the server's certificate against the revocation list right after the handshake,
    before a request is sent on the connection. (aiohttp has no public hook at that point;
    `_wrap_create_connection` is where its own certificate-fingerprint option is checked too.)"""

    def __init__(self, tls: PeerTLS, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._tls = tls

    async def _wrap_create_connection(self, *args: Any, **kwargs: Any) -> Any:
        transport, protocol = await super()._wrap_create_connection(*args, **kwargs)
        host = kwargs.get("server_hostname") or "peer"
        refusal = self._tls.server_refusal(transport.get_extra_info("peercert"), str(host))
        if refusal is not None:
            transport.close()
            raise PeerIdentityError(403, refusal)
        return transport, protocol


def _error_rule(raw: bytes) -> str | None:
    try:
        body = decode(raw)
    except PeerWireError:
        return None
    rule = body.get("rule") if isinstance(body, dict) else None
    return rule if isinstance(rule, str) else None


def _error_message(raw: bytes) -> str:
    try:
        body = decode(raw)
    except PeerWireError:
        return raw[:200].decode("utf-8", "replace") or "(no body)"
    if isinstance(body, dict) and isinstance(body.get("error"), str):
        return str(body["error"])
    return repr(body)[:200]


# --- server side -----------------------------------------------------------------------------

def msgpack_response(obj: object, status: int = 200) -> web.Response:
    return web.Response(body=encode(obj), status=status, content_type=CONTENT_TYPE)


async def read_msgpack(request: web.Request, *, max_bytes: int = DEFAULT_MAX_BYTES) -> Any:
    """The decoded request body; PeerWireError (-> 400 through the middleware) if malformed."""
    return decode(await request.read(), max_bytes=max_bytes)


def peer_auth_middleware(
    secret: bytes,
    *,
    nonces: NonceCache | None = None,
    clock: Callable[[], float] = time.time,
    window: float = DEFAULT_WINDOW,
) -> Any:
    """aiohttp middleware: requests under /peer/ must be signed with `secret` (401 otherwise);
    a PeerWireError or HTTP error raised by a peer handler leaves as a msgpack error body.
    Note the app's `client_max_size` bounds peer bodies too: raise it for anti-entropy."""
    seen = nonces if nonces is not None else NonceCache()

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        if not request.path.startswith(PEER_PREFIX):
            return await handler(request)
        try:
            body = await request.read()
        except web.HTTPRequestEntityTooLarge as exc:
            return msgpack_response({"error": exc.text or "body too large"}, status=413)
        try:
            verify(secret, method=request.method, path=request.raw_path, body=body,
                   headers=request.headers, now=clock(), seen_nonces=seen, window=window)
        except PeerAuthError as exc:
            return msgpack_response({"error": str(exc)}, status=401)
        try:
            return await handler(request)
        except PeerWireError as exc:
            return msgpack_response({"error": str(exc)}, status=400)
        except web.HTTPException as exc:
            if exc.status < 400:
                raise
            return msgpack_response({"error": exc.reason}, status=exc.status)

    return middleware
