"""The C heap of an agent that is idle most of the time, and busy in bursts (issues 16, 18).

glibc's malloc keeps what a burst freed: pages in the middle of its heap stay resident until
`malloc_trim` hands them back, and after the first large block (128 KiB or more) is freed it
raises its mmap threshold to that block's size, so later blocks of that size are carved from
the heap too. uvloop gives every TLS connection a 256 KiB read buffer: once a start-up
storm of connections had come and gone, their buffers' pages stayed in the heap. Measured with
20 idle agents on loopback (automatic identity), per agent: a fixed threshold 1.3 MB less RSS,
a trim after the burst (the agent trims every 10 s) 0.7 MB more (at 50 agents in namespaces, the trim of the first idle
minute took 2.2 MB); importing ctypes costs 0.3 MB.

Only glibc has these calls; elsewhere (musl) both are no-ops.
"""
from __future__ import annotations

import ctypes
import logging
from typing import Any

log = logging.getLogger(__name__)

M_MMAP_THRESHOLD = -3  # glibc's malloc.h
MMAP_THRESHOLD = 128 * 1024  # glibc's default, fixed: blocks this large are mapped and unmapped


def _libc() -> Any | None:
    try:
        libc = ctypes.CDLL(None)
    except OSError:
        return None
    return libc if hasattr(libc, "mallopt") and hasattr(libc, "malloc_trim") else None


_LIBC = _libc()


def fix_mmap_threshold() -> bool:
    """Keep large blocks out of the heap for the life of the process; False if not glibc."""
    if _LIBC is None:
        return False
    ok = bool(_LIBC.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD))
    if not ok:
        log.debug("mallopt(M_MMAP_THRESHOLD) refused")
    return ok


def give_back() -> bool:
    """Return the heap's free pages to the kernel (every HEAP_TRIM_EVERY seconds, peer.agent);
    True if some were. Costs a walk over the heap's free chunks: well under a millisecond for an
    idle agent's heap of about 10 MB."""
    return _LIBC is not None and bool(_LIBC.malloc_trim(0))
