"""Who acts as home for a service now, and when the home set must change. Pure decisions.

DESIGN "The home set": the steward is the first entry of `homes` that is alive in the local
view; it alone coordinates reroutes and commits, runs the fail-safe and repairs the home set.
"Alive" is judged by `Liveness`, which holds the evidence (Serf's status and when it changed,
and the fail-safe's own probes) and the time math, apart from any timer: an entry counts as
lost once Serf has reported it failed or left for `home_grace` seconds, or once this cluster's
own probes found it unreachable (HAProxy checks down and the peer API silent), which is
seconds faster than Serf, or once the home watch (peer/homeset/watch.py) has found it silent
(several pings in a row unanswered, peer/homeset/silence.py) for `home_grace` seconds: the grace
runs from that mark as it does from Serf's "failed", so an idle HC's loss is noticed
without waiting for Serf. Split brain is allowed: each side of a partition elects its own
steward, and the merge rule (peer/records/merge.py) decides after the heal.
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from peer.records.record import Record

DEFAULT_HOME_GRACE = 2.0
DEFAULT_REPAIR_AFTER = 10.0


@dataclass(frozen=True)
class Observed:
    """What gossip says of one cluster: its Serf status and since when (monotonic seconds)."""

    status: str
    since: float


@dataclass
class Liveness:
    """The local view used for stewardship; `now` is always passed in (no clock inside)."""

    here: str
    home_grace: float = DEFAULT_HOME_GRACE
    caught_up: bool = True  # False until a restarted cluster has synced its records
    unreachable: dict[str, float] = field(default_factory=dict)  # cluster -> since (probe evidence)
    silent: dict[str, float] = field(default_factory=dict)  # cluster -> marked at (home watch)

    def mark_unreachable(self, cluster: str, now: float) -> None:
        self.unreachable.setdefault(cluster, now)

    def mark_silent(self, cluster: str, now: float) -> None:
        """The home watch's pings went unanswered (peer/homeset/silence.py): lost `home_grace` later."""
        self.silent.setdefault(cluster, now)

    def forget_silent(self, cluster: str) -> None:
        """The home watch heard it again, or no longer watches it."""
        self.silent.pop(cluster, None)

    def mark_reachable(self, cluster: str) -> None:
        """It answered: whatever probes said of it no longer holds."""
        self.unreachable.pop(cluster, None)
        self.silent.pop(cluster, None)

    def lost_for(self, cluster: str, members: Mapping[str, Observed], now: float) -> float | None:
        """Seconds `cluster` has been lost, or None if it counts as alive."""
        if cluster == self.here:
            return None
        evidence: list[float] = []
        seen = members.get(cluster)
        if seen is None or seen.status in ("failed", "left"):
            since = seen.since if seen is not None else now
            if now - since >= self.home_grace:
                evidence.append(now - since)
        marked = self.silent.get(cluster)
        if marked is not None and now - marked >= self.home_grace:
            evidence.append(now - marked)
        if cluster in self.unreachable:
            if seen is not None and seen.status == "alive" and seen.since > self.unreachable[cluster]:
                del self.unreachable[cluster]  # gossip saw it come back after our probes failed
            else:
                evidence.append(now - self.unreachable[cluster])
        return max(evidence) if evidence else None

    def steward(self, record: Record, members: Mapping[str, Observed], now: float) -> str | None:
        """The first entry not lost; `here` is passed over until it has caught up."""
        for entry in record.entries:
            if entry == self.here:
                if self.caught_up:
                    return entry
                continue
            if self.lost_for(entry, members, now) is None:
                return entry
        return None


@dataclass(frozen=True)
class Repair:
    """Replace `drop` (lost entries that are not the HC) and add entries to keep the count."""

    drop: tuple[str, ...]
    need: int  # how many new entries to choose


def repair_needed(record: Record, *, wanted: int, lost_for: Mapping[str, float | None],
                  repair_after: float) -> Repair | None:
    """At the steward: does the home set need new entries? The HC is never dropped (its
    endpoint lives there forever; it resumes stewardship when it returns), but while it is lost
    another entry is added in its place, so `wanted` entries stay live."""
    long_lost = [e for e in record.entries if (lost_for.get(e) or 0.0) >= repair_after]
    if not long_lost:
        return None
    drop = tuple(e for e in long_lost if e != record.home)
    live = len(record.entries) - len(long_lost)
    need = max(0, wanted - live)
    if not drop and need == 0:
        return None
    return Repair(drop=drop, need=need)


def must_adopt_home(record: Record, *, here: str, lost_for: Mapping[str, float | None], repair_after: float) -> bool:
    """Every entry lost for `repair_after`: the cluster running the service adds itself."""
    if record.tombstone or record.location != here or here in record.entries:
        return False
    return all((lost_for.get(e) or 0.0) >= repair_after for e in record.entries)


def watched_peers(records: Iterable[Record], here: str) -> frozenset[str]:
    """The clusters `here` may have to take stewardship from: for every live record it is an
    entry of, the entries ahead of it in `homes` order (the HC, then the deputies). One
    probe per cluster, whatever the number of records naming it (peer/homeset/watch.py)."""
    ahead: set[str] = set()
    for record in records:
        if record.tombstone or here not in record.entries:
            continue
        ahead.update(record.entries[:record.entries.index(here)])
    return frozenset(ahead)
