"""What an agent says about itself in Serf tags, and how peers read it back. No I/O.

Serf gives all tags together 512 bytes (msgpack-encoded), so the load summary is a short
comma-separated string rather than one tag per figure.
"""
from __future__ import annotations

import math
from dataclasses import dataclass


from peer.errors import InvalidKind
from peer.packing import packb

TAG_LIMIT = 512
ACC_HEADROOM = 96  # bytes kept free for the load tag to grow when the accept-from list is gossiped
PROTOCOL = "1"


class TagError(InvalidKind, ValueError):
    """Tags are malformed or would exceed Serf's 512-byte limit."""


@dataclass(frozen=True)
class Load:
    """Capacity and declared use of one cluster: what placement and admission weigh."""

    cpu_capacity: float
    cpu_used: float
    mem_capacity: int  # MiB
    mem_used: int  # MiB
    slots_capacity: int
    slots_used: int
    bandwidth_mbps: float | None = None

    def as_dict(self) -> dict[str, float | int | None]:
        return {
            "cpu_capacity": self.cpu_capacity,
            "cpu_used": self.cpu_used,
            "mem_capacity_mib": self.mem_capacity,
            "mem_used_mib": self.mem_used,
            "slots_capacity": self.slots_capacity,
            "slots_used": self.slots_used,
            "bandwidth_mbps": self.bandwidth_mbps,
        }


def _num(x: float) -> str:
    text = f"{x:.2f}".rstrip("0").rstrip(".")
    return text or "0"


def encode_load(load: Load) -> str:
    parts = [
        _num(load.cpu_capacity), _num(load.cpu_used), str(load.mem_capacity), str(load.mem_used),
        str(load.slots_capacity), str(load.slots_used),
    ]
    if load.bandwidth_mbps is not None:
        parts.append(_num(load.bandwidth_mbps))
    return ",".join(parts)


def decode_load(text: str) -> Load:
    parts = text.split(",")
    if len(parts) not in (6, 7):
        raise TagError(f"load tag: expected 6 or 7 fields, got {len(parts)}")
    try:
        cpu_cap, cpu_used = float(parts[0]), float(parts[1])
        mem_cap, mem_used, slots_cap, slots_used = (int(p) for p in parts[2:6])
        bw = float(parts[6]) if len(parts) == 7 else None
    except ValueError as exc:
        raise TagError(f"load tag: non-numeric field in {text!r}") from exc
    values = [cpu_cap, cpu_used] + ([bw] if bw is not None else [])
    if any(not math.isfinite(v) or v < 0 for v in values) or min(mem_cap, mem_used, slots_cap, slots_used) < 0:
        raise TagError(f"load tag: negative or non-finite field in {text!r}")
    return Load(cpu_cap, cpu_used, mem_cap, mem_used, slots_cap, slots_used, bw)


@dataclass(frozen=True)
class SelfTags:
    tier: str
    api_port: int
    load: Load
    scheme: str = "http"
    draining: bool = False  # `drain` tag: peers' placement never chooses a draining cluster
    accepts: frozenset[str] | None = None  # `acc` tag: its accept-from policy, when it fits
    peer_port: int | None = None  # `pp` tag: the mTLS peer listener (automatic identity, peer.trust.auto)
    ca: bool = False  # `ca` tag: this cluster keeps the automatic federation CA (it signs joins)
    ca_id: str | None = None  # `cid` tag: which automatic CA this cluster's certificate is from (peer.trust.keepers)

    def encode(self) -> dict[str, str]:
        tags = {"roam": PROTOCOL, "tier": self.tier, "api": str(self.api_port), "ld": encode_load(self.load)}
        if self.scheme != "http":
            tags["tls"] = "1"
        if self.draining:
            tags["drain"] = "1"
        if self.peer_port is not None:
            tags["pp"] = str(self.peer_port)
        if self.ca:
            tags["ca"] = "1"
        if self.ca_id is not None:
            tags["cid"] = self.ca_id
        if self.accepts is not None:
            with_acc = {**tags, "acc": ",".join(sorted(self.accepts))}
            # A long list that does not fit is left out: peers then learn it from refusals.
            if len(packb(with_acc)) <= TAG_LIMIT - ACC_HEADROOM:
                tags = with_acc
        size = len(packb(tags))
        if size > TAG_LIMIT:
            raise TagError(f"tags take {size} bytes, over Serf's {TAG_LIMIT}-byte limit")
        return tags


@dataclass(frozen=True)
class PeerTags:
    """A peer's tags as read back; fields are None when a tag is missing or malformed."""

    tier: str | None
    api_port: int | None
    load: Load | None
    scheme: str
    accepts: frozenset[str] | None = None
    peer_port: int | None = None
    ca: bool = False
    ca_id: str | None = None


def decode_accepts(text: str | None) -> frozenset[str] | None:
    """The `acc` tag: None (no tag: any home, as far as gossip says), else the homes accepted."""
    if text is None:
        return None
    return frozenset(p for p in text.split(",") if p)


def decode_tags(tags: dict[str, str]) -> PeerTags:
    api = tags.get("api", "")
    load: Load | None
    try:
        load = decode_load(tags["ld"]) if "ld" in tags else None
    except TagError:
        load = None
    return PeerTags(
        tier=tags.get("tier"),
        api_port=_port_of(api),
        load=load,
        scheme="https" if tags.get("tls") == "1" else "http",
        accepts=decode_accepts(tags.get("acc")),
        peer_port=_port_of(tags.get("pp", "")),
        ca=tags.get("ca") == "1",
        ca_id=tags.get("cid") or None,
    )


def _port_of(text: str) -> int | None:
    return int(text) if text.isdigit() and 0 < int(text) < 65536 else None


def meaningful_change(old: Load | None, new: Load) -> bool:
    """Worth a gossip round: any slot/capacity change, or CPU/memory use moving by 5%+ of capacity."""
    if old is None:
        return True
    if (old.slots_used, old.slots_capacity, old.cpu_capacity, old.mem_capacity) != (
        new.slots_used, new.slots_capacity, new.cpu_capacity, new.mem_capacity
    ):
        return True
    if abs(old.cpu_used - new.cpu_used) >= 0.05 * max(new.cpu_capacity, 1e-9):
        return True
    if abs(old.mem_used - new.mem_used) >= 0.05 * max(new.mem_capacity, 1):
        return True
    old_bw, new_bw = old.bandwidth_mbps, new.bandwidth_mbps
    if (old_bw is None) != (new_bw is None):
        return True
    if old_bw is not None and new_bw is not None and abs(old_bw - new_bw) >= 0.1 * max(old_bw, 1.0):
        return True
    return False
