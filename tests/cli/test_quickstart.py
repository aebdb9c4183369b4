"""The README's quick start, run literally: its ```sh block, extracted from README.md, in a fresh
network namespace (its own loopback, so 127.0.0.11/12:7070 collide with nothing), a fresh mount
of /var/lib/roam and a fresh HOME; a pid namespace ends every process it started."""
from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.netns]

ROOT = Path(__file__).resolve().parents[2]


def quickstart_block() -> str:
    text = (ROOT / "README.md").read_text()
    section = text.split("\n## Quick start\n", 1)[1]
    m = re.search(r"^```sh\n(.*?)^```$", section, flags=re.S | re.M)
    assert m, "README.md's Quick start has no ```sh block"
    return m.group(1)


def test_the_readme_quick_start_runs_as_written(tmp_path: Path) -> None:
    script = tmp_path / "quickstart.sh"
    script.write_text(quickstart_block())
    home = tmp_path / "home"
    home.mkdir()
    Path("/var/lib/roam").mkdir(parents=True, exist_ok=True)
    inner = f"mount -t tmpfs tmpfs /var/lib/roam && ip link set lo up && cd {ROOT} && exec bash -e {script}"
    env = {k: v for k, v in os.environ.items() if k not in ("ROAM_API", "ROAM_TOKEN", "ROAM_DATA_DIR", "VIRTUAL_ENV")}
    env.update(HOME=str(home), PATH="/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
    result = subprocess.run(
        ["unshare", "--mount", "--net", "--pid", "--fork", "--kill-child", "--mount-proc", "bash", "-c", inner],
        capture_output=True, text=True, timeout=240, env=env)
    logs = "\n".join(f"--- {p.name}\n{p.read_text()[-2000:]}" for p in (home / "roam-quickstart").glob("*.log"))
    out = result.stdout
    assert result.returncode == 0, f"{out}\n{result.stderr}\n{logs}"
    assert "c1 is up" in out and "c2 is up" in out
    assert "classifier: deployed, home c1" in out, out
    assert '"cluster": "c1"' in out and '"cluster": "c2"' in out, out  # the same endpoint, served by c1 then c2
    assert "classifier: migrated c1 -> c2" in out, out
    assert "MEMBERS (2/2 alive)" in out, out
    assert "Traceback" not in out + result.stderr
