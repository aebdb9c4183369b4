"""What an agent claims on its host before it writes anything: its address, and a private data dir.

One agent per address: a second agent on an `--addr` a live agent uses would bind the first
one's HAProxy frontend ports (HAProxy binds with SO_REUSEPORT, so nothing refuses it) and
split its traffic. An advisory `flock` on a file named for the address is taken first of all;
the kernel drops it when the holder dies, so a SIGKILLed agent never leaves a stale lock.

A private data dir, whatever existed before: records, secrets, service logs, HAProxy's admin
socket and Serf's files live there. At start the dir and every directory under it are made
0700 and every file 0600 (an operator's earlier `mkdir` with the default 0755 included; a
file's owner execute bit is kept), and
the agent runs with umask 077 so what it creates later is private too. Failing that, the agent
refuses to start with one line saying what to fix.
"""
from __future__ import annotations

import errno
import fcntl
import os
import stat
from pathlib import Path

from peer.errors import RoamError

LOCK_DIRS = (Path("/run/roam"), Path("/tmp/roam-locks"))


class StartRefused(RoamError):
    """The agent must not start; the message is one line telling the operator why."""


class AddressLock:
    """An exclusive flock on `<lock dir>/agent-<addr>.lock`, held for the agent's life."""

    def __init__(self, addr: str, *, dirs: tuple[Path, ...] = LOCK_DIRS) -> None:
        self.addr = addr
        self._dirs = dirs
        self._fd: int | None = None
        self.path: Path | None = None

    def acquire(self) -> None:
        last: OSError | None = None
        for directory in self._dirs:
            path = directory / f"agent-{self.addr.replace(':', '_')}.lock"
            try:
                directory.mkdir(parents=True, exist_ok=True, mode=0o755)
                fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            except OSError as exc:
                last = exc
                continue
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                holder = _read_holder(fd)
                os.close(fd)
                if exc.errno in (errno.EAGAIN, errno.EACCES):
                    raise StartRefused(
                        f"another agent{holder} already runs on --addr {self.addr} (lock {path}); "
                        "stop it or use another address") from exc
                raise
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()}\n".encode())
            self._fd, self.path = fd, path
            return
        raise StartRefused(f"cannot create an address lock in {' or '.join(map(str, self._dirs))}: {last}")

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing drops the flock; the file stays (unlinking would race)
            self._fd = None


def _read_holder(fd: int) -> str:
    try:
        pid = os.pread(fd, 32, 0).decode().strip()
    except (OSError, UnicodeDecodeError):
        return ""
    return f" (pid {pid})" if pid.isdigit() else ""


def make_private(data_dir: Path) -> int:
    """Make `data_dir` 0700, its subdirectories 0700 and its files 0600; return how many modes
    changed. Symlinks are not followed (their targets are not ours to change)."""
    os.umask(0o077)
    try:
        data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        changed = _tighten(data_dir, 0o700)
        for root, dirs, files in os.walk(data_dir):
            for name in dirs:
                changed += _tighten(Path(root, name), 0o700)
            for name in files:
                changed += _tighten(Path(root, name), 0o600)
    except OSError as exc:
        raise StartRefused(
            f"data dir {data_dir} cannot be made private ({exc.strerror}: {exc.filename}); "
            "run the agent as the dir's owner or chown it") from exc
    return changed


def _tighten(path: Path, mode: int) -> int:
    """Set a directory to `mode`; take group and other bits off a file, keeping its owner bits
    (a service's own executable in its working directory must stay executable)."""
    st = path.lstat()
    if stat.S_ISLNK(st.st_mode):
        return 0
    if not stat.S_ISDIR(st.st_mode):
        mode = stat.S_IMODE(st.st_mode) & ~0o077 | 0o600
    if stat.S_IMODE(st.st_mode) == mode:
        return 0
    if st.st_uid != os.geteuid() and os.geteuid() != 0:
        raise PermissionError(errno.EPERM, "not the owner", str(path))
    path.chmod(mode)
    return 1
