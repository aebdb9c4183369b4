"""What an agent leaves running when it stops: by design its services and HAProxy outlive it
(so a crashed agent takes no traffic down). A test or demo that is done with a cluster must
kill them itself, found from the agent's data dir (readable even when the agent is gone)."""
from __future__ import annotations

import json
import os
import signal
from pathlib import Path


def kill_left_behind(data_dir: Path) -> None:
    """SIGKILL the service process groups (process driver) and HAProxy of one agent."""
    for state in data_dir.glob("services/*/instance.json"):
        try:
            os.killpg(int(json.loads(state.read_text())["pgid"]), signal.SIGKILL)
        except (OSError, ValueError, KeyError, TypeError):
            pass
    for pidfile in data_dir.glob("lb/haproxy.pid"):
        try:
            os.kill(int(pidfile.read_text().split()[0]), signal.SIGKILL)
        except (OSError, ValueError, IndexError):
            pass
