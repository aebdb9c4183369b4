"""`roam agent` runs its daemon as `python -OO` (peer.cli._daemon_without_docstrings): the
same process (the pid a supervisor started), the interpreter's own options kept, and
ROAM_AGENT_KEEP_DOCSTRINGS=1 turns it off; flags, errors and help behave as before. Real agents
on 127.0.135.1-2."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.harness import Federation
from tests.security.conftest import start_and_wait, stop_all

pytestmark = pytest.mark.integration


def _cmdline(pid: int) -> list[str]:
    return Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0")[:-1]


@pytest.mark.parametrize(("env", "optimised"), [({}, True), ({"ROAM_AGENT_KEEP_DOCSTRINGS": "1"}, False)])
def test_the_daemon_drops_its_docstrings_in_the_process_it_was_started_as(
        tmp_path: Path, env: dict[str, str], optimised: bool) -> None:
    fed = Federation(base=tmp_path)
    agent = fed.add("d1", "127.0.135.1" if optimised else "127.0.135.2")
    agent.env.update(env)
    try:
        start_and_wait(agent)
        assert agent.proc is not None and agent.proc.poll() is None
        argv = _cmdline(agent.proc.pid)  # the pid Popen gave: exec, not a child
        assert argv[0] == sys.executable
        assert ("-OO" in argv) is optimised, argv
        assert argv[argv.index("-m") if "-m" in argv else 0:][:3] == ["-m", "peer.cli", "agent"], argv
        assert "d1" in argv and "--data-dir" in argv  # its flags came along
    finally:
        stop_all(fed)
    assert agent.proc.returncode == 0


def test_a_bad_flag_is_still_one_line_and_a_usage_exit(tmp_path: Path) -> None:
    out = subprocess.run([sys.executable, "-m", "peer.cli", "agent", "--name", "d1", "--addr", "127.0.135.3",
                          "--api-port", "70000", "--data-dir", str(tmp_path / "d")],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode != 0
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and "--api-port" in lines[0], out.stderr
    assert out.returncode == 2


def test_the_exec_comes_before_click_is_imported() -> None:
    """What the exec costs an agent's start: an interpreter and `peer.cli` alone (click, the
    config and everything else are imported once, by the optimised process)."""
    code = ("import sys, peer.cli\n"
            "print(sorted(m for m in ('click', 'peer.config', 'peer.cli.agentcmd', 'aiohttp') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.strip() == "[]"


def test_agent_help_keeps_its_text() -> None:
    out = subprocess.run([sys.executable, "-m", "peer.cli", "agent", "--help"], capture_output=True, text=True,
                         timeout=60, check=True)
    assert "Run the per-cluster daemon" in out.stdout and "--lb-slots" in out.stdout
