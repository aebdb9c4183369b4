"""The root of roam's domain errors (issue 13): every error the daemon's parts raise to each
other derives from `RoamError`, so a caller that must not let anything through (a control loop,
the migration engine) catches one class, and a new error family cannot slip past it.

Domain errors say what went wrong, never how to answer it over HTTP: only `peer.api` maps them
to statuses (`peer.api.statuses`). The kinds below are that vocabulary; a family picks the kind
that fits (a service that does not exist is a `NotFoundKind`). `lb` keeps its own root
(`lb.errors.LBError`): it is a lower layer and imports nothing from `peer`.
"""
from __future__ import annotations


class RoamError(Exception):
    """Base of every domain error raised inside `peer`."""


class NotFoundKind(RoamError):
    """What the operation names does not exist (a service, a cluster's copy)."""


class InvalidKind(RoamError):
    """The input cannot be acted on as given (`field` names it where the family has one)."""


class UnavailableKind(RoamError):
    """Not now: the agent is shutting down or still recovering; the same call may work later."""


class RefusedKind(RoamError):
    """A policy forbids it (a workload rule): asking again the same way will not help."""


class UpstreamKind(RoamError):
    """Another cluster answered with something unusable (a malformed forwarded answer)."""
