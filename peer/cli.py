"""`roam`: the agent daemon and a small client for the admin API.

Every failure ends in one line on stderr and a non-zero exit; nothing is left running.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any, NoReturn

EXIT_USAGE = 2
EXIT_FAILURE = 1


class OneLineParser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"roam: {message} (see `roam {self.prog.split(' ', 1)[-1]} --help`)\n"
                  if " " in self.prog else f"roam: {message} (see `roam --help`)\n")


def _agent_parser(sub: Any) -> None:
    p = sub.add_parser("agent", help="run the per-cluster daemon")
    p.add_argument("--name", help="cluster name (DNS-1123 label), also the Serf node name")
    p.add_argument("--addr", help="local IP every listener binds to")
    p.add_argument("--api-port", type=int, dest="api_port")
    p.add_argument("--gossip-port", type=int, dest="gossip_port")
    p.add_argument("--rpc-port", type=int, dest="rpc_port")
    p.add_argument("--join", action="append", default=[], metavar="IP[:PORT]")
    p.add_argument("--tier", help="placement label, e.g. deep-edge, edge, cloud")
    p.add_argument("--data-dir", dest="data_dir")
    p.add_argument("--driver", choices=["process", "kubernetes"])
    p.add_argument("--lb-ports", dest="lb_ports", metavar="LOW-HIGH")
    p.add_argument("--service-ports", dest="service_ports", metavar="LOW-HIGH")
    p.add_argument("--slots", type=int, help="service slots this cluster offers")
    p.add_argument("--cpu", type=float, help="CPU cores this cluster offers (default: this host's)")
    p.add_argument("--memory", help="memory this cluster offers, e.g. 4Gi (default: this host's)")
    p.add_argument("--dwell", type=float, help="seconds a service stays put before a voluntary move (default 60)")
    p.add_argument("--home-grace", dest="home_grace", type=float,
                   help="seconds an entry must be reported failed before the next one acts as steward (default 2)")
    p.add_argument("--repair-after", dest="repair_after", type=float,
                   help="seconds an entry stays lost before the steward replaces it (default 10)")
    p.add_argument("--token-file", dest="token_file")
    p.add_argument("--secret-file", dest="secret_file")
    p.add_argument("--config", help="TOML file; flags override it")
    p.add_argument("--kubeconfig")
    p.add_argument("--kube-context", dest="kube_context")
    p.add_argument("--tls-cert", dest="tls_cert")
    p.add_argument("--tls-key", dest="tls_key")
    p.add_argument("--no-auto-migrate", action="store_true", dest="no_auto_migrate",
                   help="only migrate on request (no policy triggers)")
    p.add_argument("--log-level", default=os.environ.get("ROAM_LOG", "INFO"))


def _client_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--api", default=os.environ.get("ROAM_API", "http://127.0.0.1:7070"), help="agent admin API URL")
    p.add_argument("--token-file", dest="token_file", help="file with the admin token (default: $ROAM_TOKEN)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")


def build_parser() -> OneLineParser:
    parser = OneLineParser(prog="roam", description="keep services alive across clusters")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=OneLineParser)
    _agent_parser(sub)
    sub.add_parser("chaos", help="chaos scenarios on this machine (python -m chaos --help)", add_help=False)
    for name, text in (("members", "federation members"), ("services", "service records"),
                       ("migrations", "recent migrations")):
        _client_args(sub.add_parser(name, help=f"list {text}"))
    p = sub.add_parser("deploy", help="deploy a descriptor here (this cluster becomes HC)")
    p.add_argument("descriptor", help="descriptor JSON file")
    _client_args(p)
    p = sub.add_parser("delete", help="delete a service")
    p.add_argument("service")
    _client_args(p)
    p = sub.add_parser("migrate", help="migrate a service")
    p.add_argument("service")
    p.add_argument("--to", dest="target", help="target cluster (default: placement decides)")
    _client_args(p)
    p = sub.add_parser("keys", help="gossip encryption keys: list fingerprints, or rotate federation-wide")
    p.add_argument("action", choices=["list", "rotate"])
    p.add_argument("--force", action="store_true", help="rotate even if some members are failed")
    _client_args(p)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["chaos"]:
        # The testbed lives in `chaos`, above `peer` in the layering: run it, don't import it.
        import subprocess

        return subprocess.call([sys.executable, "-m", "chaos", *argv[1:]])
    args = build_parser().parse_args(argv)
    if args.command == "agent":
        return run_agent(args)
    return run_client(args)


def run_agent(args: argparse.Namespace) -> int:
    from peer.config import ConfigError, build_config, check_binaries

    logging.basicConfig(
        level=getattr(logging, str(args.log_level).upper(), logging.INFO),
        format=f"%(asctime)s {args.name or '?'} %(name)s %(levelname)s %(message)s",
    )
    try:
        config = build_config(args)
        check_binaries(config)
    except ConfigError as exc:
        print(f"roam agent: {exc}", file=sys.stderr)
        return EXIT_USAGE
    from peer.agent import Agent
    from peer.credentials import CredentialError

    try:
        import uvloop
        uvloop.install()
    except ImportError:  # pragma: no cover - uvloop is a dependency; run anyway on plain asyncio
        pass
    try:
        asyncio.run(Agent(config).run_until_signalled())
    except CredentialError as exc:
        print(f"roam agent: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except Exception as exc:  # noqa: BLE001 - one line, not a traceback, for start-up failures
        logging.getLogger("roam").debug("start failed", exc_info=True)
        print(f"roam agent: {type(exc).__name__}: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    return 0


# -- client -----------------------------------------------------------------------------------

class ClientError(RuntimeError):
    pass


def _token(args: argparse.Namespace) -> str:
    if getattr(args, "token_file", None):
        try:
            return Path(args.token_file).read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ClientError(f"--token-file: cannot read {args.token_file}: {exc.strerror}") from exc
    token = os.environ.get("ROAM_TOKEN", "")
    if not token:
        raise ClientError("no admin token: set ROAM_TOKEN or pass --token-file")
    return token


def request(args: argparse.Namespace, method: str, path: str, body: Any = None) -> Any:
    url = args.api.rstrip("/") + path
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method, headers={
        "Authorization": f"Bearer {_token(args)}", "Content-Type": "application/json",
    })
    try:
        with urllib.request.urlopen(req, timeout=120) as resp:
            raw = resp.read()
    except urllib.error.HTTPError as exc:
        try:
            err = json.loads(exc.read())
            msg = err.get("error", exc.reason)
            if err.get("field"):
                msg = f"{err['field']}: {msg}"
        except ValueError:
            msg = exc.reason
        raise ClientError(f"{method} {path}: {exc.code} {msg}") from exc
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise ClientError(f"cannot reach {args.api}: {reason}") from exc
    return json.loads(raw) if raw else None


def _table(rows: list[dict[str, Any]], columns: list[str]) -> str:
    cells = [[_cell(r.get(c)) for c in columns] for r in rows]
    widths = [max([len(c)] + [len(row[i]) for row in cells]) for i, c in enumerate(columns)]
    lines = ["  ".join(c.upper().ljust(w) for c, w in zip(columns, widths))]
    lines += ["  ".join(v.ljust(w) for v, w in zip(row, widths)) for row in cells]
    return "\n".join(lines)


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, dict):
        return ",".join(f"{k}={_cell(v)}" for k, v in value.items() if v is not None)
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def _load_summary(load: dict[str, Any]) -> str:
    if not load:
        return "-"
    return (f"cpu {load.get('cpu_used', 0):g}/{load.get('cpu_capacity', 0):g} "
            f"mem {load.get('mem_used_mib', 0)}/{load.get('mem_capacity_mib', 0)}Mi "
            f"slots {load.get('slots_used', 0)}/{load.get('slots_capacity', 0)}")


def run_client(args: argparse.Namespace) -> int:
    try:
        result = _dispatch(args)
    except ClientError as exc:
        print(f"roam {args.command}: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    if args.json:
        print(json.dumps(result, indent=2, sort_keys=True))
    elif args.command == "members":
        rows = [dict(m, load=_load_summary(m.get("load") or {})) for m in result]
        print(_table(rows, ["name", "status", "addr", "tier", "api", "rtt_ms", "load"]))
    elif args.command == "services":
        print(_table(result, ["name", "role", "home", "location", "state", "endpoint"]))
    elif args.command == "keys" and args.action == "list":
        print(_table(result["keys"], ["fingerprint", "members"]))
    elif args.command == "migrations":
        print(_table(result, ["id", "service", "kind", "source", "target", "outcome", "pr", "replication",
                              "wait", "reroute", "cleanup", "deploy"]))
    else:
        print(json.dumps(result, indent=2, sort_keys=True))
    return 0


def _dispatch(args: argparse.Namespace) -> Any:
    cmd = args.command
    if cmd in ("members", "services", "migrations"):
        return request(args, "GET", f"/v1/{cmd}")
    if cmd == "deploy":
        try:
            descriptor = json.loads(Path(args.descriptor).read_text(encoding="utf-8"))
        except OSError as exc:
            raise ClientError(f"cannot read {args.descriptor}: {exc.strerror}") from exc
        except ValueError as exc:
            raise ClientError(f"{args.descriptor} is not valid JSON: {exc}") from exc
        return request(args, "POST", "/v1/services", descriptor)
    if cmd == "delete":
        return request(args, "DELETE", f"/v1/services/{urllib.parse.quote(args.service, safe='')}")
    if cmd == "migrate":
        body = {"target": args.target} if args.target else {}
        return request(args, "POST", f"/v1/services/{urllib.parse.quote(args.service, safe='')}/migrate", body)
    if cmd == "keys":
        if args.action == "list":
            return request(args, "GET", "/v1/keys")
        return request(args, "POST", "/v1/keys/rotate", {"force": True} if args.force else {})
    raise ClientError(f"unknown command {cmd}")


if __name__ == "__main__":
    sys.exit(main())
