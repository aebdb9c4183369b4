"""How two versions of a record become one, and what the cluster `here` must do about it. Pure.

The rules
---------
A version is (vclock, content), where the content carries `written`, the clock of the local
write that produced it. `reconcile` is a join of two independent parts:

* clock:   merge(local.vclock, remote.vclock)    (per-node max)
* content: the content with the higher `rank`     (a fixed total order on contents)

    rank = (incarnation, written[home], epoch, written[homes[1:]], total(written), tombstone,
            canonical bytes of the content)

Both parts are joins, so `reconcile` is commutative, associative and idempotent, and replicas
converge whatever the delivery order (tests/records/test_convergence.py).

Why this is the DESIGN rule:
* Incarnations never merge. A name created again (here or at another home) is a different
  service. A creation that knew the other deleted (it names it in `replaces`, see
  peer.records.naming) owns the name, so an old tombstone cannot delete a new service and a
  stale live version of a deleted one cannot come back over the new one. Two concurrent
  creations (the two sides of a partition) are both kept: the earlier keeps the bare name, the
  later moves to `name@home` (`MergeOutcome.moved`, and `RenameLocal` for what `here` holds of
  it), on every replica alike, so the rename is itself a pure function of the two versions.
* The home set. `homes[0]` (the HC) never changes within an incarnation, so `written[home]`
  still ranks first: the HC's view wins whenever it took part. Then the home-set `epoch` (a
  repair or a self-added entry bumps it, so it outranks its own history even when the HC took
  no part), then the other entries' counters in priority order: the view of the
  highest-priority steward wins.
* Dominating version wins. A write made on top of a version has a `written` clock that strictly
  descends everything that version has seen, so its rank is higher than every content in its
  history (`total` grows with every change; `written[home]` never shrinks along a history as
  long as `home` stays the same; a cluster's counter is the sum over its actors). Equal
  versions change nothing.
* Concurrent versions: the one whose write had seen more of the HC's changes wins - the HC's
  view of where the service runs (all traffic passes its load balancer). Then the one with more
  changes in total; then tombstones over live records; then the canonical bytes (arbitrary but
  the same on every replica). The conflict is flagged (`conflict=True`) for the caller to log.
* Deletes are contents like any other: a stale live version is in the tombstone's history and
  ranks below it, so a delete never comes back from a stale peer. A delete concurrent with an
  update follows the HC rule: the HC's side wins (a delete issued at an AC during a partition
  loses to a concurrent fail-safe redeploy by the HC).

The resolver does NOT increment its own entry. The merged clock already dominates both inputs
(they were concurrent), so the resolution propagates; and because the resolution is a pure
function of the two versions, two clusters that resolve the same conflict independently produce
the identical version, instead of two new concurrent ones that would conflict again.

Ranking by `written` rather than by the merged clock is what keeps associativity: a merged
clock would lift a stale content's rank just because it was merged with newer ones.

Assumption: a (node, counter) pair names one write. The node is the actor of one data dir
(vclock's docstring), so a cluster that loses its store writes under a new actor and never
reuses a pair. Ranking sums a cluster's actors (`cluster_counter`), so every property above
holds per cluster as it did per node. Should equal clocks with different contents still meet
(a store restored from an old backup), they are flagged as a conflict and still converge (the
rank decides), and anti-entropy digests hash the content to notice them.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

from peer.errors import RoamError, UnavailableKind
from peer.records import vclock as vc
from peer.records.naming import base_name, concurrent, home_part, incarnation_order, is_qualified, qualified, supersedes
from peer.records.record import Record, content_key, interested, same_content, with_vclock
from peer.trust import signing  # the merged clock keeps each entry's author stamp (issue 19)

DEFAULT_TOMBSTONE_TTL = 7 * 24 * 3600.0


class LocalWriteError(RoamError, ValueError):
    """A local write that the merge rules could not make win over its own history."""


class SupersededWrite(UnavailableKind):
    """A local write made on an older version than the one held now, which the merge rules
    rank below that version (`superseded`): not stored. The caller decided on a record that
    has changed since; deciding again on the one held now may work."""


# --- actions: what `here` must do after a remote version was applied ------------------------

@dataclass(frozen=True)
class StopLocalCopy:
    """`here` was told to hold a copy (the primary or a standby) and the winner says it must
    not (moved away, no longer a standby, or deleted)."""

    name: str


@dataclass(frozen=True)
class AdoptLocalCopy:
    """The winner says a live copy runs `here` and the previous version did not: make sure one
    runs (adopt one already running, else deploy), unless a migration in flight owns it."""

    name: str


@dataclass(frozen=True)
class KeepStandby:
    """The winner lists `here` as a standby holder and the previous version did not: make sure
    the warm copy runs (a pending one settles, a missing one is started)."""

    name: str


@dataclass(frozen=True)
class Reroute:
    """`here` is home and the instance its frontend must point to changed (None: not known
    yet), or the standbys it routes as backup servers did."""

    name: str
    instance: str | None


@dataclass(frozen=True)
class Forget:
    """`here` has no role for this service any more (neither home nor location, or deleted):
    release what it held for it (frontend, bookkeeping). A live record may then be dropped; a
    tombstone stays until `droppable`."""

    name: str


@dataclass(frozen=True)
class RenameLocal:
    """What `here` holds for `name` (its copy, its frontend, saved state) belongs to an
    incarnation renamed `new` (a concurrent creation, see naming): carry it over under the new
    name without stopping anything, before the actions on either name."""

    name: str
    new: str


Action = StopLocalCopy | AdoptLocalCopy | KeepStandby | Reroute | Forget | RenameLocal


@dataclass(frozen=True)
class MergeOutcome:
    result: Record
    changed: bool  # result differs from what `here` held (clock included)
    conflict: bool  # two different contents and the rule, not causality, picked the winner
    actions: tuple[Action, ...]
    previous: Record | None = None  # what `here` held before, for logging and the caller
    # A concurrent incarnation renamed `name@home`: the store merges it under that name too and
    # appends that merge's actions to these (after any RenameLocal, before the rest).
    moved: Record | None = None


def rank(record: Record) -> tuple[tuple[int, str], int, int, tuple[int, ...], int, bool, bytes]:
    """The fixed total order on contents (see module docstring)."""
    return (*_rank_head(record), content_key(record))


def _rank_head(record: Record) -> tuple[tuple[int, str], int, int, tuple[int, ...], int, bool]:
    """`rank` without its last element, the canonical bytes (a pack of the whole content)."""
    w = record.written
    deputies = tuple([vc.cluster_counter(w, h) for h in record.homes[1:]])  # (homes () means (home,))
    return (incarnation_order(record.incarnation), vc.cluster_counter(w, record.home), record.epoch, deputies,
            vc.total(w), record.tombstone)


def _compare_ranks(a: Record, b: Record) -> int:
    """The sign of rank(a) - rank(b), element by element as tuples compare, each computed only
    when the ones before it tie (the canonical bytes, a pack of the whole content, last of all)."""
    if a.incarnation != b.incarnation:
        ia, ib = incarnation_order(a.incarnation), incarnation_order(b.incarnation)
        if ia != ib:
            return 1 if ia > ib else -1
    wa, wb = a.written, b.written
    ha, hb = vc.cluster_counter(wa, a.home), vc.cluster_counter(wb, b.home)
    if ha != hb:
        return 1 if ha > hb else -1
    if a.epoch != b.epoch:
        return 1 if a.epoch > b.epoch else -1
    if a.homes[1:] or b.homes[1:]:
        da = tuple([vc.cluster_counter(wa, h) for h in a.homes[1:]])
        db = tuple([vc.cluster_counter(wb, h) for h in b.homes[1:]])
        if da != db:
            return 1 if da > db else -1
    ta, tb = vc.total(wa), vc.total(wb)
    if ta != tb:
        return 1 if ta > tb else -1
    if a.tombstone != b.tombstone:
        return 1 if a.tombstone else -1
    if same_content(a, b):  # equal fields pack to equal keys (a returned merge of ours, mostly)
        return 0
    key_a, key_b = content_key(a), content_key(b)
    return (key_a > key_b) - (key_a < key_b)


def _view(record: Record | None, here: str) -> tuple[bool, bool, bool, bool, bool]:
    """What a version asks of `here`: (runs the primary, holds a standby but not the primary,
    holds a copy of either kind, is an entry, has any role). A tombstone asks nothing."""
    if record is None or record.tombstone:
        return _NOTHING
    runs = record.location == here
    standby = not runs and here in record.standby_clusters
    entry = here in record.entries
    return runs, standby, runs or standby, entry, runs or standby or entry


_NOTHING = (False, False, False, False, False)


def transition(before: Record | None, after: Record, *, here: str) -> tuple[Action, ...]:
    """The actions that take `here` from what `before` asked of it to what `after` asks.

    A copy is stopped only when `here` held one (primary or standby) and holds none now: a
    standby promoted to primary keeps running (it is adopted), a primary demoted to standby
    keeps running too. An entry reroutes before it stops its own copy (make-before-break):
    when the record of a move reaches an entry that also ran the old copy (it was down or cut
    off while the move committed), its frontend must follow the new copy before the old one
    goes, or it answers 503 in between."""
    if before is not None and _role_fields(before) == _role_fields(after):
        return ()  # (every rule below reads only these fields: nothing changes for `here`)
    return _transition(before, after, here=here)


def _role_fields(record: Record) -> tuple[object, ...]:
    """What `_transition` reads of a version: equal ones ask the same of every cluster."""
    return (record.tombstone, record.location, record.standbys, record.home, record.homes, record.instance,
            record.incarnation)


def _transition(before: Record | None, after: Record, *, here: str) -> tuple[Action, ...]:
    """`transition` without its shortcut (tests compare the two)."""
    name = after.name
    runs_before, _, holds_before, entry_before, role_before = _view(before, here)
    runs, standby, holds, entry, has_role = _view(after, here)
    actions: list[Action] = []
    if runs and not runs_before:
        actions.append(AdoptLocalCopy(name))  # (before the reroute: the route needs the copy)
    if standby and not holds_before:
        actions.append(KeepStandby(name))
    if entry:
        same = before is not None and entry_before and before.incarnation == after.incarnation
        old = before.instance if before is not None and same else None
        old_backups = before.standbys if before is not None and same else ()
        if after.instance != old or after.standbys != old_backups or not same:
            actions.append(Reroute(name, after.instance))
    if holds_before and not holds:
        actions.append(StopLocalCopy(name))
    if role_before and not has_role:
        actions.append(Forget(name))
    return tuple(actions)


def reconcile(local: Record | None, remote: Record, *, here: str) -> MergeOutcome:
    """Join `remote` into what `here` holds; see the module docstring for the rules."""
    if local is None:
        return MergeOutcome(remote, True, False, transition(None, remote, here=here), None)
    if local.name != remote.name:
        raise ValueError(f"cannot reconcile {local.name!r} with {remote.name!r}")
    if local.incarnation != remote.incarnation:
        # Two services that share a name: nothing is merged (a clock carries none of the other
        # incarnation's history, so nothing of the other can leak in).
        if concurrent(local.incarnation, local.replaces, remote.incarnation, remote.replaces):
            if not is_qualified(local.name):
                return _split(local, remote, here=here)
            # Under `name@home` (creations of one home): the later one, as an older roam did.
            remote_wins = incarnation_order(remote.incarnation) > incarnation_order(local.incarnation)
        else:
            remote_wins = supersedes(remote.incarnation, remote.replaces, local.incarnation)
        if not remote_wins:
            return MergeOutcome(local, False, False, (), local)
        return MergeOutcome(remote, True, not local.tombstone and not remote.tombstone,
                            transition(local, remote, here=here), local)
    clock = vc.merge(local.vclock, remote.vclock)
    order = _compare_ranks(local, remote)
    winner, loser = (remote, local) if order < 0 else (local, remote)
    result = winner if winner.vclock == clock else signing.joined(local, remote, with_vclock(winner, clock))
    conflict = order != 0 and not vc.descends(winner.vclock, loser.vclock)
    # (a different clock is a change; only an equal one needs the whole comparison)
    changed = result is not local and (result.vclock != local.vclock or result != local)
    actions = transition(local, result, here=here) if changed else ()
    return MergeOutcome(result, changed, conflict, actions, local)


def _split(local: Record, remote: Record, *, here: str) -> MergeOutcome:
    """Concurrent creations of one name: the earlier keeps it, the later is renamed."""
    if incarnation_order(local.incarnation) < incarnation_order(remote.incarnation):
        return MergeOutcome(local, False, False, (), local, moved=renamed(remote))
    moved = renamed(local)
    actions = (RenameLocal(local.name, moved.name), *transition(None, remote, here=here))
    return MergeOutcome(remote, True, False, actions, local, moved=moved)


@dataclass(frozen=True)
class Placed:
    """What the store must do to hold a remote version: `place`'s answer."""

    outcome: MergeOutcome
    writes: tuple[Record, ...] = ()
    deletes: tuple[str, ...] = ()  # names whose row goes (their incarnation moved to name@home)
    acks_void: tuple[str, ...] = ()  # names whose tombstone acknowledgements were the other's


def place(held: Callable[[str], Record | None], remote: Record, *, here: str) -> Placed:
    """`reconcile` under the name the remote version's incarnation has here (`held` reads what
    `here` holds by name). A rename to `name@home` is for good, whichever name a peer still
    sends the version under: a bare version of an incarnation held as `name@home` merges into
    that; a `name@home` version of one still held bare moves ours there first (RenameLocal)."""
    if is_qualified(remote.name):
        bare = held(base_name(remote.name))
        if bare is not None and bare.incarnation == remote.incarnation and bare.home == home_part(remote.name):
            ours = renamed(bare)
            existing = held(ours.name)
            if existing is not None:
                ours = reconcile(existing, ours, here=here).result
            merged = reconcile(ours, remote, here=here)
            outcome = MergeOutcome(merged.result, True, merged.conflict,
                                   (RenameLocal(bare.name, ours.name), *merged.actions), bare)
            return Placed(outcome, writes=(merged.result,), deletes=(bare.name,))
    else:
        other = held(qualified(remote.name, remote.home))
        if other is not None and other.incarnation == remote.incarnation:
            remote = renamed(remote)
    outcome = reconcile(held(remote.name), remote, here=here)
    writes = (outcome.result,) if outcome.changed else ()
    if outcome.moved is None:
        return Placed(outcome, writes=writes)
    renames = tuple(a for a in outcome.actions if isinstance(a, RenameLocal))
    sub = place(lambda name: outcome.result if name == remote.name else held(name), outcome.moved, here=here)
    rest = tuple(a for a in outcome.actions if not isinstance(a, RenameLocal))
    combined = MergeOutcome(outcome.result, outcome.changed or sub.outcome.changed,
                            outcome.conflict or sub.outcome.conflict, (*renames, *sub.outcome.actions, *rest),
                            outcome.previous, moved=sub.outcome.result)
    return Placed(combined, writes=writes + sub.writes, deletes=sub.deletes,
                  acks_void=(remote.name,) if renames else ())


def renamed(record: Record) -> Record:
    """The same version under `name@home` (content, clocks and incarnation unchanged)."""
    return replace(record, name=qualified(record.name, record.home))


def local_write(previous: Record | None, record: Record, *, here: str, now: float, actor: str | None = None) -> Record:
    """The version `here` stores when it changes a record: `record`'s content on top of
    everything `previous` has seen, with the counter of `actor` (this data dir's clock node,
    `here` or `here~epoch`, see vclock's docstring) incremented.

    The clocks carried by `record` are ignored: only what the store holds is history. A new
    incarnation (a name created again) starts a history of its own and must supersede the one
    held (naming.supersedes: it names it in `replaces`).
    A change of the home set bumps `epoch`, so the write outranks its history (see `rank`).
    """
    if previous is not None and previous.incarnation != record.incarnation:
        if not supersedes(record.incarnation, record.replaces, previous.incarnation):
            raise LocalWriteError(f"{record.name}: incarnation {record.incarnation!r} is not newer than "
                                  f"{previous.incarnation!r}")
        previous = None
    if previous is not None and record.home != previous.home:
        raise LocalWriteError(f"{record.name}: the home of an incarnation never changes")
    context = previous.vclock if previous is not None else vc.fresh()
    epoch = record.epoch
    if previous is not None:
        epoch = previous.epoch + (record.entries != previous.entries)
    writer = actor or here
    if vc.cluster_of(writer) != here:
        raise LocalWriteError(f"{record.name}: actor {writer!r} does not belong to {here!r}")
    clock = vc.increment(context, writer, timestamp=now)
    return replace(record, vclock=clock, written=clock, updated_at=now, epoch=epoch)


def superseded(held: Record, record: Record, *, actor: str, now: float) -> bool:
    """Must a local write of `record` give way to `held`, the version stored now?

    A caller reads a record, waits (a copy starting, a route, a driver call) and writes its
    change of what it read. A version merged from a peer meanwhile (merges take no service
    lock) was never seen by that change, and `local_write` would store the change on top of
    it: a lost update, the merged decision erased unseen (the demo's AC once wrote its copy's
    address over the HC's fail-safe that way). `record` carries the clock of the version it
    was made from (`dataclasses.replace` keeps it). When `held` strictly descends that clock,
    the write is judged as if it had been stored at its read, before the merge: against
    `held` it is then a concurrent version, and `reconcile` keeps the content of the higher
    `rank`. True when that is `held`'s (the write must not be stored). False otherwise, and
    for a write made on the version held (or one `held` has not seen all of: a version given
    by a peer, a new incarnation), which `local_write` stores on top as before: its content
    is what the merge would keep either way.

    The write as of its read counts `actor` past every write of it `held` has seen (a pair
    names one write). Its home-set `epoch` is bumped if it changes the entries of `held`,
    when `held` has the home set of its base (same epoch); if `held`'s home set changed
    since, the base's entries are not known here and the epoch is left as read."""
    if record.incarnation != held.incarnation or not record.vclock.entries:
        return False
    if vc.descends(record.vclock, held.vclock) or not vc.descends(held.vclock, record.vclock):
        return False
    clock = vc.increment(record.vclock, actor, timestamp=now, at_least=vc.get_counter(held.vclock, actor) + 1)
    epoch = record.epoch + (held.epoch == record.epoch and record.entries != held.entries)
    as_of_read = replace(record, vclock=clock, written=clock, updated_at=now, epoch=epoch)
    return _compare_ranks(as_of_read, held) < 0


def droppable(tombstone: Record, acked_by: set[str] | frozenset[str], *, now: float, ttl: float) -> bool:
    """May this tombstone be forgotten?

    Yes once every cluster that could still hold an older live version has acknowledged, through
    anti-entropy, that it holds this exact tombstone or nothing under that name: the clusters in
    its clock (all that ever changed the record; a location enters it when it reports its
    instance, which the HC needs to reroute) plus its home and location. Pass `here` inside
    `acked_by`. A cluster that ran a copy without ever writing to the record is not covered:
    the agent must write when it adopts a copy. Or, failing acknowledgements, once
    `ttl` has passed since the delete: a peer cut off longer than `ttl` could then bring the
    record back, so `ttl` must exceed the longest partition the federation accepts (default 7
    days); a shorter `ttl` saves rows, a longer one protects against longer outages.
    """
    if not tombstone.tombstone:
        return False
    needed = vc.clusters(tombstone.vclock) | interested(tombstone)
    return needed <= acked_by or now - tombstone.updated_at >= ttl
