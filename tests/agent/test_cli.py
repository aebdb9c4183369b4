"""`roam agent` refuses bad input with one line and a non-zero exit, leaving nothing running."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.harness import TOKEN, federation

pytestmark = pytest.mark.integration


def roam(*args: str, env: dict[str, str] | None = None, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "peer.cli", *args], capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, **(env or {})})


def one_line_error(result: subprocess.CompletedProcess[str], *needles: str) -> None:
    assert result.returncode != 0
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]


def serf_processes_for(data_dir: Path) -> list[str]:
    out = subprocess.run(["pgrep", "-af", "serf agent"], capture_output=True, text=True).stdout
    return [line for line in out.splitlines() if str(data_dir) in line]


def test_unknown_flag(tmp_path: Path) -> None:
    one_line_error(roam("agent", "--name", "c1", "--addr", "127.0.0.21", "--bogus"), "--bogus")


def test_unreadable_config(tmp_path: Path) -> None:
    one_line_error(roam("agent", "--config", str(tmp_path / "nope.toml")), "--config", "does not exist")
    bad = tmp_path / "bad.toml"
    bad.write_text("name = [unclosed")
    one_line_error(roam("agent", "--config", str(bad)), "not valid TOML")
    unknown = tmp_path / "unknown.toml"
    unknown.write_text('name = "c1"\naddr = "127.0.0.21"\nflavour = "x"\n')
    one_line_error(roam("agent", "--config", str(unknown)), "flavour")


def test_address_not_local() -> None:
    one_line_error(roam("agent", "--name", "c1", "--addr", "192.0.2.55"), "--addr", "not an address of this host")
    one_line_error(roam("agent", "--name", "c1", "--addr", "not-an-ip"), "--addr")


def test_bad_values_name_the_flag() -> None:
    one_line_error(roam("agent", "--name", "Bad_Name", "--addr", "127.0.0.21"), "--name")
    one_line_error(roam("agent", "--name", "c1", "--addr", "127.0.0.21", "--lb-ports", "9-3"), "--lb-ports")
    one_line_error(roam("agent", "--name", "c1", "--addr", "127.0.0.21", "--join", "nowhere"), "--join")


def test_missing_serf_binary_leaves_nothing_running(tmp_path: Path) -> None:
    data = tmp_path / "c1"
    env = {"PATH": "/nonexistent"}
    result = roam("agent", "--name", "c1", "--addr", "127.0.0.21", "--data-dir", str(data), env=env)
    one_line_error(result, "serf")
    assert serf_processes_for(data) == []


def test_world_readable_token_is_refused(tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("x" * 40)
    token.chmod(0o644)
    result = roam("agent", "--name", "c1", "--addr", "127.0.0.21", "--data-dir", str(tmp_path / "d"),
                  "--token-file", str(token))
    one_line_error(result, "--token-file", "chmod 600")
    assert serf_processes_for(tmp_path / "d") == []


def test_client_errors_are_one_line() -> None:
    result = roam("members", "--api", "http://127.0.0.21:1", env={"ROAM_TOKEN": TOKEN})
    one_line_error(result, "cannot reach")
    result = roam("members", "--api", "http://127.0.0.21:1", env={"ROAM_TOKEN": ""})
    one_line_error(result, "ROAM_TOKEN")


async def test_members_cli_and_api_auth(tmp_path: Path) -> None:
    async with federation(tmp_path) as fed:
        agent = fed.add("solo", "127.0.0.21")
        agent.start()
        await fed.wait_healthy("solo")
        assert fed.session is not None
        async with fed.session.get(agent.api + "/v1/health") as r:
            assert r.status == 200 and await r.json() == {"cluster": "solo", "status": "ok"}
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN}):
            for path in ("/v1/members", "/metrics"):
                async with fed.session.get(agent.api + path, headers=headers) as r:
                    assert r.status == 401
                    assert "error" in await r.json()
        env = {"ROAM_TOKEN": TOKEN}
        table = roam("members", "--api", agent.api, env=env)
        assert table.returncode == 0, table.stderr
        assert table.stdout.splitlines()[0].split()[:3] == ["NAME", "STATUS", "ADDR"]
        assert "solo" in table.stdout and "alive" in table.stdout
        as_json = json.loads(roam("members", "--api", agent.api, "--json", env=env).stdout)
        assert as_json[0]["name"] == "solo" and as_json[0]["status"] == "alive"
        agent.stop()
        assert agent.proc is not None and agent.proc.returncode == 0
        assert serf_processes_for(agent.data_dir) == []


def test_example_config_parses(tmp_path: Path) -> None:
    """The shipped example TOML is valid for the real parser (addresses aside)."""
    import argparse

    from peer.config import ConfigError, build_config

    example = Path(__file__).resolve().parents[2] / "docs" / "deploy" / "roam-agent.toml"
    text = example.read_text().replace("192.0.2.10", "127.0.0.21")
    cfg = tmp_path / "agent.toml"
    cfg.write_text(text)
    ns = argparse.Namespace(config=str(cfg), name=None, addr=None, join=[])
    config = build_config(ns)
    assert config.name == "edge-1" and config.tier == "edge" and config.capacity.slots == 32
    assert config.thresholds.min_dwell_s == 60.0 and config.kubernetes.namespace == "roam"
    cfg.write_text(text.replace("[triggers]", "[triggers]\nbogus = 1"))
    with pytest.raises(ConfigError, match="bogus"):
        build_config(ns)
