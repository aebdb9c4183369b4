"""The settings tree (peer/config.py): for every setting, the flag wins over the TOML file,
which wins over the default written once on AgentConfig; every bad value, from either source,
is one ConfigError naming the setting, never a TypeError from deep inside."""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import pytest

from peer.config import AgentConfig, Capacity, ConfigError, build_config, default_of

ADDR = "127.0.0.1"

# setting -> (value in the file, value as a flag, how it reads on the built config)
LAYERED: dict[str, tuple[Any, Any, Any]] = {
    "api_port": (7171, 7272, lambda c: c.api_port),
    "gossip_port": (7947, 7948, lambda c: c.gossip_port),
    "rpc_port": (7374, 7375, lambda c: c.rpc_port),
    "tier": ("edge", "cloud", lambda c: c.tier),
    "lb_ports": ("30000-30099", "30100-30199", lambda c: (c.lb_ports.start, c.lb_ports.stop - 1)),
    "lb_slots": (10, 20, lambda c: c.lb_slots),
    "home_grace": (3.0, 4.0, lambda c: c.home_grace),
    "repair_after": (11.0, 12.0, lambda c: c.repair_after),
    "recovery_wait": (6.0, 7.0, lambda c: c.recovery_wait),
    "probe_budget": (70000, 80000, lambda c: c.probe_budget.per_minute),
    "data_dir": ("/tmp/roam-file", "/tmp/roam-flag", lambda c: str(c.data_dir)),
    "token_file": ("/tmp/t-file", "/tmp/t-flag", lambda c: str(c.token_file)),
}
EXPECTED = {"lb_ports": lambda v: tuple(int(x) for x in v.split("-"))}


def toml_value(value: Any) -> str:
    return f'"{value}"' if isinstance(value, str) else str(value).lower() if isinstance(value, bool) else str(value)


def build(tmp_path: Path, file: dict[str, Any] | None = None, tables: str = "", **flags: Any) -> AgentConfig:
    path = None
    if file is not None or tables:
        path = tmp_path / "agent.toml"
        body = "".join(f"{k} = {toml_value(v)}\n" for k, v in (file or {}).items())
        path.write_text(body + tables)
    ns = {"name": "c1", "addr": ADDR, "config": str(path) if path else None, "join": [], **flags}
    return build_config(argparse.Namespace(**ns))


@pytest.mark.parametrize("key", sorted(LAYERED))
def test_flag_over_file_over_default(tmp_path: Path, key: str) -> None:
    file_value, flag_value, read = LAYERED[key]
    expect = EXPECTED.get(key, lambda v: v)
    default = read(build(tmp_path)) if key not in ("data_dir", "token_file") else None
    if key not in ("data_dir", "token_file"):
        assert default == read(AgentConfig(name="c1", addr=ADDR))  # the default is the dataclass's
    assert read(build(tmp_path, {key: file_value})) == expect(file_value)
    assert read(build(tmp_path, {key: file_value}, **{key: flag_value})) == expect(flag_value)


def test_capacity_flags_over_the_table_over_the_host(tmp_path: Path) -> None:
    host = Capacity.of_host()
    assert build(tmp_path).capacity == host
    table = '[capacity]\ncpu = 3\nmemory = "2Gi"\nslots = 5\n'
    assert build(tmp_path, tables=table).capacity == Capacity(cpu=3.0, memory=2 << 30, slots=5)
    flagged = build(tmp_path, tables=table, cpu=1.5, memory="1.5Gi", slots=7).capacity
    assert flagged == Capacity(cpu=1.5, memory=3 << 29, slots=7)


def test_kubernetes_flags_over_the_table(tmp_path: Path) -> None:
    table = '[kubernetes]\nkubeconfig = "/file/kubeconfig"\ncontext = "file-ctx"\nnamespace = "roam"\n'
    kube = build(tmp_path, tables=table, kubeconfig="/flag/kubeconfig", kube_context="flag-ctx").kubernetes
    assert (kube.kubeconfig, kube.context, kube.namespace) == ("/flag/kubeconfig", "flag-ctx", "roam")
    assert build(tmp_path, tables=table).kubernetes.context == "file-ctx"


def test_dwell_flag_over_the_triggers_table(tmp_path: Path) -> None:
    table = "[triggers]\nmin_dwell_s = 30\n"
    assert build(tmp_path, tables=table).thresholds.min_dwell_s == 30
    assert build(tmp_path, tables=table, dwell=5.0).thresholds.min_dwell_s == 5


def test_auto_migrate_flags_over_the_file(tmp_path: Path) -> None:
    assert build(tmp_path).auto_migrate is default_of("auto_migrate") is False
    assert build(tmp_path, {"auto_migrate": True}).auto_migrate is True
    assert build(tmp_path, {"auto_migrate": True}, no_auto_migrate=True).auto_migrate is False
    assert build(tmp_path, auto_migrate=True).auto_migrate is True


@pytest.mark.parametrize(("file", "tables", "named"), [
    ({"api_port": "7070"}, "", "--api-port"),
    ({"data_dir": 5}, "", "--data-dir"),
    ({"token_file": ["a"]}, "", "--token-file"),
    ({"tier": 3}, "", "--tier"),
    ({"lb_ports": 30000}, "", "--lb-ports"),
    ({"policy": "fastest"}, "", "policy"),
    ({"auto_migrate": "yes"}, "", "auto_migrate"),
    ({"home_grace": "soon"}, "", "--home-grace"),
    ({}, '[capacity]\ncpu = "many"\n', "--cpu"),
    ({}, "[capacity]\ncpu = 0\n", "--cpu"),
    ({}, '[capacity]\nmemory = "lots"\n', "--memory"),
    ({}, "[capacity]\nslots = -1\n", "--slots"),
    ({}, "[capacity]\ndisks = 2\n", "capacity: unknown key 'disks'"),
    ({}, "[kubernetes]\nnamespace = 7\n", "kubernetes.namespace"),
    ({}, "[kubernetes]\nzone = 'a'\n", "kubernetes: unknown key 'zone'"),
    ({}, '[triggers]\nmin_dwell_s = "long"\n', "triggers.min_dwell_s"),
    ({"join": [1]}, "", "--join"),
    ({"colour": "blue"}, "", "--config: unknown key 'colour'"),
])
def test_bad_values_are_one_line_naming_the_setting(tmp_path: Path, file: dict[str, Any], tables: str,
                                                     named: str) -> None:
    with pytest.raises(ConfigError) as caught:
        build(tmp_path, file, tables)
    message = str(caught.value)
    assert message.startswith(named) and "\n" not in message
