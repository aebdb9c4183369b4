"""`roam ca ...`: the federation CA (peer.trust.ca). Run it where the CA key lives (offline, or
on one chosen host); only `push` talks to an agent."""
from __future__ import annotations

import ssl
from pathlib import Path
from typing import Any

import click

from peer.cli.client import Client
from peer.cli.commands import client_options
from peer.trust import ca
from peer.trust.certs import TrustError

DIR = click.option("--dir", "directory", required=True, type=click.Path(file_okay=False, path_type=Path),
                   help="the CA's directory (ca.key 0600, ca.pem, index.json, crl.pem)")


@click.group("ca", help="The federation CA: one certificate per cluster, revocation that reaches every member.")
def ca_group() -> None:
    pass


def _fail(exc: Exception) -> click.ClickException:
    return click.ClickException(str(exc))


@ca_group.command("init", help="Create the CA: DIR/ca.key (0600) and DIR/ca.pem, the --ca-cert of every agent.")
@DIR
@click.option("--name", default="roam federation CA", show_default=True, help="the CA certificate's subject CN")
@click.option("--days", type=click.IntRange(1, ca.CA_DAYS), default=ca.CA_DAYS, show_default=True)
def init(directory: Path, name: str, days: int) -> None:
    try:
        cert = ca.init(directory, name=name, days=days)
    except (TrustError, OSError) as exc:
        raise _fail(exc) from exc
    click.echo(f"CA created: key {directory / ca.CA_KEY} (0600, keep it offline), certificate {cert}")


@ca_group.command("issue", help="A key and certificate naming CLUSTER, in OUT: cluster.key (0600), cluster.pem, "
                                "ca.pem. Again for the same cluster = rotation (agents reload the files).")
@DIR
@click.option("--cluster", required=True, help="the cluster name (the agent's --name)")
@click.option("--out", required=True, type=click.Path(file_okay=False, path_type=Path), help="where to write them")
@click.option("--days", type=int, default=ca.CLUSTER_DAYS, show_default=True, help="validity")
@click.option("--ip", "ips", multiple=True, metavar="IP", help="the agent's --addr, so admin clients can check it (repeat)")
def issue(directory: Path, cluster: str, out: Path, days: int, ips: tuple[str, ...]) -> None:
    try:
        entry = ca.issue(directory, cluster=cluster, out=out, days=days, ips=ips)
    except (TrustError, OSError) as exc:
        raise _fail(exc) from exc
    click.echo(f"issued {cluster}: serial {entry.serial:x}, valid until {entry.not_after}; "
               f"agent flags: --ca-cert {out / ca.OUT_CA} --cert {out / ca.OUT_CERT} --key {out / ca.OUT_KEY}")


@ca_group.command("request", help="On the cluster's host: a key that never leaves it (OUT/.cluster.key.pending, "
                                  "0600) and OUT/cluster.csr for the operator to approve with `roam ca sign`.")
@click.option("--cluster", required=True, help="the cluster name (the agent's --name)")
@click.option("--out", required=True, type=click.Path(file_okay=False, path_type=Path))
def request(cluster: str, out: Path) -> None:
    try:
        path = ca.request(cluster=cluster, out=out)
        req, _ = ca.read_request(path)
    except (TrustError, OSError) as exc:
        raise _fail(exc) from exc
    click.echo(f"request for {cluster}: {path}; key fingerprint sha256:{req.fingerprint} "
               "(compare it at the CA); then `roam ca install` the certificate here")


@ca_group.command("sign", help="At the CA: approve a request (`roam ca request`): --cluster must be the name it "
                               "carries. Writes OUT/cluster.pem and OUT/ca.pem; no key leaves the cluster's host.")
@DIR
@click.option("--csr", "csr", required=True, type=click.Path(dir_okay=False, path_type=Path))
@click.option("--cluster", required=True, help="the cluster you approve (must match the request)")
@click.option("--out", required=True, type=click.Path(file_okay=False, path_type=Path))
@click.option("--days", type=int, default=ca.CLUSTER_DAYS, show_default=True)
@click.option("--ip", "ips", multiple=True, metavar="IP", help="the agent's --addr (repeat)")
def sign(directory: Path, csr: Path, cluster: str, out: Path, days: int, ips: tuple[str, ...]) -> None:
    try:
        req, _ = ca.read_request(csr)
        entry = ca.sign(directory, csr_path=csr, cluster=cluster, out=out, days=days, ips=ips)
    except (TrustError, OSError) as exc:
        raise _fail(exc) from exc
    click.echo(f"signed {cluster} (key sha256:{req.fingerprint}): serial {entry.serial:x}, valid until "
               f"{entry.not_after}; {out / ca.OUT_CERT} and {out / ca.OUT_CA} go to the cluster's host")


@ca_group.command("install", help="On the cluster's host: put the signed certificate beside the pending key "
                                  "(OUT/cluster.key, OUT/cluster.pem); a running agent reloads them.")
@click.option("--cert", "cert", required=True, type=click.Path(dir_okay=False, path_type=Path))
@click.option("--out", required=True, type=click.Path(file_okay=False, path_type=Path))
def install(cert: Path, out: Path) -> None:
    try:
        path = ca.install(cert=cert, out=out)
    except (TrustError, OSError) as exc:
        raise _fail(exc) from exc
    click.echo(f"installed {path} with {out / ca.OUT_KEY}")


@ca_group.command("token", help="At the CA: a one-time join token for CLUSTER (valid --ttl seconds), to enrol "
                                "at the agent that keeps this CA (roam agent --ca-dir) with `roam ca enrol`.")
@DIR
@click.option("--cluster", required=True)
@click.option("--ttl", type=float, default=600.0, show_default=True, help="seconds the token is valid")
def token(directory: Path, cluster: str, ttl: float) -> None:
    from peer.trust import enrol

    try:
        click.echo(enrol.make_token(directory, cluster=cluster, ttl=ttl))
    except (TrustError, OSError) as exc:
        raise _fail(exc) from exc


@ca_group.command("enrol", help="On a new cluster's host: a key that never leaves it, and its certificate from "
                                "the agent keeping the CA, for a one-time join token. Writes OUT/ca.pem, "
                                "cluster.key (0600) and cluster.pem: the agent's --ca-cert, --cert, --key.")
@click.option("--api", required=True, metavar="URL", help="the CA-keeping agent, https://ADDR:PORT")
@click.option("--token", "join_token", required=True, help="from `roam ca token`")
@click.option("--out", required=True, type=click.Path(file_okay=False, path_type=Path))
@click.option("--ip", "ips", multiple=True, metavar="IP", help="this agent's --addr (repeat)")
@click.option("--timeout", type=float, default=30.0, show_default=True)
def enrol_command(api: str, join_token: str, out: Path, ips: tuple[str, ...], timeout: float) -> None:
    from peer.trust import enrol

    try:
        cluster, _, expected = enrol.parse_token(join_token)
        base = api.rstrip("/")
        if not base.startswith("https://"):
            raise TrustError("--api: the CA-keeping agent is reached over https only")
        unverified = ssl.create_default_context()
        unverified.check_hostname, unverified.verify_mode = False, ssl.CERT_NONE  # checked by fingerprint below
        ca_pem = str(_post(base + "/v1/trust/ca", None, unverified, timeout)["ca"]).encode("ascii")
        if enrol.fingerprint(ca_pem) != expected:
            raise TrustError(f"--api: {base} serves a CA whose SHA-256 is not the token's: not enrolling there")
        out.mkdir(parents=True, exist_ok=True)
        ca.write_file(out / ca.OUT_CA, ca_pem, mode=0o644)
        csr = ca.request(cluster=cluster, out=out).read_text(encoding="ascii")
        verified = ssl.create_default_context(cadata=ca_pem.decode("ascii"))
        reply = _post(base + "/v1/trust/enrol", {"token": join_token.strip(), "csr": csr, "ip": list(ips)},
                      verified, timeout)
        path = ca.install_pem(str(reply["cert"]).encode("ascii"), out=out)
    except (TrustError, OSError, ValueError, KeyError) as exc:
        raise _fail(exc) from exc
    click.echo(f"enrolled {cluster}: {path}; agent flags: --ca-cert {out / ca.OUT_CA} --cert {path} "
               f"--key {out / ca.OUT_KEY}")


def _post(url: str, body: Any, context: ssl.SSLContext, timeout: float) -> Any:
    """GET (body None) or POST JSON; the answer as JSON, an error as one TrustError line."""
    import json
    import urllib.error
    import urllib.request

    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method="GET" if body is None else "POST",
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout, context=context) as resp:
            return json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        try:
            detail = json.loads(exc.read()).get("error", "")
        except ValueError:
            detail = ""
        raise TrustError(f"{url}: {exc.code} {detail}".rstrip()) from exc
    except urllib.error.URLError as exc:
        raise TrustError(f"cannot reach {url}: {exc.reason}") from exc


@ca_group.command("list", help="Every certificate issued, with its serial, expiry and revocation.")
@DIR
def list_issued(directory: Path) -> None:
    try:
        issued = ca.load_index(directory)
    except (TrustError, OSError) as exc:
        raise _fail(exc) from exc
    click.echo(f"{'CLUSTER':<20} {'SERIAL':<42} {'NOT AFTER':<34} REVOKED")
    for i in issued:
        click.echo(f"{i.cluster:<20} {i.serial:<42x} {i.not_after:<34} {i.revoked_at or '-'}")


@ca_group.command("revoke", help="Revoke every certificate of CLUSTER: writes DIR/crl.pem with the next number. "
                                 "--push hands it to an agent, which spreads it to every member.")
@DIR
@click.option("--cluster", required=True)
@click.option("--push", is_flag=True, help="also push the list to the agent (as `roam ca push`)")
@click.option("--ca-cert", "ca_cert", type=click.Path(dir_okay=False, path_type=Path),
              help="trust this CA for an https agent address (default DIR/ca.pem)")
@client_options
def revoke(client: Client, output: str, directory: Path, cluster: str, push: bool, ca_cert: Path | None) -> None:
    try:
        number, newly = ca.revoke(directory, cluster=cluster)
    except (TrustError, OSError) as exc:
        raise _fail(exc) from exc
    serials = ", ".join(f"{i.serial:x}" for i in newly) or "none new"
    click.echo(f"revoked {cluster} (serials {serials}): {directory / ca.CRL} is list #{number}")
    if push:
        _push(client, directory, ca_cert)


@ca_group.command("push", help="Hand DIR/crl.pem to an agent: it applies it and pushes it to every live member.")
@DIR
@click.option("--ca-cert", "ca_cert", type=click.Path(dir_okay=False, path_type=Path),
              help="trust this CA for an https agent address (default DIR/ca.pem)")
@client_options
def push(client: Client, output: str, directory: Path, ca_cert: Path | None) -> None:
    _push(client, directory, ca_cert)


def _push(client: Client, directory: Path, ca_cert: Path | None) -> None:
    try:
        pem = (directory / ca.CRL).read_text(encoding="ascii")
    except OSError as exc:
        raise _fail(exc) from exc
    if client.api.startswith("https://"):
        client.ssl_context = ssl.create_default_context(cafile=str(ca_cert or directory / ca.CA_CERT))
    reply: Any = client.call("POST", "/v1/trust/crl", {"crl": pem})
    pushed = ", ".join(reply.get("pushed", [])) or "no member"
    click.echo(f"list #{reply.get('number')} {reply.get('outcome')} at {client.api}; pushed to {pushed}")
