"""HAProxy supervision with real processes: adopt on agent restart, restart on death, errors."""
from __future__ import annotations

import os
import signal
import socket
import stat
from pathlib import Path

import pytest

from lb import (HAProxyCommandError, HAProxyStartError, InvalidTokenError, LoadBalancer,
                NoFreeSlotError, UnknownServiceError, runtime)
from lb.client import RuntimeClient
from lb.process import pid_alive, read_pid
from peer.runtime.waiting import wait_until
from tests.lb.conftest import FRONT, Backend, assert_no_haproxy, fetch, make_lb
from tests.lb.openloop import OpenLoop

pytestmark = pytest.mark.integration


def haproxy_pid(lb: LoadBalancer) -> int:
    assert lb.haproxy_pid is not None
    return lb.haproxy_pid


async def test_admin_socket_is_private_and_config_checks(lb: LoadBalancer) -> None:
    sock = lb.config.socket_path
    assert stat.S_ISSOCK(sock.stat().st_mode)
    assert stat.S_IMODE(sock.stat().st_mode) == 0o600
    assert stat.S_IMODE(lb.config.data_dir.stat().st_mode) == 0o700
    assert lb.running


async def test_restart_adopts_running_haproxy_and_keeps_routes(
        tmp_path: Path, ports: range, backends: tuple[Backend, Backend]) -> None:
    a, b = backends
    data = tmp_path / "lb"
    first = make_lb(data, ports)
    await first.start()
    second: LoadBalancer | None = None
    try:
        _, web = await first.open_frontend("web")
        await first.route("web", *a.addr)
        await first.open_frontend("api")
        await first.route("api", *b.addr)
        await first.open_frontend("idle")
        pid = haproxy_pid(first)
        before = {svc: await first.server_status(svc) for svc in ("web", "api")}
        async with OpenLoop(f"http://{FRONT}:{web}/", rate=300) as load:
            await load.wait_sent(30)
            await first.stop(keep_running=True)  # the agent goes away; haproxy keeps serving
            await load.wait_sent(60)
            second = make_lb(data, ports)
            await second.start()
            await load.wait_sent(30)
        assert load.report.lost == [], load.report.lost[:5]
        assert haproxy_pid(second) == pid and second.adopted and not first.adopted
        assert second.routes() == {"web": a.addr, "api": b.addr, "idle": None}
        assert second.frontend("web") == (FRONT, web)
        for svc in ("web", "api"):  # the very same servers: nothing was rerouted
            after = await second.server_status(svc)
            assert [(s.name, s.addr, s.port) for s in after] == [
                (s.name, s.addr, s.port) for s in before[svc]]
        assert await fetch(web) == (200, "a")
    finally:
        await (second or first).stop()
        assert_no_haproxy(data)


async def test_adopt_repairs_a_reroute_interrupted_by_a_crash(
        tmp_path: Path, ports: range, backends: tuple[Backend, Backend]) -> None:
    """Committed route left in drain plus an uncommitted new server: the committed one wins."""
    a, b = backends
    data = tmp_path / "lb"
    first = make_lb(data, ports)
    await first.start()
    second: LoadBalancer | None = None
    try:
        _, web = await first.open_frontend("web")
        await first.route("web", *a.addr)
        client = RuntimeClient(first.config.socket_path)
        be = f"be_{web}"
        await client.add_server(be, "s9", *b.addr, check=first.config.check)
        await client.activate_now(be, "s9")
        [committed] = [s.name for s in await first.server_status("web") if s.name != "s9"]
        await client.set_server_state(be, committed, "drain")
        await client.close()
        await first.stop(keep_running=True)
        second = make_lb(data, ports)
        await second.start()
        status = await second.server_status("web")
        assert [(s.name, s.addr, s.state.value) for s in status] == [(committed, a.host, "UP")]
        assert second.current_route("web") == a.addr
        assert await fetch(web) == (200, "a")
    finally:
        await (second or first).stop()
        assert_no_haproxy(data)


async def test_killed_haproxy_is_restarted_with_its_routes(
        lb: LoadBalancer, backends: tuple[Backend, Backend]) -> None:
    a, b = backends
    _, web = await lb.open_frontend("web")
    await lb.route("web", *a.addr)
    _, api = await lb.open_frontend("api")
    await lb.route("api", *b.addr)
    old_pid = haproxy_pid(lb)
    os.kill(old_pid, signal.SIGKILL)

    async def back() -> bool:
        return (lb.restarts == 1 and await fetch(web) == (200, "a")
                and await fetch(api) == (200, "b"))

    await wait_until(back, timeout=10, what="haproxy restarted and serving")
    assert haproxy_pid(lb) != old_pid and not pid_alive(old_pid)
    assert lb.routes() == {"web": a.addr, "api": b.addr}
    result = await lb.route("web", *b.addr)  # and it can still reroute
    assert result.old == a.addr and await fetch(web) == (200, "b")


def children(pid: int) -> list[str]:
    return Path(f"/proc/{pid}/task/{pid}/children").read_text().split()


async def test_reload_hands_the_sockets_to_one_new_process(
        tmp_path: Path, ports: range, backends: tuple[Backend, Backend]) -> None:
    """A reload (the only way to reopen a frontend shut down at run time) starts one new
    HAProxy that takes the listening sockets over (`-x`) while the old one finishes (`-sf`):
    no connection is refused or reset meanwhile (a new one per request: the old process closes
    its idle kept-alive ones as it finishes, which a client may race), every route comes back, the pid file names the new
    process, which runs alone in a session of its own, is watched (killed, it is restarted)
    and is adopted by the next agent."""
    a, b = backends
    data = tmp_path / "lb"
    first = make_lb(data, ports, max_slots=4)
    await first.start()
    second: LoadBalancer | None = None
    try:
        _, web = await first.open_frontend("web")
        await first.route("web", *a.addr)
        _, api = await first.open_frontend("api")
        await first.route("api", *b.addr)
        old = haproxy_pid(first)
        assert os.getsid(old) == old and children(old) == []  # no master, no worker
        client = RuntimeClient(first.config.socket_path)
        await client.execute(runtime.shutdown_frontend(f"fe_{api}"))
        await client.close()
        async with OpenLoop(f"http://{FRONT}:{web}/", rate=300, keepalive=False) as load:
            await load.wait_sent(30)
            repaired = await first.converge()
            await load.wait_sent(30)
        assert repaired == [f"reloaded haproxy: frontend(s) fe_{api} had been shut down"]
        refused = [s for s in load.report.samples if s.status is None]
        assert refused == [], refused[:5]
        new = haproxy_pid(first)
        assert new != old and read_pid(first.config.pid_path) == new
        assert os.getsid(new) == new and children(new) == []
        await wait_until(lambda: not pid_alive(old), timeout=10, what="the old haproxy finished")
        assert await fetch(web) == (200, "a") and await fetch(api) == (200, "b")
        assert first.routes() == {"web": a.addr, "api": b.addr}

        os.kill(new, signal.SIGKILL)  # the watcher follows the new process, not the old one

        async def back() -> bool:
            return first.restarts == 1 and await fetch(api) == (200, "b")

        await wait_until(back, timeout=10, what="haproxy restarted after the reloaded one died")
        restarted = haproxy_pid(first)
        await first.stop(keep_running=True)
        second = make_lb(data, ports, max_slots=4)
        await second.start()
        assert second.adopted and haproxy_pid(second) == restarted
        assert await fetch(web) == (200, "a") and await fetch(api) == (200, "b")
    finally:
        await (second or first).stop()
        assert_no_haproxy(data)


async def test_a_reload_that_fails_keeps_the_old_process_serving(
        lb: LoadBalancer, tmp_path: Path, backends: tuple[Backend, Backend]) -> None:
    """The new process dies before it takes over (here: a binary that passes the config
    check and then exits): the old one is still the supervised one, named by the pid file,
    serving its routes, and the error says why."""
    a, _ = backends
    _, web = await lb.open_frontend("web")
    await lb.route("web", *a.addr)
    old = haproxy_pid(lb)
    failing = tmp_path / "haproxy-fails"
    failing.write_text('#!/bin/sh\n[ "$1" = "-c" ] && exec haproxy "$@"\n'
                       'echo "[ALERT] refusing to start" >&2; exit 3\n')
    failing.chmod(0o755)
    lb._supervisor.binary = str(failing)

    async def never() -> bool:
        return False

    with pytest.raises(HAProxyStartError, match="exited with 3.*refusing to start"):
        await lb._supervisor.reload(took_over=never)
    assert haproxy_pid(lb) == old and read_pid(lb.config.pid_path) == old and lb.running
    assert lb._supervisor.draining == []
    assert await fetch(web) == (200, "a")


async def test_invalid_input_never_reaches_the_socket(
        lb: LoadBalancer, monkeypatch: pytest.MonkeyPatch) -> None:
    await lb.open_frontend("web")
    sent: list[str] = []
    original = lb._client.execute_line

    async def spy(cmds: list[runtime.Command]) -> list[str]:
        sent.extend(c.text for c in cmds)
        return await original(cmds)

    monkeypatch.setattr(lb._client, "execute_line", spy)
    for addr, port in [("127.0.2.10;del server be_1/s1", 80), ("127.0.2.10\nshow info", 80),
                       ("localhost", 80), ("127.0.2.10", 0), ("127.0.2.10", 70000),
                       ("127.0.2.10 ", 80)]:
        with pytest.raises(InvalidTokenError):
            await lb.route("web", addr, port)
    for name in ("Web", "a;b", "a b", "-x", "x" * 64):
        with pytest.raises(InvalidTokenError):
            await lb.open_frontend(name)
    assert sent == []
    with pytest.raises(UnknownServiceError):
        await lb.route("nosuch", "127.0.2.10", 80)


async def test_client_keeps_replies_in_step(lb: LoadBalancer) -> None:
    """An error in the middle of a multi-command line must not shift later replies."""
    client = RuntimeClient(lb.config.socket_path)
    try:
        with pytest.raises(TypeError):
            await client.execute("show info")  # type: ignore[arg-type]
        be = f"be_{lb.config.slot_ports[0]}"
        await client.add_server(be, "x1", "127.0.2.10", 21000)
        with pytest.raises(HAProxyCommandError) as info:
            await client.execute_line([runtime.set_server_state(be, "x1", "maint"),
                                       runtime.set_server_state(be, "nope", "maint"),
                                       runtime.set_weight(be, "x1", 3)])
        assert "No such server" in info.value.reply
        [x1] = await client.servers_state(be)
        assert (x1.name, x1.weight, x1.maint) == ("x1", 3, True)
        with pytest.raises(HAProxyCommandError):
            await client.add_server(be, "x1", "127.0.2.10", 21000)
        await client.del_server(be, "x1")
        assert await client.servers_state(be) == []
    finally:
        await client.close()


async def test_slots_are_bookkeeping(lb: LoadBalancer,
                                     backends: tuple[Backend, Backend]) -> None:
    ports = lb.config.slot_ports
    assert await lb.open_frontend("one") == (FRONT, ports[0])
    assert await lb.open_frontend("one") == (FRONT, ports[0])
    assert await lb.open_frontend("four", port=ports[3]) == (FRONT, ports[3])
    with pytest.raises(NoFreeSlotError):
        await lb.open_frontend("other", port=ports[3])
    with pytest.raises(NoFreeSlotError):
        await lb.open_frontend("one", port=ports[1])
    await lb.open_frontend("two")
    await lb.open_frontend("three")
    with pytest.raises(NoFreeSlotError):
        await lb.open_frontend("five")
    await lb.route("two", *backends[0].addr)
    await lb.close_frontend("two")
    assert (await fetch(ports[1]))[0] == 503
    assert await lb.open_frontend("five") == (FRONT, ports[1])
    assert lb.current_route("five") is None and await lb.server_status("five") == []


async def test_missing_binary_and_busy_port_fail_to_start(tmp_path: Path, ports: range) -> None:
    with pytest.raises(HAProxyStartError, match="not found"):
        await make_lb(tmp_path / "x", ports, haproxy_binary="no-such-haproxy").start()
    busy = socket.socket()
    busy.bind((FRONT, ports[0]))
    busy.listen()
    try:
        with pytest.raises(HAProxyStartError):
            await make_lb(tmp_path / "y", ports, max_slots=1).start()
    finally:
        busy.close()
    assert_no_haproxy(tmp_path / "y")
