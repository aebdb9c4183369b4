"""Modules loaded on first use, and loaded lean (issue 18: an idle agent's memory).

`cryptography` costs an agent about 8.5 MB of RSS on import, and only clusters that run with
TLS identities, enrol others or act as a CA ever touch it. The trust modules bind its modules
through `lazy`, so the import happens on the first attribute read, in whatever code path
needs it; type checkers see the ordinary imports (`if TYPE_CHECKING`).
"""
from __future__ import annotations

import contextlib
import importlib
import os
import sys
from collections.abc import Iterator
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


@contextlib.contextmanager
def without_ca_bundle() -> Iterator[None]:
    """Import aiohttp (and whatever imports it) inside this block to spare the daemon the
    public CA bundle: about 2 MB of RSS (issue 18's memory).

    aiohttp builds two default TLS client contexts when it is imported, and each loads the
    system's CA file (about 140 certificates, parsed and kept by OpenSSL). The agent never
    uses them: peer calls are plain HTTP or go through the identity's own contexts
    (peer.trust.identity), and the Kubernetes client brings its own. OpenSSL reads the file's
    path from SSL_CERT_FILE when a context loads its defaults, so pointing it at an empty file
    for the import leaves those two contexts with the CA directory only (SSL_CERT_DIR, looked
    up per certificate when one is verified, so a public https URL still verifies where the
    system keeps a hashed directory). The caller's value is put back afterwards, so the
    services the agent starts inherit its environment unchanged.
    """
    before = os.environ.get("SSL_CERT_FILE")
    os.environ["SSL_CERT_FILE"] = os.devnull
    try:
        yield
    finally:
        if before is None:
            del os.environ["SSL_CERT_FILE"]
        else:
            os.environ["SSL_CERT_FILE"] = before
