"""The peer API's wire codec and request authentication. No I/O.

Bodies are msgpack with a size limit; decoding is strict (plain types only) and raises
PeerWireError for anything else, whatever the bytes.

Authentication: every request carries an HMAC-SHA256, keyed with the federation secret, over
(method, path, sha256(body), timestamp, nonce). The server refuses a timestamp outside a short
window and a nonce it has already seen within that window, so a captured request cannot be
replayed. All peers share one secret: it proves membership of the federation, not which peer
sent the request. Clocks of peers must agree within the window (NTP).
"""
from __future__ import annotations

import hashlib
import hmac
import math
import secrets
from collections import OrderedDict
from collections.abc import Mapping
from typing import Any

import msgpack

from peer.errors import InvalidKind, RoamError
from peer.packing import packb

CONTENT_TYPE = "application/msgpack"
DEFAULT_MAX_BYTES = 8 * 1024 * 1024
DEFAULT_WINDOW = 30.0
HEADER_TIMESTAMP = "X-Roam-Timestamp"
HEADER_NONCE = "X-Roam-Nonce"
HEADER_SIGNATURE = "X-Roam-Signature"
HEADER_FROM = "X-Roam-From"  # the sending cluster; checked against its certificate under mTLS (peer.trust)
_PLAIN = (type(None), bool, int, float, str, bytes)


class PeerWireError(InvalidKind, ValueError):
    """A body that is not acceptable peer-API msgpack (too big, malformed, wrong shape)."""


class PeerAuthError(RoamError):
    """A request whose signature, timestamp or nonce is refused."""


# --- codec ----------------------------------------------------------------------------------

def encode(obj: object, *, max_bytes: int = DEFAULT_MAX_BYTES) -> bytes:
    try:
        data: bytes = packb(obj, use_bin_type=True)
    except (TypeError, ValueError, OverflowError) as exc:
        raise PeerWireError(f"cannot encode: {exc}") from exc
    if len(data) > max_bytes:
        raise PeerWireError(f"body of {len(data)} bytes exceeds {max_bytes}")
    return data


def _reject_ext(code: int, data: bytes) -> object:
    raise PeerWireError(f"msgpack extension type {code} not accepted")


def _check_plain(obj: object) -> None:
    """Only nil, bool, int, float, str, bytes, arrays and maps with str keys (iterative)."""
    stack = [obj]
    while stack:
        item = stack.pop()
        if isinstance(item, _PLAIN):
            continue
        if isinstance(item, list):
            stack.extend(item)
        elif isinstance(item, dict):
            for key in item:
                if not isinstance(key, str):
                    raise PeerWireError("map keys must be strings")
            stack.extend(item.values())
        else:
            raise PeerWireError(f"type {type(item).__name__} not accepted")


def decode(data: bytes, *, max_bytes: int = DEFAULT_MAX_BYTES) -> Any:
    """Strict msgpack decode: one object, plain types only; raises PeerWireError."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise PeerWireError(f"expected bytes, got {type(data).__name__}")
    if len(data) > max_bytes:
        raise PeerWireError(f"body of {len(data)} bytes exceeds {max_bytes}")
    if not data:
        raise PeerWireError("empty body")
    try:
        obj = msgpack.unpackb(bytes(data), raw=False, strict_map_key=True, ext_hook=_reject_ext, timestamp=0)
    except PeerWireError:
        raise
    except Exception as exc:
        raise PeerWireError(f"malformed msgpack: {exc.__class__.__name__}: {exc}") from exc
    _check_plain(obj)
    return obj


# --- authentication ------------------------------------------------------------------------

def _mac(secret: bytes, *, method: str, path: str, body: bytes, timestamp: str, nonce: str) -> str:
    message = b"\n".join((
        b"roam-peer-v1",
        method.upper().encode(),
        path.encode(),
        hashlib.sha256(body).hexdigest().encode(),
        timestamp.encode(),
        nonce.encode(),
    ))
    return hmac.new(secret, message, hashlib.sha256).hexdigest()


def sign(secret: bytes, *, method: str, path: str, body: bytes, now: float, nonce: str | None = None) -> dict[str, str]:
    """The headers that authenticate one request. `path` is the raw path with its query."""
    timestamp = f"{now:.3f}"
    nonce = nonce if nonce is not None else secrets.token_hex(16)
    return {
        HEADER_TIMESTAMP: timestamp,
        HEADER_NONCE: nonce,
        HEADER_SIGNATURE: _mac(secret, method=method, path=path, body=body, timestamp=timestamp, nonce=nonce),
    }


class NonceCache:
    """Nonces seen within the window. Bounded: when full of unexpired nonces it refuses new
    requests (fails closed) rather than forgetting a nonce that could then be replayed."""

    def __init__(self, *, max_size: int = 200_000) -> None:
        self.max_size = max_size
        self._expiry: OrderedDict[str, float] = OrderedDict()

    def __len__(self) -> int:
        return len(self._expiry)

    def _purge(self, now: float) -> None:
        # Insertion order is close to expiry order; stop at the first live entry.
        while self._expiry:
            if next(iter(self._expiry.values())) >= now:
                break
            self._expiry.popitem(last=False)

    def remember(self, nonce: str, *, expires_at: float, now: float) -> None:
        """Record a nonce; PeerAuthError if it was seen (a replay) or the cache is full."""
        self._purge(now)
        if nonce in self._expiry:
            raise PeerAuthError("replayed request (nonce already seen)")
        if len(self._expiry) >= self.max_size:
            raise PeerAuthError("too many requests in the replay window")
        self._expiry[nonce] = expires_at


def verify(
    secret: bytes,
    *,
    method: str,
    path: str,
    body: bytes,
    headers: Mapping[str, str],
    now: float,
    seen_nonces: NonceCache,
    window: float = DEFAULT_WINDOW,
) -> None:
    """Raise PeerAuthError unless the request is signed with `secret`, fresh and not replayed."""
    timestamp = headers.get(HEADER_TIMESTAMP)
    nonce = headers.get(HEADER_NONCE)
    signature = headers.get(HEADER_SIGNATURE)
    if not timestamp or not nonce or not signature:
        raise PeerAuthError("missing signature headers")
    if len(nonce) > 64 or len(timestamp) > 32 or len(signature) > 128:
        raise PeerAuthError("malformed signature headers")
    try:
        sent_at = float(timestamp)
    except ValueError as exc:
        raise PeerAuthError("malformed timestamp") from exc
    if not math.isfinite(sent_at) or abs(now - sent_at) > window:
        raise PeerAuthError(f"timestamp outside the {window:.0f}s window (check clocks)")
    expected = _mac(secret, method=method, path=path, body=body, timestamp=timestamp, nonce=nonce)
    if not hmac.compare_digest(expected.encode(), signature.encode("utf-8", "replace")):
        raise PeerAuthError("bad signature")
    # Only authentic requests reach the cache, so forged ones cannot fill it.
    seen_nonces.remember(nonce, expires_at=sent_at + window, now=now)
