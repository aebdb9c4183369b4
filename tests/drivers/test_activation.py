"""Socket activation in the process driver: the agent binds, the sample inherits, connections queue."""
from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys
from pathlib import Path
from typing import Any

import pytest

from peer.drivers import activation
from peer.drivers.descriptor import ServiceDescriptor
from peer.drivers.probing import FIRST_DELAY, next_probe_delay
from peer.runtime.waiting import wait_until
from tests.drivers.conftest import HOST, classifier

READY = 30.0

# Binds its own port and reports whether it was offered a socket: the fallback path.
OWN_BINDER = """
import http.server, os, sys
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = os.environ.get("LISTEN_FDS", "none").encode()
        self.send_response(200); self.end_headers(); self.wfile.write(body)
    def log_message(self, *a): pass
http.server.HTTPServer((sys.argv[1], int(sys.argv[2])), H).serve_forever()
"""


def environ_of(pid: int) -> list[bytes]:
    return Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")


def http_get(host: str, port: int, path: str, *, timeout: float = 20.0) -> bytes:
    with socket.create_connection((host, port), timeout=timeout) as sock:
        sock.sendall(f"GET {path} HTTP/1.0\r\nHost: x\r\n\r\n".encode())
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


# --- pure parts ---------------------------------------------------------------------------

def test_samples_are_activated_and_other_commands_are_not() -> None:
    assert activation.wanted(classifier())
    other = ServiceDescriptor.from_obj({"name": "web", "port": 80, "command": ["python3", "-m", "http.server"]})
    assert not activation.wanted(other)
    assert not activation.runs_a_sample(("python3", "-m", "peer.samples.other"))


def test_no_listener_without_an_http_health_check() -> None:
    tcp_only = ServiceDescriptor.from_obj({
        "name": "c", "port": 1, "health": {"tcp": True},
        "command": [sys.executable, "-m", "peer.samples.classifier", "--port", "{port}"]})
    assert activation.listener_for(tcp_only, host="127.0.4.1", port=41049) is None


def test_trampoline_passes_arguments_verbatim() -> None:
    argv = activation.trampoline(["echo", "$HOME", "a b", "'; rm -rf /"])
    assert argv[:2] == [activation.SHELL, "-c"] and argv[4:] == ["echo", "$HOME", "a b", "'; rm -rf /"]


def test_probe_delays_start_tight_and_back_off_to_the_cap() -> None:
    assert next_probe_delay(0.0, cap=0.05) == FIRST_DELAY
    assert next_probe_delay(0.2, cap=0.05) == pytest.approx(0.02)  # a tenth of the time waited
    assert next_probe_delay(5.0, cap=0.05) == 0.05
    delays = [next_probe_delay(t / 100, cap=0.05) for t in range(100)]
    assert delays == sorted(delays)


# --- real processes -----------------------------------------------------------------------

@pytest.mark.integration
async def test_a_sample_inherits_its_socket_and_early_connections_are_served(
        make_driver: Any, tmp_path: Path) -> None:
    driver = await make_driver()
    inst = await driver.deploy(classifier(), home="c0")
    # Sent right after the spawn, long before Python has imported aiohttp: queued, not refused.
    early = asyncio.get_running_loop().run_in_executor(None, http_get, HOST, inst.port, "/")
    answer = await asyncio.wait_for(early, READY)
    assert b" 200 OK" in answer.split(b"\r\n")[0] and f'"pid": {inst.pid}'.encode() in answer
    await driver.wait_ready("classifier", timeout=READY)
    # The trampoline exec'd: the pid is the sample's own, and the socket variables were consumed.
    cmdline = Path(f"/proc/{inst.pid}/cmdline").read_bytes()
    assert b"peer.samples.classifier" in cmdline
    assert f"LISTEN_PID={inst.pid}".encode() in environ_of(inst.pid)  # as exec'd (environ is not updated)
    log = (tmp_path / "services" / "classifier" / "service.log").read_text()
    assert "socket activated" in log and "socket from the agent" in log


@pytest.mark.integration
async def test_the_agent_keeps_no_copy_of_the_socket(make_driver: Any) -> None:
    """Once the service dies its port refuses at once, so HAProxy's connect checks see it."""
    driver = await make_driver()
    inst = await driver.deploy(classifier(), home="c0")
    await driver.wait_ready("classifier", timeout=READY)
    await driver.stop()  # stop supervising (no restart); the process keeps running
    os.killpg(inst.pid, signal.SIGKILL)

    def refused() -> bool:
        try:
            socket.create_connection((HOST, inst.port), timeout=1.0).close()
        except ConnectionRefusedError:
            return True
        return False

    await wait_until(lambda: refused(), timeout=10, what="port refuses once the service is dead")
    await driver.start()


@pytest.mark.integration
async def test_a_command_that_binds_its_own_port_is_polled_as_before(make_driver: Any) -> None:
    driver = await make_driver()
    own = ServiceDescriptor.from_obj({
        "name": "own", "port": 80, "health": {"path": "/"},
        "command": [sys.executable, "-c", OWN_BINDER, "{host}", "{port}"]})
    inst = await driver.deploy(own, home="c0")
    await driver.wait_ready("own", timeout=READY)
    assert http_get(HOST, inst.port, "/").endswith(b"none")
    assert not any(e.startswith(b"LISTEN_") for e in environ_of(inst.pid))


def test_the_descriptor_field_decides_over_detection() -> None:
    off = classifier(socket_activation=False)
    assert not activation.wanted(off) and off.to_obj()["socket_activation"] is False
    on = ServiceDescriptor.from_obj({"name": "g", "port": 80, "socket_activation": True,
                                     "command": ["gunicorn", "app:app"]})
    assert activation.wanted(on) and ServiceDescriptor.from_obj(on.to_obj()) == on
    assert "socket_activation" not in classifier().to_obj()  # unset: digests of old descriptors unchanged
    with pytest.raises(ValueError, match="socket_activation"):
        classifier(socket_activation="yes")
