"""`--probe-budget` (and `probe_budget` in the TOML file): bytes the link probe may send one
peer per minute; bad values are one line naming the flag, and change nothing."""
from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import pytest

from peer.config import ConfigError, build_config
from peer.links.estimate import ProbeBudget

BASE = {"name": "lp9", "addr": "127.0.32.19", "config": None, "join": []}


def config(**kw: object) -> argparse.Namespace:
    return argparse.Namespace(**BASE, **kw)


def test_default_flag_and_file() -> None:
    assert build_config(config()).probe_budget == ProbeBudget()
    assert build_config(config(probe_budget=0)).probe_budget.per_minute == 0


def test_toml_key(tmp_path: Path) -> None:
    path = tmp_path / "agent.toml"
    path.write_text("probe_budget = 70000\n")
    assert build_config(argparse.Namespace(**{**BASE, "config": str(path)})).probe_budget.per_minute == 70000


@pytest.mark.parametrize("bad", [-1, "lots", 1.5, True])
def test_bad_budget_names_the_flag(bad: object) -> None:
    with pytest.raises(ConfigError, match="--probe-budget"):
        build_config(config(probe_budget=bad))


def test_cli_refuses_in_one_line(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "peer.cli", "agent", "--name", "lp9", "--addr", "127.0.32.19",
                           "--data-dir", str(tmp_path / "d"), "--probe-budget", "-5"],
                          capture_output=True, text=True, timeout=30)
    assert done.returncode != 0
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "--probe-budget" in lines[0], done.stderr
    assert not (tmp_path / "d").exists()
