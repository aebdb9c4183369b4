"""Serf keys derived from the federation secret, no I/O.

Every peer holds the same secret file; deriving Serf's gossip key and RPC token from it (with
distinct labels) means one secret to distribute, and neither derived key reveals the secret or
the other key.
"""
from __future__ import annotations

import base64
import hashlib
import hmac

ENCRYPT_LABEL = b"roam serf gossip v1"
RPC_AUTH_LABEL = b"roam serf rpc v1"


def derive_encrypt_key(secret: bytes) -> str:
    """Serf's `encrypt_key`: base64 of 32 bytes (AES-256), HMAC-SHA256(secret, label)."""
    return base64.b64encode(_derive(secret, ENCRYPT_LABEL)).decode("ascii")


def derive_rpc_auth(secret: bytes) -> str:
    """Serf's `rpc_auth` token: 64 hex characters, HMAC-SHA256(secret, another label)."""
    return _derive(secret, RPC_AUTH_LABEL).hex()


def _derive(secret: bytes, label: bytes) -> bytes:
    if not secret:
        raise ValueError("the federation secret is empty")
    return hmac.new(secret, label, hashlib.sha256).digest()
