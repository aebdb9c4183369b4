"""Supervised loops (peer.runtime.supervision): a failing loop is logged and started again, with a
back-off that doubles while runs keep failing fast and resets after a long healthy run."""
from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest

from peer.runtime import supervision
from peer.runtime.supervision import FIRST_BACKOFF, HEALTHY_AFTER, MAX_BACKOFF, Supervisor, next_backoff, supervised
from peer.runtime.waiting import wait_until


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

    with caplog.at_level(logging.ERROR, logger="peer.runtime.supervision"):
        task = asyncio.create_task(supervised("t:flaky", flaky))
        await wait_until(lambda: runs == 3, timeout=5, what="third run")
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    failures = [r for r in caplog.records if "t:flaky loop failed" in r.getMessage()]
    assert len(failures) == 2 and failures[0].exc_info is not None


# -- Supervisor: the one owner of a part's tasks ------------------------------------------------
async def test_a_failed_job_is_logged_and_forgotten(caplog: pytest.LogCaptureFixture) -> None:
    jobs = Supervisor("t")

    async def broken() -> None:
        raise RuntimeError("a bug")

    with caplog.at_level(logging.ERROR, logger="peer.runtime.supervision"):
        task = jobs.spawn(broken(), name="broken")
        await asyncio.wait({task})
    assert not jobs and task.get_name() == "t:broken"
    assert [r.exc_info is not None for r in caplog.records if "t:broken failed" in r.getMessage()] == [True]


async def test_a_job_whose_caller_reads_it_is_not_reported(caplog: pytest.LogCaptureFixture) -> None:
    jobs = Supervisor("t")

    async def refused() -> None:
        raise ValueError("the caller's to handle")

    with caplog.at_level(logging.ERROR, logger="peer.runtime.supervision"):
        task = jobs.spawn(refused(), report=False)
        await asyncio.wait({task})
    assert isinstance(task.exception(), ValueError) and not caplog.records and not jobs


async def test_a_loop_is_restarted_and_stop_cancels_everything(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(supervision, "FIRST_BACKOFF", 0.01)
    jobs, runs = Supervisor("t"), 0

    async def flaky() -> None:
        nonlocal runs
        runs += 1
        if runs < 3:
            raise RuntimeError("again")
        await asyncio.Event().wait()

    jobs.loop("flaky", flaky)
    forever = jobs.spawn(asyncio.Event().wait(), name="forever")
    await wait_until(lambda: runs == 3, timeout=5, what="third run")
    assert len(jobs) == 2
    await jobs.stop()
    assert not jobs and forever.cancelled()


async def test_stop_lets_jobs_finish_within_the_grace() -> None:
    jobs, done = Supervisor("t"), asyncio.Event()

    async def quick() -> None:
        await asyncio.sleep(0.01)
        done.set()

    jobs.spawn(quick())
    await jobs.stop(grace=5.0)
    assert done.is_set() and not jobs


def test_the_leak_fixture_fails_a_test_that_leaks_a_task(pytester: pytest.Pytester) -> None:
    """tests/conftest.py's `no_leaked_tasks`, run on a test that leaks and one that does not."""
    pytester.makeini("[pytest]\nasyncio_mode = auto\nasyncio_default_fixture_loop_scope = function\n")
    pytester.makeconftest((Path(__file__).parent.parent / "conftest.py").read_text())
    pytester.makepyfile(test_leaks="""
import asyncio

async def test_leaks():
    asyncio.get_running_loop().create_task(asyncio.Event().wait(), name="left-behind")

async def test_cleans_up():
    task = asyncio.create_task(asyncio.Event().wait())
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)

def test_sync():
    pass
""")
    result = pytester.runpytest_inprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=3, errors=1)  # the leaking test passes, its teardown errs
    result.stdout.fnmatch_lines(["*leaked 1 task(s): left-behind*"])
