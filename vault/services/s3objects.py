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

from .. import errors as E
from .. import policy
from ..events import ObjectDeleted, ObjectPut
from ..meta import Index, ObjectMeta, Txn, UploadRec, VaultRec
from ..policy import Principal
from .buckets import Target, object_name, versioning
from .chunks import ChunkService, Observer
from .objects import UPLOAD_PREFIX, Before, Condition, ObjectService, delete_object, write_object
from .s3meta import (CHUNK_BYTES, NULL, POSITION_CHARS, S3Meta, pack_meta, position, seq_of, unpack_meta,
                     valid_version_id, version_name, versions_prefix)
from .vaults import live_vault

__all__ = ["CHUNK_BYTES", "MIN_PART_BYTES", "MAX_PART_NUMBER", "S3Meta", "pack_meta", "unpack_meta", "Stored",
           "S3ObjectService", "Deleted", "etag_in"]

# Fixed-size chunks, not content-defined: backup tools encrypt before they
# upload, so two uploads share no byte runs that CDC could find, and a
# retried or copied upload is the same bytes at the same offsets, which fixed
# cuts dedup as well. The size is configured ([s3] chunk_bytes, 8 MiB by
# default, chosen by measurement: docs/s3.md) and recorded in each object's
# S3Meta; 8 MiB keeps a 5 TiB object under the 1,000,000 references an object
# may hold. CHUNK_BYTES is the size S3Meta assumes when it records none (the
# records written before the size was configurable): it never changes.
MIN_PART_BYTES = 5 << 20
MAX_PART_NUMBER = 10_000


def part_name(upload_id: str, number: int) -> str:
    return f"{UPLOAD_PREFIX}{upload_id}/{number:05d}"


@dataclass(frozen=True)
class Stored:
    """An object version as S3 sees it: its record and its S3 metadata."""

    obj: ObjectMeta
    meta: S3Meta


@dataclass(frozen=True)
class Deleted:
    """What a DeleteObject did: the version it removed or the delete marker it
    added (``version_id`` None in a bucket never versioned), and whether that
    version is a delete marker."""

    version_id: str | None
    marker: bool


def _s3(raw: bytes) -> tuple[ObjectMeta, S3Meta]:
    obj = ObjectMeta.unpack(raw)
    return obj, unpack_meta(obj.meta)


def _older(scan: Callable[[str], Iterator[tuple[str, bytes]]], bucket: str,
           key: str) -> Iterator[tuple[str, bytes]]:
    """The older versions of ``key``, newest first, from ``scan(prefix)``."""
    prefix = versions_prefix(bucket, key)
    for name, raw in scan(prefix):
        if len(name) == len(prefix) + POSITION_CHARS:  # not a longer key that has a NUL in it
            yield name, raw


def _locate(get: Callable[[str], bytes | None], scan: Callable[[str], Iterator[tuple[str, bytes]]],
            bucket: str, key: str, version_id: str | None) -> tuple[str, bytes] | None:
    """``(vault object name, record)`` of a version of ``key`` (the current one
    for None, delete markers included), or None."""
    current = object_name(bucket, key)
    raw = get(current)
    if raw is not None and (version_id is None or _s3(raw)[1].version_id == version_id):
        return current, raw
    if version_id is None or not valid_version_id(version_id):
        return None
    if version_id == NULL:
        return next(((name, raw) for name, raw in _older(scan, bucket, key) if not _s3(raw)[1].version), None)
    name = version_name(bucket, key, version_id)
    raw = get(name)
    return (name, raw) if raw is not None else None


def _move(txn: Txn, rec: VaultRec, name: str, to: str, raw: bytes) -> None:
    """Rename a version's object (its references and usage unchanged), announced
    as the delete and the put it is to replication."""
    txn.move_object(rec.vid, name, to, raw)
    txn.emit(ObjectDeleted(rec, name))
    txn.emit(ObjectPut(rec, to, ObjectMeta.unpack(raw)))


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

    def find(self, target: Target, key: str, version_id: str | None = None) -> Stored | None:
        """The version ``version_id`` of ``key`` (the current one for None), delete
        markers included; None if there is none."""
        vid = target.bucket.vid
        found = _locate(lambda name: self.index.object_packed(vid, name),
                        lambda prefix: self.index.objects(vid, prefix), target.bucket.name, key, version_id)
        return Stored(*_s3(found[1])) if found else None

    def head(self, target: Target, key: str) -> Stored:
        """The current version, not a delete marker; raises NoSuchObject."""
        found = self.find(target, key)
        if found is None or found.meta.marker:
            raise E.NoSuchObject(f"bucket {target.bucket.name!r}: no such key {key!r}")
        return found

    def has_older(self, target: Target, key: str) -> bool:
        """Whether ``key`` has a version older than its current one."""
        vid = target.bucket.vid
        return next(_older(lambda prefix: self.index.objects(vid, prefix), target.bucket.name, key), None) is not None

    @staticmethod
    def decode(raw: bytes) -> Stored:
        """An object of a listing, from its packed record."""
        return Stored(*_s3(raw))

    async def put(self, who: Principal, target: Target, key: str, digests: list[bytes], size: int,
                  meta: S3Meta, if_none_match: str | None = None, if_match: str | None = None) -> Stored:
        """Write the object of the stored chunks ``digests``: a new version in a
        versioned bucket, else in place of the current one (which needs role
        ``full`` and no lock, see policy). ``if_none_match``/``if_match`` are
        the conditions of the request's headers (see :meth:`check_conditions`)."""
        meta.parts, meta.chunk_bytes = [(len(digests), size)], self.chunk_bytes
        return await self._write(who, target, key, digests, meta, _create_only(if_none_match),
                                 _condition(target, key, if_none_match, if_match))

    async def _write(self, who: Principal, target: Target, key: str, chunks: list[bytes] | ObjectMeta,
                     meta: S3Meta, create_only: bool, condition: Condition | None = None) -> Stored:
        chunk_ids = chunks.chunks if isinstance(chunks, ObjectMeta) else chunks
        before = self._before(who, target, key, meta, create_only)
        obj = await self.objects.write(who, target.vault, object_name(target.bucket.name, key), chunk_ids,
                                       pack_meta(meta), create_only and before is None, before, condition)
        return Stored(obj, unpack_meta(obj.meta))

    def _before(self, who: Principal, target: Target, key: str, meta: S3Meta, create_only: bool) -> Before | None:
        """What a write into a versioned bucket does first, in its op: the
        current version moves to the older ones (or, the null version being
        replaced while versioning is suspended, it and any older null version
        are deleted), and the new version gets its id; None for a bucket that
        was never versioned (the write replaces the object as it always has)."""
        state = versioning(target.bucket)
        if not state:
            return None
        bucket, vault = target.bucket.name, target.vault
        current = object_name(bucket, key)

        def before(txn: Txn, released: list[int]) -> bytes:
            live = live_vault(txn, vault)
            seq = int(txn.now * 1e9)
            raw = txn.object_packed(vault.vid, current)
            if raw is not None:
                obj, cur = _s3(raw)
                if create_only and not cur.marker:
                    raise E.PreconditionFailed(f"bucket {bucket!r}: {key!r} exists")
                old_seq = seq_of(cur, obj.created)
                seq = max(seq, old_seq + 1)
                if state == "Suspended" and not cur.version:
                    self._drop_null(txn, who, vault, live, current, cur, released)
                else:
                    _move(txn, vault, current, version_name(bucket, key, position(old_seq)), raw)
            if state == "Suspended":
                older = _locate(lambda name: txn.object_packed(vault.vid, name),
                                lambda prefix: txn.objects_seen(vault.vid, prefix), bucket, key, NULL)
                if older is not None and older[0] != current:
                    self._drop_null(txn, who, vault, live, older[0], _s3(older[1])[1], released)
            meta.version, meta.seq = ("" if state == "Suspended" else position(seq)), seq
            if meta.lock_mode or meta.legal_hold:
                txn.bump_lock_epoch(vault.vid)
            return pack_meta(meta)

        return before

    @staticmethod
    def _drop_null(txn: Txn, who: Principal, vault: VaultRec, live: VaultRec, name: str, meta: S3Meta,
                   released: list[int]) -> None:
        """Delete the null version a write or delete replaces while versioning
        is suspended: role ``full`` unless it is a delete marker; locks apply."""
        if not meta.marker:
            policy.require_role(who, vault.name, "full")
        delete_object(txn, vault, live, name, meta.marker, released)

    def check_conditions(self, target: Target, key: str, if_none_match: str | None, if_match: str | None) -> bool:
        """Check a conditional write against the current object; True when the
        write must only create (``If-None-Match: *``, enforced again atomically
        by the write). Raises PreconditionFailed, or NoSuchObject for If-Match
        on a missing key. The write checks them all again atomically
        (:func:`_condition`); this early check refuses before any work."""
        if if_none_match is None and if_match is None:
            return False
        _judge(target, key, self.objects.index.object_packed(target.vault.vid, object_name(target.bucket.name, key)),
               if_none_match, if_match)
        return _create_only(if_none_match)

    async def copy(self, who: Principal, src: Stored, target: Target, key: str, meta: S3Meta,
                   if_none_match: str | None = None, if_match: str | None = None) -> Stored:
        """Copy the object version ``src`` within a vault with the metadata
        ``meta``: the same chunks, referenced again (no bytes move), its ETag
        and checksums kept."""
        meta.etag, meta.parts, meta.chunk_bytes = src.meta.etag, src.meta.parts, src.meta.chunk_bytes
        meta.checksums, meta.checksum_type = src.meta.checksums, src.meta.checksum_type
        meta.part_checksums, meta.upload = src.meta.part_checksums, src.meta.upload
        create_only = self.check_conditions(target, key, if_none_match, if_match)
        return await self._write(who, target, key, src.obj, meta, create_only,
                                 _condition(target, key, if_none_match, if_match))

    async def delete(self, who: Principal, target: Target, key: str, version_id: str | None = None,
                     bypass: bool = False) -> Deleted:
        """DeleteObject (role ``full``): without ``version_id`` in a versioned
        bucket, add a delete marker (always allowed: nothing is removed but a
        suspended bucket's null version); else remove that version, which its
        locks and the vault's retention may refuse (``bypass``: of GOVERNANCE
        retention). A missing key or version is no error, as in S3."""
        policy.require_role(who, target.vault.name, "full")
        if version_id is None and versioning(target.bucket):
            done = await self.add_marker(who, target, key)
            return Deleted(done.meta.version_id, True)
        if version_id is None:
            try:
                await self.objects.delete(target.vault, object_name(target.bucket.name, key))
            except E.NoSuchObject:
                pass
            return Deleted(None, False)
        return await self.remove_version(target, key, version_id, bypass) or Deleted(version_id, False)

    async def add_marker(self, who: Principal, target: Target, key: str,
                         condition: Condition | None = None) -> Stored:
        """Add a delete marker as the current version of ``key`` in a versioned
        bucket (``condition(current record or None)`` raises to refuse it)."""
        return await self._write(who, target, key, [], S3Meta(etag="", marker=True), False, condition)

    async def remove_version(self, target: Target, key: str, version_id: str, bypass: bool = False,
                             still: Callable[[ObjectMeta, S3Meta], bool] | None = None) -> Deleted | None:
        """Remove the version ``version_id`` of ``key`` through the one delete
        path: its Object Lock, the vault's retention floor and append-only
        setting refuse it whoever asks (``bypass``: of GOVERNANCE retention, for
        a ``full`` key). When the current version goes, the newest older one
        takes its place. ``still(record, meta)`` False: the version is no longer
        the one the caller judged, and nothing is done (None)."""
        bucket, vault = target.bucket.name, target.vault
        current = object_name(bucket, key)

        def op(txn: Txn, released: list[int]) -> Deleted | None:
            live = live_vault(txn, vault)
            found = _locate(lambda name: txn.object_packed(vault.vid, name),
                            lambda prefix: txn.objects_seen(vault.vid, prefix), bucket, key, version_id)
            if found is None:
                return Deleted(version_id, False) if still is None else None
            name, raw = found
            obj, meta = _s3(raw)
            if still is not None and not still(obj, meta):
                return None
            delete_object(txn, vault, live, name, meta.marker, released, bypass)
            if name == current:  # the newest older version becomes the current one
                newest = next(_older(lambda prefix: txn.objects_seen(vault.vid, prefix), bucket, key), None)
                if newest is not None:
                    _move(txn, vault, newest[0], current, newest[1])
            return Deleted(version_id, meta.marker)

        return await self.objects.run_releasing(op)

    async def change(self, who: Principal, target: Target, key: str, version_id: str | None,
                     edit: Callable[[S3Meta, float], bool]) -> Stored:
        """Change a version's S3 metadata in place (tags, retention, legal hold):
        ``edit(meta, now)`` changes it or raises; it returns whether it set a lock.
        Raises NoSuchObject, NoSuchVersion, MethodNotAllowed (a delete marker)."""
        bucket, vault = target.bucket.name, target.vault

        def op(txn: Txn) -> Stored:
            live_vault(txn, vault)
            found = _locate(lambda name: txn.object_packed(vault.vid, name),
                            lambda prefix: txn.objects_seen(vault.vid, prefix), bucket, key, version_id)
            if found is None and version_id is not None:
                raise E.NoSuchVersion(f"bucket {bucket!r}: {key!r} has no version {version_id[:80]!r}")
            if found is None:
                raise E.NoSuchObject(f"bucket {bucket!r}: no such key {key!r}")
            obj, meta = _s3(found[1])
            if meta.marker:
                raise E.MethodNotAllowed(f"bucket {bucket!r}: {key!r} version {meta.version_id} is a delete marker")
            if edit(meta, txn.now):
                txn.bump_lock_epoch(vault.vid)
            obj = obj._replace(meta=pack_meta(meta))
            txn.put_object(vault.vid, found[0], obj)
            txn.emit(ObjectPut(vault, found[0], obj))
            return Stored(obj, meta)

        return await self.index.run(op)

    async def set_tags(self, who: Principal, target: Target, key: str, tags: dict[str, str],
                       version_id: str | None = None) -> None:
        """Replace the version's tags (role ``full``); raises NoSuchObject."""
        policy.require_role(who, target.vault.name, "full")

        def edit(meta: S3Meta, now: float) -> bool:
            meta.tags = tags
            return False

        await self.change(who, target, key, version_id, edit)

    async def set_retention(self, who: Principal, target: Target, key: str, version_id: str | None, mode: str,
                            until: float, bypass: bool) -> None:
        """PutObjectRetention: ``mode`` ("" removes it) until ``until``. Extending
        needs role ``append``; shortening, removing or changing GOVERNANCE
        retention also ``bypass`` from a ``full`` key; COMPLIANCE only extends."""
        policy.require_role(who, target.vault.name, "append")
        bypass = bypass and policy.has_role(who.effective_role, "full")

        def edit(meta: S3Meta, now: float) -> bool:
            policy.may_change_retention(key, meta.lock_mode, meta.retain_until, mode, until, bypass, now)
            meta.lock_mode, meta.retain_until = mode, until if mode else 0.0
            return bool(mode)

        await self.change(who, target, key, version_id, edit)

    async def set_legal_hold(self, who: Principal, target: Target, key: str, version_id: str | None,
                             on: bool) -> None:
        """PutObjectLegalHold: placing one needs role ``append``, releasing it ``full``."""
        policy.require_role(who, target.vault.name, "append" if on else "full")

        def edit(meta: S3Meta, now: float) -> bool:
            meta.legal_hold = on
            return on

        await self.change(who, target, key, version_id, edit)

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
        done = await self._write(who, target, upload.key, chunks, meta, create_only,
                                 _condition(target, upload.key, if_none_match, if_match))
        await self.end_upload(target.vault, upload)
        return done

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


def _judge(target: Target, key: str, raw: bytes | None, if_none_match: str | None, if_match: str | None) -> None:
    """Refuse a conditional write given the key's current record ``raw`` (or None)."""
    meta = unpack_meta(ObjectMeta.unpack(raw).meta) if raw is not None else None
    current = meta.etag if meta is not None and not meta.marker else None  # a delete marker: no object
    if if_match is not None and current is None:
        raise E.NoSuchObject(f"bucket {target.bucket.name!r}: no such key {key!r}")
    if if_match is not None and not etag_in(if_match, current):
        raise E.PreconditionFailed(f"bucket {target.bucket.name!r}: {key!r} has another ETag")
    if if_none_match is not None and current is not None and etag_in(if_none_match, current):
        raise E.PreconditionFailed(f"bucket {target.bucket.name!r}: {key!r} exists")


def _create_only(if_none_match: str | None) -> bool:
    """Whether a write may only create its key (``If-None-Match: *``)."""
    return if_none_match is not None and if_none_match.strip() == "*"


def _condition(target: Target, key: str, if_none_match: str | None, if_match: str | None) -> Condition | None:
    """The request's conditions, checked in the op that writes the object."""
    if if_none_match is None and if_match is None:
        return None
    return lambda raw: _judge(target, key, raw, if_none_match, if_match)


def etag_in(header: str, etag: str | None) -> bool:
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
