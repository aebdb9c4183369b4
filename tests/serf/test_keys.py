"""Keys derived from the federation secret."""
from __future__ import annotations

import base64
import re

import pytest

from peer.serf.keys import derive_encrypt_key, derive_rpc_auth


def test_encrypt_key_is_base64_of_32_bytes_and_deterministic() -> None:
    key = derive_encrypt_key(b"federation secret")
    assert len(base64.b64decode(key, validate=True)) == 32
    assert key == derive_encrypt_key(b"federation secret")
    assert key != derive_encrypt_key(b"another secret")


def test_rpc_auth_differs_from_gossip_key() -> None:
    token = derive_rpc_auth(b"federation secret")
    assert re.fullmatch(r"[0-9a-f]{64}", token)
    assert base64.b64decode(derive_encrypt_key(b"federation secret")).hex() != token


def test_empty_secret_is_refused() -> None:
    with pytest.raises(ValueError):
        derive_encrypt_key(b"")
    with pytest.raises(ValueError):
        derive_rpc_auth(b"")
