"""Version order of a service's state (pure, no I/O).

A service names its state's version with an ETag: opaque, with no order roam could rely on (a
hash, a counter reset by a restart). roam therefore keeps its own order beside it: a sequence
number per service that grows by one whenever the state read from the primary carries an ETag
other than the last one saved. The rules:

* `observe`: the same ETag keeps its version; a different one gets the next sequence number,
  above `floor` too (the `state_version` the record carries, so a new steward that saved
  nothing yet never reuses a number an earlier steward gave out).
* `may_install`: a copy only ever receives a version newer than the one it holds, so no copy
  goes back to an older state, whichever order pushes arrive in (a slow periodic push racing a
  migration's final copy, two stewards for a moment after a partition).
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, order=True)
class Version:
    """roam's sequence number and the service's own ETag for it."""

    seq: int
    etag: str

    def as_text(self) -> str:
        return f"{self.seq}:{self.etag}"


def observe(last: Version | None, etag: str, *, floor: int = 0) -> Version:
    """The version of state read with `etag`, given the last one saved (module rules)."""
    if last is not None and last.etag == etag:
        return last
    base = max(last.seq if last is not None else 0, floor)
    return Version(base + 1, etag)


def may_install(installed: Version | None, candidate: Version) -> bool:
    """May a copy holding `installed` receive `candidate`? Only if it is strictly newer."""
    return installed is None or candidate.seq > installed.seq


class InstalledVersions:
    """What each copy ("ip:port") holds, as far as roam installed it; refuses older versions."""

    def __init__(self) -> None:
        self._at: dict[str, Version] = {}

    def get(self, copy: str) -> Version | None:
        return self._at.get(copy)

    def admit(self, copy: str, candidate: Version) -> bool:
        """True (and recorded) if `candidate` may be installed at `copy` now."""
        if not may_install(self._at.get(copy), candidate):
            return False
        self._at[copy] = candidate
        return True

    def forget(self, copy: str) -> None:
        self._at.pop(copy, None)
