"""Service names, `name@home`, and which creations of a name know of each other. Pure.

A name is created by one cluster, its HC. While the federation is whole, creating a name it
already holds live is refused (peer.copies.manager), so a name has one live incarnation. During a
partition each side can create the same name without knowing of the other: two different
services. When the sides meet again neither may delete or hide the other (issue 12), so:

* every record carries `replaces`: the deleted incarnations of its name its creator knew of
  (the tombstone it found, and what that one replaced, newest first, at most MAX_REPLACED). A
  creation *supersedes* exactly those: the creator had seen them deleted (it would have been
  refused a live one). Two creations neither of which supersedes the other are *concurrent*.
  (A stamp floor would not do: a side that creates, deletes and creates again during a
  partition would then supersede the other side's live service it never saw.);
* of two concurrent incarnations the earlier keeps the bare name; the later is renamed
  `name@home` (its HC) everywhere, for good: it stays addressable under the qualified name,
  and the bare name stays what it was for the side that had it first. A qualified name of the
  bare name's own HC (`name@its-home`) is accepted as an alias of the bare name by the API.

Ids "<stamp>-<random>" written by an older roam (before `replaces` existed; new ids are
"<stamp>-<random>-<floor>") supersede every earlier stamp: the rule they were written under
("the later creation owns the name"). A chain of more than MAX_REPLACED deletes and creations
during one partition can bring the oldest deleted one back as a concurrent service: it is
kept, never a live one lost.
"""
from __future__ import annotations

import re
import secrets
from collections.abc import Iterable

_LABEL = r"[a-z0-9](?:[-a-z0-9]{0,61}[a-z0-9])?"
#: What a creation may be called (a DNS-1123 label: also the Kubernetes object's name).
LABEL_RE = re.compile(rf"{_LABEL}\Z")
#: What a record may be called: a label, or `label@cluster` for a renamed concurrent creation.
SERVICE_RE = re.compile(rf"{_LABEL}(?:@{_LABEL})?\Z")
MAX_SERVICE_LEN = 127
MAX_REPLACED = 8


def qualified(name: str, home: str) -> str:
    """`name@home` for the bare part of `name`."""
    return f"{base_name(name)}@{home}"


def base_name(name: str) -> str:
    """The name as it was created (before any `@home`)."""
    return name.partition("@")[0]


def home_part(name: str) -> str | None:
    """The `home` of `name@home`, None for a bare name."""
    _, at, home = name.partition("@")
    return home if at else None


def is_qualified(name: str) -> bool:
    return "@" in name


def new_incarnation(*, now: float, after: int = 0) -> str:
    """A fresh identity: a stamp above `after` (the highest stamp known for the name), a random
    id, and `after` itself as the floor (what this creation knew, see the module docstring)."""
    stamp = max(int(now * 1000), after + 1)
    return f"{stamp}-{secrets.token_hex(4)}-{after}"


def floor_of(incarnation: str) -> int | None:
    """The highest stamp the creator knew; None for an id without one (older roam)."""
    parts = incarnation.split("-")
    return int(parts[2]) if len(parts) == 3 and parts[0].isdigit() and parts[2].isdigit() else None


def incarnation_order(incarnation: str) -> tuple[int, str]:
    """(stamp, id) of an incarnation id; "" (older rows) orders first."""
    stamp, _, ident = incarnation.partition("-")
    return (int(stamp), ident) if stamp.isdigit() else (0, incarnation)


def replaced_by_deletes(tombstones: Iterable[tuple[str, tuple[str, ...]]]) -> tuple[str, ...]:
    """`replaces` of a creation that found these tombstones, each (incarnation, its `replaces`):
    all of them and what they replaced, newest first, at most MAX_REPLACED."""
    ids = {i for incarnation, replaced in tombstones for i in (incarnation, *replaced) if i}
    return tuple(sorted(ids, key=incarnation_order, reverse=True))[:MAX_REPLACED]


def supersedes(a: str, a_replaces: tuple[str, ...], b: str) -> bool:
    """Does creation `a` own the name over creation `b`?"""
    if a == b or b in a_replaces:
        return a != b
    return floor_of(a) is None and incarnation_order(a) > incarnation_order(b)  # older roam's rule


def concurrent(a: str, a_replaces: tuple[str, ...], b: str, b_replaces: tuple[str, ...]) -> bool:
    """Were incarnations `a` and `b` created each without knowing of the other?"""
    return a != b and not supersedes(a, a_replaces, b) and not supersedes(b, b_replaces, a)
