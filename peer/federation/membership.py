"""The agent's always-current view of the federation, built from Serf. No I/O.

Fed by the Serf event stream (joins, leaves, failures, tag updates) and by a cheap `members`
poll, because Serf coalesces member events for about a second after `members` already shows
a failure (measured on Serf 0.9.4 here). Both paths go through `observe`, so the view cannot disagree with
itself.
"""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import Protocol

from lb.hostport import join_hostport
from peer.federation.tags import Load, decode_accepts, decode_tags

STATUSES = ("alive", "leaving", "left", "failed")


class SerfMemberLike(Protocol):
    @property
    def name(self) -> str: ...
    @property
    def addr(self) -> str: ...
    @property
    def port(self) -> int: ...
    @property
    def tags(self) -> dict[str, str]: ...
    @property
    def status(self) -> str: ...


@dataclass(frozen=True)
class MemberView:
    name: str
    addr: str
    gossip_port: int
    status: str
    tier: str | None
    api_port: int | None
    scheme: str
    load: Load | None
    tags: dict[str, str]
    rtt_ms: float | None
    since: float  # when `status` was last entered (monotonic seconds)
    peer_port: int | None = None  # its mTLS peer listener (`pp` tag), automatic identity
    keeps_ca: bool = False  # `ca` tag: it keeps the automatic federation CA
    ca_id: str | None = None  # `cid` tag: the automatic CA its certificate is from

    @property
    def peer_url(self) -> str | None:
        """Where its peer API is: the mTLS listener when it has one, else the admin port."""
        if self.peer_port is not None:
            return f"https://{join_hostport(self.addr, self.peer_port)}"
        return self.api_url

    @property
    def api_url(self) -> str | None:
        if self.api_port is None:
            return None
        return f"{self.scheme}://{join_hostport(self.addr, self.api_port)}"

    def as_api(self) -> dict[str, object]:
        return {
            "name": self.name,
            "status": self.status,
            "addr": self.addr,
            "api": self.api_url,
            "peer": self.peer_url,
            "tier": self.tier,
            "load": self.load.as_dict() if self.load else {},
            "rtt_ms": None if self.rtt_ms is None else round(self.rtt_ms, 3),
            "accept_from": None if "acc" not in self.tags else sorted(decode_accepts(self.tags["acc"]) or ()),
        }


@dataclass(frozen=True)
class StatusChange:
    name: str
    old: str | None  # None: first seen
    new: str


class Membership:
    def __init__(self, here: str) -> None:
        self.here = here
        self._members: dict[str, MemberView] = {}

    def observe(self, members: Iterable[SerfMemberLike], *, now: float, full: bool = False) -> list[StatusChange]:
        """Merge what Serf reports. `full` means this is the whole member list (a poll)."""
        changes: list[StatusChange] = []
        seen: set[str] = set()
        for m in members:
            seen.add(m.name)
            status = m.status if m.status in STATUSES else "failed"
            old = self._members.get(m.name)
            peer = decode_tags(dict(m.tags))
            since = old.since if old is not None and old.status == status else now
            self._members[m.name] = MemberView(
                name=m.name, addr=m.addr, gossip_port=m.port, status=status, tier=peer.tier,
                api_port=peer.api_port, scheme=peer.scheme, load=peer.load, tags=dict(m.tags),
                rtt_ms=old.rtt_ms if old else None, since=since, peer_port=peer.peer_port, keeps_ca=peer.ca, ca_id=peer.ca_id,
            )
            if old is None or old.status != status:
                changes.append(StatusChange(m.name, old.status if old else None, status))
        if full:
            # Serf forgets reaped members; a member we knew and Serf no longer lists has left for good.
            for name in list(self._members):
                if name not in seen and self._members[name].status != "left":
                    old_status = self._members[name].status
                    self._members[name] = replace(self._members[name], status="left", since=now)
                    changes.append(StatusChange(name, old_status, "left"))
        return changes

    def set_rtt(self, name: str, rtt_ms: float | None) -> None:
        if name in self._members:
            self._members[name] = replace(self._members[name], rtt_ms=rtt_ms)

    def get(self, name: str) -> MemberView | None:
        return self._members.get(name)

    def all(self) -> list[MemberView]:
        return sorted(self._members.values(), key=lambda m: m.name)

    def alive(self) -> list[MemberView]:
        return [m for m in self.all() if m.status == "alive"]

    def counts(self) -> dict[str, int]:
        out = {s: 0 for s in STATUSES}
        for m in self._members.values():
            out[m.status] = out.get(m.status, 0) + 1
        return out

    def rejoin_targets(self) -> list[str]:
        """Peers that failed (not left on purpose): the agent re-joins them itself after a heal."""
        return [f"{m.addr}:{m.gossip_port}" for m in self.all() if m.status == "failed" and m.name != self.here]
