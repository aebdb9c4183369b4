"""What lets a restarted agent find its services again: instance.json and /proc identity.

A pid alone is not an identity (pids are reused), so the state file also keeps the process's
start time from /proc/<pid>/stat; a process is "ours" only if both match.
"""
from __future__ import annotations

import json
import os
import socket
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from peer.errors import RoamError

STATE_FILE = "instance.json"
#: PATH a service gets when the agent has none (also where the workload policy resolves argv[0]).
DEFAULT_PATH = "/usr/local/bin:/usr/bin:/bin"
LOG_FILE = "service.log"
_STATE_VERSION = 1


class StateFileError(RoamError, ValueError):
    """instance.json is missing, unreadable or not what this version writes."""


@dataclass(frozen=True)
class InstanceRecord:
    """The on-disk record of one running service (data_dir/services/<name>/instance.json)."""

    name: str
    home: str
    host: str
    port: int
    pid: int
    pgid: int
    start_ticks: int           # field 22 of /proc/<pid>/stat at spawn
    started_at: float
    restarts: int
    ready_once: bool           # has it ever answered its readiness probe?
    descriptor: dict[str, Any]

    def to_json(self) -> bytes:
        return json.dumps({"version": _STATE_VERSION, **asdict(self)}, sort_keys=True, indent=1).encode()

    @classmethod
    def load(cls, path: Path) -> InstanceRecord:
        try:
            obj = json.loads(path.read_bytes())
            if obj.pop("version", None) != _STATE_VERSION:
                raise StateFileError(f"{path}: unknown version")
            record = cls(**obj)
        except (OSError, ValueError, TypeError) as exc:
            raise StateFileError(f"{path}: {exc}") from exc
        if not all(isinstance(v, int) and v > 0 for v in (record.pid, record.pgid, record.port)):
            raise StateFileError(f"{path}: bad pid/pgid/port")
        return record




def proc_stat(pid: int) -> tuple[str, int, int] | None:
    """(state letter, pgrp, start time in clock ticks) of a process, or None if it is gone."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_bytes()
    except (FileNotFoundError, ProcessLookupError):
        return None
    # The command name (field 2) may contain spaces and parentheses: split after the last ')'.
    fields = raw[raw.rindex(b")") + 2 :].split()
    return fields[0].decode(), int(fields[2]), int(fields[19])


def is_same_process(pid: int, start_ticks: int) -> bool:
    """True if `pid` is alive (not a zombie) and is the process that started at `start_ticks`."""
    stat = proc_stat(pid)
    return stat is not None and stat[0] not in ("Z", "X") and stat[2] == start_ticks


def group_members(pgid: int) -> list[int]:
    """Live (non-zombie) processes of a process group."""
    members = []
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            stat = proc_stat(int(entry.name))
            if stat is not None and stat[1] == pgid and stat[0] not in ("Z", "X"):
                members.append(int(entry.name))
    return members


def log_tail(path: Path, *, max_bytes: int = 4096, max_lines: int = 40) -> str:
    try:
        with path.open("rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - max_bytes))
            data = f.read()
    except OSError:
        return ""
    lines = data.decode("utf-8", "replace").splitlines()
    return "\n".join(lines[-max_lines:])


def bindable(host: str, port: int) -> bool:
    """Can a server bind host:port right now (with SO_REUSEADDR, as aiohttp and most servers do)?"""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def pick_port(candidates: Iterable[int], *, taken: set[int], host: str) -> int | None:
    """First candidate not used by another of our services and bindable on host."""
    for port in candidates:
        if port not in taken and bindable(host, port):
            return port
    return None
