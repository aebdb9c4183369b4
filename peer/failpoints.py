"""Failpoints: named places where a test can make the agent crash, as FoundationDB and TiKV do.

`ROAM_FAILPOINTS=migration.after_reroute=exit,...` makes the agent `os._exit(137)` there (a
SIGKILL as far as anyone can tell). Unset in production; costs one dict lookup per point.
"""
from __future__ import annotations

import logging
import os

log = logging.getLogger(__name__)


def _parse(text: str) -> dict[str, str]:
    points: dict[str, str] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        name, _, action = item.partition("=")
        points[name] = action or "exit"
    return points


_POINTS = _parse(os.environ.get("ROAM_FAILPOINTS", ""))


def hit(name: str) -> None:
    if _POINTS.get(name) == "exit":
        log.critical("failpoint %s: exiting", name)
        logging.shutdown()
        os._exit(137)
