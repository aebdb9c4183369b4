"""The admin API's per-address token bucket: the arithmetic with a fake clock, then a real agent
flooded from addresses of our own (so other tests' buckets stay full)."""
from __future__ import annotations

import asyncio
import time

import pytest

from peer.api.http import RATE_BURST, RATE_LIMIT, RateLimiter, TokenBucket
from peer.migration import wire
from peer.runtime.waiting import wait_until
from tests.harness import AgentProc
from tests.security.client import Client


def test_bucket_allows_the_burst_then_the_rate() -> None:
    bucket = TokenBucket(rate=4, burst=5, tokens=5, updated=100.0)  # binary fractions: exact arithmetic
    assert [bucket.take(100.0) for _ in range(5)] == [0.0] * 5
    assert bucket.take(100.0) == 0.25  # empty: one token comes in 1/rate s
    assert bucket.take(100.125) == 0.125  # half a token refilled meanwhile
    assert bucket.take(100.25) == 0.0
    assert bucket.take(200.0) == 0.0 and bucket.tokens == pytest.approx(4)  # refill caps at the burst
    assert bucket.take(150.0) == 0.0  # a clock going backwards never adds tokens


def test_limiter_keeps_clients_apart_and_its_table_bounded() -> None:
    limiter = RateLimiter(rate=1, burst=2, max_clients=3)
    assert [limiter.check("a", now=0) for _ in range(3)] == [0.0, 0.0, pytest.approx(1.0)]
    assert limiter.check("b", now=0) == 0.0  # a's flood costs b nothing
    for i in range(10):
        limiter.check(f"spoof{i}", now=0)
    assert len(limiter) == 3
    assert limiter.check("a", now=0) == 0.0  # forgotten means a full bucket again, never a lockout
    with pytest.raises(ValueError):
        RateLimiter(rate=0)


@pytest.mark.integration
async def test_an_admin_flood_gets_429_while_health_and_peers_pass(lone_agent: AgentProc) -> None:
    flood = Client(lone_agent.api, local_addr="127.0.6.42", polite=False)
    other = Client(lone_agent.api, local_addr="127.0.6.43", polite=False)
    try:
        started = time.monotonic()
        replies = await asyncio.gather(*(flood.admin("GET", "/v1/members") for _ in range(int(RATE_BURST) + 60)))
        flood_end = time.monotonic()
        elapsed = flood_end - started
        codes = [r.status for r in replies]
        allowed = codes.count(200)
        # The burst, plus what refilled while the flood was being sent.
        assert RATE_BURST <= allowed <= RATE_BURST + RATE_LIMIT * elapsed + 1, (allowed, elapsed)
        limited = [r for r in replies if r.status == 429]
        assert limited and len(limited) + allowed == len(replies)
        body = limited[0].json
        assert body["status"] == 429 and "rate limit" in body["error"]
        assert int(limited[0].headers["Retry-After"]) >= 1
        print(f"rate limit: {allowed} of {len(replies)} allowed in {elapsed:.2f}s, {len(limited)} got 429")

        # Guessing tokens is throttled too, before the token is even looked at: at most what
        # refilled since the flood is even checked (401), the rest is 429.
        guesses = await asyncio.gather(*(flood.admin("GET", "/v1/services", token="guess") for _ in range(20)))
        refilled = RATE_LIMIT * (time.monotonic() - flood_end) + 1
        codes = [g.status for g in guesses]
        assert set(codes) <= {401, 429} and codes.count(401) <= refilled and codes.count(429) >= 20 - refilled, codes
        # Exempt: the open health path and the peer API (signed; replication must not stall).
        assert (await flood.request("GET", "/v1/health")).status == 200
        pings = await asyncio.gather(*(flood.peer(wire.PING, {"n": i}) for i in range(int(RATE_BURST) + 20)))
        assert {p.status for p in pings} == {200}
        # Another address has its own bucket.
        assert (await other.admin("GET", "/v1/members")).status == 200
        # And the flooded address recovers once it slows down.
        await wait_until(lambda: _ok(flood), timeout=10, interval=0.25, what="bucket refilled")
    finally:
        await flood.close()
        await other.close()


async def _ok(client: Client) -> bool:
    return (await client.admin("GET", "/v1/members")).status == 200
