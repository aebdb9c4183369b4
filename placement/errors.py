"""Errors raised by the placement package: one tree, so callers can catch `PlacementError`."""
from __future__ import annotations


class PlacementError(Exception):
    """Base class of every error raised by `placement`."""


class InvalidView(PlacementError, ValueError):
    """A `ClusterView` built from gossip carries a value no decision can use (NaN, negative)."""


class InvalidRequirements(PlacementError, ValueError):
    """A service's `Requirements` are malformed (negative or non-finite cpu/memory)."""


class InvalidThresholds(PlacementError, ValueError):
    """Trigger thresholds that would make services flap (e.g. come-home above move-out)."""


class DuplicateCluster(PlacementError, ValueError):
    """Two views share one name: the result would depend on input order, so refuse."""

    def __init__(self, name: str) -> None:
        super().__init__(f"two cluster views are named {name!r}")
        self.name = name


class UnknownPolicy(PlacementError, LookupError):
    """`get_policy` was asked for a name that is not in `POLICIES`."""

    def __init__(self, name: str, known: tuple[str, ...]) -> None:
        super().__init__(f"unknown placement policy {name!r}; known: {', '.join(known)}")
        self.name = name
        self.known = known


class InvalidPolicy(PlacementError, ValueError):
    """A policy configured with weights or scales that cannot give a meaningful score."""
