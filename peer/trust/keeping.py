"""The rules of keeping the automatic federation CA on several clusters (peer.trust.keepers
does the I/O): which CA wins, who becomes a deputy, how two keepers' indexes merge. Pure: no
I/O, no clock (model-tested with Hypothesis in tests/trust/test_keeping.py)."""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace

from peer.trust.ca import Issued


@dataclass(frozen=True, order=True)
class CaId:
    """Which automatic CA: ordered oldest first (then by fingerprint), the order a lone founder
    yields in. Advertised as the `cid` tag, `<founded, hex>.<8 hex digits>` (16 bytes or so)."""

    founded: int  # the CA certificate's notBefore, unix seconds
    fingerprint: str  # the first 8 hex digits of the SHA-256 of its DER

    def encode(self) -> str:
        return f"{self.founded:x}.{self.fingerprint}"

    @classmethod
    def decode(cls, text: str | None) -> CaId | None:
        if not text or text.count(".") != 1:
            return None
        founded, fingerprint = text.split(".")
        try:
            ok = len(fingerprint) == 8 and all(c in "0123456789abcdef" for c in fingerprint)
            return cls(int(founded, 16), fingerprint) if ok else None
        except ValueError:
            return None


def deputies(here: str, keepers: set[str], candidates: Iterable[str], want: int) -> list[str]:
    """Whom this keeper hands the CA to now. Only the first live keeper by name acts, so two
    keepers never pick at once; it picks the first members by name, up to `want` keepers."""
    if here not in keepers or here != min(keepers):
        return []
    return sorted(set(candidates) - keepers)[:max(0, want - len(keepers))]


def older_ca(own: CaId, seen: Iterable[CaId | None]) -> CaId | None:
    """The CA a lone founder yields to: the oldest seen, if older than its own."""
    oldest = min((s for s in seen if s is not None), default=None)
    return oldest if oldest is not None and oldest < own else None


def merge_index(own: list[Issued], theirs: list[Issued]) -> list[Issued]:
    """The union by serial; a certificate revoked on either side stays revoked (earliest time)."""
    merged = {i.serial: i for i in own}
    for entry in theirs:
        mine = merged.get(entry.serial)
        if mine is None:
            merged[entry.serial] = entry
        elif entry.revoked_at and (not mine.revoked_at or entry.revoked_at < mine.revoked_at):
            merged[entry.serial] = replace(mine, revoked_at=entry.revoked_at)
    return sorted(merged.values(), key=lambda i: (i.cluster, i.serial))


def revoke_listed(index: list[Issued], serials: frozenset[int], *, at: str) -> list[Issued]:
    """Mark what a revocation list revokes in the index (a list another keeper made)."""
    return [replace(i, revoked_at=at) if i.serial in serials and not i.revoked_at else i for i in index]


def lone(index: list[Issued], here: str) -> bool:
    """This CA has issued certificates to this cluster only: nobody else depends on it."""
    return all(i.cluster == here for i in index)
