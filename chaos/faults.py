"""Faults for the testbed, after Jepsen's nemeses: small typed objects with `apply`, `heal`
and `describe`, composable (`Composite`) and all healable at once (`Nemesis.heal_all`).

Network cuts are iptables `INPUT ... -j DROP` rules inside the receiving node's namespace,
matched on the sender's address and tagged `-m comment --comment roam-chaos:<prefix>`. Never
OUTPUT: a DROP there makes sends fail at once with EPERM, which no real network does, and
Serf would never mark the peer failed. The root namespace's firewall is never touched, so a
cut between a cluster and `host` (the root-namespace client, via the bridge address) is made
only on the cluster's side: TCP in both directions fails (every handshake needs both ways),
while UDP from the cluster to the host still arrives.

Rules stack: two overlapping faults add the same rule twice and each heal removes one copy,
so healing one fault never heals another.

Bandwidth uses `tc qdisc tbf` on the veth ends. This kernel has no `netem`: added delay, loss,
duplication or reordering are not available through tc. A scenario needing delay would need
a userspace proxy between the namespaces; none is built.
"""
from __future__ import annotations

import inspect
import os
import shlex
import signal
import time
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import KW_ONLY, dataclass, field
from typing import Literal

from chaos.errors import CommandError, FaultError, TestbedError
from chaos.netns import CLIENT, HOST, Testbed

PidSource = int | Callable[[], Iterable[int]] | Callable[[], Awaitable[Iterable[int]]]
_MISSING_RULE = "does a matching rule exist"


class Fault(ABC):
    """Something that goes wrong on purpose, and can be undone."""

    @abstractmethod
    async def apply(self, tb: Testbed) -> None:
        """Inject the fault; on failure undo what was done and raise `FaultError`."""

    @abstractmethod
    async def heal(self, tb: Testbed) -> None:
        """Undo this fault only (a no-op for faults that cannot be undone, like Kill)."""

    @abstractmethod
    def describe(self) -> str:
        """One line for logs and reports; equal for equal faults (schedules compare them)."""


# -- network cuts ------------------------------------------------------------------------


def _rule(tb: Testbed, src: str, op: str) -> list[str]:
    return [op, "INPUT", "-s", f"{tb.addr(src)}/32", "-m", "comment", "--comment",
            tb.comment, "-j", "DROP"]


class _Cuts(Fault):
    """A set of directed cuts (receiver, sender): the receiver drops what the sender sends."""

    @abstractmethod
    def cuts(self, tb: Testbed) -> list[tuple[str, str]]: ...

    def _effective(self, tb: Testbed) -> list[tuple[str, str]]:
        # the root namespace is never firewalled: its cuts are made on the other side only
        return [(at, src) for at, src in self.cuts(tb) if at != HOST and at != src]

    async def apply(self, tb: Testbed) -> None:
        done: list[tuple[str, str]] = []
        try:
            for at, src in self._effective(tb):
                await tb.iptables(at, _rule(tb, src, "-I"))
                done.append((at, src))
        except (CommandError, TestbedError) as exc:
            await _undo_cuts(tb, done)
            raise FaultError(f"applying {self.describe()}: {exc}") from exc

    async def heal(self, tb: Testbed) -> None:
        await _undo_cuts(tb, self._effective(tb))


async def _undo_cuts(tb: Testbed, cuts: Iterable[tuple[str, str]]) -> None:
    for at, src in cuts:
        res = await tb.run(at, ["iptables", "-w", *_rule(tb, src, "-D")], check=False)
        if not res.ok and _MISSING_RULE not in res.stderr:  # already swept by Heal: fine
            raise FaultError(f"removing cut {src}->{at}: {res.stderr.strip()}")


def _check_disjoint(a: Sequence[str], b: Sequence[str]) -> None:
    if not a or not b or set(a) & set(b):
        raise ValueError(f"sides must be non-empty and disjoint: {list(a)} / {list(b)}")


@dataclass(frozen=True)
class Partition(_Cuts):
    """Nodes of `side_a` and `side_b` cannot reach each other, in both directions."""

    side_a: tuple[str, ...]
    side_b: tuple[str, ...]

    def __init__(self, side_a: Iterable[str], side_b: Iterable[str]) -> None:
        object.__setattr__(self, "side_a", tuple(side_a))
        object.__setattr__(self, "side_b", tuple(side_b))
        _check_disjoint(self.side_a, self.side_b)

    def cuts(self, tb: Testbed) -> list[tuple[str, str]]:
        pairs = [(x, y) for x in self.side_a for y in self.side_b]
        return pairs + [(y, x) for x, y in pairs]

    def describe(self) -> str:
        return f"partition {','.join(self.side_a)} | {','.join(self.side_b)}"


@dataclass(frozen=True)
class OneWayCut(_Cuts):
    """`dst` drops every packet from `src`; `dst`'s own packets still reach `src`.

    Any TCP connection between them fails (handshakes need both ways); UDP dst->src flows.
    """

    src: str
    dst: str

    def __post_init__(self) -> None:
        if self.dst == HOST:
            raise ValueError("the root namespace is never firewalled: dst cannot be host")
        if self.src == self.dst:
            raise ValueError("src and dst must differ")

    def cuts(self, tb: Testbed) -> list[tuple[str, str]]:
        return [(self.dst, self.src)]

    def describe(self) -> str:
        return f"one-way cut {self.src} -> {self.dst}"


class Halves(Partition):
    """Split `nodes` in two halves (the first len//2, and the rest) and partition them."""

    def __init__(self, nodes: Sequence[str]) -> None:
        half = len(nodes) // 2
        super().__init__(nodes[:half], nodes[half:])


@dataclass(frozen=True)
class Bridge(_Cuts):
    """`left` and `right` cannot reach each other; `node` still sees both sides."""

    node: str
    left: tuple[str, ...]
    right: tuple[str, ...]

    def __init__(self, node: str, left: Iterable[str], right: Iterable[str]) -> None:
        object.__setattr__(self, "node", node)
        object.__setattr__(self, "left", tuple(left))
        object.__setattr__(self, "right", tuple(right))
        _check_disjoint(self.left, self.right)
        if node in self.left or node in self.right:
            raise ValueError(f"bridge node {node!r} must be on neither side")

    def cuts(self, tb: Testbed) -> list[tuple[str, str]]:
        return Partition(self.left, self.right).cuts(tb)

    def describe(self) -> str:
        return f"bridge {self.node} between {','.join(self.left)} | {','.join(self.right)}"


@dataclass(frozen=True)
class Isolate(_Cuts):
    """`cluster` is cut from every other cluster and, if `from_client`, from the clients
    (the client namespace if any, and the root namespace)."""

    cluster: str
    from_client: bool = True

    def cuts(self, tb: Testbed) -> list[tuple[str, str]]:
        others = [c for c in tb.clusters if c != self.cluster]
        if self.from_client:
            others += [CLIENT, HOST] if tb.has_client else [HOST]
        return Partition([self.cluster], others).cuts(tb)

    def describe(self) -> str:
        return f"isolate {self.cluster}" + ("" if self.from_client else " (clients still reach it)")


@dataclass(frozen=True)
class LinkDown(Fault):
    """The host side of the cluster's veth goes down: no carrier, nothing in or out."""

    cluster: str

    async def apply(self, tb: Testbed) -> None:
        try:
            await tb.ip(["link", "set", tb.host_veth(self.cluster), "down"])
        except CommandError as exc:
            raise FaultError(f"applying {self.describe()}: {exc}") from exc

    async def heal(self, tb: Testbed) -> None:
        await tb.ip(["link", "set", tb.host_veth(self.cluster), "up"])

    def describe(self) -> str:
        return f"link down {self.cluster}"


# -- bandwidth -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Bandwidth(Fault):
    """Token-bucket limit (`tc qdisc tbf`) on a cluster's link.

    `in` shapes the host-side veth (traffic to the cluster), `out` the namespace's eth0
    (traffic from it). `burst_bytes` defaults to 20 ms worth of rate (at least 15 kB);
    `latency_ms` bounds the queue, beyond which tbf drops.
    """

    cluster: str
    rate_mbit: float
    burst_bytes: int | None = None
    latency_ms: float = 50.0
    direction: Literal["both", "in", "out"] = "both"

    def __post_init__(self) -> None:
        if self.rate_mbit <= 0:
            raise ValueError("rate_mbit must be positive")

    def _devices(self) -> list[tuple[str | None, bool]]:
        """(netns_of or None for root, is_in) pairs to shape."""
        out: list[tuple[str | None, bool]] = []
        if self.direction in ("both", "in"):
            out.append((None, True))
        if self.direction in ("both", "out"):
            out.append((self.cluster, False))
        return out

    def _dev(self, tb: Testbed, is_in: bool) -> str:
        return tb.host_veth(self.cluster) if is_in else "eth0"

    async def apply(self, tb: Testbed) -> None:
        burst = self.burst_bytes or max(15_000, int(self.rate_mbit * 1e6 / 8 * 0.02))
        spec = ["root", "tbf", "rate", f"{self.rate_mbit}mbit", "burst", str(burst),
                "latency", f"{self.latency_ms}ms"]
        try:
            for ns, is_in in self._devices():
                await tb.tc(["qdisc", "replace", "dev", self._dev(tb, is_in), *spec],
                            netns_of=ns)
        except CommandError as exc:
            await self.heal(tb)
            raise FaultError(f"applying {self.describe()}: {exc}") from exc

    async def heal(self, tb: Testbed) -> None:
        for ns, is_in in self._devices():
            await _del_root_qdisc(tb, self._dev(tb, is_in), ns)

    def describe(self) -> str:
        return f"bandwidth {self.cluster} {self.rate_mbit} Mbit/s ({self.direction})"


async def _del_root_qdisc(tb: Testbed, dev: str, netns_of: str | None) -> None:
    try:
        await tb.tc(["qdisc", "del", "dev", dev, "root"], netns_of=netns_of)
    except CommandError as exc:  # nothing to delete: already the default
        if "No such file" not in exc.stderr and "Cannot delete qdisc with handle of zero" \
                not in exc.stderr:
            raise FaultError(f"removing qdisc on {dev}: {exc}") from exc


# -- processes -----------------------------------------------------------------------------


async def resolve_pids(source: PidSource) -> list[int]:
    """Turn a pid, or a (sync or async) callable returning pids, into a list of pids."""
    if isinstance(source, int):
        return [source]
    value = source()
    if inspect.isawaitable(value):
        value = await value
    return list(value)


def _signal_all(pids: Iterable[int], sig: signal.Signals, *, group: bool) -> list[int]:
    """Send `sig` to each pid (or process group); return those that existed."""
    hit = []
    for pid in pids:
        try:
            (os.killpg if group else os.kill)(pid, sig)
            hit.append(pid)
        except ProcessLookupError:
            continue
    return hit


@dataclass
class _Signal(Fault):
    target: PidSource
    _: KW_ONLY
    group: bool = False
    label: str = "process"
    _hit: list[int] = field(default_factory=list, init=False, repr=False, compare=False)

    async def _send(self, sig: signal.Signals) -> None:
        pids = await resolve_pids(self.target)
        self._hit = _signal_all(pids, sig, group=self.group)
        if not self._hit:
            raise FaultError(f"{self.describe()}: no live target among {pids}")

    def _who(self) -> str:
        return f"{self.label} ({'group' if self.group else 'pid'})"


@dataclass
class Kill(_Signal):
    """Send `sig` (SIGKILL by default) to the target pids or process groups. Cannot heal."""

    sig: signal.Signals = signal.SIGKILL

    async def apply(self, tb: Testbed) -> None:
        await self._send(self.sig)

    async def heal(self, tb: Testbed) -> None:
        return None

    def describe(self) -> str:
        return f"{self.sig.name} {self._who()}"


@dataclass
class Pause(_Signal):
    """SIGSTOP the targets; heal sends SIGCONT to exactly those that were stopped."""

    async def apply(self, tb: Testbed) -> None:
        await self._send(signal.SIGSTOP)

    async def heal(self, tb: Testbed) -> None:
        _signal_all(self._hit, signal.SIGCONT, group=self.group)

    def describe(self) -> str:
        return f"pause {self._who()}"


@dataclass
class Resume(_Signal):
    """SIGCONT the targets (undoing a Pause applied elsewhere). Heal does nothing."""

    async def apply(self, tb: Testbed) -> None:
        await self._send(signal.SIGCONT)

    async def heal(self, tb: Testbed) -> None:
        return None

    def describe(self) -> str:
        return f"resume {self._who()}"


# -- composition ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Composite(Fault):
    """Several faults at once; healed in reverse order."""

    parts: tuple[Fault, ...]

    async def apply(self, tb: Testbed) -> None:
        done: list[Fault] = []
        try:
            for part in self.parts:
                await part.apply(tb)
                done.append(part)
        except FaultError:
            for part in reversed(done):
                await part.heal(tb)
            raise

    async def heal(self, tb: Testbed) -> None:
        for part in reversed(self.parts):
            await part.heal(tb)

    def describe(self) -> str:
        return " + ".join(p.describe() for p in self.parts)


@dataclass(frozen=True)
class Heal(Fault):
    """Sweep every network fault off the testbed: tagged iptables rules in every namespace,
    qdiscs on every veth end, host veths up. Process faults are healed by `Nemesis`."""

    async def apply(self, tb: Testbed) -> None:
        for node in tb.nodes:
            res = await tb.iptables(node.name, ["-S"])
            for line in res.stdout.splitlines():
                tokens = shlex.split(line)  # iptables' own quoting, not a shell
                if tb.comment in tokens and tokens[:1] == ["-A"]:
                    await tb.iptables(node.name, ["-D", *tokens[1:]])
            await _del_root_qdisc(tb, node.host_veth, None)
            await _del_root_qdisc(tb, "eth0", node.name)
            await tb.ip(["link", "set", node.host_veth, "up"])

    async def heal(self, tb: Testbed) -> None:
        return None

    def describe(self) -> str:
        return "heal all"


@dataclass(frozen=True)
class FaultEvent:
    at: float  # time.monotonic()
    action: Literal["apply", "heal", "error"]
    fault: str
    detail: str = ""


class Nemesis:
    """Applies faults to one testbed, remembers the active ones, heals them all on demand."""

    def __init__(self, tb: Testbed,
                 on_event: Callable[[FaultEvent], None] | None = None) -> None:
        self.tb = tb
        self.active: list[Fault] = []
        self.events: list[FaultEvent] = []
        self._on_event = on_event

    def _log(self, action: Literal["apply", "heal", "error"], fault: Fault,
             detail: str = "") -> None:
        event = FaultEvent(time.monotonic(), action, fault.describe(), detail)
        self.events.append(event)
        if self._on_event is not None:
            self._on_event(event)

    async def apply(self, fault: Fault) -> Fault:
        if isinstance(fault, Heal):
            await self.heal_all()
            return fault
        try:
            await fault.apply(self.tb)
        except FaultError as exc:
            self._log("error", fault, str(exc))
            raise
        self.active.append(fault)
        self._log("apply", fault)
        return fault

    async def heal(self, fault: Fault) -> None:
        await fault.heal(self.tb)
        self.active = [f for f in self.active if f is not fault]
        self._log("heal", fault)

    async def heal_all(self) -> None:
        """Heal active faults newest first, then sweep the network; raise the first error
        only after everything was tried."""
        first: BaseException | None = None
        for fault in reversed(list(self.active)):
            try:
                await self.heal(fault)
            except (FaultError, CommandError) as exc:
                self._log("error", fault, str(exc))
                first = first or exc
        self.active.clear()
        sweep = Heal()
        await sweep.apply(self.tb)
        self._log("heal", sweep)
        if first is not None:
            raise FaultError(f"heal_all: {first}") from first


# Public names for code that classifies faults by kind (chaos.detections).
NetworkCut = _Cuts
SignalFault = _Signal
