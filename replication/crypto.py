"""Envelope encryption for replicas: the provider sees neither names nor bodies.

A target's ``encryption_key_file`` holds the key-encryption key (KEK): either
exactly 32 raw bytes, or 64 hexadecimal characters (surrounding whitespace
ignored). Two independent subkeys are derived from it with HKDF-SHA256:

* the *wrap key* seals a fresh random data key (DEK) per stored body
  (AES-256-GCM), and the DEK seals the body (AES-256-GCM); a sealed body is::

      0x01 | wrap nonce (12) | wrapped DEK (32 + 16 tag) | nonce (12) | ciphertext + tag (16)

  Both seals take the body's storage name as associated data, so a provider
  cannot swap two bodies without the swap being detected. One random DEK per
  body keeps every (key, nonce) pair far below AES-GCM's random-nonce limit
  however many chunks a vault holds.
* the *name key* turns every name into ``HMAC-SHA256(name key, context)`` hex,
  so equal chunks in two vaults get unrelated names and nothing identifies a
  vault, an object key or a chunk id.

Streams (index checkpoints, possibly gigabytes) are sealed in frames of
:data:`FRAME` bytes, each frame sealed like a body with the name, the frame
number and a last-frame flag as associated data (truncation and reordering are
detected).
"""

from __future__ import annotations

import hashlib
import hmac
import os
import struct
from pathlib import Path
from typing import Iterable, Iterator

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

VERSION = 1
NONCE = 12
TAG = 16
OVERHEAD = 1 + NONCE + 32 + TAG + NONCE + TAG
FRAME = 8 << 20


class KeyFileError(ValueError):
    """The key file is missing or malformed (the message names the file)."""


class SealError(ValueError):
    """A sealed body failed authentication: wrong key, tampering or truncation."""


def load_key(path: str | os.PathLike) -> bytes:
    """Read a 32-byte key: 32 raw bytes, or 64 hex characters.

    Raises :class:`KeyFileError` naming the file otherwise.
    """
    try:
        raw = Path(path).read_bytes()
    except OSError as e:
        raise KeyFileError(f"encryption key file {str(path)!r}: {e.strerror}") from None
    if len(raw) == 32:
        return raw
    text = raw.strip()
    if len(text) == 64:
        try:
            return bytes.fromhex(text.decode("ascii"))
        except (ValueError, UnicodeDecodeError):
            pass
    raise KeyFileError(f"encryption key file {str(path)!r}: expected 32 raw bytes or 64 hex characters, "
                    f"got {len(raw)} bytes")


def _derive(master: bytes, info: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=b"objvault-replica-v1", info=info).derive(master)


class Sealer:
    """Names and bodies for one target. ``None`` key = plaintext (identity)."""

    def __init__(self, key: bytes | None) -> None:
        self.enabled = key is not None
        if key is not None:
            if len(key) != 32:
                raise ValueError("the replica key must be 32 bytes")
            self._wrap = AESGCM(_derive(key, b"wrap"))
            self._names = _derive(key, b"names")
            self.key_id = hmac.new(self._names, b"key-id", hashlib.sha256).hexdigest()[:16]
        else:
            self.key_id = ""

    # -- names -------------------------------------------------------------------

    def name(self, context: bytes) -> str:
        """HMAC-SHA256 of ``context`` under the name key, hex."""
        return hmac.new(self._names, context, hashlib.sha256).hexdigest()

    # -- bodies ------------------------------------------------------------------

    def seal(self, data: bytes | memoryview, aad: bytes) -> bytes:
        """Encrypt ``data`` bound to ``aad`` (the body's storage name)."""
        if not self.enabled:
            return bytes(data)
        dek = AESGCM.generate_key(256)
        wn, n = os.urandom(NONCE), os.urandom(NONCE)
        wrapped = self._wrap.encrypt(wn, dek, aad)
        return b"".join((bytes([VERSION]), wn, wrapped, n, AESGCM(dek).encrypt(n, bytes(data), aad)))

    def open(self, blob: bytes | memoryview, aad: bytes) -> bytes:
        """Decrypt a :meth:`seal` result; raises :class:`SealError` if it does not authenticate."""
        if not self.enabled:
            return bytes(blob)
        mv = memoryview(blob)
        if len(mv) < OVERHEAD or mv[0] != VERSION:
            raise SealError("not a sealed body (too short or unknown version)")
        wn = bytes(mv[1:1 + NONCE])
        wrapped = bytes(mv[1 + NONCE:1 + NONCE + 48])
        n = bytes(mv[1 + NONCE + 48:1 + 2 * NONCE + 48])
        try:
            dek = self._wrap.decrypt(wn, wrapped, aad)
            return AESGCM(dek).decrypt(n, bytes(mv[1 + 2 * NONCE + 48:]), aad)
        except InvalidTag:
            raise SealError("sealed body does not authenticate (wrong key, or it was altered or moved)") from None

    # -- streams -----------------------------------------------------------------

    def seal_stream(self, pieces: Iterable[bytes], aad: bytes) -> Iterator[bytes]:
        """Seal a byte stream as length-prefixed frames (identity when disabled)."""
        if not self.enabled:
            yield from pieces
            return
        buf = bytearray()
        index = 0
        for piece in pieces:
            buf += piece
            while len(buf) > FRAME:  # the last frame is sealed as such below
                sealed = self.seal(bytes(buf[:FRAME]), aad + struct.pack("<QB", index, 0))
                yield struct.pack("<I", len(sealed)) + sealed
                del buf[:FRAME]
                index += 1
        sealed = self.seal(bytes(buf), aad + struct.pack("<QB", index, 1))
        yield struct.pack("<I", len(sealed)) + sealed

    def open_stream(self, data: bytes, aad: bytes) -> Iterator[bytes]:
        """Inverse of :meth:`seal_stream` over the whole sealed stream."""
        if not self.enabled:
            yield data
            return
        mv = memoryview(data)
        pos = index = 0
        while True:
            if pos + 4 > len(mv):
                raise SealError("sealed stream is truncated")
            (n,) = struct.unpack_from("<I", mv, pos)
            pos += 4
            frame = mv[pos:pos + n]
            pos += n
            last = pos >= len(mv)
            yield self.open(frame, aad + struct.pack("<QB", index, last))
            index += 1
            if last:
                return
