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
def lean_imports() -> Iterator[None]:
    """Import aiohttp (and whatever imports it) inside this block to spare the daemon two
    tables it never reads: about 2.5 MB of RSS (issue 18's memory).

    - The public CA bundle. aiohttp builds two default TLS client contexts when it is
      imported, and each loads the system's CA file (about 140 certificates, parsed and kept
      by OpenSSL, ~2 MB). The agent never uses them: peer calls are plain HTTP or go through
      the identity's own contexts (peer.trust.identity), and the Kubernetes client brings its
      own. OpenSSL reads the file's path from SSL_CERT_FILE when a context loads its defaults,
      so pointing it at an empty file for the import leaves those two contexts with the CA
      directory only (SSL_CERT_DIR, looked up per certificate when one is verified, so a
      public https URL still verifies where the system keeps a hashed directory).
    - The system's MIME table. aiohttp.web builds a MimeTypes at import, which reads
      /etc/mime.types (~1,500 types, ~0.4 MB); the dashboard names its own types (peer.ui)
      and nothing else in the agent guesses one, so Python's built-in table is enough.
    - The C++ runtime. frozenlist's compiled FrozenList is C++, the only one the agent loads,
      so importing it maps libstdc++ (~1.1 MB resident) and its start-up work: ~1.3 MB of
      RSS for the lists aiohttp freezes at start-up (signals, middlewares) and walks a few
      times a request. frozenlist ships the same class in Python (FROZENLIST_NO_EXTENSIONS,
      the reference its tests run against); one Python-level `__iter__` more per signal sent
      costs well under a microsecond.

    All are put back afterwards: contexts made later load the CA file as usual, and the
    services the agent starts inherit its environment unchanged.
    """
    import mimetypes

    saved = {name: os.environ.get(name) for name in _LEAN_ENV}
    known = mimetypes.knownfiles
    os.environ.update(_LEAN_ENV)
    mimetypes.knownfiles = []
    try:
        yield
    finally:
        mimetypes.knownfiles = known
        for name, before in saved.items():
            if before is None:
                del os.environ[name]
            else:
                os.environ[name] = before


#: What `lean_imports` sets for the imports inside it (read by OpenSSL and frozenlist).
_LEAN_ENV = {"SSL_CERT_FILE": os.devnull, "FROZENLIST_NO_EXTENSIONS": "1"}
