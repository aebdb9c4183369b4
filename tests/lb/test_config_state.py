"""Config rendering, persisted state and the in-memory fake (no processes)."""
from __future__ import annotations

import stat
import subprocess
from pathlib import Path

import pytest

from lb import FakeLoadBalancer, InvalidTokenError, NoFreeSlotError, RerouteError
from lb.config import LBConfig, render
from lb.statefile import LBState, Route, Slot, StateWriter


def test_render_provisions_capped_slots(tmp_path: Path) -> None:
    cfg = LBConfig(data_dir=tmp_path, bind_addr="127.0.2.1", ports=range(30000, 31000),
                   max_slots=3)
    text = render(cfg)
    assert cfg.slot_ports == [30000, 30001, 30002]
    for port in cfg.slot_ports:
        assert f"frontend fe_{port}\n    bind 127.0.2.1:{port}\n    default_backend be_{port}" in text
        assert f"backend be_{port}\n    balance roundrobin\n" in text
    assert "fe_30003" not in text
    assert f"stats socket {tmp_path}/haproxy.sock mode 600 level admin expose-fd listeners" in text
    assert f"server-state-file {tmp_path}/haproxy.state" in text
    # One process (no master-worker, issues 16 and 18), whose pid file the agent writes itself.
    assert "master-worker" not in text and "pidfile" not in text
    assert "retry-on all-retryable-errors" in text
    assert "option redispatch 1" in text and "retries 3" in text
    assert "\n    server " not in text  # no static servers: 503 until routed


def test_render_ipv6_bind(tmp_path: Path) -> None:
    text = render(LBConfig(data_dir=tmp_path, bind_addr="::1", ports=range(30000, 30001)))
    assert "bind ipv6@[::1]:30000" in text


@pytest.mark.parametrize(("addr", "ports", "slots"), [
    ("localhost", range(1, 2), 1), ("127.0.2.1", range(0), 1), ("127.0.2.1", range(0, 2), 1),
    ("127.0.2.1", range(65535, 65537), 1), ("127.0.2.1", range(1, 2), 0),
])
def test_config_validation(tmp_path: Path, addr: str, ports: range, slots: int) -> None:
    with pytest.raises(ValueError):
        LBConfig(data_dir=tmp_path, bind_addr=addr, ports=ports, max_slots=slots)


def test_state_roundtrip_and_atomic_write(tmp_path: Path) -> None:
    path = tmp_path / "lb-slots.json"
    assert LBState.load(path).slots == {}
    state = LBState({"web": Slot(30000, Route("127.0.2.10", 8080, "s3")), "api": Slot(30001)})
    state.save(path)
    assert LBState.load(path) == state
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert [p.name for p in tmp_path.iterdir()] == ["lb-slots.json"]  # no temp file left
    path.write_text('{"version": 99, "services": {}}')
    with pytest.raises(ValueError):
        LBState.load(path)


def test_an_earlier_snapshot_written_last_never_replaces_a_later_table(tmp_path: Path) -> None:
    """A reroute saves in a worker thread (LoadBalancer.route) while the loop may save too: the
    file must end with the latest table, whichever write finished last."""
    path = tmp_path / "lb-slots.json"
    writer = StateWriter(path)
    state = LBState({"web": Slot(30000, Route("127.0.2.10", 8080, "s1"))})
    earlier = writer.snapshot(state)
    state.slots["web"].route = Route("127.0.2.11", 8080, "s2")
    later = writer.snapshot(state)
    writer.write(later)
    writer.write(earlier)  # (the thread that took the first snapshot finishes last)
    assert LBState.load(path) == state


async def test_fake_mirrors_the_contract() -> None:
    lb = FakeLoadBalancer(bind_addr="127.0.2.1", ports=range(30000, 30002))
    await lb.start()
    assert await lb.open_frontend("web") == ("127.0.2.1", 30000)
    assert await lb.open_frontend("web") == ("127.0.2.1", 30000)
    assert await lb.open_frontend("api", port=30001) == ("127.0.2.1", 30001)
    with pytest.raises(NoFreeSlotError):
        await lb.open_frontend("db")
    with pytest.raises(InvalidTokenError):
        await lb.open_frontend("Bad_Name")
    r = await lb.route("web", "127.0.2.10", 8080)
    assert (r.old, r.new) == (None, ("127.0.2.10", 8080))
    lb.unreachable.add(("127.0.2.11", 8080))
    with pytest.raises(RerouteError):
        await lb.route("web", "127.0.2.11", 8080)
    assert lb.current_route("web") == ("127.0.2.10", 8080)
    await lb.close_frontend("web")
    assert lb.routes() == {"api": None}


@pytest.mark.integration
@pytest.mark.parametrize("bind", ["127.0.2.1", "::1"])
def test_real_haproxy_accepts_the_rendered_config(tmp_path: Path, bind: str) -> None:
    cfg = LBConfig(data_dir=tmp_path, bind_addr=bind, ports=range(30000, 31000))
    cfg.config_path.write_text(render(cfg))
    cfg.server_state_path.write_text("1\n")
    out = subprocess.run(["haproxy", "-c", "-f", str(cfg.config_path)], capture_output=True,
                         text=True, check=False)
    assert out.returncode == 0, out.stderr
    assert "WARNING" not in out.stderr and "ALERT" not in out.stderr, out.stderr
    assert render(cfg).count("\nfrontend fe_") == 64
