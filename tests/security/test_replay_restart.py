"""A captured peer request cannot be replayed after the agent restarts (peer.peering.nonces).

Unit tests of the persistent cache, then one real agent (127.0.23.20): a signed PING is
accepted once, refused as a replay, and still refused after the agent was SIGKILLed and
started again on the same data dir, while a fresh request is accepted.
"""
from __future__ import annotations

import signal
import stat
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from peer.migration.wire import PING
from peer.peering.nonces import NONCE_FILE, PersistentNonceCache
from peer.peering.wire import CONTENT_TYPE, PeerAuthError, encode, sign
from tests.harness import SECRET, AgentProc, Federation
from tests.security.conftest import start_and_wait

ADDR = "127.0.23.20"


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_nonces_survive_a_new_cache_on_the_same_file(tmp_path: Path) -> None:
    clock = Clock(1000.0)
    path = tmp_path / NONCE_FILE
    cache = PersistentNonceCache(path, clock=clock)
    cache.remember("a", expires_at=1030.0, now=1000.0)
    cache.remember("b", expires_at=1005.0, now=1000.0)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    # No close(): the agent may be SIGKILLed; what was written is in the file.
    clock.now = 1010.0
    again = PersistentNonceCache(path, clock=clock)
    assert again.loaded == 1  # "b" expired meanwhile
    with pytest.raises(PeerAuthError, match="replayed"):
        again.remember("a", expires_at=1030.0, now=1010.0)
    again.remember("b", expires_at=1040.0, now=1010.0)  # expired ones are forgotten, as in memory
    assert path.read_text().splitlines() == ["1030.000 a", "1040.000 b"]  # compacted at start, then appended


def test_torn_lines_are_ignored_and_the_file_is_compacted(tmp_path: Path) -> None:
    clock = Clock(0.0)
    path = tmp_path / NONCE_FILE
    path.write_text("11.500 x\nnot-a-number y\n60.0")
    cache = PersistentNonceCache(path, clock=clock, compact_every=3)
    assert cache.loaded == 1
    for i in range(5):
        cache.remember(f"n{i}", expires_at=10.0 + i, now=0.0)
    clock.now = 12.5  # n0-n2 expired
    cache.remember("late", expires_at=40.0, now=12.5)
    assert path.read_text().splitlines() == ["13.000 n3", "14.000 n4", "40.000 late"]


@pytest.fixture
def lone(tmp_path: Path) -> Iterator[AgentProc]:
    fed = Federation(base=tmp_path)
    # --no-peer-tls: the request is replayed by a holder of the federation secret on the peer
    # API's HMAC layer (automatic identity would refuse it earlier, in the TLS handshake).
    agent = fed.add("rp", ADDR, extra=["--no-auto-migrate", "--no-peer-tls"])
    try:
        start_and_wait(agent, timeout=40)
        yield agent
    finally:
        print(agent.log_text())
        fed.stop_all()


def _send(agent: AgentProc, body: bytes, headers: dict[str, str]) -> int:
    req = urllib.request.Request(agent.api + PING, data=body, method="POST",
                                 headers={**headers, "Content-Type": CONTENT_TYPE})
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


def test_captured_request_does_not_replay_after_a_restart(lone: AgentProc) -> None:
    body = encode({})
    captured = sign(SECRET.encode(), method="POST", path=PING, body=body, now=time.time())
    assert _send(lone, body, captured) == 200
    assert _send(lone, body, captured) == 401
    lone.kill(signal.SIGKILL)  # a crash: nothing is flushed on the way out
    start_and_wait(lone, timeout=40)
    assert _send(lone, body, captured) == 401  # still within its 30 s window, and refused
    fresh = sign(SECRET.encode(), method="POST", path=PING, body=body, now=time.time())
    assert _send(lone, body, fresh) == 200
    assert "reloaded" in lone.log_text()
