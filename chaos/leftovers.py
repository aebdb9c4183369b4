"""Probing the machine for anything a testbed left behind: namespaces, links, bridges,
iptables rules carrying the testbed's comment, and processes still alive.

Read-only: `chaos.netns.cleanup_leftovers` removes what this finds.
"""
from __future__ import annotations

import json
import os
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from chaos import naming
from chaos.commands import run_cmd_sync
from chaos.errors import CommandError

PROC = Path("/proc")


@dataclass(frozen=True)
class ProcInfo:
    pid: int
    pgid: int
    state: str  # one letter from /proc/PID/stat; "Z" is a zombie


@dataclass
class Leftovers:
    namespaces: list[str] = field(default_factory=list)
    links: list[str] = field(default_factory=list)
    iptables_rules: list[str] = field(default_factory=list)
    processes: list[str] = field(default_factory=list)

    @property
    def empty(self) -> bool:
        return not (self.namespaces or self.links or self.iptables_rules or self.processes)

    def as_dict(self) -> dict[str, list[str]]:
        return asdict(self)


def list_netns(prefix: str) -> list[str]:
    res = run_cmd_sync(["ip", "-j", "netns", "list"], check=False)
    if not res.ok or not res.stdout.strip():
        return []
    names = [entry["name"] for entry in json.loads(res.stdout)]
    return sorted(n for n in names if naming.is_our_netns(prefix, n))


def list_links(prefix: str) -> list[str]:
    res = run_cmd_sync(["ip", "-j", "link", "show"])
    names = [entry["ifname"] for entry in json.loads(res.stdout or "[]")]
    return sorted(n for n in names if naming.is_our_link(prefix, n))


def netns_pids(netns: str) -> list[int]:
    res = run_cmd_sync(["ip", "netns", "pids", netns], check=False)
    return [int(tok) for tok in res.stdout.split()] if res.ok else []


def tagged_rules(prefix: str, netns: str | None = None) -> list[str]:
    """`iptables -S` lines (filter table) carrying this prefix's comment, root ns or `netns`."""
    argv = ["iptables", "-w", "-S"]
    if netns is not None:
        argv = ["ip", "netns", "exec", netns, *argv]
    try:
        res = run_cmd_sync(argv)
    except CommandError:
        return []
    tag = naming.rule_comment(prefix)
    return [line for line in res.stdout.splitlines() if tag in line]


def read_proc(pid: int) -> ProcInfo | None:
    try:
        raw = (PROC / str(pid) / "stat").read_text()
    except OSError:
        return None
    # comm may contain spaces and parentheses: fields start after the last ')'
    rest = raw[raw.rindex(")") + 2:].split()
    return ProcInfo(pid=pid, state=rest[0], pgid=int(rest[2]))


def all_procs() -> list[ProcInfo]:
    infos = []
    for entry in PROC.iterdir():
        if entry.name.isdigit():
            info = read_proc(int(entry.name))
            if info is not None:
                infos.append(info)
    return infos


def live_in_groups(pgids: Iterable[int]) -> list[ProcInfo]:
    """Non-zombie processes whose process group is one of `pgids`."""
    wanted = set(pgids)
    if not wanted:
        return []
    return [p for p in all_procs() if p.pgid in wanted and p.state != "Z"]


def marked_pids(prefix: str) -> list[int]:
    """Live processes whose environment carries the testbed marker for `prefix`.

    Catches children that left their process group and namespaces already deleted.
    """
    marker = f"{naming.MARKER_ENV}={prefix}".encode()
    me = os.getpid()
    found = []
    for entry in PROC.iterdir():
        if not entry.name.isdigit() or int(entry.name) == me:
            continue
        try:
            env = (entry / "environ").read_bytes()
        except OSError:
            continue
        if marker in env.split(b"\0"):
            found.append(int(entry.name))
    return sorted(found)


def describe_pid(pid: int) -> str:
    try:
        cmd = (PROC / str(pid) / "cmdline").read_bytes().replace(b"\0", b" ").decode().strip()
    except OSError:
        cmd = "?"
    return f"{pid} {cmd}"


def probe(prefix: str, *, pgids: Iterable[int] = ()) -> Leftovers:
    """Everything with `prefix` still on the machine, plus live members of `pgids`."""
    namespaces = list_netns(prefix)
    rules = tagged_rules(prefix)
    pids: set[int] = {p.pid for p in live_in_groups(pgids)} | set(marked_pids(prefix))
    for ns in namespaces:
        rules += [f"[{ns}] {r}" for r in tagged_rules(prefix, ns)]
        pids.update(netns_pids(ns))
    pids = {p for p in pids if (info := read_proc(p)) is not None and info.state != "Z"}
    return Leftovers(
        namespaces=namespaces,
        links=list_links(prefix),
        iptables_rules=rules,
        processes=[describe_pid(p) for p in sorted(pids)],
    )
