"""Rotation of Serf's gossip encryption key across the federation, and the keyring as shown.

The first key is derived from the federation secret (peer/serf/keys.py); rotation replaces it
with a random one through Serf's keyring commands, which Serf itself fans out to every alive
member: install the new key everywhere, make it the primary everywhere, then remove every
other key. Each step is safe to repeat, so a rotation cut short is finished by running it
again. Serf persists the keyring in each member's keyring file, so restarts keep the new key.

What the API shows is a fingerprint of each key, never the key.
"""
from __future__ import annotations

import base64
import hashlib
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from peer.errors import RoamError
from peer.serf.client import SerfClient
from peer.serf.codec import KeyResponse, Member
from peer.serf.errors import SerfRPCError
from peer.serf.keys import derive_rpc_auth

KEY_BYTES = 32  # AES-256


class KeyRotationError(RoamError):
    """A rotation could not be done (or finished); the message says how far it got."""


class RotationRefused(KeyRotationError):
    """Refused before any change: rotating now would lock a member out of the federation."""


class RotationFailed(KeyRotationError):
    """A keyring command failed; the federation still shares a key (see `stage`)."""

    def __init__(self, message: str, *, stage: str) -> None:
        super().__init__(message)
        self.stage = stage


class KeyringClient(Protocol):
    """The part of `SerfClient` rotation needs (a fake implements it in unit tests)."""

    async def members(self) -> list[Member]: ...

    async def install_key(self, key: str) -> KeyResponse: ...

    async def use_key(self, key: str) -> KeyResponse: ...

    async def remove_key(self, key: str) -> KeyResponse: ...

    async def list_keys(self) -> KeyResponse: ...


@dataclass(frozen=True)
class Rotation:
    """What a rotation did: fingerprints only."""

    new: str
    removed: tuple[str, ...]
    members: int
    keyring: dict[str, Any] = field(default_factory=dict)

    def as_api(self) -> dict[str, Any]:
        return {"new": self.new, "removed": list(self.removed), "members": self.members, "keyring": self.keyring}


def new_key() -> str:
    """A fresh random Serf key: base64 of 32 bytes."""
    return base64.b64encode(secrets.token_bytes(KEY_BYTES)).decode("ascii")


def fingerprint(key: str) -> str:
    """A short, stable name for a key that reveals nothing usable about it."""
    return "sha256:" + hashlib.sha256(key.encode("ascii", "replace")).hexdigest()[:16]


def keyring_view(response: KeyResponse) -> dict[str, Any]:
    """`GET /v1/keys`: each key by fingerprint with the number of members holding it."""
    ranked = sorted(response.keys.items(), key=lambda kv: (-kv[1], fingerprint(kv[0])))
    keys = [{"fingerprint": fingerprint(k), "members": n} for k, n in ranked]
    return {"keys": keys, "members": response.num_nodes, "responses": response.num_resp,
            "errors": response.num_err, "messages": dict(response.messages)}


def unreachable(members: list[Member]) -> list[str]:
    """Members that would miss the new key: failed ones (not those that left on purpose)."""
    return sorted(m.name for m in members if m.status not in ("alive", "left"))


async def rotate(client: KeyringClient, *, key: str | None = None, force: bool = False) -> Rotation:
    """Install, use and clean up a new primary key federation-wide (see the module docstring)."""
    members = await client.members()
    missing = unreachable(members)
    if missing and not force:
        raise RotationRefused(
            f"members {', '.join(missing)} are not alive and would be locked out by a new key; "
            "heal them first, or force and then copy the keyring file to them"
        )
    fresh = key if key is not None else new_key()
    before = await _step(client.list_keys(), stage="list")
    await _step(client.install_key(fresh), stage="install")
    await _step(client.use_key(fresh), stage="use")
    removed = []
    for old in sorted(set(before.keys) - {fresh}):
        await _step(client.remove_key(old), stage="remove")
        removed.append(fingerprint(old))
    after = await _step(client.list_keys(), stage="verify")
    return Rotation(new=fingerprint(fresh), removed=tuple(removed), members=after.num_nodes,
                    keyring=keyring_view(after))


async def _step(call: Any, *, stage: str) -> KeyResponse:
    try:
        response: KeyResponse = await call
    except SerfRPCError as exc:
        raise RotationFailed(f"key rotation failed at {stage}: {exc}", stage=stage) from exc
    if response.num_err:
        raise RotationFailed(f"key rotation failed at {stage} on {response.num_err} member(s): "
                             f"{_messages(response.messages)}", stage=stage)
    return response


def _messages(messages: Mapping[str, str]) -> str:
    return "; ".join(f"{node}: {text}" for node, text in sorted(messages.items())) or "(no detail)"


async def connect(*, addr: str, rpc_port: int, secret: bytes, timeout: float = 10.0) -> SerfClient:
    """A fresh RPC connection to this agent's own Serf (the gossip loop keeps its own)."""
    return await SerfClient.connect(addr, rpc_port, auth_key=derive_rpc_auth(secret), timeout=timeout)
