"""The one place domain errors become HTTP statuses (issue 13): the parts of the daemon raise
errors that say what went wrong (peer.errors), and the admin API decides how to answer."""
from __future__ import annotations

from peer.errors import InvalidKind, NotFoundKind, RefusedKind, RoamError, UnavailableKind, UpstreamKind

#: Most specific first: an error of several kinds answers with the first that matches.
STATUS_OF_KIND: tuple[tuple[type[RoamError], int], ...] = (
    (NotFoundKind, 404),
    (RefusedKind, 403),
    (InvalidKind, 422),
    (UnavailableKind, 503),
    (UpstreamKind, 502),
)
#: A domain error of no kind: the operation conflicts with the state things are in.
CONFLICT = 409


def status_of(exc: RoamError) -> int:
    """The HTTP status the admin API answers `exc` with."""
    return next((status for kind, status in STATUS_OF_KIND if isinstance(exc, kind)), CONFLICT)
