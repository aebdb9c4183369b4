"""The exception tree of the Serf boundary.

Everything the RPC client raises is a `SerfRPCError`, so callers can catch the boundary as a
whole; the subclasses say what to do next: reconnect (`SerfConnectionError`), fix the
configuration (`SerfAuthError`), accept the agent's refusal (`SerfCommandError`), or suspect a
bug or a foreign peer (`SerfProtocolError`). Always raised `from` the underlying cause.
"""
from __future__ import annotations

from peer.errors import RoamError


class SerfRPCError(RoamError):
    """Base of every error raised while talking to a Serf agent over RPC."""


class SerfConnectionError(SerfRPCError, ConnectionError):
    """The RPC connection could not be opened, or it dropped; pending calls fail with this."""


class SerfAuthError(SerfRPCError):
    """The agent refused our `rpc_auth` key (or wanted one we did not send)."""


class SerfCommandError(SerfRPCError):
    """The agent answered a command with a non-empty `Error` (or we refused to send it)."""

    def __init__(self, command: str, error: str) -> None:
        super().__init__(f"serf {command}: {error.strip()}")
        self.command = command
        self.error = error


class SerfProtocolError(SerfRPCError):
    """Bytes or objects on the wire that do not follow Serf's RPC protocol."""


class SerfTimeoutError(SerfRPCError, TimeoutError):
    """The agent did not answer in time; the connection stays usable."""


class SerfStartError(RoamError, RuntimeError):
    """A child `serf agent` could not be started (missing binary, bad config, early exit)."""

    def __init__(self, message: str, *, log_tail: str = "") -> None:
        full = f"{message}\n--- serf.log (tail) ---\n{log_tail}" if log_tail else message
        super().__init__(full)
        self.log_tail = log_tail
