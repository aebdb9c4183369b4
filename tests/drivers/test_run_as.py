"""`--run-as`: a service of a root agent runs as `nobody`, outside the data dir, cannot read the
token or the secret, and sits in its own cgroup (with cpu.max and memory.max where the host's
cgroup v2 hierarchy has those controllers; this host's does not, and the agent says why).

The agent here (127.0.23.10) generates its token and secret inside its data dir (0700 root),
and that data dir lies in a directory every user may traverse, so only the data dir's own
mode stands between the service and the secrets.
"""
from __future__ import annotations

import json
import os
import pwd
import shutil
import tempfile
import textwrap
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from peer.drivers.confine import Confinement, cpu_max, find_cgroup2, memory_max
from tests.harness import AgentProc
from tests.security.conftest import start_and_wait

ADDR = "127.0.23.10"
NOBODY = pwd.getpwnam("nobody")

# A service that reports what it can reach, then serves that report (stdlib only, run by the
# system python, which `nobody` can execute wherever the repository is checked out).
PROBE = textwrap.dedent('''
    import http.server, json, os, sys
    host, port, data = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    def can(f):
        try:
            f(); return True
        except OSError:
            return False
    report = {"uid": os.getuid(), "gid": os.getgid(), "groups": os.getgroups(), "cwd": os.getcwd(),
              "home": os.environ.get("HOME"),
              "read_token": can(lambda: open(os.path.join(data, "admin.token")).read()),
              "read_secret": can(lambda: open(os.path.join(data, "federation.secret")).read()),
              "list_data_dir": can(lambda: os.listdir(data)),
              "list_own_dir": can(lambda: os.listdir(os.getcwd())),  # by its absolute path
              "cgroup": open("/proc/self/cgroup").read()}
    body = json.dumps(report).encode()
    class H(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200); self.send_header("Content-Length", str(len(body))); self.end_headers()
            self.wfile.write(body)
        def log_message(self, *a):
            pass
    http.server.HTTPServer((host, port), H).serve_forever()
''')


def test_cpu_and_memory_limits_arithmetic() -> None:
    assert cpu_max(0.5) == "50000 100000"
    assert cpu_max(2) == "200000 100000"
    assert cpu_max(0.001) == "1000 100000"  # the kernel's floor
    assert memory_max(128 << 20) == str(128 << 20)
    assert memory_max(1000) == "4096"
    assert memory_max(4097) == "8192"


def test_find_cgroup2_in_unified_and_hybrid_mounts() -> None:
    assert find_cgroup2("cgroup2 /sys/fs/cgroup cgroup2 rw,nosuid 0 0\n") == Path("/sys/fs/cgroup")
    hybrid = ("tmpfs /sys/fs/cgroup tmpfs ro 0 0\ncgroup /sys/fs/cgroup/memory cgroup rw,memory 0 0\n"
              "cgroup2 /sys/fs/cgroup/unified cgroup2 rw 0 0\n")
    assert find_cgroup2(hybrid) == Path("/sys/fs/cgroup/unified")
    assert find_cgroup2("cgroup /sys/fs/cgroup/cpu cgroup rw,cpu 0 0\n") is None


def test_limits_written_where_the_controllers_exist(tmp_path: Path) -> None:
    """Against a directory laid out like a cgroup v2 root with cpu and memory available."""
    mount = tmp_path / "cgroup"
    mount.mkdir()
    (mount / "cgroup.controllers").write_text("cpuset cpu io memory pids\n")
    confine = Confinement(user="nobody", scope="127.0.0.9", work_root=tmp_path / "work", cgroup_mount=mount)
    assert confine.limits and confine.limits_reason is None
    assert (mount / "cgroup.subtree_control").read_text() == "+cpu +memory"
    (mount / "roam-127.0.0.9" / "svc").mkdir()
    (mount / "roam-127.0.0.9" / "svc" / "cgroup.procs").write_text("")  # the kernel makes it in a real one
    old_umask = os.umask(0o077)  # the agent's
    try:
        prepared = confine.prepare("svc", cpu=0.25, memory=64 << 20)
    finally:
        os.umask(old_umask)
    for level in (tmp_path / "work", tmp_path / "work" / "127.0.0.9"):  # traversable, or nobody has no cwd path
        assert level.stat().st_mode & 0o777 == 0o755
    try:
        group = mount / "roam-127.0.0.9" / "svc"
        assert (group / "cpu.max").read_text() == "25000 100000"
        assert (group / "memory.max").read_text() == str(64 << 20)
        assert prepared.popen["user"] == NOBODY.pw_uid and prepared.popen["extra_groups"] == []
        st = prepared.cwd.stat()
        assert (st.st_uid, st.st_mode & 0o777) == (NOBODY.pw_uid, 0o700)
        assert prepared.cwd == tmp_path / "work" / "127.0.0.9" / "svc"
    finally:
        prepared.close()
    confine.release("svc")
    assert not prepared.cwd.exists()


def test_no_limits_without_controllers_and_the_reason_says_so(tmp_path: Path) -> None:
    mount = tmp_path / "cgroup"
    mount.mkdir()
    (mount / "cgroup.controllers").write_text("hugetlb\n")
    confine = Confinement(user="nobody", scope="s", work_root=tmp_path / "work", cgroup_mount=mount)
    assert not confine.limits and confine.limits_reason is not None
    assert "cpu, memory" in confine.limits_reason and "hugetlb" in confine.limits_reason


@pytest.fixture
def agent() -> Iterator[AgentProc]:
    base = Path(tempfile.mkdtemp(prefix="roam-runas-", dir="/tmp"))
    base.chmod(0o755)  # traversable by anyone: only the data dir's own 0700 protects the secrets
    data = base / "data"
    proc = AgentProc(name="ra", addr=ADDR, data_dir=data, log_path=base / "agent.log",
                     args=["--name", "ra", "--addr", ADDR, "--data-dir", str(data), "--no-auto-migrate",
                           "--run-as", "nobody"])
    try:
        start_and_wait(proc, timeout=40)
        yield proc
    finally:
        print(proc.log_text())
        proc.stop()
        proc.kill()
        from chaos.agent_processes import kill_left_behind

        kill_left_behind(data)
        shutil.rmtree(base, ignore_errors=True)


def _call(agent: AgentProc, method: str, path: str, body: Any = None) -> Any:
    token = (agent.data_dir / "admin.token").read_text().strip()
    req = urllib.request.Request(agent.api + path, method=method, data=None if body is None else json.dumps(body).encode(),
                                 headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=60) as resp:
        return json.loads(resp.read())


def test_service_runs_as_nobody_and_cannot_read_the_data_dir(agent: AgentProc) -> None:
    data = str(agent.data_dir)
    record = _call(agent, "POST", "/v1/services", {
        "name": "probe", "port": 8080, "cpu": 0.5, "memory": "64Mi", "health": {"path": "/"}, "entries": 1,
        "command": ["/usr/bin/python3", "-c", PROBE, "{host}", "{port}", data]})
    [instance] = _call(agent, "GET", "/v1/instances")
    with urllib.request.urlopen(f"http://{record['instance']}/", timeout=10) as resp:
        report = json.loads(resp.read())
    assert (report["uid"], report["gid"], report["groups"]) == (NOBODY.pw_uid, NOBODY.pw_gid, [])
    assert report["cwd"] == report["home"] == f"/run/roam-services/{ADDR}/probe"
    assert not report["read_token"] and not report["read_secret"] and not report["list_data_dir"]
    assert report["list_own_dir"]
    status = (Path(f"/proc/{instance['pid']}/status").read_text())
    assert f"Uid:\t{NOBODY.pw_uid}\t" in status
    confinement = _call(agent, "GET", "/v1/status")["confinement"]
    assert confinement["user"] == "nobody"
    mount = find_cgroup2(Path("/proc/self/mounts").read_text())
    if mount is not None and os.access(mount, os.W_OK):  # this host: a v2 hierarchy we may write
        assert f"0::/roam-{ADDR}/probe" in report["cgroup"].splitlines()
        group = Path(confinement["cgroup"]) / "probe"
        assert str(instance["pid"]) in (group / "cgroup.procs").read_text().split()
        if confinement["limits"]:
            assert (group / "cpu.max").read_text().split() == ["50000", "100000"]
            assert (group / "memory.max").read_text().strip() == str(64 << 20)
        else:  # no cpu/memory controllers in v2 here: the reason is reported, not hidden
            assert "not available" in confinement["limits_unavailable"]
    _call(agent, "DELETE", "/v1/services/probe")
    assert not Path(f"/run/roam-services/{ADDR}/probe").exists()
    if confinement["cgroup"]:
        assert not (Path(confinement["cgroup"]) / "probe").exists()
