"""Author-signed record versions, the pure rules (peer/trust/signing.py), with keyed hashes in
place of certificates: honest histories (writes, merges, relays in any order) always pass and
converge with their stamps; a cluster that forges another's content, lifts another's clock
entry or replays one's stamp on other content is refused; a revoked cluster advances nothing."""
from __future__ import annotations

import hashlib
import hmac
from dataclasses import replace

from hypothesis import given, settings
from hypothesis import strategies as st

from peer.records import vclock as vc
from peer.records.merge import local_write, reconcile
from peer.records.record import Record, State, descriptor_digest, with_vclock
from peer.trust import signing
from tests.records.strategies import full_records

CLUSTERS = ("c1", "c2", "c3")
KEYS = {c: hashlib.sha256(c.encode()).digest() for c in CLUSTERS}


def signer(cluster: str) -> signing.Sign:
    return lambda message: hmac.new(KEYS[cluster], message, "sha256").digest()


def verifier(revoked: frozenset[str] = frozenset()) -> signing.Verify:
    def verify(cluster: str, message: bytes, signature: bytes) -> str | None:
        if cluster not in KEYS:
            return f"unknown-cert: {cluster}"
        ok = hmac.compare_digest(hmac.new(KEYS[cluster], message, "sha256").digest(), signature)
        if not ok:
            return f"bad-signature: not {cluster}'s"
        return f"revoked: {cluster}" if cluster in revoked else None
    return verify


def base() -> Record:
    desc = b"\x81\xa4name\xa3web"
    return Record(name="web", home="c1", location="c1", state=State.RUNNING, digest=descriptor_digest(desc),
                  descriptor=desc, incarnation="1000-abcd-0", homes=("c1", "c2"))


def write(held: Record | None, cluster: str, *, location: str, now: float) -> Record:
    content = replace(held if held is not None else base(), location=location)
    stored = local_write(held, content, here=cluster, now=now)
    return signing.sign_write(held, stored, actor=cluster, sign=signer(cluster))


def accept(held: Record | None, remote: Record, here: str, *, revoked: frozenset[str] = frozenset()) -> Record | None:
    why = signing.refusal(remote, held, verify=verifier(revoked))
    assert why is None, why
    return reconcile(held, remote, here=here).result


def play(program: list[tuple[str, str, str, str]]) -> dict[str, Record | None]:
    """Run a history of writes and sends (a send also relays: what a cluster holds may have
    come from anyone); what each cluster holds after it."""
    held: dict[str, Record | None] = {c: None for c in CLUSTERS}
    now = 1000.0
    for op, a, b, loc in program:
        now += 1
        if op == "write":
            held[a] = write(held[a], a, location=loc, now=now)
        elif (sent := held[a]) is not None and a != b:
            held[b] = accept(held[b], sent, b)
    return held


ops = st.lists(st.tuples(st.sampled_from(("write", "send")), st.sampled_from(CLUSTERS), st.sampled_from(CLUSTERS),
                         st.sampled_from(CLUSTERS)), max_size=30)


@settings(max_examples=150, deadline=None)
@given(ops)
def test_honest_histories_pass_everywhere_and_converge(program: list[tuple[str, str, str, str]]) -> None:
    held = play(program)
    for _ in range(2):  # full anti-entropy
        for a in CLUSTERS:
            for b in CLUSTERS:
                if a != b and (sent := held[a]) is not None:
                    held[b] = accept(held[b], sent, b)
    versions = {held[c] for c in CLUSTERS}
    assert len(versions) == 1
    final = versions.pop()
    if final is not None:  # every entry of the converged clock is vouched for
        assert signing.refusal(final, None, verify=verifier()) is None


def shared_history() -> tuple[Record, Record]:
    """c1 wrote, c2 took it and wrote on top, c1 wrote again concurrently: (c1's, c2's)."""
    v1 = write(None, "c1", location="c1", now=1.0)
    at_c2 = write(accept(None, v1, "c2"), "c2", location="c2", now=2.0)
    at_c1 = write(v1, "c1", location="c3", now=3.0)
    return at_c1, at_c2


@given(st.sampled_from(["location", "state", "descriptor", "homes", "tombstone", "epoch", "written", "writer"]))
def test_content_changed_by_a_relay_is_refused(field: str) -> None:
    v1, _ = shared_history()
    forged = {
        "location": replace(v1, location="c2"), "state": replace(v1, state=State.FAILED),
        "descriptor": replace(v1, descriptor=b"\x81\xa7command\x91\xa2sh"), "homes": replace(v1, homes=("c1", "c3")),
        "tombstone": replace(v1, tombstone=True, state=State.DELETED), "epoch": replace(v1, epoch=v1.epoch + 5),
        "written": replace(v1, written=vc.increment(v1.written, "c2", timestamp=0)), "writer": replace(v1, writer="c2"),
    }[field]
    why = signing.refusal(forged, None, verify=verifier())
    assert why is not None


def test_a_cluster_cannot_sign_as_another() -> None:
    v1 = write(None, "c1", location="c1", now=1.0)
    forged = replace(write(v1, "c1", location="c3", now=2.0), signature=b"")
    forged = replace(forged, signature=signer("c2")(signing.stamp_message(
        forged, "c1", vc.get_counter(forged.written, "c1"), signing.body_digest(forged))))
    why = signing.refusal(forged, v1, verify=verifier())
    assert why is not None and why.kind == "bad-signature"


@given(st.integers(min_value=1, max_value=1000))
def test_a_cluster_cannot_advance_another_clusters_entry(lift: int) -> None:
    """c2 signs its own write honestly but lifts c1's counter so its version would dominate
    c1's next writes: refused (no stamp of c1 for that counter), the honest version stays."""
    c1_next, c2_own = shared_history()
    lifted = vc.increment(c2_own.vclock, "c1", timestamp=0, at_least=vc.get_counter(c2_own.vclock, "c1") + lift)
    forged = replace(c2_own, vclock=lifted, written=lifted)
    forged = signing.sign_write(None, forged, actor="c2", sign=signer("c2"))
    forged = replace(forged, stamps=c2_own.stamps)
    why = signing.refusal(forged, c1_next, verify=verifier())
    assert why is not None and why.kind in {"unstamped", "bad-signature"}


def test_a_stamp_does_not_vouch_for_other_content() -> None:
    """c1's honest stamp copied onto c2's content claiming to be c1's write: refused."""
    v1 = write(None, "c1", location="c1", now=1.0)
    forged = replace(v1, location="c2")
    assert signing.refusal(forged, None, verify=verifier()) is not None


def test_revoked_cluster_advances_nothing_but_known_history_replicates() -> None:
    c1_v, c2_v = shared_history()
    merged_at_c3 = accept(accept(None, c1_v, "c3"), c2_v, "c3")
    assert merged_at_c3 is not None
    revoked = frozenset({"c2"})
    # c3 already holds c2's entries: a version carrying them still replicates to c3 ...
    assert signing.refusal(merged_at_c3, merged_at_c3, verify=verifier(revoked)) is None
    assert signing.refusal(c1_v, merged_at_c3, verify=verifier(revoked)) is None
    # ... but c2's new write is refused
    newer = write(c2_v, "c2", location="c3", now=9.0)
    why = signing.refusal(newer, merged_at_c3, verify=verifier(revoked))
    assert why is not None and why.kind == "revoked"
    # ... and once c1 wrote on top of c2's history, a member that never held c2's versions
    # takes it (c1's signed `written` endorses c2's entries); relayed by anyone
    on_top = write(merged_at_c3, "c1", location="c1", now=10.0)
    assert signing.refusal(on_top, None, verify=verifier(revoked)) is None
    # but not an entry of c2 that c1's write had not seen (c2's new write, merged in)
    merged = reconcile(on_top, newer, here="c1").result
    why = signing.refusal(merged, None, verify=verifier(revoked))
    assert why is not None and why.kind == "revoked"
    # nor a made-up entry of c2 endorsed by a writer: its stamp is no genuine signature of c2
    lifted = vc.increment(on_top.vclock, "c2", timestamp=0, at_least=vc.get_counter(on_top.vclock, "c2") + 3)
    fake = signing.sign_write(None, replace(on_top, vclock=lifted, written=lifted), actor="c1", sign=signer("c1"))
    fake = replace(fake, stamps=tuple(sorted((*on_top.stamps, ("c2", b"x" * 16, b"forged")))))
    fake = replace(fake, stamps=tuple(s for s in fake.stamps if s[0] != "c2" or s[2] == b"forged"))
    assert signing.refusal(fake, None, verify=verifier(revoked)) is not None


@settings(max_examples=50, deadline=None)
@given(ops)
def test_a_signed_write_keeps_its_body_digest(program: list[tuple[str, str, str, str]]) -> None:
    """`sign_write` leaves its result's `body_digest` computed (the store keeps it beside the
    row), and whatever a history's writes, merges and relays leave computed is the same bytes
    as hashing the content afresh."""
    held = play(program)
    records = [r for r in held.values() if r is not None]
    records += [write(r, c, location="c3", now=5000.0) for c, r in held.items()]
    for record in records:
        kept = signing.known_body_digest(record)
        fresh = Record(**{f: getattr(record, f) for f in record.__dataclass_fields__})
        assert signing.known_body_digest(fresh) is None
        assert kept is None or kept == signing.body_digest(fresh)
    assert all(signing.known_body_digest(r) is not None for r in records[-len(held):])


def test_unsigned_versions_are_refused_when_signing() -> None:
    plain = local_write(None, base(), here="c1", now=1.0)
    why = signing.refusal(plain, None, verify=verifier())
    assert why is not None and why.kind == "unsigned"


def test_joined_is_commutative() -> None:
    a, b = shared_history()
    assert reconcile(a, b, here="c3").result == reconcile(b, a, here="c3").result


def plain_joined(a: Record, b: Record, merged: Record) -> Record:
    """`signing.joined` as first spelt (helpers per entry, one dict per side): the reference
    its faster spelling must match."""
    if a.writer is None and b.writer is None and not a.stamps and not b.stamps:
        return merged
    pooled: dict[str, tuple[int, signing.Stamp | None, Record]] = {}
    for side in (a, b):
        counters = vc.counters(side.vclock)
        entries: dict[str, tuple[int, signing.Stamp | None]] = {
            actor: (counters.get(actor, 0), (digest, sig)) for actor, digest, sig in side.stamps}
        own = signing._own_entry(side)
        if own is not None and counters.get(own[0]) == own[1]:
            entries[own[0]] = (own[1], None)
        for actor, (n, stamp) in entries.items():
            have = pooled.get(actor)
            if have is None or n > have[0]:
                pooled[actor] = (n, stamp, side)
            elif n == have[0]:
                mine, theirs = signing._stamp_of(stamp, side), signing._stamp_of(have[1], have[2])
                pooled[actor] = (n, mine, side) if mine < theirs else (n, theirs, have[2])
    counters = vc.counters(merged.vclock)
    own = signing._own_entry(merged)
    stamps = tuple((actor, *signing._stamp_of(stamp, side)) for actor, (n, stamp, side) in sorted(pooled.items())
                   if counters.get(actor) == n and (actor, n) != own)
    return replace(merged, stamps=stamps)


def _same_joins(a: Record, b: Record) -> None:
    clock = vc.merge(a.vclock, b.vclock)
    for merged in (with_vclock(a, clock), with_vclock(b, clock)):
        fast, plain = signing.joined(a, b, merged), plain_joined(a, b, merged)
        assert fast == plain and fast.stamps == plain.stamps


@settings(max_examples=150, deadline=None)
@given(ops, ops)
def test_joined_matches_its_plain_spelling_on_histories(first: list[tuple[str, str, str, str]],
                                                        then: list[tuple[str, str, str, str]]) -> None:
    """Every pair of versions two histories leave (shared and concurrent writes, relays)."""
    held = play(first + then)
    other = play(first)
    versions = [r for r in [*held.values(), *other.values()] if r is not None]
    for a in versions:
        for b in versions:
            _same_joins(a, b)


@given(full_records(), full_records())
def test_joined_matches_its_plain_spelling_on_any_versions(a: Record, b: Record) -> None:
    """Arbitrary signed and unsigned versions, stamps naming any entry (what no check let in too)."""
    _same_joins(a, b)
