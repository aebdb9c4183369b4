"""host:port written and read one way (lb.hostport): a round trip for IPv4 and IPv6 hosts."""
from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given
from hypothesis import strategies as st

from lb.hostport import bracket, join_hostport, split_hostport

ips = st.one_of(st.ip_addresses(v=4), st.ip_addresses(v=6)).map(str)
ports = st.integers(min_value=1, max_value=65535)


@given(ips, ports)
def test_join_then_split_gives_back_host_and_port(host: str, port: int) -> None:
    text = join_hostport(host, port)
    assert split_hostport(text) == (host, port)
    assert text.startswith("[") == (ipaddress.ip_address(host).version == 6)


def test_examples() -> None:
    assert join_hostport("::1", 80) == "[::1]:80"
    assert join_hostport("10.0.0.1", 8080) == "10.0.0.1:8080"
    assert bracket("10.0.0.1") == "10.0.0.1"
    assert split_hostport("[fe80::1]:443") == ("fe80::1", 443)
    assert split_hostport("") == ("", 0)  # HAProxy's state dump for a server with no address


def test_a_port_that_is_not_a_number_raises() -> None:
    with pytest.raises(ValueError):
        split_hostport("10.0.0.1:http")
