"""Socket activation for the process driver: the agent binds the service's port, the service inherits it.

Why: a service that binds its own port refuses connections until it gets that far, so the
agent can only poll for it. When the agent binds and listens first, connections queue in the
kernel from the first instant; the readiness probe is sent at once and answered the moment
the service serves, with no poll interval (`process.ProcessDriver._run_once`).

The convention is systemd's (sd_listen_fds(3)), so servers that already speak it work as is
(gunicorn, go-systemd's `activation.Listeners`, socket-activate-aware asyncio servers):
  - the listening socket is fd 3 (`SD_LISTEN_FDS_START`),
  - `LISTEN_FDS=1`, `LISTEN_FDNAMES=<service>`, and `LISTEN_PID=<the service's pid>`.
The pid is only known after the fork, and `subprocess.Popen` builds the environment before
it, so the command is started through a two-line `/bin/sh` trampoline that sets
`LISTEN_PID=$$`, moves the socket (its stdin) to fd 3 and `exec`s the command: the pid (and its start
time, which adoption checks) stays the service's own, and the command's arguments are passed
as positional parameters (`"$@"`), never parsed by the shell. It costs about 1 ms.

Opt-in: the descriptor's `socket_activation` (true/false). When it is absent, activation is
on for the bundled samples (`python -m peer.samples.classifier|stateful|stream`), which accept an
inherited socket (`peer.samples.running.inherited_socket`), and off for every other command,
which binds its own port as before and is polled (`probing.next_probe_delay`).
"""
from __future__ import annotations

import logging
import socket

from peer.drivers.descriptor import ServiceDescriptor

log = logging.getLogger(__name__)

LISTEN_FDS_START = 3  # systemd's SD_LISTEN_FDS_START
BACKLOG = 1024
SHELL = "/bin/sh"
SAMPLES = frozenset({"peer.samples.classifier", "peer.samples.stateful", "peer.samples.stream"})


def wanted(descriptor: ServiceDescriptor) -> bool:
    """Does this service take its listening socket from the agent? (module doc: opt-in rules)"""
    if descriptor.socket_activation is not None:
        return descriptor.socket_activation
    return runs_a_sample(descriptor.command)


def listener_for(descriptor: ServiceDescriptor, *, host: str, port: int) -> socket.socket | None:
    """The listening socket to hand to this service, or None if it binds its own port.

    Only with an HTTP health check: a TCP connect to a socket the agent bound proves nothing
    about the service. If the port cannot be bound, the service is left to bind it itself.
    """
    health = descriptor.health
    if health is None or health.path is None or not wanted(descriptor):
        return None
    try:
        return bind_listener(host, port)
    except OSError as exc:
        log.warning("%s: cannot bind %s:%d for socket activation (%s); the service binds it",
                    descriptor.name, host, port, exc)
        return None


def runs_a_sample(command: tuple[str, ...]) -> bool:
    """`<python> -m peer.samples.X ...`: a bundled sample, which accepts an inherited socket."""
    return len(command) >= 3 and command[1] == "-m" and command[2] in SAMPLES


def bind_listener(host: str, port: int, *, backlog: int = BACKLOG) -> socket.socket:
    """A listening TCP socket on host:port, inheritable, as the service would have bound it."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(backlog)
        sock.set_inheritable(True)
    except BaseException:
        sock.close()
        raise
    return sock


def trampoline(argv: list[str]) -> list[str]:
    """argv that runs `argv` with LISTEN_PID set to its own pid and fd 0 moved to fd 3.

    The socket travels as the shell's stdin (`Popen(stdin=sock)`): dash redirects only fds
    0-9, and the agent's socket may have any number. The command gets /dev/null as stdin.
    """
    script = f'LISTEN_PID=$$; export LISTEN_PID; exec "$@" {LISTEN_FDS_START}<&0 0</dev/null'
    return [SHELL, "-c", script, "roam-socket-activation", *argv]


def environment(name: str) -> dict[str, str]:
    """The variables (besides LISTEN_PID, set by the trampoline) that announce the socket."""
    return {"LISTEN_FDS": "1", "LISTEN_FDNAMES": name}
