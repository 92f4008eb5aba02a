"""The index's records and their encodings.

Every value the index stores is one of these; :mod:`vault.meta.schema`
says under which key. Packed records are fixed-width little-endian
structs (``ChunkMeta``, ``Usage``, ``SegMeta``), an object record is a
header plus its chunk ids (zstd when that pays), vault and key records
are canonical JSON.
"""

from __future__ import annotations

import json
import struct
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Iterator, NamedTuple, overload

import zstandard


def jdump(obj: Any) -> bytes:
    """Canonical JSON: sorted keys, no spaces (records compare byte for byte)."""
    return json.dumps(obj, separators=(",", ":"), sort_keys=True).encode()


# Chunk states (ARCHITECTURE.md, "Lifecycle of a chunk").
PENDING, REFERENCED, DELETABLE = 0, 1, 2
STATE_NAMES = {PENDING: "pending", REFERENCED: "referenced", DELETABLE: "deletable"}


# Packed layouts live beside their records, not in them: a NamedTuple's
# body may declare fields only.
CHUNK_META = struct.Struct("<IQQQBdd")
_USAGE = struct.Struct("<qqqq")
_SEG_META = struct.Struct("<HBQQd")
_OBJECT_HEADER = struct.Struct("<BdQII")
# A compressor per thread: python-zstandard's are not thread-safe (two
# threads packing large manifests at once crashed the process).
_ZSTD = threading.local()
# Compressing a sample first tells whether a large manifest is worth it,
# without a second manifest-sized buffer for output that is thrown away.
_ZSTD_SAMPLE = 1 << 20


class ChunkMeta(NamedTuple):
    seg_id: int
    offset: int
    length: int
    refcount: int
    state: int
    created_at: float
    zero_since: float

    def pack(self) -> bytes:
        return CHUNK_META.pack(*self)

    @classmethod
    def unpack(cls, b: bytes) -> "ChunkMeta":
        return cls(*CHUNK_META.unpack(b))


class Usage(NamedTuple):
    stored_bytes: int = 0
    logical_bytes: int = 0
    chunks: int = 0
    objects: int = 0

    def pack(self) -> bytes:
        return _USAGE.pack(*self)

    @classmethod
    def unpack(cls, b: bytes | None) -> "Usage":
        return cls(*_USAGE.unpack(b)) if b else cls()

    def add(self, stored: int = 0, logical: int = 0, chunks: int = 0, objects: int = 0) -> "Usage":
        return Usage(self.stored_bytes + stored, self.logical_bytes + logical,
                     self.chunks + chunks, self.objects + objects)

    def as_dict(self) -> dict[str, int]:
        return self._asdict()


class SegMeta(NamedTuple):
    dir_idx: int
    sealed: int
    end: int          # end of the last indexed record (committed end)
    live_bytes: int   # bytes of records the index still points to
    created: float

    def pack(self) -> bytes:
        return _SEG_META.pack(*self)

    @classmethod
    def unpack(cls, b: bytes) -> "SegMeta":
        return cls(*_SEG_META.unpack(b))


class ChunkIds(Sequence[bytes]):
    """A manifest's chunk ids, 32 bytes each, back to back in one ``bytes``.

    Reads like a list of ``bytes`` (and compares equal to one), but a
    million ids cost 32 MB instead of 80 MB of separate objects, and
    packing them is no join.
    """

    __slots__ = ("blob",)

    def __init__(self, blob: bytes) -> None:
        if len(blob) % 32:
            raise ValueError("chunk ids are 32 bytes each")
        self.blob = blob

    @classmethod
    def of(cls, ids: "Sequence[bytes]") -> "ChunkIds":
        return ids if isinstance(ids, ChunkIds) else cls(b"".join(ids))

    def __len__(self) -> int:
        return len(self.blob) // 32

    @overload
    def __getitem__(self, i: int) -> bytes: ...
    @overload
    def __getitem__(self, i: slice) -> "ChunkIds": ...

    def __getitem__(self, i: int | slice) -> "bytes | ChunkIds":
        if isinstance(i, slice):
            start, stop, step = i.indices(len(self))
            if step == 1:
                return ChunkIds(self.blob[32 * start:32 * max(start, stop)])
            return ChunkIds(b"".join(self.blob[32 * k:32 * k + 32] for k in range(start, stop, step)))
        n = len(self)
        if i < 0:
            i += n
        if not 0 <= i < n:
            raise IndexError("chunk id index out of range")
        return self.blob[32 * i:32 * i + 32]

    def __iter__(self) -> Iterator[bytes]:
        blob = self.blob
        return (blob[k:k + 32] for k in range(0, len(blob), 32))

    def __contains__(self, digest: object) -> bool:
        if not isinstance(digest, bytes) or len(digest) != 32:
            return False
        pos = self.blob.find(digest)
        while pos >= 0 and pos % 32:
            pos = self.blob.find(digest, pos + 1)
        return pos >= 0

    def __eq__(self, other: object) -> bool:
        if isinstance(other, ChunkIds):
            return self.blob == other.blob
        if isinstance(other, (list, tuple)):
            return len(other) == len(self) and all(isinstance(d, bytes) for d in other) and \
                b"".join(other) == self.blob
        return NotImplemented

    def __repr__(self) -> str:
        return f"ChunkIds({len(self)} ids)"


class ObjectMeta(NamedTuple):
    created: float
    size: int
    chunks: Sequence[bytes]
    meta: bytes

    def pack(self) -> bytes:
        ids = ChunkIds.of(self.chunks).blob
        parts = [ids, self.meta]
        flag = 0
        # Chunk ids are random bytes and rarely compress; only keep zstd's
        # output when it is smaller (repeated ids in a big manifest).
        if len(ids) + len(self.meta) > 512:
            zc = getattr(_ZSTD, "c", None)
            if zc is None:
                zc = _ZSTD.c = zstandard.ZstdCompressor(level=3)
            if len(ids) <= _ZSTD_SAMPLE or len(zc.compress(ids[:_ZSTD_SAMPLE])) < _ZSTD_SAMPLE * 0.9:
                z = zc.compress(ids + self.meta)
                if len(z) < (len(ids) + len(self.meta)) * 0.9:
                    parts, flag = [z], 1
        # One join: a million ids are 32 MB, each copy of them counts.
        return b"".join([_OBJECT_HEADER.pack(flag, self.created, self.size, len(self.chunks), len(self.meta)), *parts])

    @classmethod
    def unpack(cls, b: bytes) -> "ObjectMeta":
        flag, created, size, n, mlen = _OBJECT_HEADER.unpack_from(b)
        body = b[_OBJECT_HEADER.size:]
        if flag == 1:
            body = zstandard.ZstdDecompressor().decompress(body, max_output_size=32 * n + mlen)
        return cls(created, size, ChunkIds(body[:32 * n]), body[32 * n:32 * n + mlen])

    @classmethod
    def header(cls, b: bytes) -> tuple[float, int, int]:
        """``(created, size, nchunks)`` without decoding the chunk list."""
        _, created, size, n, _ = _OBJECT_HEADER.unpack_from(b)
        return created, size, n


@dataclass
class VaultRec:
    """A vault's configuration; ``vid`` is its internal id, never reused."""

    name: str
    vid: int
    created: float
    quota_bytes: int | None = None
    append_only: bool = False
    retention_days: int = 0
    # Days without a new object before the vault is stale; None: the server's default.
    stale_after_days: float | None = None

    @classmethod
    def load(cls, raw: bytes) -> "VaultRec":
        d = json.loads(raw)
        return cls(d["name"], d["vid"], d["created"], d.get("quota_bytes"), d.get("append_only", False),
                   d.get("retention_days", 0), d.get("stale_after_days"))

    def dump(self) -> bytes:
        doc = {"name": self.name, "vid": self.vid, "created": self.created, "quota_bytes": self.quota_bytes,
               "append_only": self.append_only, "retention_days": self.retention_days}
        if self.stale_after_days is not None:  # records without it stay byte for byte what they were
            doc["stale_after_days"] = self.stale_after_days
        return jdump(doc)


@dataclass(frozen=True)
class KeyRec:
    """A vault key: only the SHA-256 of its secret is kept (``hash``), and its
    S3 secret only sealed under the server's master key (``s3_sealed``; empty
    for keys made before S3 credentials existed)."""

    id: str
    vault: str
    vid: int
    role: str
    label: str
    created: str
    hash: bytes
    s3_sealed: bytes = b""

    @classmethod
    def load(cls, raw: bytes) -> "KeyRec":
        d = json.loads(raw)
        return cls(d["id"], d["vault"], d["vid"], d["role"], d["label"], d["created"], bytes.fromhex(d["hash"]),
                   bytes.fromhex(d.get("s3", "")))

    def dump(self) -> bytes:
        doc = {"id": self.id, "vault": self.vault, "vid": self.vid, "role": self.role, "label": self.label,
               "created": self.created, "hash": self.hash.hex()}
        if self.s3_sealed:
            doc["s3"] = self.s3_sealed.hex()
        return jdump(doc)


@dataclass(frozen=True)
class BucketRec:
    """An S3 bucket: a global name owned by one vault (``vid``); its objects
    are the vault's objects under ``s3/<name>/``."""

    name: str
    vault: str
    vid: int
    created: float
    # Bucket subresources kept as documents (tagging, public access block), by kind.
    settings: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def load(cls, raw: bytes) -> "BucketRec":
        d = json.loads(raw)
        return cls(d["name"], d["vault"], d["vid"], d["created"], d.get("settings", {}))

    def dump(self) -> bytes:
        return jdump({"name": self.name, "vault": self.vault, "vid": self.vid, "created": self.created,
                      "settings": self.settings})


@dataclass(frozen=True)
class UploadRec:
    """A multipart upload in progress; its parts are objects under
    ``s3mp/<id>/``, ``meta`` the S3 metadata the final object gets."""

    bucket: str
    key: str
    id: str
    vid: int
    created: float
    meta: bytes

    @classmethod
    def load(cls, raw: bytes) -> "UploadRec":
        d = json.loads(raw)
        return cls(d["bucket"], d["key"], d["id"], d["vid"], d["created"], bytes.fromhex(d["meta"]))

    def dump(self) -> bytes:
        return jdump({"bucket": self.bucket, "key": self.key, "id": self.id, "vid": self.vid,
                      "created": self.created, "meta": self.meta.hex()})
