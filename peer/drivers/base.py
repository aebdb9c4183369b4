"""The orchestrator seam: what the agent asks of a cluster's orchestrator, and how it fails.

The paper's Controller "marshals commands into the cluster orchestrator's language"; in roam
that language is a `Driver`. The error classes say whether retrying can help (after kopf): a
`TemporaryDriverError` carries the `.delay` the orchestrator suggests, a `PermanentDriverError`
says "this will not work by retrying". The migration engine does not wait out `.delay` and
retry: a failed deploy fails the migration (the service stays where it was); the convergence
loop and the fail-safe try again on their own schedules. The distinction sets the API's status
codes (422 for a permanent refusal, 503 for a temporary one) and the log.
"""
from __future__ import annotations

import builtins
import enum
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from peer.errors import RoamError
from peer.drivers.descriptor import ServiceDescriptor

# on_event(name, kind, detail). Called from the event loop; must not block. Kinds:
EVENT_READY = "ready"                  # the service became ready (first time or after a restart)
EVENT_CRASH = "crash"                  # the process exited unexpectedly (detail: exit status)
EVENT_RESTART = "restart"              # a new process was started after a crash (detail: host:port)
EVENT_GAVE_UP = "gave-up"              # too many crashes in a row; the instance is failed
EVENT_DEPLOY_FAILED = "deploy-failed"  # it exited before ever becoming ready (detail: log tail)
EVENT_LOST = "lost"                    # found dead (or gone) on adoption or by housekeeping
EVENT_UNREADY = "unready"              # kubernetes: ready replicas dropped below the wanted count

EventCallback = Callable[[str, str, str], None]


class InstanceState(str, enum.Enum):
    STARTING = "starting"
    READY = "ready"
    FAILED = "failed"
    STOPPED = "stopped"


@dataclass(frozen=True)
class Instance:
    """What a driver runs for one service, as last observed."""

    name: str
    home: str                  # the service's home cluster (HC)
    host: str                  # where the service answers (endpoint host)
    port: int                  # and on which port
    state: InstanceState
    pid: int | None = None     # process driver
    uid: str | None = None     # kubernetes: the Deployment's metadata.uid
    restarts: int = 0
    detail: str = ""
    started_at: float = 0.0    # wall-clock seconds (time.time())
    digest: str = ""           # ServiceDescriptor.digest() of what runs

    @property
    def endpoint(self) -> tuple[str, int]:
        return self.host, self.port


class DriverError(RoamError):
    """Base of every driver failure."""


class TemporaryDriverError(DriverError):
    """Retrying later may succeed (API unavailable, throttled, timed out)."""

    def __init__(self, message: str, *, delay: float = 1.0) -> None:
        super().__init__(message)
        self.delay = delay


class PermanentDriverError(DriverError):
    """Retrying the same request will fail again."""


class ServiceNotFound(PermanentDriverError):
    """The driver runs no service of that name."""


class DeployFailed(PermanentDriverError):
    """The service exited or was judged broken before becoming ready."""

    def __init__(self, message: str, *, log_tail: str = "") -> None:
        super().__init__(message if not log_tail else f"{message}\n--- log tail ---\n{log_tail}")
        self.log_tail = log_tail


class DriverTimeout(TemporaryDriverError, TimeoutError):
    """A deadline passed (e.g. not ready in time); the service may still come up.
    `log_tail`: the service's output so far, when the driver keeps it (process driver)."""

    def __init__(self, message: str, *, delay: float = 1.0, log_tail: str = "") -> None:
        super().__init__(message, delay=delay)
        self.log_tail = log_tail


class NeverReady(DeployFailed):
    """A copy was not ready within its descriptor's `ready_timeout` and has been removed: the
    service's own condition (it starts too slowly, or never listens), not the cluster's."""


class Conflict(PermanentDriverError):
    """The name is taken by something else (another owner, or a different descriptor)."""


class Forbidden(PermanentDriverError):
    """The orchestrator refused the credentials or the action."""


@runtime_checkable
class Driver(Protocol):
    """One cluster's orchestrator, as the agent drives it."""

    name: str

    async def start(self) -> None:
        """Connect and start housekeeping (supervision, watches)."""

    async def stop(self) -> None:
        """Stop housekeeping. Running services are left running (adopt() finds them again)."""

    async def deploy(self, descriptor: ServiceDescriptor, *, home: str) -> Instance:
        """Start the service; idempotent per name. Returns once started, not necessarily ready."""

    async def wait_ready(self, name: str, *, timeout: float) -> Instance:
        """Return once ready; raise DeployFailed (with the log tail) or DriverTimeout."""

    async def status(self, name: str) -> Instance:
        """Current state; raises ServiceNotFound."""

    async def endpoint(self, name: str) -> tuple[str, int]:
        """Where the service answers; raises ServiceNotFound."""

    async def delete(self, name: str) -> None:
        """Stop and remove the service; idempotent."""

    async def rename(self, old: str, new: str) -> None:
        """Carry the running copy of `old` over to the name `new` without stopping it (a
        concurrent creation renamed `name@home`, peer.records.naming); ServiceNotFound if none."""

    async def list(self) -> builtins.list[Instance]:
        """Every service this driver runs."""

    async def adopt(self) -> builtins.list[Instance]:
        """After an agent restart: find what is already running, check it is alive, supervise it."""

    async def rewrite_lost_state(self) -> builtins.list[str]:
        """Write again what a later adopt() needs of a running service and was lost (process
        driver: instance.json); what was rewritten. Nothing to do for a driver whose
        orchestrator keeps that state (kubernetes)."""
