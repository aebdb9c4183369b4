"""Channel authority (issue 16, peer/trust/signing.py): a stamp of the cluster whose verified
mTLS certificate carried it is taken without its ECDSA check, everything else is checked as
always; what was taken so is audited before it is relayed, and a false one is undone and costs
its cluster the channel's authority."""
from __future__ import annotations

import threading
from dataclasses import replace
from pathlib import Path
from typing import cast

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, Counter

from peer.records import record as rec
from peer.records import vclock as vc
from peer.records.merge import local_write
from peer.records.record import Record
from peer.records.store import RecordStore
from peer.trust import authorship, signing
from peer.trust.authorship import CertBook, sign_with
from peer.trust.certs import NO_REVOCATIONS, Revocations, load_cert
from peer.trust.signing import Channel
from tests.trust.test_authorship import cert_of, count, guard, record
from tests.trust.test_signing import play, verifier, write

names = st.sampled_from(("c1", "c2", "c3"))


@given(channel=st.one_of(st.none(), st.builds(Channel, names, st.integers(1, 4))), cluster=names,
       revoked=st.frozensets(st.integers(1, 4)), distrusted=st.frozensets(names))
def test_a_channel_vouches_only_for_its_own_live_trusted_cluster(channel: Channel | None, cluster: str,
                                                                revoked: frozenset[int],
                                                                distrusted: frozenset[str]) -> None:
    says = signing.vouches(channel, cluster, revoked=revoked.__contains__, distrusted=distrusted)
    assert says == (channel is not None and channel.cluster == cluster and channel.serial not in revoked
                    and cluster not in distrusted)


ops = st.lists(st.tuples(st.sampled_from(("write", "send")), names, names, names), min_size=1, max_size=20)


@settings(max_examples=150, deadline=None)
@given(ops, names)
def test_taken_on_channel_only_what_the_channel_alone_wrote_and_well_formed(
        program: list[tuple[str, str, str, str]], on: str) -> None:
    """Over honest histories (writes, relays, merges): a version is taken on the channel's
    authority exactly when every entry of its clock is the channel's cluster's, and whatever
    is taken so passes every rule but the signatures themselves."""
    held = play(program)
    for version in (v for v in held.values() if v is not None):
        taken = signing.taken_on_channel(version, lambda cluster: cluster == on)
        alone = {vc.cluster_of(e.node) for e in version.vclock.entries} == {on}
        assert taken == alone
        if taken:
            assert signing.refusal(version, None, verify=lambda *_: None) is None
        broken = replace(version, written=vc.increment(version.vclock, version.writer or "x", timestamp=0))
        assert not signing.taken_on_channel(broken, lambda cluster: True)  # `written` beyond the clock
        unstamped = replace(version, stamps=(), vclock=vc.increment(version.vclock, f"{on}~other", timestamp=0))
        assert not signing.taken_on_channel(unstamped, lambda cluster: True)  # an entry without its stamp


@settings(max_examples=200, deadline=None)
@given(ops, names, names, names)
def test_taken_against_what_is_held_only_what_the_rule_would_not_check(
        program: list[tuple[str, str, str, str]], sender: str, receiver: str, on: str) -> None:
    """With what the receiver holds: a version is taken on the channel only if `refusal`
    would take it when every stamp it checks is either the channel's or one the receiver
    holds already (checked when it came), so the channel never stands in for a third cluster."""
    held = play(program)
    remote, mine = held[sender], held[receiver]
    if remote is None:
        return
    vouch = (lambda cluster: cluster == on)
    if signing.taken_on_channel(remote, vouch, mine):
        known = {(m, sig) for _, m, sig in signing.stamp_checks(mine)} if mine is not None else set()

        def only_the_channel(cluster: str, message: bytes, signature: bytes) -> str | None:
            ok = vouch(cluster) or (message, signature) in known
            return None if ok else "bad-signature: a third cluster's new stamp was checked"

        assert signing.refusal(remote, mine, verify=only_the_channel) is None


def test_content_under_another_writers_dominated_entry_is_never_taken_on_the_channel() -> None:
    """c2 relays c1's old version with its content changed and an entry of its own on top: the
    receiver's newer c1 entry wins the clock, but the content is c1's to vouch for: checked."""
    v1 = write(None, "c1", location="c1", now=1.0)
    v2 = write(v1, "c1", location="c1", now=2.0)
    lifted = vc.increment(v1.vclock, "c2", timestamp=3.0)
    forged = replace(v1, location="c2", vclock=lifted, stamps=(("c2", b"d" * 16, b"whatever c2 says"),))
    assert not signing.taken_on_channel(forged, lambda cluster: cluster == "c2", v2)
    assert signing.refusal(forged, v2, verify=verifier()) is not None


def test_false_stamps_fail_the_rules_when_checked() -> None:
    """(The audit's premise: what the channel vouched for is checked by the same rules.)"""
    v = write(None, "c1", location="c1", now=1.0)
    assert signing.refusal(replace(v, signature=b"x"), None, verify=verifier()) is not None


# --- with real keys, certificates and a store ------------------------------------------------

@pytest.fixture
def pki(tmp_path: Path) -> Path:
    from peer.trust import ca
    ca.init(tmp_path / "ca")
    for name in ("c1", "c2", "c3"):
        ca.issue(tmp_path / "ca", cluster=name, out=tmp_path / name)
    return tmp_path


def book_of(pki: Path) -> CertBook:
    book = CertBook(load_cert((pki / "ca" / "ca.pem").read_bytes(), what="ca"))
    book.add_pems([cert_of(pki, n) for n in ("c1", "c2", "c3")], source="test")
    return book


def serial(pki: Path, name: str) -> int:
    return load_cert(cert_of(pki, name), what=name).serial_number


class Verified:
    """Counts the ECDSA checks made (authorship.verify_with), per thread-safe list."""

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.real = authorship.verify_with

    def __enter__(self) -> Verified:
        def counted(cert: object, message: bytes, signature: bytes) -> bool:
            self.calls.append(threading.current_thread().name)
            return self.real(cert, message, signature)  # type: ignore[arg-type]
        authorship.verify_with = counted  # type: ignore[assignment]
        return self

    def __exit__(self, *exc: object) -> None:
        authorship.verify_with = self.real  # type: ignore[assignment]


def versions(g: authorship.RecordGuard, writer: str, n: int) -> list[Record]:
    return [g.sign(None, local_write(None, replace(record(), name=f"web-{i}"), here=writer, now=1.0), actor=writer)
            for i in range(n)]


def test_own_versions_on_their_writers_channel_skip_ecdsa_relayed_and_revoked_do_not(pki: Path) -> None:
    book = book_of(pki)
    revoked: list[Revocations] = [NO_REVOCATIONS]
    g1, _ = guard(pki, "c1", book, revoked)
    g2, _ = guard(pki, "c2", book, revoked)
    vouched = Counter("vouched", "vouched", registry=CollectorRegistry())
    g2.vouched = vouched
    batch = versions(g1, "c1", 30)
    with Verified() as v, RecordStore.open(pki / "c2.db") as s2:
        s2.guard = g2
        outcomes = s2.apply_remote_many(batch[:10], here="c2", channel=Channel("c1", serial(pki, "c1")))
        assert all(o.changed for o in outcomes) and v.calls == [], "the writer's own channel: no ECDSA"
        assert g2.vouched_total == 10 and vouched._value.get() == 10
        assert all(g2.pending(f"web-{i}") for i in range(10))
        # relayed by c3 (c1 wrote them): every stamp checked, as always
        outcomes = s2.apply_remote_many(batch[10:20], here="c2", channel=Channel("c3", serial(pki, "c3")))
        assert all(o.changed for o in outcomes) and len(v.calls) == 10 and g2.vouched_total == 10
        # c1's serial revoked: its own channel vouches for nothing any more
        revoked[0] = Revocations(number=1, serials=frozenset({serial(pki, "c1")}), pem=b"")
        assert [o.changed for o in s2.apply_remote_many(batch[20:], here="c2",
                                                       channel=Channel("c1", serial(pki, "c1")))] == [False] * 10
        assert len(v.calls) >= 20 and g2.vouched_total == 10  # checked, and refused as revoked


def as_received(records: list[Record]) -> list[Record]:
    """The versions as a peer's push or reply delivers them: decoded from their packed bytes,
    which they keep as their source (the guard holds those while they are pending)."""
    return [rec.unpack_sourced(rec.pack(r)) for r in records]


def held_as_bytes(g: authorship.RecordGuard) -> bool:
    return all(isinstance(item, bytes) for held in g._pending.values() for _, item in held.values())


@pytest.mark.parametrize("received", [False, True])
def test_the_audit_before_relaying_verifies_once_and_excludes_the_recipients_own(pki: Path, received: bool) -> None:
    book = book_of(pki)
    g1, _ = guard(pki, "c1", book, [NO_REVOCATIONS])
    g2, refusals = guard(pki, "c2", book, [NO_REVOCATIONS])
    batch = versions(g1, "c1", 40)
    with Verified() as v, RecordStore.open(pki / "c2.db") as s2:
        s2.guard = g2
        s2.apply_remote_many(as_received(batch) if received else batch, here="c2",
                             channel=Channel("c1", serial(pki, "c1")))
        assert held_as_bytes(g2) == received and g2._count == 40
        assert s2.audit("c1") == [] and v.calls == [], "c1 gets its own versions back unchecked"
        assert s2.audit("c3") == [] and len(v.calls) == 40, "relayed to c3: each verified once"
        assert any(n.startswith("roam-verify") for n in v.calls), "on two threads"
        assert not any(g2.pending(f"web-{i}") for i in range(40)) and count(refusals, "channel-bad-signature") == 0
        assert s2.audit("c3") == [] and len(v.calls) == 40, "nothing pending: nothing checked again"
        assert [s2.get(r.name) for r in batch] == batch


@pytest.mark.parametrize("received", [False, True])
def test_a_false_own_stamp_is_undone_before_it_is_relayed_and_its_sender_checked_from_then_on(
        pki: Path, received: bool) -> None:
    """c1 sends, on its own channel, a version of its own whose signature is not c1's: taken,
    but the audit before relaying finds it false, puts back what c2 held before (nothing is
    relayed that others would refuse, so no round re-sends it for ever), counts and logs it,
    and c1's versions are checked one by one from then on."""
    book = book_of(pki)
    g1, _ = guard(pki, "c1", book, [NO_REVOCATIONS])
    g2, refusals = guard(pki, "c2", book, [NO_REVOCATIONS])
    from cryptography.hazmat.primitives import serialization
    c3_key = serialization.load_pem_private_key((pki / "c3" / "cluster.key").read_bytes(), password=None)
    channel = Channel("c1", serial(pki, "c1"))
    with RecordStore.open(pki / "c1.db") as s1, RecordStore.open(pki / "c2.db") as s2:
        s1.guard, s2.guard = g1, g2
        honest = s1.put_local(record(), here="c1", now=1.0)
        other = s1.put_local(replace(record(), name="api"), here="c1", now=1.0)
        assert s2.apply_remote(honest, here="c2").changed
        stored = local_write(honest, replace(honest, location="c2"), here="c1", now=2.0, actor=s1.clock_actor("c1"))
        false = signing.sign_write(honest, stored, actor=s1.clock_actor("c1"), sign=lambda m: sign_with(c3_key, m))
        new = s1.put_local(replace(record(), name="new"), here="c1", now=2.0)
        false_new = replace(new, signature=sign_with(c3_key, b"not this"))
        pushed = [false, other, false_new]
        outcomes = s2.apply_remote_many(as_received(pushed) if received else pushed, here="c2", channel=channel)
        assert all(o.changed for o in outcomes) and s2.get("web") == false  # taken on the channel's word
        assert held_as_bytes(g2) == received
        assert sorted(s2.audit("c3")) == ["new", "web"]
        assert s2.get("web") == honest and s2.get("new") is None, "put back as held before"
        assert s2.get("api") == other, "c1's true versions stay"
        assert count(refusals, "channel-bad-signature") == 2 and g2.distrusted == {"c1"}
        # from now on c1's versions are checked one by one: the false one is refused, a true one taken
        assert not s2.apply_remote_many([false], here="c2", channel=channel)[0].changed
        assert count(refusals, "bad-signature") == 1
        newer = s1.put_local(replace(honest, location="c1"), here="c1", now=3.0)
        assert s2.apply_remote_many([newer], here="c2", channel=channel)[0].changed
        assert not g2.pending("web")


def test_a_local_write_is_never_built_on_a_stamp_not_verified(pki: Path) -> None:
    """A write here on top of a version taken on channel authority verifies that version
    first: a false one is undone, and the write goes on top of what was held before."""
    book = book_of(pki)
    g1, _ = guard(pki, "c1", book, [NO_REVOCATIONS])
    g2, refusals = guard(pki, "c2", book, [NO_REVOCATIONS])
    with RecordStore.open(pki / "c1.db") as s1, RecordStore.open(pki / "c2.db") as s2:
        s1.guard, s2.guard = g1, g2
        honest = s1.put_local(record(), here="c1", now=1.0)
        assert s2.apply_remote(honest, here="c2").changed
        actor = s1.clock_actor("c1")
        stored = local_write(honest, replace(honest, location="c2"), here="c1", now=2.0, actor=actor)
        false = signing.sign_write(honest, stored, actor=actor, sign=lambda m: b"\x30\x06\x02\x01\x01\x02\x01\x01")
        assert s2.apply_remote_many([false], here="c2", channel=Channel("c1", serial(pki, "c1")))[0].changed
        mine = s2.put_local(replace(honest, instance="127.0.151.20:8000"), here="c2", now=3.0)
        assert count(refusals, "channel-bad-signature") == 1 and mine.location == honest.location
        assert vc.descends(mine.vclock, honest.vclock) and not vc.descends(mine.vclock, false.vclock)
        assert s1.apply_remote(mine, here="c1").changed, "c1 takes c2's write: every stamp in it verifies"


@settings(max_examples=100, deadline=None)
@given(steps=st.lists(st.tuples(st.sampled_from(("ask", "revoke", "distrust", "new-channel", "new-list")), names,
                                st.integers(1, 3)), max_size=20))
def test_the_guards_remembered_vouch_answers_as_vouches_does(steps: list[tuple[str, str, int]]) -> None:
    """`RecordGuard._vouch` remembers its answers per cluster (a batch asks several times per
    version): after any change of the channel, the revocation list or the distrusted
    clusters, it still answers exactly what `signing.vouches` answers now."""
    revoked = [NO_REVOCATIONS]
    counter = Counter("refused", "refused", ["reason"], registry=CollectorRegistry())
    g = authorship.RecordGuard(key=lambda: None, book=cast(CertBook, None), revocations=lambda: revoked[0],
                               refusals=counter)
    channel = Channel("c1", 1)
    for step, cluster, serial in steps:
        if step == "revoke":
            revoked[0] = Revocations(number=revoked[0].number + 1, serials=revoked[0].serials | {serial}, pem=b"")
        elif step == "distrust":
            g.distrusted.add(cluster)
        elif step == "new-channel":
            channel = Channel(cluster, serial)
        elif step == "new-list":
            revoked[0] = Revocations(number=revoked[0].number + 1, serials=frozenset(), pem=b"")
        for asked in ("c1", "c2", "c3"):
            assert g._vouch(channel)(asked) == signing.vouches(channel, asked, revoked=revoked[0].revoked,
                                                               distrusted=g.distrusted)
    assert g._vouch(None)("c1") is False
