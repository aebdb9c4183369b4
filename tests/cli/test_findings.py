"""The seven findings of issue 17 (a new user following the README), one test each."""
from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from peer.config import build_config
from peer.runtime.waiting import wait_until
from tests.cli.conftest import roam
from tests.harness import TOKEN, federation

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
DESCRIPTOR = {
    "name": "classifier", "port": 8080, "cpu": 0.25, "memory": "64Mi", "health": {"path": "/healthz"},
    "command": ["roam-sample", "classifier", "--host", "{host}", "--port", "{port}"],
}


def one_line(result: subprocess.CompletedProcess[str], *needles: str) -> str:
    assert result.returncode != 0, result.stdout
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


async def test_finding_1_readme_descriptor_fails_when_copied(tmp_path: Path) -> None:
    """The README's descriptor runs as copied (roam-sample, no interpreter path), and a refused
    field is named once, not twice."""
    readme = (ROOT / "README.md").read_text()
    block = re.search(r"cat > classifier.json <<'EOF'\n(.*?)\nEOF", readme, flags=re.S)
    assert block, "the quick start writes classifier.json"
    descriptor = json.loads(block.group(1))
    assert descriptor["command"][0] == "roam-sample"
    (tmp_path / "classifier.json").write_text(block.group(1))
    (tmp_path / "bad.json").write_text(json.dumps({**descriptor, "image": "not an image!"}))
    (tmp_path / "fed").mkdir()
    async with federation(tmp_path / "fed") as fed:
        fed.add("c1", "127.0.2.21").start()
        await fed.wait_healthy("c1")
        env = {"ROAM_TOKEN": TOKEN}
        bad = one_line(roam("deploy", str(tmp_path / "bad.json"), "--api", "127.0.2.21", env=env), "image")
        assert bad.count("image:") == 1, bad
        ok = roam("deploy", str(tmp_path / "classifier.json"), "--api", "127.0.2.21", env=env)
        assert ok.returncode == 0 and "classifier: deployed, home c1" in ok.stdout, ok.stderr
        records = await fed.get("c1", "/v1/services")
        assert records[0]["state"] == "running", records


async def test_finding_2_cli_looks_where_no_agent_is(tmp_path: Path) -> None:
    """Without --api the CLI finds the agent running here (its data dir hint); the scheme and port
    are optional; a bad address is one line; ROAM_API is documented in --help."""
    async with federation(tmp_path) as fed:
        fed.add("c1", "127.0.2.22").start()
        await fed.wait_healthy("c1")
        hint = json.loads((fed.agents["c1"].data_dir / "agent.json").read_text())
        assert hint["api"] == "http://127.0.2.22:7070" and TOKEN not in json.dumps(hint)
        local = roam("members", env={"ROAM_DATA_DIR": str(tmp_path)})  # neither --api nor a token given
        assert local.returncode == 0 and "c1" in local.stdout, local.stderr
        bare = roam("members", "--api", "127.0.2.22", "-o", "json", env={"ROAM_TOKEN": TOKEN})
        assert bare.returncode == 0 and json.loads(bare.stdout)[0]["name"] == "c1", bare.stderr
        for bad in ("http://[nope", "ftp://127.0.2.22", "127.0.2.22:99999"):
            one_line(roam("members", "--api", bad, env={"ROAM_TOKEN": TOKEN}), "--api")
        one_line(roam("members", "--api", "127.0.2.22:1", env={"ROAM_TOKEN": TOKEN}), "cannot reach http://127.0.2.22:1")
    helptext = roam("--help").stdout + roam("members", "--help").stdout
    assert "ROAM_API" in helptext and "ROAM_TOKEN" in helptext and "local agent" in helptext


async def test_finding_3_one_token_per_agent(tmp_path: Path) -> None:
    """One token file shared by the federation drives every agent; the README says it is the normal setup."""
    async with federation(tmp_path) as fed:
        fed.add("c1", "127.0.2.23").start()
        fed.add("c2", "127.0.2.24", join=["127.0.2.23"]).start()
        await fed.wait_healthy("c1")
        await fed.wait_healthy("c2")
        token_file = str(tmp_path / "token")
        for addr in ("127.0.2.23", "127.0.2.24"):
            r = roam("wait", "--api", addr, "--members", "2", "--timeout", "30", "--token-file", token_file)
            assert r.returncode == 0, r.stderr
    readme = " ".join((ROOT / "README.md").read_text().split())
    assert "one **admin token** for the whole federation" in readme and "strict option" in readme
    assert "one token file shared by every agent" in " ".join(roam("--help").stdout.split())


async def test_finding_4_a_new_agent_with_another_secret_says_why_it_cannot_enrol(tmp_path: Path) -> None:
    """Under automatic identity (the default) a joiner signs its certificate request with the
    federation secret: with another secret it never gets a certificate, and its log says why."""
    other = tmp_path / "other.secret"
    other.write_text("another-federation-secret-0123456789")
    other.chmod(0o600)
    async with federation(tmp_path) as fed:
        fed.add("c1", "127.0.2.25").start()
        await fed.wait_healthy("c1")
        c2 = fed.add("c2", "127.0.2.26", join=["127.0.2.25"])
        c2.args[c2.args.index("--secret-file") + 1] = str(other)
        c2.start()
        await wait_until(lambda: "federation secret, --secret-file, is not the federation's" in c2.log_text(),
                         timeout=20, what="the reason in c2's log")
        assert not (c2.data_dir / "identity" / "cluster.pem").exists()


async def test_finding_4_key_rotation_new_agent_silently_fails_to_join(tmp_path: Path) -> None:
    """Without automatic identity (--no-peer-tls) the agent starts: one whose gossip key
    differs says so in its own log and in `roam status`."""
    other = tmp_path / "other.secret"
    other.write_text("another-federation-secret-0123456789")
    other.chmod(0o600)
    async with federation(tmp_path) as fed:
        fed.add("c1", "127.0.2.25", extra=["--no-auto-migrate", "--no-peer-tls"]).start()
        await fed.wait_healthy("c1")
        c2 = fed.add("c2", "127.0.2.26", join=["127.0.2.25"], extra=["--no-auto-migrate", "--no-peer-tls"])
        c2.args[c2.args.index("--secret-file") + 1] = str(other)
        c2.start()
        await fed.wait_healthy("c2")
        await wait_until(lambda: "Serf cannot decrypt" in c2.log_text(), timeout=20, what="warning in c2's log")
        assert "keyring.json" in c2.log_text() and "serf.log" in c2.log_text()
        status = roam("status", "--api", "127.0.2.26", env={"ROAM_TOKEN": TOKEN})
        assert status.returncode == 0, status.stderr
        assert "WARNING: Serf cannot decrypt its peers' gossip" in status.stdout, status.stdout
        assert "No installed keys could decrypt" in status.stdout
        healthy = roam("status", "--api", "127.0.2.25", "-o", "json", env={"ROAM_TOKEN": TOKEN})
        assert json.loads(healthy.stdout)["status"]["cluster"] == "c1"


async def test_finding_5_missing_what_kubectl_nomad_consul_users_reach_for(tmp_path: Path) -> None:
    env = {"ROAM_TOKEN": TOKEN}
    desc = tmp_path / "d.json"
    desc.write_text(json.dumps(DESCRIPTOR))
    assert re.fullmatch(r"roam \d+\.\d+\.\d+\n", roam("version").stdout)
    assert roam("--version").stdout == roam("version").stdout
    completion = roam("completion", "bash")
    assert completion.returncode == 0 and "_ROAM_COMPLETE" in completion.stdout
    (tmp_path / "fed").mkdir()
    async with federation(tmp_path / "fed") as fed:
        fed.add("c1", "127.0.2.27").start()
        fed.add("c2", "127.0.2.28", join=["127.0.2.27"]).start()
        await fed.wait_healthy("c1")
        await fed.wait_healthy("c2")
        api = ["--api", "127.0.2.27"]
        assert roam("wait", *api, "--members", "2", env=env).returncode == 0
        watch = subprocess.Popen([sys.executable, "-m", "peer.cli", "migrations", "--watch", "--interval", "0.2", *api],
                                 stdout=subprocess.PIPE, text=True, env={**os.environ, **env})
        try:
            deployed = roam("deploy", str(desc), *api, env=env)
            assert deployed.stdout.startswith("classifier: deployed, home c1") and "{" not in deployed.stdout
            moved = roam("migrate", "classifier", "--to", "c2", *api, env=env)
            assert re.match(r"classifier: migrated c1 -> c2 in [\d.]+ ms \(pr ", moved.stdout), moved.stdout
            assert watch.stdout is not None
            assert watch.stdout.readline().split()[:2] == ["STARTED", "SERVICE"]
            row = watch.stdout.readline().split()
            assert re.fullmatch(r"\d\d:\d\d:\d\d", row[0]) and row[1:3] == ["classifier", "planned"], row
        finally:
            watch.send_signal(signal.SIGINT)
            watch.wait(timeout=10)
        assert watch.returncode == 0
        # One line per entry of the home set, the HC's first (c1 = 127.0.2.27, c2 = 127.0.2.28).
        assert roam("endpoints", "classifier", *api, env=env).stdout.split() == ["127.0.2.27:30000", "127.0.2.28:30000"]
        one = roam("services", "classifier", *api, env=env).stdout
        assert "location:" in one and "c2" in one and "endpoints:" in one
        wide = roam("services", *api, "-o", "wide", env=env).stdout
        assert "HOMES" in wide.splitlines()[0] and "STANDBYS" in wide.splitlines()[0]
        assert "name: classifier" in roam("services", "classifier", *api, "-o", "yaml", env=env).stdout
        logs = roam("logs", "classifier", *api, env=env)  # asked at the HC, served by c2 where it runs
        assert logs.returncode == 0 and "cluster 'c2'" in logs.stdout, logs.stdout + logs.stderr
        status = roam("status", *api, env=env).stdout
        assert all(part in status for part in ("cluster c1", "MEMBERS (2/2 alive)", "SERVICES (1)", "RECENT MOVES"))
        fed.agents["c2"].kill(signal.SIGSTOP)  # a hung agent: the client gives up after --timeout
        try:
            started = time.monotonic()
            one_line(roam("services", "--api", "127.0.2.28", "--timeout", "1", env=env), "--timeout")
            assert time.monotonic() - started < 10
        finally:
            fed.agents["c2"].kill(signal.SIGCONT)
        deleted = roam("delete", "classifier", *api, env=env)
        assert deleted.stdout.strip() == "classifier: deleted", deleted.stdout + deleted.stderr


async def test_finding_6_surprising_defaults(tmp_path: Path) -> None:
    # Policy migrations are opt-in.
    base = argparse.Namespace(name="c1", addr="127.0.2.29", config=None, join=[])
    assert build_config(base).auto_migrate is False
    assert build_config(argparse.Namespace(**vars(base), auto_migrate=True)).auto_migrate is True
    assert build_config(argparse.Namespace(**vars(base), no_auto_migrate=True)).auto_migrate is False
    # Nothing written before the secret is known good.
    data = tmp_path / "d"
    secret = tmp_path / "secret"
    secret.write_text("x" * 40)
    secret.chmod(0o644)
    one_line(roam("agent", "--name", "c1", "--addr", "127.0.2.29", "--data-dir", str(data), "--secret-file", str(secret)),
             "--secret-file", "chmod 600")
    assert not (data / "admin.token").exists()
    (tmp_path / "fed").mkdir()
    async with federation(tmp_path / "fed") as fed:
        # With --config alone, log lines carry the cluster name.
        agent = fed.add("c1", "127.0.2.29")
        config = tmp_path / "agent.toml"
        config.write_text(f'name = "c1"\naddr = "127.0.2.29"\ndata_dir = "{agent.data_dir}"\n'
                          f'secret_file = "{tmp_path / "fed" / "secret"}"\ntoken_file = "{tmp_path / "fed" / "token"}"\n')
        agent.args = ["--config", str(config)]
        agent.start()
        await fed.wait_healthy("c1")
        agent.stop()
        assert re.search(r" c1 peer\.agent INFO agent c1 up", agent.log_text()), agent.log_text()
        assert " ? " not in agent.log_text()
        # A corrupt state file is named.
        slots = agent.data_dir / "lb" / "lb-slots.json"
        slots.parent.mkdir(exist_ok=True)
        slots.write_text("{corrupt")
        result = roam("agent", "--config", str(config))
        one_line(result, str(slots), "corrupt")


async def test_finding_7_serf_members_needs_undocumented_flags(tmp_path: Path) -> None:
    async with federation(tmp_path) as fed:
        fed.add("c1", "127.0.2.30").start()
        await fed.wait_healthy("c1")
        data = str(fed.agents["c1"].data_dir)
        printed = roam("members", "--serf", "--data-dir", data)
        assert printed.returncode == 0, printed.stderr
        assert re.fullmatch(r"serf members -rpc-addr=127\.0\.2\.30:7373 -rpc-auth=\S+\n", printed.stdout), printed.stdout
        ran = subprocess.run(printed.stdout.split(), capture_output=True, text=True, timeout=10)
        assert ran.returncode == 0 and "c1" in ran.stdout and "alive" in ran.stdout, ran.stderr
        via_run = roam("members", "--serf", "--run", "--data-dir", data)
        assert via_run.returncode == 0 and "alive" in via_run.stdout
        local = roam("members", "--serf", env={"ROAM_DATA_DIR": str(tmp_path)})  # found through the hint
        assert local.stdout == printed.stdout, local.stderr
    assert "roam members --serf" in (ROOT / "README.md").read_text()
