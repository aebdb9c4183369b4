"""A scenario runner that dies mid-run: builds a testbed, installs the emergency cleanup,
starts a process in a namespace, prints READY and waits to be killed by a signal."""
import asyncio
import sys
from pathlib import Path

from chaos.faults import Partition
from chaos.netns import Testbed, install_emergency_cleanup


async def main(prefix: str, subnet: str, log_dir: Path) -> None:
    install_emergency_cleanup(prefix)
    tb = Testbed(["a", "b"], prefix=prefix, subnet=subnet)
    await tb.setup()  # never torn down: the signal arrives first
    await tb.spawn("a", [sys.executable, "-c", "import time; time.sleep(600)"],
                   log_path=log_dir / "sleeper.log")
    await Partition(["a"], ["b"]).apply(tb)
    print("READY", flush=True)
    await asyncio.Event().wait()


asyncio.run(main(sys.argv[1], sys.argv[2], Path(sys.argv[3])))
