"""Supervised loops (peer.supervision): a failing loop is logged and started again, with a
back-off that doubles while runs keep failing fast and resets after a long healthy run."""
from __future__ import annotations

import asyncio
import logging

import pytest

from peer import supervision
from peer.supervision import FIRST_BACKOFF, HEALTHY_AFTER, MAX_BACKOFF, next_backoff, supervised
from peer.waiting import wait_until


@pytest.mark.parametrize("current,ran_for,expected", [
    (FIRST_BACKOFF, 0.0, 2 * FIRST_BACKOFF),          # failed at once: double
    (8.0, 1.0, 16.0),
    (MAX_BACKOFF, 0.0, MAX_BACKOFF),                  # capped
    (20.0, 5.0, MAX_BACKOFF),
    (16.0, HEALTHY_AFTER, FIRST_BACKOFF),             # a healthy run resets it
    (16.0, HEALTHY_AFTER + 100, FIRST_BACKOFF),
])
def test_backoff_table(current: float, ran_for: float, expected: float) -> None:
    assert next_backoff(current, ran_for) == expected


async def test_a_failing_loop_is_logged_and_restarted_and_cancellation_passes(
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setattr(supervision, "FIRST_BACKOFF", 0.01)
    runs = 0

    async def flaky() -> None:
        nonlocal runs
        runs += 1
        if runs < 3:
            raise RuntimeError(f"bug number {runs}")
        await asyncio.Event().wait()  # the third run lives until cancelled

    with caplog.at_level(logging.ERROR, logger="peer.supervision"):
        task = asyncio.create_task(supervised("t:flaky", flaky))
        await wait_until(lambda: runs == 3, timeout=5, what="third run")
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    failures = [r for r in caplog.records if "t:flaky loop failed" in r.getMessage()]
    assert len(failures) == 2 and failures[0].exc_info is not None
