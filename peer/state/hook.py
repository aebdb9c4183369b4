"""The wire protocol to a service's state hook (descriptor field `state`; README "State that follows a service").

    GET  path  [If-None-Match: etag]  -> 200 body + ETag   | 304 unchanged
    PUT  path  body + ETag: etag      -> 204 (or 200)      installs that state

The body is opaque bytes, at most `MAX_STATE_BYTES` (checked on the declared length and on
what actually arrives, so a hook that lies about its length cannot make roam buffer more).
Every failure is a specific `StateError`: the caller (deploy, migration, fail-safe, the
periodic pull) decides whether it refuses, aborts or retries later.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import aiohttp

from lb.hostport import join_hostport
from peer.errors import RoamError

MAX_STATE_BYTES = 16 * 1024 * 1024  # a state past this is refused: copying it would stall handovers
TIMEOUT = 10.0  # seconds for one GET or PUT (16 MiB over a slow link still fits)
_CHUNK = 256 * 1024


class StateError(RoamError):
    """The state hook of a service could not be used."""


class StateHookMissing(StateError):
    """The service answers 404 at its state path: the descriptor names a hook it lacks."""


class StateTooLarge(StateError):
    """The state is larger than the limit; `size` is what the hook declared or sent (bytes)."""

    def __init__(self, message: str, *, size: int, limit: int) -> None:
        super().__init__(message)
        self.size = size
        self.limit = limit


class StateHookFailed(StateError):
    """The hook answered, but not as the contract says (status, missing ETag)."""


class StateUnreachable(StateError, ConnectionError):
    """No answer from the copy (refused, reset, timed out)."""


class _Stale(StateUnreachable):
    """The connection broke mid-request (a pooled one the copy had closed): worth one retry."""


@dataclass(frozen=True)
class Snapshot:
    """One state as read from a copy: its bytes and the ETag the service gave them."""

    body: bytes
    etag: str

    @property
    def size(self) -> int:
        return len(self.body)


class StateHook(Protocol):
    """What the rest of roam needs of a service's state hook (a fake in unit tests)."""

    async def get(self, host: str, port: int, path: str, *, if_none_match: str | None = None) -> Snapshot | None: ...

    async def put(self, host: str, port: int, path: str, snapshot: Snapshot) -> None: ...

    async def close(self) -> None: ...


def _url(host: str, port: int, path: str) -> str:
    return f"http://{join_hostport(host, port)}{path}"


class HttpStateHook:
    """The hook over HTTP (aiohttp); one session, reused."""

    def __init__(self, *, limit: int = MAX_STATE_BYTES, timeout: float = TIMEOUT) -> None:
        self.limit = limit
        self.timeout = timeout
        self._session: aiohttp.ClientSession | None = None

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=self.timeout),
                connector=aiohttp.TCPConnector(limit=0, keepalive_timeout=5.0))
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    async def get(self, host: str, port: int, path: str, *, if_none_match: str | None = None) -> Snapshot | None:
        """The state, or None if it still has ETag `if_none_match` (304)."""
        try:
            return await self._get(host, port, path, if_none_match=if_none_match)
        except _Stale:
            return await self._get(host, port, path, if_none_match=if_none_match)

    async def _get(self, host: str, port: int, path: str, *, if_none_match: str | None) -> Snapshot | None:
        url = _url(host, port, path)
        headers = {"If-None-Match": if_none_match} if if_none_match else {}
        try:
            async with self._client().get(url, headers=headers) as resp:
                if resp.status == 304 and if_none_match:
                    return None
                if resp.status == 404:
                    raise StateHookMissing(f"state path {path} answers 404 at {host}:{port}")
                if resp.status != 200:
                    raise StateHookFailed(f"GET {path} at {host}:{port} answered {resp.status}")
                etag = resp.headers.get("ETag")
                if not etag:
                    raise StateHookFailed(f"GET {path} at {host}:{port} answered without an ETag")
                body = await self._read(resp, path)
                return Snapshot(body=body, etag=etag)
        except (aiohttp.ServerDisconnectedError, aiohttp.ClientOSError) as exc:
            raise _Stale(f"GET {path} at {host}:{port}: {exc!r}") from exc
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise StateUnreachable(f"GET {path} at {host}:{port}: {exc!r}") from exc

    async def _read(self, resp: aiohttp.ClientResponse, path: str) -> bytes:
        declared = resp.content_length
        if declared is not None and declared > self.limit:
            raise StateTooLarge(f"state at {path} is {declared} bytes, over the {self.limit}-byte limit",
                                size=declared, limit=self.limit)
        parts, total = [], 0
        async for chunk in resp.content.iter_chunked(_CHUNK):
            total += len(chunk)
            if total > self.limit:
                raise StateTooLarge(f"state at {path} is over the {self.limit}-byte limit (read {total} bytes)",
                                    size=total, limit=self.limit)
            parts.append(chunk)
        return b"".join(parts)

    async def put(self, host: str, port: int, path: str, snapshot: Snapshot) -> None:
        """Install `snapshot` (idempotent, so a request on a pooled connection the copy had
        closed is simply sent again, once)."""
        try:
            await self._put(host, port, path, snapshot)
        except _Stale:
            await self._put(host, port, path, snapshot)

    async def _put(self, host: str, port: int, path: str, snapshot: Snapshot) -> None:
        if snapshot.size > self.limit:
            raise StateTooLarge(f"state is {snapshot.size} bytes, over the {self.limit}-byte limit",
                                size=snapshot.size, limit=self.limit)
        url = _url(host, port, path)
        headers = {"Content-Type": "application/octet-stream", "ETag": snapshot.etag}
        try:
            async with self._client().put(url, data=snapshot.body, headers=headers) as resp:
                if resp.status == 404:
                    raise StateHookMissing(f"state path {path} answers 404 at {host}:{port}")
                if resp.status not in (200, 204):
                    raise StateHookFailed(f"PUT {path} at {host}:{port} answered {resp.status}")
        except (aiohttp.ServerDisconnectedError, aiohttp.ClientOSError) as exc:
            raise _Stale(f"PUT {path} at {host}:{port}: {exc!r}") from exc
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise StateUnreachable(f"PUT {path} at {host}:{port}: {exc!r}") from exc

