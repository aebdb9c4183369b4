"""Vivaldi RTT estimates, from a table worked out by hand with Serf's `DistanceTo` rules."""
from __future__ import annotations

import pytest

from peer.serf.codec import Coordinate
from peer.serf.coordinates import rtt_seconds


def c(*vec: float, height: float = 0.0, adjustment: float = 0.0) -> Coordinate:
    return Coordinate(vec=vec, error=1.5, adjustment=adjustment, height=height)


@pytest.mark.parametrize(
    ("a", "b", "expected"),
    [
        (c(0, 0), c(0, 0), 0.0),
        (c(0, 0), c(3, 4), 5.0),  # plain euclidean distance
        (c(0, 0, height=0.5), c(3, 4, height=0.25), 5.75),  # heights add
        (c(0, 0, adjustment=0.1), c(3, 4, adjustment=0.2), 5.3),  # adjustments add
        (c(0, 0, adjustment=-1.0), c(0.5, 0, adjustment=-1.0), 0.5),  # would go negative: ignored
        (c(0.001, 0.0), c(0.0, 0.0, height=1e-5), 0.00101),  # realistic loopback magnitudes
    ],
)
def test_rtt_table(a: Coordinate, b: Coordinate, expected: float) -> None:
    assert rtt_seconds(a, b) == pytest.approx(expected)
    assert rtt_seconds(b, a) == pytest.approx(expected)  # symmetric


def test_dimension_mismatch_is_refused() -> None:
    with pytest.raises(ValueError, match="dimensions"):
        rtt_seconds(c(0, 0), c(0, 0, 0))
