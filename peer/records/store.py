"""The durable record store: SQLite in WAL mode with synchronous=FULL, one file per agent.

Every method that changes something commits before it returns, so what a caller was told is
stored survives a crash (SIGKILL, power loss) of the agent. Calls block for well under a
millisecond plus one fsync per commit, and the agent makes most on its event loop; a batch of
remote versions is one transaction (`apply_remote_many`), which anti-entropy runs in a worker
thread (peer/records/antientropy.py). A lock serialises them and the connection may be used
from any thread. `packed_many` (what a push or a fetch sends) reads through a second, read-only
connection of its own instead: WAL lets it read the last commit while a batch's transaction
runs, so a round's next push batch is not held up by the merge of the last answer (issue 16).

Besides records: tombstone acknowledgements (for `droppable`), a small `meta` key/value table
for the agent, the finished migrations (`history_*`, bounded rows), and a `journal` the
migration engine writes ahead of each step.
"""
from __future__ import annotations

import logging
import secrets
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, Self, cast

import msgpack

from peer.errors import RoamError
from peer.packing import packb
from peer.records import record as rec
from peer.records import vclock as vc
from peer.records.batch import IN_CHUNK, HeldRows, Reclocked, batch_names
from peer.records.merge import MergeOutcome, SupersededWrite, droppable, local_write, place, superseded
from peer.records.naming import base_name, is_qualified
from peer.records.record import Record
from peer.trust.signing import Channel, body_digest, known_body_digest, restore_body_digest
from peer.runtime.gcpause import collector_paused

log = logging.getLogger(__name__)


class VersionGuard(Protocol):
    """Author-signed versions (issue 19, peer/trust/authorship.py), set only with an identity:
    signs each local write, refuses a remote version whose signatures do not hold (it logs
    and counts why)."""

    def sign(self, previous: Record | None, stored: Record, *, actor: str) -> Record: ...

    def refused(self, remote: Record, held: Record | None, *, channel: Channel | None = None) -> bool: ...

    def prepare(self, pairs: Sequence[tuple[Record, Record | None]], *, channel: Channel | None = None) -> None:
        """Warm up for a batch: `refused` will be asked about each (remote, held) pair next."""

    def pending(self, base: str) -> bool:
        """Some stamp of a version of this service was taken on channel authority, unverified."""

    def audit(self, exclude: str | None = None, *, only: str | None = None) -> set[str] | None:
        """Verify the stamps taken on channel authority (not those of `exclude`; of the
        service `only`, if given); the base names of versions whose stamps failed (None:
        nothing to verify)."""


#: Schema migrations, applied in order; PRAGMA user_version = how many have run.
MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE records (
        name TEXT PRIMARY KEY,
        home TEXT NOT NULL,
        location TEXT NOT NULL,
        tombstone INTEGER NOT NULL,
        digest BLOB NOT NULL,
        data BLOB NOT NULL
    ) WITHOUT ROWID;
    CREATE INDEX records_home ON records(home);
    CREATE INDEX records_location ON records(location);
    CREATE TABLE tombstone_acks (
        name TEXT NOT NULL,
        peer TEXT NOT NULL,
        digest BLOB NOT NULL,
        PRIMARY KEY (name, peer)
    ) WITHOUT ROWID;
    CREATE TABLE meta (key TEXT PRIMARY KEY, value BLOB NOT NULL) WITHOUT ROWID;
    CREATE TABLE journal (
        migration_id TEXT PRIMARY KEY,
        data BLOB NOT NULL,
        open INTEGER NOT NULL,
        updated_at REAL NOT NULL
    );
    """,
    # The home set: a record interests every entry, not only its home (see record.interested).
    """
    ALTER TABLE records ADD COLUMN parties TEXT NOT NULL DEFAULT '';
    UPDATE records SET parties = ',' || home || ',' || location || ',';
    """,
    # Migration history as rows: finishing one appends a row, not a rewrite of the whole list.
    """
    CREATE TABLE history (seq INTEGER PRIMARY KEY AUTOINCREMENT, data BLOB NOT NULL);
    """,
    # Anti-entropy's scans (issue 16): the digests of a peer's records read a covering index
    # (about 40 bytes a row) instead of every row with its packed record; the tombstones,
    # looked up at every acknowledgement, are a partial index.
    """
    CREATE INDEX records_parties ON records(parties, digest);
    CREATE INDEX records_tombstones ON records(tombstone) WHERE tombstone=1;
    """,
    # No query reads by home or location alone (the parties index serves anti-entropy): these
    # two indexes only cost every row write, about a fifth of it (issue 16, concurrent rounds).
    """
    DROP INDEX IF EXISTS records_home;
    DROP INDEX IF EXISTS records_location;
    """,
    # The content's signing digest (signing.body_digest) beside the row, when it was known at the
    # write (NULL: not known, hashed when needed): a signed conflict's merge and a rebuilt
    # clock-only answer each hash a held row's content otherwise (issue 16, signed rounds).
    """
    ALTER TABLE records ADD COLUMN body BLOB;
    """,
)
SCHEMA_VERSION = len(MIGRATIONS)


class StoreError(RoamError):
    """The record store cannot be used."""


class StoreVersionError(StoreError):
    """The file was written by a newer roam (schema version above what this code knows)."""


class StoreCorruptError(StoreError):
    """A stored row does not decode."""


@dataclass(frozen=True)
class PreparedWrite:
    """A local write computed ahead (`RecordStore.prepare_local`): the version `put_local`
    would store for `record` (clock advanced, signed), and the row it was built on."""

    record: Record  # what was asked to be written
    stored: Record  # the version built on `previous`
    previous: bytes | None  # the packed row held then (None: none)
    actor: str


def _pack(obj: object) -> bytes:
    data: bytes = packb(obj, use_bin_type=True)
    return data


def _unpack(data: bytes) -> Any:
    return msgpack.unpackb(data, raw=False)


def _parties(record: Record) -> str:
    """",c1,c2,c3," of the clusters interested in the record, for a LIKE filter (names are
    DNS-1123 labels: no commas, no LIKE wildcards)."""
    if record.homes in ((), (record.home,)) and not record.standbys:  # (most records: home and location)
        home, location = record.home, record.location
        if home == location:
            return f",{home},"
        return f",{home},{location}," if home < location else f",{location},{home},"
    return "," + ",".join(sorted(rec.interested(record))) + ","


CLOCK_EPOCH_KEY = "clock_epoch"
PAGE_SIZE = 16384
READER_CACHE_KIB = 512


def _large_pages(conn: sqlite3.Connection, path: Path) -> None:
    """16 KiB pages, not SQLite's 4 KiB: a row holds a whole packed record (about 500 bytes),
    so a 4 KiB leaf holds few and an anti-entropy batch that rewrites 10,000 rows touches, splits
    and logs four times as many pages (measured: the batch's reads and writes 105 -> 69 ms; issue
    16). A new file is made so; an older one is rebuilt once (VACUUM, outside WAL, before the
    agent uses it). Should that fail (the file busy), the store works on with the pages it has."""
    if conn.execute("PRAGMA page_size").fetchone()[0] >= PAGE_SIZE:
        return
    try:
        held = conn.execute("SELECT count(*) FROM sqlite_master").fetchone()[0] > 0
        if held:
            conn.execute("PRAGMA journal_mode=DELETE")
        conn.execute(f"PRAGMA page_size={PAGE_SIZE}")
        if held:
            conn.execute("VACUUM")
            log.info("%s rebuilt with %d-byte pages", path, conn.execute("PRAGMA page_size").fetchone()[0])
    except sqlite3.Error as exc:
        log.warning("%s keeps its page size (%s)", path, exc)


CONFLICTS_LOGGED = 5  # conflicts of one batch logged each at WARNING; the rest in one line


def _log_conflicts(conflicts: list[tuple[Record, MergeOutcome]]) -> None:
    """Each conflict of a batch says what was kept and what dropped, at WARNING for the first
    CONFLICTS_LOGGED and at DEBUG past them, with one WARNING line counting the rest: a
    partition's heal can resolve thousands at once, and a line to a log file costs about 18 us
    (measured): with the manager's line beside it, 0.36 s of an agent's CPU for a round of
    10,000 conflicts, and 20,000 lines of log (the manager's line is now at DEBUG)."""
    for i, (remote, outcome) in enumerate(conflicts):
        level = logging.WARNING if i < CONFLICTS_LOGGED else logging.DEBUG
        if not log.isEnabledFor(level):
            break
        won = outcome.result
        lost = remote if outcome.previous is None or outcome.previous.written == won.written else outcome.previous
        log.log(level, "record conflict on %s: kept location=%s tombstone=%s written=%s, dropped location=%s written=%s",
                won.name, won.location, won.tombstone, won.written, lost.location, lost.written)
    if len(conflicts) > CONFLICTS_LOGGED:
        more = [outcome.result.name for _, outcome in conflicts[CONFLICTS_LOGGED:]]
        log.warning("%d more record conflicts in this batch, resolved by the same rule (%s%s; each at DEBUG)",
                    len(more), ", ".join(more[:CONFLICTS_LOGGED]), ", ..." if len(more) > CONFLICTS_LOGGED else "")


class RecordStore:
    def __init__(self, conn: sqlite3.Connection, path: Path) -> None:
        self._conn = conn
        self._lock = threading.RLock()
        self.path = path
        self.fresh = False  # held no record when opened: a new cluster, or one whose records were lost
        self._epoch: str | None = None
        # Called after every commit that changed a record (any thread): the watchers that sleep
        # while they have nothing to watch wake on it (peer.runtime.wake).
        self.on_change: list[Callable[[], None]] = []
        self.guard: VersionGuard | None = None  # with an identity: signs and checks versions
        # The row each name held before a version taken on channel authority changed it (None:
        # no row), until the guard's audit verifies that version's stamps (`audit`).
        self._before_vouched: dict[str, bytes | None] = {}
        # Every `name@home` (naming.qualified) held, and maybe some dropped since: a batch looks
        # up the twin of each bare name it merges only if it is here (`apply_remote_many`).
        self._qualified: set[str] = set()
        self._reader: sqlite3.Connection | None = None  # (packed_many's own: `open_reader`)
        self._reader_lock = threading.Lock()

    def open_reader(self) -> None:
        """The read-only connection `packed_many` reads through (after the schema is current).
        A small page cache of its own: it reads each row once per round."""
        reader = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=10.0)
        reader.execute("PRAGMA query_only=ON")
        reader.execute(f"PRAGMA cache_size=-{READER_CACHE_KIB}")
        self._reader = reader

    @classmethod
    def open(cls, path: Path) -> RecordStore:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=10.0)
            conn.execute("PRAGMA synchronous=FULL")
            _large_pages(conn, path)
            mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if mode != "wal":
                raise StoreError(f"{path}: cannot switch to WAL (journal_mode={mode})")
            conn.execute("PRAGMA foreign_keys=ON")
            store = cls(conn, path)
            store._migrate()
            store._qualified = {name for (name,) in conn.execute("SELECT name FROM records WHERE name LIKE '%@%'")}
            store._init_clock_epoch()
            store.open_reader()
        except sqlite3.Error as exc:
            raise StoreError(f"{path}: {exc}") from exc
        return store

    def close(self) -> None:
        with self._reader_lock:
            if self._reader is not None:
                self._reader.close()
                self._reader = None
        with self._lock:
            self._conn.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _migrate(self) -> None:
        version = self._conn.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise StoreVersionError(f"{self.path}: schema version {version} is newer than {SCHEMA_VERSION}")
        for number in range(version, SCHEMA_VERSION):
            with self._tx() as cur:
                for statement in MIGRATIONS[number].split(";"):
                    if statement.strip():
                        cur.execute(statement)
                cur.execute(f"PRAGMA user_version={number + 1}")

    def _init_clock_epoch(self) -> None:
        """Draw this data dir's clock epoch once, when the file holds no record yet (vclock's
        docstring says why). A store that held records before epochs existed keeps none: its
        history is intact and its bare cluster name is still a safe actor."""
        with self._lock:
            empty = self._conn.execute("SELECT 1 FROM records LIMIT 1").fetchone() is None
        self.fresh = empty
        epoch = self.meta_get(CLOCK_EPOCH_KEY)
        if empty and epoch is None:
            epoch = secrets.token_hex(6)
            self.meta_put(CLOCK_EPOCH_KEY, epoch)
        self._epoch = epoch if isinstance(epoch, str) else None

    def clock_actor(self, here: str) -> str:
        """The vclock node this data dir writes under: `here~epoch` (`here` for older stores)."""
        return vc.actor_id(here, self._epoch)

    def schema_version(self) -> int:
        with self._lock:
            return int(self._conn.execute("PRAGMA user_version").fetchone()[0])

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Cursor]:
        """One write transaction; BEGIN IMMEDIATE takes the write lock up front."""
        with self._lock:
            cur = self._conn.cursor()
            try:
                cur.execute("BEGIN IMMEDIATE")
                yield cur
                cur.execute("COMMIT")
            except BaseException as exc:
                if self._conn.in_transaction:
                    self._conn.rollback()
                if isinstance(exc, sqlite3.Error):
                    raise StoreError(f"{self.path}: {exc}") from exc
                raise

    # --- records ----------------------------------------------------------------------------

    @staticmethod
    def _decode_row(name: str, data: bytes, body: bytes | None = None) -> Record:
        """The Record of a row; `body`: the row's `body` column (its content's signing digest,
        if it was known when written), kept on the Record so it is not hashed again."""
        try:
            record = rec.unpack_stored(data)
        except rec.RecordDecodeError as exc:
            raise StoreCorruptError(f"record {name!r}: {exc}") from exc
        if body is not None:
            restore_body_digest(record, body)
        return record

    def _get(self, cur: sqlite3.Cursor, name: str) -> Record | None:
        row = cur.execute("SELECT data, body FROM records WHERE name=?", (name,)).fetchone()
        return None if row is None else self._decode_row(name, row[0], row[1])

    @staticmethod
    def _row(record: Record) -> tuple[str, str, str, int, bytes, bytes, str, bytes | None]:
        """The row of `record`: packed once, its version digest hashed from those bytes; its
        content's signing digest if the Record has it already (none is computed here)."""
        data = rec.pack(record)
        return (record.name, record.home, record.location, int(record.tombstone),
                rec.digest_of_packed(data), data, _parties(record), known_body_digest(record))

    _INSERT = ("INSERT OR REPLACE INTO records(name, home, location, tombstone, digest, data, parties, body) "
               "VALUES (?,?,?,?,?,?,?,?)")

    def _write(self, cur: sqlite3.Cursor, record: Record) -> None:
        cur.execute(self._INSERT, self._row(record))
        if is_qualified(record.name):
            self._qualified.add(record.name)

    def _select_in(self, cur: sqlite3.Cursor, columns: str, names: Iterable[str]) -> list[tuple[Any, ...]]:
        """`SELECT name, <columns> ... WHERE name IN (...)` over `names`, in chunks that stay
        under SQLite's bound-parameter limit: one statement per chunk instead of one per name."""
        wanted = list(dict.fromkeys(names))
        rows: list[tuple[Any, ...]] = []
        for start in range(0, len(wanted), IN_CHUNK):
            chunk = wanted[start:start + IN_CHUNK]
            rows += cur.execute(f"SELECT name, {columns} FROM records WHERE name IN ({','.join('?' * len(chunk))})",
                                chunk).fetchall()
        return rows

    def get(self, name: str) -> Record | None:
        with self._lock:
            return self._get(self._conn.cursor(), name)

    def named(self, base: str) -> list[Record]:
        """Every record of a name as created: `base` and each `base@home` (naming)."""
        with self._lock:
            rows = self._conn.execute("SELECT name, data FROM records WHERE name=? OR (name>? AND name<?)",
                                      (base, base + "@", base + "A")).fetchall()  # "A" follows "@"
        return [self._decode_row(name, data) for name, data in rows]

    def get_many(self, names: Iterable[str]) -> dict[str, Record]:
        """The named records we hold, in the order of `names`."""
        wanted = list(names)
        with self._lock:
            rows = {name: (data, body) for name, data, body in self._select_in(self._conn.cursor(), "data, body",
                                                                               wanted)}
        return {name: self._decode_row(name, *rows[name]) for name in dict.fromkeys(wanted) if name in rows}

    def packed_many(self, names: Iterable[str], *,
                    interesting: str | None = None) -> list[tuple[str, bytes, bytes, bool]]:
        """(name, packed record, version digest, tombstone) of the named records we hold, in
        the order of `names`: what a push or a fetch sends, without decoding and packing each
        again. Given `interesting`: only the records that cluster is interested in
        (record.interested, kept in the `parties` column). Read on the reader connection, as of
        the last commit: a batch's transaction under way does not hold it up."""
        wanted = list(names)
        with self._reader_lock:
            reader = self._reader
            if reader is None:
                raise StoreError(f"{self.path}: closed")
            try:
                rows = {row[0]: row for row in self._select_in(reader.cursor(), "data, digest, tombstone, parties",
                                                               wanted)}
            except sqlite3.Error as exc:
                raise StoreError(f"{self.path}: {exc}") from exc
        party = None if interesting is None else f",{interesting},"
        return [(n, rows[n][1], rows[n][2], bool(rows[n][3])) for n in dict.fromkeys(wanted)
                if n in rows and (party is None or party in rows[n][4])]

    def all(self, *, include_tombstones: bool = False) -> list[Record]:
        sql = "SELECT name, data FROM records" + ("" if include_tombstones else " WHERE tombstone=0")
        with self._lock:
            rows = self._conn.execute(sql + " ORDER BY name").fetchall()
        return [self._decode_row(name, data) for name, data in rows]

    def verify_vouched(self, name: str) -> None:
        """Verify the stamps of `name`'s versions taken on channel authority, if any: a local
        write never builds on one not verified (`put_local` does it first). A caller about to
        write under a deadline may do it ahead, while it waits anyway (the migration engine,
        while the AC deploys); what arrives after is verified by `put_local`."""
        if self.guard is not None and self.guard.pending(base_name(name)):
            self.audit(only=base_name(name))

    def _built_on(self, previous: Record | None, record: Record, *, here: str, now: float, actor: str) -> Record:
        stored = local_write(previous, record, here=here, now=now, actor=actor)
        if self.guard is not None:
            stored = self.guard.sign(previous, stored, actor=actor)
        return stored

    def prepare_local(self, record: Record, *, here: str, now: float) -> PreparedWrite:
        """`put_local`'s work but the write: the version built on the row held now, and signed
        (a signature is most of a local write's CPU). A caller that waits on something else
        first (the migration engine, on HAProxy) passes it to `put_local`, which stores it as
        is if that row is still the one held, and builds the version again otherwise."""
        actor = self.clock_actor(here)
        self.verify_vouched(record.name)
        with self._lock:
            row = self._conn.execute("SELECT data, body FROM records WHERE name=?", (record.name,)).fetchone()
        previous = None if row is None else self._decode_row(record.name, row[0], row[1])
        return PreparedWrite(record, self._built_on(previous, record, here=here, now=now, actor=actor),
                             None if row is None else bytes(row[0]), actor)

    def put_local(self, record: Record, *, here: str, now: float, close: str | None = None,
                  prepared: PreparedWrite | None = None) -> Record:
        """Store a change made here: increments this data dir's actor (`clock_actor`) in the
        clock (see merge.local_write). `close`: a journal entry closed in the same transaction
        (one fsync for both; the entry is closed exactly when the record is written).
        `prepared`: `prepare_local`'s for this `record`, used if built on the row held now
        (any change since, a merge or an audit's undo, and the version is built again).

        Raises SupersededWrite, and writes nothing, when `record` was made from an older
        version than the one held now and the merge rules rank the held one higher
        (`merge.superseded`: a version merged while the caller waited is not written over)."""
        actor = self.clock_actor(here)
        self.verify_vouched(record.name)
        with self._tx() as cur:
            row = cur.execute("SELECT data, body FROM records WHERE name=?", (record.name,)).fetchone()
            previous = None if row is None else self._decode_row(record.name, row[0], row[1])
            if previous is not None and superseded(previous, record, actor=actor, now=now):
                raise SupersededWrite(f"{record.name}: the change was decided on an older version of the record; "
                                      f"the version merged since (it runs at {previous.location}) outranks it")
            if prepared is not None and prepared.record is record and prepared.actor == actor and \
                    prepared.previous == (None if row is None else bytes(row[0])):
                stored = prepared.stored
            else:
                stored = self._built_on(previous, record, here=here, now=now, actor=actor)
            self._write(cur, stored)
            if close is not None:
                cur.execute("UPDATE journal SET open=0, updated_at=? WHERE migration_id=?", (now, close))
        self._changed()
        return stored

    def change_local(self, name: str, change: Callable[[Record], Record | None], *, here: str,
                     now: float) -> Record | None:
        """`put_local` of `change(the version held now)`, read and written in one transaction;
        None (nothing written) if no live version is held or `change` returns None. Why: a
        caller that read a record, then waited (a copy starting, a driver call), must not
        write that read back: merges land meanwhile without the service's lock. `put_local`
        judges such a write as made at its read (`merge.superseded`: it may give way); a
        change of the version held (an address, a delete) applies to what is held instead.
        Seen in the demo: an AC's instance update carried the pre-partition content over the
        HC's fail-safe."""
        actor = self.clock_actor(here)
        self.verify_vouched(name)
        with self._tx() as cur:
            previous = self._get(cur, name)
            if previous is None or previous.tombstone:
                return None
            version = change(previous)
            if version is None:
                return None
            stored = self._built_on(previous, version, here=here, now=now, actor=actor)
            self._write(cur, stored)
        self._changed()
        return stored

    def _changed(self) -> None:
        for listener in self.on_change:
            listener()

    def apply_remote(self, record: Record, *, here: str) -> MergeOutcome:
        """Reconcile a peer's version with ours and commit the result before returning."""
        return self.apply_remote_many([record], here=here)[0]

    def apply_remote_many(self, records: Iterable[Record | Reclocked], *, here: str,
                          channel: Channel | None = None) -> list[MergeOutcome]:
        """`apply_remote` for a batch, in one transaction (one fsync instead of one per record).
        A `Reclocked` item is a version we pushed under the peer's clock (batch.py). `channel`:
        the mTLS connection the batch came on (its sender's own stamps are taken on its
        authority: peer/trust/signing.py; what they change is undone if `audit` finds one false)."""
        return self.apply_remote_held(records, here=here, channel=channel)[1]

    def apply_remote_held(self, records: Iterable[Record | Reclocked], *, here: str, channel: Channel | None = None,
                          if_held: Callable[[Record], bool] | None = None) -> tuple[list[Record], list[MergeOutcome]]:
        """`apply_remote_many`, where the versions `if_held` picks are merged only if we hold
        their name or its base name (as the batch found the table: a push's versions of records
        we have no part in, whose stale copies we answer); the others are left out. The versions
        merged and their outcomes, in order. The rows the batch reads anyway tell (anti-entropy
        looked them up in a query of their own before: a tenth of a 10,000-record round's reads)."""
        items = list(records)
        applied: list[tuple[Record, MergeOutcome]] = []
        with collector_paused(), self._tx() as cur:  # (a big batch: peer.runtime.gcpause says why)
            batch, read, decoded = self._rebuilt(cur, items)
            names = batch_names(batch)
            # (the `name@home` twins of bare names are looked up only if some are held: rarely)
            found = self._select_in(cur, "data, body", [n for n in names if n not in read and (
                n in self._qualified or not is_qualified(n))])
            rows = [(name, data) for name, data, _ in found] + list(read.items())
            bodies = {name: body for name, _, body in found if body is not None}
            held = HeldRows(names, rows, lambda name, data: self._decode_row(name, data, bodies.get(name)),
                            lambda name: self._get(cur, name), decoded)
            if if_held is not None:  # (before any merge: the table as it was)
                batch = [r for r in batch if not if_held(r) or held.holds(r.name) or held.holds(base_name(r.name))]
            if self.guard is not None and len(batch) > 1:
                self.guard.prepare([(remote, held.get(remote.name)) for remote in batch], channel=channel)
            for remote in batch:
                applied.append((remote, self._merge_one(held, remote, here=here, channel=channel)))
            if channel is not None and self.guard is not None:
                self._keep_before_vouched(cur, held, dict(rows))
            if held.deleted:
                cur.executemany("DELETE FROM records WHERE name=?", [(n,) for n in held.deleted])
            if held.acks_void:
                cur.executemany("DELETE FROM tombstone_acks WHERE name=?", [(n,) for n in held.acks_void])
            if held.written:
                cur.executemany(self._INSERT, [self._row(r) for r in held.written.values()])
                self._qualified.update(n for n in held.written if is_qualified(n))
        if log.isEnabledFor(logging.WARNING):
            _log_conflicts([(remote, outcome) for remote, outcome in applied if outcome.conflict])
        outcomes = [outcome for _, outcome in applied]
        if any(o.changed or o.moved is not None for o in outcomes):
            self._changed()
        return batch, outcomes

    def _keep_before_vouched(self, cur: sqlite3.Cursor, held: HeldRows, rows: dict[str, bytes]) -> None:
        """Remember (once) the rows that versions taken on channel authority are about to
        replace: what `audit` puts back should one of their stamps prove false."""
        guard = cast(VersionGuard, self.guard)
        changing = [n for n in [*held.written, *held.deleted]
                    if n not in self._before_vouched and guard.pending(base_name(n))]
        unread = [n for n in changing if n not in rows]
        if unread:
            rows.update(self._select_in(cur, "data", unread))
        for name in changing:
            self._before_vouched[name] = rows.get(name)

    def audit(self, exclude: str | None = None, *, only: str | None = None) -> list[str]:
        """Before versions are relayed (to any peer but `exclude`): the guard verifies the
        stamps taken on channel authority; where one proves false, the names of that service
        get back the rows they held before such versions changed them (in one transaction),
        so what a third party would refuse is neither relayed nor kept (no endless re-sending,
        no replica stuck apart). Versions merged here on top of the false one since go with it (the
        peers that sent them send them again); a local write is not built on one (`put_local`
        audits its service just before it writes). The names put back."""
        if self.guard is None:
            return []
        failed = self.guard.audit(exclude, only=only)
        restored: list[str] = []
        if failed is None:
            return restored
        if not failed:
            with self._lock:
                for name in [n for n in self._before_vouched if not self.guard.pending(base_name(n))]:
                    del self._before_vouched[name]
            return restored
        with self._tx() as cur:
            for name in list(self._before_vouched):
                base = base_name(name)
                if base in failed:
                    before = self._before_vouched.pop(name)
                    if before is None:
                        cur.execute("DELETE FROM records WHERE name=?", (name,))
                    else:
                        self._write(cur, self._decode_row(name, before))
                    restored.append(name)
                elif not self.guard.pending(base):
                    del self._before_vouched[name]
        if restored:
            log.error("versions undone (a stamp taken on channel authority proved false): %s", ", ".join(restored))
            self._changed()
        return restored

    def _rebuilt(self, cur: sqlite3.Cursor, items: list[Record | Reclocked]
                 ) -> tuple[list[Record], dict[str, bytes], dict[str, Record]]:
        """The versions of a batch, `Reclocked` ones rebuilt (see there); the rows read for
        that and those decoded (the row held is the one pushed: the merge reads it too)."""
        wanted = [item.name for item in items if isinstance(item, Reclocked)]
        if not wanted:
            return cast(list[Record], items), {}, {}
        rows = {name: (digest, data, body) for name, digest, data, body in self._select_in(cur, "digest, data, body",
                                                                                             wanted)}
        decoded: dict[str, Record] = {}
        batch: list[Record] = []
        for item in items:
            if isinstance(item, Reclocked):
                row = rows.get(item.name)
                if row is not None and row[0] == item.digest:
                    data = row[1]
                    base = decoded[item.name] = self._decode_row(item.name, data, row[2])
                    if self.guard is not None:  # (held and rebuilt alike: the copy keeps it, one hash for both)
                        body_digest(base)
                else:  # (changed here since it was pushed: the pushed content is what the peer holds)
                    data = item.pushed
                    base = self._decode_row(item.name, data)
                answer = item.answer
                item = rec.with_vclock(base, item.vclock, item.stamps)
                if answer and self.guard is not None:  # (what the guard holds of it, if taken on the channel)
                    rec.keep_source(item, rec.reclocked_source(data, answer))
            batch.append(item)
        return batch, {name: data for name, (_, data, _) in rows.items()}, decoded

    def _merge_one(self, held: HeldRows, remote: Record, *, here: str, channel: Channel | None = None) -> MergeOutcome:
        if self.guard is not None:
            current = held.get(remote.name)
            if self.guard.refused(remote, current, channel=channel):  # not merged: nothing changes here
                return MergeOutcome(current or remote, False, False, (), current)
        placed = place(held.get, remote, here=here)
        held.apply(placed)
        return placed.outcome

    def digests(self, *, peer: str | None = None, lo: str | None = None, hi: str | None = None) -> dict[str, bytes]:
        """name -> 8-byte hash of the version (record.version_digest). Given `peer`: only the
        records it is interested in (home or location); given `lo`/`hi`: names in [lo, hi)."""
        clauses: list[str] = []
        params: list[str] = []
        if peer is not None:
            clauses.append("parties LIKE ?")
            params.append(f"%,{peer},%")
        if lo is not None:
            clauses.append("name>=?")
            params.append(lo)
        if hi is not None:
            clauses.append("name<?")
            params.append(hi)
        sql = "SELECT name, digest FROM records" + (" WHERE " + " AND ".join(clauses) if clauses else "")
        with self._lock:
            rows = self._conn.execute(sql, params).fetchall()
        return dict(rows)

    def digests_of(self, names: Iterable[str]) -> dict[str, bytes]:
        """Digests of the named records we hold (names we do not hold are left out)."""
        wanted = list(names)
        with self._lock:
            rows = dict(self._select_in(self._conn.cursor(), "digest", wanted))
        return {name: rows[name] for name in dict.fromkeys(wanted) if name in rows}

    def tombstone_digests(self, *, written_by: str) -> dict[str, bytes]:
        """Digests of the tombstones whose clock names `written_by`: that cluster must
        acknowledge them before they may be dropped, even once it has no part in the record."""
        with self._lock:
            rows = self._conn.execute("SELECT name, data FROM records WHERE tombstone=1").fetchall()
        out: dict[str, bytes] = {}
        for name, data in rows:
            record = self._decode_row(name, data)
            if vc.cluster_counter(record.vclock, written_by):
                out[name] = rec.version_digest(record)
        return out

    def drop(self, name: str) -> None:
        with self._tx() as cur:
            cur.execute("DELETE FROM records WHERE name=?", (name,))
            cur.execute("DELETE FROM tombstone_acks WHERE name=?", (name,))
        self._changed()

    # --- tombstones --------------------------------------------------------------------------

    def ack_tombstones(self, peer: str, digests: dict[str, bytes]) -> None:
        """`peer` holds exactly these versions (or nothing under these names, which is as safe:
        it cannot bring an older version back); remember it for the tombstones among them."""
        if not digests:
            return
        with self._lock:
            tombs = dict(self._conn.execute("SELECT name, digest FROM records WHERE tombstone=1").fetchall())
            if not tombs:
                return
            known = dict(self._conn.execute(
                "SELECT name, digest FROM tombstone_acks WHERE peer=?", (peer,)).fetchall())
            new = [(n, peer, d) for n, d in digests.items() if tombs.get(n) == d and known.get(n) != d]
            if not new:
                return
            with self._tx() as cur:
                cur.executemany("INSERT OR REPLACE INTO tombstone_acks(name, peer, digest) VALUES (?,?,?)", new)

    def acked_by(self, name: str) -> set[str]:
        """Peers that acknowledged the tombstone `name` as we hold it now."""
        with self._lock:
            rows = self._conn.execute(
                "SELECT a.peer FROM tombstone_acks a JOIN records r ON r.name=a.name AND r.digest=a.digest "
                "WHERE a.name=?", (name,)
            ).fetchall()
        return {peer for (peer,) in rows}

    def gc_tombstones(self, *, here: str, now: float, ttl: float) -> list[str]:
        """Drop every tombstone that `merge.droppable` allows; returns their names."""
        dropped: list[str] = []
        with self._tx() as cur:
            rows = cur.execute("SELECT name, data FROM records WHERE tombstone=1").fetchall()
            for name, data in rows:
                acked = {p for (p,) in cur.execute(
                    "SELECT a.peer FROM tombstone_acks a JOIN records r ON r.name=a.name AND r.digest=a.digest "
                    "WHERE a.name=?", (name,))}
                if droppable(self._decode_row(name, data), acked | {here}, now=now, ttl=ttl):
                    cur.execute("DELETE FROM records WHERE name=?", (name,))
                    cur.execute("DELETE FROM tombstone_acks WHERE name=?", (name,))
                    dropped.append(name)
        if dropped:
            self._changed()
        return dropped

    # --- meta: a small key/value table for the agent ------------------------------------------

    def meta_get(self, key: str, default: object = None) -> Any:
        with self._lock:
            row = self._conn.execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
        return default if row is None else _unpack(row[0])

    def meta_put(self, key: str, value: object) -> None:
        """`value` must be msgpack-able."""
        with self._tx() as cur:
            cur.execute("INSERT OR REPLACE INTO meta(key, value) VALUES (?, ?)", (key, _pack(value)))

    def meta_delete(self, key: str) -> None:
        with self._tx() as cur:
            cur.execute("DELETE FROM meta WHERE key=?", (key,))

    # --- history: finished migrations, newest last, bounded -----------------------------------

    def history_append(self, entries: list[dict[str, Any]], *, keep: int) -> None:
        """Append finished migrations (msgpack-able) and forget all but the last `keep`: one
        insert and one indexed delete each, whatever the length of the history."""
        with self._tx() as cur:
            for entry in entries:
                cur.execute("INSERT INTO history(data) VALUES (?)", (_pack(entry),))
            cur.execute("DELETE FROM history WHERE seq <= (SELECT MAX(seq) FROM history) - ?", (keep,))

    def history_load(self, *, limit: int) -> list[dict[str, Any]]:
        with self._lock:
            rows = self._conn.execute("SELECT data FROM history ORDER BY seq DESC LIMIT ?", (limit,)).fetchall()
        return [_unpack(data) for (data,) in reversed(rows)]

    # --- journal: the migration engine's write-ahead log ---------------------------------------

    def journal_put(self, migration_id: str, data: dict[str, Any], *, now: float | None = None) -> None:
        """Create or replace the entry of an open migration (msgpack-able `data`)."""
        stamp = time.time() if now is None else now
        with self._tx() as cur:
            cur.execute(
                "INSERT OR REPLACE INTO journal(migration_id, data, open, updated_at) VALUES (?,?,1,?)",
                (migration_id, _pack(data), stamp),
            )

    def journal_get(self, migration_id: str) -> dict[str, Any] | None:
        """The entry, open or closed."""
        with self._lock:
            row = self._conn.execute("SELECT data FROM journal WHERE migration_id=?", (migration_id,)).fetchone()
        return None if row is None else dict(_unpack(row[0]))

    def journal_open(self) -> list[tuple[str, dict[str, Any]]]:
        """Migrations not closed yet (to resume or roll back after a restart), oldest first."""
        with self._lock:
            rows = self._conn.execute(
                "SELECT migration_id, data FROM journal WHERE open=1 ORDER BY updated_at, migration_id"
            ).fetchall()
        return [(mid, dict(_unpack(data))) for mid, data in rows]

    def journal_close(self, migration_id: str, *, now: float | None = None) -> None:
        """Mark done; the entry stays readable through `journal_get` until `journal_prune`."""
        stamp = time.time() if now is None else now
        with self._tx() as cur:
            cur.execute("UPDATE journal SET open=0, updated_at=? WHERE migration_id=?", (stamp, migration_id))

    def journal_prune(self, *, before: float) -> int:
        """Delete closed entries last touched before `before`; returns how many."""
        with self._tx() as cur:
            cur.execute("DELETE FROM journal WHERE open=0 AND updated_at<?", (before,))
            return cur.rowcount

    def integrity_check(self) -> str:
        with self._lock:
            return str(self._conn.execute("PRAGMA integrity_check").fetchone()[0])
