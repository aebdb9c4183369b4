"""The anti-entropy messages of the peer API: builders and strict parsers. No I/O.

POST /peer/v1/records/digests  {"from", "lo", "hi", "digests": {name: digest}}
    -> {"digests": {name: digest | nil}}  only the names in [lo, hi) where the two sides differ
       (nil: the server does not hold it)
POST /peer/v1/records/push     {"from", "records": [record], "clocks": bool}
    -> {"records": [record], "conflicts": n, "clocks": [[name, vclock, stamps]]}  the server's
       version wherever it differs from the one pushed, and how many conflicts the push resolved
       there. With "clocks": true the pusher takes a shorter answer where the server's version
       is the pushed content under another clock (a conflict the pushed version won, or a
       newer clock joined): its name, clock and stamps only, packed, under "clocks"; the pusher
       rebuilds that version from the row it pushed (issue 16: the content is not sent and
       decoded back). A server that does not know "clocks" answers every version whole.
POST /peer/v1/records/fetch    {"from", "names": [name]}
    -> {"records": [record]}  those of the named records the asker is interested in
POST /peer/v1/records/summary  {"from", "summary": 16 bytes, "count": n}
    -> {"match": bool}  whether the server's digests of the records the asker is interested
       in hash to the same summary (`summary_of`): two peers in sync settle in one request

A record travels as its packed bytes (`record.pack`, what the store keeps), so a sender needs
no re-encoding and a receiver's generic msgpack check sees one bytes object per record
instead of a nested map; a record given as a map (`record.encode`, older peers) is accepted.

Parsers raise PeerWireError naming the field, which the peer middleware turns into a 400.
"""
from __future__ import annotations

import hashlib
from typing import Any, cast

import msgpack

from peer.packing import packb
from peer.peering.wire import PeerWireError
from peer.records import record as rec
from peer.records import vclock as vc
from peer.records.naming import MAX_SERVICE_LEN
from peer.records.record import Record
from peer.records.vclock import VClock

PATH_DIGESTS = "/peer/v1/records/digests"
PATH_PUSH = "/peer/v1/records/push"
PATH_FETCH = "/peer/v1/records/fetch"
PATH_SUMMARY = "/peer/v1/records/summary"
PATH_NAMES = "/peer/v1/records/names"
SUMMARY_LEN = 16
MAX_ITEMS = 50_000
DIGEST_LEN = 8


def _map(obj: object, *, what: str) -> dict[str, Any]:
    if not isinstance(obj, dict):
        raise PeerWireError(f"{what}: expected a map")
    return obj


def _sender(body: dict[str, Any]) -> str:
    sender = body.get("from")
    if not isinstance(sender, str) or not sender or len(sender) > rec.MAX_CLUSTER_LEN:
        raise PeerWireError("from: must be a cluster name")
    return sender


def _bound(body: dict[str, Any], key: str) -> str | None:
    value = body.get(key)
    if value is not None and (not isinstance(value, str) or len(value) > MAX_SERVICE_LEN):
        raise PeerWireError(f"{key}: must be a name or nil")
    return value


def _list(body: dict[str, Any], key: str) -> list[Any]:
    value = body.get(key)
    if not isinstance(value, list) or len(value) > MAX_ITEMS:
        raise PeerWireError(f"{key}: must be a list of <= {MAX_ITEMS} items")
    return value


def _digest_map(body: dict[str, Any], *, nil_ok: bool) -> dict[str, bytes | None]:
    value = body.get("digests")
    if not isinstance(value, dict) or len(value) > MAX_ITEMS:
        raise PeerWireError(f"digests: must be a map of <= {MAX_ITEMS} entries")
    for name, digest in value.items():
        if not isinstance(name, str) or len(name) > MAX_SERVICE_LEN or not (
            (isinstance(digest, bytes) and len(digest) == DIGEST_LEN) or (nil_ok and digest is None)
        ):
            raise PeerWireError(f"digests[{str(name)[:63]!r}]: must be {DIGEST_LEN} bytes")
    return value


def _records(body: dict[str, Any]) -> list[Record]:
    out: list[Record] = []
    for i, item in enumerate(_list(body, "records")):
        try:
            out.append(rec.unpack_sourced(item) if isinstance(item, bytes) else rec.decode(item))
        except rec.RecordDecodeError as exc:
            raise PeerWireError(f"records[{i}].{exc}") from exc
    return out


# --- digests -------------------------------------------------------------------------------

def digests_request(*, sender: str, lo: str | None, hi: str | None, digests: dict[str, bytes]) -> dict[str, Any]:
    return {"from": sender, "lo": lo, "hi": hi, "digests": digests}


def parse_digests_request(obj: object) -> tuple[str, str | None, str | None, dict[str, bytes]]:
    body = _map(obj, what="digests request")
    digests = _digest_map(body, nil_ok=False)
    return _sender(body), _bound(body, "lo"), _bound(body, "hi"), cast(dict[str, bytes], digests)


def digests_reply(differing: dict[str, bytes | None]) -> dict[str, Any]:
    return {"digests": differing}


def parse_digests_reply(obj: object) -> dict[str, bytes | None]:
    return _digest_map(_map(obj, what="digests reply"), nil_ok=True)


# --- push / fetch ----------------------------------------------------------------------------

def push_request(*, sender: str, records: list[bytes], clocks: bool = False) -> dict[str, Any]:
    """`records` already packed (rec.pack), so the caller can size batches; `clocks`: the
    pusher takes clock-only answers (see the module docstring)."""
    body: dict[str, Any] = {"from": sender, "records": records}
    if clocks:
        body["clocks"] = True
    return body


def parse_push_request(obj: object) -> tuple[str, list[Record]]:
    body = _map(obj, what="push request")
    return _sender(body), _records(body)


def push_takes_clocks(obj: object) -> bool:
    """Does this push request take clock-only answers?"""
    value = _map(obj, what="push request").get("clocks", False)
    if not isinstance(value, bool):
        raise PeerWireError("clocks: must be a boolean")
    return value


def fetch_request(*, sender: str, names: list[str]) -> dict[str, Any]:
    return {"from": sender, "names": names}


def parse_fetch_request(obj: object) -> tuple[str, list[str]]:
    body = _map(obj, what="fetch request")
    names = _list(body, "names")
    for i, name in enumerate(names):
        if not isinstance(name, str) or len(name) > MAX_SERVICE_LEN:
            raise PeerWireError(f"names[{i}]: must be a name")
    return _sender(body), names


def names_request(*, sender: str, names: dict[str, str]) -> dict[str, Any]:
    """The names homed at `sender` (bare) and their incarnations: see AntiEntropy.check_names."""
    return {"from": sender, "names": names}


def parse_names_request(obj: object) -> tuple[str, dict[str, str]]:
    body = _map(obj, what="names request")
    names = body.get("names")
    if not isinstance(names, dict) or len(names) > MAX_ITEMS:
        raise PeerWireError(f"names: must be a map of <= {MAX_ITEMS} entries")
    for name, incarnation in names.items():
        if not isinstance(name, str) or len(name) > MAX_SERVICE_LEN or not isinstance(incarnation, str) \
                or len(incarnation) > 64:
            raise PeerWireError(f"names[{str(name)[:63]!r}]: must map a name to an incarnation id")
    return _sender(body), names


def records_reply(records: list[Record], *, conflicts: int | None = None, clocks: list[Record] | None = None
                  ) -> dict[str, Any]:
    """`clocks`: versions answered by their name, clock and stamps alone (a push's answer)."""
    body: dict[str, Any] = {"records": [rec.pack(r) for r in records]}
    if conflicts is not None:
        body["conflicts"] = conflicts
    if clocks:  # (each packed on its own, as records are: the body's decode sees one bytes object)
        body["clocks"] = [packb([r.name, vc.encode(r.vclock), [list(s) for s in r.stamps]], use_bin_type=True)
                          for r in clocks]
    return body


Clocked = tuple[str, VClock, tuple[tuple[str, bytes, bytes], ...]]


def parse_clocks(obj: object) -> list[Clocked]:
    """The clock-only answers of a push reply: (name, clock, stamps); [] when there are none."""
    body = _map(obj, what="push reply")
    if "clocks" not in body:
        return []
    out: list[Clocked] = []
    for i, packed in enumerate(_list(body, "clocks")):
        try:
            item = msgpack.unpackb(packed, raw=False) if isinstance(packed, bytes) else None
        except Exception as exc:  # noqa: BLE001 - whatever msgpack raises on garbage
            raise PeerWireError(f"clocks[{i}]: not msgpack: {exc}") from exc
        if not isinstance(item, list) or len(item) != 3 or not isinstance(item[0], str) \
                or len(item[0]) > MAX_SERVICE_LEN:
            raise PeerWireError(f"clocks[{i}]: must be packed [name, clock, stamps]")
        try:
            out.append((item[0], vc.decode(item[1]), rec.decode_stamps(item[2])))
        except vc.VClockDecodeError as exc:
            raise PeerWireError(f"clocks[{i}].vclock: {exc}") from exc
        except rec.RecordDecodeError as exc:
            raise PeerWireError(f"clocks[{i}].{exc}") from exc
    return out


def clock_answers(obj: object) -> list[bytes]:
    """The clock-only answers of a push reply as packed (`parse_clocks`'s input, in its order:
    call that first, it checks them): the source of each version rebuilt from one (record.reclocked_source)."""
    body = _map(obj, what="push reply")
    return list(body.get("clocks", []))


def packed_records_reply(records: list[bytes]) -> dict[str, Any]:
    """`records_reply` of records the store holds packed already (RecordStore.packed_many)."""
    return {"records": records}


def parse_records_reply(obj: object) -> list[Record]:
    return _records(_map(obj, what="records reply"))


def parse_conflicts(obj: object) -> int:
    """The push reply's conflict count (0 when absent: an older peer)."""
    value = _map(obj, what="push reply").get("conflicts", 0)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise PeerWireError("conflicts: must be a count")
    return int(value)


# --- summary ---------------------------------------------------------------------------------

def summary_of(digests: dict[str, bytes]) -> bytes:
    """One hash of a whole {name: version digest} map, independent of its order."""
    h = hashlib.blake2b(digest_size=SUMMARY_LEN)
    for name in sorted(digests):
        h.update(name.encode())
        h.update(b"\0")
        h.update(digests[name])
    return h.digest()


def summary_request(*, sender: str, summary: bytes, count: int) -> dict[str, Any]:
    return {"from": sender, "summary": summary, "count": count}


def parse_summary_request(obj: object) -> tuple[str, bytes, int]:
    body = _map(obj, what="summary request")
    summary, count = body.get("summary"), body.get("count")
    if not isinstance(summary, bytes) or len(summary) != SUMMARY_LEN:
        raise PeerWireError(f"summary: must be {SUMMARY_LEN} bytes")
    if isinstance(count, bool) or not isinstance(count, int) or not 0 <= count <= 10 * MAX_ITEMS:
        raise PeerWireError("count: must be a count")
    return _sender(body), summary, count


def summary_reply(*, match: bool) -> dict[str, Any]:
    return {"match": match}


def parse_summary_reply(obj: object) -> bool:
    match = _map(obj, what="summary reply").get("match")
    if not isinstance(match, bool):
        raise PeerWireError("match: must be a boolean")
    return match
