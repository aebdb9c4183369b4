"""Key rotation logic against an in-memory keyring that behaves like Serf's (primary key, a key
can be removed only when it is not the primary, every command reaches every alive member)."""
from __future__ import annotations

import base64

import pytest

from peer.federation.keyrotation import RotationFailed, RotationRefused, fingerprint, keyring_view, new_key, rotate
from peer.serf.codec import KeyResponse, Member
from peer.serf.errors import SerfCommandError


class FakeKeyring:
    def __init__(self, key: str, *, members: dict[str, str] | None = None) -> None:
        self.keys = [key]  # keys[0] is the primary
        self.status = members or {"a": "alive", "b": "alive", "c": "alive"}
        self.calls: list[tuple[str, str]] = []
        self.fail: dict[str, int] = {}  # command -> members that report an error

    def _ok(self, command: str) -> KeyResponse:
        n = sum(1 for s in self.status.values() if s == "alive")
        err = self.fail.get(command, 0)
        return KeyResponse(messages={"b": "boom"} if err else {}, keys={k: n for k in self.keys},
                           num_nodes=n, num_err=err, num_resp=n)

    async def members(self) -> list[Member]:
        return [Member(name=n, addr="127.0.0.1", port=7946, tags={}, status=s) for n, s in self.status.items()]

    async def install_key(self, key: str) -> KeyResponse:
        self.calls.append(("install", key))
        if key not in self.keys:
            self.keys.append(key)
        return self._ok("install")

    async def use_key(self, key: str) -> KeyResponse:
        self.calls.append(("use", key))
        if key not in self.keys:
            raise SerfCommandError("use-key", "key not installed")
        self.keys.remove(key)
        self.keys.insert(0, key)
        return self._ok("use")

    async def remove_key(self, key: str) -> KeyResponse:
        self.calls.append(("remove", key))
        if key == self.keys[0]:
            raise SerfCommandError("remove-key", "Removing the primary key is not allowed")
        self.keys.remove(key)
        return self._ok("remove")

    async def list_keys(self) -> KeyResponse:
        return self._ok("list")


OLD = base64.b64encode(b"o" * 32).decode()
NEW = base64.b64encode(b"n" * 32).decode()


def test_new_keys_are_random_32_byte_serf_keys_and_fingerprints_hide_them() -> None:
    keys = {new_key() for _ in range(50)}
    assert len(keys) == 50 and all(len(base64.b64decode(k)) == 32 for k in keys)
    fp = fingerprint(OLD)
    assert fp.startswith("sha256:") and len(fp) == 23 and OLD not in fp and fp == fingerprint(OLD)
    view = keyring_view(KeyResponse(keys={OLD: 1, NEW: 3}, num_nodes=3, num_resp=3))
    assert [k["fingerprint"] for k in view["keys"]] == [fingerprint(NEW), fingerprint(OLD)]
    assert OLD not in str(view) and NEW not in str(view)


async def test_rotation_installs_uses_then_removes_every_other_key() -> None:
    ring = FakeKeyring(OLD)
    stale = "stale-key-from-an-earlier-cut-short-rotation"
    ring.keys.append(stale)
    rotation = await rotate(ring, key=NEW)
    assert ring.keys == [NEW]
    assert [c[0] for c in ring.calls] == ["install", "use", "remove", "remove"]
    assert rotation.new == fingerprint(NEW) and rotation.members == 3
    assert sorted(rotation.removed) == sorted([fingerprint(OLD), fingerprint(stale)])
    assert rotation.keyring["keys"] == [{"fingerprint": fingerprint(NEW), "members": 3}]


async def test_rotation_is_refused_while_a_member_is_failed_unless_forced() -> None:
    ring = FakeKeyring(OLD, members={"a": "alive", "b": "failed", "c": "left"})
    with pytest.raises(RotationRefused, match="b"):
        await rotate(ring, key=NEW)
    assert ring.calls == [] and ring.keys == [OLD]
    await rotate(ring, key=NEW, force=True)  # "left" members never block; forced past "failed"
    assert ring.keys == [NEW]


@pytest.mark.parametrize("stage", ["install", "use", "remove"])
async def test_a_partial_failure_stops_with_the_old_key_still_usable(stage: str) -> None:
    ring = FakeKeyring(OLD)
    ring.fail[stage] = 1
    with pytest.raises(RotationFailed) as info:
        await rotate(ring, key=NEW)
    assert info.value.stage == stage and "b: boom" in str(info.value)
    # Members still share a key: the old one until `use` went through, the new primary after.
    assert (OLD in ring.keys) if stage != "remove" else (ring.keys[0] == NEW)
    ring.fail.clear()
    await rotate(ring, key=NEW)  # idempotent: a second run completes
    assert ring.keys == [NEW]
