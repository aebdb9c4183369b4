"""The state hook's wire protocol against the stateful sample (in-process aiohttp server), and
the saved-state files."""
from __future__ import annotations

import json
import stat
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web

from peer.samples.stateful import STATE_PATH, StatefulClassifier
from peer.state.hook import (
    HttpStateHook,
    Snapshot,
    StateHookFailed,
    StateHookMissing,
    StateTooLarge,
    StateUnreachable,
)
from peer.state.saved import SavedStateCorrupt, SavedStates
from peer.state.versions import Version

HOST = "127.0.20.2"


async def _serve(app: web.Application, port: int) -> web.AppRunner:
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, HOST, port).start()
    return runner


@pytest.fixture
async def copies() -> AsyncIterator[tuple[StatefulClassifier, StatefulClassifier]]:
    a, b = StatefulClassifier(service="c", cluster="x"), StatefulClassifier(service="c", cluster="y")
    runners = [await _serve(a.app(), 42001), await _serve(b.app(), 42002)]
    try:
        yield a, b
    finally:
        for r in runners:
            await r.cleanup()


@pytest.fixture
async def hook() -> AsyncIterator[HttpStateHook]:
    h = HttpStateHook(limit=64 * 1024)
    try:
        yield h
    finally:
        await h.close()


async def test_get_put_and_if_none_match(copies: tuple[StatefulClassifier, StatefulClassifier],
                                         hook: HttpStateHook) -> None:
    a, b = copies
    for i in range(5):
        a.state.count(f"s{i % 2}", "car")
    snap = await hook.get(HOST, 42001, STATE_PATH)
    assert snap is not None and snap.etag == '"5"'
    assert await hook.get(HOST, 42001, STATE_PATH, if_none_match=snap.etag) is None  # unchanged: 304
    await hook.put(HOST, 42002, STATE_PATH, snap)
    assert b.state.view() == a.state.view()
    again = await hook.get(HOST, 42002, STATE_PATH)
    assert again == snap


async def test_errors_are_specific(copies: tuple[StatefulClassifier, StatefulClassifier], hook: HttpStateHook) -> None:
    a, _ = copies
    with pytest.raises(StateHookMissing, match="/nope"):
        await hook.get(HOST, 42001, "/nope")
    with pytest.raises(StateUnreachable):
        await hook.get(HOST, 42009, STATE_PATH)
    with pytest.raises(StateHookFailed, match="400"):
        await hook.put(HOST, 42001, STATE_PATH, Snapshot(b"not json", '"1"'))
    with pytest.raises(StateHookFailed, match="ETag"):
        await hook.get(HOST, 42001, "/healthz")
    a.state.pad = "x" * (70 * 1024)
    with pytest.raises(StateTooLarge) as err:
        await hook.get(HOST, 42001, STATE_PATH)
    assert err.value.size > err.value.limit == 64 * 1024
    with pytest.raises(StateTooLarge):
        await hook.put(HOST, 42002, STATE_PATH, Snapshot(b"x" * (65 * 1024), '"9"'))


async def test_too_large_without_declared_length(hook: HttpStateHook) -> None:
    async def chunked(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"ETag": '"1"'})
        resp.enable_chunked_encoding()
        await resp.prepare(request)
        for _ in range(100):
            await resp.write(b"y" * 1024)
        return resp

    app = web.Application()
    app.router.add_get(STATE_PATH, chunked)
    runner = await _serve(app, 42003)
    try:
        with pytest.raises(StateTooLarge, match="over the 65536-byte limit"):
            await hook.get(HOST, 42003, STATE_PATH)
    finally:
        await runner.cleanup()


def test_saved_state_private_atomic_and_checked(tmp_path: Path) -> None:
    saved = SavedStates(tmp_path)
    assert saved.load("svc", "1-ab") is None
    saved.save("svc", "1-ab", Version(3, '"7"'), Snapshot(b"body", '"7"'), now=10.0)
    path = saved.path_of("svc", "1-ab")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    loaded = saved.load("svc", "1-ab")
    assert loaded is not None and loaded.version == Version(3, '"7"') and loaded.snapshot.body == b"body"
    assert saved.load("svc", "2-cd") is None  # another incarnation has no state
    head = json.loads(path.read_bytes().split(b"\n", 1)[0])
    path.write_bytes(json.dumps(head).encode() + b"\nbodY")
    with pytest.raises(SavedStateCorrupt):
        saved.load("svc", "1-ab")
    assert saved.load_quietly("svc", "1-ab") is None
    saved.save("svc", "2-cd", Version(1, "e"), Snapshot(b"", "e"), now=1.0)
    saved.drop_other_incarnations("svc", keep="2-cd")
    assert not path.exists() and saved.path_of("svc", "2-cd").exists()
