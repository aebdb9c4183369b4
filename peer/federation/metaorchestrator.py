"""Adapter from the agent's gossiped view to the embedded placement function (the paper's MO).

The placing cluster's own figures are taken live (not from its last gossip), so two
placements in a row from the same cluster see the first one's effect at once.
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping

from peer.drivers.descriptor import ServiceDescriptor
from peer.federation.tags import Load, decode_accepts
from peer.federation.membership import MemberView
from placement import ClusterView, Requirements

MIB = 1 << 20


def requirements(descriptor: ServiceDescriptor, *, avoid: Iterable[str] = (), home: str | None = None) -> Requirements:
    return Requirements(
        cpu=descriptor.cpu_cores * descriptor.replicas,
        memory=descriptor.memory_bytes * descriptor.replicas,
        tiers=frozenset(descriptor.constraints.tiers),
        avoid=frozenset(avoid),
        home=home,
    )


def view_of(member: MemberView, *, load: Load | None = None, accepting: bool = True,
            bandwidth_mbps: float | None = None) -> ClusterView:
    load = load or member.load
    bw = bandwidth_mbps if bandwidth_mbps is not None else (load.bandwidth_mbps if load else None)
    if load is None:
        return ClusterView(name=member.name, alive=False, tier=member.tier or "", cpu_capacity=0, cpu_used=0,
                           mem_capacity=0, mem_used=0, slots_capacity=0, slots_used=0)
    return ClusterView(
        name=member.name,
        alive=member.status == "alive",
        tier=member.tier or "",
        cpu_capacity=load.cpu_capacity,
        cpu_used=load.cpu_used,
        mem_capacity=load.mem_capacity * MIB,
        mem_used=load.mem_used * MIB,
        slots_capacity=load.slots_capacity,
        slots_used=load.slots_used,
        rtt_ms=member.rtt_ms,
        bandwidth_mbps=bw,
        accepting=accepting and member.tags.get("drain") != "1",
        accepts_homes=decode_accepts(member.tags.get("acc")),
    )


def views(members: Iterable[MemberView], *, here: str, own_load: Load, accepting: bool,
          bandwidth: Mapping[str, float] | None = None) -> dict[str, ClusterView]:
    out: dict[str, ClusterView] = {}
    for m in members:
        bw = (bandwidth or {}).get(m.name)
        if m.name == here:
            out[m.name] = view_of(m, load=own_load, accepting=accepting, bandwidth_mbps=bw)
        else:
            out[m.name] = view_of(m, bandwidth_mbps=bw)
    return out
