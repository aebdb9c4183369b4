"""A small admin/peer HTTP client for hostile-input tests: raw bodies and headers, polite on 429.

The agent rate-limits admin clients (50 req/s per address); these tests send hundreds of
requests, so the client honours Retry-After instead of failing. Tests that want the 429 itself
use their own source address (`local_addr`).
"""
from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass
from typing import Any

import aiohttp
from yarl import URL

from peer.peering.wire import CONTENT_TYPE, encode, sign
from tests.harness import SECRET, TOKEN

AUTH = {"Authorization": f"Bearer {TOKEN}"}


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    raw: bytes

    @property
    def json(self) -> Any:
        return json.loads(self.raw)


class Client:
    def __init__(self, base: str, *, local_addr: str | None = None, polite: bool = True) -> None:
        self.base = base
        self.polite = polite
        connector = aiohttp.TCPConnector(local_addr=(local_addr, 0) if local_addr else None, force_close=False)
        self.session = aiohttp.ClientSession(connector=connector, auto_decompress=False)
        self.sent = 0
        self.throttled = 0

    async def close(self) -> None:
        await self.session.close()

    async def request(self, method: str, path: str, *, body: Any = None,
                      headers: dict[str, str] | None = None, skip_auto_headers: tuple[str, ...] = ()) -> Reply:
        """`path` goes out byte for byte (no normalisation of `..` or percent-escapes). A callable
        `body` is called for each attempt (a streamed body cannot be sent twice)."""
        while True:
            self.sent += 1
            async with self.session.request(
                method, URL(self.base + path, encoded=True), data=body() if callable(body) else body,
                headers=headers or {},
                skip_auto_headers=skip_auto_headers, timeout=aiohttp.ClientTimeout(total=30),
            ) as resp:
                reply = Reply(resp.status, dict(resp.headers), await resp.read())
            if reply.status != 429 or not self.polite:
                return reply
            self.throttled += 1
            await asyncio.sleep(float(reply.headers.get("Retry-After", "1")))  # the server's back-off

    async def admin(self, method: str, path: str, obj: Any = None, *, raw: bytes | None = None,
                    ctype: str | None = "application/json", token: str | None = TOKEN) -> Reply:
        headers = {} if token is None else {"Authorization": f"Bearer {token}"}
        body = raw if raw is not None else (None if obj is None else json.dumps(obj).encode())
        if ctype is not None and body is not None:
            headers["Content-Type"] = ctype
        # ctype=None: no Content-Type at all (aiohttp would add application/octet-stream).
        skip = ("Content-Type",) if ctype is None and body is not None else ()
        return await self.request(method, path, body=body, headers=headers, skip_auto_headers=skip)

    async def get_json(self, path: str) -> Any:
        reply = await self.admin("GET", path)
        assert reply.status == 200, (path, reply.status, reply.raw[:300])
        return reply.json

    async def peer(self, path: str, payload: Any = None, *, raw: bytes | None = None, secret: bytes = SECRET.encode(),
                   now: float | None = None, headers: dict[str, str] | None = None) -> Reply:
        """A signed peer-API call; `raw` sends bytes as they are (signed all the same)."""
        body = raw if raw is not None else encode(payload)
        signed = sign(secret, method="POST", path=path, body=body, now=time.time() if now is None else now)
        return await self.request("POST", path, body=body,
                                  headers={**signed, "Content-Type": CONTENT_TYPE, **(headers or {})})
