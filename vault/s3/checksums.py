"""ETags and ``x-amz-checksum-*`` values, computed while a body streams.

S3 sends and returns checksums in base64 of the big-endian digest: CRC32 and
CRC32C in 4 bytes, CRC64NVME in 8, SHA-1 in 20, SHA-256 in 32. The CRCs come
from ``awscrt`` (the AWS SDKs' own C runtime, hardware-accelerated), never
from code written here.

Multipart objects carry composite forms: the ETag is the MD5 of the parts'
MD5 digests plus ``-N``, a COMPOSITE checksum the checksum of the parts'
checksum digests plus ``-N``, and a FULL_OBJECT CRC the parts' CRCs combined
into the CRC of the whole body.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from collections.abc import Callable, Iterable, Mapping
from typing import Protocol, cast

from awscrt import checksums as crt

from .errors import S3Error

HEADER_PREFIX = "x-amz-checksum-"


class _Hash(Protocol):
    def update(self, data: bytes | memoryview, /) -> None: ...

    def digest(self) -> bytes: ...


class _Crc:
    """A CRC as hashlib's interface: ``update`` then ``digest`` (big-endian)."""

    def __init__(self, function: Callable[[bytes, int], int], size: int) -> None:
        self._function = function
        self._size = size
        self._value = 0

    def update(self, data: bytes | memoryview, /) -> None:
        # awscrt's CRCs read any buffer (its stubs say bytes): no copy of a memoryview.
        self._value = self._function(cast(bytes, data), self._value)

    def digest(self) -> bytes:
        return self._value.to_bytes(self._size, "big")


# algorithm (as in x-amz-checksum-<algorithm>) -> a new incremental hash
ALGORITHMS: dict[str, Callable[[], _Hash]] = {
    "crc32": lambda: _Crc(crt.crc32, 4),
    "crc32c": lambda: _Crc(crt.crc32c, 4),
    "crc64nvme": lambda: _Crc(crt.crc64nvme, 8),
    "sha1": hashlib.sha1,
    "sha256": hashlib.sha256,
}
DIGEST_SIZE = {"crc32": 4, "crc32c": 4, "crc64nvme": 8, "sha1": 20, "sha256": 32}
_COMBINE: dict[str, Callable[[int, int, int], int]] = {
    "crc32": crt.combine_crc32, "crc32c": crt.combine_crc32c, "crc64nvme": crt.combine_crc64nvme,
}


def b64(digest: bytes) -> str:
    return base64.b64encode(digest).decode("ascii")


def _unbase64(value: str) -> bytes:
    """The bytes of strict base64, or b"" if it is not."""
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        return b""


def decode(algorithm: str, value: str) -> bytes:
    """The digest in a client's base64 ``value``; BadDigest unless it is valid
    base64 of the algorithm's size (no body can match it)."""
    if len(digest := _unbase64(value)) != DIGEST_SIZE[algorithm]:
        raise S3Error("BadDigest", f"Value for {HEADER_PREFIX}{algorithm} header is invalid.")
    return digest


def requested(headers: Mapping[str, str]) -> dict[str, bytes]:
    """The checksums a request states in its headers (lower-case names):
    algorithm -> digest. S3 takes at most one; InvalidRequest otherwise or for
    an unknown algorithm."""
    found = {name[len(HEADER_PREFIX):]: value for name, value in headers.items()
             if name.startswith(HEADER_PREFIX) and name not in ("x-amz-checksum-type", "x-amz-checksum-mode")}
    if len(found) > 1:
        raise S3Error("InvalidRequest", "Expecting a single x-amz-checksum- header. Multiple checksum Types "
                      "are not allowed.")
    for algorithm in found:
        if algorithm not in ALGORITHMS:
            raise S3Error("InvalidRequest", f"Unknown checksum algorithm {algorithm!r}")
    return {algorithm: decode(algorithm, value) for algorithm, value in found.items()}


def content_md5(value: str) -> bytes:
    """The digest of a ``Content-MD5`` header; InvalidDigest if it is not one."""
    if len(digest := _unbase64(value)) != 16:
        raise S3Error("InvalidDigest")
    return digest


class BodyDigests:
    """Everything computed over one body in one pass: its MD5 (the ETag),
    its SHA-256 when the signature covers it, and the asked-for checksums.

    ``update`` runs hashlib, which releases the GIL for pieces over 2 KiB,
    and awscrt: a front door may call it in a thread for large pieces.
    """

    def __init__(self, algorithms: Iterable[str] = (), sha256: bool = False) -> None:
        self.md5 = hashlib.md5()
        self.sha256 = hashlib.sha256() if sha256 else None
        self.checksums: dict[str, _Hash] = {name: ALGORITHMS[name]() for name in algorithms}
        self.length = 0

    def update(self, data: bytes | memoryview, sha256: hashlib._Hash | None = None) -> None:
        """Feed the next bytes; ``sha256``, when given, has hashed exactly
        ``data`` (a chunk's id, computed beside): for the body's first bytes
        the payload's SHA-256 continues from a copy of it instead of hashing
        them again."""
        self.md5.update(data)
        if self.sha256 is not None:
            if sha256 is not None and self.length == 0:
                self.sha256 = sha256.copy()
            else:
                self.sha256.update(data)
        for checksum in self.checksums.values():
            checksum.update(data)
        self.length += len(data)

    def etag(self) -> str:
        """The ETag of a single-part object: MD5, hex, without quotes."""
        return self.md5.hexdigest()

    def checksum(self, algorithm: str) -> str:
        """The base64 value of a computed checksum, as S3 returns it."""
        return b64(self.checksums[algorithm].digest())

    def verify(self, content_md5: bytes | None = None, sha256_hex: str | None = None,
               checksums: Mapping[str, bytes] | None = None) -> None:
        """Compare with what the client sent once the body is complete.

        Raises S3Error BadDigest (Content-MD5 or a checksum) or
        XAmzContentSHA256Mismatch (the signed payload hash).
        """
        if content_md5 is not None and self.md5.digest() != content_md5:
            raise S3Error("BadDigest", "The Content-MD5 you specified did not match what we received.")
        if sha256_hex is not None and (self.sha256 is None or self.sha256.hexdigest() != sha256_hex):
            raise S3Error("XAmzContentSHA256Mismatch")
        for algorithm, digest in (checksums or {}).items():
            if self.checksums[algorithm].digest() != digest:
                raise S3Error("BadDigest", f"The {algorithm.upper()} you specified did not match the "
                              "calculated checksum.")


def multipart_etag(part_md5s: Iterable[str]) -> str:
    """The ETag of a completed multipart upload from its parts' hex MD5s."""
    digests = [bytes.fromhex(md5) for md5 in part_md5s]
    return f"{hashlib.md5(b''.join(digests)).hexdigest()}-{len(digests)}"


def composite(algorithm: str, part_checksums: Iterable[str]) -> str:
    """A COMPOSITE multipart checksum: the checksum of the parts' digests,
    ``<b64>-N``."""
    digests = [decode(algorithm, value) for value in part_checksums]
    whole = ALGORITHMS[algorithm]()
    whole.update(b"".join(digests))
    return f"{b64(whole.digest())}-{len(digests)}"


def full_object(algorithm: str, parts: Iterable[tuple[str, int]]) -> str:
    """A FULL_OBJECT multipart CRC from ``(part checksum, part length)``: the
    CRC of the whole body, as if computed in one pass."""
    combine = _COMBINE[algorithm]
    value = 0
    for checksum, length in parts:
        value = combine(value, int.from_bytes(decode(algorithm, checksum), "big"), length)
    return b64(value.to_bytes(DIGEST_SIZE[algorithm], "big"))
