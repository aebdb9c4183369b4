"""The trust flags and TOML keys: parsed, resolved, and refused in one line naming the flag."""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from peer.config import ConfigError, build_config
from peer.runtime.credentials import CredentialError, load_credentials
from peer.trust.workload import WorkloadPolicy

ADDR = "127.0.23.50"


def args(**kw: Any) -> argparse.Namespace:
    base = {"config": None, "name": "c1", "addr": "127.0.0.1", "join": [], "accept_from": [], "allow_command": [],
            "allow_image": []}
    return argparse.Namespace(**{**base, **kw})


def test_defaults_accept_everything(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ROAM_RUN_AS", raising=False)
    config = build_config(args())
    assert config.workload == WorkloadPolicy() and config.workload.permissive
    assert config.reader_token_file is None
    # DESIGN "Least privilege for services": a root agent runs services as nobody by default.
    assert config.run_as == ("nobody" if os.geteuid() == 0 else None)


def test_the_default_service_user_and_its_exceptions(monkeypatch: pytest.MonkeyPatch) -> None:
    """As a root agent sees it, whoever runs the test (the default applies under root only)."""
    monkeypatch.delenv("ROAM_RUN_AS", raising=False)
    monkeypatch.setattr("peer.config.os.geteuid", lambda: 0)
    assert build_config(args()).run_as == "nobody"
    assert build_config(args(run_as="root")).run_as is None  # the agent's own user: no switch
    assert build_config(args(driver="kubernetes")).run_as is None  # pods are the cluster's business
    monkeypatch.setenv("ROAM_RUN_AS", "root")
    assert build_config(args()).run_as is None
    monkeypatch.setenv("ROAM_RUN_AS", "no-such-user-here")
    with pytest.raises(ConfigError, match=r"--run-as \(not given: \$ROAM_RUN_AS"):
        build_config(args())


def test_flags_build_the_policy_with_resolved_prefixes(tmp_path: Path) -> None:
    real = tmp_path / "real"
    real.mkdir()
    (tmp_path / "link").symlink_to(real)
    config = build_config(args(accept_from=["c2", "c3"], allow_command=[str(tmp_path / "link"), "/usr/bin/../lib"],
                               allow_image=["registry.example.com/team/"]))
    assert config.workload.accept_from == frozenset({"c2", "c3"})
    assert config.workload.allow_commands == (os.path.realpath(real), os.path.realpath("/usr/lib"))
    assert config.workload.allow_images == ("registry.example.com/team/",)


def test_toml_keys(tmp_path: Path) -> None:
    reader = tmp_path / "reader"
    cfg = tmp_path / "agent.toml"
    cfg.write_text(f'name = "c1"\naddr = "127.0.0.1"\naccept_from = []\nallow_command = ["/usr/bin"]\n'
                   f'allow_image = ["ghcr.io/org"]\nreader_token_file = "{reader}"\nrun_as = "nobody"\n')
    config = build_config(args(config=str(cfg)))
    assert config.workload.accept_from == frozenset()  # [] in the file: only services homed here
    assert config.workload.allow_commands == (os.path.realpath("/usr/bin"),)
    assert config.workload.allow_images == ("ghcr.io/org",)
    assert config.reader_token_file == reader and config.run_as == "nobody"


@pytest.mark.parametrize(("kw", "flag"), [
    ({"accept_from": ["Not_A_Name"]}, "--accept-from"),
    ({"allow_command": ["relative/bin"]}, "--allow-command"),
    ({"allow_command": [""]}, "--allow-command"),
    ({"allow_image": ["bad image"]}, "--allow-image"),
    ({"allow_image": ["reg.io/../x"]}, "--allow-image"),
    ({"run_as": "no-such-user-here"}, "--run-as"),
    ({"run_as": "nobody", "driver": "kubernetes"}, "--run-as"),
])
def test_bad_values_name_the_flag(kw: dict[str, Any], flag: str) -> None:
    with pytest.raises(ConfigError, match=f"^{flag}"):
        build_config(args(**kw))


def test_bad_toml_types_name_the_key(tmp_path: Path) -> None:
    cfg = tmp_path / "agent.toml"
    cfg.write_text('name = "c1"\naddr = "127.0.0.1"\nallow_command = [1]\n')
    with pytest.raises(ConfigError, match="^--allow-command: expected a list of strings"):
        build_config(args(config=str(cfg)))


def test_reader_token_must_be_private_and_its_own(tmp_path: Path) -> None:
    token, secret, reader = tmp_path / "t", tmp_path / "s", tmp_path / "r"
    for path, value in ((token, "operator-token-0123456789"), (secret, "secret-0123456789abcdef"),
                        (reader, "operator-token-0123456789")):
        path.write_text(value)
        path.chmod(0o600)
    with pytest.raises(CredentialError, match="^--reader-token-file: .* holds the operator token"):
        load_credentials(data_dir=tmp_path, token_file=token, secret_file=secret, reader_token_file=reader)
    reader.write_text("reader-token-0123456789")
    reader.chmod(0o644)
    with pytest.raises(CredentialError, match="^--reader-token-file: .* readable by group or others"):
        load_credentials(data_dir=tmp_path, token_file=token, secret_file=secret, reader_token_file=reader)
    reader.chmod(0o600)
    creds = load_credentials(data_dir=tmp_path, token_file=token, secret_file=secret, reader_token_file=reader)
    assert creds.reader_token == "reader-token-0123456789"


def test_cli_refusal_is_one_line(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "peer.cli", "agent", "--name", "c1", "--addr", ADDR,
                           "--data-dir", str(tmp_path), "--allow-image", "no good"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert done.stderr.strip().count("\n") == 0 and done.stderr.startswith("roam agent: --allow-image")
