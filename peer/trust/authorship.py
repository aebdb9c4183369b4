"""The agent's side of author-signed record versions: its key signs, the clusters' certificates
verify (the rules are peer/trust/signing.py).

Certificates (`CertBook`): a signature is trusted because the certificate whose key made it
was signed by the federation CA and names the cluster; a certificate arriving from anywhere is
checked for exactly that before it is kept, so whoever relays one cannot forge one. The book
holds this cluster's own, those peers present on mTLS connections, and those peers offer in
the revocation-list exchange (peer/trust/spread.py: every member's book fills within a few
rounds of seconds). Every certificate a cluster ever had is kept: versions signed before a
rotation stay verifiable. Expiry is not checked on signatures (they carry no trusted time);
revocation is, on every check: a revoked cluster's signatures fail (signing.py says how its
older, already known history still replicates).

`RecordGuard` is the store's `VersionGuard`: it signs local writes and checks remote versions,
logging each refusal with its reason and counting it in
`roam_record_versions_refused_total{reason}`. Successful checks are cached (an anti-entropy
round re-sends versions a receiver may have checked already from another peer).
"""
from __future__ import annotations

import concurrent.futures
import logging
import os
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from peer.runtime.lazyimport import lazy
from peer.records import record as rec
from peer.records import vclock as vc
from peer.records.naming import base_name
from peer.records.record import Record
from peer.trust import signing
from peer.trust.certs import Revocations, TrustError, check_issued_by, cluster_of, load_cert

if TYPE_CHECKING:  # identity imports this module (its CertBook)
    from cryptography import exceptions, x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec, ed25519

    from peer.runtime.metrics import Metrics
    from peer.trust.identity import Identity
else:  # loaded on first use: only an agent with an identity signs or checks (peer.runtime.lazyimport)
    exceptions = lazy("cryptography.exceptions")
    x509 = lazy("cryptography.x509")
    hashes = lazy("cryptography.hazmat.primitives.hashes")
    serialization = lazy("cryptography.hazmat.primitives.serialization")
    ec = lazy("cryptography.hazmat.primitives.asymmetric.ec")
    ed25519 = lazy("cryptography.hazmat.primitives.asymmetric.ed25519")

log = logging.getLogger(__name__)

CACHE_MAX = 200_000
PARALLEL_MIN = 16  # signatures to check in a batch before `prepare` splits them over two threads
LOG_EVERY = 10.0
MAX_OFFERED = 256  # certificates taken from one exchange
PENDING_MAX = 25_000  # versions or stamps taken on channel authority awaiting `audit` (about 2 KB each); past it, checked at once


# Taken on channel authority: a whole version (a Record, or the bytes it was rebuilt from:
# record.source_of), or one stamp (message, signature).
Pending = Record | bytes | tuple[bytes, bytes]


class CertBook:
    """Cluster certificates verified against the CA, by cluster and serial; with `path`, kept
    across restarts (appended as they come, checked again when read back). Why: a restarted
    agent that does not know a writer's certificate yet refuses that writer's record versions,
    and its catch-up would then act on its own stale records."""

    def __init__(self, ca: x509.Certificate, *, path: Path | None = None) -> None:
        self.ca = ca
        self._by_cluster: dict[str, dict[int, x509.Certificate]] = {}
        self._pems: dict[int, bytes] = {}
        self._known: set[bytes] = set()
        self._keys: dict[bytes, int] = {}  # short key (certificate_key) -> serial, for exchanges by key
        self._path: Path | None = None  # set after loading: what is read back is not appended again
        if path is not None:
            self._load(path)
            self._path = path

    def _load(self, path: Path) -> None:
        try:
            bundle = path.read_bytes()
        except FileNotFoundError:
            return
        except OSError as exc:
            log.warning("stored certificates %s not read: %s", path, exc)
            return
        begin, end = b"-----BEGIN CERTIFICATE-----", b"-----END CERTIFICATE-----"
        for chunk in bundle.split(end)[:-1]:  # a last piece without its end line: a torn append
            pem = begin + chunk.rpartition(begin)[2].rstrip() + b"\n" + end + b"\n"  # torn bytes before it skipped
            try:
                self.add(load_cert(pem, what=str(path)), pem=pem)
            except TrustError as exc:
                log.warning("a stored certificate in %s is skipped: %s", path, exc)

    def add(self, cert: x509.Certificate, *, pem: bytes | None = None) -> bool:
        """Keep a certificate if the CA issued it (TrustError otherwise); True if it is new."""
        if cert.serial_number in self._pems:
            return False
        check_issued_by(cert, self.ca, what="certificate")
        cluster = cluster_of(cert)
        self._by_cluster.setdefault(cluster, {})[cert.serial_number] = cert
        self._pems[cert.serial_number] = pem or cert.public_bytes(serialization.Encoding.PEM)
        self._known.add(self._pems[cert.serial_number])
        self._keys[certificate_key(cert)] = cert.serial_number
        log.debug("certificate of cluster %s (serial %x) known for record signatures", cluster, cert.serial_number)
        if self._path is not None:
            try:
                fd = os.open(self._path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
                try:
                    os.write(fd, self._pems[cert.serial_number].rstrip(b"\n") + b"\n")
                finally:
                    os.close(fd)
            except OSError as exc:
                log.warning("certificate of %s not stored in %s: %s", cluster, self._path, exc)
        return True

    def add_pems(self, pems: Iterable[object], *, source: str) -> int:
        """Certificates offered by a peer: those the CA issued are kept; the count of new ones."""
        added = 0
        for pem in list(pems)[:MAX_OFFERED]:
            if not isinstance(pem, bytes) or pem in self._known:
                continue
            try:
                added += self.add(load_cert(pem, what=f"certificate from {source}"), pem=pem)
            except TrustError as exc:
                log.warning("certificate offered by %s refused: %s", source, exc)
        return added

    def knows(self, serial: int | None) -> bool:
        return serial is not None and serial in self._pems

    def of(self, cluster: str) -> list[x509.Certificate]:
        return list(self._by_cluster.get(cluster, {}).values())

    def pems(self) -> list[bytes]:
        return list(self._pems.values())

    def keys(self) -> list[bytes]:
        """The short keys of every certificate held: what a peer compares with its own, so the
        certificates themselves cross the wire only towards a peer that lacks them (issue 18)."""
        return list(self._keys)

    def lacks_any(self, keys: Iterable[object]) -> bool:
        """Whether a peer's `keys()` name a certificate this book does not hold."""
        return any(k not in self._keys for k in keys if isinstance(k, bytes))

    def pems_not_in(self, keys: Iterable[object]) -> list[bytes]:
        """The certificates held here whose keys are not among `keys` (a peer's `keys()`)."""
        theirs = {k for k in keys if isinstance(k, bytes)}
        return [self._pems[serial] for key, serial in self._keys.items() if key not in theirs]


def certificate_key(cert: x509.Certificate) -> bytes:
    """A certificate's short key: the first 8 bytes of its SHA-256 fingerprint. A collision
    (odds about n^2 / 2^65) only means a certificate is not offered; each agent still learns a
    peer's own certificate from its mTLS handshake."""
    return cert.fingerprint(hashes.SHA256())[:8]


def sign_with(key: Any, message: bytes) -> bytes:
    """Sign with a cluster key (EC P-256 as `roam ca` issues; Ed25519 also accepted)."""
    if isinstance(key, ec.EllipticCurvePrivateKey):
        return key.sign(message, ec.ECDSA(hashes.SHA256()))
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return key.sign(message)
    raise TrustError(f"cluster key of type {type(key).__name__} cannot sign records")


_PUBLIC_KEYS: dict[int, tuple[Any, Any]] = {}  # id(certificate) -> (the certificate, its public key)
PUBLIC_KEYS_MAX = 4096


def public_key_of(cert: x509.Certificate) -> Any:
    """`cert.public_key()`, built once per certificate (the book's live as long as the agent).
    Debian's cryptography 38 builds the key anew at each call, 0.15 ms against PyPI's 0.7 us:
    once per verified stamp it put 1-2.5 ms on a migration's commit (bench/migration.py)."""
    held = _PUBLIC_KEYS.get(id(cert))
    if held is None or held[0] is not cert:
        if len(_PUBLIC_KEYS) >= PUBLIC_KEYS_MAX:
            _PUBLIC_KEYS.clear()
        held = _PUBLIC_KEYS[id(cert)] = (cert, cert.public_key())
    return held[1]


def verify_with(cert: x509.Certificate, message: bytes, signature: bytes) -> bool:
    key = public_key_of(cert)
    try:
        if isinstance(key, ec.EllipticCurvePublicKey):
            key.verify(signature, message, ec.ECDSA(hashes.SHA256()))
        elif isinstance(key, ed25519.Ed25519PublicKey):
            key.verify(signature, message)
        else:
            return False
    except exceptions.InvalidSignature:
        return False
    return True


class RecordGuard:
    """Signs local writes with this cluster's key and checks remote versions (store hook)."""

    def __init__(self, *, key: Any, book: CertBook, revocations: Any, refusals: Any, vouched: Any = None) -> None:
        """`key()` is the current private key (rotation reloads it), `revocations()` the list
        in force, `refusals` a Counter labelled by reason (peer.runtime.promtext; prometheus_client's in tests),
        `vouched` a Counter of the versions taken on channel authority (`refused`), if any."""
        self.key = key
        self.book = book
        self.revocations = revocations
        self.refusals = refusals
        self._checked: dict[tuple[bytes, bytes], int] = {}  # (message, signature) -> serial that verified it
        self._logged: dict[tuple[str, str], float] = {}
        self.refused_total = 0
        self.vouched = vouched
        self.vouched_total = 0  # versions taken with some stamp on channel authority
        # What was taken on channel authority, not verified yet: cluster -> key -> (base name, a
        # stamp as (message, signature) or a whole version); how many per base name and in all;
        # the clusters caught sending a stamp that failed.
        self._pending: dict[str, dict[object, tuple[str, Pending]]] = {}
        self._bases: dict[str, int] = {}
        self._count = 0
        self.distrusted: set[str] = set()
        # (`_vouch`'s last answer: channel, revocation list, distrusted count, the vouch function)
        self._vouches: tuple[signing.Channel, Revocations, int, Callable[[str], bool]] | None = None
        self._lock = threading.Lock()

    def sign(self, previous: Record | None, stored: Record, *, actor: str) -> Record:
        key = self.key()
        return signing.sign_write(previous, stored, actor=actor, sign=lambda m: sign_with(key, m))

    def refused(self, remote: Record, held: Record | None, *, channel: signing.Channel | None = None) -> bool:
        """Is `remote` refused (logged and counted)? `channel`: the mTLS connection it came on;
        the stamps of the cluster it names are taken on its authority (signing.vouches), kept
        pending until `audit` verifies them."""
        taken: list[tuple[str, bytes, bytes]] = []
        vouch = self._vouch(channel)
        if channel is not None and signing.taken_on_channel(remote, vouch, held):
            # (held as its source bytes where it has one: untracked by the cyclic collector; two
            # sources of one version are held and audited twice, to the same answer)
            source = rec.source_of(remote)
            if source is not None:
                self._hold([(channel.cluster, source, source)], base_name(remote.name))
            else:
                self._hold([(channel.cluster, (remote.name, remote.signature, remote.stamps), remote)],
                           base_name(remote.name))
            return False

        def verify(cluster: str, message: bytes, signature: bytes) -> str | None:
            if vouch(cluster):
                if (message, signature) not in self._checked:
                    taken.append((cluster, message, signature))
                return None
            return self._verify(cluster, message, signature)

        why = signing.refusal(remote, held, verify=verify)
        if why is None:
            if taken:
                self._hold([(cluster, (message, signature), (message, signature))
                            for cluster, message, signature in taken], base_name(remote.name))
            return False
        self.refused_total += 1
        self.refusals.labels(reason=why.kind).inc()
        now = time.monotonic()
        key = (remote.name, why.kind)
        if now - self._logged.get(key, -LOG_EVERY) >= LOG_EVERY:
            self._logged[key] = now
            log.warning("record version refused (%s): %s", why.kind, why.message)
        return True

    def _vouch(self, channel: signing.Channel | None) -> Callable[[str], bool]:
        """`signing.vouches` for `channel`, its answer per cluster remembered while the channel,
        the revocation list in force (immutable: a new list is a new object) and the distrusted
        clusters (they only grow) stay the same: a batch asks it several times per version
        (`prepare`, `refused`), with the same channel throughout."""
        if channel is None or self._count >= PENDING_MAX:  # (full: `audit` is overdue; check now)
            return _never
        revoked: Revocations = self.revocations()
        memo = self._vouches
        if memo is not None and memo[0] is channel and memo[1] is revoked and memo[2] == len(self.distrusted):
            return memo[3]
        answers: dict[str, bool] = {}
        distrusted = self.distrusted

        def vouch(cluster: str) -> bool:
            known = answers.get(cluster)
            if known is None:
                known = answers[cluster] = signing.vouches(channel, cluster, revoked=revoked.revoked,
                                                           distrusted=distrusted)
            return known

        self._vouches = (channel, revoked, len(distrusted), vouch)
        return vouch

    def _hold(self, taken: list[tuple[str, object, Pending]], base: str) -> None:
        """Keep what was taken on channel authority for `audit`: (cluster, key, what to verify)."""
        with self._lock:
            for cluster, key, item in taken:
                held = self._pending.setdefault(cluster, {})
                if key not in held:
                    held[key] = (base, item)
                    self._bases[base] = self._bases.get(base, 0) + 1
                    self._count += 1
            self.vouched_total += 1
        if self.vouched is not None:
            self.vouched.inc()

    def pending(self, base: str) -> bool:
        """Has a version of this service (its base name) a stamp taken on channel authority
        and not verified yet?"""
        return base in self._bases

    def audit(self, exclude: str | None = None, *, only: str | None = None) -> set[str] | None:
        """Verify the stamps taken on channel authority (all but those of `exclude`: the peer
        about to receive them back knows its own), on two threads like `prepare`; called
        before versions are relayed. A stamp that does not verify means its cluster sent a
        version it had not signed: that cluster loses channel authority (every version it
        sends is verified from then on) and the base names of those versions are returned,
        for the store to put back what it held before (RecordStore.audit). A stamp whose
        certificate is not known yet stays pending; one of a cluster revoked since counts as
        history (signing.py). None if there was nothing to verify. `only`: the versions of that
        service (base name) alone (before a local write on top of them)."""
        with self._lock:
            wanted = [(cluster, key, base, item) for cluster, held in self._pending.items() if cluster != exclude
                      for key, (base, item) in held.items() if only is None or base == only]
        if not wanted:
            return None
        expanded = [_pending_checks(cluster, item) for cluster, _, _, item in wanted]
        checks = [check for group in expanded for check in group]
        if len(checks) >= PARALLEL_MIN:
            half = len(checks) // 2
            other = _helper().submit(self._verify_each, checks[half:])
            self._verify_each(checks[:half])
            other.result()
        failed: set[str] = set()
        for (cluster, key, base, _), group in zip(wanted, expanded):
            whys = [self._verify(*check) for check in group]  # (cached when it held: failures are checked again)
            false = [(check[0], w) for check, w in zip(group, whys) if w is not None and w.startswith("bad-signature")]
            why = false[0][1] if false else None
            if why is None and any(w is not None and w.startswith("unknown-cert") for w in whys):
                continue  # (checked again at the next audit, once the certificate is known)
            with self._lock:
                if self._pending.get(cluster, {}).pop(key, None) is None:
                    continue
                if not self._pending[cluster]:
                    del self._pending[cluster]
                self._count -= 1
                self._bases[base] -= 1
                if not self._bases[base]:
                    del self._bases[base]
            if why is not None:
                failed.add(base)
                cluster = false[0][0]  # (the false stamp's own: a version may carry one held here already)
                self.distrusted.add(cluster)
                self.refused_total += 1
                self.refusals.labels(reason="channel-bad-signature").inc()
                log.error("cluster %s sent a version of %s whose own stamp does not verify (%s): it was taken "
                          "on the mTLS channel's authority and is undone; every version from %s is verified "
                          "from now on", cluster, base, why, cluster)
        return failed

    def prepare(self, pairs: Sequence[tuple[Record, Record | None]], *,
                channel: signing.Channel | None = None) -> None:
        """Check ahead, on two threads, the signatures `refused` will ask about for these
        versions (each with what the receiver holds under its name): a dry run of the rules
        lists them, the ones not checked already are verified half here, half on a helper
        thread, and what holds is cached, so `refused` then finds each in the cache.
        pyca/cryptography verifies without the GIL, so the two halves run in parallel on two
        cores (measured: 1.85 times one thread). Nothing is decided here: a signature that
        fails is not cached and `refused` checks it again, and refuses. Stamps the `channel`
        vouches for are not listed."""
        listed: dict[tuple[bytes, bytes], str] = {}
        vouch = self._vouch(channel)

        def note(cluster: str, message: bytes, signature: bytes) -> str | None:
            if not vouch(cluster) and (message, signature) not in self._checked:
                listed[message, signature] = cluster
            return None  # (as if it held: the dry run goes on to list the rest)

        for remote, held in pairs:
            if channel is not None and not _may_verify(remote, held, vouch):
                continue  # (its stamps are the channel's or held here already: likely nothing to check)
            signing.refusal(remote, held, verify=note)
        wanted = [(cluster, message, signature) for (message, signature), cluster in listed.items()]
        if len(wanted) < PARALLEL_MIN:
            return  # (`refused` checks these few one by one)
        half = len(wanted) // 2
        other = _helper().submit(self._verify_each, wanted[half:])
        self._verify_each(wanted[:half])
        other.result()

    def _verify_each(self, checks: list[tuple[str, bytes, bytes]]) -> None:
        for cluster, message, signature in checks:
            self._verify(cluster, message, signature)

    def _verify(self, cluster: str, message: bytes, signature: bytes) -> str | None:
        revoked: Revocations = self.revocations()
        cached = self._checked.get((message, signature))
        if cached is not None and not revoked.revoked(cached):
            return None
        certs = self.book.of(cluster)
        if not certs:
            return f"unknown-cert: no certificate of cluster {cluster} known here (yet)"
        live = [c for c in certs if not revoked.revoked(c.serial_number)]
        if not live:  # "revoked" only for its genuine signature (signing.endorsed relies on it)
            if any(verify_with(c, message, signature) for c in certs):
                return f"revoked: cluster {cluster}'s certificate is revoked"
            return f"bad-signature: not signed by cluster {cluster}"
        for cert in live:
            if verify_with(cert, message, signature):
                if len(self._checked) >= CACHE_MAX:
                    self._checked.clear()
                self._checked[(message, signature)] = cert.serial_number
                return None
        return f"bad-signature: not signed by cluster {cluster}"


def _pending_checks(cluster: str, item: Pending) -> list[tuple[str, bytes, bytes]]:
    """(cluster, message, signature) of what `item` holds pending (`Pending`): every stamp of a
    whole version, or the one stamp. A version held as its source is rebuilt first (equal to
    the one taken: record.from_source); a source that no longer decodes fails its check."""
    if isinstance(item, Record):
        return signing.stamp_checks(item)
    if isinstance(item, bytes):
        try:
            return signing.stamp_checks(rec.from_source(item))
        except rec.RecordDecodeError:
            return [(cluster, b"", b"")]  # (verifies as nothing: "bad-signature", as a false stamp)
    return [(cluster, *item)]


def _never(cluster: str) -> bool:
    """No channel, or too much pending: nothing is vouched for."""
    return False


def _may_verify(remote: Record, held: Record | None, vouch: Callable[[str], bool]) -> bool:
    """Has `remote` a clock entry that is neither the channel's cluster's nor at or below what
    `held` has (where `refusal` skips it, or finds the same stamp)? A cheap look ahead for
    `prepare` (it decides nothing: `refused` checks whatever it must)."""
    same = held is not None and held.incarnation == remote.incarnation
    for entry in remote.vclock.entries:
        if vouch(vc.cluster_of(entry.node)):
            continue
        if same and vc.get_counter(held.vclock, entry.node) >= entry.counter:  # type: ignore[union-attr]
            continue
        return True
    return False


_HELPER: concurrent.futures.ThreadPoolExecutor | None = None


def _helper() -> concurrent.futures.ThreadPoolExecutor:
    """The one thread that verifies the other half of a batch's signatures (`prepare`); made
    on first use, so an agent that never receives a big signed batch has none."""
    global _HELPER
    if _HELPER is None:
        _HELPER = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="roam-verify")
    return _HELPER


def record_guard(identity: Identity, metrics: Metrics) -> RecordGuard:
    """The guard of an agent with an identity: its current key, its book and revocation list."""
    return RecordGuard(key=lambda: identity.signing_key, book=identity.certs,
                       revocations=lambda: identity.revocations, refusals=metrics.record_refusals,
                       vouched=metrics.record_vouched)
