"""`--run-as`: a service of a root agent runs as `nobody`, outside the data dir, cannot read the
token or the secret, and sits in its own cgroup (with cpu.max and memory.max where the host's
cgroup v2 hierarchy has those controllers; this host's does not, and the agent says why).

The agent here (127.0.23.10) generates its token and secret inside its data dir (0700 root),
and that data dir lies in a directory every user may traverse, so only the data dir's own
mode stands between the service and the secrets.
"""
from __future__ import annotations

import contextlib
import json
import os
import pwd
import shutil
import tempfile
import textwrap
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from peer.drivers.confine import Confinement, cpu_max, find_cgroup2, memory_max
from tests.harness import AgentProc
from tests.security.conftest import start_and_wait

ADDR = "127.0.23.10"
ADDR_DEFAULT = "127.0.23.11"
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
def public_tmp() -> Iterator[Path]:
    """A directory anyone may search (pytest's own tmp_path lies under a 0700 one)."""
    base = Path(tempfile.mkdtemp(prefix="roam-modes-", dir="/tmp"))
    base.chmod(0o755)
    yield base
    shutil.rmtree(base, ignore_errors=True)


def test_file_modes_decide_what_a_user_can_reach(public_tmp: Path) -> None:
    from peer.drivers.confine import reachable

    uid, gid = NOBODY.pw_uid, NOBODY.pw_gid
    tmp_path = public_tmp
    open_dir, closed_dir = tmp_path / "open", tmp_path / "closed"
    open_dir.mkdir(mode=0o755)
    closed_dir.mkdir(mode=0o700)
    for d in (open_dir, closed_dir):
        d.chmod(0o755 if d == open_dir else 0o700)
        (d / "prog").write_text("#!/bin/sh\n")
        (d / "prog").chmod(0o755)
    (open_dir / "secret").write_text("x")
    (open_dir / "secret").chmod(0o600)
    (open_dir / "to-closed").symlink_to(closed_dir / "prog")
    (open_dir / "to-open").symlink_to("prog")
    assert reachable(str(open_dir / "prog"), uid=uid, gid=gid, mode=os.X_OK) is None
    assert reachable(str(open_dir / "to-open"), uid=uid, gid=gid, mode=os.X_OK) is None
    assert "not searchable" in str(reachable(str(closed_dir / "prog"), uid=uid, gid=gid, mode=os.X_OK))
    assert "not searchable" in str(reachable(str(open_dir / "to-closed"), uid=uid, gid=gid, mode=os.X_OK))
    assert "mode 600" in str(reachable(str(open_dir / "secret"), uid=uid, gid=gid, mode=os.R_OK))
    assert reachable(str(closed_dir / "prog"), uid=0, gid=0, mode=os.X_OK) is None  # root reaches all
    confine = Confinement(user="nobody", scope="s", work_root=tmp_path / "work", cgroup_mount=None,
                          mounts_file=tmp_path / "no-mounts")
    assert confine.cannot_run(["prog"], path=str(open_dir)) is None
    assert "nobody cannot run" in str(confine.cannot_run([str(closed_dir / "prog")], path=""))
    assert "nobody cannot read" in str(confine.cannot_run(["prog", str(open_dir / "secret")], path=str(open_dir)))
    assert confine.cannot_run(["prog", "-c", str(open_dir / "secret")], path=str(open_dir)) is None  # not a script


@contextlib.contextmanager
def _running_agent(addr: str, name: str, run_as: list[str]) -> Iterator[AgentProc]:
    base = Path(tempfile.mkdtemp(prefix="roam-runas-", dir="/tmp"))
    base.chmod(0o755)  # traversable by anyone: only the data dir's own 0700 protects the secrets
    data = base / "data"
    proc = AgentProc(name=name, addr=addr, data_dir=data, log_path=base / "agent.log",
                     args=["--name", name, "--addr", addr, "--data-dir", str(data), "--no-auto-migrate", *run_as],
                     env={"ROAM_RUN_AS": ""})  # the agent's own default, whatever this run's suite chose
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


@pytest.fixture
def default_agent() -> Iterator[AgentProc]:
    """A root agent without --run-as: services as `nobody` where their command allows it."""
    with _running_agent(ADDR_DEFAULT, "rd", []) as proc:
        yield proc


@pytest.fixture
def agent() -> Iterator[AgentProc]:
    with _running_agent(ADDR, "ra", ["--run-as", "nobody"]) as proc:
        yield proc


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


def _private_copy_of_probe(base: Path) -> Path:
    """The probe as a script in a 0700 directory: nobody can run the interpreter, not read it."""
    private = base / "private"
    private.mkdir(mode=0o700)
    private.chmod(0o700)
    script = private / "probe.py"
    script.write_text(PROBE)
    return script


def test_by_default_services_run_as_nobody_or_as_the_agent_when_nobody_cannot(default_agent: AgentProc,
                                                                            tmp_path: Path) -> None:
    data = str(default_agent.data_dir)
    record = _call(default_agent, "POST", "/v1/services", {
        "name": "open", "port": 8080, "health": {"path": "/"}, "entries": 1,
        "command": ["/usr/bin/python3", "-c", PROBE, "{host}", "{port}", data]})
    with urllib.request.urlopen(f"http://{record['instance']}/", timeout=10) as resp:
        assert json.loads(resp.read())["uid"] == NOBODY.pw_uid  # DESIGN: nobody, by default
    script = _private_copy_of_probe(tmp_path)
    record = _call(default_agent, "POST", "/v1/services", {
        "name": "closed", "port": 8081, "health": {"path": "/"}, "entries": 1,
        "command": ["/usr/bin/python3", str(script), "{host}", "{port}", data]})
    with urllib.request.urlopen(f"http://{record['instance']}/", timeout=10) as resp:
        assert json.loads(resp.read())["uid"] == 0  # it could not have started as nobody
    assert f"service closed runs as the agent's user, not nobody (the default): nobody cannot read {script}" \
        in default_agent.log_text()


def test_a_given_run_as_refuses_a_command_its_user_cannot_run(agent: AgentProc, tmp_path: Path) -> None:
    script = _private_copy_of_probe(tmp_path)
    req = urllib.request.Request(agent.api + "/v1/services", method="POST", data=json.dumps({
        "name": "closed", "port": 8080, "health": {"path": "/"}, "entries": 1,
        "command": ["/usr/bin/python3", str(script), "{host}", "{port}", "/"]}).encode(),
        headers={"Authorization": f"Bearer {(agent.data_dir / 'admin.token').read_text().strip()}",
                 "Content-Type": "application/json"})
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(req, timeout=60)
    body = json.loads(refused.value.read())
    assert refused.value.code >= 400 and f"nobody cannot read {script}" in body["error"], body
    assert not _call(agent, "GET", "/v1/services")
