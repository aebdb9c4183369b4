"""`python -m chaos demo` (see chaos/demo.py), and `python -m chaos run --scenario NAME --seed N --clusters N [--services M] [--duration S]
[--report DIR]` and `python -m chaos list`. Prints a human summary, writes a JSON report, and
exits 1 when a checker failed (2 on bad usage). Needs root (namespaces, iptables).
"""
from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

from chaos.agent_processes import run_services_as_root_if_needed
from chaos.netns import install_emergency_cleanup
from chaos.runner import DEFAULT_PREFIX, DEFAULT_SUBNET, RunOptions, run
from chaos.scenarios import all_scenarios


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m chaos",
                                     description="roam's chaos scenarios on one machine")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="list the scenarios")
    d = sub.add_parser("demo", help="the paper's use case on three clusters (what `make demo` runs)")
    d.add_argument("--report", type=Path, default=Path("demo-report"), help="report folder")
    d.add_argument("--loopback", action="store_true", help="loopback agents, no shaping (the non-root mode)")
    d.add_argument("--identity", action=argparse.BooleanOptionalAction, default=None,
                   help="per-cluster identity: a CA, a certificate per cluster, mTLS on the peer API, signed "
                        "records (netns mode: on by default; --loopback: off)")
    d.add_argument("--prefix", default="roamdemo", help="namespace/interface prefix")
    d.add_argument("--subnet", default="10.77.0.0/24")
    p = sub.add_parser("run", help="run one scenario")
    p.add_argument("--scenario", required=True, choices=sorted(all_scenarios()))
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--clusters", type=int, default=3)
    p.add_argument("--services", type=int, help="services to deploy (scenario default)")
    p.add_argument("--duration", type=float, help="seconds of faults (scenario default)")
    p.add_argument("--report", type=Path, help="report folder (default chaos-reports/NAME-SEED)")
    p.add_argument("--rate", type=float, default=200.0, help="requests/s over all services")
    p.add_argument("--quiet-timeout", type=float, default=120.0, dest="quiet_timeout",
                   help="seconds the healed federation gets to become quiet")
    p.add_argument("--auto-migrate", action="store_true", dest="auto_migrate",
                   help="let the agents' placement policy migrate on its own too")
    p.add_argument("--prefix", default=DEFAULT_PREFIX, help="namespace/interface prefix")
    p.add_argument("--subnet", default=DEFAULT_SUBNET)
    p.add_argument("--keep-data", action="store_true", dest="keep_data",
                   help="keep agent data dirs and copy all logs into the report")
    p.add_argument("--log-level", default="INFO", dest="log_level",
                   help="the agents' log level (DEBUG to investigate a failure)")
    p.add_argument("--identity", action=argparse.BooleanOptionalAction, default=True,
                   help="per-cluster identity: a CA, a certificate per cluster, mTLS on the peer API, signed "
                        "records (on by default; --no-identity for the shared secret only)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress lines on stderr")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    why = run_services_as_root_if_needed()  # the demo's services are this checkout's samples
    if why is not None:
        print(f"python -m chaos: services run as root ($ROAM_RUN_AS=root): {why}", file=sys.stderr)
    if args.command == "demo":
        from chaos.demo import run_demo

        if args.identity and args.loopback:
            print("python -m chaos demo: --identity runs in the netns mode only, not with --loopback", file=sys.stderr)
            return 2
        identity = not args.loopback if args.identity is None else args.identity
        return asyncio.run(run_demo(args.report, loopback=args.loopback, identity=identity,
                                    prefix=args.prefix, subnet=args.subnet))
    if args.command == "list":
        for name, s in sorted(all_scenarios().items()):
            print(f"{name:28} {s.about} (>= {s.min_clusters} clusters, "
                  f"{s.services} services by default)")
        return 0
    if args.clusters < 1 or (args.services is not None and args.services < 1):
        print("python -m chaos: --clusters and --services must be positive", file=sys.stderr)
        return 2
    report_dir = args.report or Path("chaos-reports") / f"{args.scenario}-{args.seed}"
    options = RunOptions(
        scenario=args.scenario, seed=args.seed, clusters=args.clusters,
        services=args.services, duration=args.duration, report_dir=report_dir,
        prefix=args.prefix, subnet=args.subnet, rate=args.rate,
        quiet_timeout=args.quiet_timeout, auto_migrate=args.auto_migrate,
        keep_data=args.keep_data, verbose=not args.quiet, log_level=args.log_level,
        identity=args.identity)
    uninstall = install_emergency_cleanup(args.prefix)
    try:
        report = asyncio.run(run(options))
    except ValueError as exc:
        print(f"python -m chaos: {exc}", file=sys.stderr)
        return 2
    finally:
        uninstall()
    report.print_summary()
    print(f"report: {report_dir / 'report.json'}")
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
