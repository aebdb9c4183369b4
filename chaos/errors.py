"""The chaos testbed's error tree: one base class so a scenario runner can catch testbed
trouble apart from the failures it is there to find."""
from __future__ import annotations


class ChaosError(Exception):
    """Base of every error raised by the chaos package."""


class CommandError(ChaosError):
    """A system command (ip, iptables, tc) exited non-zero or could not be started."""

    def __init__(self, argv: list[str], returncode: int | None, stderr: str) -> None:
        self.argv = argv
        self.returncode = returncode
        self.stderr = stderr
        super().__init__(f"{' '.join(argv)!r} failed (rc={returncode}): {stderr.strip()}")


class TestbedError(ChaosError):
    """The testbed could not be built, used as asked, or torn down completely."""

    __test__ = False  # not a pytest test class despite the name


class FaultError(ChaosError):
    """A fault could not be applied or healed."""
