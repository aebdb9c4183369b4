"""`roam agent`: the per-cluster daemon. Every start-up failure is one line naming the flag or file."""
from __future__ import annotations

import os
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

import click

from peer.cli.daemon import EXIT_FAILURE, EXIT_USAGE, run_agent
from peer.config import default_of

__all__ = ["AGENT_OPTIONS", "EXIT_FAILURE", "EXIT_USAGE", "agent_command", "run_agent"]


def _opt(*names: str, **kw: Any) -> Any:
    return click.option(*names, **kw)


def _default(key: str, attribute: str | None = None) -> str:
    """A default for a help text, read from AgentConfig (peer.config), where it is written once."""
    value = default_of(key)
    if attribute is not None:
        value = getattr(value, attribute)
    if isinstance(value, range):
        return f"{value.start}-{value.stop - 1}"
    return f"{value:g}" if isinstance(value, float) else str(value)


AGENT_OPTIONS = [
    _opt("--name", help="cluster name (DNS-1123 label), also the Serf node name"),
    _opt("--addr", help="local IP every listener binds to"),
    _opt("--api-port", "api_port", type=int, help=f"admin API port (and the peer API with --no-peer-tls or explicit identity; default {_default('api_port')})"),
    _opt("--gossip-port", "gossip_port", type=int, help=f"Serf gossip port (default {_default('gossip_port')})"),
    _opt("--rpc-port", "rpc_port", type=int, help=f"Serf RPC port on --addr (default {_default('rpc_port')})"),
    _opt("--join", multiple=True, metavar="IP[:PORT]", help="peer to join (repeat)"),
    _opt("--tier", help="placement label, e.g. deep-edge, edge, cloud"),
    _opt("--data-dir", "data_dir", type=click.Path(), help="state dir (default /var/lib/roam/NAME as root)"),
    _opt("--driver", type=click.Choice(["process", "kubernetes"])),
    _opt("--lb-ports", "lb_ports", metavar="LOW-HIGH", help=f"ports of the entry frontends (default {_default('lb_ports')})"),
    _opt("--lb-slots", "lb_slots", type=int, metavar="N",
         help="frontends pre-provisioned, i.e. how many services this cluster can be an entry of "
              f"(default {_default('lb_slots')}, at most the size of --lb-ports)"),
    _opt("--service-ports", "service_ports", metavar="LOW-HIGH"),
    _opt("--slots", type=int, help="service slots this cluster offers"),
    _opt("--cpu", type=float, help="CPU cores this cluster offers (default: this host's)"),
    _opt("--memory", help="memory this cluster offers, e.g. 4Gi (default: this host's)"),
    _opt("--dwell", type=float, help=f"seconds a service stays put before a voluntary move (default {_default('thresholds', 'min_dwell_s')})"),
    _opt("--home-grace", "home_grace", type=float,
         help=f"seconds an entry must be reported failed before the next one acts as steward (default {_default('home_grace')})"),
    _opt("--repair-after", "repair_after", type=float,
         help=f"seconds an entry stays lost before the steward replaces it (default {_default('repair_after')})"),
    _opt("--recovery-wait", "recovery_wait", type=float,
         help=f"seconds a (re)started agent waits for a peer to recover its records from before it acts (default {_default('recovery_wait')})"),
    _opt("--token-file", "token_file", type=click.Path(),
         help="admin bearer token (0600). Normal setup: one file shared by every agent of the federation"),
    _opt("--reader-token-file", "reader_token_file", type=click.Path(),
         help="a second admin token (0600) that may only read: any write with it is a 403"),
    _opt("--accept-from", "accept_from", multiple=True, metavar="CLUSTER",
         help="run and route only services homed at these clusters (repeat; default: any home)"),
    _opt("--allow-command", "allow_command", multiple=True, metavar="PREFIX",
         help="run only commands whose resolved argv[0] lies under these paths (repeat; default: any)"),
    _opt("--allow-image", "allow_image", multiple=True, metavar="PREFIX",
         help="run only images from these registry prefixes (repeat; default: any)"),
    _opt("--run-as", "run_as", metavar="USER",
         help="process driver, agent as root: run services as this user (default: $ROAM_RUN_AS or nobody; "
              "the agent's own user: no switch)"),
    _opt("--secret-file", "secret_file", type=click.Path(), help="federation secret shared by all peers (0600)"),
    _opt("--config", type=click.Path(), help="TOML file; flags override it"),
    _opt("--kubeconfig", type=click.Path()),
    _opt("--kube-context", "kube_context"),
    _opt("--tls-cert", "tls_cert", type=click.Path()),
    _opt("--tls-key", "tls_key", type=click.Path()),
    _opt("--ca-cert", "ca_cert", type=click.Path(), metavar="FILE",
         help="per-cluster identity: the federation CA certificate (`roam ca init`); mTLS on the peer API"),
    _opt("--cert", type=click.Path(), metavar="FILE", help="this cluster's certificate (`roam ca issue`), reloaded on change"),
    _opt("--key", type=click.Path(), metavar="FILE", help="this cluster's key (0600), reloaded on change"),
    _opt("--ca-dir", "ca_dir", type=click.Path(), metavar="DIR",
         help="the federation CA kept on this cluster: sign enrolments with one-time join tokens (`roam ca token`)"),
    _opt("--peer-port", "peer_port", type=int, metavar="PORT",
         help="automatic identity: the mTLS peer listener on --addr (default --api-port + 1, or the next free one)"),
    _opt("--peer-tls", "peer_tls", flag_value=True, default=None,
         help="automatic identity (the default): a certificate from the federation CA (made by the agent without "
              "--join), the peer API on its own mTLS listener (--peer-port); the admin API unchanged"),
    _opt("--no-peer-tls", "no_peer_tls", is_flag=True,
         help="no automatic identity: the peer API on the admin port, federation secret only"),
    _opt("--ca-keepers", "ca_keepers", type=int, metavar="N",
         help=f"automatic identity: live clusters that keep the CA key (default {_default('ca_keepers')})"),
    _opt("--auto-migrate", "auto_migrate", flag_value=True, default=None,
         help="let policy triggers move services (link quality, overload, failback); off by default"),
    _opt("--no-auto-migrate", "no_auto_migrate", is_flag=True, help="only migrate on request (the default)"),
    _opt("--probe-budget", "probe_budget", type=int, metavar="BYTES",
         help=f"link probe: bytes it may send one peer per minute (default {_default('probe_budget', 'per_minute')}; 0: passive estimates only)"),
    _opt("--log-level", "log_level", default=lambda: os.environ.get("ROAM_LOG", "INFO"), show_default="$ROAM_LOG or INFO"),
]


def agent_command(start: Callable[[SimpleNamespace], object] | None = None) -> click.Command:
    """The `agent` command. Its callback hands the parsed flags to `start`; without one (within
    the full `roam` group) it runs the daemon there and exits with its code. `roam agent` itself
    passes a `start` that only keeps them: the daemon then runs once click is forgotten
    (peer.cli.main)."""
    def callback(**kwargs: Any) -> None:
        for key in ("join", "accept_from", "allow_command", "allow_image"):
            kwargs[key] = list(kwargs.get(key) or [])
        flags = SimpleNamespace(**kwargs)
        if start is not None:
            start(flags)
        else:
            raise SystemExit(run_agent(flags))

    cmd = click.Command("agent", callback=callback, help="Run the per-cluster daemon (one per cluster).",
                        short_help="run the per-cluster daemon")
    for option in reversed(AGENT_OPTIONS):
        option(cmd)
    return cmd
