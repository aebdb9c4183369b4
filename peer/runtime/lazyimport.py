"""Modules loaded on first use (issue 18: an idle agent's memory).

`cryptography` costs an agent about 8.5 MB of RSS on import, and only clusters that run with
TLS identities, enrol others or act as a CA ever touch it. The trust modules bind its modules
through `lazy`, so the import happens on the first attribute read, in whatever code path
needs it; type checkers see the ordinary imports (`if TYPE_CHECKING`).
"""
from __future__ import annotations

import importlib
import sys
from types import ModuleType
from typing import Any


class _LazyModule(ModuleType):
    """Stands for a module until an attribute is read: then imports it (the ordinary way, so
    sys.modules holds the real module) and takes its namespace over."""

    def __getattr__(self, attr: str) -> Any:
        real = importlib.import_module(self.__name__)
        self.__dict__.update(real.__dict__)
        return getattr(real, attr)


def lazy(name: str) -> ModuleType:
    """`name` as a module imported on the first attribute read (already imported: the module
    itself). Nothing is looked up now: a misspelt name fails at that first read."""
    if name in sys.modules:
        return sys.modules[name]
    return _LazyModule(name)
