"""Hypothesis strategies for placement inputs, biased toward boundaries (full, exactly fitting)."""
from __future__ import annotations

from hypothesis import settings
from hypothesis import strategies as st

from placement import ClusterView, Requirements

NAMES = tuple(f"c{i}" for i in range(10))
TIERS = ("deep-edge", "edge", "cloud", "other")
GIB = 1 << 30

# Shared machine, 2 cores: no per-example deadline; no example database left in the tree.
PROPERTY = settings(deadline=None, database=None, max_examples=200)

cores = st.one_of(st.integers(0, 16).map(float), st.floats(0, 64, allow_nan=False))
memory = st.one_of(st.integers(0, 8).map(lambda g: g * GIB), st.integers(0, 64 * GIB))
slots = st.integers(0, 12)
maybe_rtt = st.none() | st.floats(0, 500, allow_nan=False)
maybe_bw = st.none() | st.floats(0, 1000, allow_nan=False)


@st.composite
def cluster_views(draw: st.DrawFn, name: st.SearchStrategy[str] = st.sampled_from(NAMES)) -> ClusterView:
    return ClusterView(
        name=draw(name),
        alive=draw(st.booleans()),
        tier=draw(st.sampled_from(TIERS)),
        cpu_capacity=draw(cores),
        cpu_used=draw(cores),
        mem_capacity=draw(memory),
        mem_used=draw(memory),
        slots_capacity=draw(slots),
        slots_used=draw(slots),
        rtt_ms=draw(maybe_rtt),
        bandwidth_mbps=draw(maybe_bw),
        accepting=draw(st.booleans()),
    )


view_lists = st.lists(cluster_views(), unique_by=lambda v: v.name, max_size=len(NAMES))

requirements = st.builds(
    Requirements,
    cpu=st.one_of(st.integers(0, 4).map(float), st.floats(0, 8, allow_nan=False)),
    memory=st.one_of(st.integers(0, 2).map(lambda g: g * GIB), st.integers(0, 8 * GIB)),
    tiers=st.frozensets(st.sampled_from(TIERS), max_size=3),
    avoid=st.frozensets(st.sampled_from(NAMES), max_size=4),
)

homes = st.sampled_from(NAMES)
