"""The client commands of `roam` (everything but `roam agent`)."""
from __future__ import annotations

import functools
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from peer.cli import output
from peer.cli.client import DEFAULT_TIMEOUT, Client, ClientError, quote
from peer.drivers.descriptor import DEFAULT_READY_TIMEOUT, MAX_READY_TIMEOUT

HELP = """Keep services alive across clusters.

\b
Where the client connects (first found wins):
  --api ADDR        e.g. 127.0.0.11, 127.0.0.11:7070 or https://host:7070 (scheme and port optional)
  $ROAM_API         the same, from the environment
  the local agent   the agent running on this host (it writes DATA/agent.json with its --addr)
  /etc/roam/agent.toml  its `addr`
  http://127.0.0.1:7070
\b
The admin token: --token-file FILE, else $ROAM_TOKEN, else the local agent's token file.
Normal setup: one token file shared by every agent of the federation (`roam agent --token-file`),
so one token works everywhere; per-agent tokens are the strict option.
\b
Shell completion:  eval "$(roam completion bash)"   (or zsh, fish)
"""

WATCH_INTERVAL = 2.0


def version_text() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return f"roam {version('roam')}"
    except PackageNotFoundError:  # pragma: no cover - run from a source tree without install
        from peer.version import VERSION

        return f"roam {VERSION}"


@click.group(help=HELP, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(message="%(prog)s %(version)s", version=version_text().split()[-1], prog_name="roam",
                      package_name="roam")
def cli() -> None:
    pass


def client_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    """--api, --token-file, --timeout, -o/--output and --json on every client command."""
    @click.option("--api", metavar="ADDR", help="agent admin API (default: $ROAM_API, else the local agent; see roam --help)")
    @click.option("--token-file", "token_file", type=click.Path(), help="file with the admin token (default: $ROAM_TOKEN)")
    @click.option("--timeout", type=float, default=DEFAULT_TIMEOUT, show_default=True, help="seconds to wait for the agent")
    @click.option("-o", "--output", type=click.Choice(["table", "wide", "json", "yaml"]), default="table", show_default=True)
    @click.option("--json", "as_json", is_flag=True, help="same as -o json")
    @functools.wraps(fn)
    def wrapper(api: str | None, token_file: str | None, timeout: float, output: str, as_json: bool, **kw: Any) -> Any:
        if timeout <= 0:
            raise click.BadParameter("must be > 0", param_hint="--timeout")
        client = Client(api=api, token_file=token_file, timeout=timeout)
        return fn(client, "json" if as_json else output, **kw)

    return wrapper


def watch_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    @click.option("-w", "--watch", "--follow", "-f", "watch", is_flag=True,
                  help="keep going: print rows as they change (Ctrl-C stops)")
    @click.option("--interval", type=float, default=WATCH_INTERVAL, show_default=True, help="seconds between polls with --watch")
    @functools.wraps(fn)
    def wrapper(*a: Any, **kw: Any) -> Any:
        return fn(*a, **kw)

    return wrapper


def listing(client: Client, kind: str, fmt: str, *, watch: bool, interval: float) -> None:
    rows = client.get(f"/v1/{kind}")
    click.echo(output.render(kind, rows, fmt))
    if not watch:
        return
    key = "id" if kind == "migrations" else "name"
    seen = {r.get(key): json.dumps(r, sort_keys=True, default=str) for r in rows}
    base, wide = output.COLUMNS[kind]
    columns = base + wide if fmt == "wide" else base
    try:
        while True:
            time.sleep(interval)  # a polling client, not synchronisation
            rows = client.get(f"/v1/{kind}")
            changed = [r for r in rows if seen.get(r.get(key)) != json.dumps(r, sort_keys=True, default=str)]
            now_keys = {r.get(key) for r in rows}
            gone = [k for k in seen if k not in now_keys]
            seen = {r.get(key): json.dumps(r, sort_keys=True, default=str) for r in rows}
            if fmt in ("json", "yaml"):
                for r in changed:
                    click.echo(json.dumps(r, sort_keys=True) if fmt == "json" else output.to_yaml(r) + "\n---")
            else:
                views = [output.view(kind, r) for r in changed]
                for line in output.table_rows(views, columns, [output.view(kind, r) for r in rows]):
                    click.echo(line)
            for k in gone:
                click.echo(f"{k}  (gone)")
    except KeyboardInterrupt:
        return


@cli.command(help="Federation members as the agent sees them.")
@client_options
@watch_options
@click.option("--serf", "serf", is_flag=True, help="print the `serf members` command for the local agent (needs its data dir)")
@click.option("--run", "run_serf", is_flag=True, help="with --serf: run it")
@click.option("--data-dir", "data_dir", type=click.Path(), help="the local agent's data dir (for --serf)")
def members(client: Client, fmt: str, watch: bool, interval: float, serf: bool, run_serf: bool, data_dir: str | None) -> None:
    if serf or run_serf:
        serf_members(client, data_dir=data_dir, run=run_serf)
        return
    listing(client, "members", fmt, watch=watch, interval=interval)


def serf_members(client: Client, *, data_dir: str | None, run: bool) -> None:
    """The exact Serf CLI call for this agent: its RPC address and auth key live in DATA/serf/serf.json."""
    import shlex
    import subprocess

    directory = data_dir or client.target.data_dir
    if not directory:
        raise ClientError("--serf needs the agent's data dir on this host: pass --data-dir DATA "
                          "(Serf's RPC listens on the agent's --addr:7373 and is not reachable from elsewhere)")
    conf = Path(directory) / "serf" / "serf.json"
    try:
        doc = json.loads(conf.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ClientError(f"cannot read {conf}: {exc.strerror} (run as the agent's user)") from exc
    except ValueError as exc:
        raise ClientError(f"{conf} is not valid JSON: {exc}") from exc
    argv = ["serf", "members", f"-rpc-addr={doc['rpc_addr']}", f"-rpc-auth={doc['rpc_auth']}"]
    if not run:
        click.echo(shlex.join(argv))
        return
    raise SystemExit(subprocess.call(argv))


@cli.command(help="Service records: all of them, or one (NAME) in detail.")
@click.argument("name", required=False)
@client_options
@watch_options
def services(client: Client, fmt: str, watch: bool, interval: float, name: str | None) -> None:
    if name is None:
        listing(client, "services", fmt, watch=watch, interval=interval)
        return
    record = client.get(f"/v1/services/{quote(name)}")
    if fmt in ("json", "yaml"):
        click.echo(json.dumps(record, indent=2, sort_keys=True) if fmt == "json" else output.to_yaml(record))
    else:
        click.echo(output.detail(record))


@cli.command(help="The entry endpoints of a service, one host:port per line (for scripts).")
@click.argument("name")
@client_options
def endpoints(client: Client, fmt: str, name: str) -> None:
    eps = output.endpoints_of(client.get(f"/v1/services/{quote(name)}"))
    click.echo(json.dumps(eps) if fmt == "json" else "\n".join(eps))


@cli.command(help="Recent migrations and fail-safe redeploys, with stage timings (ms) and start times.")
@client_options
@watch_options
def migrations(client: Client, fmt: str, watch: bool, interval: float) -> None:
    listing(client, "migrations", fmt, watch=watch, interval=interval)


@cli.command(help="Recent admin writes from the agent's audit log (who, what, outcome), newest first.")
@client_options
@click.option("--limit", type=click.IntRange(1, 1000), default=50, show_default=True, help="entries to show")
def audit(client: Client, fmt: str, limit: int) -> None:
    rows = client.get(f"/v1/audit?limit={limit}")
    if fmt in ("json", "yaml"):
        click.echo(json.dumps(rows, indent=1, sort_keys=True))
        return
    for e in rows:
        who, what = e.get("who", {}), e.get("what", {})
        when = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(float(e.get("time", 0))))
        subject = " ".join(f"{k}={what[k]}" for k in ("service", "target") if what.get(k))
        click.echo(f"{when}  {who.get('role') or '-'}:{who.get('token_id') or '-'}@{who.get('remote') or '?'}  "
                   f"{what.get('method')} {what.get('path')} {subject}  -> {e.get('status')} {e.get('outcome')}")


@cli.command(help="This cluster, its members, its services and recent moves, on one screen.")
@client_options
def status(client: Client, fmt: str) -> None:
    from peer.cli.status import render_status

    data = {"status": client.get("/v1/status"), "members": client.get("/v1/members"),
            "services": client.get("/v1/services"), "migrations": client.get("/v1/migrations")[:5]}
    if fmt in ("json", "yaml"):
        click.echo(json.dumps(data, indent=2, sort_keys=True) if fmt == "json" else output.to_yaml(data))
    else:
        click.echo(render_status(data, api=client.api))


@cli.command("wait", help="Wait until the agent answers (and, with --members N, sees N alive members), "
                         "for scripts: exit 0 then, 1 after --timeout.")
@click.option("--members", "want", type=click.IntRange(1), help="also wait until N members are alive")
@client_options
def wait_for_agent(client: Client, fmt: str, want: int | None) -> None:
    deadline = time.monotonic() + client.timeout
    patience, client.timeout = client.timeout, 2.0
    while True:
        try:
            health = client.get("/v1/health")
            alive = [m for m in client.get("/v1/members") if m.get("status") == "alive"] if want else []
            if not want or len(alive) >= want:
                break
            problem = f"{len(alive)} of {want} members alive"
        except ClientError as exc:
            problem = str(exc)
        if time.monotonic() >= deadline:
            raise ClientError(f"still waiting after {patience:g} s (--timeout): {problem}")
        time.sleep(0.2)  # polling a starting agent
    extra = f", {len(alive)} members alive" if want else ""
    click.echo(f"{health.get('cluster')} is up at {client.api}{extra}")


@cli.command(help="Print the client's version.")
def version() -> None:
    click.echo(version_text())


@cli.command(help="A service's output, from the cluster running it (-f: keep following).")
@click.argument("name")
@click.option("--tail", type=click.IntRange(0, 10000), default=100, show_default=True, help="lines to show first")
@click.option("-f", "--follow", is_flag=True, help="keep printing new output (Ctrl-C stops)")
@client_options
def logs(client: Client, fmt: str, name: str, tail: int, follow: bool) -> None:
    from peer.cli.status import follow_logs

    follow_logs(client, name, tail=tail, follow=follow)


@cli.command(help="Deploy a descriptor here (this cluster becomes the service's home).")
@click.argument("descriptor", type=click.Path())
@client_options
def deploy(client: Client, fmt: str, descriptor: str) -> None:
    try:
        body = json.loads(Path(descriptor).read_text(encoding="utf-8"))
    except OSError as exc:
        raise ClientError(f"cannot read {descriptor}: {exc.strerror}") from exc
    except ValueError as exc:
        raise ClientError(f"{descriptor} is not valid JSON: {exc}") from exc
    # The agent answers within the service's ready_timeout (a 422 with the log tail past it):
    # wait that long, so the answer is the agent's and not our own timeout.
    ready = body.get("ready_timeout") if isinstance(body, dict) else None
    ready = ready if isinstance(ready, (int, float)) and not isinstance(ready, bool) else DEFAULT_READY_TIMEOUT
    client.timeout = max(client.timeout, min(float(ready), MAX_READY_TIMEOUT) + 15.0)
    record = client.call("POST", "/v1/services", body)
    if fmt in ("json", "yaml"):
        return click.echo(json.dumps(record, indent=2, sort_keys=True) if fmt == "json" else output.to_yaml(record))
    eps = ", ".join(output.endpoints_of(record)) or "-"
    click.echo(f"{record.get('name')}: deployed, home {record.get('home')}, running at {record.get('location')}, "
               f"state {record.get('state')}; endpoint {eps}")


@cli.command(help="Delete a service (at its home cluster).")
@click.argument("service")
@client_options
def delete(client: Client, fmt: str, service: str) -> None:
    record = client.call("DELETE", f"/v1/services/{quote(service)}")
    if fmt in ("json", "yaml"):
        return click.echo(json.dumps(record, indent=2, sort_keys=True) if fmt == "json" else output.to_yaml(record))
    click.echo(f"{service}: deleted")


@cli.command(help="Migrate a service (to CLUSTER, or where placement says).")
@click.argument("service")
@click.option("--to", "target", metavar="CLUSTER", help="target cluster (default: placement decides)")
@client_options
def migrate(client: Client, fmt: str, service: str, target: str | None) -> None:
    m = client.call("POST", f"/v1/services/{quote(service)}/migrate", {"target": target} if target else {})
    if fmt in ("json", "yaml"):
        return click.echo(json.dumps(m, indent=2, sort_keys=True) if fmt == "json" else output.to_yaml(m))
    click.echo(output.migration_line(m))


@cli.command(help="Move every service away from this cluster (for maintenance); --stop also stops the agent.")
@click.option("--stop", is_flag=True, help="stop the agent once drained")
@client_options
def drain(client: Client, fmt: str, stop: bool) -> None:
    result = client.call("POST", "/v1/drain", {"stop": stop})
    if fmt in ("json", "yaml"):
        return click.echo(json.dumps(result, indent=2, sort_keys=True) if fmt == "json" else output.to_yaml(result))
    moved, failed = result.get("migrated") or [], result.get("failed") or []
    click.echo(f"drained: {len(moved)} migrated, {len(failed)} failed" + (" ; agent stopping" if stop else ""))
    for m in moved:
        click.echo("  " + (output.migration_line(m) if isinstance(m, dict) else str(m)))
    for f in failed:
        click.echo("  failed: " + (json.dumps(f, sort_keys=True) if isinstance(f, dict) else str(f)))
    if failed:
        raise SystemExit(1)


@cli.command(help="Gossip encryption keys: list fingerprints, or rotate federation-wide.")
@click.argument("action", type=click.Choice(["list", "rotate"]))
@click.option("--force", is_flag=True, help="rotate even if some members are failed")
@client_options
def keys(client: Client, fmt: str, action: str, force: bool) -> None:
    if action == "list":
        result = client.get("/v1/keys")
        if fmt == "table" or fmt == "wide":
            return click.echo(output.table(result["keys"], ["fingerprint", "members"]))
    else:
        result = client.call("POST", "/v1/keys/rotate", {"force": True} if force else {})
    click.echo(output.to_yaml(result) if fmt == "yaml" else json.dumps(result, indent=2, sort_keys=True))


@cli.command(help='Print the shell completion script: eval "$(roam completion bash)".')
@click.argument("shell", type=click.Choice(["bash", "zsh", "fish"]))
def completion(shell: str) -> None:
    from click.shell_completion import get_completion_class

    cls = get_completion_class(shell)
    assert cls is not None
    click.echo(cls(cli, {}, "roam", "_ROAM_COMPLETE").source())


@cli.command(context_settings={"ignore_unknown_options": True, "allow_extra_args": True}, add_help_option=False,
             help="Chaos scenarios on this machine (same as python -m chaos; roam chaos --help).")
def chaos() -> None:  # pragma: no cover - main() hands `roam chaos ...` to python -m chaos first
    raise ClientError("run as `roam chaos ...`")
