"""Hypothesis strategies for clocks and records, and a generator of reachable histories."""
from __future__ import annotations

from dataclasses import replace

from hypothesis import strategies as st

from peer.records.merge import local_write, reconcile
from peer.records.naming import incarnation_order
from peer.records.record import Record, State, tombstone_of
from peer.records.vclock import Entry, VClock

CLUSTERS = ("a", "b", "c", "d")

clusters = st.sampled_from(CLUSTERS)


@st.composite
def clocks(draw: st.DrawFn, *, max_counter: int = 5) -> VClock:
    counters = draw(st.dictionaries(clusters, st.integers(1, max_counter), max_size=len(CLUSTERS)))
    # Timestamps follow the counter (one write per (node, counter)), as in a real history.
    return VClock(tuple(Entry(n, c, 1000.0 + c) for n, c in sorted(counters.items())))


addrs = st.builds(lambda h, p: f"127.0.0.{h}:{p}", st.integers(1, 9), st.integers(1, 65535))


@st.composite
def records(draw: st.DrawFn, *, name: str | None = None) -> Record:
    """Arbitrary (not necessarily reachable) records."""
    return Record(
        name=name or draw(st.sampled_from(["web", "db-1", "classifier"])),
        home=draw(clusters),
        location=draw(clusters),
        state=draw(st.sampled_from(list(State))),
        digest=draw(st.sampled_from(["d1", "d2"])),
        descriptor=draw(st.binary(max_size=20)),
        instance=draw(st.none() | addrs),
        endpoint=draw(st.none() | addrs),
        migration_id=draw(st.none() | st.sampled_from(["m1", "m2"])),
        vclock=draw(clocks()),
        written=draw(clocks()),
        tombstone=draw(st.booleans()),
        updated_at=draw(st.floats(0, 2e9, allow_nan=False)),
        state_version=draw(st.none() | st.integers(0, 2**40)),
        standbys=draw(standby_sets()),
    )


@st.composite
def full_records(draw: st.DrawFn) -> Record:
    """`records()` with every optional field drawn too: a home set with its endpoints, the
    replaced incarnations, author signatures and stamps (the shapes the wire and the store carry)."""
    r = draw(records())
    homes = draw(st.sampled_from([(), (r.home,), (r.home, *sorted({"a", "b", "c"} - {r.home})[:1])]))
    endpoints = tuple(sorted((c, draw(addrs)) for c in draw(st.lists(clusters, unique=True, max_size=2))))
    signed = draw(st.booleans())
    stamps = tuple((e.node, draw(st.binary(min_size=1, max_size=16)), draw(st.binary(min_size=1, max_size=8)))
                   for e in r.vclock.entries if draw(st.booleans())) if signed else ()
    return replace(r, homes=homes, endpoints=endpoints, epoch=draw(st.integers(0, 3)),
                   incarnation=draw(st.sampled_from(["", "5-ab-0", "1700000000000-0f3a-12"])),
                   replaces=tuple(draw(st.lists(st.sampled_from(["1-x-0", "2-y-1"]), unique=True, max_size=2))),
                   writer=draw(st.sampled_from(["a", "b~9f"])) if signed else None,
                   signature=draw(st.binary(min_size=1, max_size=8)) if signed else b"", stamps=stamps)


@st.composite
def standby_sets(draw: st.DrawFn, *, exclude: str | None = None) -> tuple[tuple[str, str], ...]:
    """(cluster, "ip:port") of warm copies: distinct clusters, sorted, never `exclude`."""
    chosen = draw(st.lists(clusters.filter(lambda c: c != exclude), unique=True, max_size=2))
    return tuple(sorted((c, draw(addrs)) for c in chosen))


def new_content(previous: Record | None, *, here: str, location: str, state: State, instance: str | None,
                name: str = "svc", ident: str | None = None) -> Record:
    """What a cluster writes: keeps the home of a live record, creates (home = here) otherwise: a
    new incarnation whose stamp is above the one it knew (deterministic, for Hypothesis; `ident`
    stands for the random part, which a rebuilt data dir draws anew)."""
    if previous is None or previous.tombstone:
        stamp = incarnation_order(previous.incarnation)[0] + 1 if previous is not None else 1
        return Record(name=name, home=here, location=location, state=state, digest="d", descriptor=b"x",
                      instance=instance, incarnation=f"{stamp}-{ident or here}")
    return replace(previous, location=location, state=state, instance=instance)


@st.composite
def histories(draw: st.DrawFn, *, steps: int = 14) -> list[Record]:
    """Every version that existed in a random run of local writes, deletes, home-set changes,
    deliveries between replicas and site losses (a replica back on an empty disk writes under
    a new clock actor, as RecordStore gives it): reachable states, on which the merge laws
    must hold."""
    replicas: dict[str, Record | None] = {c: None for c in CLUSTERS}
    actors = {c: c for c in CLUSTERS}
    seen: list[Record] = []
    now = 1000.0
    for step in range(draw(st.integers(1, steps))):
        now += 1.0
        kind = draw(st.sampled_from(["write", "write", "delete", "deliver", "deliver", "homes", "wipe",
                                     "standby"]))
        here = draw(clusters)
        previous = replicas[here]
        if kind == "write":
            content = new_content(previous, here=here, location=draw(clusters),
                                  state=draw(st.sampled_from([State.RUNNING, State.MIGRATING])),
                                  instance=draw(st.none() | addrs), ident=actors[here])
            replicas[here] = local_write(previous, content, here=here, now=now, actor=actors[here])
        elif kind == "delete" and previous is not None and not previous.tombstone:
            replicas[here] = local_write(previous, tombstone_of(previous), here=here, now=now, actor=actors[here])
        elif kind == "homes" and previous is not None and not previous.tombstone:
            other = draw(clusters)
            entries = previous.entries
            homes = tuple(e for e in entries if e != other) if other in entries[1:] else (
                entries if other in entries else (*entries, other))
            replicas[here] = local_write(previous, replace(previous, homes=homes), here=here, now=now,
                                         actor=actors[here])
        elif kind == "standby" and previous is not None and not previous.tombstone:
            standbys = draw(standby_sets(exclude=previous.location))
            replicas[here] = local_write(previous, replace(previous, standbys=standbys), here=here, now=now,
                                         actor=actors[here])
        elif kind == "wipe":
            replicas[here] = None
            actors[here] = f"{here}~{step}"
        elif kind == "deliver":
            source = replicas[draw(clusters)]
            if source is not None:
                replicas[here] = reconcile(previous, source, here=here).result
        current = replicas[here]
        if current is not None:
            seen.append(current)
    return seen or [local_write(None, new_content(None, here="a", location="a", state=State.RUNNING,
                                                   instance=None), here="a", now=now)]
