"""When to restart a crashed service: exponential back-off, reset after a stable run.

Pure timing math, kept apart from the timers that use it so it can be tested from a table.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class RestartPolicy:
    base: float = 0.5          # first delay after a crash
    cap: float = 10.0          # the delay doubles up to this
    stable_after: float = 10.0  # a run at least this long forgets earlier crashes
    max_failures: int = 10     # crashes in a row before giving up

    def failures_after(self, previous: int, run_seconds: float) -> int:
        """Consecutive failures once a process that ran `run_seconds` has crashed."""
        return 1 if run_seconds >= self.stable_after else previous + 1

    def delay(self, failures: int) -> float:
        """Back-off before the restart that follows the `failures`-th crash in a row."""
        if failures <= 0:
            return 0.0
        return min(self.cap, self.base * 2.0 ** min(failures - 1, 30))

    def gives_up(self, failures: int) -> bool:
        return failures > self.max_failures
