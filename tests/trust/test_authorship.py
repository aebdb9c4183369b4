"""The agent's side of signed records with real keys and certificates (peer/trust/authorship.py):
only the CA's certificates enter the book, ECDSA signatures verify against the writer's
certificate, a revoked or unknown writer is refused with its reason and counted."""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from prometheus_client import CollectorRegistry, Counter

from peer.records import vclock as vc
from peer.records.merge import local_write
from peer.records.record import Record, State, descriptor_digest
from peer.trust import ca
from peer.trust.authorship import CertBook, RecordGuard
from peer.trust.certs import NO_REVOCATIONS, Revocations, TrustError, load_cert, load_crl


def cert_of(base: Path, name: str) -> bytes:
    return (base / name / "cluster.pem").read_bytes()


@pytest.fixture
def pki(tmp_path: Path) -> Path:
    ca.init(tmp_path / "ca")
    for name in ("c1", "c2"):
        ca.issue(tmp_path / "ca", cluster=name, out=tmp_path / name)
    ca.init(tmp_path / "other")
    ca.issue(tmp_path / "other", cluster="c1", out=tmp_path / "rogue")
    return tmp_path


def guard(base: Path, name: str, book: CertBook, revoked: list[Revocations]) -> tuple[RecordGuard, Counter]:
    key = serialization.load_pem_private_key((base / name / "cluster.key").read_bytes(), password=None)
    counter = Counter("refused", "refused", ["reason"], registry=CollectorRegistry())
    return RecordGuard(key=lambda: key, book=book, revocations=lambda: revoked[0], refusals=counter), counter


def count(counter: Counter, reason: str) -> float:
    return float(counter.labels(reason=reason)._value.get())


def record() -> Record:
    desc = b"\x81\xa4name\xa3web"
    return Record(name="web", home="c1", location="c1", state=State.RUNNING, digest=descriptor_digest(desc),
                  descriptor=desc, incarnation="1000-abcd-0")


def test_the_book_keeps_only_the_cas_certificates(pki: Path) -> None:
    book = CertBook(load_cert((pki / "ca" / "ca.pem").read_bytes(), what="ca"))
    assert book.add_pems([cert_of(pki, "c1"), cert_of(pki, "rogue"), b"not a pem", 7], source="test") == 1
    assert len(book.of("c1")) == 1 and book.of("c2") == []
    with pytest.raises(TrustError):
        book.add(load_cert(cert_of(pki, "rogue"), what="rogue"))


def test_the_book_is_kept_across_restarts(pki: Path) -> None:
    """A restarted agent knows the writers it knew: it checks their versions at once."""
    ca_cert = load_cert((pki / "ca" / "ca.pem").read_bytes(), what="ca")
    path = pki / "trust-certs.pem"
    book = CertBook(ca_cert, path=path)
    assert book.add_pems([cert_of(pki, "c1"), cert_of(pki, "rogue")], source="test") == 1
    assert path.stat().st_mode & 0o777 == 0o600
    assert book.add_pems([cert_of(pki, "c1")], source="again") == 0
    again = CertBook(ca_cert, path=path)
    assert [c.serial_number for c in again.of("c1")] == [c.serial_number for c in book.of("c1")]
    with path.open("ab") as torn:  # a crash halfway through an append, then a rogue entry
        torn.write(cert_of(pki, "rogue") + cert_of(pki, "c2")[:200])
    third = CertBook(ca_cert, path=path)
    assert len(third.of("c1")) == 1 and third.of("c2") == []
    third.add(load_cert(cert_of(pki, "c2"), what="c2"))  # appended after the torn bytes
    fourth = CertBook(ca_cert, path=path)
    assert len(fourth.of("c1")) == 1 and len(fourth.of("c2")) == 1 and fourth.of("rogue") == []


def test_two_books_agree_by_keys_sending_only_what_the_other_lacks(pki: Path) -> None:
    """The exchange of peer/trust/spread.py: each side sends the short keys of what it holds
    and receives only the certificates it lacks; once they agree nothing but keys crosses."""
    ca_cert = load_cert((pki / "ca" / "ca.pem").read_bytes(), what="ca")
    mine, theirs = CertBook(ca_cert), CertBook(ca_cert)
    mine.add_pems([cert_of(pki, "c1")], source="test")
    theirs.add_pems([cert_of(pki, "c2")], source="test")
    assert len(mine.keys()) == 1 and all(len(k) == 8 for k in mine.keys())
    assert theirs.pems_not_in(mine.keys()) == [cert_of(pki, "c2")]  # their answer: what I lack
    assert mine.pems_not_in(theirs.keys()) == [cert_of(pki, "c1")]  # my second call: what they lack
    assert mine.add_pems(theirs.pems_not_in(mine.keys()), source="theirs") == 1
    assert theirs.add_pems(mine.pems_not_in(theirs.keys()), source="mine") == 1
    assert sorted(mine.keys()) == sorted(theirs.keys())
    assert mine.pems_not_in(theirs.keys()) == [] and theirs.pems_not_in(mine.keys()) == []
    assert mine.pems_not_in(["junk", 7, None]) == mine.pems()  # malformed keys: everything


def test_signatures_verify_against_the_writers_certificate(pki: Path) -> None:
    book = CertBook(load_cert((pki / "ca" / "ca.pem").read_bytes(), what="ca"))
    revoked = [NO_REVOCATIONS]
    g1, _ = guard(pki, "c1", book, revoked)
    g2, refusals = guard(pki, "c2", book, revoked)
    version = g1.sign(None, local_write(None, record(), here="c1", now=1.0), actor="c1")
    assert g2.refused(version, None) and count(refusals, "unknown-cert") == 1  # c1's certificate not known yet
    book.add_pems([cert_of(pki, "c1"), cert_of(pki, "c2")], source="test")
    assert not g2.refused(version, None)
    # c2 signing a version that says c1 wrote it
    forged = g2.sign(None, local_write(None, replace(record(), location="c2"), here="c1", now=2.0), actor="c1")
    assert g2.refused(forged, None) and count(refusals, "bad-signature") == 1
    # c1 revoked: its genuine new write is refused, as "revoked"
    ca.revoke(pki / "ca", cluster="c1")
    revoked[0] = load_crl((pki / "ca" / "crl.pem").read_bytes(), ca=book.ca)
    newer = g1.sign(version, local_write(version, replace(version, location="c2"), here="c1", now=3.0), actor="c1")
    assert vc.get_counter(newer.vclock, "c1") == 2
    assert g2.refused(newer, version) and count(refusals, "revoked") == 1
    assert not g2.refused(version, version)  # what c2 holds already still passes


def test_the_store_hook_signs_local_writes_and_refuses_forgeries(pki: Path) -> None:
    """Every path where versions arrive ends in RecordStore.apply_remote_many: the hook there."""
    from peer.records.store import RecordStore

    book = CertBook(load_cert((pki / "ca" / "ca.pem").read_bytes(), what="ca"))
    book.add_pems([cert_of(pki, "c1"), cert_of(pki, "c2")], source="test")
    g1, _ = guard(pki, "c1", book, [NO_REVOCATIONS])
    g2, refusals = guard(pki, "c2", book, [NO_REVOCATIONS])
    with RecordStore.open(pki / "c1.db") as s1, RecordStore.open(pki / "c2.db") as s2:
        s1.guard, s2.guard = g1, g2
        honest = s1.put_local(record(), here="c1", now=1.0)
        assert honest.writer == s1.clock_actor("c1") and honest.signature
        assert s2.apply_remote(honest, here="c2").changed
        forged = replace(honest, location="c2")
        outcome = s2.apply_remote_many([forged], here="c2")[0]
        assert not outcome.changed and outcome.result == honest and s2.get("web") == honest
        assert count(refusals, "bad-signature") == 1
        mine = s2.put_local(replace(honest, location="c2"), here="c2", now=2.0)  # c2's own write on top: fine
        assert not s1.apply_remote(mine, here="c1").conflict and s1.get("web") == mine


def test_a_batch_is_checked_ahead_on_two_threads_and_a_forgery_still_refused(pki: Path) -> None:
    """`prepare` (issues 16 and 19): the signatures a batch needs are verified ahead, half on a
    helper thread, and cached; `refused` then verifies nothing again. A forged version among
    them fails ahead too, is not cached, and `refused` refuses it with its reason."""
    from peer.trust import authorship

    book = CertBook(load_cert((pki / "ca" / "ca.pem").read_bytes(), what="ca"))
    book.add_pems([cert_of(pki, "c1"), cert_of(pki, "c2")], source="test")
    g1, _ = guard(pki, "c1", book, [NO_REVOCATIONS])
    g2, refusals = guard(pki, "c2", book, [NO_REVOCATIONS])
    versions = [g1.sign(None, local_write(None, replace(record(), name=f"web-{i}"), here="c1", now=1.0), actor="c1")
                for i in range(40)]
    forged = replace(versions[7], location="c2")
    batch = [*versions, forged]
    verified: list[str] = []
    real = authorship.verify_with

    def counted(cert: object, message: bytes, signature: bytes) -> bool:
        import threading
        verified.append(threading.current_thread().name)
        return real(cert, message, signature)  # type: ignore[arg-type]

    authorship.verify_with = counted  # type: ignore[assignment]
    try:
        g2.prepare([(v, None) for v in batch])
        ahead = len(verified)
        assert ahead == len(batch) and any(n.startswith("roam-verify") for n in verified)
        assert any(not n.startswith("roam-verify") for n in verified)
        assert [g2.refused(v, None) for v in versions] == [False] * len(versions)
        assert len(verified) == ahead  # all from the cache
        assert g2.refused(forged, None) and count(refusals, "bad-signature") == 1
        assert len(verified) == ahead + 1  # the forgery checked again, and refused
        g2.prepare([(versions[0], None)])  # a small batch: nothing ahead
        assert len(verified) == ahead + 1
    finally:
        authorship.verify_with = real  # type: ignore[assignment]


def test_a_clock_only_answer_is_checked_like_any_version(pki: Path) -> None:
    """Issue 16's clock-only push answer (batch.Reclocked): the pusher rebuilds the version from
    its own row under the peer's clock and stamps, and the guard checks it like any other: an
    entry of another cluster needs that cluster's stamp, or the version is refused."""
    from peer.records import record as rec
    from peer.records.batch import Reclocked
    from peer.records.store import RecordStore

    book = CertBook(load_cert((pki / "ca" / "ca.pem").read_bytes(), what="ca"))
    book.add_pems([cert_of(pki, "c1"), cert_of(pki, "c2")], source="test")
    g1, refusals = guard(pki, "c1", book, [NO_REVOCATIONS])
    g2, _ = guard(pki, "c2", book, [NO_REVOCATIONS])
    with RecordStore.open(pki / "c1.db") as s1, RecordStore.open(pki / "c2.db") as s2:
        s1.guard, s2.guard = g1, g2
        first = s1.put_local(record(), here="c1", now=1.0)
        s2.apply_remote(first, here="c2")
        mine = s1.put_local(replace(first, instance="127.0.150.21:1"), here="c1", now=2.0)  # c1's view (the HC)
        s2.put_local(replace(first, instance="127.0.150.22:1"), here="c2", now=2.0)  # concurrent at c2
        merged = s2.apply_remote(mine, here="c2").result  # c1's content wins, the clocks join
        assert rec.same_content(merged, mine) and merged.vclock != mine.vclock
        packed = rec.pack(mine)

        def answer(stamps: tuple[tuple[str, bytes, bytes], ...]) -> Reclocked:
            return Reclocked("web", packed, rec.digest_of_packed(packed), merged.vclock, stamps)

        forged = s1.apply_remote_many([answer(())], here="c1")[0]  # c2's entry without its stamp
        assert not forged.changed and s1.get("web") == mine and count(refusals, "unstamped") == 1
        honest = s1.apply_remote_many([answer(merged.stamps)], here="c1")[0]
        assert honest.changed and s1.get("web") == merged
