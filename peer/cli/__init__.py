"""`roam`: the agent daemon and a client for the admin API (click, with shell completion).

Every failure ends in one line on stderr and a non-zero exit, never a traceback; nothing is
left running. `python -m peer.cli ...` is the same as `roam ...`.
"""
from __future__ import annotations

import subprocess
import sys

import click

from peer.cli.agentcmd import EXIT_FAILURE, EXIT_USAGE, agent_command, run_agent
from peer.cli.ca import ca_group
from peer.cli.client import ClientError
from peer.cli.commands import cli

__all__ = ["main", "cli", "run_agent", "ClientError"]

cli.add_command(agent_command())
cli.add_command(ca_group)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["chaos"]:
        # The testbed lives in `chaos`, above `peer` in the layering: run it, don't import it.
        return subprocess.call([sys.executable, "-m", "chaos", *argv[1:]])
    try:
        cli.main(args=argv, prog_name="roam", standalone_mode=False)
    except click.exceptions.Exit as exc:
        return int(exc.exit_code or 0)
    except click.UsageError as exc:
        if type(exc).__name__ == "NoArgsIsHelpError":  # bare `roam`: the help, as --help prints it
            print(exc.format_message(), file=sys.stderr)
            return EXIT_USAGE
        sub = exc.ctx.command_path if exc.ctx is not None else "roam"
        print(f"roam: {exc.format_message()} (see `{sub} --help`)", file=sys.stderr)
        return EXIT_USAGE
    except ClientError as exc:
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
