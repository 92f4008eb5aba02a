"""Secrets the server must be able to read back, sealed under a master key.

SigV4 needs a key's secret on the server, so S3 secret access keys cannot be
stored as hashes. They are stored sealed: AES-256-GCM under the server's
master key, a random 96-bit nonce per record, and the version and access key
id as associated data, so a record moved to another key id does not open.
A sealed record is::

    0x01 | nonce (12) | ciphertext + tag (16)

The master key file holds 64 hexadecimal characters (or exactly 32 raw
bytes). It is generated on first start (0600), like the admin token, or
supplied by file (a Kubernetes Secret). Whoever reads it and the index can
read every S3 secret: keep it off the backups of the data directory.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

VERSION = 1
NONCE = 12
KEY_BYTES = 32


class MasterKeyError(ValueError):
    """The master key file is malformed or unreadable (the message names it)."""


class SealedSecretError(ValueError):
    """A sealed record failed authentication: tampered, another key id or another master key."""


class SecretBox:
    """Seals and opens secrets under one master key."""

    def __init__(self, key: bytes) -> None:
        if len(key) != KEY_BYTES:
            raise ValueError(f"the master key must be {KEY_BYTES} bytes")
        self._aead = AESGCM(key)

    @classmethod
    def from_file(cls, path: Path, create: bool = True) -> SecretBox:
        """The box of the key in ``path``; with ``create``, a new key is
        written there (0600, synced) when the file does not exist yet.
        Raises :class:`MasterKeyError`."""
        if create and not path.exists():
            _create(path)
        return cls(_read(path))

    def seal(self, access_key_id: str, secret: str) -> bytes:
        """The record to store for ``secret``; never contains it in the clear."""
        nonce = os.urandom(NONCE)
        return bytes([VERSION]) + nonce + self._aead.encrypt(nonce, secret.encode(), _aad(access_key_id))

    def open(self, access_key_id: str, record: bytes) -> str:
        """The secret sealed in ``record`` for ``access_key_id``.
        Raises :class:`SealedSecretError` if it does not authenticate."""
        if len(record) < 1 + NONCE + 16 or record[0] != VERSION:
            raise SealedSecretError(f"the sealed secret of {access_key_id} is malformed")
        try:
            plain = self._aead.decrypt(record[1:1 + NONCE], record[1 + NONCE:], _aad(access_key_id))
        except InvalidTag:
            raise SealedSecretError(f"the sealed secret of {access_key_id} does not authenticate") from None
        return plain.decode()


def _aad(access_key_id: str) -> bytes:
    return bytes([VERSION]) + access_key_id.encode()


def _create(path: Path) -> None:
    """Write a new random key. It is written whole to a temporary file and
    linked into place, so a reader never sees half a key and, of two
    processes starting at once, the first link wins."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.with_name(f".{path.name}.{secrets.token_hex(4)}")
    fd = os.open(temp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_hex(KEY_BYTES) + "\n")
            f.flush()
            os.fsync(f.fileno())
        os.link(temp, path)
    except FileExistsError:
        pass
    finally:
        temp.unlink()
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def _read(path: Path) -> bytes:
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise MasterKeyError(f"master key file {str(path)!r}: {e.strerror}") from None
    if len(raw) == KEY_BYTES:
        return raw
    try:
        key = bytes.fromhex(raw.decode("ascii").strip())
    except (UnicodeDecodeError, ValueError):
        key = b""
    if len(key) != KEY_BYTES:
        raise MasterKeyError(f"master key file {str(path)!r}: expected 64 hexadecimal characters or "
                             f"{KEY_BYTES} raw bytes, got {len(raw)} bytes")
    return key
