"""The peer API's replay cache, kept across a restart of the agent.

A signed peer request is valid for `DEFAULT_WINDOW` (30 s) around its timestamp, and its nonce
is remembered for that long so it cannot be replayed. Kept only in memory, a captured request
could be replayed once right after the agent restarts (a crash, an upgrade). So every nonce
accepted is also appended to DATA/peer-nonces.log (`EXPIRES NONCE`, one line, one `write` on
an O_APPEND descriptor: a few microseconds, no fsync) and the live ones are loaded back at start.

Why no fsync: the page cache survives the agent's death (SIGKILL, a crash, an OOM kill); only a
host crash loses the tail, and a host that reboots takes longer than the 30 s window, after
which every captured request has expired anyway. The file is compacted (rewritten with the live
nonces only) at start and whenever it has grown `compact_every` lines and twice the live ones,
so it stays small: about the requests of one window.
"""
from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from pathlib import Path

from peer.peering.wire import NonceCache

log = logging.getLogger(__name__)

NONCE_FILE = "peer-nonces.log"
COMPACT_EVERY = 50_000


class PersistentNonceCache(NonceCache):
    """A NonceCache whose accepted nonces survive a restart (see the module docstring)."""

    def __init__(self, path: Path, *, max_size: int = 200_000, compact_every: int = COMPACT_EVERY,
                 clock: Callable[[], float] = time.time) -> None:
        super().__init__(max_size=max_size)
        self.path = path
        self.compact_every = compact_every
        self._clock = clock
        self._fd: int | None = None
        self._lines = 0
        self.loaded = self._load()
        self._compact()

    def _load(self) -> int:
        now = self._clock()
        try:
            text = self.path.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return 0
        except OSError as exc:
            log.warning("replay cache %s not read (%s): peer requests signed before this start are refused "
                        "only by their timestamp", self.path, exc.strerror)
            return 0
        live: list[tuple[float, str]] = []
        for line in text.splitlines():
            expires, _, nonce = line.partition(" ")
            try:
                at = float(expires)
            except ValueError:
                continue  # a torn last line
            if at >= now and nonce:
                live.append((at, nonce))
        for at, nonce in sorted(live):
            self._expiry[nonce] = at
        return len(live)

    def _compact(self) -> None:
        """Rewrite the file with the live nonces only, then append to it."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        self._purge(self._clock())
        tmp = self.path.with_name(f".{self.path.name}.tmp")
        body = "".join(f"{at:.3f} {nonce}\n" for nonce, at in self._expiry.items())
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, body.encode("utf-8"))
        finally:
            os.close(fd)
        os.replace(tmp, self.path)
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND, 0o600)
        self._lines = len(self._expiry)

    def remember(self, nonce: str, *, expires_at: float, now: float) -> None:
        super().remember(nonce, expires_at=expires_at, now=now)  # raises on a replay: nothing written
        if self._lines >= self.compact_every and self._lines >= 2 * len(self._expiry):
            self._compact()  # writes the live nonces, this one included
            return
        if self._fd is not None:
            try:
                os.write(self._fd, f"{expires_at:.3f} {nonce}\n".encode("utf-8"))
                self._lines += 1
            except OSError as exc:
                log.error("replay cache %s not written: %s", self.path, exc.strerror)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
