"""Restart back-off: doubling from 0.5 s to 10 s, forgotten after a stable run."""
from __future__ import annotations

import pytest

from peer.drivers.process import render_argv
from peer.drivers.restarts import RestartPolicy

POLICY = RestartPolicy(base=0.5, cap=10.0, stable_after=10.0, max_failures=5)


@pytest.mark.parametrize(
    ("failures", "delay"), [(0, 0.0), (1, 0.5), (2, 1.0), (3, 2.0), (4, 4.0), (5, 8.0), (6, 10.0), (500, 10.0)]
)
def test_delay_doubles_up_to_the_cap(failures: int, delay: float) -> None:
    assert POLICY.delay(failures) == delay


@pytest.mark.parametrize(("previous", "ran", "after"), [(0, 0.1, 1), (3, 9.9, 4), (3, 10.0, 1), (7, 3600, 1)])
def test_stable_run_resets_the_count(previous: int, ran: float, after: int) -> None:
    assert POLICY.failures_after(previous, ran) == after


def test_gives_up_after_max_failures() -> None:
    assert not POLICY.gives_up(5)
    assert POLICY.gives_up(6)


def test_only_host_and_port_placeholders_are_replaced() -> None:
    argv = render_argv(
        ("serve", "--bind={host}:{port}", "{port}{port}", "{other}", "{{port}}", "{HOST}", "%(port)s", "$PORT"),
        host="127.0.4.1", port=41000,
    )
    assert argv == [
        "serve", "--bind=127.0.4.1:41000", "4100041000", "{other}", "{41000}", "{HOST}", "%(port)s", "$PORT",
    ]
