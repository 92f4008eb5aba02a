"""S3 objects and multipart uploads, stored as vault objects.

An S3 object is the vault object ``s3/<bucket>/<key>``; its body is cut
into chunks of a fixed size (``[s3] chunk_bytes``, recorded with each
object) stored through the chunk service, and its S3 metadata (:class:`S3Meta`) is the object's ``meta``.
Each part of a multipart upload is the object ``s3mp/<upload id>/<part>``,
so its chunks are held by references until Complete, which writes the
final object of all the parts' chunks in order and then removes the parts,
or until Abort (or expiry) removes them. A body that fails on its way in
leaves only unreferenced chunks, which GC collects after its grace period.
"""

from __future__ import annotations

import contextlib
import itertools
import secrets
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass

import msgspec

from .. import errors as E
from .. import policy
from ..meta import Index, ObjectMeta, Txn, UploadRec, VaultRec
from ..policy import Principal
from .buckets import Target, object_name
from .chunks import ChunkService, Observer
from .objects import UPLOAD_PREFIX, ObjectService, delete_object, write_object
from .vaults import live_vault

# Fixed-size chunks, not content-defined: backup tools encrypt before they
# upload, so two uploads share no byte runs that CDC could find, and a
# retried or copied upload is the same bytes at the same offsets, which fixed
# cuts dedup as well. The size is configured ([s3] chunk_bytes, 8 MiB by
# default, chosen by measurement: docs/s3.md) and recorded in each object's
# S3Meta; 8 MiB keeps a 5 TiB object under the 1,000,000 references an object
# may hold. CHUNK_BYTES is the size S3Meta assumes when it records none (the
# records written before the size was configurable): it never changes.
CHUNK_BYTES = 8 << 20
MIN_PART_BYTES = 5 << 20
MAX_PART_NUMBER = 10_000


class S3Meta(msgspec.Struct, array_like=True, omit_defaults=True):
    """What S3 keeps of an object beside its bytes; ``parts`` is the layout of
    its chunks: ``(chunks, bytes)`` of each part, every chunk of a part
    ``chunk_bytes`` long but its last."""

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


_ENCODER = msgspec.msgpack.Encoder()
_DECODER = msgspec.msgpack.Decoder(S3Meta)


def pack_meta(meta: S3Meta) -> bytes:
    return _ENCODER.encode(meta)


def unpack_meta(raw: bytes) -> S3Meta:
    return _DECODER.decode(raw)


def part_name(upload_id: str, number: int) -> str:
    return f"{UPLOAD_PREFIX}{upload_id}/{number:05d}"


@dataclass(frozen=True)
class Stored:
    """An object as S3 sees it: its record and its S3 metadata."""

    obj: ObjectMeta
    meta: S3Meta


class S3ObjectService:
    def __init__(self, index: Index, objects: ObjectService, chunks: ChunkService,
                 chunk_bytes: int = CHUNK_BYTES) -> None:
        self.index = index
        self.objects = objects
        self.chunks = chunks
        self.chunk_bytes = chunk_bytes

    # -- bodies --------------------------------------------------------------------

    async def store(self, target: Target, length: int, pieces: AsyncIterator[bytes | memoryview],
                    observe: Observer) -> tuple[list[bytes], int]:
        """Store a body of ``length`` bytes as chunks (refused with QuotaExceeded
        before any of it is read when it cannot fit); ids in order and size."""
        self.chunks.check_room(target.vault, length)
        return await self.chunks.put_stream(target.vault, pieces, self.chunk_bytes, observe)

    async def read(self, target: Target, stored: Stored, start: int, end: int) -> AsyncIterator[bytes | memoryview]:
        """Bytes ``[start, end)`` of the object, chunk by chunk, each verified."""
        for digest, lo, hi in _spans(stored, start, end):
            yield await self.chunks.get(target.vault, digest, lo, hi)

    # -- objects -------------------------------------------------------------------

    def head(self, target: Target, key: str) -> Stored:
        """Raises NoSuchObject."""
        obj = self.objects.get(target.vault, object_name(target.bucket.name, key))
        return Stored(obj, unpack_meta(obj.meta))

    @staticmethod
    def decode(raw: bytes) -> Stored:
        """An object of a listing, from its packed record."""
        obj = ObjectMeta.unpack(raw)
        return Stored(obj, unpack_meta(obj.meta))

    async def put(self, who: Principal, target: Target, key: str, digests: list[bytes], size: int,
                  meta: S3Meta, if_none_match: str | None = None, if_match: str | None = None) -> Stored:
        """Write the object of the stored chunks ``digests``. Overwriting needs
        role ``full`` and no lock (policy); ``if_none_match``/``if_match`` are
        the conditions of the request's headers (see :meth:`check_conditions`)."""
        name = object_name(target.bucket.name, key)
        create_only = self.check_conditions(target, key, if_none_match, if_match)
        meta.parts, meta.chunk_bytes = [(len(digests), size)], self.chunk_bytes
        obj = await self.objects.write(who, target.vault, name, digests, pack_meta(meta), create_only)
        return Stored(obj, meta)

    def check_conditions(self, target: Target, key: str, if_none_match: str | None, if_match: str | None) -> bool:
        """Check a conditional write against the current object; True when the
        write must only create (``If-None-Match: *``, enforced again atomically
        by the write). Raises PreconditionFailed, or NoSuchObject for If-Match
        on a missing key. ETag conditions are checked before the write."""
        if if_none_match is None and if_match is None:
            return False
        try:
            current: str | None = self.head(target, key).meta.etag
        except E.NoSuchObject:
            current = None
        if if_match is not None and current is None:
            raise E.NoSuchObject(f"bucket {target.bucket.name!r}: no such key {key!r}")
        if if_match is not None and not _etag_in(if_match, current):
            raise E.PreconditionFailed(f"bucket {target.bucket.name!r}: {key!r} has another ETag")
        if if_none_match is not None and current is not None and _etag_in(if_none_match, current):
            raise E.PreconditionFailed(f"bucket {target.bucket.name!r}: {key!r} exists")
        return if_none_match is not None and if_none_match.strip() == "*"

    async def copy(self, who: Principal, source: Target, source_key: str, target: Target, key: str,
                   meta: S3Meta, if_none_match: bool = False) -> Stored:
        """Copy an object within a vault with the metadata ``meta``: the same
        chunks, referenced again (no bytes move), its ETag and checksums kept."""
        src = self.head(source, source_key)
        meta.etag, meta.parts, meta.chunk_bytes = src.meta.etag, src.meta.parts, src.meta.chunk_bytes
        meta.checksums, meta.checksum_type = src.meta.checksums, src.meta.checksum_type
        obj = await self.objects.write(who, target.vault, object_name(target.bucket.name, key),
                                       src.obj.chunks, pack_meta(meta), if_none_match)
        return Stored(obj, meta)

    async def delete(self, who: Principal, target: Target, key: str) -> None:
        """Delete the object (role ``full``; locks apply); a missing key is no error, as in S3."""
        policy.require_role(who, target.vault.name, "full")
        try:
            await self.objects.delete(target.vault, object_name(target.bucket.name, key))
        except E.NoSuchObject:
            pass

    async def set_tags(self, who: Principal, target: Target, key: str, tags: dict[str, str]) -> None:
        """Replace the object's tags (role ``full``); raises NoSuchObject."""
        policy.require_role(who, target.vault.name, "full")
        stored = self.head(target, key)
        stored.meta.tags = tags
        await self.objects.set_meta(target.vault, object_name(target.bucket.name, key), pack_meta(stored.meta))

    # -- multipart uploads -----------------------------------------------------------

    async def create_upload(self, who: Principal, target: Target, key: str, meta: S3Meta) -> UploadRec:
        policy.require_role(who, target.vault.name, "append")
        upload = UploadRec(target.bucket.name, key, secrets.token_hex(16), target.bucket.vid, 0.0, pack_meta(meta))

        def op(txn: Txn) -> UploadRec:
            live_vault(txn, target.vault)
            rec = UploadRec(upload.bucket, key, upload.id, upload.vid, txn.now, upload.meta)
            txn.put_upload(rec)
            return rec

        return await self.index.run(op)

    def completed(self, target: Target, key: str, upload_id: str) -> Stored | None:
        """The object ``key`` if the upload ``upload_id`` wrote it (and it is still the current one)."""
        try:
            current = self.head(target, key)
        except E.NoSuchObject:
            return None
        return current if upload_id and current.meta.upload == upload_id else None

    def upload(self, target: Target, key: str, upload_id: str) -> UploadRec:
        """Raises NoSuchUpload."""
        rec = self.index.upload(target.bucket.vid, target.bucket.name, key, upload_id) \
            if len(upload_id) == 32 else None
        if rec is None:
            raise E.NoSuchUpload(f"bucket {target.bucket.name!r}: no upload {upload_id[:80]!r} of {key!r}")
        return rec

    async def put_part(self, target: Target, upload: UploadRec, number: int, digests: list[bytes], size: int,
                       meta: S3Meta) -> Stored:
        """Keep a stored part (replacing one of the same number); raises
        NoSuchUpload if the upload ended meanwhile (its chunks are then GC's)."""
        meta.parts = [(len(digests), size)]  # one entry per part, even an empty one
        meta.chunk_bytes = self.chunk_bytes
        packed = pack_meta(meta)
        name = part_name(upload.id, number)

        def op(txn: Txn, released: list[int]) -> ObjectMeta:
            live_vault(txn, target.vault)
            if txn.upload(upload.vid, upload.bucket, upload.key, upload.id) is None:
                raise E.NoSuchUpload(f"bucket {upload.bucket!r}: upload {upload.id} has ended")
            return write_object(txn, target.vault, name, digests, packed, txn.now,
                                txn.object_packed(upload.vid, name), released=released)

        return Stored(await self.objects.run_releasing(op), meta)

    def parts(self, target: Target, upload: UploadRec, after: int = 0) -> Iterator[tuple[int, Stored]]:
        """The upload's parts after part number ``after``, in order."""
        start = part_name(upload.id, after) if after else None
        for name, raw in self.index.objects(upload.vid, f"{UPLOAD_PREFIX}{upload.id}/", start):
            yield int(name.rpartition("/")[2]), self.decode(raw)

    async def complete(self, who: Principal, target: Target, upload: UploadRec, numbers: list[tuple[int, str]],
                       finish: Callable[[S3Meta, list[Stored]], S3Meta], if_none_match: str | None = None,
                       if_match: str | None = None) -> Stored:
        """Write the object of the parts ``numbers`` (``(number, etag)``, in
        ascending order) and end the upload. ``finish(upload meta, parts)``
        gives the final metadata (its ETag and checksums).

        Raises InvalidPart (a part missing or of another ETag), TooSmall (a
        part but the last under 5 MiB), and what writing an object raises.
        """
        create_only = self.check_conditions(target, upload.key, if_none_match, if_match)
        parts = self._chosen_parts(target, upload, numbers)
        chunks = [d for part in parts for d in part.obj.chunks]
        meta = finish(unpack_meta(upload.meta), parts)
        meta.parts = [layout for part in parts for layout in part.meta.parts]
        meta.chunk_bytes, meta.upload = _common_chunk_bytes(upload, parts, self.chunk_bytes), upload.id
        obj = await self.objects.write(who, target.vault, object_name(target.bucket.name, upload.key), chunks,
                                       pack_meta(meta), create_only)
        await self.end_upload(target.vault, upload)
        return Stored(obj, meta)

    def _chosen_parts(self, target: Target, upload: UploadRec, numbers: list[tuple[int, str]]) -> list[Stored]:
        have = dict(self.parts(target, upload))
        chosen = []
        for i, (number, etag) in enumerate(numbers):
            part = have.get(number)
            if part is None or part.meta.etag != etag:
                raise E.InvalidPart(f"upload {upload.id}: part {number} is missing or has another ETag")
            if i < len(numbers) - 1 and part.obj.size < MIN_PART_BYTES:
                raise E.TooSmall(f"upload {upload.id}: part {number} is {part.obj.size} bytes, "
                                 f"the minimum is {MIN_PART_BYTES} but for the last part")
            chosen.append(part)
        return chosen

    async def end_upload(self, vault: VaultRec, upload: UploadRec) -> None:
        """Remove the upload and every part of it (Abort, Complete, expiry);
        their chunks go to GC once nothing else references them."""
        prefix = f"{UPLOAD_PREFIX}{upload.id}/"
        names = [name for name, _ in self.index.objects(upload.vid, prefix)]

        def op(txn: Txn, released: list[int]) -> None:
            live = live_vault(txn, vault)
            if txn.upload(upload.vid, upload.bucket, upload.key, upload.id) is None:
                raise E.NoSuchUpload(f"bucket {upload.bucket!r}: no upload {upload.id}")
            for name in names:
                delete_object(txn, vault, live, name, True, released)
            txn.delete_upload(upload)

        await self.objects.run_releasing(op)
        # A part committed between the listing and the op: no part can follow
        # it now that the upload record is gone.
        for name, _ in list(self.index.objects(upload.vid, prefix)):
            with contextlib.suppress(E.NoSuchObject):
                await self.objects.delete(vault, name, ephemeral=True)

    def uploads(self, target: Target, prefix: str, key_marker: str, id_marker: str) -> Iterator[UploadRec]:
        """The bucket's uploads under ``prefix``, in (key, id) order: of keys after
        ``key_marker``, and with ``id_marker`` also those of that key after it."""
        for rec in self.index.uploads(target.bucket.vid, target.bucket.name):
            after = rec.key > key_marker or (bool(id_marker) and rec.key == key_marker and rec.id > id_marker)
            if after and rec.key.startswith(prefix):
                yield rec

    async def expire_uploads(self, before: float, limit: int) -> int:
        """End up to ``limit`` uploads begun before ``before``; returns how many."""
        ended = 0
        old = list(itertools.islice((u for u in self.index.all_uploads() if u.created < before), limit))
        for upload in old:
            bucket = self.index.bucket(upload.bucket)
            if bucket is None:
                continue
            try:
                await self.end_upload(self.objects.vaults.get(bucket.vault), upload)
                ended += 1
            except (E.NoSuchUpload, E.NoSuchVault):
                pass  # ended or gone meanwhile
        return ended


def _etag_in(header: str, etag: str | None) -> bool:
    """Whether an If-Match/If-None-Match value names ``etag`` (``*`` names any)."""
    return any(t.strip() in ("*", f'"{etag}"', etag) for t in header.split(","))


def _common_chunk_bytes(upload: UploadRec, parts: list[Stored], default: int) -> int:
    """The one chunk size that describes every part's layout (parts cut
    before and after a change of ``[s3] chunk_bytes`` may not share one):
    that of the parts of several chunks, and at least as large as any
    single-chunk part. Raises InvalidPart when there is none."""
    cut = {p.meta.chunk_bytes for p in parts if p.meta.parts and p.meta.parts[0][0] > 1}
    size = cut.pop() if len(cut) == 1 else default
    if cut or any(p.obj.size > size for p in parts if not (p.meta.parts and p.meta.parts[0][0] > 1)):
        raise E.InvalidPart(f"upload {upload.id}: its parts were stored in chunks of different sizes (the "
                            "server's s3.chunk_bytes changed during the upload); upload them again")
    return size


def _spans(stored: Stored, start: int, end: int) -> Iterator[tuple[bytes, int, int]]:
    """``(chunk id, from, to)`` of the chunks that hold bytes ``[start, end)``."""
    pos = index = 0
    size = stored.meta.chunk_bytes
    for count, length in stored.meta.parts:
        if pos + length <= start:  # the whole part is before the range
            pos, index = pos + length, index + count
            continue
        for j in range(count):
            chunk_len = min(size, length - j * size)
            if pos < end and pos + chunk_len > start:
                yield stored.obj.chunks[index], max(start - pos, 0), min(end, pos + chunk_len) - pos
            pos, index = pos + chunk_len, index + 1
        if pos >= end:
            return
