"""A whole site lost at once, and its return (TESTING "Losing a whole site").

Losing a site is every process in the cluster's namespace SIGKILLed together: its agent, Serf,
HAProxy and services (`ip netns pids NS | xargs kill -9`), so unlike `AgentCrash` nothing of
the cluster keeps serving. The site returns as a fresh agent start on its old data dir, or,
with `wipe`, on an emptied one (a site rebuilt after a disk loss). Its network stays up: what
the others see is what they would see of a burnt-down machine room whose address still
answers with resets, the quickest failure to notice (an isolated site is `faults.Isolate`).
"""
from __future__ import annotations

import os
import shutil
import signal
from dataclasses import dataclass, field

from chaos.cluster import AgentError, Federation
from chaos.errors import CommandError, FaultError
from chaos.faults import Fault
from chaos.netns import Testbed
from peer.runtime.waiting import WaitTimeout, wait_until

GONE_TIMEOUT = 15.0


@dataclass
class SiteLoss(Fault):
    """SIGKILL everything in `cluster`'s namespace; heal starts its agent again (see module)."""

    fed: Federation
    cluster: str
    wipe: bool = False
    killed: list[int] = field(default_factory=list, init=False, compare=False)

    async def apply(self, tb: Testbed) -> None:
        try:
            pids = await tb.pids(self.cluster)
        except CommandError as exc:
            raise FaultError(f"{self.describe()}: {exc}") from exc
        me = os.getpid()
        self.killed = []
        for pid in pids:  # one quick pass: the whole site goes down together
            if pid == me:
                continue
            try:
                os.kill(pid, signal.SIGKILL)
                self.killed.append(pid)
            except ProcessLookupError:
                continue
        if not self.killed:
            raise FaultError(f"{self.describe()}: nothing ran in the namespace")
        agent = self.fed.agents[self.cluster]
        try:
            if agent.proc is not None:
                await wait_until(lambda: agent.proc is not None and agent.proc.returncode
                                 is not None, timeout=GONE_TIMEOUT,
                                 what=f"{self.cluster}'s agent to die")
            await wait_until(self._gone, timeout=GONE_TIMEOUT,
                             what=f"every process of {self.cluster} to die")
        except WaitTimeout as exc:
            raise FaultError(f"{self.describe()}: {exc}") from exc

    async def _gone(self) -> bool:
        alive = set(await self.fed.tb.pids(self.cluster)) - {os.getpid()}
        return not alive

    async def heal(self, tb: Testbed) -> None:
        """The site returns: its agent starts again (on an emptied data dir if `wipe`)."""
        agent = self.fed.agents[self.cluster]
        if agent.running:
            return
        if self.wipe:
            shutil.rmtree(agent.data_dir, ignore_errors=True)
            agent.data_dir.mkdir(parents=True)
        try:
            await self.fed.restart_agent(self.cluster)
        except AgentError as exc:
            raise FaultError(f"restarting {self.cluster}: {exc}") from exc

    def describe(self) -> str:
        return f"site loss {self.cluster}" + (" (data dir wiped on return)" if self.wipe else "")
