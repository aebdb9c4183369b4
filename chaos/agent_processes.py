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


def services_user_can_run_this_checkout() -> str | None:
    """Why a root agent's default service user (`nobody`, peer.config.DEFAULT_RUN_AS) cannot run
    the samples of this checkout (None: it can). A clone under /root (0700) is such a case: the
    user cannot even reach the interpreter's site-packages."""
    import pwd
    import subprocess
    import sys

    from peer.config import DEFAULT_RUN_AS

    if os.geteuid() != 0:
        return None  # services run as the agent's own user anyway
    root = Path(__file__).resolve().parents[1]
    try:
        pwd.getpwnam(DEFAULT_RUN_AS)
        done = subprocess.run([sys.executable, "-c", "import peer.samples.classifier"], user=DEFAULT_RUN_AS,
                              cwd="/", env={"PYTHONPATH": str(root), "PATH": os.environ.get("PATH", "")},
                              capture_output=True, text=True, timeout=30, check=False)
    except (KeyError, OSError, subprocess.SubprocessError) as exc:
        return f"{DEFAULT_RUN_AS} cannot start {sys.executable}: {exc}"
    if done.returncode != 0:
        lines = done.stderr.strip().splitlines()
        return f"{DEFAULT_RUN_AS} cannot import this checkout's samples ({root}): {lines[-1] if lines else '?'}"
    return None


def run_services_as_root_if_needed() -> str | None:
    """For the test suite, the demo and the benchmarks (their services are this checkout's
    samples): when `nobody` cannot run them, the agents they start run services as root
    ($ROAM_RUN_AS, read by peer.config), and the reason is returned to be said. The default
    itself is tested with a stdlib service (tests/drivers/test_run_as.py)."""
    from peer.config import RUN_AS_ENV

    why = services_user_can_run_this_checkout()
    if why is not None and not os.environ.get(RUN_AS_ENV):
        os.environ[RUN_AS_ENV] = "root"
    return why
