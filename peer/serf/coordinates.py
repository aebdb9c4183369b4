"""Round-trip time estimates from Serf's Vivaldi coordinates, no I/O.

Same math as Serf's `coordinate.DistanceTo`, so our estimates agree with `serf rtt`:
Euclidean distance of the vectors plus both heights, then both adjustments added when that
keeps the result positive.
"""
from __future__ import annotations

import math

from peer.serf.codec import Coordinate


def rtt_seconds(a: Coordinate, b: Coordinate) -> float:
    """Estimated round-trip time between the nodes holding coordinates `a` and `b`."""
    if len(a.vec) != len(b.vec):
        raise ValueError(f"coordinate dimensions differ: {len(a.vec)} != {len(b.vec)}")
    dist = math.dist(a.vec, b.vec) + a.height + b.height
    adjusted = dist + a.adjustment + b.adjustment
    return adjusted if adjusted > 0.0 else dist
