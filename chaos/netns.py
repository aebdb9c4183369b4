"""The testbed: N clusters on one machine, each in its own network namespace on a shared bridge.

Layout for prefix P and subnet S (default 10.77.0.0/24):
- bridge `Pbr0` in the root namespace with address S.1, so a load client in the root
  namespace reaches every cluster through it;
- cluster i: namespace `P-<name>`, veth `P-h<i>` (host side, on the bridge) <-> `eth0`
  (inside) with address S.(10+i), and `lo` up;
- optional client namespace `P-client` with S.2 (veth `P-hc`).

Processes started with `spawn` run under `ip netns exec`, each in its own session (so its
own process group), with `ROAM_CHAOS_TESTBED=P` in their environment. Teardown kills the
tracked groups (SIGTERM, then SIGKILL), every process left inside the namespaces and every
marked process, then deletes namespaces, veths and the bridge, and checks nothing is left.
`cleanup_leftovers(P)` does the same for a run that crashed; `install_emergency_cleanup`
wires it to atexit, SIGINT and SIGTERM for a scenario runner.

br_netfilter: with `net.bridge.bridge-nf-call-iptables=1` (as on this machine) bridged
frames traverse the root namespace's FORWARD chain. Faults never use it (partitions are INPUT
rules inside the namespaces), but a DROP policy there would silently cut the bridge, so
setup refuses to start in that case instead of touching the root firewall.

Neighbour tables: every namespace's ARP entries count against one kernel-wide limit
(`net.ipv4.neigh.default.gc_thresh3`, 1,024 by default) and a full mesh of n clusters needs
about n² + n of them: past ~30 clusters joins fail and Serf suspects live members. Setup raises
the three thresholds when the testbed needs more (`NeighbourRoom`) and teardown puts back what
it found, unless somebody changed them meanwhile.
"""
from __future__ import annotations

import asyncio
import atexit
import ipaddress
import os
import shlex
import signal
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType, TracebackType

from chaos import leftovers, naming
from chaos.commands import CmdResult, run_cmd, run_cmd_sync
from chaos.errors import CommandError, TestbedError
from peer.runtime.waiting import WaitTimeout, wait_until_sync

CLIENT = "client"  # node name of the optional client namespace
HOST = "host"  # node name of the root namespace (the bridge address); it has no netns
REPO_ROOT = Path(__file__).resolve().parents[1]
_NAME_OK = frozenset("abcdefghijklmnopqrstuvwxyz0123456789-")


@dataclass(frozen=True)
class Node:
    """One namespace of the testbed: a cluster or the client."""

    name: str
    netns: str
    addr: str
    host_veth: str


class Testbed:
    """N cluster namespaces (and optionally a client one) on a bridge; see the module doc."""

    __test__ = False  # not a pytest test class despite the name

    def __init__(
        self,
        clusters: Sequence[str],
        *,
        prefix: str = "roam",
        subnet: str = "10.77.0.0/24",
        client: bool = False,
        clean_first: bool = True,
        term_grace: float = 3.0,
    ) -> None:
        self.prefix = naming.check_prefix(prefix)
        self.network = ipaddress.ip_network(subnet)
        if self.network.num_addresses < 16 + len(clusters):
            raise ValueError(f"subnet {subnet} too small for {len(clusters)} clusters")
        for name in clusters:
            if not name or set(name) - _NAME_OK or name in (CLIENT, HOST):
                raise ValueError(f"cluster name {name!r}: want [a-z0-9-], not {CLIENT}/{HOST}")
        if len(set(clusters)) != len(clusters):
            raise ValueError(f"duplicate cluster names in {list(clusters)}")
        self.clusters = list(clusters)
        self.bridge = naming.bridge_name(prefix)
        self.bridge_addr = str(self.network.network_address + 1)
        self.clean_first = clean_first
        self.term_grace = term_grace
        self._nodes: dict[str, Node] = {}
        for i, name in enumerate(clusters):
            self._nodes[name] = self._node(name, 10 + i, str(i))
        if client:
            self._nodes[CLIENT] = self._node(CLIENT, 2, "c")
        self._procs: list[asyncio.subprocess.Process] = []
        self._up = False
        self._neighbours = NeighbourRoom(len(self._nodes) + 1)  # + the bridge address

    def _node(self, name: str, host_part: int, tag: str) -> Node:
        return Node(
            name=name,
            netns=naming.netns_name(self.prefix, name),
            addr=str(self.network.network_address + host_part),
            host_veth=naming.veth_name(self.prefix, tag),
        )

    # -- lookups -------------------------------------------------------------------------

    @property
    def nodes(self) -> list[Node]:
        return list(self._nodes.values())

    @property
    def has_client(self) -> bool:
        return CLIENT in self._nodes

    @property
    def comment(self) -> str:
        """The iptables comment that tags every rule of this testbed."""
        return naming.rule_comment(self.prefix)

    def node(self, name: str) -> Node:
        try:
            return self._nodes[name]
        except KeyError as exc:
            raise TestbedError(f"no node {name!r} in testbed {self.prefix}") from exc

    def addr(self, name: str) -> str:
        """Address of a cluster, of the client namespace, or of the root namespace (`host`)."""
        return self.bridge_addr if name == HOST else self.node(name).addr

    def netns(self, name: str) -> str:
        return self.node(name).netns

    def host_veth(self, name: str) -> str:
        return self.node(name).host_veth

    @property
    def tracked_pgids(self) -> list[int]:
        return [p.pid for p in self._procs]

    # -- lifecycle -----------------------------------------------------------------------

    async def __aenter__(self) -> Testbed:
        await self.setup()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.teardown()

    async def setup(self) -> None:
        """Build bridge and namespaces; on any failure tear down what was built and raise."""
        if self._up:
            raise TestbedError(f"testbed {self.prefix} already set up")
        if self.clean_first:
            await asyncio.to_thread(cleanup_leftovers, self.prefix)
        await _check_bridge_forwarding()
        self._up = True
        try:
            self._neighbours.raise_limits()
            plen = self.network.prefixlen
            await run_cmd(["ip", "link", "add", self.bridge, "type", "bridge"])
            await run_cmd(["ip", "addr", "add", f"{self.bridge_addr}/{plen}", "dev", self.bridge])
            await run_cmd(["ip", "link", "set", self.bridge, "up"])
            for node in self.nodes:
                await self._add_node(node, plen)
        except BaseException:
            await self.teardown()
            raise

    async def _add_node(self, node: Node, plen: int) -> None:
        ns = node.netns
        await run_cmd(["ip", "netns", "add", ns])
        await run_cmd(["ip", "link", "add", node.host_veth, "type", "veth",
                       "peer", "name", "eth0", "netns", ns])
        await run_cmd(["ip", "link", "set", node.host_veth, "master", self.bridge, "up"])
        await run_cmd(["ip", "-n", ns, "addr", "add", f"{node.addr}/{plen}", "dev", "eth0"])
        await run_cmd(["ip", "-n", ns, "link", "set", "eth0", "up"])
        await run_cmd(["ip", "-n", ns, "link", "set", "lo", "up"])

    async def teardown(self) -> None:
        """Kill everything started, delete everything built; raise if anything remains."""
        if not self._up:
            return
        self._up = False
        pgids = self.tracked_pgids
        await self._stop_all()
        found = await asyncio.to_thread(cleanup_leftovers, self.prefix)
        self._neighbours.restore()
        left = await asyncio.to_thread(leftovers.probe, self.prefix, pgids=pgids)
        if not left.empty:
            raise TestbedError(f"teardown of {self.prefix} left {left.as_dict()} "
                               f"(cleanup had found {found.as_dict()})")

    async def _stop_all(self) -> None:
        procs, self._procs = self._procs, []
        await asyncio.gather(*(self._stop(p, self.term_grace) for p in procs))

    async def stop(self, proc: asyncio.subprocess.Process, *, grace: float = 3.0) -> int:
        """SIGTERM a spawned process's group, SIGKILL it after `grace`; return the exit code."""
        if proc in self._procs:
            self._procs.remove(proc)
        return await self._stop(proc, grace)

    @staticmethod
    async def _stop(proc: asyncio.subprocess.Process, grace: float) -> int:
        _killpg(proc.pid, signal.SIGTERM)
        _killpg(proc.pid, signal.SIGCONT)  # a paused group cannot act on SIGTERM
        try:
            await asyncio.wait_for(proc.wait(), grace)
        except asyncio.TimeoutError:
            pass
        _killpg(proc.pid, signal.SIGKILL)  # also members that outlived the leader
        return await proc.wait()

    # -- running things inside namespaces ------------------------------------------------

    async def run(self, name: str, argv: Sequence[str], *, check: bool = True,
                  timeout: float = 30.0) -> CmdResult:
        """Run a short command inside a node's namespace and wait for it."""
        self._require_up()
        return await run_cmd(["ip", "netns", "exec", self.netns(name), *argv],
                             check=check, timeout=timeout)

    async def spawn(
        self,
        name: str,
        argv: Sequence[str],
        *,
        log_path: Path,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
    ) -> asyncio.subprocess.Process:
        """Start a long-running process inside a node's namespace, in its own process group.

        stdout and stderr go to `log_path`; the process is tracked and killed at teardown.
        """
        self._require_up()
        full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {}),
                    naming.MARKER_ENV: self.prefix}
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(log_path, "ab") as log:
            proc = await asyncio.create_subprocess_exec(
                "ip", "netns", "exec", self.netns(name), *argv,
                stdin=asyncio.subprocess.DEVNULL, stdout=log, stderr=asyncio.subprocess.STDOUT,
                env=full_env, cwd=cwd, start_new_session=True,
            )
        self._procs.append(proc)
        return proc

    async def start_agent(
        self,
        cluster: str,
        *,
        extra_args: Sequence[str],
        data_dir: Path,
        log_path: Path,
    ) -> asyncio.subprocess.Process:
        """Start `roam agent` for `cluster` inside its namespace, bound to the cluster address."""
        data_dir.mkdir(parents=True, exist_ok=True)
        argv = [sys.executable, "-m", "peer.cli", "agent", "--name", cluster,
                "--addr", self.addr(cluster), "--data-dir", str(data_dir), *extra_args]
        pythonpath = os.pathsep.join(p for p in (str(REPO_ROOT), os.environ.get("PYTHONPATH"))
                                     if p)
        return await self.spawn(cluster, argv, log_path=log_path, cwd=REPO_ROOT,
                                env={"PYTHONPATH": pythonpath})

    async def pids(self, name: str) -> list[int]:
        """Every process whose network namespace is this node's (`ip netns pids`)."""
        res = await run_cmd(["ip", "netns", "pids", self.netns(name)])
        return [int(tok) for tok in res.stdout.split()]

    async def iptables(self, name: str, args: Sequence[str]) -> CmdResult:
        """Run `iptables -w ARGS` inside a node's namespace (never in the root namespace)."""
        return await self.run(name, ["iptables", "-w", *args])

    async def tc(self, args: Sequence[str], *, netns_of: str | None = None) -> CmdResult:
        """Run `tc ARGS` in the root namespace, or inside `netns_of`'s namespace."""
        self._require_up()
        prefix = ["tc"] if netns_of is None else ["tc", "-n", self.netns(netns_of)]
        return await run_cmd([*prefix, *args])

    async def ip(self, args: Sequence[str]) -> CmdResult:
        """Run `ip ARGS` in the root namespace (link state of host-side veths)."""
        self._require_up()
        return await run_cmd(["ip", *args])

    def _require_up(self) -> None:
        if not self._up:
            raise TestbedError(f"testbed {self.prefix} is not set up")


NEIGH_SYSCTL = Path("/proc/sys/net/ipv4/neigh/default")


def neighbour_thresholds(hosts: int) -> tuple[int, int, int]:
    """gc_thresh1-3 that hold a full mesh of `hosts` addresses with room to spare: below
    thresh1 the kernel never collects, thresh3 is the hard limit."""
    needed = hosts * hosts + hosts
    return needed, 2 * needed, 4 * needed


class NeighbourRoom:
    """Raises the kernel's neighbour-table limits for a testbed of `hosts` addresses, and puts
    back what it found (see the module doc)."""

    def __init__(self, hosts: int, *, root: Path = NEIGH_SYSCTL) -> None:
        self.hosts = hosts
        self.root = root
        self._saved: dict[str, tuple[int, int]] = {}  # knob -> (found, set)

    def raise_limits(self) -> None:
        wanted = neighbour_thresholds(self.hosts)
        for i, value in reversed(list(enumerate(wanted, start=1))):  # the hard limit first
            knob = self.root / f"gc_thresh{i}"
            try:
                found = int(knob.read_text())
                if found < value:
                    knob.write_text(str(value))
                    self._saved[knob.name] = (found, value)
            except (OSError, ValueError):
                continue  # not ours to insist on: a small testbed works without it

    def restore(self) -> None:
        for name, (found, value) in sorted(self._saved.items()):  # thresh1 first
            knob = self.root / name
            try:
                if int(knob.read_text()) == value:
                    knob.write_text(str(found))
            except (OSError, ValueError):
                pass
        self._saved.clear()


def _killpg(pgid: int, sig: signal.Signals) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _kill(pid: int, sig: signal.Signals) -> None:
    try:
        os.kill(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


async def _check_bridge_forwarding() -> None:
    try:
        value = Path("/proc/sys/net/bridge/bridge-nf-call-iptables").read_text().strip()
    except OSError:
        return  # br_netfilter not loaded: bridged frames never see iptables
    if value != "1":
        return
    res = await run_cmd(["iptables", "-w", "-S", "FORWARD"])
    policy = res.stdout.splitlines()[0] if res.stdout else ""
    if policy != "-P FORWARD ACCEPT":
        raise TestbedError(
            "bridge-nf-call-iptables=1 and the root FORWARD policy is not ACCEPT "
            f"({policy!r}): the bridge would drop traffic between namespaces. Set "
            "net.bridge.bridge-nf-call-iptables=0 or accept bridged traffic first.")


def cleanup_leftovers(prefix: str, *, timeout: float = 10.0) -> leftovers.Leftovers:
    """Remove everything a testbed with `prefix` left behind; return what was found.

    Kills processes inside its namespaces and processes carrying its marker, deletes the
    namespaces, links and bridge, and deletes its tagged iptables rules in the root
    namespace. Blocking, idempotent, safe to call from atexit or a signal handler.
    """
    naming.check_prefix(prefix)
    found = leftovers.probe(prefix)
    namespaces = leftovers.list_netns(prefix)
    victims = set(leftovers.marked_pids(prefix))
    for ns in namespaces:
        victims.update(leftovers.netns_pids(ns))
    victims.discard(os.getpid())
    for pid in victims:
        _kill(pid, signal.SIGKILL)
    try:
        wait_until_sync(lambda: not _alive(victims), timeout=timeout,
                        what=f"{prefix} processes to die")
        for ns in namespaces:
            run_cmd_sync(["ip", "netns", "del", ns], check=False)
        for link in leftovers.list_links(prefix):
            run_cmd_sync(["ip", "link", "del", link], check=False)  # veths may vanish first
        for rule in leftovers.tagged_rules(prefix):
            _delete_rule(rule)
        # deleting a namespace destroys its veths asynchronously in the kernel
        wait_until_sync(lambda: not leftovers.list_links(prefix) and not
                        leftovers.list_netns(prefix), timeout=timeout,
                        what=f"{prefix} links and namespaces to vanish")
    except WaitTimeout as exc:
        raise TestbedError(f"cleanup of {prefix} incomplete: "
                           f"{leftovers.probe(prefix).as_dict()}") from exc
    return found


def _alive(pids: set[int]) -> bool:
    return any((info := leftovers.read_proc(p)) is not None and info.state != "Z" for p in pids)


def _delete_rule(rule: str) -> None:
    """Turn an `iptables -S` line (`-A CHAIN spec...`) into its `-D` twin and run it."""
    tokens = shlex.split(rule)  # parsing iptables' own quoting; nothing is run by a shell
    if len(tokens) >= 2 and tokens[0] == "-A":
        run_cmd_sync(["iptables", "-w", "-D", *tokens[1:]], check=False)


def install_emergency_cleanup(prefix: str) -> Callable[[], None]:
    """Make a crash, Ctrl-C or SIGTERM still clean up `prefix`; returns an uninstaller.

    For scenario runners (the main thread). The signal handlers clean up, then hand the
    signal to the previous handler (SIGINT still raises KeyboardInterrupt).
    """
    naming.check_prefix(prefix)

    def at_exit() -> None:
        try:
            cleanup_leftovers(prefix)
        except Exception as exc:  # noqa: BLE001 - nothing left to raise to at exit
            print(f"roam chaos: cleanup of {prefix} failed: {exc}", file=sys.stderr)

    previous: dict[signal.Signals, signal.Handlers | Callable[[int, FrameType | None], object]
                   | int | None] = {}

    def on_signal(signum: int, frame: FrameType | None) -> None:
        sig = signal.Signals(signum)
        at_exit()
        prev = previous.get(sig)
        signal.signal(sig, prev if prev is not None else signal.SIG_DFL)
        if callable(prev):
            prev(signum, frame)
        else:
            os.kill(os.getpid(), signum)

    atexit.register(at_exit)
    for sig in (signal.SIGINT, signal.SIGTERM):
        previous[sig] = signal.signal(sig, on_signal)

    def uninstall() -> None:
        atexit.unregister(at_exit)
        for sig, prev in previous.items():
            signal.signal(sig, prev if prev is not None else signal.SIG_DFL)

    return uninstall


__all__ = [
    "CLIENT", "HOST", "CommandError", "Node", "Testbed", "TestbedError", "cleanup_leftovers",
    "install_emergency_cleanup",
]
