"""Fixtures for the driver tests: process drivers on 127.0.4.x, a fake Kubernetes API server."""
from __future__ import annotations

import os
import signal
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from peer.drivers.descriptor import ServiceDescriptor
from peer.drivers.process import ProcessDriver
from peer.drivers.restarts import RestartPolicy
from tests.drivers.fake_kube import FakeKube

HOST = "127.0.4.1"
PORTS = range(41000, 41050)
KUBE_HOST = "127.0.4.2"


def classifier(name: str = "classifier", **extra: Any) -> ServiceDescriptor:
    return ServiceDescriptor.from_obj({
        "name": name, "port": 8080, "health": {"path": "/healthz"},
        "command": [sys.executable, "-m", "peer.samples.classifier", "--host", "{host}", "--port", "{port}"],
        **extra,
    })


class Events:
    """Collects on_event calls."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, str, str]] = []

    def __call__(self, name: str, kind: str, detail: str) -> None:
        self.seen.append((name, kind, detail))

    def kinds(self, name: str) -> list[str]:
        return [k for n, k, _ in self.seen if n == name]


@pytest.fixture
def events() -> Events:
    return Events()


@pytest.fixture
async def make_driver(tmp_path: Path, events: Events) -> AsyncIterator[Any]:
    """Build ProcessDrivers on one data dir; at teardown delete whatever still runs, kill leftovers."""
    drivers: list[ProcessDriver] = []

    async def make(**kwargs: Any) -> ProcessDriver:
        kwargs.setdefault("restart_policy", RestartPolicy(base=0.1, cap=1.0, stable_after=10.0, max_failures=5))
        driver = ProcessDriver(data_dir=tmp_path, host=HOST, port_range=PORTS, on_event=events, cluster="c1",
                               grace=2.0, **kwargs)
        await driver.start()
        drivers.append(driver)
        return driver

    yield make
    pids = set()
    for driver in drivers:
        for inst in await driver.list():
            if inst.pid:
                pids.add(inst.pid)
            await driver.delete(inst.name)
        await driver.stop()
    for pid in pids:  # a failing test must not leave a service running
        try:
            os.killpg(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


@pytest.fixture
def fake_kube(tmp_path: Path) -> Iterator[tuple[FakeKube, Path]]:
    fake = FakeKube()
    server = fake.serve(KUBE_HOST)
    try:
        yield fake, fake.kubeconfig(tmp_path / "kubeconfig", server)
    finally:
        fake.close()
