"""Service processes the process driver started but can no longer prove are what its state says.

Adoption trusts `instance.json` (pid *and* start time, the descriptor, the port). When that
file is lost or corrupt, or the service's directory is removed, the process keeps running and
keeps its port: starting a new copy beside it would leave two copies and leak the port for
good. The rule chosen here is the safe one: such a process is never adopted on guesswork (its
descriptor, health check and home are unknown), it is stopped before anything starts a new
copy, and that is logged at WARNING. The caller then starts a fresh copy from the record.

A process is a stray of this driver only if all of these hold, so an operator's shell that
happens to sit in the service directory is never touched:
- its working directory is `<data dir>/services/<name>` (what the driver gives every service),
  or that path marked `(deleted)`;
- its environment (as started) carries `ROAM_SERVICE=<name>` and this driver's `ROAM_CLUSTER`;
- its process group is not one the driver supervises (an adopted or started run).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from peer.drivers.process_state import proc_stat

_DELETED = " (deleted)"


@dataclass(frozen=True)
class Stray:
    service: str
    pid: int
    pgid: int
    port: str  # ROAM_PORT as started ("" if unknown), for the log line


def _environ(pid: int) -> dict[str, str]:
    try:
        raw = Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return {}
    out: dict[str, str] = {}
    for item in raw.split(b"\0"):
        key, sep, value = item.partition(b"=")
        if sep and key.startswith(b"ROAM_"):
            out[key.decode(errors="replace")] = value.decode(errors="replace")
    return out


def _service_dir(pid: int, root: str) -> str | None:
    """The service name if `pid`'s working directory is `root/<name>` (deleted or not)."""
    try:
        cwd = os.readlink(f"/proc/{pid}/cwd")
    except OSError:
        return None
    cwd = cwd.removesuffix(_DELETED)
    parent, _, name = cwd.rpartition("/")
    return name if parent == root and name else None


def find_strays(root: Path, *, cluster: str, supervised: set[int]) -> list[Stray]:
    """Every process group leader-or-member of this driver's services outside `supervised`
    (process group ids), one entry per process group."""
    base = os.path.realpath(root)
    found: dict[int, Stray] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        pid = int(entry.name)
        stat = proc_stat(pid)
        if stat is None or stat[0] in ("Z", "X") or stat[1] in supervised or stat[1] in found:
            continue
        name = _service_dir(pid, base)
        if name is None:
            continue
        env = _environ(pid)
        if env.get("ROAM_SERVICE") != name or env.get("ROAM_CLUSTER") != cluster:
            continue
        found[stat[1]] = Stray(service=name, pid=pid, pgid=stat[1], port=env.get("ROAM_PORT", ""))
    return sorted(found.values(), key=lambda s: (s.service, s.pgid))
