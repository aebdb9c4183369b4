"""The collector pause of big batches (peer.runtime.gcpause): nested and threaded uses."""
from __future__ import annotations

import gc
import threading

from peer.runtime.gcpause import collector_paused


def test_paused_inside_restored_after_even_nested_and_on_error() -> None:
    assert gc.isenabled()
    with collector_paused():
        assert not gc.isenabled()
        with collector_paused():
            assert not gc.isenabled()
        assert not gc.isenabled()  # the outer use still holds it
    assert gc.isenabled()
    try:
        with collector_paused():
            raise KeyError("boom")
    except KeyError:
        pass
    assert gc.isenabled()


def test_a_collector_disabled_before_stays_disabled() -> None:
    gc.disable()
    try:
        with collector_paused():
            pass
        assert not gc.isenabled()
    finally:
        gc.enable()


def test_the_last_thread_out_restores_it() -> None:
    inside, leave = threading.Event(), threading.Event()

    def worker() -> None:
        with collector_paused():
            inside.set()
            leave.wait(10)

    thread = threading.Thread(target=worker)
    thread.start()
    assert inside.wait(10)
    with collector_paused():
        pass
    assert not gc.isenabled()  # the worker's batch is still running
    leave.set()
    thread.join(10)
    assert gc.isenabled()
