"""SerfProcess: the config it writes, and starting and stopping real agents.

Every integration test starts its agents from `render_config`, and serf rejects unknown keys
("has invalid keys"), so the key spelling is checked against the real binary there too.
"""
from __future__ import annotations

import asyncio
import json
import os
import signal
import stat
from pathlib import Path

import pytest

from peer.serf.errors import SerfStartError
from peer.serf.process import SerfProcess, render_config
from tests.serf.conftest import StartNode, node_config


def test_render_config_with_keyring_file(tmp_path: Path) -> None:
    config = node_config(tmp_path, 20, tags={"tier": "edge"}, rpc_port=7474)
    rendered = render_config(config)
    assert rendered == {
        "node_name": "serf-t20",
        "bind": "127.0.1.20:7946",
        "rpc_addr": "127.0.1.20:7474",
        "rpc_auth": config.rpc_auth,
        "tags": {"tier": "edge"},
        "profile": "lan",
        "reconnect_interval": "5s",
        "log_level": "info",
        "keyring_file": str(config.data_dir / "keyring.json"),
    }
    assert "encrypt_key" not in rendered  # serf refuses both at once


def test_render_config_without_keyring_file(tmp_path: Path) -> None:
    config = node_config(tmp_path, 20, keyring_file=False)
    rendered = render_config(config)
    assert rendered["encrypt_key"] == config.encrypt_key and "keyring_file" not in rendered


async def test_missing_binary_is_a_one_line_start_error(tmp_path: Path) -> None:
    process = SerfProcess(node_config(tmp_path, 20), binary="no-such-serf-binary")
    with pytest.raises(SerfStartError) as info:
        await process.start()
    assert "no-such-serf-binary" in str(info.value) and "\n" not in str(info.value)
    assert process.pid is None and not process.running


@pytest.mark.integration
async def test_files_are_private_and_the_agent_runs(start_node: StartNode) -> None:
    node = await start_node(21)
    data_dir = node.process.config.data_dir
    for name in ("serf.json", "keyring.json"):
        assert stat.S_IMODE((data_dir / name).stat().st_mode) == 0o600
    assert json.loads((data_dir / "keyring.json").read_text()) == [node.process.config.encrypt_key]
    assert node.process.running and node.process.pid is not None
    assert os.getpgid(node.process.pid) == node.process.pid  # its own process group
    assert "Serf agent running" in (data_dir / "serf.log").read_text()
    with pytest.raises(SerfStartError, match="already running"):
        await node.process.start()


@pytest.mark.integration
async def test_early_exit_reports_the_log_tail(tmp_path: Path) -> None:
    process = SerfProcess(node_config(tmp_path, 22, profile="bogus"))
    with pytest.raises(SerfStartError) as info:
        await process.start(timeout=10)
    assert "exited with code 1" in str(info.value)
    assert "Unknown profile: bogus" in info.value.log_tail
    assert not process.running


@pytest.mark.integration
async def test_busy_rpc_address_is_refused(start_node: StartNode, tmp_path: Path) -> None:
    await start_node(23)
    second = SerfProcess(node_config(tmp_path / "other", 23))
    with pytest.raises(SerfStartError, match="already in use"):
        await second.start()
    assert second.pid is None


@pytest.mark.integration
async def test_stop_escalates_to_sigkill(start_node: StartNode) -> None:
    node = await start_node(24)
    await node.client.close()
    pid = node.process.pid
    assert pid is not None
    os.kill(pid, signal.SIGSTOP)  # a stopped agent cannot act on SIGTERM
    await asyncio.wait_for(node.process.stop(timeout=0.5), 10)
    assert not node.process.running
    assert await node.process.wait() == -signal.SIGKILL


@pytest.mark.integration
async def test_stop_is_graceful_with_sigterm(start_node: StartNode) -> None:
    node = await start_node(25)
    await node.process.stop()
    assert await node.process.wait() != -signal.SIGKILL
    assert "Caught signal: terminated" in node.process.log_tail()
