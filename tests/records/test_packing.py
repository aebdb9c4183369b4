"""peer.packing.packb: msgpack's bytes exactly, and the daemon's only way to pack."""
from __future__ import annotations

from pathlib import Path

import msgpack
from hypothesis import given, settings
from hypothesis import strategies as st

from peer.packing import BUF_SIZE, packb

REPO = Path(__file__).resolve().parents[2]

plain = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False) | st.text() | st.binary(),
    lambda children: st.lists(children, max_size=8) | st.dictionaries(st.text(max_size=8), children, max_size=8),
    max_leaves=40,
)


@settings(deadline=None, database=None, max_examples=300)
@given(obj=plain, use_bin_type=st.booleans())
def test_the_same_bytes_as_msgpack(obj: object, use_bin_type: bool) -> None:
    assert packb(obj, use_bin_type=use_bin_type) == msgpack.packb(obj, use_bin_type=use_bin_type)


def test_objects_larger_than_the_buffer_grow_it() -> None:
    big = {"page": [b"x" * 1000 for _ in range(300)], "text": "y" * (3 * BUF_SIZE)}  # ~300 KB
    assert packb(big) == msgpack.packb(big, use_bin_type=True)


def test_the_daemon_never_packs_with_msgpack_packb() -> None:
    """Each `msgpack.packb` maps and unmaps 256 KiB in the agent (peer/packing.py's docstring)."""
    callers = [str(path.relative_to(REPO)) for package in ("peer", "lb")
               for path in sorted((REPO / package).rglob("*.py"))
               if "msgpack.packb(" in path.read_text() and path.name != "packing.py"]
    assert callers == []
