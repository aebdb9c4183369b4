"""Process lifetimes for the process driver: wait for an exit, reap it, signal a group.

Exit is watched through a pidfd on the event loop, which works for processes that are not
our children (adopted after an agent restart); without pidfd support it falls back to polling.
"""
from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import time

from peer.drivers.process_state import is_same_process

_NOT_YET = -(2**31)


async def wait_exit(pid: int, *, start_ticks: int, popen: subprocess.Popen[bytes] | None) -> None:
    """Return once the process has exited (for a child: once it is a zombie or reaped)."""
    loop = asyncio.get_running_loop()
    try:
        pidfd = os.pidfd_open(pid)
    except OSError:
        pidfd = -1
    try:
        if pidfd >= 0 and (popen is not None or is_same_process(pid, start_ticks)):
            done: asyncio.Future[None] = loop.create_future()

            def readable() -> None:
                if not done.done():
                    done.set_result(None)

            loop.add_reader(pidfd, readable)
            try:
                await done
            finally:
                loop.remove_reader(pidfd)
        else:
            while (popen.poll() is None) if popen else is_same_process(pid, start_ticks):
                await asyncio.sleep(0.2)
    finally:
        if pidfd >= 0:
            os.close(pidfd)


def _try_reap(pid: int, popen: subprocess.Popen[bytes] | None) -> int | None:
    """Exit code if reaped now, None if it is not our child, _NOT_YET if not waitable yet."""
    if popen is not None:
        code = popen.poll()
        return _NOT_YET if code is None else code
    try:
        reaped, status = os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        return None
    return os.waitstatus_to_exitcode(status) if reaped else _NOT_YET


async def reap(pid: int, popen: subprocess.Popen[bytes] | None, *, timeout: float = 2.0) -> int | None:
    """Reap an exited child and return its exit code (None when it is not our child).

    An exit can be reported a moment before the zombie is waitable (threads still exiting),
    so a child that is not yet waitable is polled briefly rather than left a zombie.
    """
    deadline = time.monotonic() + timeout
    while (code := _try_reap(pid, popen)) == _NOT_YET and time.monotonic() < deadline:
        await asyncio.sleep(0.01)
    return None if code == _NOT_YET else code


def describe_exit(code: int | None) -> str:
    if code is None:
        return "exited"
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit code {code}"


def signal_group(pgid: int, sig: signal.Signals) -> None:
    """Signal a whole process group; a group that is already gone is fine."""
    if pgid > 1:
        try:
            os.killpg(pgid, sig)
        except (ProcessLookupError, PermissionError):
            pass
