"""Copies started without roam's state, at the cluster that runs them (issue 15, restarts in place).

A copy restarted in place (its driver restarted it after a crash, the converger or a start
after an agent restart deployed it again at the same cluster) starts with the service's
initial state. Its ETag is opaque, so an entry pulling it cannot tell that state from a newer
one: it would save the empty state as the newest version, and the saved state would go back.
Only the cluster running the copy knows it restarted, so it keeps, per service:

* an `epoch` that grows whenever the copy (re)starts or receives its state back (with a `boot`
  token drawn at each agent start, as the epochs start again from 0 then), and
* whether the copy is `fresh`: started, and not yet given the latest saved state.

A fresh copy is restored at once: the cluster asks the steward (or its own keeper when it is
the steward) to install the latest saved state into it (peer/state/keeper.py `restore_fresh`).
An entry pulling the primary saves a snapshot only if the copy's view was the same, and not
fresh, at some moment before the GET and after it (`may_save`): any restart or restore in
between changes the epoch, so a state read from a fresh copy is never saved, whenever the
restart happened. The view before may be the one taken after the previous pull, so a pull
answered 304 costs no peer call and a changed one costs one.
"""
from __future__ import annotations

import secrets
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class CopyView:
    """What the copy's cluster says of its copy of one service."""

    boot: str  # drawn at the agent's start: epochs of two agent runs never compare equal
    epoch: int
    fresh: bool


def may_save(before: CopyView | None, after: CopyView | None) -> bool:
    """May a snapshot read between these two views of the copy be saved? Only if both were
    given, equal (nothing restarted or restored meanwhile) and the copy held roam's state."""
    return before is not None and before == after and not before.fresh


class FreshCopies:
    """The epochs and fresh marks of this cluster's copies (in memory: after an agent restart
    every adopted copy kept running with its state, and every copy started anew is marked)."""

    def __init__(self) -> None:
        self.boot = secrets.token_hex(8)
        self._epoch: dict[str, int] = {}
        self._fresh: set[str] = set()
        self.on_fresh: list[Callable[[], None]] = []  # a copy was marked fresh: the keeper wakes (peer.runtime.wake)

    def view(self, name: str) -> CopyView:
        return CopyView(self.boot, self._epoch.get(name, 0), name in self._fresh)

    def started(self, name: str) -> None:
        """The copy of `name` here crashed or (re)started without roam's state."""
        self._epoch[name] = self._epoch.get(name, 0) + 1
        self._fresh.add(name)
        for listener in self.on_fresh:
            listener()

    def restored(self, name: str, epoch: int) -> bool:
        """The state was installed into the copy seen at `epoch`; False (nothing changed) if the
        copy restarted again meanwhile, so that restart is restored too."""
        if self._epoch.get(name, 0) != epoch or name not in self._fresh:
            return False
        self._epoch[name] = epoch + 1
        self._fresh.discard(name)
        return True

    def fresh(self) -> list[str]:
        return sorted(self._fresh)

    def renamed(self, old: str, new: str, incarnation: str) -> None:
        """A concurrent creation renamed `name@home` here keeps its copy, and so its marks."""
        if old in self._epoch:
            self._epoch[new] = self._epoch.pop(old)
        if old in self._fresh:
            self._fresh.discard(old)
            self._fresh.add(new)

    def forget(self, name: str) -> None:
        """The copy is gone for good (deleted, moved away): nothing to restore."""
        self._fresh.discard(name)
