"""Service processes the process driver started but whose `instance.json` is lost.

Adoption trusts `instance.json` (pid *and* start time, the descriptor, the port). When that
file is lost or corrupt, or the service's directory is removed, the process keeps running and
keeps its port: starting a new copy beside it would leave two copies and leak the port for
good. The rule (peer/drivers/process.py): a stray is held, never supervised on guesswork,
until the record's descriptor is deployed again. It is then adopted only if it provably runs
exactly that descriptor (its command line is the descriptor's command rendered for the port
it was given, its home is the record's, and it answers the health check), and its state file
is written again; otherwise it is stopped before the new copy starts. A stray that no record
claims is deleted like any orphan. Either way there is never a second copy.

A process is a stray of this driver only if all of these hold, so an operator's shell that
happens to sit in the service directory is never touched:
- its working directory is `<data dir>/services/<name>` (what the driver gives every service),
  or that path marked `(deleted)`;
- its environment (as started) carries `ROAM_SERVICE=<name>` and this driver's `ROAM_CLUSTER`;
- its process group is not one the driver supervises (an adopted or started run).
"""
from __future__ import annotations

import asyncio
import logging
import os
import signal
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

from peer.drivers.lifetimes import signal_group
from peer.drivers.process_state import group_members, proc_stat

log = logging.getLogger(__name__)
_DELETED = " (deleted)"


@dataclass(frozen=True)
class Stray:
    service: str
    pid: int
    pgid: int
    env: dict[str, str]  # its ROAM_* variables as started (ROAM_PORT, ROAM_HOME, ROAM_HOST)

    @property
    def port(self) -> int | None:
        raw = self.env.get("ROAM_PORT", "")
        return int(raw) if raw.isdigit() else None

    def cmdline(self) -> list[str] | None:
        """The leader's argv now (None once it is gone)."""
        try:
            raw = Path(f"/proc/{self.pgid}/cmdline").read_bytes()
        except OSError:
            return None
        return [a.decode(errors="surrogateescape") for a in raw.split(b"\0")[:-1]]


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
        found[stat[1]] = Stray(service=name, pid=pid, pgid=stat[1], env=env)
    return sorted(found.values(), key=lambda s: (s.service, s.pgid))


async def stop_group(pgid: int, *, grace: float) -> None:
    """SIGTERM a stray's process group, SIGKILL what is left after `grace`; wait until empty
    (a stray is not our child: init reaps it)."""
    signal_group(pgid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and group_members(pgid):
        await asyncio.sleep(0.02)
    signal_group(pgid, signal.SIGKILL)
    deadline = time.monotonic() + 5.0
    while time.monotonic() < deadline and group_members(pgid):
        await asyncio.sleep(0.05)


class StrayKeeper:
    """The driver's held strays, one per service name, and the rule for each (module doc)."""

    def __init__(self, *, root: Path, cluster: str, host: str, grace: float) -> None:
        self._root, self._cluster, self._host, self._grace = root, cluster, host, grace
        self._held: dict[str, Stray] = {}

    async def hold(self, *, supervised: set[int], running: set[str]) -> list[Stray]:
        """Find the strays outside `supervised` process groups; hold one per name not in
        `running`, stop any other (a second copy of something that already runs)."""
        held = []
        found = await asyncio.to_thread(find_strays, self._root, cluster=self._cluster,
                                        supervised=supervised | {os.getpgrp()})
        for stray in found:
            if stray.service in running or stray.service in self._held or stray.port is None:
                await self.stop(stray, "a copy of it already runs")
                continue
            log.warning("found a copy of %s (pid %d, port %d) whose instance.json is lost; holding it "
                        "until its record is deployed", stray.service, stray.pid, stray.port)
            self._held[stray.service] = stray
            held.append(stray)
        return held

    async def claim(self, name: str, *, argv: Callable[[int], list[str]], home: str,
                    healthy: Callable[[int], Awaitable[bool]]) -> tuple[Stray, int] | None:
        """The held stray of `name` and its start time if it runs exactly `argv(port)` for
        `home` and answers `healthy(port)`; otherwise it is stopped and None returned."""
        stray = self._held.pop(name, None)
        if stray is None or stray.port is None:
            return None
        stat = proc_stat(stray.pgid)
        if (stat is None or stray.cmdline() != argv(stray.port) or stray.env.get("ROAM_HOME") != home
                or stray.env.get("ROAM_HOST") != self._host):
            await self.stop(stray, "it does not run the record's descriptor")
            return None
        if not await healthy(stray.port):
            await self.stop(stray, "it does not answer its health check")
            return None
        log.warning("adopting the copy of %s (pid %d, port %d) whose instance.json was lost: it runs "
                    "the record's descriptor and answers", name, stray.pid, stray.port)
        return stray, stat[2]

    async def release(self, name: str, why: str) -> None:
        """Stop the held stray of `name`, if any (its service is deleted here)."""
        stray = self._held.pop(name, None)
        if stray is not None:
            await self.stop(stray, why)

    async def stop(self, stray: Stray, why: str) -> None:
        log.warning("stopping a stray copy of %s (pid %d, port %s): %s", stray.service, stray.pid,
                    stray.port or "?", why)
        await stop_group(stray.pgid, grace=self._grace)
