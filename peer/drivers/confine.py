"""Services without the agent's privileges: `--run-as USER`, a working dir outside the data dir,
and the descriptor's cpu and memory as cgroup v2 limits where the host has them.

Why: the agent runs as root in the shipped setup, and its data dir holds the admin token, the
federation secret and the keyring. A service started as the agent's user could read them (and
act as the cluster), and nothing bounded what it used. With `run_as`:
* the process is started with that uid, its gid and no supplementary groups (Popen's
  `user`/`group`/`extra_groups`, applied in the child before exec);
* its working dir is `WORK_ROOT/<agent addr>/<service>` (0700, owned by the user), outside
  the data dir, which stays 0700 root: the service cannot read the token or secret (tested);
* on a host with a cgroup v2 hierarchy the process is put in `<mount>/roam-<addr>/<service>`
  before exec (the child writes itself to `cgroup.procs` through a descriptor the agent
  opened, so it is confined before its first instruction), and `cpu.max` / `memory.max` are
  set from the descriptor when the `cpu` and `memory` controllers are available there. On a
  hybrid host (cgroup v1 owns cpu and memory, v2 mounted at /sys/fs/cgroup/unified with no
  controllers, as on the machines roam is tested on) the process still gets its own v2
  cgroup but no limits, and `Confinement.limits_reason` says why (logged at start, shown in
  `GET /v1/status`).
The service's output still goes to the log in the data dir: the agent opens it and hands the
descriptor over, the service never opens anything there.

The arithmetic (`cpu_max`, `memory_max`, `find_cgroup2`) is pure and unit-tested.
"""
from __future__ import annotations

import contextlib
import logging
import os
import pwd
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from peer.errors import RoamError

log = logging.getLogger(__name__)

WORK_ROOT = Path("/run/roam-services")
CPU_PERIOD_US = 100_000
MIN_CPU_QUOTA_US = 1_000  # the kernel refuses quotas under 1 ms


class ConfineError(RoamError, OSError):
    """The service's user, working dir or cgroup could not be prepared."""


def cpu_max(cores: float, *, period: int = CPU_PERIOD_US) -> str:
    """`cpu.max` for `cores` CPUs: "QUOTA PERIOD" in microseconds (never below 1 ms)."""
    return f"{max(MIN_CPU_QUOTA_US, round(cores * period))} {period}"


def memory_max(limit: int) -> str:
    """`memory.max` in bytes, rounded up to a 4 KiB page (the kernel rounds down)."""
    return str(-(-max(limit, 4096) // 4096) * 4096)


def find_cgroup2(mounts: str) -> Path | None:
    """The cgroup v2 mount point in /proc/self/mounts text (unified or hybrid), if any."""
    for line in mounts.splitlines():
        parts = line.split()
        if len(parts) >= 3 and parts[2] == "cgroup2":
            return Path(parts[1])
    return None


@dataclass(frozen=True)
class Prepared:
    """What `_spawn` hands to Popen for one service."""

    cwd: Path
    popen: dict[str, Any]
    env: dict[str, str]  # HOME is the working dir: the agent's (/root) is not the service's
    close: Callable[[], None]  # closes the agent's copy of the cgroup.procs descriptor


class Confinement:
    """Prepares and releases the user, working dir and cgroup of each service (see module doc)."""

    def __init__(self, *, user: str, scope: str, work_root: Path = WORK_ROOT,
                 cgroup_mount: Path | None = None, mounts_file: Path = Path("/proc/self/mounts"),
                 strict: bool = True) -> None:
        """`strict`: --run-as was given, so a command the user cannot run is refused; under the
        default user (not given) such a command runs as the agent's user instead, with a
        warning (`cannot_run`)."""
        try:
            entry = pwd.getpwnam(user)
        except KeyError as exc:
            raise ConfineError(f"--run-as: no user {user!r}") from exc
        self.user, self.uid, self.gid = user, entry.pw_uid, entry.pw_gid
        self.strict = strict
        self.work_root = work_root / scope
        mount = cgroup_mount if cgroup_mount is not None else _read_mount(mounts_file)
        self.cgroup_root: Path | None = None if mount is None else mount / f"roam-{scope}"
        self.limits = False
        self.limits_reason: str | None = None
        self._setup_cgroups(mount)

    def _setup_cgroups(self, mount: Path | None) -> None:
        if mount is None or self.cgroup_root is None:
            self.limits_reason = "no cgroup v2 hierarchy is mounted"
            return
        try:
            available = set((mount / "cgroup.controllers").read_text().split())
            self.cgroup_root.mkdir(exist_ok=True)
        except OSError as exc:
            self.cgroup_root = None
            self.limits_reason = f"cannot create a cgroup under {mount}: {exc.strerror}"
            return
        missing = sorted({"cpu", "memory"} - available)
        if missing:
            self.limits_reason = (f"controllers {', '.join(missing)} are not available in the cgroup v2 hierarchy "
                                  f"at {mount} (cgroup.controllers: {' '.join(sorted(available)) or 'none'}; on a "
                                  "hybrid host they are bound to cgroup v1): services get a cgroup but no limits")
            return
        try:
            for parent in (mount, self.cgroup_root):
                (parent / "cgroup.subtree_control").write_text("+cpu +memory")
        except OSError as exc:
            self.limits_reason = f"cannot enable cpu and memory in {self.cgroup_root}: {exc.strerror}"
            return
        self.limits = True

    def as_api(self) -> dict[str, Any]:
        return {"user": self.user, "uid": self.uid, "work_root": str(self.work_root),
                "cgroup": None if self.cgroup_root is None else str(self.cgroup_root),
                "limits": self.limits, "limits_unavailable": self.limits_reason}

    def cannot_run(self, argv: list[str], *, path: str) -> str | None:
        """Why the user could not run `argv`, as far as file modes tell (None: it can): its
        program, through every symlink, and a script it is given first (`python3 /x/run.py`:
        an existing absolute file as argv[1]) must be reachable by it. What the program reads
        later (a venv's site-packages) is not checked: this catches the usual cases, e.g. an
        interpreter under /root (0700) or a script in a private directory."""
        program = argv[0] if "/" in argv[0] else shutil.which(argv[0], path=path)
        if program is None:
            return None  # not found at all: the start fails the same way for anyone
        wanted = [(program, os.X_OK)]
        if len(argv) > 1 and argv[1].startswith("/") and os.path.isfile(argv[1]):
            wanted.append((argv[1], os.R_OK))
        for target, mode in wanted:
            why = reachable(target, uid=self.uid, gid=self.gid, mode=mode)
            if why is not None:
                return f"{self.user} cannot {'run' if mode == os.X_OK else 'read'} {target}: {why}"
        return None

    def prepare(self, name: str, *, cpu: float, memory: int) -> Prepared:
        """The working dir (0700, owned by the user) and, where possible, the cgroup."""
        cwd = self.work_root / name
        try:
            for level in (self.work_root.parent, self.work_root):  # the agent's umask is 077
                level.mkdir(exist_ok=True, mode=0o755)
                os.chmod(level, 0o755)
            cwd.mkdir(mode=0o700, exist_ok=True)  # a restart keeps it; a delete removes it
            os.chown(cwd, self.uid, self.gid)
            os.chmod(cwd, 0o700)
        except OSError as exc:
            raise ConfineError(f"cannot prepare {cwd} for {self.user}: {exc.strerror}") from exc
        popen: dict[str, Any] = {"user": self.uid, "group": self.gid, "extra_groups": []}
        fd = self._cgroup_fd(name, cpu=cpu, memory=memory)
        env = {"HOME": str(cwd)}
        if fd is None:
            return Prepared(cwd=cwd, popen=popen, env=env, close=lambda: None)

        def join_cgroup() -> None:  # in the child, before exec: one write, no allocation to speak of
            os.write(fd, b"0")

        popen["preexec_fn"] = join_cgroup
        return Prepared(cwd=cwd, popen=popen, env=env, close=lambda: os.close(fd))

    def _cgroup_fd(self, name: str, *, cpu: float, memory: int) -> int | None:
        if self.cgroup_root is None:
            return None
        group = self.cgroup_root / name
        try:
            group.mkdir(exist_ok=True)
            if self.limits:
                (group / "cpu.max").write_text(cpu_max(cpu))
                (group / "memory.max").write_text(memory_max(memory))
            # Opened by root: the kernel judges the write by the opener's credentials, so the
            # child can join after it dropped to the service's user.
            return os.open(group / "cgroup.procs", os.O_WRONLY | os.O_CLOEXEC)
        except OSError as exc:
            raise ConfineError(f"cannot prepare cgroup {group}: {exc.strerror}") from exc

    def release(self, name: str) -> None:
        """After the service's processes are gone: its working dir and its (empty) cgroup."""
        shutil.rmtree(self.work_root / name, ignore_errors=True)
        if self.cgroup_root is not None:
            with contextlib.suppress(OSError):
                (self.cgroup_root / name).rmdir()


def allowed(st: os.stat_result, *, uid: int, gid: int, mode: int) -> bool:
    """Does the mode of a file grant `mode` (os.R_OK/W_OK/X_OK bits) to uid/gid (no
    supplementary groups: Confinement starts services without them)? Pure."""
    shift = 6 if st.st_uid == uid else 3 if st.st_gid == gid else 0
    return uid == 0 or (st.st_mode >> shift) & mode == mode


def reachable(target: str, *, uid: int, gid: int, mode: int) -> str | None:
    """Why uid/gid cannot open `target` for `mode` (None: it can): every directory on the way
    searchable, through every symlink, and the file itself allowing `mode`."""
    seen = 0
    todo, done = Path(target), Path("/")
    parts = list(todo.parts[1:]) if todo.is_absolute() else list(todo.parts)
    while parts:
        seen += 1
        if seen > 256:
            return "too many symlinks"
        here = done / parts.pop(0)
        try:
            st = os.lstat(here)
            if not allowed(os.stat(done), uid=uid, gid=gid, mode=os.X_OK):
                return f"{done} is not searchable"
        except OSError as exc:
            return f"{here}: {exc.strerror}"
        if os.path.islink(here):
            link = Path(os.readlink(here))
            parts = list((link if link.is_absolute() else done / link).parts[1:]) + parts
            done = Path("/")
            continue
        done = here
        if not parts and not allowed(st, uid=uid, gid=gid, mode=mode):
            return f"mode {st.st_mode & 0o777:o}"
    return None


def _read_mount(path: Path) -> Path | None:
    try:
        return find_cgroup2(path.read_text())
    except OSError:
        return None
