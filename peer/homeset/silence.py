"""When an idle entry ahead in a home set counts as silent: the timing math of the home watch
(peer/homeset/watch.py), pure and apart from any timer (as memberlist's `suspicion.go`).

Why a probe at all: when a service runs abroad, nothing crosses its HC (clients may use
another entry, the copy runs elsewhere), so neither HAProxy checks nor the fail-safe notice
that the HC's site is gone. Only Serf does, after its own failure detection (~4-5 s), and
stewardship moves `home_grace` later (~7.35 s measured). The next entries in `homes` order
therefore ping the clusters ahead of them with the peer API `PING`, one probe per peer
whatever the number of services, and mark a peer *silent* after `failures` pings in a row
went unanswered; from that mark the usual `home_grace` runs (`Liveness.lost_for`), exactly
as it does from Serf's "failed".

What a failure is: no answer (refused, reset, timed out). A refusal (4xx) is an answer: the
peer is there. A single answer clears the run and the mark.

Bounds (`SilenceRule`), with the defaults (interval 0.5 s, timeout 1.0 s, 3 failures):
  * fastest handover, a lost site whose address answers with resets (pings fail at once):
    the first failed ping within `interval` of the loss, the third `2 x interval` later, then
    the grace: at most `failures x interval + home_grace` = 1.5 + 2 = 3.5 s (Serf: ~7.35 s);
  * a cut-off site (pings time out): at most `failures x (timeout + interval) + home_grace`
    = 4.5 + 2 = 6.5 s, still no slower than Serf;
  * no false handover: a HC that answers nothing for less than `tolerated_silence`
    (`(failures - 1) x interval + home_grace` = 3.0 s: a paused process, a GC or fsync stall,
    a loaded machine) keeps stewardship, because one answer before the grace ends clears the
    mark. A ping answered within `timeout` (1 s, twice the interval: a slow HC is not a dead
    one) is an answer. Three in a row, not one, so that a single lost connection never
    starts the grace. A HC silent for longer than that cannot coordinate anything either:
    handing over is the point.
"""
from __future__ import annotations

from dataclasses import dataclass

DEFAULT_INTERVAL = 0.5
DEFAULT_TIMEOUT = 1.0
DEFAULT_FAILURES = 3


@dataclass(frozen=True)
class SilenceRule:
    """How often one peer is pinged, how long an answer may take, how many misses mark it."""

    interval: float = DEFAULT_INTERVAL  # from one ping's end to the next one's start
    timeout: float = DEFAULT_TIMEOUT
    failures: int = DEFAULT_FAILURES

    def __post_init__(self) -> None:
        if self.interval <= 0 or self.timeout <= 0 or self.failures < 1:
            raise ValueError(f"interval and timeout must be positive, failures at least 1: {self}")

    def tolerated_silence(self, grace: float) -> float:
        """The longest a peer may answer nothing without losing stewardship: its pings fail
        at once from the first one on, the mark comes `failures - 1` intervals later, and an
        answer before `grace` has passed clears it."""
        return (self.failures - 1) * self.interval + grace

    def worst_detection(self, grace: float, *, timing_out: bool) -> float:
        """The latest stewardship moves after a peer went silent: a full interval before the
        first ping, each ping failing at once (refused) or after `timeout` (cut off)."""
        per_ping = self.interval + (self.timeout if timing_out else 0.0)
        return self.failures * per_ping + grace


@dataclass
class PeerSilence:
    """One peer's run of failed pings. `observe` returns the mark time once the run is long
    enough (the same time on every later failure), None while the peer counts as heard."""

    failed: int = 0
    marked_at: float | None = None

    def observe(self, answered: bool, now: float, rule: SilenceRule) -> float | None:
        if answered:
            self.failed, self.marked_at = 0, None
            return None
        self.failed += 1
        if self.failed >= rule.failures and self.marked_at is None:
            self.marked_at = now
        return self.marked_at
