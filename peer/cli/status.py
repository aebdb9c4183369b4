"""`roam status` (one screen) and `roam logs` (from the cluster running the service)."""
from __future__ import annotations

import time
from typing import Any

import click

from peer.cli import output
from peer.cli.client import Client, ClientError, quote


def render_status(data: dict[str, Any], *, api: str) -> str:
    st = data["status"]
    auto = "on" if st.get("auto_migrate") else "off (roam agent --auto-migrate to enable)"
    lines = [f"cluster {st.get('cluster')}  tier {st.get('tier')}  {st.get('version') and 'roam ' + st['version']}"
             f"  api {api}  auto-migrate {auto}"]
    for w in st.get("warnings") or []:
        lines.append(f"WARNING: {w.get('message')}")
        if w.get("line"):
            lines.append(f"         last: {w['line']}")
    members = data["members"]
    alive = sum(1 for m in members if m.get("status") == "alive")
    lines += ["", f"MEMBERS ({alive}/{len(members)} alive)", _indent(output.render("members", members, "table"))]
    lines += ["", f"SERVICES ({len(data['services'])})",
              _indent(output.render("services", data["services"], "table")) if data["services"] else "  none"]
    lines += ["", "RECENT MOVES",
              _indent(output.render("migrations", data["migrations"], "table")) if data["migrations"] else "  none"]
    return "\n".join(lines)


def _indent(text: str) -> str:
    return "\n".join("  " + line for line in text.splitlines())


def follow_logs(client: Client, name: str, *, tail: int, follow: bool, interval: float = 0.5) -> None:
    """Ask the cluster that runs the service (the record's location), through its member API URL."""
    record = client.get(f"/v1/services/{quote(name)}")
    api = _api_of(client, record.get("location"))
    path = f"/v1/services/{quote(name)}/logs"
    chunk = client.get(f"{path}?tail={tail}", api=api)
    click.echo(chunk["text"], nl=False)
    if not follow:
        return
    offset = chunk["offset"]
    try:
        while True:
            time.sleep(interval)  # a polling client, not synchronisation
            try:
                chunk = client.get(f"{path}?offset={offset}", api=api)
            except ClientError:
                # The service may have moved: ask where it runs now.
                record = client.get(f"/v1/services/{quote(name)}")
                api = _api_of(client, record.get("location"))
                chunk = client.get(f"{path}?tail=0", api=api)
            click.echo(chunk["text"], nl=False)
            offset = chunk["offset"]
    except KeyboardInterrupt:
        return


def _api_of(client: Client, cluster: str | None) -> str:
    if not cluster:
        raise ClientError("the service runs nowhere right now")
    for m in client.get("/v1/members"):
        if m.get("name") == cluster and m.get("api"):
            return str(m["api"]).rstrip("/")
    raise ClientError(f"the service runs at {cluster}, which this agent does not know an API address for")
