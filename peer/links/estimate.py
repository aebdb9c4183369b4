"""The link estimate from this cluster to one peer, and when it may spend bytes to refresh it.
Pure: time and observations are passed in; `peer.links.probe` does the I/O.

Why: the old probe uploaded 256 KB to every live peer every 2 s (about 1 Mbit/s per peer),
a quarter of a degraded 4 Mbit/s link and all of a 1 Mbit/s one (issue 18). The estimate now
comes from three kinds of evidence, cheapest first:

1. **traffic** (passive, free): HAProxy's per-server counters for the copies this cluster
   routes to. Bytes carried in an interval are a *lower bound* on the link's capacity: when
   the link carried at least `confirm_ratio` of the current estimate, the estimate is
   confirmed (its age resets; a higher bound raises it). A response time that jumps well
   above its own average marks the estimate *suspect*, so a probe confirms the change at once.
   Connect and check durations give an RTT where Serf's coordinates give none.
2. **probes** (active, budgeted): a reachability ping (a few hundred bytes) and a probe of
   `probe_bytes` right after it on the same connection; bandwidth = probe bytes / (probe time -
   ping time), so the fixed costs of one HTTP exchange (RTT, signing, scheduling) cancel out.
   The estimate is the median of the last three probes, so one noisy probe never moves it; a
   probe that disagrees with the estimate by more than 2x (both counted at most 200 Mbit/s,
   where a 64 KiB probe measures the hosts' scheduling more than the link) makes it suspect, and the next probe
   (spaced by the best recent sample) confirms or refutes: a real change shows within two
   probes, and once confirmed the older samples are dropped.
3. **failure**: a peer that does not answer measures 0 at once (placement never picks a
   cluster it cannot reach), and from then on only pings, until one answers.

A probe is sent only when all of these hold (`probe_due`): the peer matters for a decision
(the caller asks only for those), the estimate is missing, suspect or older than
`stale_after`; the bytes sent to this peer in the last 60 s plus this probe stay within
`per_minute`; and since the last probe at least `probe_bytes / (share * estimate)` seconds
passed, so probing takes at most `share` (1 %) of the link it measured: one 64 KiB probe per
13 s at most on a 4 Mbit/s link, one per 52 s on a 1 Mbit/s link (the probe confirming a
suspect estimate is spaced by the best of the last samples instead, so that a drop is
confirmed at the rate the link had; the per-minute cap holds for it too). Defaults: 64 KiB
probes, 320 KiB per peer per minute (3 probes on staleness and 1 to confirm a change), 1 %,
stale after 20 s: an idle good link costs 3 probes a minute (26 kbit/s), against 7.5 MiB a
minute before.
"""
from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Literal

from peer.errors import InvalidKind

OVERHEAD_BYTES = 512  # what one signed peer-API request costs besides its body (headers, framing)
MAX_MBPS = 1000.0  # what one probe can claim at most: a 64 KiB probe cannot resolve more
# Above this, two samples are compared as equal: a 64 KiB probe there mostly measures the
# hosts' scheduling, and no decision reads the difference (triggers: 10 and 50 Mbit/s).
CLEAR_MBPS = 200.0
SAMPLES = 3
WINDOW = 60.0  # seconds of the per-minute budget

Source = Literal["probe", "traffic", "unreachable", "none"]
ProbeKind = Literal["full", "ping"]


class InvalidBudget(InvalidKind, ValueError):
    """A probe budget that cannot be honoured (names the field)."""


@dataclass(frozen=True)
class ProbeBudget:
    """How much active probing one peer may get. See the module doc for why each default."""

    probe_bytes: int = 64 * 1024
    per_minute: int = 320 * 1024
    share: float = 0.01
    stale_after: float = 20.0
    ping_every: float = 5.0  # seconds between pings to an unreachable peer
    confirm_ratio: float = 0.5
    forget_after: float = 300.0  # an estimate nobody refreshed this long is unknown again

    def __post_init__(self) -> None:
        for name in ("probe_bytes", "per_minute"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise InvalidBudget(f"{name}: expected a whole number of bytes >= 0, got {value!r}")
        for name in ("share", "stale_after", "ping_every", "confirm_ratio", "forget_after"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value) \
                    or value <= 0:
                raise InvalidBudget(f"{name}: expected a positive number, got {value!r}")
        if self.share > 1 or self.confirm_ratio > 1:
            raise InvalidBudget("share and confirm_ratio are fractions: at most 1")


@dataclass(frozen=True)
class Estimate:
    """What this cluster believes of its link to one peer, and how much to trust it."""

    bandwidth_mbps: float | None
    rtt_ms: float | None
    age_s: float | None  # since the last evidence about bandwidth (None: never measured)
    confidence: float  # 0..1: samples held (of 3), discounted as they age
    source: Source
    suspect: bool = False

    def as_api(self) -> dict[str, object]:
        return {"bandwidth_mbps": self.bandwidth_mbps, "rtt_ms": self.rtt_ms,
                "age_s": None if self.age_s is None else round(self.age_s, 1),
                "confidence": round(self.confidence, 2), "source": self.source, "suspect": self.suspect}


@dataclass
class LinkState:
    """Everything known about the link to one peer (mutated only by the functions below)."""

    samples: deque[float] = field(default_factory=lambda: deque(maxlen=SAMPLES))
    evidence_at: float | None = None
    source: Source = "none"
    suspect: bool = False
    held: float | None = None  # the estimate before a suspect sample
    unreachable: bool = False
    last_probe_at: float | None = None
    sends: deque[tuple[float, int]] = field(default_factory=deque)  # (at, bytes) in the last WINDOW
    traffic_rtt_ms: float | None = None
    response_ms: float | None = None  # moving average of HAProxy's rtime towards this peer

    def bandwidth(self) -> float | None:
        """The median of the samples; while suspect, the estimate from before the disagreeing
    sample (it does not count until a second probe confirms it)."""
        if self.unreachable:
            return 0.0
        if self.suspect and self.held is not None:
            return self.held
        return median(self.samples) if self.samples else None


def median(samples: Iterable[float]) -> float:
    """The median (the mean of the two middle values for an even count), as
    `statistics.median` computes it: that module imports decimal and fractions, ~0.5 MB of an
    idle agent's RSS for the one function it needed here (issue 18's memory)."""
    ordered = sorted(samples)
    if not ordered:
        raise ValueError("median of no samples")
    mid = len(ordered) // 2
    return ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2


def spent(state: LinkState, now: float) -> int:
    """Bytes probed towards the peer in the last WINDOW seconds (older sends forgotten)."""
    while state.sends and state.sends[0][0] <= now - WINDOW:
        state.sends.popleft()
    return sum(b for _, b in state.sends)


def estimate(state: LinkState, now: float, *, budget: ProbeBudget, serf_rtt_ms: float | None = None) -> Estimate:
    rtt = serf_rtt_ms if serf_rtt_ms is not None else state.traffic_rtt_ms
    if state.evidence_at is None or now - state.evidence_at > budget.forget_after:
        return Estimate(None, rtt, None, 0.0, "none")
    age = max(0.0, now - state.evidence_at)
    fresh = max(0.0, 1.0 - age / (3 * budget.stale_after))
    count = 1.0 if state.unreachable else len(state.samples) / SAMPLES
    return Estimate(state.bandwidth(), rtt, age, count * fresh, state.source, state.suspect)


def probe_due(state: LinkState, now: float, *, budget: ProbeBudget) -> ProbeKind | None:
    """What to send the peer now, if anything (the rules are the module doc's)."""
    if state.unreachable:
        last = state.last_probe_at
        if last is not None and now - last < budget.ping_every:
            return None
        return "ping" if spent(state, now) + OVERHEAD_BYTES <= budget.per_minute else None
    stale = (state.evidence_at is None or not state.samples or state.suspect
             or now - state.evidence_at >= budget.stale_after)
    if not stale:
        return None
    size = full_cost(budget)
    if size > budget.per_minute or spent(state, now) + size > budget.per_minute:
        return None
    if state.last_probe_at is not None and now - state.last_probe_at < spacing(state, budget=budget):
        return None
    return "full"


def full_cost(budget: ProbeBudget) -> int:
    """Bytes one full probe sends: a ping, then the padded request."""
    return budget.probe_bytes + 2 * OVERHEAD_BYTES


def spacing(state: LinkState, *, budget: ProbeBudget) -> float:
    """Seconds between two probes so that they take at most `share` of the estimated link.
    A suspect estimate is spaced by the best recent sample: a drop is confirmed quickly (at the
    rate the link had), a rise is not held back by the old low estimate."""
    if state.unreachable or not state.samples:
        return 0.0
    bw = max(state.samples) if state.suspect else median(state.samples)
    if bw <= 0:
        return 0.0
    return budget.probe_bytes * 8 / (budget.share * bw * 1e6)


def sent(state: LinkState, now: float, size: int) -> None:
    """Count bytes sent towards the peer (before the answer: a lost probe cost them too)."""
    state.sends.append((now, size))
    state.last_probe_at = now


def measured(ping_s: float, probe_s: float, size: int) -> float:
    """Mbit/s from a ping and a probe of `size` bytes on the same connection (module doc)."""
    transfer = probe_s - ping_s
    if transfer <= size * 8 / (MAX_MBPS * 1e6):
        return MAX_MBPS
    return size * 8 / transfer / 1e6


def record_probe(state: LinkState, now: float, mbps: float) -> None:
    """A probe answered: `mbps` is its measurement.

    A sample more than 2x away from the estimate makes it suspect (the estimate holds, a
    second probe follows soon); a second one on the same side confirms a change of regime:
    the older samples describe a link that is gone and are dropped, so the estimate moves at
    once to the new samples. An agreeing sample clears the suspicion."""
    if not math.isfinite(mbps) or mbps < 0:
        raise ValueError(f"a probe measures a finite rate >= 0, got {mbps!r}")
    before = None if state.unreachable else state.bandwidth()
    state.unreachable = False
    sample = float(f"{mbps:.3g}")
    if before is not None and before > 0 and not _agree(mbps, before):
        last = state.samples[-1] if state.samples else None
        if state.suspect and last is not None and not _agree(last, before) and _same_side(last, mbps, before):
            state.samples.clear()
            state.samples.append(last)
            state.suspect = False
        else:
            state.suspect, state.held = True, before
    else:
        state.suspect = False
    state.samples.append(sample)
    state.evidence_at = now
    state.source = "probe"


def _agree(a: float, b: float) -> bool:
    """Within 2x of each other, both counted at most CLEAR_MBPS."""
    a, b = min(a, CLEAR_MBPS), min(b, CLEAR_MBPS)
    return b > 0 and 0.5 <= a / b <= 2.0


def _same_side(a: float, b: float, ref: float) -> bool:
    return (a < ref / 2 and b < ref / 2) or (a > ref * 2 and b > ref * 2)


def record_ping(state: LinkState, now: float) -> None:
    """A ping answered: the peer is reachable again, its bandwidth unknown until probed."""
    if state.unreachable:
        state.unreachable = False
        state.samples.clear()
        state.evidence_at = now
        state.source = "none"


def record_unreachable(state: LinkState, now: float, *, sent_bytes: int, waited_s: float) -> None:
    """No answer. A big probe that timed out says the link is slower than what it tried; a
    peer that does not answer at all (or a ping) measures 0, and only pings follow."""
    if sent_bytes > OVERHEAD_BYTES and waited_s > 0 and not state.unreachable:
        # An upper bound, kept as a sample: one timeout among good probes is suspect and
        # confirmed, two move the median (a link that slow is then probed as rarely as 1 % says).
        record_probe(state, now, sent_bytes * 8 / waited_s / 1e6)
        return
    state.suspect = False
    state.evidence_at = now
    state.samples.clear()
    state.unreachable = True
    state.source = "unreachable"


def record_traffic(state: LinkState, now: float, *, carried_bytes: int, interval_s: float,
                   budget: ProbeBudget) -> None:
    """HAProxy carried `carried_bytes` (the busier direction) to or from the peer in
    `interval_s`: a lower bound on capacity that confirms (or raises) the estimate."""
    if interval_s <= 0 or carried_bytes <= 0 or state.unreachable:
        return
    bound = carried_bytes * 8 / interval_s / 1e6
    current = state.bandwidth()
    if current is None or bound < budget.confirm_ratio * current:
        return  # the link was not busy enough to say anything about its capacity
    if bound > current:
        state.samples.append(float(f"{bound:.3g}"))
    state.evidence_at = now
    state.source = "traffic"
    state.suspect = False


def record_response_time(state: LinkState, rtime_ms: float) -> None:
    """HAProxy's average response time of the copy at the peer: a jump to more than twice its
    own average (and 20 ms) hints that the link degraded: make the estimate suspect."""
    if not math.isfinite(rtime_ms) or rtime_ms < 0:
        return
    avg = state.response_ms
    if avg is not None and rtime_ms > 2 * avg + 20 and state.samples and not state.suspect:
        state.held = state.bandwidth()
        state.suspect = True
    state.response_ms = rtime_ms if avg is None else 0.8 * avg + 0.2 * rtime_ms


def record_traffic_rtt(state: LinkState, rtt_ms: float) -> None:
    if math.isfinite(rtt_ms) and rtt_ms >= 0:
        state.traffic_rtt_ms = rtt_ms


def peers_that_matter(*, here: str, hosts: Iterable[str], rankings: Iterable[Sequence[str]],
                      candidates: int) -> frozenset[str]:
    """The peers whose links a decision of this cluster reads: where the services it stewards
    run (and their standbys), and the first `candidates` other clusters of each service's
    placement ranking (the targets a move would pick from).
    The probe set grows with what this cluster is responsible for, not with the federation."""
    wanted = set(hosts)
    for ranked in rankings:
        wanted.update([name for name in ranked if name != here][:candidates])
    wanted.discard(here)
    return frozenset(wanted)
