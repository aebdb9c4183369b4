"""lb's persisted bookkeeping: which service owns which slot, and where it is routed.

Written atomically (lb.files.write_atomic) so a crash leaves either the old or the new file,
never a torn one; `StateWriter` keeps the writes in the order the table changed when some of
them run in a worker thread (a reroute's save, off the event loop: `LoadBalancer.route`).
"""
from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from pathlib import Path

from lb.files import write_atomic

_VERSION = 1


@dataclass(frozen=True)
class Route:
    """Where a service's frontend sends traffic, and the HAProxy server name carrying it."""

    addr: str
    port: int
    server: str
    fast_down: bool = False  # added with `observe layer4 ... on-error mark-down` (it has backups)


@dataclass
class Slot:
    port: int
    route: Route | None = None
    backups: list[Route] = field(default_factory=list)  # hot standbys, HAProxy backup servers


def _route_doc(route: Route) -> dict[str, object]:
    doc: dict[str, object] = {"addr": route.addr, "port": route.port, "server": route.server}
    if route.fast_down:
        doc["fast_down"] = True
    return doc


def _route_of(raw: dict[str, object]) -> Route:
    return Route(str(raw["addr"]), int(str(raw["port"])), str(raw["server"]), raw.get("fast_down") is True)


@dataclass
class LBState:
    slots: dict[str, Slot] = field(default_factory=dict)  # service -> slot

    def to_json(self) -> bytes:
        doc = {"version": _VERSION, "services": {
            name: {"port": slot.port, "route": None if slot.route is None else _route_doc(slot.route),
                   **({"backups": [_route_doc(b) for b in slot.backups]} if slot.backups else {})}
            for name, slot in sorted(self.slots.items())}}
        return json.dumps(doc, indent=1, sort_keys=True).encode()

    @classmethod
    def from_json(cls, data: bytes) -> LBState:
        doc = json.loads(data)
        if doc.get("version") != _VERSION:
            raise ValueError(f"unsupported lb state version {doc.get('version')!r}")
        slots: dict[str, Slot] = {}
        for name, raw in doc["services"].items():
            r = raw.get("route")
            route = None if r is None else _route_of(r)
            slots[name] = Slot(int(raw["port"]), route, [_route_of(b) for b in raw.get("backups", [])])
        return cls(slots)

    @classmethod
    def load(cls, path: Path) -> LBState:
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return cls()
        try:
            return cls.from_json(data)
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise ValueError(f"{path} is corrupt ({exc}); move it away and restart to re-provision the frontends") from exc

    def save(self, path: Path) -> None:
        write_atomic(path, self.to_json())


@dataclass(frozen=True)
class Snapshot:
    """The table as it was when taken: its bytes and its place in the order of changes."""

    generation: int
    data: bytes


class StateWriter:
    """Writes lb-slots.json from the event loop or from worker threads, never out of order.

    A snapshot is taken on the event loop (the only thread that changes the table), numbered
    in the order of changes; `write` runs anywhere, one at a time, and skips a snapshot older
    than the one already on disk. So two saves in flight at once (a reroute's in a thread, an
    `open_frontend`'s on the loop) never leave the older table as the file's last word."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._taken = 0
        self._written = 0

    def snapshot(self, state: LBState) -> Snapshot:
        """Call on the event loop, right after the change it must carry."""
        self._taken += 1
        return Snapshot(self._taken, state.to_json())

    def write(self, snapshot: Snapshot) -> None:
        """Write `snapshot` (atomically, fsynced) unless a newer one is on disk already."""
        with self._lock:
            if snapshot.generation <= self._written:
                return
            write_atomic(self.path, snapshot.data)
            self._written = snapshot.generation
