"""The admin token and the federation secret: read from 0600 files, or generated there once.

A world- or group-readable secret is refused rather than silently used: whoever can read it
can command the agent (token) or join and steer the federation (secret).
"""
from __future__ import annotations

import os
import secrets
import stat
from dataclasses import dataclass
from pathlib import Path

from peer.errors import InvalidKind


class CredentialError(InvalidKind, ValueError):
    """A token or secret file is unusable; the message names the file."""


@dataclass(frozen=True)
class Credentials:
    admin_token: str
    federation_secret: bytes
    token_path: Path
    secret_path: Path
    generated: tuple[Path, ...]
    reader_token: str | None = None  # may only read (peer.api.http roles)


def read_private_file(path: Path, *, what: str) -> str:
    try:
        st = path.stat()
    except FileNotFoundError as exc:
        raise CredentialError(f"{what}: {path} does not exist") from exc
    if not stat.S_ISREG(st.st_mode):
        raise CredentialError(f"{what}: {path} is not a regular file")
    if st.st_mode & 0o077:
        raise CredentialError(
            f"{what}: {path} is readable by group or others (mode {stat.S_IMODE(st.st_mode):04o}); chmod 600 it"
        )
    try:
        value = path.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise CredentialError(f"{what}: cannot read {path}: {exc}") from exc
    if len(value) < 16:
        raise CredentialError(f"{what}: {path} holds fewer than 16 characters")
    return value


def write_private_file(path: Path, value: str) -> None:
    """Create with 0600 from the start (never a window where the file is readable by others)."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(value + "\n")
        fh.flush()
        os.fsync(fh.fileno())


def _load_or_generate(path: Path, *, what: str, generated: list[Path]) -> str:
    if path.exists():
        return read_private_file(path, what=what)
    write_private_file(path, secrets.token_urlsafe(32))
    generated.append(path)
    return read_private_file(path, what=what)


def load_credentials(*, data_dir: Path, token_file: Path | None, secret_file: Path | None,
                     reader_token_file: Path | None = None) -> Credentials:
    generated: list[Path] = []
    # The reader token is never generated: a read-only role exists only when the operator asks.
    reader = read_private_file(reader_token_file, what="--reader-token-file") if reader_token_file else None
    token_path = token_file or data_dir / "admin.token"
    secret_path = secret_file or data_dir / "federation.secret"
    # Check every file that exists before generating any: a bad secret must not leave a new token behind.
    for path, what in ((token_path, "--token-file"), (secret_path, "--secret-file")):
        if path.exists() or path.is_symlink():
            read_private_file(path, what=what)
    token = _load_or_generate(token_path, what="--token-file", generated=generated)
    secret = _load_or_generate(secret_path, what="--secret-file", generated=generated)
    if reader is not None and reader == token:
        raise CredentialError(f"--reader-token-file: {reader_token_file} holds the operator token; "
                              "give the reader a token of its own")
    return Credentials(
        reader_token=reader,
        admin_token=token,
        federation_secret=secret.encode("utf-8"),
        token_path=token_path,
        secret_path=secret_path,
        generated=tuple(generated),
    )
