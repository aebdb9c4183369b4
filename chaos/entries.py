"""How a client uses a service's entry list (DESIGN "The home set": clients may use any entry).

A real client is configured with every entry of the home set, HC first (`endpoints` of
`GET /v1/services/{name}`, or `roam endpoints NAME`). It sends each request to the first
entry it believes serves, moves on to the next one on a failure (transport error, timeout,
5xx) within the same request's time budget, and remembers which entries failed so later
requests do not spend their budget on a dead entry first. A failed entry is probed every
`probe_interval` seconds; once it serves again, requests go back to it, so traffic returns
to the HC when the HC returns.

Pure: times are passed in, `chaos.load` does the I/O. Entries are addressed by index.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

DEFAULT_PROBE_INTERVAL = 0.5


@dataclass
class EntryList:
    """The entries of one service, in priority order, and what the client has seen of them."""

    urls: tuple[str, ...]
    labels: tuple[str, ...]
    probe_interval: float = DEFAULT_PROBE_INTERVAL
    down_since: dict[int, float] = field(default_factory=dict)
    last_probe: dict[int, float] = field(default_factory=dict)

    @classmethod
    def of(cls, urls: Sequence[str], labels: Sequence[str] | None = None, *,
           probe_interval: float = DEFAULT_PROBE_INTERVAL) -> EntryList:
        """`urls` in priority order; `labels` name them in reports (default: the URLs)."""
        if not urls:
            raise ValueError("no entries to use")
        names = tuple(labels) if labels is not None else tuple(urls)
        if len(names) != len(urls) or len(set(names)) != len(names):
            raise ValueError(f"labels {list(names)} must name each of {list(urls)} once")
        if probe_interval <= 0:
            raise ValueError("probe_interval must be positive")
        return cls(tuple(urls), names, probe_interval)

    def __len__(self) -> int:
        return len(self.urls)

    def order(self) -> list[int]:
        """The entries a new request tries, in turn: those believed serving in priority
        order, then the failed ones (a last resort rather than nothing)."""
        up = [i for i in range(len(self.urls)) if i not in self.down_since]
        return up + sorted(self.down_since, key=lambda i: i)

    @property
    def preferred(self) -> int:
        return self.order()[0]

    def failed(self, i: int, now: float) -> None:
        """Entry `i` did not serve a request (its next probe is due a full interval later)."""
        if i not in self.down_since:
            self.down_since[i] = now
            self.last_probe[i] = now

    def served(self, i: int) -> None:
        """Entry `i` served: requests may go to it again."""
        self.down_since.pop(i, None)
        self.last_probe.pop(i, None)

    def probes_due(self, now: float) -> list[int]:
        """Failed entries not probed for `probe_interval`; they count as probed from now."""
        due = [i for i in sorted(self.down_since)
               if now - self.last_probe.get(i, self.down_since[i]) >= self.probe_interval]
        for i in due:
            self.last_probe[i] = now
        return due
