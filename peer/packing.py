"""msgpack's `packb` without its 256 KiB buffer per call: the one way the daemon packs.

`msgpack.packb` builds a `Packer` whose buffer is `buf_size` bytes, 256 KiB by default. The
agent fixes glibc's mmap threshold at 128 KiB (`peer.runtime.heap`: large freed blocks go back
to the kernel at once), so that buffer is an `mmap` and a `munmap` each call: 8.5-9 us per
small record against 0.6-0.7 us with a small buffer (measured with the threshold fixed, as in
the agent), and the records code packs several times per record. A small buffer grows, by
doubling, when an object needs more, so large messages cost a few reallocations instead.

A new `Packer` per call rather than one shared: anti-entropy merges in a worker thread, and a
`Packer` is not safe to share between threads.
"""
from __future__ import annotations

from typing import Any

import msgpack

BUF_SIZE = 4096  # below glibc's mmap threshold: carved from the heap, reused at once


def packb(obj: Any, *, use_bin_type: bool = True) -> bytes:
    """`msgpack.packb(obj, use_bin_type=...)`, the same bytes, without the 256 KiB buffer."""
    data: bytes = msgpack.Packer(use_bin_type=use_bin_type, buf_size=BUF_SIZE).pack(obj)
    return data
