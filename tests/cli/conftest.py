"""Helpers for the CLI tests: run `roam` as a user would."""
from __future__ import annotations

import os
import subprocess
import sys

CLEAN = ("ROAM_API", "ROAM_TOKEN", "ROAM_DATA_DIR")


def roam(*args: str, env: dict[str, str] | None = None, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """`roam ...` as a user runs it: no ROAM_* from the test runner's environment unless given."""
    base = {k: v for k, v in os.environ.items() if k not in CLEAN}
    return subprocess.run([sys.executable, "-m", "peer.cli", *args], capture_output=True, text=True,
                          timeout=timeout, env={**base, **(env or {})})
