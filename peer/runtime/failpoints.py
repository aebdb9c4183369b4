"""Failpoints: named places where a test can make the agent crash, as FoundationDB and TiKV do.

`ROAM_FAILPOINTS=migration.after_reroute=exit,...` makes the agent `os._exit(137)` there (a
SIGKILL as far as anyone can tell); `NAME=fail` raises the error the call site names for that
point (e.g. a failed HAProxy reroute), so the error paths run with real components too.
Unset in production; costs one dict lookup per point.
"""
from __future__ import annotations

import logging
import os
from collections.abc import Callable

log = logging.getLogger(__name__)


def _parse(text: str) -> dict[str, str]:
    points: dict[str, str] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        name, _, action = item.partition("=")
        points[name] = action or "exit"
    return points


_POINTS = _parse(os.environ.get("ROAM_FAILPOINTS", ""))


def hit(name: str, *, fail: Callable[[], BaseException] | None = None) -> None:
    action = _POINTS.get(name)
    if action == "fail" and fail is not None:
        log.warning("failpoint %s: failing", name)
        raise fail()
    if action == "exit":
        log.critical("failpoint %s: exiting", name)
        logging.shutdown()
        os._exit(137)
