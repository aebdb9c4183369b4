"""Shared fixtures. Integration tests start real serf, haproxy and processes on loopback addresses."""
from __future__ import annotations

import asyncio
import inspect
import shutil
import signal
from collections.abc import AsyncIterator

import pytest
from hypothesis import HealthCheck, settings

# Property tests check rules, not speed: on 2 shared cores (make test runs the unit and the
# integration streams side by side) an example can take longer than Hypothesis' 200 ms deadline
# or its data generation look "too slow", failures that say nothing about the rule.
settings.register_profile("roam", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("roam")

#: Loop turns a test's leftover tasks get to finish (a cancellation or a close in flight) before
#: they count as leaked.
LEAK_TURNS = 50
pytest_plugins = ["pytester"]  # tests/agent/test_supervision.py runs this fixture on a leaking test


_SERVICES_AS_ROOT: list[str] = []  # why this run's agents keep services as root (empty: they run as nobody)


def pytest_configure(config: pytest.Config) -> None:
    """A suite started in the background of a non-interactive shell (`nohup make test &`)
    inherits SIGINT ignored, and so would every process it starts: tests that stop a CLI or a
    scenario runner with Ctrl-C would then wait for nothing. Ctrl-C means KeyboardInterrupt here.

    Integration tests deploy this checkout's samples. A root agent runs them as `nobody` by
    default; where `nobody` cannot read the checkout (a clone under /root), the agents of this
    run keep services as root ($ROAM_RUN_AS, set before any agent starts) and the header says
    why. tests/drivers/test_run_as.py tests the default itself either way (a stdlib service
    run by the system python)."""
    from chaos.agent_processes import run_services_as_root_if_needed

    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    why = run_services_as_root_if_needed()
    if why is not None:
        _SERVICES_AS_ROOT.append(why)


def pytest_report_header(config: pytest.Config) -> str | None:
    if not _SERVICES_AS_ROOT:
        return None
    return f"services run as root in this run ($ROAM_RUN_AS=root): {_SERVICES_AS_ROOT[0]}"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    missing = [b for b in ("serf", "haproxy") if shutil.which(b) is None]
    if missing:
        # Not a skip: the suite must not pass silently without the real components.
        raise pytest.UsageError(f"missing binaries {missing}: run `make test`, which installs them")
    for item in items:  # every async test checks it leaks no task; first in, so last out
        if isinstance(item, pytest.Function) and inspect.iscoroutinefunction(item.obj):
            item.fixturenames.insert(0, "no_leaked_tasks")


def _described(task: asyncio.Task[object]) -> str:
    coro = task.get_coro()
    where = getattr(coro, "__qualname__", repr(coro))
    return f"{task.get_name()} ({where})"


@pytest.fixture
async def no_leaked_tasks() -> AsyncIterator[None]:
    """Fail a test that leaves a task running past its end (issue 13): every background task
    in `peer` belongs to a Supervisor whose owner stops it, so a leftover one is a part not
    stopped, or a task started outside any owner. The leftovers are cancelled, so the next
    test starts clean."""
    before = asyncio.all_tasks()
    yield
    me = asyncio.current_task()

    def leftover() -> set[asyncio.Task[object]]:
        return {t for t in asyncio.all_tasks() - before if t is not me and not t.done()}

    for _ in range(LEAK_TURNS):
        if not leftover():
            return
        await asyncio.sleep(0)
    leaked = leftover()
    for task in leaked:
        task.cancel()
    await asyncio.gather(*leaked, return_exceptions=True)
    pytest.fail(f"the test leaked {len(leaked)} task(s): {', '.join(sorted(map(_described, leaked)))}")
