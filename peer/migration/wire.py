"""Peer-API paths of the migration protocol and the record's wire form (msgpack, HMAC-signed)."""
from __future__ import annotations

from typing import Any

from peer.records import record as rec
from peer.records.record import Record

REPLICATE = "/peer/v1/migration/replicate"  # coordinator -> AC: descriptor + home info; AC admits or refuses
#   (with "standby": true the steward asks for a warm copy, peer/migration/standby.py)
STATUS = "/peer/v1/migration/status"        # coordinator -> AC: is the copy ready? (wait stage)
#   ("wait": seconds, a long poll: the AC answers when the copy is ready or failed, or then)
STATUS_WAIT_MAX = 10.0                      # the longest `wait` an AC accepts
ABORT = "/peer/v1/migration/abort"          # coordinator -> AC: drop the copy (rollback)
REROUTE = "/peer/v1/migration/reroute"      # coordinator -> HC: point the frontend at the AC, commit
RELEASE = "/peer/v1/migration/release"      # coordinator -> old location: here is the committed record
PING = "/peer/v1/ping"                      # fail-safe probe: is the peer's agent reachable?
ENTRY_OPEN = "/peer/v1/homes/open"          # creator or steward -> new entry: open a frontend for it
ROUTE = "/peer/v1/homes/route"              # steward -> entry: apply this record, route, then answer
FORWARD = "/peer/v1/homes/forward"          # any cluster -> steward: run this admin operation
LOOKUP = "/peer/v1/homes/lookup"            # creator -> everyone: do you hold this name?
HOLD = "/peer/v1/homes/hold"                # steward -> entry: hold (or release) requests to a service (handover)


def record_to_wire(record: Record) -> dict[str, Any]:
    return rec.encode(record)


def record_from_wire(data: object) -> Record:
    return rec.decode(data)
