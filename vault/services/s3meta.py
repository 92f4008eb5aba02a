"""What S3 keeps of an object beside its bytes, and where its versions live.

The current version of an S3 object is the vault object ``s3/<bucket>/<key>``
(:data:`vault.services.objects.S3_PREFIX`); every older version of a
versioned bucket is ``s3v/<bucket>/<key>\\0<position>``, where the position
is 16 hex digits of ``2**64 - 1 - seq`` so that a key's versions sort newest
first. ``seq`` is the version's place in its key's history (nanoseconds,
strictly increasing per key); for a version with an id, its id *is* its
position, so a lookup by version id is one read. The ``null`` version (of a
bucket never versioned, or written while versioning was suspended) has no
id: it is found by its ``version`` being empty.

So listing the current versions is the range scan of ``s3/<bucket>/`` it has
always been (objects written before versioning existed are ``null``
versions, nothing to migrate), and listing a key's versions newest first is
its current object followed by one range scan of ``s3v/<bucket>/<key>\\0``.
Every version is its own vault object: its chunks stay referenced until it
is deleted.
"""

from __future__ import annotations

import msgspec

from .. import policy

# Fixed-size chunks: see vault.services.s3objects.
CHUNK_BYTES = 8 << 20
S3_PREFIX = "s3/"         # the current version of an S3 object: s3/<bucket>/<key>
VERSIONS_PREFIX = "s3v/"  # an older version: s3v/<bucket>/<key>\0<position>
POSITION_CHARS = 16
_TOP = (1 << 64) - 1
NULL = "null"


class S3Meta(msgspec.Struct, array_like=True, omit_defaults=True):
    """What S3 keeps of an object beside its bytes; ``parts`` is the layout of
    its chunks: ``(chunks, bytes)`` of each part, every chunk of a part
    ``chunk_bytes`` long but its last. Fields after ``part_checksums`` came
    with versioning and Object Lock (older records decode with their defaults:
    a ``null`` version, unlocked)."""

    etag: str
    chunk_bytes: int = CHUNK_BYTES
    parts: list[tuple[int, int]] = msgspec.field(default_factory=list)
    content_type: str = ""
    headers: dict[str, str] = msgspec.field(default_factory=dict)
    user: dict[str, str] = msgspec.field(default_factory=dict)
    checksums: dict[str, str] = msgspec.field(default_factory=dict)
    checksum_type: str = ""
    tags: dict[str, str] = msgspec.field(default_factory=dict)
    upload: str = ""  # the multipart upload it completed (a repeated Complete answers with it)
    part_checksums: list[str] = msgspec.field(default_factory=list)  # of the checksum's algorithm, by part
    version: str = ""  # the version id; "" is the null version
    seq: int = 0  # the version's place in its key's history (0: written before versioning, see seq_of)
    marker: bool = False  # a delete marker
    lock_mode: str = ""  # "", GOVERNANCE or COMPLIANCE
    retain_until: float = 0.0
    legal_hold: bool = False

    @property
    def version_id(self) -> str:
        return self.version or NULL


_ENCODER = msgspec.msgpack.Encoder()
_DECODER = msgspec.msgpack.Decoder(S3Meta)


def pack_meta(meta: S3Meta) -> bytes:
    return _ENCODER.encode(meta)


def unpack_meta(raw: bytes) -> S3Meta:
    return _DECODER.decode(raw)


def object_name(bucket: str, key: str) -> str:
    """The vault object that holds the current version of ``key`` of ``bucket``."""
    return f"{S3_PREFIX}{bucket}/{key}"


def versions_prefix(bucket: str, key: str) -> str:
    """The names of the older versions of ``key``, newest first."""
    return f"{VERSIONS_PREFIX}{bucket}/{key}\0"


def version_name(bucket: str, key: str, position: str) -> str:
    return versions_prefix(bucket, key) + position


def position(seq: int) -> str:
    """The sortable position of ``seq`` (newer sorts first); a version's id."""
    return f"{_TOP - seq:016x}"


def seq_of(meta: S3Meta, created: float) -> int:
    """A version's place in its key's history; records from before versioning
    take their creation time."""
    return meta.seq or int(created * 1e9)


def valid_version_id(version_id: str) -> bool:
    """Whether ``version_id`` could name a version (``null`` or 16 hex digits)."""
    return version_id == NULL or (len(version_id) == POSITION_CHARS
                                  and all(c in "0123456789abcdef" for c in version_id))


def is_s3_name(name: str) -> bool:
    return name.startswith(S3_PREFIX) or name.startswith(VERSIONS_PREFIX)


def check_removable(vault: str, name: str, meta: bytes, now: float, bypass: bool) -> None:
    """Raise ObjectLocked unless the S3 version held by the vault object
    ``name`` (its S3 metadata ``meta``) may be deleted or replaced now;
    ``bypass``: a ``full`` key asked to bypass GOVERNANCE retention."""
    if not is_s3_name(name) or not meta:
        return
    s3 = unpack_meta(meta)
    policy.may_remove_locked(vault, name, s3.lock_mode, s3.retain_until, s3.legal_hold, bypass, now)


def is_locked(meta: bytes, now: float) -> bool:
    """Whether the version whose S3 metadata is ``meta`` is under retention or legal hold."""
    s3 = unpack_meta(meta)
    return s3.legal_hold or (bool(s3.lock_mode) and now < s3.retain_until)
