"""`roam`: the agent daemon and a client for the admin API (click, with shell completion).

Every failure ends in one line on stderr and a non-zero exit, never a traceback; nothing is
left running. `python -m peer.cli ...` is the same as `roam ...`.
"""
from __future__ import annotations

import gc
import os
import sys
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import click

__all__ = ["main", "cli", "run_agent", "ClientError"]

#: Set to 1 to run the daemon with its docstrings and asserts (`_daemon_without_docstrings`).
KEEP_DOCSTRINGS_ENV = "ROAM_AGENT_KEEP_DOCSTRINGS"


def _daemon_without_docstrings(argv: list[str]) -> None:
    """`roam agent` runs its daemon as `python -OO`, by exec (the same pid), before anything
    else is imported. The docstrings of every module an agent imports (the standard library's,
    aiohttp's, cryptography's, roam's own) are 1.4 MB of its idle RSS of about 53 MB (issues 16
    and 18; 3 agents on loopback), and nothing in the daemon reads them: its help texts are
    given explicitly. -OO drops asserts too: roam's narrow types for mypy (`x is not None`),
    none checks input. Not when already optimised, nor with ROAM_AGENT_KEEP_DOCSTRINGS=1. The
    interpreter's own options are kept (sys.orig_argv); the services the agent starts run
    unoptimised as before. The optimised bytecode comes from `make venv` (PYTHONDONTWRITEBYTECODE
    would otherwise make every start compile every module: 0.3 s of CPU)."""
    if argv[:1] != ["agent"] or sys.flags.optimize >= 2 or os.environ.get(KEEP_DOCSTRINGS_ENV) == "1":
        return
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(sys.executable, [sys.executable, "-OO", *sys.orig_argv[1:]])


def _full_cli() -> click.Group:
    """The whole `roam` group. The client commands (and what they import: urllib, http.client,
    email, importlib.metadata, the CA tools; about 1 MB) are built only when a client command
    runs, not in the daemon: `roam agent` goes straight to its command (issue 18's memory)."""
    from peer.cli.agentcmd import agent_command
    from peer.cli.ca import ca_group
    from peer.cli.commands import cli as group

    if "agent" not in group.commands:
        group.add_command(agent_command())
        group.add_command(ca_group)
    return group


def __getattr__(name: str) -> Any:
    """`peer.cli.cli`, `peer.cli.ClientError` and `peer.cli.run_agent`, imported on first use
    (PEP 562): `roam agent` execs itself before importing click (`_daemon_without_docstrings`)."""
    if name == "cli":
        return _full_cli()
    if name == "run_agent":
        from peer.cli.daemon import run_agent

        return run_agent
    if name == "ClientError":
        from peer.cli.client import ClientError

        return ClientError
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def main(argv: list[str] | None = None) -> int:
    if argv is None:  # the program itself, not a caller in this process
        argv = sys.argv[1:]
        _daemon_without_docstrings(argv)
    argv = list(argv)
    if argv[:1] == ["chaos"]:
        # The testbed lives in `chaos`, above `peer` in the layering: run it, don't import it.
        import subprocess

        return subprocess.call([sys.executable, "-m", "chaos", *argv[1:]])
    import click

    from peer.cli.agentcmd import EXIT_FAILURE, EXIT_USAGE, agent_command
    client_errors: tuple[type[Exception], ...] = ()  # the daemon raises none: no client code loaded
    parsed: list[Any] = []  # `roam agent`'s flags, once click has parsed them
    if argv[:1] == ["agent"]:
        entry: click.Command = agent_command(start=parsed.append)
        args, prog = argv[1:], "roam agent"
    else:
        from peer.cli.client import ClientError

        entry, args, prog, client_errors = _full_cli(), argv, "roam", (ClientError,)
    try:
        entry.main(args=args, prog_name=prog, standalone_mode=False)
    except click.exceptions.Exit as exc:
        return int(exc.exit_code or 0)
    except click.UsageError as exc:
        if type(exc).__name__ == "NoArgsIsHelpError":  # bare `roam`: the help, as --help prints it
            print(exc.format_message(), file=sys.stderr)
            return EXIT_USAGE
        sub = exc.ctx.command_path if exc.ctx is not None else "roam"
        print(f"roam: {exc.format_message()} (see `{sub} --help`)", file=sys.stderr)
        return EXIT_USAGE
    except client_errors as exc:
        command = next((a for a in argv if not a.startswith("-")), "")
        print(f"roam {command}: {exc}" if command else f"roam: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    except click.ClickException as exc:
        print(f"roam: {exc.format_message()}", file=sys.stderr)
        return exc.exit_code
    except click.Abort:
        return 130
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 0
    if not parsed:
        return 0
    del click, agent_command, entry  # this frame's references: the daemon below holds none
    _forget_click()
    from peer.cli.daemon import run_agent

    return run_agent(parsed[0])


def _forget_click() -> None:
    """Drop click, and the agent command built with it, once `roam agent`'s flags are parsed:
    the daemon never uses them again (issue 18). Forgotten before the agent imports its runtime
    (aiohttp, cryptography), whose objects then fill the space they leave; with typing's
    overload registry emptied too (peer.cli.daemon), an idle agent's RSS is 0.4-0.5 MB lower.
    A later `import click` would load it afresh."""
    for name in [m for m in sys.modules if m == "click" or m.startswith("click.") or m == "peer.cli.agentcmd"]:
        del sys.modules[name]
    globals().pop("agentcmd", None)  # the package's attribute for its submodule
    gc.collect()
