"""`roam`: the agent daemon and a client for the admin API (click, with shell completion).

Every failure ends in one line on stderr and a non-zero exit, never a traceback; nothing is
left running. `python -m peer.cli ...` is the same as `roam ...`.
"""
from __future__ import annotations

import subprocess
import sys
from typing import Any

import click

from peer.cli.agentcmd import EXIT_FAILURE, EXIT_USAGE, agent_command, run_agent

__all__ = ["main", "cli", "run_agent", "ClientError"]


def _full_cli() -> click.Group:
    """The whole `roam` group. The client commands (and what they import: urllib, http.client,
    email, importlib.metadata, the CA tools; about 1 MB) are built only when a client command
    runs, not in the daemon: `roam agent` goes straight to its command (issue 18's memory)."""
    from peer.cli.ca import ca_group
    from peer.cli.commands import cli as group

    if "agent" not in group.commands:
        group.add_command(agent_command())
        group.add_command(ca_group)
    return group


def __getattr__(name: str) -> Any:
    """`peer.cli.cli` and `peer.cli.ClientError`, imported on first use (PEP 562)."""
    if name == "cli":
        return _full_cli()
    if name == "ClientError":
        from peer.cli.client import ClientError

        return ClientError
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["chaos"]:
        # The testbed lives in `chaos`, above `peer` in the layering: run it, don't import it.
        return subprocess.call([sys.executable, "-m", "chaos", *argv[1:]])
    client_errors: tuple[type[Exception], ...] = ()  # the daemon raises none: no client code loaded
    if argv[:1] == ["agent"]:
        entry: click.Command = agent_command()
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
    return 0
