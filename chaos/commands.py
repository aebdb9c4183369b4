"""Running system commands (ip, iptables, tc) as argv lists, never through a shell.

Two twins: `run_cmd` for the event loop, `run_cmd_sync` for code that has none (atexit and
signal-time cleanup, leftover probes). Both raise `CommandError` on failure when `check`.
"""
from __future__ import annotations

import asyncio
import subprocess
from dataclasses import dataclass

from chaos.errors import CommandError


@dataclass(frozen=True)
class CmdResult:
    argv: list[str]
    returncode: int
    stdout: str
    stderr: str

    @property
    def ok(self) -> bool:
        return self.returncode == 0


async def run_cmd(argv: list[str], *, check: bool = True, timeout: float = 30.0) -> CmdResult:
    """Run `argv` to completion without blocking the loop; capture text output."""
    try:
        proc = await asyncio.create_subprocess_exec(
            *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
            stdin=asyncio.subprocess.DEVNULL,
        )
    except OSError as exc:
        raise CommandError(argv, None, str(exc)) from exc
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout)
    except asyncio.TimeoutError as exc:
        proc.kill()
        await proc.wait()
        raise CommandError(argv, None, f"timed out after {timeout}s") from exc
    result = CmdResult(argv, proc.returncode or 0, out.decode(errors="replace"),
                       err.decode(errors="replace"))
    if check and not result.ok:
        raise CommandError(argv, result.returncode, result.stderr)
    return result


def run_cmd_sync(argv: list[str], *, check: bool = True, timeout: float = 30.0) -> CmdResult:
    """Blocking twin of `run_cmd`."""
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout,
                              stdin=subprocess.DEVNULL, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise CommandError(argv, None, str(exc)) from exc
    result = CmdResult(argv, done.returncode, done.stdout, done.stderr)
    if check and not result.ok:
        raise CommandError(argv, result.returncode, result.stderr)
    return result
