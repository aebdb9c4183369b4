"""The handover's pure-ish parts against fakes: bounded pre-copy rounds that end once the state
stops changing, the final copy skipped when nothing changed, and holds always released (an error
mid-handover included) at every entry that did not release on its own reroute."""
from __future__ import annotations

from typing import Any

import pytest

from peer.state import handover as ho
from peer.state.hook import Snapshot, StateHookFailed

SRC, DST = ("127.0.20.5", 1), ("127.0.20.6", 1)


class ChangingHook:
    """The source changes `changes` more times (one per GET), then stays."""

    def __init__(self, changes: int) -> None:
        self.version = 1
        self.changes = changes
        self.puts: list[str] = []
        self.gets = 0

    async def get(self, host: str, port: int, path: str, *, if_none_match: str | None = None) -> Snapshot | None:
        self.gets += 1
        if self.changes > 0 and if_none_match is not None:
            self.changes -= 1
            self.version += 1
        etag = f'"{self.version}"'
        return None if if_none_match == etag else Snapshot(b"s" * 10, etag)

    async def put(self, host: str, port: int, path: str, snapshot: Snapshot) -> None:
        self.puts.append(snapshot.etag)

    async def close(self) -> None:
        pass


@pytest.mark.parametrize("changes, rounds", [(0, 1), (1, 2), (2, 3), (10, ho.PRECOPY_ROUNDS)])
async def test_precopy_rounds_end_when_unchanged_and_are_bounded(changes: int, rounds: int) -> None:
    hook = ChangingHook(changes)
    pre = await ho.precopy(hook, src=SRC, dst=DST, path="/s")
    assert pre.rounds == rounds and pre.bytes == 10 * rounds
    assert hook.puts == [f'"{v}"' for v in range(1, rounds + 1)]
    assert 0 < ho.hold_ttl(pre) <= ho.HOLD_MAX


async def test_final_copy_only_when_changed() -> None:
    hook = ChangingHook(0)
    last = Snapshot(b"s" * 10, '"1"')
    final, moved = await ho.final_copy(hook, src=SRC, dst=DST, path="/s", last=last)
    assert final == last and moved == 0 and hook.puts == []
    hook.changes = 1
    final, moved = await ho.final_copy(hook, src=SRC, dst=DST, path="/s", last=last)
    assert final.etag == '"2"' and moved == 10 and hook.puts == ['"2"']
    assert await ho.unchanged_since(hook, src=SRC, path="/s", final=final) is True


class FakeLB:
    def __init__(self) -> None:
        self.calls: list[str] = []

    async def hold(self, service: str, *, ttl: float) -> None:
        self.calls.append("hold")

    async def release(self, service: str) -> None:
        self.calls.append("release")

    async def idle(self, service: str) -> bool:
        return True


class FakeEntries:
    def __init__(self, unreachable: set[str]) -> None:
        self.unreachable = unreachable
        self.released: list[list[str]] = []

    async def hold_entries(self, entries: list[str], name: str, *, ttl: float) -> list[str]:
        return [e for e in entries if e in self.unreachable]

    async def release_entries(self, entries: list[str], name: str) -> None:
        self.released.append(entries)


async def test_holds_are_released_after_an_error() -> None:
    lb, entries = FakeLB(), FakeEntries({"c3"})
    hand = ho.Handover(name="svc", lb=lb, entries=entries, others=["c2", "c3"])
    with pytest.raises(StateHookFailed):
        async with hand.held(ttl=1.0):
            raise StateHookFailed("PUT answered 500")
    assert lb.calls == ["hold", "release"]
    assert hand.not_held == ["c3"] and entries.released == [["c2"]]  # c3 never held
    assert hand.window_ms is not None


async def test_entries_that_released_on_their_reroute_are_not_asked_again() -> None:
    lb, entries = FakeLB(), FakeEntries(set())
    hand = ho.Handover(name="svc", lb=lb, entries=entries, others=["c2", "c3"])
    async with hand.held(ttl=1.0):
        hand.done(["c2"])  # c3 did not confirm its reroute
    assert entries.released == [["c3"]]
    report: dict[str, Any] = ho.report(ho.Precopy(Snapshot(b"", "e"), 1, 0, 0.0), Snapshot(b"", "e"), 0, 3, hand, True)
    assert report["exact"] is True and report["handover_ms"] >= 0 and "released" in report["steps_ms"]


async def test_an_entry_without_the_hold_moves_on_unheld() -> None:
    from lb.errors import HAProxyCommandError

    class NoLua(FakeLB):
        async def hold(self, service: str, *, ttl: float) -> None:
            raise HAProxyCommandError("roam hold be_1 100", "Unknown command")

    hand = ho.Handover(name="svc", lb=NoLua(), entries=FakeEntries(set()), others=[])
    async with hand.held(ttl=1.0):
        pass
    assert hand.not_held_here
