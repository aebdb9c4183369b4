"""Shared fixtures. Integration tests start real serf, haproxy and processes on loopback addresses."""
from __future__ import annotations

import shutil

import pytest


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    missing = [b for b in ("serf", "haproxy") if shutil.which(b) is None]
    if missing:
        # Not a skip: the suite must not pass silently without the real components.
        raise pytest.UsageError(f"missing binaries {missing}: run `make test`, which installs them")
