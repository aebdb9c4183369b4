"""The daemon behind `roam agent`, without click: its flags are parsed (peer.cli.agentcmd) and
click forgotten before the agent imports its runtime (peer.cli.main). Every start-up failure
is one line naming the flag or file."""
from __future__ import annotations

import asyncio
import logging
import os
import sqlite3
import sys

EXIT_USAGE = 2
EXIT_FAILURE = 1


def run_agent(args: object) -> int:
    from peer.config import ConfigError, build_config, check_binaries

    try:
        config = build_config(args)
        check_binaries(config)
    except ConfigError as exc:
        print(f"roam agent: {exc}", file=sys.stderr)
        return EXIT_USAGE
    # The cluster name comes from the flags or the --config file: known only now.
    logging.basicConfig(
        level=getattr(logging, str(getattr(args, "log_level", "INFO")).upper(), logging.INFO),
        format=f"%(asctime)s {config.name} %(name)s %(levelname)s %(message)s",
    )
    _path_with_own_scripts()
    from peer.runtime.lazyimport import lean_imports

    with lean_imports():  # aiohttp without the CA bundle and MIME table it would load unused
        from peer.agent import Agent
    _forget_overloads()
    from peer.runtime.credentials import CredentialError
    from peer.runtime.datadir import StartRefused
    from peer.records.store import StoreError
    from peer.trust.auto import EnrolmentError
    from peer.trust.identity import IdentityError

    try:
        import uvloop
        uvloop.install()
    except ImportError:  # pragma: no cover - uvloop is a dependency; run anyway on plain asyncio
        pass
    try:
        while asyncio.run(Agent(config).run_until_signalled()):  # True: start again (a lone founder yielded)
            logging.getLogger("peer.agent").warning("starting again to enrol at the federation's CA")
    except (CredentialError, IdentityError, EnrolmentError) as exc:
        print(f"roam agent: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except StartRefused as exc:  # another agent on this address, or a data dir we cannot make private
        print(f"roam agent: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    except StoreError as exc:  # its message starts with the file
        print(f"roam agent: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    except sqlite3.Error as exc:
        print(f"roam agent: {config.data_dir / 'records.sqlite3'}: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    except Exception as exc:  # noqa: BLE001 - one line, not a traceback, for start-up failures
        logging.getLogger("roam").debug("start failed", exc_info=True)
        print(f"roam agent: {type(exc).__name__}: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    return 0


def _path_with_own_scripts() -> None:
    """Let services find the console scripts installed beside roam (`roam-sample`) even when the
    agent runs from a venv that is not on PATH (systemd, a bare `.venv/bin/roam`). Appended, so
    `python3` and the like still mean what the host says."""
    own = os.path.dirname(sys.executable)
    parts = os.environ.get("PATH", "/usr/local/bin:/usr/bin:/bin").split(os.pathsep)
    if own not in parts:
        os.environ["PATH"] = os.pathsep.join([*parts, own])


def _forget_overloads() -> None:
    """Empty typing's registry of `@overload` stubs (typing.clear_overloads, Python 3.11): it
    keeps every stub of every module imported so far (click's, aiohttp's, cryptography's) for
    `typing.get_overloads`, which the daemon never calls, and with them the globals of click's
    modules, forgotten just before (peer.cli.main)."""
    import gc
    import typing

    typing.clear_overloads()
    gc.collect()

