"""A file replaced atomically, written once for the whole code base.

Temp file beside it, fsync, rename, fsync of the directory: a crash leaves the old file or the
new one, never a torn one, and a watcher never reads half a file. The temp file is created
with the final mode, so a private file is never readable by others, not even for an instant.
It lives in `lb` (the lowest layer writes files too); `peer` imports it from here.
"""
from __future__ import annotations

import os
from pathlib import Path


def write_atomic(path: Path, data: bytes, *, mode: int = 0o600) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, mode)
    try:
        os.fchmod(fd, mode)  # also when a stale temp file existed with other permissions
        os.write(fd, data)
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        tmp.unlink(missing_ok=True)
        raise
    os.close(fd)
    os.replace(tmp, path)
    dfd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)
