"""The last state the steward saved, one file per service and incarnation in the data dir.

    DATA/state/<name>~<incarnation>.state     mode 0600, written atomically (tmp + rename)

A file is one JSON header line (`{"seq", "etag", "saved_at", "sha256", "size"}`) and then the
opaque body. The checksum catches a torn or truncated file (the rename is atomic, the disk
may not be): such a file is ignored and reported, never installed into a copy. One file per
incarnation: a name created again starts from no state, as the old service's state is not its.
"""
from __future__ import annotations

import hashlib
import json
import logging
import re
from dataclasses import dataclass
from pathlib import Path

from lb.files import write_atomic
from peer.errors import RoamError
from peer.state.hook import Snapshot
from peer.state.versions import Version

log = logging.getLogger(__name__)

_SAFE = re.compile(r"[A-Za-z0-9_.-]{1,64}")


class SavedStateCorrupt(RoamError):
    """A saved state file does not match its own header (torn write, disk error)."""


@dataclass(frozen=True)
class SavedState:
    version: Version
    snapshot: Snapshot
    saved_at: float  # wall-clock time of the pull that read it


class SavedStates:
    def __init__(self, data_dir: Path) -> None:
        self.dir = Path(data_dir) / "state"

    def path_of(self, name: str, incarnation: str) -> Path:
        inc = incarnation if _SAFE.fullmatch(incarnation or "") else hashlib.sha256(incarnation.encode()).hexdigest()[:16]
        return self.dir / f"{name}~{inc}.state"

    def save(self, name: str, incarnation: str, version: Version, snapshot: Snapshot, *, now: float) -> None:
        self.dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        header = {"seq": version.seq, "etag": version.etag, "saved_at": now, "size": snapshot.size,
                  "sha256": hashlib.sha256(snapshot.body).hexdigest()}
        final = self.path_of(name, incarnation)
        write_atomic(final, json.dumps(header, sort_keys=True).encode() + b"\n" + snapshot.body)

    def load(self, name: str, incarnation: str) -> SavedState | None:
        """The saved state, None if there is none; raises SavedStateCorrupt for a bad file."""
        path = self.path_of(name, incarnation)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return None
        head, sep, body = data.partition(b"\n")
        try:
            header = json.loads(head) if sep else None
            ok = (isinstance(header, dict) and isinstance(header.get("seq"), int)
                  and isinstance(header.get("etag"), str) and header.get("size") == len(body)
                  and header.get("sha256") == hashlib.sha256(body).hexdigest())
        except ValueError:
            ok = False
        if not ok:
            raise SavedStateCorrupt(f"{path}: header does not match the body")
        assert isinstance(header, dict)
        return SavedState(Version(header["seq"], header["etag"]), Snapshot(body, header["etag"]),
                          float(header.get("saved_at", 0.0)))

    def load_quietly(self, name: str, incarnation: str) -> SavedState | None:
        try:
            return self.load(name, incarnation)
        except (SavedStateCorrupt, OSError) as exc:
            log.error("saved state of %s not usable: %s", name, exc)
            return None

    def forget(self, name: str, incarnation: str) -> bool:
        """Remove a deleted service's saved state; True if there was one."""
        path = self.path_of(name, incarnation)
        existed = path.exists()
        path.unlink(missing_ok=True)
        return existed

    def rename(self, old: str, new: str, incarnation: str) -> None:
        """A concurrent creation renamed `name@home` (peer.records.naming) keeps its state."""
        source = self.path_of(old, incarnation)
        if source.exists():
            source.rename(self.path_of(new, incarnation))

    def drop_other_incarnations(self, name: str, keep: str) -> None:
        """A name created again: the old service's state files go."""
        if not self.dir.exists():
            return
        mine = self.path_of(name, keep).name
        for path in self.dir.glob(f"{name}~*.state"):
            if path.name != mine:
                path.unlink(missing_ok=True)
