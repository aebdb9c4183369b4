"""--ca-cert/--cert/--key and their TOML keys: all three or none, not with --tls-cert, refused
in one line naming the flag; an agent with a bad certificate stops at start with one line."""
from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from peer.config import ConfigError, build_config
from peer.trust import ca


def args(**kw: Any) -> argparse.Namespace:
    base: dict[str, Any] = {"config": None, "name": "c1", "addr": "127.0.0.1", "join": [], "accept_from": [], "allow_command": [],
            "allow_image": []}
    return argparse.Namespace(**{**base, **kw})


@pytest.fixture()
def files(tmp_path: Path) -> Path:
    ca.init(tmp_path / "ca")
    ca.issue(tmp_path / "ca", cluster="c1", out=tmp_path / "c1")
    ca.issue(tmp_path / "ca", cluster="c2", out=tmp_path / "c2")
    return tmp_path / "c1"


def test_flags_and_toml_keys_set_the_identity(files: Path, tmp_path: Path) -> None:
    config = build_config(args(ca_cert=str(files / "ca.pem"), cert=str(files / "cluster.pem"),
                               key=str(files / "cluster.key")))
    assert config.cert == files / "cluster.pem" and config.tls and config.api_url.startswith("https://")
    toml = tmp_path / "agent.toml"
    toml.write_text(f'ca_cert = "{files / "ca.pem"}"\ncert = "{files / "cluster.pem"}"\nkey = "{files / "cluster.key"}"\n')
    assert build_config(args(config=str(toml))).key == files / "cluster.key"
    assert not build_config(args()).tls


@pytest.mark.parametrize(("kw", "message"), [
    ({"ca_cert": "CA"}, "--ca-cert needs --cert and --key too"),
    ({"cert": "CERT", "key": "KEY"}, "--cert needs --ca-cert too"),
    ({"ca_cert": "CA", "cert": "CERT", "key": "KEY", "tls_cert": "CERT", "tls_key": "KEY"}, "--tls-cert: not with --cert"),
    ({"ca_cert": "/nonexistent", "cert": "CERT", "key": "KEY"}, "--ca-cert: /nonexistent is not a readable file"),
])
def test_incomplete_or_conflicting_flags_are_one_line(files: Path, kw: dict[str, str], message: str) -> None:
    paths = {"CA": str(files / "ca.pem"), "CERT": str(files / "cluster.pem"), "KEY": str(files / "cluster.key")}
    with pytest.raises(ConfigError, match=message):
        build_config(args(**{k: paths.get(v, v) for k, v in kw.items()}))


def test_an_agent_with_another_clusters_certificate_does_not_start(files: Path, tmp_path: Path) -> None:
    other = tmp_path / "c2"
    run = subprocess.run([sys.executable, "-m", "peer.cli", "agent", "--name", "c1", "--addr", "127.0.33.9",
                          "--data-dir", str(tmp_path / "data"), "--ca-cert", str(files / "ca.pem"),
                          "--cert", str(other / "cluster.pem"), "--key", str(other / "cluster.key")],
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 2, run.stderr
    assert run.stderr.strip().splitlines() == [
        f"roam agent: --cert: {other / 'cluster.pem'} names cluster 'c2', this agent is 'c1'"], run.stderr


def test_ca_dir_must_hold_the_ca_this_agent_trusts(files: Path, tmp_path: Path) -> None:
    ident = {"ca_cert": str(files / "ca.pem"), "cert": str(files / "cluster.pem"), "key": str(files / "cluster.key")}
    assert build_config(args(ca_dir=str(tmp_path / "ca"), **ident)).ca_dir == tmp_path / "ca"
    with pytest.raises(ConfigError, match="--ca-dir needs per-cluster identity"):
        build_config(args(ca_dir=str(tmp_path / "ca")))
    with pytest.raises(ConfigError, match="holds no CA key"):
        build_config(args(ca_dir=str(files), **ident))
    ca.init(tmp_path / "other")
    with pytest.raises(ConfigError, match="its ca.pem is not --ca-cert"):
        build_config(args(ca_dir=str(tmp_path / "other"), **ident))
