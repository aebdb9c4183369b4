"""`host:port` written and read one way everywhere: an IPv6 host goes in brackets.

It lives in `lb` because the lowest layer needs it (HAProxy's runtime API speaks `ip:port`);
`peer` and `chaos` import it from here rather than keep their own.
"""
from __future__ import annotations


def bracket(host: str) -> str:
    """The host as it appears before `:port` or in a URL: `::1` -> `[::1]`."""
    return f"[{host}]" if ":" in host else host


def join_hostport(host: str, port: int) -> str:
    """(`::1`, 80) -> `[::1]:80`; (`1.2.3.4`, 80) -> `1.2.3.4:80`."""
    return f"{bracket(host)}:{port}"


def split_hostport(value: str) -> tuple[str, int]:
    """`1.2.3.4:80` or `[::1]:80` -> (ip, port); an empty port reads 0 (HAProxy's state dump
    leaves it empty for a server without an address). A port that is not a number raises
    ValueError."""
    host, _, port = value.rpartition(":")
    return host.strip("[]"), int(port) if port else 0
