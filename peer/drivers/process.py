"""The embedded orchestrator: each service is a local process on a free port, supervised.

Processes are started without a shell, in their own session (so a delete can signal the whole
process group), with stdout/stderr in data_dir/services/<name>/service.log and an
instance.json beside it. Processes outlive the agent: a new driver on the same data dir
`adopt()`s them after checking pid *and* start time, and supervises them through a pidfd
(which works for processes that are not its children).

Why `subprocess.Popen` and not `asyncio.create_subprocess_exec`: an asyncio subprocess
transport kills its process when it is closed or garbage-collected, so services would die
with the agent's event loop, defeating adoption. Exit is watched with a pidfd on the loop.
On delete the state directory, log included, is removed: a failed deploy hands its log tail
back in `DeployFailed.log_tail`, and nothing of a deleted service stays on disk.

Readiness is noticed within milliseconds of the service serving: a socket-activated service
(`activation`: the agent binds its port and hands the listening socket over, systemd's
convention) is probed once at spawn, and that probe waits in the kernel's accept queue until
the service answers it; any other service is probed 2 ms after spawn and then every tenth of
the time waited so far (`probing.next_probe_delay`), capped at `probe_interval`.
"""
from __future__ import annotations

import asyncio
import builtins
import logging
import os
import re
import shutil
import signal
import subprocess
import time
from collections import defaultdict
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import aiohttp

from lb.files import write_atomic
from peer.drivers import activation, base
from peer.drivers.base import (
    Conflict,
    DeployFailed,
    DriverError,
    DriverTimeout,
    EventCallback,
    Instance,
    InstanceState,
    PermanentDriverError,
    ServiceNotFound,
    TemporaryDriverError,
)
from peer.drivers.confine import ConfineError, Confinement
from peer.drivers.descriptor import ServiceDescriptor
from peer.drivers.lifetimes import describe_exit, reap, signal_group, wait_exit
from peer.drivers.probing import next_probe_delay, probe
from peer.drivers.process_state import (
    DEFAULT_PATH,
    LOG_FILE,
    STATE_FILE,
    InstanceRecord,
    StateFileError,
    group_members,
    is_same_process,
    log_tail,
    pick_port,
    proc_stat,
)
from peer.drivers.restarts import RestartPolicy
from peer.drivers.strays import StrayKeeper
from peer.runtime.supervision import Supervisor
from peer.runtime.waiting import wait_set

log = logging.getLogger(__name__)
DEFAULT_RESTARTS = RestartPolicy()

_PLACEHOLDER = re.compile(r"\{(host|port)\}")
# The agent's environment may hold secrets (ROAM_TOKEN...): services get only these.
_PASS_ENV = ("PATH", "HOME", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "TMPDIR", "PYTHONPATH", "VIRTUAL_ENV")
# The first probe of a socket-activated service waits (in the accept queue) this long at most.
_ACTIVATED_PROBE_TIMEOUT = 10.0


def render_argv(command: tuple[str, ...], *, host: str, port: int) -> list[str]:
    """Replace exactly `{host}` and `{port}` in each argument; nothing else is interpreted."""
    values = {"host": host, "port": str(port)}
    return [_PLACEHOLDER.sub(lambda m: values[m.group(1)], arg) for arg in command]


@dataclass(eq=False)
class _Run:
    """One supervised service; owned by the event loop."""

    descriptor: ServiceDescriptor
    home: str
    port: int
    directory: Path
    state: InstanceState = InstanceState.STARTING
    pid: int = 0
    start_ticks: int = 0
    popen: subprocess.Popen[bytes] | None = None  # None for an adopted (non-child) process
    started_at: float = 0.0
    started_mono: float = 0.0
    restarts: int = 0
    failures: int = 0
    ready_once: bool = False
    activated: bool = False  # the current process inherited its listening socket from us
    deleting: bool = False
    detail: str = ""
    failure: DeployFailed | None = None
    supervisor: asyncio.Task[None] | None = None
    changed: asyncio.Event = field(default_factory=asyncio.Event)


class ProcessDriver:
    """Runs services as local processes. See the module docstring for the lifecycle."""

    name = "process"

    def __init__(
        self,
        *,
        data_dir: Path,
        host: str,
        port_range: range,
        on_event: EventCallback | None = None,
        grace: float = 3.0,
        cluster: str = "",
        restart_policy: RestartPolicy = DEFAULT_RESTARTS,
        probe_interval: float = 0.05,
        confine: Confinement | None = None,
    ) -> None:
        if not port_range:
            raise ValueError("port_range is empty")
        self._root = Path(data_dir) / "services"
        self._host = host
        self._ports = port_range
        self._next_port = 0
        self._on_event = on_event
        self._grace = grace
        self._cluster = cluster
        self._policy = restart_policy
        self._probe_interval = probe_interval
        self._confine = confine  # --run-as: user, working dir and cgroup of each service (confine.py)
        self._runs: dict[str, _Run] = {}
        self._jobs = Supervisor("process-driver")  # one supervisor task per running copy
        self._strays = StrayKeeper(root=self._root, cluster=cluster, host=host, grace=grace)
        self._locks: defaultdict[str, asyncio.Lock] = defaultdict(asyncio.Lock)
        self._session: aiohttp.ClientSession | None = None

    # -- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        self._root.mkdir(parents=True, exist_ok=True)
        if self._session is None:
            self._session = aiohttp.ClientSession()

    async def stop(self) -> None:
        """Stop supervising; the processes keep running for a later adopt()."""
        await self._jobs.stop()
        self._runs.clear()
        if self._session is not None:
            await self._session.close()
            self._session = None

    # -- the Driver API --------------------------------------------------------------------

    async def deploy(self, descriptor: ServiceDescriptor, *, home: str) -> Instance:
        if self._session is None:
            raise DriverError("process driver not started")
        name = descriptor.name
        if not descriptor.command:
            raise PermanentDriverError(f"{name}: the process driver needs a command (it has only an image)")
        if "\x00" in home:
            raise PermanentDriverError(f"{name}: bad home cluster name {home!r}")
        async with self._locks[name]:
            run = self._runs.get(name)
            if run is not None and run.state is not InstanceState.FAILED:
                if run.descriptor.digest() == descriptor.digest() and run.home == home:
                    return self._instance(run)
                raise Conflict(f"{name} already runs here with another descriptor or home; delete it first")
            self._runs.pop(name, None)
            adopted = await self._claim_stray(descriptor, home)
            if adopted is not None:
                self._runs[name] = adopted
                adopted.supervisor = self._jobs.spawn(self._supervise(adopted), name=f"supervise-{name}")
                return self._instance(adopted)
            directory = self._root / name
            self._refuse_unadopted(directory)
            port = self._free_port(prefer=None, owner=None)
            directory.mkdir(parents=True, exist_ok=True)
            (directory / LOG_FILE).write_bytes(b"")
            run = _Run(descriptor=descriptor, home=home, port=port, directory=directory)
            try:
                self._spawn(run)
            except DeployFailed:
                shutil.rmtree(directory, ignore_errors=True)
                raise
            self._runs[name] = run
            run.supervisor = self._jobs.spawn(self._supervise(run), name=f"supervise-{name}")
            return self._instance(run)

    async def wait_ready(self, name: str, *, timeout: float) -> Instance:
        deadline = time.monotonic() + timeout
        while True:
            run = self._runs.get(name)
            if run is None or run.state is InstanceState.STOPPED:
                raise ServiceNotFound(name)
            if run.state is InstanceState.READY:
                return self._instance(run)
            if run.state is InstanceState.FAILED:
                raise run.failure or DeployFailed(f"{name}: {run.detail}")
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise DriverTimeout(f"{name} not ready within {timeout:g}s", delay=1.0,
                                    log_tail=log_tail(run.directory / LOG_FILE))
            await wait_set(run.changed, remaining)

    async def status(self, name: str) -> Instance:
        run = self._runs.get(name)
        if run is None:
            raise ServiceNotFound(name)
        return self._instance(run)

    async def endpoint(self, name: str) -> tuple[str, int]:
        return (await self.status(name)).endpoint

    async def list(self) -> builtins.list[Instance]:
        return [self._instance(r) for r in self._runs.values()]

    async def rename(self, old: str, new: str) -> None:
        """Carry a running copy over to a new service name (`name@home`, peer.records.naming)
        without stopping it: its directory, its record and its supervision follow; the process
        keeps its pid, port and open log."""
        async with self._locks[old], self._locks[new]:
            run = self._runs.get(old)
            if run is None:
                raise ServiceNotFound(old)
            if new in self._runs:
                raise Conflict(f"{new} already runs here")
            target = self._root / new
            if run.directory.exists():
                run.directory.rename(target)
            run.directory = target
            run.descriptor = replace(run.descriptor, name=new)
            self._runs[new] = self._runs.pop(old)
            self._save(run)
        log.info("renamed %s to %s (pid %s kept)", old, new, run.pid)

    async def delete(self, name: str) -> None:
        async with self._locks[name]:
            await self._strays.release(name, "its service is deleted here")
            run = self._runs.get(name)
            if run is None:
                self._kill_unadopted(self._root / name)
                return
            run.deleting = True
            if run.supervisor is not None:
                run.supervisor.cancel()
                await asyncio.gather(run.supervisor, return_exceptions=True)
            if run.pid and self._leader_alive(run):
                await self._terminate(run)
            shutil.rmtree(run.directory, ignore_errors=True)
            self._release(name)
            self._set_state(run, InstanceState.STOPPED, "deleted")
            del self._runs[name]

    async def adopt(self) -> builtins.list[Instance]:
        if self._session is None:
            raise DriverError("process driver not started")
        adopted = []
        for directory in sorted(p for p in self._root.iterdir() if p.is_dir()):
            name = directory.name
            async with self._locks[name]:
                if name in self._runs:
                    continue
                run = self._load(directory)
                if run is None:
                    continue
                if await probe(self._session, run.descriptor.health, host=self._host, port=run.port):
                    self._mark_ready(run)
                self._runs[name] = run
                run.supervisor = self._jobs.spawn(self._supervise(run), name=f"supervise-{name}")
                adopted.append(self._instance(run))
        adopted += await self._hold_strays()
        return adopted

    async def rewrite_lost_state(self) -> builtins.list[str]:
        """instance.json of a supervised copy deleted behind our back: write it again now,
        rather than leave the next agent start to find the copy as a stray."""
        rewritten = []
        for name, run in list(self._runs.items()):
            async with self._locks[name]:
                if run.deleting or run.state in (InstanceState.FAILED, InstanceState.STOPPED) or not run.pid:
                    continue
                if not (run.directory / STATE_FILE).exists():
                    run.directory.mkdir(parents=True, exist_ok=True)
                    self._save(run)
                    rewritten.append(f"{name}: {STATE_FILE} was lost, written again (pid {run.pid})")
        return rewritten

    async def _hold_strays(self) -> builtins.list[Instance]:
        """Copies whose state is lost (peer.drivers.strays): held, and listed as adopted so
        that one no record claims is deleted as an orphan."""
        held = await self._strays.hold(supervised={r.pid for r in self._runs.values() if r.pid},
                                       running=set(self._runs))
        return [Instance(name=s.service, home=s.env.get("ROAM_HOME", ""), host=self._host, port=s.port or 0,
                         state=InstanceState.STARTING, pid=s.pid) for s in held]

    async def _claim_stray(self, descriptor: ServiceDescriptor, home: str) -> _Run | None:
        """Adopt the held stray of `descriptor` if it provably runs it (else it is stopped)."""
        session = self._session
        assert session is not None

        async def healthy(port: int) -> bool:
            return await probe(session, descriptor.health, host=self._host, port=port)

        claimed = await self._strays.claim(
            descriptor.name, home=home, healthy=healthy,
            argv=lambda port: render_argv(descriptor.command, host=self._host, port=port))
        if claimed is None:
            return None
        stray, start_ticks = claimed
        directory = self._root / descriptor.name
        directory.mkdir(parents=True, exist_ok=True)
        run = _Run(descriptor=descriptor, home=home, port=stray.port or 0, directory=directory, pid=stray.pgid,
                   start_ticks=start_ticks, started_at=time.time(), started_mono=time.monotonic())
        self._mark_ready(run)  # writes instance.json again
        return run

    # -- spawning --------------------------------------------------------------------------

    def _spawn(self, run: _Run) -> None:
        """Start the command (no shell, own session); raise DeployFailed if it cannot start."""
        name = run.descriptor.name
        argv = render_argv(run.descriptor.command, host=self._host, port=run.port)
        env = {k: os.environ[k] for k in _PASS_ENV if k in os.environ}
        env.setdefault("PATH", DEFAULT_PATH)
        env.update(ROAM_SERVICE=name, ROAM_HOME=run.home, ROAM_CLUSTER=self._cluster,
                   ROAM_HOST=self._host, ROAM_PORT=str(run.port))
        listener = activation.listener_for(run.descriptor, host=self._host, port=run.port)
        run.activated = listener is not None
        command = argv
        if listener is not None:
            command = activation.trampoline(argv)
            env.update(activation.environment(name))
        log_path = run.directory / LOG_FILE
        cwd, confined = run.directory, None
        unreachable = self._confine.cannot_run(command, path=env["PATH"]) if self._confine is not None else None
        if self._confine is not None and unreachable is not None:
            if self._confine.strict:  # --run-as given: that user or nothing
                if listener is not None:
                    listener.close()
                raise DeployFailed(f"{name}: {unreachable} (--run-as {self._confine.user})")
            log.warning("service %s runs as the agent's user, not %s (the default): %s; give --run-as to insist",
                        name, self._confine.user, unreachable)
        if self._confine is not None and unreachable is None:
            try:
                confined = self._confine.prepare(name, cpu=run.descriptor.cpu_cores, memory=run.descriptor.memory_bytes)
            except ConfineError as exc:
                if listener is not None:
                    listener.close()
                raise DeployFailed(f"{name}: {exc}") from exc
            cwd = confined.cwd
            env.update(confined.env)
        try:
            with log_path.open("ab") as logf:
                how = " (socket activated)" if listener is not None else ""
                logf.write(f"--- roam: starting {argv!r} on {self._host}:{run.port}{how} ---\n".encode())
                logf.flush()
                try:
                    run.popen = subprocess.Popen(
                        command, stdin=subprocess.DEVNULL if listener is None else listener.fileno(),
                        stdout=logf, stderr=subprocess.STDOUT,
                        cwd=cwd, env=env, start_new_session=True, close_fds=True,
                        umask=0o022,  # the agent's umask (077, for its data dir) is not the service's
                        **(confined.popen if confined is not None else {}),
                    )
                except (OSError, ValueError, subprocess.SubprocessError) as exc:
                    raise DeployFailed(f"{name}: cannot start {argv[0]!r}: {exc}",
                                       log_tail=log_tail(log_path)) from exc
        finally:
            if confined is not None:
                confined.close()
            # The service holds the socket now. Keeping our copy would keep the port accepting
            # after the service died, hiding its death from HAProxy's connect checks.
            if listener is not None:
                listener.close()
        run.pid = run.popen.pid
        stat = proc_stat(run.pid)
        run.start_ticks = stat[2] if stat else 0
        run.started_at = time.time()
        run.started_mono = time.monotonic()
        self._save(run)

    def _save(self, run: _Run) -> None:
        record = InstanceRecord(
            name=run.descriptor.name, home=run.home, host=self._host, port=run.port, pid=run.pid,
            pgid=run.pid, start_ticks=run.start_ticks, started_at=run.started_at, restarts=run.restarts,
            ready_once=run.ready_once, descriptor=run.descriptor.to_obj(),
        )
        write_atomic(run.directory / STATE_FILE, record.to_json())

    def _load(self, directory: Path) -> _Run | None:
        """The run recorded in `directory` if its process is still alive; else clean up."""
        try:
            record = InstanceRecord.load(directory / STATE_FILE)
            descriptor = ServiceDescriptor.from_obj(record.descriptor)
        except (StateFileError, ValueError) as exc:
            log.warning("not adopting %s: %s", directory, exc)
            return None
        if descriptor.name != directory.name:
            log.warning("not adopting %s: it records service %s", directory, descriptor.name)
            return None
        if not is_same_process(record.pid, record.start_ticks):
            shutil.rmtree(directory, ignore_errors=True)
            self._emit(descriptor.name, base.EVENT_LOST, f"pid {record.pid} is gone")
            return None
        return _Run(
            descriptor=descriptor, home=record.home, port=record.port, directory=directory,
            pid=record.pid, start_ticks=record.start_ticks, started_at=record.started_at,
            started_mono=time.monotonic(), restarts=record.restarts, ready_once=record.ready_once,
        )

    def _refuse_unadopted(self, directory: Path) -> None:
        try:
            record = InstanceRecord.load(directory / STATE_FILE)
        except StateFileError:
            return
        if is_same_process(record.pid, record.start_ticks):
            raise Conflict(f"{directory.name} runs as pid {record.pid} but was not adopted; call adopt()")

    def _kill_unadopted(self, directory: Path) -> None:
        """delete() of a service known only on disk: kill it if it is still the same process."""
        try:
            record = InstanceRecord.load(directory / STATE_FILE)
        except StateFileError:
            record = None
        if record is not None and is_same_process(record.pid, record.start_ticks):
            signal_group(record.pgid, signal.SIGKILL)
        shutil.rmtree(directory, ignore_errors=True)
        self._release(directory.name)

    def _release(self, name: str) -> None:
        if self._confine is not None:
            self._confine.release(name)

    def _free_port(self, *, prefer: int | None, owner: _Run | None) -> int:
        """A port of the range, `prefer` first (a restart keeps its port when it can)."""
        taken = {r.port for r in self._runs.values() if r is not owner and r.state is not InstanceState.FAILED}
        n = len(self._ports)
        order = [self._ports[(self._next_port + i) % n] for i in range(n)]
        if prefer is not None:
            order.insert(0, prefer)
        port = pick_port(order, taken=taken, host=self._host)
        if port is None:
            raise TemporaryDriverError(f"no free port in {self._ports.start}-{self._ports.stop - 1}", delay=5.0)
        self._next_port = (self._ports.index(port) + 1) % n if port in self._ports else self._next_port
        return port

    # -- supervision -----------------------------------------------------------------------

    async def _supervise(self, run: _Run) -> None:
        """Probe until ready, wait for exit, restart with back-off; until deleted or given up."""
        while True:
            status = await self._run_once(run)
            if run.deleting:
                return
            signal_group(run.pid, signal.SIGKILL)  # stragglers of the dead leader's group
            tail = log_tail(run.directory / LOG_FILE)
            if not run.ready_once:
                self._fail(run, f"exited before becoming ready ({status})", tail)
                self._emit(run.descriptor.name, base.EVENT_DEPLOY_FAILED, tail)
                return
            ran = time.monotonic() - run.started_mono
            run.failures = self._policy.failures_after(run.failures, ran)
            self._emit(run.descriptor.name, base.EVENT_CRASH, f"{status} after {ran:.1f}s")
            if self._policy.gives_up(run.failures):
                self._fail(run, f"gave up after {run.failures} crashes in a row ({status})", tail)
                self._emit(run.descriptor.name, base.EVENT_GAVE_UP, tail)
                return
            self._set_state(run, InstanceState.STARTING, f"crashed ({status}); restarting")
            await asyncio.sleep(self._policy.delay(run.failures))
            async with self._locks[run.descriptor.name]:  # (renamed: naming)
                if run.deleting:
                    return
                run.port = self._free_port(prefer=run.port, owner=run)
                run.restarts += 1
                try:
                    self._spawn(run)
                except DeployFailed as exc:
                    self._fail(run, f"cannot restart: {exc}", exc.log_tail)
                    self._emit(run.descriptor.name, base.EVENT_GAVE_UP, str(exc))
                    return
            self._emit(run.descriptor.name, base.EVENT_RESTART, f"{self._host}:{run.port}")

    async def _run_once(self, run: _Run) -> str:
        """Wait for the current process to exit, probing readiness meanwhile; describe the exit."""
        exited = self._jobs.spawn(self._wait_exit(run), name=f"exit:{run.descriptor.name}", report=False)
        try:
            if run.state is not InstanceState.READY:
                await self._await_ready(run, exited)
            return await exited
        finally:
            exited.cancel()
            await asyncio.gather(exited, return_exceptions=True)

    async def _await_ready(self, run: _Run, exited: asyncio.Future[str]) -> None:
        """Probe until the service answers (then mark it ready) or its process exits."""
        assert self._session is not None
        began = time.monotonic()
        waiting_in_queue = run.activated  # the first probe of an activated service waits to be served
        while not exited.done():
            timeout = _ACTIVATED_PROBE_TIMEOUT if waiting_in_queue else 1.0
            waiting_in_queue = False
            probing = self._jobs.spawn(
                probe(self._session, run.descriptor.health, host=self._host, port=run.port, timeout=timeout),
                name=f"probe:{run.descriptor.name}", report=False)  # raced against the exit, awaited here
            racing: set[asyncio.Future[Any]] = {exited, probing}
            await asyncio.wait(racing, return_when=asyncio.FIRST_COMPLETED)
            if not probing.done():  # exited first
                probing.cancel()
                await asyncio.gather(probing, return_exceptions=True)
                return
            if probing.result():
                if not exited.done():
                    self._mark_ready(run)
                return
            elapsed = time.monotonic() - began
            cap = self._probe_interval if elapsed < 10 else 1.0
            await asyncio.wait({exited}, timeout=next_probe_delay(elapsed, cap=cap))

    async def _wait_exit(self, run: _Run) -> str:
        """Until the current process exits; reap it and describe how it ended."""
        await wait_exit(run.pid, start_ticks=run.start_ticks, popen=run.popen)
        return describe_exit(await reap(run.pid, run.popen))

    async def _terminate(self, run: _Run) -> None:
        """SIGTERM the process group, SIGKILL after the grace period, reap, wait until empty."""
        signal_group(run.pid, signal.SIGTERM)
        deadline = time.monotonic() + self._grace
        while time.monotonic() < deadline and self._leader_alive(run):
            await asyncio.sleep(0.005)  # a service that exits on SIGTERM is gone in a few ms
        signal_group(run.pid, signal.SIGKILL)
        deadline = time.monotonic() + 5.0
        while time.monotonic() < deadline and (self._leader_alive(run) or group_members(run.pid)):
            await asyncio.sleep(0.05)
        await reap(run.pid, run.popen)

    def _leader_alive(self, run: _Run) -> bool:
        if run.popen is not None:
            return run.popen.poll() is None
        return is_same_process(run.pid, run.start_ticks)

    # -- state -----------------------------------------------------------------------------

    def _mark_ready(self, run: _Run) -> None:
        if not run.ready_once:
            run.ready_once = True
            self._save(run)
        self._set_state(run, InstanceState.READY, "")
        self._emit(run.descriptor.name, base.EVENT_READY, f"{self._host}:{run.port}")

    def _fail(self, run: _Run, detail: str, tail: str) -> None:
        """Nothing is left behind: the process is dead, the state directory goes."""
        shutil.rmtree(run.directory, ignore_errors=True)
        self._release(run.descriptor.name)
        run.failure = DeployFailed(f"{run.descriptor.name}: {detail}", log_tail=tail)
        self._set_state(run, InstanceState.FAILED, detail)

    def _set_state(self, run: _Run, state: InstanceState, detail: str) -> None:
        run.state, run.detail = state, detail
        run.changed.set()
        run.changed = asyncio.Event()

    def _instance(self, run: _Run) -> Instance:
        return Instance(
            name=run.descriptor.name, home=run.home, host=self._host, port=run.port, state=run.state,
            pid=run.pid or None, restarts=run.restarts, detail=run.detail, started_at=run.started_at,
            digest=run.descriptor.digest(),
        )

    def _emit(self, name: str, kind: str, detail: str) -> None:
        log.info("service %s: %s %s", name, kind, detail.splitlines()[-1] if detail else "")
        if self._on_event is not None:
            try:
                self._on_event(name, kind, detail)
            except Exception:
                log.exception("on_event callback failed for %s %s", name, kind)
