"""The process driver with real processes: the sample classifier, crashes, adoption, bad commands."""
from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from peer.drivers.base import (
    Conflict,
    DeployFailed,
    DriverTimeout,
    InstanceState,
    PermanentDriverError,
    ServiceNotFound,
)
from peer.drivers.descriptor import ServiceDescriptor
from peer.drivers.process_state import is_same_process, proc_stat
from peer.drivers.restarts import RestartPolicy
from peer.runtime.waiting import wait_until
from tests.drivers.conftest import HOST, PORTS, Events, classifier

pytestmark = pytest.mark.integration
READY = 30.0  # generous: two shared cores, other helpers' tests running


async def get_json(host: str, port: int, path: str) -> Any:
    url = f"http://{host}:{port}{path}"
    async with aiohttp.ClientSession() as session, session.get(url, timeout=aiohttp.ClientTimeout(total=5)) as resp:
        assert resp.status == 200
        return await resp.json()


def ticks(pid: int) -> int:
    stat = proc_stat(pid)
    assert stat is not None, f"pid {pid} is not running"
    return stat[2]


def reaped(pid: int, start: int) -> bool:
    """Gone for good, not even a zombie (pid_max is small here: compare start times, not pids)."""
    stat = proc_stat(pid)
    return stat is None or stat[2] != start


def alive(pid: int, start: int) -> bool:
    return is_same_process(pid, start)


async def test_deploy_ready_endpoint_delete(make_driver: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ROAM_TOKEN", "agent-secret")  # the agent's secrets must not reach services
    driver = await make_driver()
    inst = await driver.deploy(classifier(), home="c0")
    assert inst.state is InstanceState.STARTING and inst.port in PORTS and inst.pid
    start = ticks(inst.pid)
    ready = await driver.wait_ready("classifier", timeout=READY)
    assert ready.state is InstanceState.READY and ready.home == "c0"
    host, port = await driver.endpoint("classifier")
    assert (host, port) == (HOST, inst.port)

    who = await get_json(host, port, "/")
    assert who == {"service": "classifier", "cluster": "c1", "pid": inst.pid}
    answer = await get_json(host, port, "/classify?seed=3")
    assert answer["label"] and answer["cluster"] == "c1"

    environ = Path(f"/proc/{inst.pid}/environ").read_bytes().split(b"\0")
    assert b"ROAM_HOME=c0" in environ and not any(e.startswith(b"ROAM_TOKEN=") for e in environ)
    state = json.loads((tmp_path / "services/classifier/instance.json").read_text())
    assert (state["pid"], state["pgid"], state["port"]) == (inst.pid, inst.pid, inst.port)
    assert state["start_ticks"] == start

    assert (await driver.deploy(classifier(), home="c0")).pid == inst.pid  # idempotent
    with pytest.raises(Conflict):
        await driver.deploy(classifier(replicas=2), home="c0")

    await driver.delete("classifier")
    assert reaped(inst.pid, start)
    assert not (tmp_path / "services/classifier").exists()
    with pytest.raises(ServiceNotFound):
        await driver.status("classifier")
    await driver.delete("classifier")  # idempotent


async def test_a_new_driver_adopts_a_running_service(make_driver: Any, tmp_path: Path, events: Events) -> None:
    first = await make_driver()
    await first.deploy(classifier(), home="c1")
    inst = await first.wait_ready("classifier", timeout=READY)
    start = ticks(inst.pid)
    await first.stop()  # the agent goes away; its service must not
    assert alive(inst.pid, start)

    # A dead service's state and one whose pid now belongs to another process are not adopted.
    for stale, pid in (("gone", 2**22 + 1), ("reused", os.getpid())):
        (tmp_path / "services" / stale).mkdir()
        record = json.loads((tmp_path / "services/classifier/instance.json").read_text())
        record.update(name=stale, pid=pid, pgid=pid, descriptor=classifier(stale).to_obj())
        (tmp_path / "services" / stale / "instance.json").write_text(json.dumps(record))

    second = await make_driver()
    adopted = await second.adopt()
    assert [(i.name, i.pid, i.port, i.state) for i in adopted] == [
        ("classifier", inst.pid, inst.port, InstanceState.READY)
    ]
    assert not (tmp_path / "services/gone").exists() and not (tmp_path / "services/reused").exists()
    assert events.kinds("gone") == ["lost"] and events.kinds("reused") == ["lost"]

    # The adopter supervises a process that is not its child: a crash is seen and restarted.
    os.kill(inst.pid, signal.SIGKILL)
    await wait_until(lambda: events.kinds("classifier")[-1:] == ["ready"] and "restart" in events.kinds("classifier"),
                     timeout=READY, what="restarted and ready")
    restarted = await second.status("classifier")
    assert restarted.pid != inst.pid and restarted.port == inst.port and restarted.restarts == 1
    assert (await get_json(HOST, restarted.port, "/"))["pid"] == restarted.pid
    assert reaped(inst.pid, start)
    restarted_start = ticks(restarted.pid)
    await second.delete("classifier")
    assert reaped(restarted.pid, restarted_start)


async def test_a_crashed_service_is_restarted_and_reported(make_driver: Any, events: Events) -> None:
    driver = await make_driver()
    await driver.deploy(classifier(), home="c1")
    before = await driver.wait_ready("classifier", timeout=READY)
    start = ticks(before.pid)
    os.kill(before.pid, signal.SIGKILL)

    async def restarted_ready() -> bool:
        inst = await driver.status("classifier")
        return inst.state is InstanceState.READY and inst.pid != before.pid

    await wait_until(restarted_ready, timeout=READY, what="restarted classifier ready")
    after = await driver.status("classifier")
    assert after.restarts == 1 and after.port == before.port
    assert events.kinds("classifier") == ["ready", "crash", "restart", "ready"]
    assert "SIGKILL" in events.seen[1][2]
    assert (await get_json(HOST, after.port, "/"))["pid"] == after.pid
    assert reaped(before.pid, start)


async def test_crash_loop_gives_up(make_driver: Any, events: Events) -> None:
    # Listens (so it becomes ready), then dies: every restart crashes again.
    script = (
        "import socket, sys, time; s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1);"
        "s.bind((sys.argv[1], int(sys.argv[2]))); s.listen(); time.sleep(0.8); sys.exit(4)"
    )
    flaky = ServiceDescriptor.from_obj(
        {"name": "flaky", "port": 1, "health": {"tcp": True}, "command": [sys.executable, "-c", script, "{host}", "{port}"]}
    )
    driver = await make_driver(restart_policy=RestartPolicy(base=0.1, cap=0.2, stable_after=60, max_failures=1))
    await driver.deploy(flaky, home="c1")
    await driver.wait_ready("flaky", timeout=READY)
    await wait_until(lambda: "gave-up" in events.kinds("flaky"), timeout=READY, what="gave up")
    inst = await driver.status("flaky")
    assert inst.state is InstanceState.FAILED and "exit code 4" in inst.detail
    assert events.kinds("flaky").count("crash") == 2
    with pytest.raises(DeployFailed):
        await driver.wait_ready("flaky", timeout=1)


async def test_a_command_that_exits_at_once_fails_and_leaves_nothing(
    make_driver: Any, tmp_path: Path, events: Events
) -> None:
    broken = ServiceDescriptor.from_obj({
        "name": "broken", "port": 1,
        "command": [sys.executable, "-c", "import sys; print('cannot load model'); sys.exit(3)"],
    })
    driver = await make_driver()
    inst = await driver.deploy(broken, home="c1")
    start = ticks(inst.pid)  # the process may already be a zombie: it still has its start time
    with pytest.raises(DeployFailed) as info:
        await driver.wait_ready("broken", timeout=READY)
    assert "cannot load model" in info.value.log_tail and "exit code 3" in str(info.value)
    assert reaped(inst.pid, start)
    assert not (tmp_path / "services/broken").exists()
    assert events.kinds("broken") == ["deploy-failed"]

    missing = ServiceDescriptor.from_obj({"name": "missing", "port": 1, "command": ["/nonexistent/roam-service"]})
    with pytest.raises(DeployFailed, match="cannot start"):
        await driver.deploy(missing, home="c1")
    assert not (tmp_path / "services/missing").exists()
    with pytest.raises(PermanentDriverError, match="needs a command"):
        await driver.deploy(ServiceDescriptor.from_obj({"name": "img", "port": 1, "image": "nginx"}), home="c1")


async def test_wait_ready_times_out_for_a_service_that_never_answers(make_driver: Any) -> None:
    silent = ServiceDescriptor.from_obj({
        "name": "silent", "port": 1, "health": {"tcp": True},
        "command": [sys.executable, "-c", "import time; time.sleep(60)"],
    })
    driver = await make_driver()
    inst = await driver.deploy(silent, home="c1")
    start = ticks(inst.pid)
    with pytest.raises(DriverTimeout):
        await driver.wait_ready("silent", timeout=0.5)
    assert (await driver.status("silent")).state is InstanceState.STARTING
    await driver.delete("silent")  # SIGTERM is enough for python's default handler
    assert reaped(inst.pid, start)


FORKER = """
import socket, subprocess, sys, time
child = subprocess.Popen(["sleep", "120"])
print("child", child.pid, flush=True)
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((sys.argv[1], int(sys.argv[2]))); s.listen(); time.sleep(120)
"""


async def test_the_whole_process_group_goes(make_driver: Any, tmp_path: Path, events: Events) -> None:
    """A crashed leader's children are killed before the restart; delete kills the group."""
    forker = ServiceDescriptor.from_obj({
        "name": "forker", "port": 1, "health": {"tcp": True},
        "command": [sys.executable, "-c", FORKER, "{host}", "{port}"],
    })
    log = tmp_path / "services/forker/service.log"

    def children() -> list[int]:
        return [int(line.split()[1]) for line in log.read_text().splitlines() if line.startswith("child ")]

    driver = await make_driver()
    first = await driver.deploy(forker, home="c1")
    await driver.wait_ready("forker", timeout=READY)
    (child,) = await wait_until(children, timeout=READY, what="child pid in the log")
    child_start = ticks(child)
    os.kill(first.pid, signal.SIGKILL)
    await wait_until(lambda: "restart" in events.kinds("forker"), timeout=READY, what="restart")
    assert not alive(child, child_start)  # killed as a straggler of the dead leader

    await driver.wait_ready("forker", timeout=READY)
    _, second_child = await wait_until(lambda: children()[1:] and children(), timeout=READY, what="new child")
    second = await driver.status("forker")
    starts = ticks(second.pid), ticks(second_child)
    await driver.delete("forker")
    assert reaped(second.pid, starts[0]) and not alive(second_child, starts[1])


AGENT = """
import asyncio, os, sys
from pathlib import Path
from peer.drivers.process import ProcessDriver
from tests.drivers.conftest import HOST, PORTS, classifier

async def main():
    driver = ProcessDriver(data_dir=Path(sys.argv[1]), host=HOST, port_range=PORTS, cluster="c1")
    await driver.start()
    await driver.deploy(classifier(), home="c1")
    inst = await driver.wait_ready("classifier", timeout=30)
    print(inst.pid, flush=True)
    os._exit(0)  # the agent dies without any cleanup

asyncio.run(main())
"""


async def test_adoption_after_the_agent_process_died(make_driver: Any, tmp_path: Path, events: Events) -> None:
    """The adopted service is not the new agent's child: supervision must work through the pidfd."""
    agent = await asyncio.create_subprocess_exec(
        sys.executable, "-c", AGENT, str(tmp_path), stdout=asyncio.subprocess.PIPE, cwd=Path(__file__).parents[2],
    )
    out, _ = await asyncio.wait_for(agent.communicate(), READY)
    pid = int(out.split()[0])
    start = ticks(pid)
    try:
        assert proc_stat(pid)[1] == pid  # type: ignore[index]  # its own process group

        driver = await make_driver()
        (inst,) = await driver.adopt()
        assert (inst.pid, inst.state) == (pid, InstanceState.READY)
        os.kill(pid, signal.SIGKILL)
        await wait_until(lambda: events.kinds("classifier")[-2:] == ["restart", "ready"], timeout=READY,
                         what="restart of a non-child")
        crash = [detail for _, kind, detail in events.seen if kind == "crash"]
        assert crash[0].startswith("exited")  # no exit status for a process that is not our child
        restarted = await driver.status("classifier")
        restarted_start = ticks(restarted.pid)
        await driver.delete("classifier")
        assert reaped(restarted.pid, restarted_start) and not alive(pid, start)
    finally:
        if alive(pid, start):
            os.killpg(pid, signal.SIGKILL)
