"""Names of everything a testbed creates, derived from one prefix.

One place decides them so setup, teardown, crash cleanup and the leftover probe all agree,
and so one prefix's cleanup never touches another prefix's testbed ("roam" vs "roamt").
"""
from __future__ import annotations

import re

IFNAMSIZ = 15  # Linux interface names are at most 15 characters
MARKER_ENV = "ROAM_CHAOS_TESTBED"  # set in every spawned process's environment: value = prefix
COMMENT_TAG = "roam-chaos"

_PREFIX_RE = re.compile(r"^[a-z][a-z0-9]{0,9}$")


def check_prefix(prefix: str) -> str:
    """Prefixes are short lowercase words: they must fit inside interface names."""
    if not _PREFIX_RE.match(prefix):
        raise ValueError(f"prefix {prefix!r}: want 1-10 chars [a-z0-9], starting with a letter")
    return prefix


def netns_name(prefix: str, node: str) -> str:
    return f"{prefix}-{node}"


def bridge_name(prefix: str) -> str:
    return f"{prefix}br0"


def veth_name(prefix: str, tag: str) -> str:
    """Host side of a node's veth pair; `tag` is the node's index, or "c" for the client."""
    name = f"{prefix}-h{tag}"
    if len(name) > IFNAMSIZ:
        raise ValueError(f"interface name {name!r} longer than {IFNAMSIZ} characters")
    return name


def rule_comment(prefix: str) -> str:
    """The iptables comment every rule of this testbed carries (`-m comment --comment`)."""
    return f"{COMMENT_TAG}:{prefix}"


def is_our_netns(prefix: str, name: str) -> bool:
    return name.startswith(f"{prefix}-")


def is_our_link(prefix: str, name: str) -> bool:
    return name == bridge_name(prefix) or name.startswith(f"{prefix}-")
