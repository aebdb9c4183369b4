"""Supervision of one child `serf agent`: write its config, start it, know when it is ready, stop it.

Why a config file and not flags: `rpc_auth` (and `reconnect_interval`) can only be set in the
agent's JSON config (checked against Debian's serf 0.9.4). Why a keyring file by default: keys
installed at runtime (install-key / use-key) then survive a restart. Serf refuses
`encrypt_key` together with `keyring_file`, so we seed the keyring file ourselves, once: after
that it wins over `SerfConfig.encrypt_key` (a changed secret is rolled out with install-key
and use-key, not by restarting).
"""
from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import shutil
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from collections.abc import Mapping
from types import TracebackType
from typing import Any

from lb.files import write_atomic
from lb.hostport import join_hostport
from peer.serf.client import SerfClient
from peer.serf.errors import (
    SerfAuthError,
    SerfConnectionError,
    SerfStartError,
    SerfTimeoutError,
)
from peer.runtime.supervision import Supervisor

CONFIG_NAME = "serf.json"
KEYRING_NAME = "keyring.json"
LOG_NAME = "serf.log"
_READY_POLL = 0.05
#: What Serf (memberlist) logs when a peer's gossip is encrypted with a key it does not hold.
KEY_MISMATCH = "No installed keys could decrypt"
KEY_MISMATCH_ADVICE = (
    "Serf cannot decrypt its peers' gossip: this agent's gossip key differs from the federation's, "
    "so it cannot join (members lists only itself). Start it with the same --secret-file as the "
    "others; after a key rotation (`roam keys rotate`) a new agent must get the current keyring: "
    "copy serf/keyring.json from a member's data dir into this one's and restart it. Details: {log}")
_WATCH_INTERVAL = 1.0
#: Serf is Go (1.19 in Debian's build, which honours GOGC and GOMEMLIMIT). An idle Serf's live
#: heap is small and steady, so the garbage allowed to pile up between collections is much of
#: what it holds beyond its binary: collecting at 25 % heap growth instead of Go's 100 % keeps
#: it 2-3 MB smaller (idle, 3 members: 14.8 -> 12.1 MB RSS, private dirty 6.5 -> 3.8; 12.6 at
#: 50 %, the setting before), and idle it collects rarely enough that its CPU did not move
#: measurably (0.25, 0.28 and 0.27 % of a core at 100, 50 and 25; 60 s samples of
#: /proc/PID/stat; issues 16, 18). Proportional to the live heap, so it scales with the member
#: list, unlike a fixed GOMEMLIMIT (which made it collect more often for 1.7 MB more). Set for
#: Serf's process only (the agent is Python); an operator's own GOGC in the agent's
#: environment wins.
GO_ENV = {"GOGC": "25"}
_WARN_EVERY = 60.0
_STAMP = re.compile(r"^\s*(\d{4}/\d\d/\d\d \d\d:\d\d:\d\d) ")
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class KeyMismatch:
    """Serf failed to decrypt gossip `count` times; the last time at `at` (epoch s)."""

    count: int
    at: float
    line: str

    def as_api(self, log_path: Path) -> dict[str, Any]:
        return {"kind": "gossip-key-mismatch", "count": self.count, "at": self.at, "line": self.line,
                "log": str(log_path), "message": KEY_MISMATCH_ADVICE.format(log=log_path)}


def scan_key_mismatch(text: str, *, default_at: float) -> KeyMismatch | None:
    """Decrypt failures in a piece of serf.log (pure: tested with captured lines).

    Continuation lines (`\t* Failed to join ...`) carry no timestamp: they take the previous one.
    """
    count, at, last = 0, default_at, ""
    stamp = default_at
    for line in text.splitlines():
        m = _STAMP.match(line)
        if m:
            try:
                stamp = time.mktime(time.strptime(m.group(1), "%Y/%m/%d %H:%M:%S"))
            except ValueError:
                pass
        if KEY_MISMATCH in line:
            count, at, last = count + 1, stamp, line.strip()
    return KeyMismatch(count=count, at=at, line=last) if count else None


def recent_key_mismatch(log_path: Path, *, window: float = 120.0, max_bytes: int = 256 * 1024) -> KeyMismatch | None:
    """A decrypt failure logged in the last `window` seconds (for `GET /v1/status`)."""
    try:
        with open(log_path, "rb") as fh:
            fh.seek(max(0, fh.seek(0, os.SEEK_END) - max_bytes))
            text = fh.read().decode("utf-8", "replace")
    except OSError:
        return None
    found = scan_key_mismatch(text, default_at=time.time())
    return found if found is not None and time.time() - found.at <= window else None


@dataclass(frozen=True)
class SerfConfig:
    node_name: str
    bind_addr: str
    data_dir: Path
    encrypt_key: str
    rpc_auth: str
    bind_port: int = 7946
    rpc_port: int = 7373
    tags: dict[str, str] = field(default_factory=dict)
    profile: str = "lan"
    reconnect_interval: str = "5s"
    keyring_file: bool = True


def render_config(config: SerfConfig) -> dict[str, Any]:
    """The agent's JSON config (key spelling as in serf's `config.go` mapstructure tags)."""
    rendered: dict[str, Any] = {
        "node_name": config.node_name,
        "bind": join_hostport(config.bind_addr, config.bind_port),
        "rpc_addr": join_hostport(config.bind_addr, config.rpc_port),
        "rpc_auth": config.rpc_auth,
        "tags": dict(config.tags),
        "profile": config.profile,
        "reconnect_interval": config.reconnect_interval,
        "log_level": "info",
    }
    if config.keyring_file:
        rendered["keyring_file"] = str(config.data_dir / KEYRING_NAME)
    else:
        rendered["encrypt_key"] = config.encrypt_key
    return rendered


def child_env(environ: Mapping[str, str]) -> dict[str, str]:
    """Serf's environment: the agent's, with GO_ENV for what the agent's does not set."""
    return {**GO_ENV, **environ}


class SerfProcess:
    """One child `serf agent` in its own process group, logging to data_dir/serf.log."""

    def __init__(self, config: SerfConfig, *, binary: str = "serf") -> None:
        self.config = config
        self._binary = binary
        self._proc: asyncio.subprocess.Process | None = None
        self._log_offset = 0
        self._jobs = Supervisor(f"{config.node_name}:serf")  # the log watch
        self.key_mismatch: KeyMismatch | None = None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.returncode is None

    @property
    def log_path(self) -> Path:
        return self.config.data_dir / LOG_NAME

    async def start(self, *, timeout: float = 10.0) -> None:
        """Start the agent and return once its RPC answers handshake and auth."""
        if self.running:
            raise SerfStartError(f"serf agent {self.config.node_name} is already running")
        binary = shutil.which(self._binary)
        if binary is None:
            raise SerfStartError(f"serf binary {self._binary!r} not found on PATH")
        await self._refuse_busy_rpc_port()
        config_path = self._write_files()
        self._log_offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        with open(self.log_path, "ab") as log:
            self._proc = await asyncio.create_subprocess_exec(
                binary,
                "agent",
                f"-config-file={config_path}",
                stdin=asyncio.subprocess.DEVNULL,
                stdout=log,
                stderr=asyncio.subprocess.STDOUT,
                start_new_session=True,  # our signals reach it, the terminal's do not
                preexec_fn=_die_with_parent,
                env=child_env(os.environ),
            )
        try:
            await self._wait_ready(timeout)
        except BaseException:
            await self.stop()
            raise
        if not self._jobs:
            self._jobs.loop("serf-log", self._watch_log)

    async def stop(self, *, timeout: float = 5.0) -> None:
        """SIGTERM the agent's process group, SIGKILL it after `timeout`, and reap."""
        await self._jobs.stop()
        proc = self._proc
        if proc is None:
            return
        if proc.returncode is None:
            _signal_group(proc.pid, signal.SIGTERM)
            try:
                async with asyncio.timeout(timeout):
                    await proc.wait()
            except TimeoutError:
                _signal_group(proc.pid, signal.SIGKILL)
        await proc.wait()

    async def wait(self) -> int:
        """The agent's exit code, once it exits (for supervision)."""
        if self._proc is None:
            raise RuntimeError("serf agent was never started")
        return await self._proc.wait()

    async def client(self, *, timeout: float = 5.0) -> SerfClient:
        """A new authenticated RPC client to this agent."""
        c = self.config
        return await SerfClient.connect(
            c.bind_addr, c.rpc_port, auth_key=c.rpc_auth, timeout=timeout
        )

    def log_tail(self, *, max_bytes: int = 4000) -> str:
        """The end of what this run of the agent logged."""
        try:
            with open(self.log_path, "rb") as log:
                log.seek(max(self._log_offset, log.seek(0, os.SEEK_END) - max_bytes))
                return log.read().decode("utf-8", "replace")
        except OSError:
            return ""

    async def __aenter__(self) -> SerfProcess:
        await self.start()
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

    # ------------------------------------------------------------------ internals

    async def _watch_log(self) -> None:
        """Say in the agent's own log what only serf.log shows: the gossip keys do not match."""
        offset, warned = self._log_offset, 0.0
        while True:
            await asyncio.sleep(_WATCH_INTERVAL)
            try:
                with open(self.log_path, "rb") as fh:
                    size = fh.seek(0, os.SEEK_END)
                    fh.seek(offset if offset <= size else 0)
                    chunk = fh.read(1 << 20)
                    offset = fh.tell()
            except OSError:
                continue
            found = scan_key_mismatch(chunk.decode("utf-8", "replace"), default_at=time.time())
            if found is None:
                continue
            total = found.count + (self.key_mismatch.count if self.key_mismatch else 0)
            self.key_mismatch = KeyMismatch(count=total, at=found.at, line=found.line)
            if time.monotonic() - warned >= _WARN_EVERY or not warned:
                warned = time.monotonic()
                log.warning("%s (%d decrypt failures; last: %s)",
                            KEY_MISMATCH_ADVICE.format(log=self.log_path), total, found.line)

    def _write_files(self) -> Path:
        data_dir = self.config.data_dir
        data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        keyring = data_dir / KEYRING_NAME
        if self.config.keyring_file and not keyring.exists():
            # Seeded once; afterwards the agent owns it, so keys rotated at runtime
            # (install-key, use-key, remove-key) survive restarts.
            _write_private(keyring, json.dumps([self.config.encrypt_key]))
        config_path = data_dir / CONFIG_NAME
        _write_private(config_path, json.dumps(render_config(self.config), indent=2))
        return config_path

    async def _refuse_busy_rpc_port(self) -> None:
        """A stale agent on our RPC address would pass the readiness probe in our place."""
        c = self.config
        try:
            async with asyncio.timeout(1.0):
                _, writer = await asyncio.open_connection(c.bind_addr, c.rpc_port)
        except (OSError, TimeoutError):
            return  # nothing listens: good
        writer.close()
        raise SerfStartError(f"{c.bind_addr}:{c.rpc_port} is already in use (a stale serf agent?)")

    async def _wait_ready(self, timeout: float) -> None:
        assert self._proc is not None
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            if self._proc.returncode is not None:
                raise SerfStartError(
                    f"serf agent {self.config.node_name} exited with code "
                    f"{self._proc.returncode} while starting",
                    log_tail=self.log_tail(),
                )
            try:
                client = await self.client(timeout=min(1.0, timeout))
            except SerfAuthError as exc:
                raise SerfStartError("serf agent refused our rpc_auth") from exc
            except (SerfConnectionError, SerfTimeoutError) as exc:
                if loop.time() >= deadline:
                    raise SerfStartError(
                        f"serf agent {self.config.node_name} not answering RPC after {timeout}s",
                        log_tail=self.log_tail(),
                    ) from exc
                await asyncio.sleep(_READY_POLL)  # polling a starting child
                continue
            await client.close()
            return


def _write_private(path: Path, text: str) -> None:
    """Write a file only its owner can read (it holds keys), even if it existed with wider modes."""
    write_atomic(path, text.encode("utf-8"), mode=0o600)


def _signal_group(pid: int, sig: signal.Signals) -> None:
    try:
        os.killpg(pid, sig)
    except ProcessLookupError:
        pass


def _die_with_parent() -> None:
    """Serf is the cluster's liveness signal: if the agent dies (even SIGKILL), Serf must die too,
    or the federation would keep seeing a healthy member whose Controller is gone."""
    import ctypes

    PR_SET_PDEATHSIG = 1
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
