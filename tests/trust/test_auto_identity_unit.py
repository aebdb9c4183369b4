"""Automatic identity without agents: the flags, the tags, the CA's first-come-first-served rule,
the answer's HMAC, the files a founder and a restarted agent keep (peer.trust.auto)."""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import msgpack
import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from hypothesis import given
from hypothesis import strategies as st

from peer.config import ConfigError, build_config
from peer.federation.tags import TAG_LIMIT, Load, SelfTags, decode_tags
from peer.trust import auto, ca
from peer.trust.certs import cluster_of, load_cert


def args(**kw: Any) -> argparse.Namespace:
    base: dict[str, Any] = {"config": None, "name": "c1", "addr": "127.0.0.1", "join": [], "accept_from": [],
                            "allow_command": [], "allow_image": []}
    return argparse.Namespace(**{**base, **kw})


def test_automatic_identity_is_the_default_and_has_its_own_port(tmp_path: Path) -> None:
    config = build_config(args())  # DESIGN: mTLS between peers by default
    assert config.auto_identity and config.peer_listen_port == 7071 and config.api_url == "http://127.0.0.1:7070"
    assert config.ca_keepers == 3
    assert build_config(args(api_port=8000)).peer_listen_port == 8001
    assert build_config(args(peer_tls=True, peer_port=9443)).peer_listen_port == 9443
    assert not build_config(args(no_peer_tls=True)).auto_identity
    toml = tmp_path / "agent.toml"
    toml.write_text("peer_tls = false\nca_keepers = 1\n")
    assert not build_config(args(config=str(toml))).auto_identity
    assert build_config(args(config=str(toml), peer_tls=True)).auto_identity
    assert build_config(args(config=str(toml))).ca_keepers == 1
    toml.write_text("peer_tls = 1\n")
    with pytest.raises(ConfigError, match="peer_tls: expected true or false"):
        build_config(args(config=str(toml)))


def test_the_default_peer_port_steps_over_the_agents_other_ports() -> None:
    """The contract lets --gossip-port follow --api-port: the default peer port moves on
    (peers read it from the `pp` tag) instead of refusing to start."""
    assert build_config(args(api_port=8000, gossip_port=8001)).peer_listen_port == 8002
    assert build_config(args(api_port=8000, gossip_port=8001, rpc_port=8002)).peer_listen_port == 8003
    assert build_config(args(api_port=29999, lb_ports="30000-30999")).peer_listen_port == 32000  # lb, then services


@pytest.mark.parametrize(("kw", "message"), [
    ({"peer_port": 7070}, "--peer-port: 7070 is also --api-port"),
    ({"peer_port": 7946}, "--peer-port: 7946 is also --gossip-port"),
    ({"api_port": 65535}, "--peer-port: --api-port 65535 leaves no port above it"),
    ({"peer_port": 0}, "--peer-port: expected a port number"),
    ({"ca_keepers": 0}, "--ca-keepers: expected a whole number from 1 to 9"),
])
def test_bad_peer_ports_are_one_line(kw: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        build_config(args(peer_tls=True, **kw))


def test_tags_carry_the_peer_port_and_the_ca_keeper_compactly() -> None:
    load = Load(cpu_capacity=64.0, cpu_used=63.99, mem_capacity=1 << 20, mem_used=1 << 19, slots_capacity=999,
                slots_used=998)
    tags = SelfTags(tier="deep-edge-zone-1", api_port=7070, load=load, peer_port=7071, ca=True,
                    accepts=frozenset({"c1", "c2"})).encode()
    assert tags["pp"] == "7071" and tags["ca"] == "1"
    assert len(msgpack.packb(tags)) < TAG_LIMIT
    read = decode_tags(tags)
    assert read.peer_port == 7071 and read.ca
    plain = decode_tags(SelfTags(tier="t", api_port=7070, load=load).encode())
    assert plain.peer_port is None and not plain.ca
    assert decode_tags({"pp": "70000"}).peer_port is None and decode_tags({"pp": "x"}).peer_port is None


@pytest.mark.parametrize(("target", "url"), [
    ("10.0.0.1", "http://10.0.0.1:7070"), ("10.0.0.1:7946", "http://10.0.0.1:7070"),
    ("[::1]:7946", "http://[::1]:7070"), ("fe80::1", "http://[fe80::1]:7070"),
])
def test_a_join_target_is_asked_on_our_own_api_port(target: str, url: str) -> None:
    assert auto.join_url(target, 7070) == url


def csr(name: str, key: ec.EllipticCurvePrivateKey | None = None) -> tuple[bytes, ec.EllipticCurvePrivateKey]:
    key = key or ec.generate_private_key(ec.SECP256R1())
    return auto._csr(key, name), key


def test_names_are_first_come_first_served(tmp_path: Path) -> None:
    ca.init(tmp_path / "ca")
    first, first_key = csr("c2")
    cert, _ = auto.sign_join(tmp_path / "ca", cluster="c2", csr_pem=first, ips=("10.0.0.2",), held=lambda n: True)
    assert cluster_of(load_cert(cert, what="c2")) == "c2"
    again, _ = csr("c2", first_key)  # the holder's own key: a lost answer, asked again
    auto.sign_join(tmp_path / "ca", cluster="c2", csr_pem=again, ips=(), held=lambda n: True)
    other, _ = csr("c2")
    with pytest.raises(auto.JoinRefused) as refused:  # another key while c2 is alive
        auto.sign_join(tmp_path / "ca", cluster="c2", csr_pem=other, ips=(), held=lambda n: n == "c2")
    assert refused.value.status == 409 and str(refused.value).startswith("name: c2 is held by a live member")
    # The old holder failed or left (a site rebuilt on an empty data dir): the name is free again.
    auto.sign_join(tmp_path / "ca", cluster="c2", csr_pem=other, ips=(), held=lambda n: False)
    with pytest.raises(auto.JoinRefused) as mismatch:  # a CSR naming another cluster than its sender
        auto.sign_join(tmp_path / "ca", cluster="c3", csr_pem=other, ips=(), held=lambda n: False)
    assert mismatch.value.status == 403


def test_a_revoked_name_gets_no_certificate(tmp_path: Path) -> None:
    ca.init(tmp_path / "ca")
    first, _ = csr("c3")
    auto.sign_join(tmp_path / "ca", cluster="c3", csr_pem=first, ips=(), held=lambda n: False)
    ca.revoke(tmp_path / "ca", cluster="c3")
    with pytest.raises(auto.JoinRefused) as refused:
        auto.sign_join(tmp_path / "ca", cluster="c3", csr_pem=csr("c3")[0], ips=(), held=lambda n: False)
    assert refused.value.status == 403 and "revoked" in str(refused.value)


@given(st.binary(max_size=64), st.binary(max_size=64), st.binary(max_size=64), st.integers(0, 2), st.binary(
    min_size=1, max_size=8))
def test_the_answer_mac_binds_request_certificate_and_ca(csr_pem: bytes, cert: bytes, ca_pem: bytes, which: int,
                                                         extra: bytes) -> None:
    secret = b"s" * 32
    mac = auto.reply_mac(secret, csr=csr_pem, cert=cert, ca_pem=ca_pem)
    parts = [csr_pem, cert, ca_pem]
    parts[which] = parts[which] + extra
    assert auto.reply_mac(secret, csr=parts[0], cert=parts[1], ca_pem=parts[2]) != mac
    assert auto.reply_mac(b"t" * 32, csr=csr_pem, cert=cert, ca_pem=ca_pem) != mac


def test_a_founder_makes_the_ca_and_a_restart_keeps_everything(tmp_path: Path) -> None:
    assert auto.local_identity(name="c2", addr="10.0.0.2", data_dir=tmp_path / "joiner", may_found=False) is None
    files = auto.local_identity(name="c1", addr="10.0.0.1", data_dir=tmp_path / "c1", may_found=True)
    assert files is not None and files.ca_dir == tmp_path / "c1" / "ca"
    assert (files.ca_dir / ca.CA_KEY).stat().st_mode & 0o777 == 0o600 and files.key.stat().st_mode & 0o777 == 0o600
    kept = (files.cert.read_bytes(), files.key.read_bytes(), (files.ca_dir / ca.CA_KEY).read_bytes())
    again = auto.local_identity(name="c1", addr="10.0.0.1", data_dir=tmp_path / "c1", may_found=False)
    assert again == files
    assert (files.cert.read_bytes(), files.key.read_bytes(), (files.ca_dir / ca.CA_KEY).read_bytes()) == kept
    files.cert.unlink()  # the keeper lost its certificate: it issues itself a new one, same key, same CA
    auto.local_identity(name="c1", addr="10.0.0.1", data_dir=tmp_path / "c1", may_found=False)
    assert files.key.read_bytes() == kept[1] and cluster_of(load_cert(files.cert.read_bytes(), what="c1")) == "c1"


def test_an_enrolled_agent_never_founds_a_second_ca(tmp_path: Path) -> None:
    keeper = auto.local_identity(name="c1", addr="10.0.0.1", data_dir=tmp_path / "c1", may_found=True)
    assert keeper is not None
    joiner = auto.files_of(tmp_path / "c2")
    joiner.cert.parent.mkdir(parents=True)
    joiner.ca_cert.write_bytes(keeper.ca_cert.read_bytes())  # enrolled once; its certificate is gone
    assert auto.local_identity(name="c2", addr="10.0.0.2", data_dir=tmp_path / "c2", may_found=True) is None
    assert not (tmp_path / "c2" / "ca").exists()


async def test_no_identity_and_nobody_to_ask_is_one_line(tmp_path: Path) -> None:
    import asyncio

    with pytest.raises(auto.EnrolmentError, match="no --join to enrol at"):
        await auto.Enrolment(name="c2", addr="10.0.0.2", data_dir=tmp_path, join=(), api_port=7070,
                             secret=b"s" * 32, stop=asyncio.Event()).run()


async def test_peers_it_knew_that_reach_no_ca_let_an_agent_without_join_found_one(tmp_path: Path) -> None:
    """A whole federation upgraded to identity at once: each agent knows its peers, none holds a
    CA and each waits for the others. Without --join, an agent gives up on them (nothing there
    answers, 127.0.103.1:7070 here) after the time given and may found; with --join it never does."""
    import asyncio

    enrolment = auto.Enrolment(name="c1", addr="127.0.103.2", data_dir=tmp_path, join=("127.0.103.1",),
                               api_port=7070, secret=b"s" * 32, stop=asyncio.Event())
    assert await enrolment.run(give_up_after=0.3) is None
    assert not auto.files_of(tmp_path).cert.exists()
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(enrolment.run(), timeout=1.0)  # no give-up: it keeps asking


def test_the_ca_id_tag_is_gossiped_and_read_back() -> None:
    load = Load(cpu_capacity=1.0, cpu_used=0.0, mem_capacity=1, mem_used=0, slots_capacity=1, slots_used=0)
    tags = SelfTags(tier="t", api_port=7070, load=load, peer_port=7071, ca=True, ca_id="65a1b2c3.0f1e2d3c").encode()
    assert tags["cid"] == "65a1b2c3.0f1e2d3c" and decode_tags(tags).ca_id == "65a1b2c3.0f1e2d3c"
    assert decode_tags({}).ca_id is None
