"""Both drivers satisfy the Driver protocol (checked by mypy here, and at runtime)."""
from __future__ import annotations

from pathlib import Path

from peer.drivers.base import Driver
from peer.drivers.kubernetes import KubernetesDriver
from peer.drivers.process import ProcessDriver


def test_drivers_implement_the_protocol(tmp_path: Path) -> None:
    drivers: list[Driver] = [
        ProcessDriver(data_dir=tmp_path, host="127.0.4.1", port_range=range(41000, 41001)),
        KubernetesDriver(cluster="k1"),
    ]
    assert [d.name for d in drivers if isinstance(d, Driver)] == ["process", "kubernetes"]
