"""HAProxy process supervision: start or adopt, watch, restart, stop.

HAProxy runs as one process in the foreground, in its own session, so it outlives an agent
crash and keeps serving; a restarted agent adopts it (pidfile process alive, started with our
config path, same rendered config, socket answering) instead of starting a second one. One
process rather than master-worker (issues 16 and 18): the master only supervises and reloads,
which the agent does itself, and it cost 7-12 MB RSS per cluster. HAProxy writes its `pidfile`
only in daemon or master-worker mode (haproxy.c, 2.6), so the agent writes the pid file,
atomically, right after each spawn. The watcher sleeps on a pidfd and restarts HAProxy when it
dies, then calls back so routes can be restored. A reload is the classic seamless one: a new
process takes the listening sockets over from the old one's admin socket (`-x`, allowed by
`expose-fd listeners`) and tells the old one to finish its connections and leave (`-sf`).
"""
from __future__ import annotations

import asyncio
import logging
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from lb import runtime
from lb.config import LBConfig, render
from lb.errors import HAProxyStartError
from lb.polling import poll_until
from lb.runtime import Command
from lb.files import write_atomic

log = logging.getLogger(__name__)


def pid_alive(pid: int) -> bool:
    """True if `pid` runs and is not a zombie (orphans are not always reaped here)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            stat = fh.read()
    except OSError:
        return False
    state = stat[stat.rfind(b")") + 2: stat.rfind(b")") + 3]
    return state not in (b"Z", b"X", b"")


def started_with(pid: int, config_path: Path) -> bool:
    """True if `pid` is a haproxy whose argv names our config file (not a recycled pid)."""
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return (bool(argv) and b"haproxy" in os.path.basename(argv[0])
            and str(config_path).encode() in argv)


def read_pid(pid_path: Path) -> int | None:
    try:
        return int(pid_path.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


async def socket_command(socket_path: Path, command: Command, *, timeout: float = 1.0) -> str:
    """One command on a fresh one-shot connection to the admin socket (whichever process owns
    it now: after a reload, the new one); the reply text. Raises OSError or TimeoutError."""
    async with asyncio.timeout(timeout):
        reader, writer = await asyncio.open_unix_connection(str(socket_path))
        try:
            writer.write(command.text.encode() + b"\n")
            await writer.drain()
            return command.check((await reader.read()).decode("utf-8", "replace"))
        finally:
            writer.close()


async def socket_answers(socket_path: Path, *, timeout: float = 1.0) -> bool:
    """One-shot `show servers state` on the admin socket: does HAProxy answer commands?"""
    try:
        async with asyncio.timeout(timeout):
            reader, writer = await asyncio.open_unix_connection(str(socket_path))
            try:
                writer.write(b"show servers state\n")
                await writer.drain()
                reply = await reader.read()
            finally:
                writer.close()
    except (OSError, TimeoutError):
        return False
    return reply.startswith(b"1\n#")


class HAProxyProcess:
    """One running HAProxy process: our child (`popen`) or adopted from an earlier agent."""

    def __init__(self, pid: int, popen: subprocess.Popen[bytes] | None = None, *,
                 log_from: int = 0) -> None:
        self.pid = pid
        self.popen = popen
        self.log_from = log_from  # where its own lines start in haproxy.log (ours only)

    @property
    def adopted(self) -> bool:
        return self.popen is None

    def alive(self) -> bool:
        if self.popen is not None:
            return self.popen.poll() is None
        return pid_alive(self.pid)

    async def terminate(self, *, timeout: float = 5.0) -> None:
        """SIGTERM (HAProxy's hard stop), SIGKILL after `timeout`."""
        for sig in (signal.SIGTERM, signal.SIGKILL):
            if not self.alive():
                return
            try:
                os.kill(self.pid, sig)
            except ProcessLookupError:
                return
            async def gone() -> bool:
                return not self.alive()

            try:
                await poll_until(gone, timeout=timeout, interval=0.02,
                                 what=f"haproxy {self.pid} exit")
                return
            except TimeoutError:
                log.warning("haproxy %d ignored %s", self.pid, sig.name)


def _first_alert(output: str) -> str:
    lines = [ln.strip() for ln in output.splitlines() if ln.strip()]
    for ln in lines:
        if "ALERT" in ln:
            return ln
    return lines[-1] if lines else "no output"


async def check_config(binary: str, config_path: Path) -> None:
    proc = await asyncio.to_thread(
        subprocess.run, [binary, "-c", "-q", "-f", str(config_path)],
        capture_output=True, text=True, timeout=30, check=False)
    if proc.returncode != 0:
        raise HAProxyStartError(
            f"haproxy rejected {config_path}: {_first_alert(proc.stdout + proc.stderr)}")


async def prepare(cfg: LBConfig, *, binary: str) -> str:
    """Write and check the config; the binary's path."""
    path = shutil.which(binary)
    if path is None:
        raise HAProxyStartError(f"haproxy binary {binary!r} not found on PATH")
    write_atomic(cfg.config_path, render(cfg).encode())
    if not cfg.server_state_path.exists():  # avoids a warning; we never load it (see balancer)
        write_atomic(cfg.server_state_path, b"1\n")
    await check_config(path, cfg.config_path)
    return path


def launch(path: str, cfg: LBConfig, *extra: str) -> HAProxyProcess:
    """Start one HAProxy in the foreground in a session of its own (an agent crash or a signal
    to the agent's group leaves it serving), and name it in the pid file at once: nothing
    awaits in between, so an agent that crashes now leaves a pid file to adopt from."""
    with open(cfg.log_path, "ab") as logf:
        log_from = logf.tell()
        popen = subprocess.Popen(
            [path, "-f", str(cfg.config_path), *extra], stdin=subprocess.DEVNULL, stdout=logf,
            stderr=subprocess.STDOUT, start_new_session=True, close_fds=True)
    write_atomic(cfg.pid_path, f"{popen.pid}\n".encode())
    return HAProxyProcess(popen.pid, popen, log_from=log_from)


def _exited(proc: HAProxyProcess, cfg: LBConfig) -> HAProxyStartError:
    """Why `proc` died at start, from its own lines of the log (during a reload the old
    process keeps writing its own alerts there too)."""
    code = proc.popen.returncode if proc.popen is not None else None
    return HAProxyStartError(f"haproxy exited with {code}: "
                             f"{_first_alert(_tail(cfg.log_path, start=proc.log_from))}")


async def spawn(cfg: LBConfig, *, binary: str, timeout: float = 10.0) -> HAProxyProcess:
    """Write and check the config, start HAProxy, return once its admin socket answers."""
    proc = launch(await prepare(cfg, binary=binary), cfg)

    async def ready() -> bool:
        if not proc.alive():
            raise _exited(proc, cfg)
        return await socket_answers(cfg.socket_path)

    try:
        await poll_until(ready, timeout=timeout, interval=0.02, what="haproxy admin socket",
                         propagate=(HAProxyStartError,))
    except TimeoutError as exc:
        await proc.terminate()
        raise HAProxyStartError(f"haproxy socket {cfg.socket_path} never answered") from exc
    log.info("started haproxy pid %d (%s)", proc.pid, cfg.config_path)
    return proc


def _tail(path: Path, limit: int = 4000, *, start: int = 0) -> str:
    try:
        with open(path, "rb") as fh:
            fh.seek(max(start, fh.seek(0, os.SEEK_END) - limit))
            return fh.read().decode("utf-8", "replace")
    except OSError:
        return ""


async def adoptable(cfg: LBConfig) -> HAProxyProcess | None:
    """The HAProxy an earlier agent left running for this data dir, if it can be reused as is.

    A running HAProxy with a different config (port range changed) or a dead socket is
    stopped: reusing it would silently serve the wrong slots.
    """
    pid = read_pid(cfg.pid_path)
    if pid is None or not pid_alive(pid) or not started_with(pid, cfg.config_path):
        return None
    proc = HAProxyProcess(pid)
    try:
        same = cfg.config_path.read_text() == render(cfg)
    except OSError:
        same = False
    if same and await socket_answers(cfg.socket_path):
        log.info("adopted running haproxy pid %d", pid)
        return proc
    log.warning("stopping haproxy pid %d: %s", pid,
                "config changed" if not same else "admin socket does not answer")
    await proc.terminate()
    return None


async def wait_gone(pid: int, *, fallback: float) -> None:
    """Return once `pid` has exited: woken by a pidfd (Linux 5.3+), so a live HAProxy costs
    the supervisor no wakeup at all (issue 18: it polled ten times a second); where no pidfd
    can be had, after `fallback` seconds (the caller looks again)."""
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return
    except (OSError, AttributeError):
        await asyncio.sleep(fallback)
        return
    loop = asyncio.get_running_loop()
    gone: asyncio.Future[None] = loop.create_future()
    try:
        loop.add_reader(fd, _settle, gone)
        try:
            await gone
        finally:
            loop.remove_reader(fd)
    finally:
        os.close(fd)


def _settle(gone: asyncio.Future[None]) -> None:
    if not gone.done():
        gone.set_result(None)


class Supervisor:
    """Keeps one HAProxy running for `cfg`; calls `on_restart` after replacing a dead one."""

    def __init__(self, cfg: LBConfig, *, binary: str = "haproxy",
                 on_restart: Callable[[], Awaitable[None]], poll_interval: float = 0.1) -> None:
        self.cfg = cfg
        self.binary = binary
        self.on_restart = on_restart
        self.poll_interval = poll_interval
        self.process: HAProxyProcess | None = None
        self.draining: list[HAProxyProcess] = []  # replaced by a reload, finishing connections
        self._reapers: set[asyncio.Task[None]] = set()
        self.restarts = 0
        self._watch: asyncio.Task[None] | None = None

    async def start(self) -> bool:
        """Adopt or start HAProxy and begin watching it; True if an existing one was adopted."""
        self.cfg.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.process = await adoptable(self.cfg)
        adopted = self.process is not None
        if self.process is None:
            self.process = await spawn(self.cfg, binary=self.binary)
        self._watch = asyncio.create_task(self._watch_loop(), name="haproxy-watch")
        return adopted

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.alive()

    async def stop(self, *, keep_running: bool = False) -> None:
        if self._watch is not None:
            self._watch.cancel()
            try:
                await self._watch
            except asyncio.CancelledError:
                pass
            self._watch = None
        for reaper in list(self._reapers):
            reaper.cancel()
        if not keep_running:  # (kept running, the draining ones leave once their clients have)
            for proc in [*self.draining, *([self.process] if self.process else [])]:
                await proc.terminate()
        self.draining = []
        self.process = None

    async def reload(self, *, took_over: Callable[[], Awaitable[bool]], timeout: float = 10.0) -> None:
        """Reload HAProxy in place, the classic seamless way: a new process on the same config
        takes the listening sockets over through the old one's admin socket (`-x`, allowed by
        `expose-fd listeners`), then tells the old one to finish its connections and leave
        (`-sf`, SIGUSR1); no connection is refused meanwhile. The only way to reopen a frontend
        that was shut down at run time. Dynamic servers are not carried over: the caller
        re-adds its routes once `took_over` (asked on fresh connections) says the new process
        answers. If the new one fails, the old one (still serving) is kept."""
        old = self.process
        if old is None or not old.alive():
            raise HAProxyStartError("no running haproxy to reload")
        log.warning("reloading haproxy pid %d", old.pid)
        path = await prepare(self.cfg, binary=self.binary)
        # No await from the launch to the swap: the watcher must never see the old process's
        # exit while `self.process` still names it (it would start a third one).
        new = self.process = launch(path, self.cfg, "-x", str(self.cfg.socket_path),
                                    "-sf", str(old.pid))

        async def answers() -> bool:
            if not new.alive():
                raise _exited(new, self.cfg)
            reply = await socket_command(self.cfg.socket_path, runtime.show_info())
            return runtime.parse_pid(reply) == new.pid and await took_over()

        try:
            await poll_until(answers, timeout=timeout, interval=0.01, what="haproxy reload",
                             propagate=(HAProxyStartError,))
        except (TimeoutError, HAProxyStartError) as exc:
            await new.terminate()
            if old.alive():
                self.process = old
                write_atomic(self.cfg.pid_path, f"{old.pid}\n".encode())
            if isinstance(exc, HAProxyStartError):
                raise
            raise HAProxyStartError(f"haproxy pid {old.pid} did not reload within {timeout:g}s") from exc
        self.draining.append(old)
        self._reapers.add(reaper := asyncio.create_task(self._reap(old), name="haproxy-reap"))
        reaper.add_done_callback(self._reapers.discard)
        if self._watch is not None and self._watch is not asyncio.current_task():
            # The watcher sleeps on the old process's pidfd, which may take minutes to finish
            # its connections: watch the new one from now on.
            self._watch.cancel()
            self._watch = asyncio.create_task(self._watch_loop(), name="haproxy-watch")
        log.info("haproxy pid %d took over from pid %d", new.pid, old.pid)

    async def _reap(self, proc: HAProxyProcess) -> None:
        """Forget a replaced process once it has finished its connections (and reap it, if it
        is our child, so no zombie is left in the process table)."""
        while proc.alive():
            await wait_gone(proc.pid, fallback=self.poll_interval)
        if proc in self.draining:
            self.draining.remove(proc)

    async def _watch_loop(self) -> None:
        backoff = 0.2
        needs_restore = False
        started = time.monotonic()
        while True:
            proc = self.process
            if proc is not None and not needs_restore:
                await wait_gone(proc.pid, fallback=self.poll_interval)
            else:
                await asyncio.sleep(self.poll_interval)
            try:
                if self.process is None or not self.process.alive():
                    log.error("haproxy pid %s died; restarting",
                              self.process and self.process.pid)
                    started = time.monotonic()
                    self.process = await spawn(self.cfg, binary=self.binary)
                    self.restarts += 1
                    needs_restore = True
                if needs_restore:
                    await self.on_restart()
                    needs_restore = False
                    log.info("haproxy restarted and routes restored in %.0f ms",
                             (time.monotonic() - started) * 1000)
                backoff = 0.2
            except Exception:  # noqa: BLE001 - keep supervising whatever went wrong
                log.exception("haproxy restart or restore failed; retrying in %.1fs", backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
