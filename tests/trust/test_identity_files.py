"""The CA's files and an agent's Identity without a network: what is accepted and what is refused."""
from __future__ import annotations

import asyncio
import datetime as dt
import shutil
from pathlib import Path

import pytest
from cryptography import x509
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from peer.trust import ca
from peer.trust.certs import TrustError, cluster_of, load_crl, not_after
from peer.trust.identity import Identity, IdentityError


@pytest.fixture()
def fed(tmp_path: Path) -> Path:
    ca.init(tmp_path / "ca")
    for name in ("c1", "c2"):
        ca.issue(tmp_path / "ca", cluster=name, out=tmp_path / name)
        (tmp_path / f"data-{name}").mkdir(mode=0o700)
    return tmp_path


def identity(base: Path, name: str, *, files: str | None = None) -> Identity:
    d = base / (files or name)
    return Identity(name=name, ca_cert=d / "ca.pem", cert=d / "cluster.pem", key=d / "cluster.key",
                    data_dir=base / f"data-{name}")


def test_the_ca_key_is_private_and_a_certificate_names_its_cluster(fed: Path) -> None:
    assert (fed / "ca" / "ca.key").stat().st_mode & 0o777 == 0o600
    assert (fed / "c1" / "cluster.key").stat().st_mode & 0o777 == 0o600
    cert = x509.load_pem_x509_certificate((fed / "c1" / "cluster.pem").read_bytes())
    assert cluster_of(cert) == "c1"
    assert not_after(cert) - dt.datetime.now(dt.timezone.utc) < dt.timedelta(days=ca.CLUSTER_DAYS + 1)
    with pytest.raises(ca.CAError, match="exists already"):
        ca.init(fed / "ca")


def test_an_agent_refuses_a_certificate_of_another_cluster_or_ca_or_a_foreign_key(fed: Path) -> None:
    assert identity(fed, "c1").current.cluster == "c1"
    with pytest.raises(IdentityError, match="names cluster 'c2', this agent is 'c1'"):
        identity(fed, "c1", files="c2")
    shutil.copy(fed / "c2" / "cluster.key", fed / "c1" / "cluster.key")
    with pytest.raises(IdentityError, match="--key: .* does not match --cert"):
        identity(fed, "c1")
    ca.init(fed / "other")
    ca.issue(fed / "other", cluster="c2", out=fed / "forged")
    shutil.copy(fed / "c2" / "ca.pem", fed / "forged" / "ca.pem")
    with pytest.raises(IdentityError, match="not issued by the federation CA"):
        identity(fed, "c2", files="forged")


def test_rotation_reloads_a_new_pair_and_keeps_the_old_one_when_the_new_is_broken(fed: Path) -> None:
    me = identity(fed, "c1")
    first = me.current.serial
    ca.issue(fed / "ca", cluster="c1", out=fed / "c1")
    assert me.reload(why="test") and me.current.serial != first
    second = me.current.serial
    (fed / "c1" / "cluster.key").write_bytes((fed / "c2" / "cluster.key").read_bytes())  # half a rotation
    assert not me.reload(why="test") and me.current.serial == second


def test_a_revocation_list_is_taken_only_from_the_ca_and_only_when_newer(fed: Path) -> None:
    me = identity(fed, "c1")
    number, revoked = ca.revoke(fed / "ca", cluster="c2")
    pem = (fed / "ca" / "crl.pem").read_bytes()
    assert me.apply_crl(pem, source="test") == "applied" and number == 1
    assert me.revocations.revoked(revoked[0].serial)
    assert me.apply_crl(pem, source="test") == "same"
    old = load_crl(pem, ca=me.ca)
    ca.revoke(fed / "ca", cluster="c2")  # list #2
    assert me.apply_crl((fed / "ca" / "crl.pem").read_bytes(), source="test") == "applied"
    assert me.apply_crl(old.pem, source="test") == "older" and me.revocations.number == 2
    ca.init(fed / "rogue")
    ca.issue(fed / "rogue", cluster="c1", out=fed / "rogue-c1")
    for _ in range(3):
        ca.revoke(fed / "rogue", cluster="c1")  # #3, higher than ours, but not our CA's
    with pytest.raises(TrustError, match="not by the federation CA|not the federation CA"):
        me.apply_crl((fed / "rogue" / "crl.pem").read_bytes(), source="test")
    # Kept across a restart of the agent.
    assert identity(fed, "c1").revocations.number == 2
    with pytest.raises(ca.CAError, match="revoked at this CA"):
        ca.issue(fed / "ca", cluster="c2", out=fed / "c2")


@pytest.fixture(scope="module")
def lists(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[bytes]]:
    base = tmp_path_factory.mktemp("lists")
    ca.init(base / "ca")
    ca.issue(base / "ca", cluster="c1", out=base / "c1")
    pems = []
    for i in range(5):
        ca.issue(base / "ca", cluster=f"gone{i}", out=base / f"gone{i}")
        ca.revoke(base / "ca", cluster=f"gone{i}")
        pems.append((base / "ca" / "crl.pem").read_bytes())
    return base, pems


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(order=st.lists(st.integers(min_value=0, max_value=4), min_size=1, max_size=12))
def test_whatever_order_lists_arrive_in_the_highest_number_wins(lists: tuple[Path, list[bytes]],
                                                                 order: list[int]) -> None:
    base, pems = lists
    data = base / "data-c1"
    shutil.rmtree(data, ignore_errors=True)
    data.mkdir(mode=0o700)
    me = identity(base, "c1")
    for i in order:
        me.apply_crl(pems[i], source="test")
    assert me.revocations.number == max(order) + 1
    assert len(me.revocations.serials) == max(order) + 1  # list #n revokes gone0..gone(n-1)


def test_a_request_keeps_the_key_on_its_host_and_the_operator_signs_what_it_names(fed: Path) -> None:
    csr = ca.request(cluster="c3", out=fed / "c3")
    assert not (fed / "c3" / "cluster.key").exists()  # pending until its certificate is installed
    with pytest.raises(ca.CAError, match="the request names 'c3', not 'c2'"):
        ca.sign(fed / "ca", csr_path=csr, cluster="c2", out=fed / "signed")
    entry = ca.sign(fed / "ca", csr_path=csr, cluster="c3", out=fed / "signed")
    assert entry.cluster == "c3" and any(i.serial == entry.serial for i in ca.load_index(fed / "ca"))
    with pytest.raises(ca.CAError, match="not for the key pending"):
        ca.install(cert=fed / "c1" / "cluster.pem", out=fed / "c3")
    ca.install(cert=fed / "signed" / "cluster.pem", out=fed / "c3")
    shutil.copy(fed / "ca" / "ca.pem", fed / "c3" / "ca.pem")
    (fed / "data-c3").mkdir(mode=0o700)
    assert identity(fed, "c3").current.serial == entry.serial  # an agent takes the pair


def test_files_that_are_not_pem_are_one_line_naming_the_flag(fed: Path) -> None:
    me = identity(fed, "c1")
    (fed / "c1" / "cluster.pem").write_text("half a certificate")
    assert not me.reload(why="test")  # kept the old pair, said why once
    (fed / "c1" / "ca.pem").write_text("not a CA")
    with pytest.raises(IdentityError, match="--ca-cert .*: not a PEM certificate"):
        identity(fed, "c1")


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(junk=st.binary(max_size=600), cut=st.integers(min_value=0, max_value=400))
def test_any_bytes_as_a_revocation_list_are_a_trust_error_or_a_valid_list(lists: tuple[Path, list[bytes]],
                                                                         junk: bytes, cut: int) -> None:
    base, pems = lists
    ca_cert = x509.load_pem_x509_certificate((base / "ca" / "ca.pem").read_bytes())
    for candidate in (junk, pems[0][:cut] + junk, b"-----BEGIN X509 CRL-----\n" + junk + b"\n-----END X509 CRL-----\n"):
        try:
            load_crl(candidate, ca=ca_cert)
        except TrustError:
            pass


def test_a_list_signed_by_an_rsa_key_with_the_cas_name_is_refused(lists: tuple[Path, list[bytes]]) -> None:
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import rsa

    base, _ = lists
    ca_cert = x509.load_pem_x509_certificate((base / "ca" / "ca.pem").read_bytes())
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    now = dt.datetime.now(dt.timezone.utc)
    forged = (x509.CertificateRevocationListBuilder().issuer_name(ca_cert.subject).last_update(now)
              .next_update(now + dt.timedelta(days=1)).add_extension(x509.CRLNumber(99), critical=False)
              .sign(key, hashes.SHA256()))
    from cryptography.hazmat.primitives.serialization import Encoding

    with pytest.raises(TrustError):
        load_crl(forged.public_bytes(Encoding.PEM), ca=ca_cert)


@settings(max_examples=200, deadline=None)
@given(body=st.dictionaries(st.text(max_size=6), st.recursive(
    st.none() | st.integers(min_value=-(2**63), max_value=2**64 - 1) | st.text(max_size=8) | st.binary(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3)), max_size=6))
def test_the_sender_check_reads_from_as_a_full_decode_would(body: dict[str, object]) -> None:
    import msgpack

    from peer.trust.guard import senders

    packed = msgpack.packb(body, use_bin_type=True)
    assert senders(packed) == ([body["from"]] if "from" in body else [])
    assert senders(packed[: len(packed) // 2]) in ([], [body.get("from")])  # truncated: no crash


async def test_dropping_connections_closes_the_old_session_later_or_at_close() -> None:
    from peer.peering.client import PeerClient

    lasting, brief = "https://127.0.0.2:7071", "https://127.0.0.3:7071"
    client = PeerClient(b"secret", lasting=lambda url: url == lasting)
    first, first_brief = client._get_session(lasting), client._get_session(brief)
    assert first is not first_brief  # two pools: connections to peers without business close sooner
    client.drop_connections(grace=0.01)
    assert client._get_session(lasting) is not first and not first.closed  # calls in flight may finish
    assert client._get_session(brief) is not first_brief and not first_brief.closed
    retiring = [client._retired[first], client._retired[first_brief]]
    await asyncio.wait_for(asyncio.gather(*retiring), timeout=5)
    assert first.closed and first_brief.closed
    second = client._get_session(lasting)
    client.drop_connections(grace=60)
    await client.close()  # no session left open behind it
    assert second.closed and not client._retired


def test_status_warns_of_a_certificate_about_to_expire_or_revoked(fed: Path) -> None:
    assert identity(fed, "c1").warnings() == []
    ca.issue(fed / "ca", cluster="c1", out=fed / "c1", days=1)
    me = identity(fed, "c1")
    assert [w["kind"] for w in me.warnings()] == ["certificate-expiring"]
    assert "expires in 1.0 days" in me.warnings()[0]["message"]
    ca.revoke(fed / "ca", cluster="c1")
    me.apply_crl((fed / "ca" / "crl.pem").read_bytes(), source="test")
    assert [w["kind"] for w in me.warnings()] == ["certificate-expiring", "certificate-revoked"]
