"""peer.runtime.wake: the sleep rule of the agent's watchers and the doorbell that ends a sleep."""
from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from peer.records.record import Record, State
from peer.records.store import RecordStore
from peer.runtime.waiting import wait_until
from peer.runtime.wake import Wake, next_delay

TIMES = st.floats(min_value=0, max_value=1e6, allow_nan=False)


def test_watching_ticks_whatever_the_deadlines() -> None:
    assert next_delay(watching=True, tick=0.1, deadlines=[50.0], now=10.0) == 0.1


def test_nothing_to_watch_sleeps_until_woken() -> None:
    assert next_delay(watching=False, tick=0.1) is None


def test_a_deadline_past_gives_no_sleep() -> None:
    assert next_delay(watching=False, tick=0.1, deadlines=[5.0, 9.0], now=10.0) == 0.0


@given(st.lists(TIMES, min_size=1), TIMES, st.floats(min_value=0.001, max_value=10))
def test_sleeps_exactly_until_the_earliest_deadline(deadlines: list[float], now: float, tick: float) -> None:
    delay = next_delay(watching=False, tick=tick, deadlines=deadlines, now=now)
    assert delay is not None and delay >= 0
    assert delay == max(0.0, min(deadlines) - now)


@given(st.lists(TIMES), TIMES, st.floats(min_value=0.001, max_value=10))
def test_watching_never_sleeps_longer_than_a_tick(deadlines: list[float], now: float, tick: float) -> None:
    assert next_delay(watching=True, tick=tick, deadlines=deadlines, now=now) == tick


async def test_a_poke_ends_an_endless_sleep() -> None:
    wake = Wake()
    sleeper = asyncio.create_task(wake.sleep(None))
    await wait_until(lambda: wake.sleeping, timeout=5, what="the loop asleep")
    assert not sleeper.done()
    wake.poke()
    assert await asyncio.wait_for(sleeper, 5.0) is True
    assert wake.wakeups == 1


async def test_a_poke_while_busy_is_kept_for_the_next_sleep() -> None:
    wake = Wake()
    wake.poke()  # before any sleep: nothing may be missed
    assert await asyncio.wait_for(wake.sleep(None), 5.0) is True
    wake.poke()
    wake.poke()  # two pokes between sleeps are one
    assert await asyncio.wait_for(wake.sleep(None), 5.0) is True
    assert await wake.sleep(0.01) is False


async def test_a_timed_sleep_ends_unpoked() -> None:
    wake = Wake()
    assert await asyncio.wait_for(wake.sleep(0.01), 5.0) is False


async def test_a_poke_from_another_thread_wakes_the_loop() -> None:
    wake = Wake()
    sleeper = asyncio.create_task(wake.sleep(None))
    await wait_until(lambda: wake.sleeping, timeout=5, what="the loop asleep (the wake knows its loop)")
    thread = threading.Thread(target=wake.poke)
    thread.start()
    assert await asyncio.wait_for(sleeper, 5.0) is True
    thread.join()


def test_the_store_tells_its_listeners_of_changed_records_only(tmp_path: Path) -> None:
    store = RecordStore.open(tmp_path / "r.sqlite3")
    heard: list[int] = []
    store.on_change.append(lambda: heard.append(1))
    written = store.put_local(Record(name="a", home="c1", location="c1", state=State.RUNNING, digest="d", descriptor=b"",
                                     incarnation="1-c1", homes=("c1",)), here="c1", now=time.time())
    assert len(heard) == 1
    store.apply_remote(written, here="c1")  # the same version again: nothing changed, nobody woken
    assert len(heard) == 1
    store.meta_put("k", 1)  # not a record
    assert len(heard) == 1
    store.drop("a")
    assert len(heard) == 2
    store.close()


def test_serf_collects_at_a_quarter_heap_growth_unless_the_operator_says_otherwise() -> None:
    from peer.serf.process import child_env

    assert child_env({"PATH": "/bin"}) == {"PATH": "/bin", "GOGC": "25"}
    assert child_env({"GOGC": "200"})["GOGC"] == "200"
    assert "GOMEMLIMIT" not in child_env({})


def test_haproxy_runs_one_thread_by_default() -> None:
    from lb.config import LBConfig, render

    text = render(LBConfig(data_dir=Path("/nonexistent"), bind_addr="127.0.40.1", ports=range(30000, 30002)))
    assert "\n    nbthread 1\n" in text
