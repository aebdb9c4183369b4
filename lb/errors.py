"""The lb error tree: one base class so callers can catch everything the load balancer raises."""
from __future__ import annotations


class LBError(Exception):
    """Base of every error raised by `lb`."""


class InvalidTokenError(LBError, ValueError):
    """A name, address, port or weight that must not be sent to HAProxy's CLI.

    Raised by the command builders before anything reaches the socket, so user input can never
    smuggle a second command (`;`, newline, spaces) into the runtime API.
    """


class HAProxyCommandError(LBError):
    """HAProxy answered a runtime command with an error reply."""

    def __init__(self, command: str, reply: str) -> None:
        self.command = command
        self.reply = reply
        first = reply.strip().splitlines()[0] if reply.strip() else "<empty reply>"
        super().__init__(f"haproxy refused {command!r}: {first}")


class HAProxyConnectionError(LBError, ConnectionError):
    """The runtime socket could not be reached, closed mid-reply, or did not answer in time."""


class HAProxyStartError(LBError):
    """HAProxy could not be started or adopted (missing binary, bad config, socket never answered)."""


class NoFreeSlotError(LBError):
    """Every pre-provisioned frontend slot is taken, or the requested port is not available."""


class UnknownServiceError(LBError, KeyError):
    """The service has no frontend slot: call `open_frontend` first."""

    def __str__(self) -> str:  # KeyError quotes its argument; keep the message readable
        return str(self.args[0]) if self.args else "unknown service"


class RerouteError(LBError):
    """A reroute could not complete; the previous route is still the one serving."""
