"""`make demo`: the paper's use case (III-B) on this machine, with real parts.

Three clusters in network namespaces (deep-edge, edge, cloud), each with a real roam agent
(Serf, HAProxy, process driver). A stream source and a classifier are homed at the deep edge;
a client sends classifier requests through the classifier's HC endpoint for the whole run,
while a bandwidth script plays on the links. The classifier keeps state (per-stream counters,
the stateful sample with its state hook) and runs with one hot standby (issue 15): its state
follows it through every move, and an outage is taken by the standby:

  good      links unshaped       -> the classifier moves out (to the cloud, most compute)
  degraded  cloud link 4 Mbit/s  -> it moves to the edge
  outage    deep edge cut off    -> fail-safe: back home at the deep edge
  recovery  everything healed    -> it moves out again
  site loss the deep-edge site lost (every process in its namespace SIGKILLed) while the
            classifier runs away from it: the client, using the entry list, keeps being
            served through the surviving entry of the home set

The client is configured with the classifier's entries (`endpoints`, HC first), as a real client
is: next entry on a failure, back to the first when it serves again. Users never change
endpoints. Exits non-zero if an invariant broke.
"""
from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp

from chaos.demo_report import DemoResult, Phase
from chaos.faults import Bandwidth, Partition
from chaos.entries import EntryList
from chaos.load import LiveCounter, run_entry_load
from chaos.netns import Testbed, install_emergency_cleanup
from peer.runtime.waiting import WaitTimeout, wait_until

CLUSTERS = {"deep-edge": ("1", "1Gi"), "edge": ("4", "4Gi"), "cloud": ("16", "16Gi")}
PREFIX = "roamdemo"
SUBNET = "10.77.0.0/24"
DWELL = "6"
RATE = 40.0


class Demo:
    def __init__(self, *, report_dir: Path, work: Path, identity: bool = False) -> None:
        self.report_dir = report_dir
        self.work = work
        self.identity = identity  # per-cluster identity: a CA in work/ca, mTLS between the agents
        self.scheme = "https" if identity else "http"
        self._ssl: Any = None
        self.token = secrets.token_urlsafe(24)
        self.result = DemoResult(mode="netns", clock_offset=time.time() - time.monotonic())
        self.live = LiveCounter()
        self.addrs: dict[str, str] = {}
        self.session: aiohttp.ClientSession | None = None
        self.endpoint = ""
        self.endpoints: list[str] = []
        self.homes: list[str] = []
        self.lost: set[str] = set()  # sites lost for good (the site-loss phase)
        self._seen: set[str] = set()
        self._where: str | None = None
        self.crashed = "edge"
        self.t0 = time.monotonic()

    # -- output ----------------------------------------------------------------------------
    def say(self, text: str, **event: Any) -> None:
        t = time.monotonic() - self.t0
        print(f"[{t:6.1f}s] {text}", flush=True)
        self.result.events.append({"t": round(t, 3), "text": text, **event})

    # -- admin API -------------------------------------------------------------------------
    async def api(self, cluster: str, method: str, path: str, body: Any = None) -> Any:
        assert self.session is not None
        url = f"{self.scheme}://{self.addrs[cluster]}:7070{path}"
        if self._ssl is None:
            self._ssl = self.client_ssl()
        async with self.session.request(method, url, json=body, headers={"Authorization": f"Bearer {self.token}"},
                                        ssl=self._ssl,
                                        timeout=aiohttp.ClientTimeout(total=60)) as r:
            data = await r.json(content_type=None)
            if r.status >= 400:
                raise RuntimeError(f"{method} {path} at {cluster}: {r.status} {data}")
            return data

    # -- the run ---------------------------------------------------------------------------
    async def start_agents(self, tb: Testbed) -> None:
        secret, token = self.work / "secret", self.work / "token"
        for path, value in ((secret, secrets.token_urlsafe(32)), (token, self.token)):
            path.write_text(value)
            path.chmod(0o600)
        seed = self.addrs["deep-edge"]
        for name, (cpu, mem) in CLUSTERS.items():
            args = ["--tier", name, "--cpu", cpu, "--memory", mem, "--dwell", DWELL, "--auto-migrate",
                    "--secret-file", str(secret), "--token-file", str(token)]
            if name != "deep-edge":
                args += ["--join", seed]
            args += self._identity_args(name)
            await tb.start_agent(name, extra_args=args, data_dir=self.work / name, log_path=self.work / f"{name}.log")
        await self.wait_federation()

    def _identity_args(self, name: str) -> list[str]:
        if not self.identity:
            return ["--no-peer-tls"]  # the shared secret only (the demo loses sites: see chaos.cluster)
        from peer.trust import ca

        if not (self.work / "ca" / ca.CA_KEY).exists():
            ca.init(self.work / "ca")
        out = self.work / "tls" / name
        ca.issue(self.work / "ca", cluster=name, out=out, ips=(self.addrs[name],))
        return ["--ca-cert", str(out / ca.OUT_CA), "--cert", str(out / ca.OUT_CERT), "--key", str(out / ca.OUT_KEY)]

    def client_ssl(self) -> Any:
        """The admin client's TLS: trust the federation CA (the agents' certificates are its)."""
        if not self.identity:
            return True
        import ssl

        return ssl.create_default_context(cafile=str(self.work / "ca" / "ca.pem"))

    async def wait_federation(self) -> None:
        """Every agent answers, and the HC sees all of them alive with their load."""
        for name in CLUSTERS:
            await wait_until(self._health(name), timeout=30, what=f"{name} up")

        async def joined() -> bool:
            members = await self.api("deep-edge", "GET", "/v1/members")
            return sum(1 for m in members if m["status"] == "alive" and m["load"]) == len(CLUSTERS)

        await wait_until(joined, timeout=30, what="federation joined")
        self.say(f"federation up ({self.result.mode}): " + ", ".join(f"{n} ({a})" for n, a in self.addrs.items()))

    def _health(self, name: str) -> Callable[[], Awaitable[Any]]:
        return lambda: self.api(name, "GET", "/v1/health")

    async def deploy(self) -> None:
        classifier = {
            "name": "classifier", "port": 8080, "cpu": 0.5, "memory": "128Mi", "health": {"path": "/healthz"},
            "command": [sys.executable, "-m", "peer.samples.stateful", "--host", "{host}", "--port", "{port}"],
            "standby": 1, "state": {"path": "/roam/state", "interval": 1.0},
        }
        record = await self.api("deep-edge", "POST", "/v1/services", classifier)
        self.endpoint = record["endpoint"]
        self.endpoints, self.homes = list(record["endpoints"]), list(record["homes"])
        self._where = record["location"]
        stream = {
            "name": "stream", "port": 8081, "cpu": 0.1, "memory": "64Mi", "constraints": {"tiers": ["deep-edge"]},
            "health": {"path": "/healthz"},
            "command": [sys.executable, "-m", "peer.samples.stream", f"http://{self.endpoint}/classify",
                        "--rate", "5", "--report-every", "0", "--host", "{host}", "--port", "{port}"],
        }
        try:
            await self.api("deep-edge", "POST", "/v1/services", stream)
            self.say("deployed stream source (pinned to deep-edge) and classifier, both homed at deep-edge; "
                     f"classifier entries {', '.join(f'{h}={e}' for h, e in zip(self.homes, self.endpoints))}")
        except RuntimeError as exc:
            self.say(f"stream source not deployed ({exc}); the demo client plays the cameras")

    async def watch(self) -> None:
        """The live timeline: migrations with their stages, and where the classifier runs."""
        while True:
            await asyncio.sleep(0.5)
            observer = self.observer()
            try:
                history = await self.api(observer, "GET", "/v1/migrations")
                record = await self.api(observer, "GET", "/v1/services/classifier")
            except (RuntimeError, aiohttp.ClientError, asyncio.TimeoutError):
                continue
            for m in reversed(history):
                # finished_at comes after the cleanup (the answer comes at the commit): only then
                # does the migration's no-loss window (demo_report.planned_windows) end.
                if m["service"] != "classifier" or m.get("finished_at") is None or m["id"] in self._seen:
                    continue
                self._seen.add(m["id"])
                self.result.migrations.append(m)
                stages = " ".join(f"{k}={m[k]:.0f}ms" for k in ("pr", "replication", "wait", "reroute", "cleanup",
                                                                 "deploy") if m.get(k) is not None)
                extra = m.get("durations_ms", {}).get("detection")
                if extra is not None:
                    stages = f"detection={extra:.0f}ms " + stages
                self.say(f"{m['kind']} migration {m['source']} -> {m['target']}: {m['outcome']} ({m['reason']}) "
                         f"{stages}", kind="migration", migration=m["id"])
            if record["location"] != self._where:
                self._where = record["location"]
                self.say(f"classifier now runs at {self._where} (role at {observer}: {record['role']}, "
                         f"steward {record.get('steward')})", kind="location", location=self._where)

    async def moves_recorded(self) -> bool:
        """Every move of the classifier the observer knows is finished (its cleanup, which comes
        after the answer, done) and on the timeline: a site loss must not take a move's only
        history with it before the report has it."""
        try:
            history = await self.api(self.observer(), "GET", "/v1/migrations")
        except (RuntimeError, aiohttp.ClientError, asyncio.TimeoutError):
            return False
        return all(m.get("finished_at") is not None and m["id"] in self._seen
                   for m in history if m["service"] == "classifier" and m["outcome"] != "failed")

    async def read_state(self) -> None:
        """The classifier's own counters at the end, through the first entry that serves."""
        assert self.session is not None
        for endpoint in self.endpoints:
            with contextlib.suppress(aiohttp.ClientError, asyncio.TimeoutError, ValueError):
                async with self.session.get(f"http://{endpoint}/counters",
                                            timeout=aiohttp.ClientTimeout(total=2)) as r:
                    if r.status == 200:
                        body = await r.json()
                        self.result.state_counted, self.result.state_version = body["total"], str(body["version"])
                        return

    def observer(self) -> str:
        """Whose view the timeline shows: the HC's, or the next entry's once the HC's site is lost."""
        return next((c for c in [*self.homes, *CLUSTERS] if c not in self.lost), "deep-edge")

    async def lose_site(self, tb: Testbed, cluster: str) -> None:
        """TESTING "Losing a whole site": every process in the cluster's namespace SIGKILLed."""
        self.lost.add(cluster)
        me = os.getpid()
        for pid in await tb.pids(cluster):
            if pid != me:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)

    async def progress(self) -> None:
        while True:
            await asyncio.sleep(3.0)
            self.say(f"requests: {self.live.line()} | classifier at {self._where}")

    async def until_at(self, clusters: set[str], timeout: float) -> bool:
        try:
            await wait_until(lambda: self._where in clusters, timeout=timeout, interval=0.2)
            return True
        except WaitTimeout:
            self.say(f"classifier did not reach {sorted(clusters)} within {timeout:.0f}s")
            return False

    async def phase(self, name: str, action: Callable[[], Awaitable[None]], want: set[str], timeout: float) -> bool:
        if self.result.phases:
            self.result.phases[-1].end = time.monotonic()
        self.result.phases.append(Phase(name, time.monotonic()))
        await action()
        ok = await self.until_at(want, timeout)
        await asyncio.sleep(2.0)  # let the client see the new steady state in the plot
        return ok


def namespaces_available() -> bool:
    return os.geteuid() == 0 and shutil.which("ip") is not None and shutil.which("iptables") is not None


async def run_demo(report_dir: Path, *, loopback: bool = False, identity: bool = False,
                   prefix: str = PREFIX, subnet: str = SUBNET, work: Path | None = None) -> int:
    """`work`: where the agents keep their data dirs and logs, kept afterwards (the test reads
    the logs when an assertion fails); by default a temporary directory removed at the end."""
    if loopback or not namespaces_available():
        if not loopback:
            print("network namespaces need root, iproute2 and iptables: falling back to loopback addresses "
                  "without bandwidth shaping or partitions", flush=True)
            if identity:
                print("per-cluster identity (--identity) is wired into the netns demo only: "
                      "the loopback demo runs without it", flush=True)
        from chaos.demo_loopback import run_loopback_demo

        return await run_loopback_demo(report_dir, work=work)
    return await _run_netns_demo(report_dir, identity=identity, prefix=prefix, subnet=subnet, work=work)


def work_dir(given: Path | None) -> Path:
    if given is None:
        return Path(tempfile.mkdtemp(prefix="roam-demo-"))
    given.mkdir(parents=True, exist_ok=True)
    return given


async def _run_netns_demo(report_dir: Path, *, identity: bool, prefix: str, subnet: str, work: Path | None) -> int:
    keep = work is not None
    work = work_dir(work)
    uninstall = install_emergency_cleanup(prefix)
    demo = Demo(report_dir=report_dir, work=work, identity=identity)
    reached: list[bool] = [False]
    try:
        async with Testbed(list(CLUSTERS), prefix=prefix, subnet=subnet) as tb, aiohttp.ClientSession() as s:
            demo.session = s
            demo.addrs = {c: tb.addr(c) for c in CLUSTERS}
            await demo.start_agents(tb)
            await demo.deploy()
            cut = Partition(["deep-edge"], ["edge", "cloud"])
            slow = Bandwidth("cloud", rate_mbit=4)

            async def good() -> None:
                demo.say("phase good: all links unshaped; the classifier should move out for compute")

            async def degraded() -> None:
                await slow.apply(tb)
                demo.say("phase degraded: cloud link shaped to 4 Mbit/s (tc tbf)")

            async def outage() -> None:
                await slow.heal(tb)
                await cut.apply(tb)
                demo.say("phase outage: deep-edge cut off from edge and cloud (iptables INPUT DROP)")

            async def recovery() -> None:
                await cut.heal(tb)
                demo.say("phase recovery: links healed")

            async def site_loss() -> None:
                with contextlib.suppress(WaitTimeout):  # a cleanup still running: lose the site anyway
                    await wait_until(demo.moves_recorded, timeout=15, what="the moves so far on the timeline")
                await demo.lose_site(tb, "deep-edge")
                demo.say("phase site loss: the deep-edge site is lost (every process in its namespace "
                         f"SIGKILLed); the client keeps its entry list; the timeline now shows {demo.observer()}")

            reached = await play(demo, [("good", good, {"cloud", "edge"}, 60), ("degraded", degraded, {"edge"}, 60),
                                        ("outage", outage, {"deep-edge"}, 30),
                                        ("recovery", recovery, {"cloud", "edge"}, 60),
                                        ("site loss", site_loss, {"cloud", "edge"}, 30)])
    finally:
        uninstall()
    return finish(demo, reached, report_dir, work, keep=keep)


Step = tuple[str, Callable[[], Awaitable[None]], set[str], float]


async def play(demo: Demo, script: list[Step]) -> list[bool]:
    """Client load and the live timeline for the whole script; the invariants at its end."""
    stop = asyncio.Event()
    entries = EntryList.of([f"http://{e}/classify" for e in demo.endpoints], labels=demo.homes)
    load = asyncio.create_task(run_entry_load(entries, rate=RATE, stop=stop, timeout=5.0, live=demo.live))
    watchers = [asyncio.create_task(demo.watch()), asyncio.create_task(demo.progress())]
    try:
        reached = [await demo.phase(name, action, want, timeout) for name, action, want, timeout in script]
        demo.result.phases[-1].end = time.monotonic()
        await check_invariants(demo)
        await demo.read_state()
    finally:
        stop.set()
        demo.result.samples = (await load).samples
        for w in watchers:
            w.cancel()
    return reached


def finish(demo: Demo, reached: list[bool], report_dir: Path, work: Path, *, keep: bool = False) -> int:
    demo.result.checks.append({"name": "script", "ok": all(reached),
                               "detail": f"phases reached their placement: {reached}"})
    planned_sent, planned_lost = demo.result.failed_in(demo.result.planned_windows())
    demo.result.checks.append({"name": "no request lost in planned migrations", "ok": planned_lost == 0,
                               "detail": f"{planned_sent} requests sent inside migration windows, {planned_lost} lost"})
    for line in demo.result.summary_lines():
        print(line)
    report, plot = demo.result.write(report_dir)
    print(f"\nreport: {report}" + (f"\nplot:   {plot}" if plot else ""))
    if not keep:
        shutil.rmtree(work, ignore_errors=True)
    return 0 if all(c["ok"] for c in demo.result.checks) else 1


async def check_invariants(demo: Demo) -> None:
    """Once healed and quiet: one copy per service among the surviving sites, the home set and
    the host agree on its record, the entries serve."""
    alive = [c for c in CLUSTERS if c not in demo.lost]

    async def settled() -> bool:
        copies = {c: [i["name"] for i in await demo.api(c, "GET", "/v1/instances") if i["state"] == "ready"]
                  for c in alive}
        records = {c: {r["name"]: (tuple(r["homes"]), r["location"], tuple(sorted(r["vclock"].items())),
                                   tuple(r.get("standbys") or ()))
                       for r in await demo.api(c, "GET", "/v1/services")} for c in alive}
        where = {c for c, names in copies.items() if "classifier" in names}
        keepers = {c: recs["classifier"] for c, recs in records.items() if "classifier" in recs}
        if len(set(keepers.values())) != 1:
            return False
        homes, location, _, standbys = next(iter(keepers.values()))
        # The primary and its one standby run, nothing else (the standby is placed again after
        # the site loss among the clusters left); the surviving entries of the home set (deep-edge
        # among them: the HC is never dropped, it may come back), where it runs and the standby
        # keep the record.
        if location in standbys or len(standbys) != 1 or where != {location, *standbys}:
            return False
        return "deep-edge" in homes and set(keepers) == {*homes, location, *standbys} - demo.lost

    try:
        await wait_until(settled, timeout=30, interval=0.5, what="one copy and agreeing records")
        demo.result.checks.append({"name": "one copy and its standby, records agree", "ok": True,
                                   "detail": "at the end, among " + ", ".join(alive)})
    except WaitTimeout as exc:
        demo.result.checks.append({"name": "one copy and its standby, records agree", "ok": False,
                                   "detail": str(exc)})
