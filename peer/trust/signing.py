"""Author-signed record versions: what is signed, how stamps travel, when a version is refused.
Pure: signing and verifying are passed in (peer/trust/authorship.py holds the keys).

Only when the cluster runs with an identity (a key and a CA-issued certificate). Without one
no record carries a signature and nothing here runs (a named limit in the README).

What is signed
--------------
A *stamp* is a cluster's signature over `(incarnation, base name, actor, counter, digest)`:
"the write numbered `counter` of my clock actor `actor` on this service produced the content
whose digest is `digest`". `digest` (`body_digest`) hashes every field of the version but the
name's `@home` suffix (a concurrent creation is renamed `name@home` on every replica, the
content unchanged), `vclock` and the stamps: home, homes, location, state, descriptor,
instance, endpoints, standbys, epoch, tombstone, incarnation, replaces, `written`, `writer`,
`updated_at`... So one signature per local write, made by `sign_write` right after the store's
local write:

* `writer` is the actor whose counter that write incremented, `signature` its stamp over the
  content at `written[writer]`;
* every other entry `X:n` of `vclock` carries X's stamp for its write number n (`stamps`),
  copied from the version the write was made on.

A conflict resolution makes no write (merge.py): the merged clock takes, entry by entry, the
stamp of whichever side had the higher counter (`joined`; equal counters, the smaller
bytes: a join, so replicas still converge). A relayed version is the writer's bytes unchanged.

The rule a receiver applies (`refusal`)
--------------------------------------
Vector-clock entries can be advanced only by their own cluster: a version is taken only if its
content is signed by its writer's cluster AND every entry `X:n` of its clock carries a stamp
signed by X's cluster for write n. So a cluster that holds a valid certificate can write
versions of its own (that is its right, they name it) but cannot make one look like another
cluster's, nor lift another cluster's counter past that cluster's last signed write, which is
what would let a forged version dominate (replace) an honest one. A version that brings
nothing the receiver does not already hold is not re-checked: an entry below the receiver's
own counter (same incarnation) or at it with the same stamp, the content the receiver holds.
`written` must not exceed `vclock`. The clock's wall-time stamps are not signed (informational
only, vclock.py: they never decide an order).
A revoked cluster's stamps fail, so its new writes are refused everywhere; its history stays:
an entry a receiver already holds is not re-checked, and an entry the version's (unrevoked)
writer had seen when it wrote (its signed `written` covers it) is endorsed by that writer
(`endorsed`), so a record a revoked cluster once wrote still reaches members that never held
it once any other cluster wrote on top.
"""
from __future__ import annotations

import hashlib
from collections.abc import Callable, Collection
from dataclasses import dataclass, replace


from peer.packing import packb
from peer.records import vclock as vc
from peer.records.naming import base_name
from peer.records.record import Record, encode, with_vclock
from peer.trust.certs import cluster_of_peercert, serial_of_peercert

DIGEST_LEN = 16
DOMAIN = b"roam-record-stamp-v1\0"

Stamp = tuple[bytes, bytes]  # (digest, signature)
Sign = Callable[[bytes], bytes]  # this cluster's key over a message
Verify = Callable[[str, bytes, bytes], str | None]  # (cluster, message, signature) -> why refused, or None


@dataclass(frozen=True)
class Channel:
    """The cluster at the other end of the mTLS connection a batch of versions arrived on, as
    its certificate (verified against the federation CA in the handshake) names it, and that
    certificate's serial."""

    cluster: str
    serial: int


def channel_of(peercert: dict[str, object] | None) -> Channel | None:
    """The channel of a connection from its verified peer certificate (`getpeercert()`, empty
    unless the handshake verified it), or None (no TLS, no certificate, none naming a cluster)."""
    cluster, serial = cluster_of_peercert(peercert), serial_of_peercert(peercert)
    return None if cluster is None or serial is None else Channel(cluster, serial)


def vouches(channel: Channel | None, cluster: str, *, revoked: Callable[[int], bool],
            distrusted: Collection[str] = ()) -> bool:
    """Does the channel itself authenticate a stamp of `cluster` (no ECDSA check needed)? Only
    the cluster the channel's certificate names, while that serial is not revoked and that
    cluster has not sent a stamp that failed its later check (module docstring)."""
    return (channel is not None and channel.cluster == cluster and cluster not in distrusted
            and not revoked(channel.serial))


def taken_on_channel(remote: Record, vouch: Callable[[str], bool], held: Record | None = None) -> bool:
    """May `remote` be taken with no ECDSA check now (its stamps verified later, before it is
    relayed)? Only if its content's stamp is vouched for by the channel (`vouch`, see
    `vouches`) or is the very stamp the receiver holds (`held`, what it holds under that name),
    every entry of its clock is either vouched for or one `refusal` would not check (an entry
    the receiver's own counter wins, or the same stamp it holds), and it has
    every part of the shape `refusal` demands but the signatures themselves: a writer with an
    entry in `written`, `written` within `vclock`, stamps naming clock entries once each,
    sorted, and a stamp for every entry. Anything else goes through `refusal` as always (a
    relayed version, a malformed one)."""
    writer = remote.writer
    if writer is None or not remote.vclock.entries:
        return False
    counter = vc.get_counter(remote.written, writer)
    if counter < 1 or not vc.descends(remote.vclock, remote.written):
        return False
    actors = [stamp[0] for stamp in remote.stamps]
    if actors != sorted(set(actors)) or not set(actors) <= vc.nodes(remote.vclock):
        return False
    stamped = set(actors)
    if vc.get_counter(remote.vclock, writer) == counter:
        stamped.add(writer)
    if not all(entry.node in stamped for entry in remote.vclock.entries):
        return False
    same = held if held is not None and held.incarnation == remote.incarnation else None
    if not vouch(vc.cluster_of(writer)):  # the content's own stamp: the same one held, or checked
        if same is None or vc.get_counter(same.vclock, writer) != counter \
                or _stamp_at(same, writer, counter) != (body_digest(remote), remote.signature):
            return False
    for entry in remote.vclock.entries:
        if vouch(vc.cluster_of(entry.node)):
            continue
        if same is None:
            return False
        theirs = vc.get_counter(same.vclock, entry.node)
        if theirs > entry.counter:
            continue  # (the receiver's own entry wins the merge: `refusal` skips it)
        if theirs < entry.counter or _stamp_at(same, entry.node, theirs) != _stamp_at(remote, entry.node,
                                                                                   entry.counter):
            return False
    return True


def _stamp_at(record: Record, actor: str, counter: int) -> Stamp | None:
    """The stamp `record` carries for `actor`'s write `counter` (as `all_stamps` has it)."""
    if actor == record.writer and vc.get_counter(record.written, actor) == counter:
        return body_digest(record), record.signature
    for name, digest, signature in record.stamps:
        if name == actor:
            return digest, signature
    return None


def stamp_checks(record: Record) -> list[tuple[str, bytes, bytes]]:
    """(cluster, message, signature) of every stamp the version carries: what verifying it
    whole means (a version `taken_on_channel`, when it is audited)."""
    return [(vc.cluster_of(actor), stamp_message(record, actor, n, stamp[0]), stamp[1])
            for actor, (n, stamp) in all_stamps(record).items()]


class Refusal:
    """Why a version is refused: `kind` for the metric, `message` for the log."""

    def __init__(self, kind: str, message: str) -> None:
        self.kind = kind
        self.message = message

    def __repr__(self) -> str:
        return f"Refusal({self.kind!r}, {self.message!r})"


def body_digest(record: Record) -> bytes:
    """The digest a writer's stamp covers (see the module docstring for what is left out).
    Kept on the record once computed, like its packed bytes (record.pack): one version is
    checked, merged (its stamps pooled) and signed on top, each asking for it. It covers no
    clock, so it stays right on the copy `record.with_vclock` makes; any other change of a
    field builds a new Record (dataclasses.replace), which computes its own."""
    cached: bytes | None = record.__dict__.get(_BODY)
    if cached is None:
        body = encode(record)
        for key in ("vclock", "signature", "stamps"):
            body.pop(key, None)
        body["name"] = base_name(record.name)
        cached = hashlib.blake2b(packb(body, use_bin_type=True), digest_size=DIGEST_LEN).digest()
        record.__dict__[_BODY] = cached
    return cached


_BODY = "_body_digest"


def known_body_digest(record: Record) -> bytes | None:
    """`body_digest` if it was computed (or restored) for this object already, else None: what
    the store keeps beside the row (RecordStore), so the next read of the row need not hash
    the content again (a conflict's merge and a rebuilt clock-only answer each need one)."""
    known: bytes | None = record.__dict__.get(_BODY)
    return known


def restore_body_digest(record: Record, digest: bytes) -> None:
    """Give a record rebuilt from its stored row the `body_digest` kept beside that row (it
    was computed from the very content the row holds: `known_body_digest` when it was written)."""
    record.__dict__[_BODY] = digest


def stamp_message(record: Record, actor: str, counter: int, digest: bytes) -> bytes:
    """The bytes a stamp signs: one write of one actor on one incarnation of one service."""
    data: bytes = packb([record.incarnation, base_name(record.name), actor, counter, digest],
                                use_bin_type=True)
    return DOMAIN + data


def own_stamp(record: Record) -> tuple[str, int, Stamp] | None:
    """The entry the version's own signature vouches for: (writer, written[writer], stamp)."""
    if record.writer is None:
        return None
    return record.writer, vc.get_counter(record.written, record.writer), (body_digest(record), record.signature)


def all_stamps(record: Record, own: tuple[str, int, Stamp] | None = None) -> dict[str, tuple[int, Stamp]]:
    """actor -> (counter, stamp) for every entry of the clock that has one (`own`: the
    record's `own_stamp`, when the caller has it already: it hashes the whole content)."""
    counters = vc.counters(record.vclock)
    out = {actor: (counters.get(actor, 0), (digest, sig)) for actor, digest, sig in record.stamps}
    own = own if own is not None else own_stamp(record)
    if own is not None and counters.get(own[0]) == own[1]:
        out[own[0]] = (own[1], own[2])
    return out


def _normal(record: Record, stamps: dict[str, tuple[int, Stamp]]) -> tuple[tuple[str, bytes, bytes], ...]:
    """The `stamps` field: one per clock entry, but the one the version's signature vouches for."""
    counters = vc.counters(record.vclock)
    own = _own_entry(record)
    return tuple((actor, s[0], s[1]) for actor, (n, s) in sorted(stamps.items())
                 if counters.get(actor) == n and (actor, n) != own)


def _own_entry(record: Record) -> tuple[str, int] | None:
    """`own_stamp`'s (writer, counter) without the content digest (a hash of the whole content)."""
    return None if record.writer is None else (record.writer, vc.get_counter(record.written, record.writer))


def sign_write(previous: Record | None, stored: Record, *, actor: str, sign: Sign) -> Record:
    """Sign a local write (`merge.local_write`'s result): `actor` is the entry it incremented.
    The other entries keep the stamps of the version it was made on (none for a new
    incarnation: its clock is fresh)."""
    signed = replace(stored, writer=actor, signature=b"", stamps=())
    counter = vc.get_counter(stored.written, actor)
    body = body_digest(signed)
    signed = replace(signed, signature=sign(stamp_message(signed, actor, counter, body)))
    inherited = all_stamps(previous) if previous is not None and previous.incarnation == stored.incarnation else {}
    final = replace(signed, stamps=_normal(signed, inherited))
    restore_body_digest(final, body)  # (the same content: the digest covers neither signature nor stamps)
    return final


def joined(a: Record, b: Record, merged: Record) -> Record:
    """`merged` (the winner's content under the joined clock of `a` and `b`) with its stamps:
    per entry the stamp of the side at that counter, the smaller bytes if both are. A side's
    own stamp is hashed (`body_digest`) only if it is needed: for a tie, or because it goes
    into the merged version's `stamps` (issue 16: most conflicts need one hash, not three).
    Every signed conflict merges through here on both peers of a round: spelt out with the
    clocks' entries walked once each (no helper calls per entry; tests/trust/test_signing.py
    holds it to the plain spelling)."""
    if a.writer is None and b.writer is None and not a.stamps and not b.stamps:
        return merged  # unsigned (no identity): unchanged
    pooled: dict[str, tuple[int, Stamp | None, Record]] = {}  # None: the record's own stamp, not hashed yet
    for side in (a, b):
        counters = {e.node: e.counter for e in side.vclock.entries}
        writer = side.writer or ""
        own = 0  # the writer's counter, if its own stamp covers its clock entry
        if writer:
            for e in side.written.entries:
                if e.node == writer:
                    if counters.get(writer) == e.counter:
                        own = e.counter
                    break
        if side.stamps:
            entries: dict[str, tuple[int, Stamp | None]] = {
                actor: (counters.get(actor, 0), (digest, sig)) for actor, digest, sig in side.stamps}
            if own:
                entries[writer] = (own, None)
            for actor, (n, stamp) in entries.items():
                _pool(pooled, actor, n, stamp, side)
        elif own:
            _pool(pooled, writer, own, None, side)
    own_entry = None
    if merged.writer is not None:
        own_entry = (merged.writer, 0)
        for e in merged.written.entries:
            if e.node == merged.writer:
                own_entry = (merged.writer, e.counter)
                break
    stamps = []
    for e in merged.vclock.entries:
        got = pooled.get(e.node)
        if got is not None and got[0] == e.counter and (e.node, e.counter) != own_entry:
            stamp = got[1] if got[1] is not None else (body_digest(got[2]), got[2].signature)
            stamps.append((e.node, stamp[0], stamp[1]))
    return with_vclock(merged, merged.vclock, tuple(stamps))  # (`replace(merged, stamps=...)`, 10 times cheaper)


def _pool(pooled: dict[str, tuple[int, Stamp | None, Record]], actor: str, n: int, stamp: Stamp | None,
          side: Record) -> None:
    """`joined`'s pool: the higher counter's stamp, the smaller bytes of two at one counter."""
    have = pooled.get(actor)
    if have is None or n > have[0]:
        pooled[actor] = (n, stamp, side)
    elif n == have[0]:
        mine, theirs = _stamp_of(stamp, side), _stamp_of(have[1], have[2])
        pooled[actor] = (n, mine, side) if mine < theirs else (n, theirs, have[2])


def _stamp_of(stamp: Stamp | None, side: Record) -> Stamp:
    return stamp if stamp is not None else (body_digest(side), side.signature)


def refusal(remote: Record, held: Record | None, *, verify: Verify) -> Refusal | None:
    """Why `remote` must not be merged (see the module docstring), or None. `held` is what the
    receiver holds under that name (it only spares re-checking what is already known)."""
    if held is not None and held == remote:
        return None
    same = held if held is not None and held.incarnation == remote.incarnation else None
    where = f"{remote.name} ({remote.incarnation})"
    if remote.writer is None:
        return Refusal("unsigned", f"{where}: unsigned version (this federation signs records)")
    mine = own_stamp(remote)
    writer, counter, own = mine or ("", 0, (b"", b""))
    if counter < 1:
        return Refusal("malformed", f"{where}: writer {writer} has no entry in `written`")
    if not vc.descends(remote.vclock, remote.written):
        return Refusal("malformed", f"{where}: `written` {remote.written} exceeds `vclock` {remote.vclock}")
    actors = [s[0] for s in remote.stamps]
    if actors != sorted(set(actors)) or not set(actors) <= vc.nodes(remote.vclock):
        return Refusal("malformed", f"{where}: stamps must name clock entries, once each, sorted")
    theirs = own_stamp(same) if same is not None else None
    if theirs != mine:
        why = verify(vc.cluster_of(writer), stamp_message(remote, writer, counter, own[0]), own[1])
        if why is not None:
            return Refusal(why.split(":")[0], f"{where}: content by {writer} (write {counter}): {why}")
    stamps = all_stamps(remote, mine)
    known = all_stamps(same, theirs) if same is not None else {}
    return _entries_refusal(remote, same, stamps, known, where, verify=verify)


def _entries_refusal(remote: Record, same: Record | None, stamps: dict[str, tuple[int, Stamp]],
                     known: dict[str, tuple[int, Stamp]], where: str, *, verify: Verify) -> Refusal | None:
    for entry in remote.vclock.entries:
        actor, n = entry.node, entry.counter
        if same is not None and vc.get_counter(same.vclock, actor) > n:
            continue  # the receiver's own entry wins the merge
        stamp = stamps.get(actor)
        if stamp is None or stamp[0] != n:
            return Refusal("unstamped", f"{where}: clock entry {actor}:{n} carries no stamp of {vc.cluster_of(actor)}")
        if known.get(actor) == stamp:
            continue  # already checked when it arrived
        why = verify(vc.cluster_of(actor), stamp_message(remote, actor, n, stamp[1][0]), stamp[1][1])
        if why is not None and not (why.startswith("revoked:") and endorsed(remote, actor, n)):
            return Refusal(why.split(":")[0], f"{where}: clock entry {actor}:{n}: {why}")
    return None


def endorsed(remote: Record, actor: str, counter: int) -> bool:
    """A revoked cluster's genuine stamp still counts when the version's writer (checked
    already, so not revoked) had seen that write: its signed `written` covers the entry. So
    a record a revoked cluster once wrote keeps replicating, also to members that never held
    its versions, once any other cluster wrote on top; the revoked cluster's own new writes
    carry no such endorsement."""
    return remote.writer is not None and vc.cluster_of(remote.writer) != vc.cluster_of(actor) \
        and vc.get_counter(remote.written, actor) >= counter
