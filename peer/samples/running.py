"""What the samples share: run on uvloop (roam's event loop), and accept an inherited socket.

`inherited_socket` takes the listening socket the process driver hands over when it starts a
service socket-activated (`peer.drivers.activation`: systemd's LISTEN_FDS/LISTEN_PID, fd 3),
so connections that queued before the sample got this far are served, not refused.
"""
from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import Coroutine
from typing import Any


def run(main: Coroutine[Any, Any, None]) -> None:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency
        runner = asyncio.Runner()
    else:
        runner = asyncio.Runner(loop_factory=uvloop.new_event_loop)
    with runner:
        runner.run(main)


LISTEN_FDS_START = 3


def inherited_socket() -> socket.socket | None:
    """The listening socket passed by the agent (sd_listen_fds(3) rules), or None.

    The variables are removed, as sd_listen_fds(1) does, so children do not take it as theirs.
    """
    try:
        pid, count = int(os.environ.get("LISTEN_PID", "")), int(os.environ.get("LISTEN_FDS", ""))
    except ValueError:
        return None
    for key in ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"):
        os.environ.pop(key, None)
    if pid != os.getpid() or count < 1:
        return None
    sock = socket.socket(fileno=LISTEN_FDS_START)
    sock.set_inheritable(False)
    sock.setblocking(False)
    return sock
