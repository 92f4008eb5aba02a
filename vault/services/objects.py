"""Objects: named lists of chunks that hold their chunks alive."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from .. import errors as E
from .. import policy, refs
from ..body import Body
from ..events import ObjectDeleted, ObjectPut
from ..meta import ChunkMeta, Index, ObjectMeta, Txn, VaultRec
from ..policy import Principal
from . import s3meta
from .chunks import ChunkService
from .s3meta import S3_PREFIX, VERSIONS_PREFIX
from .vaults import VaultsService, live_vault

MAX_OBJECT_CHUNKS = 1_000_000
# A write's precondition: called with the key's current record (or None) in
# the op that writes, raising to refuse the write.
Condition = Callable[[bytes | None], None]
MAX_META_BYTES = 64 * 1024
RESTIC_PREFIX = "restic/"
UPLOAD_PREFIX = "s3mp/"  # a part of a multipart upload: s3mp/<upload id>/<part>
# Keys only their own front door writes, each with the rules of its protocol.
RESERVED_PREFIXES = {RESTIC_PREFIX: "the restic backend (/restic/<vault>/)", S3_PREFIX: "the S3 API",
                     VERSIONS_PREFIX: "the S3 API", UPLOAD_PREFIX: "the S3 API"}
# Runs first in a write's op (S3 versioning: moves the current version aside);
# may return the meta to write instead of the one given.
Before = Callable[[Txn, list[int]], "bytes | None"]


@dataclass(frozen=True)
class ObjectEntry:
    """One line of a listing."""

    key: str
    size: int
    created: float


class ObjectService:
    def __init__(self, index: Index, vaults: VaultsService, chunks: ChunkService) -> None:
        self.index = index
        self.vaults = vaults
        self.chunks = chunks

    async def put(self, who: Principal, rec: VaultRec, key: str, chunks: Sequence[bytes], meta: bytes,
                  if_none_match: bool) -> ObjectMeta:
        """Write the object ``key`` of ``chunks``; raises MissingChunks,
        PreconditionFailed, Forbidden, AppendOnly, RetentionLocked, ReservedKey.

        Keys under ``restic/`` are restic's files, whose names promise that
        their bytes hash to them: only :meth:`put_file`, which verifies that
        promise, writes them.
        """
        for prefix, owner in RESERVED_PREFIXES.items():
            if key.startswith(prefix):
                raise E.ReservedKey(f"vault {rec.name!r}: keys under {prefix!r} are written only through {owner}")
        return await self._write(rec, key, chunks, meta, who.effective_role, if_none_match)

    async def write(self, who: Principal, rec: VaultRec, key: str, chunks: Sequence[bytes], meta: bytes,
                    if_none_match: bool, before: Before | None = None,
                    condition: Condition | None = None) -> ObjectMeta:
        """:meth:`put` for the front door that owns ``key``'s reserved prefix
        (S3 under ``s3/``): the same policy, no refusal of the prefix.
        ``condition(current record or None)`` raises to refuse the write, and
        then ``before(txn, released)`` runs; both in the op that writes, so
        nothing can change in between."""
        return await self._write(rec, key, chunks, meta, who.effective_role, if_none_match, before, condition)

    async def set_meta(self, rec: VaultRec, key: str, meta: bytes) -> ObjectMeta:
        """Replace the object's ``meta`` (its chunks untouched); raises NoSuchObject."""
        def op(txn: Txn) -> ObjectMeta:
            live_vault(txn, rec)
            raw = txn.object_packed(rec.vid, key)
            if raw is None:
                raise E.NoSuchObject(f"vault {rec.name!r}: no such object {key!r}")
            obj = ObjectMeta.unpack(raw)._replace(meta=meta)
            txn.put_object(rec.vid, key, obj)
            txn.emit(ObjectPut(rec, key, obj))
            return obj

        return await self.index.run(op)

    async def put_file(self, who: Principal, rec: VaultRec, key: str, digest: bytes, body: Body,
                       replace: bool = True) -> None:
        """The object ``key`` of exactly one chunk, ``digest``, stored from ``body``
        (a restic file: its name promises that its bytes hash to it).

        Writing the bytes it already has verifies the body and succeeds for
        any key that may upload (clients retry uploads); other bytes replace
        it only if ``replace`` and the policy allow, refused before the body
        is read. A concurrent identical upload is not an error.
        """
        cur = self.find(rec, key)
        if cur is not None and cur.chunks == [digest]:
            await self.chunks.put(rec, digest, body)  # verified and revived, nothing stored
            return
        if cur is not None:
            if not replace:
                raise E.Forbidden(f"vault {rec.name!r}: {key!r} exists and is never overwritten")
            policy.may_overwrite(rec.name, rec.append_only, rec.retention_days, key, cur.created,
                                 who.effective_role, False, time.time())
        await self.chunks.put(rec, digest, body)
        try:
            await self._write(rec, key, [digest], b"", who.effective_role, if_none_match=cur is None)
        except E.PreconditionFailed:
            now = self.find(rec, key)
            if now is None or now.chunks != [digest]:
                raise E.Forbidden(f"vault {rec.name!r}: {key!r} was written concurrently with other bytes") from None

    async def _write(self, rec: VaultRec, key: str, chunks: Sequence[bytes], meta: bytes, role: str,
                     if_none_match: bool, before: Before | None = None,
                     condition: Condition | None = None) -> ObjectMeta:
        if refs.is_large(len(chunks)):
            # Shielded: once references are being counted, the sequence
            # finishes (or is undone) even if the client goes away.
            return await asyncio.shield(asyncio.ensure_future(
                self._put_large_object(rec, key, chunks, meta, role, if_none_match, before, condition)))
        released: list[int] = []

        def op(txn: Txn) -> ObjectMeta:
            vrec = live_vault(txn, rec)
            if condition is not None:
                condition(txn.object_packed(rec.vid, key))
            packed = (before(txn, released) if before else None) or meta
            old_raw = txn.object_packed(rec.vid, key)
            _may_overwrite(vrec, key, old_raw, role, if_none_match, txn.now)
            return write_object(txn, rec, key, chunks, packed, txn.now, old_raw, released=released)

        obj = await self.index.run(op)
        await self._settle(released)
        return obj

    async def _settle(self, intents: list[int]) -> None:
        loop = asyncio.get_running_loop()
        for iid in intents:
            await loop.run_in_executor(None, refs.settle, self.index, iid)

    async def _put_large_object(self, rec: VaultRec, key: str, chunks: Sequence[bytes], meta: bytes,
                                role: str, if_none_match: bool, before: Before | None,
                                condition: Condition | None = None) -> ObjectMeta:
        """:meth:`put` for an object of more than :data:`vault.refs.REF_SLICE`
        references: counted in slices under an acquire intent, then the
        object written in one op (see :mod:`vault.refs`)."""
        loop = asyncio.get_running_loop()
        missing: dict[bytes, None] = {}
        for i in range(0, len(chunks), 65536):  # ids made a slice at a time: bounded memory
            missing.update(dict.fromkeys(await self.chunks.missing(rec, list(dict.fromkeys(chunks[i:i + 65536])))))
        if missing:
            raise refs.missing_error(rec.name, key, list(missing))
        # Refuse now what the final op would refuse, before any counting.
        vrec = self.vaults.get(rec.name)
        if vrec.vid != rec.vid:
            raise E.NoSuchVault(f"no such vault {rec.name!r}")
        current = self.index.object_packed(rec.vid, key)
        if condition is not None:  # early, before the references are counted; again in the final op
            condition(current)
        if before is None:  # else the current object is moved aside first: the final op decides
            _may_overwrite(vrec, key, current, role, if_none_match, time.time())
        payload = [await loop.run_in_executor(None, ObjectMeta(0.0, 0, chunks, b"").pack)]
        iid = await self.index.run(lambda txn: txn.open_intent(refs.ACQUIRE, live_vault(txn, rec).vid, payload[0]))
        payload.clear()  # 32 MB for a million references: not kept while the slices run
        size = [0]

        def check(txn: Txn, part: refs.Pairs, metas: dict[bytes, ChunkMeta]) -> None:
            live_vault(txn, rec)
            absent = [d for d, _ in part if d not in metas]
            if absent:
                raise refs.missing_error(rec.name, key, absent)
            size[0] += sum(metas[d].length * n for d, n in part)

        released: list[int] = []

        def final(txn: Txn) -> ObjectMeta:
            vrec = live_vault(txn, rec)
            if condition is not None:
                condition(txn.object_packed(rec.vid, key))
            packed = (before(txn, released) if before else None) or meta
            old_raw = txn.object_packed(rec.vid, key)
            _may_overwrite(vrec, key, old_raw, role, if_none_match, txn.now)
            obj = ObjectMeta(txn.now, size[0], chunks, packed)
            txn.put_object(rec.vid, key, obj)
            old_size = ObjectMeta.header(old_raw)[1] if old_raw is not None else 0
            txn.add_usage(rec.vid, logical=obj.size - old_size, objects=0 if old_raw is not None else 1)
            txn.emit(ObjectPut(rec, key, obj))
            txn.close_intent(iid)
            refs.release(txn, rec.vid, old_raw, released)
            return obj

        try:
            await loop.run_in_executor(None, refs.acquire, self.index, iid, rec.vid, chunks, check)
            obj = await self.index.run(final)
        except BaseException:
            await loop.run_in_executor(None, refs.settle, self.index, iid)
            raise
        await self._settle(released)
        return obj

    def find(self, rec: VaultRec, key: str) -> ObjectMeta | None:
        raw = self.index.object_packed(rec.vid, key)
        return ObjectMeta.unpack(raw) if raw is not None else None

    def get(self, rec: VaultRec, key: str) -> ObjectMeta:
        raw = self.index.object_packed(rec.vid, key)
        if raw is None:
            raise E.NoSuchObject(f"vault {rec.name!r}: no such object {key!r}")
        return ObjectMeta.unpack(raw)

    async def delete(self, rec: VaultRec, key: str, ephemeral: bool = False) -> None:
        """Delete the object ``key``; raise NoSuchObject, AppendOnly or RetentionLocked.

        ``ephemeral`` marks an object that is not backup data (a restic lock
        file): neither append-only nor retention holds it, because a lock
        that cannot be removed would block its repository for good.
        """
        def op(txn: Txn, released: list[int]) -> None:
            if not delete_object(txn, rec, live_vault(txn, rec), key, ephemeral, released):
                raise E.NoSuchObject(f"vault {rec.name!r}: no such object {key!r}")

        await self.run_releasing(op)

    async def run_releasing(self, op: Callable[[Txn, list[int]], Any]) -> Any:
        """Run ``op(txn)`` (which may release references, see :func:`delete_object`),
        then settle what it released."""
        released: list[int] = []
        result = await self.index.run(lambda txn: op(txn, released))
        await self._settle(released)
        return result

    def list(self, rec: VaultRec, prefix: str, start_after: str, limit: int) -> tuple[list[ObjectEntry], str | None]:
        """Up to ``limit`` objects after ``start_after`` whose keys start with
        ``prefix``, and the key to continue after (None at the end)."""
        out: list[ObjectEntry] = []
        for name, v in self.index.objects(rec.vid, prefix, start_after):
            if len(out) == limit:
                return out, out[-1].key
            created, size, _ = ObjectMeta.header(v)
            out.append(ObjectEntry(name, size, created))
        return out, None


def delete_object(txn: Txn, rec: VaultRec, vrec: VaultRec, key: str, ephemeral: bool,
                  released: list[int], bypass: bool = False) -> bool:
    """Delete the object ``key`` in an op, with its usage, event and references
    (large ones under an intent, its id added to ``released``). False if there
    is none; raises AppendOnly or RetentionLocked (never for ``ephemeral``),
    and ObjectLocked for an S3 version under Object Lock, whoever asks
    (``bypass``: a ``full`` key bypasses GOVERNANCE retention)."""
    raw = txn.object_packed(rec.vid, key)
    if raw is None:
        return False
    created, size, _ = ObjectMeta.header(raw)
    policy.may_delete(rec.name, vrec.append_only, vrec.retention_days, key, created, txn.now, ephemeral)
    if s3meta.is_s3_name(key):
        s3meta.check_removable(rec.name, key, ObjectMeta.unpack(raw).meta, txn.now, bypass)
    txn.delete_object(rec.vid, key)
    txn.add_usage(rec.vid, logical=-size, objects=-1)
    txn.emit(ObjectDeleted(rec, key))
    refs.release(txn, rec.vid, raw, released)
    return True


def write_object(txn: Txn, rec: VaultRec, key: str, chunks: Sequence[bytes], meta: bytes, created: float,
                 old_raw: bytes | None, restored_from: str = "", released: list[int] | None = None) -> ObjectMeta:
    """Write an object whose chunks must all be in the vault: references of the
    new version added and of the old one (``old_raw``) removed, usage and the
    outbox event in the same op (``restored_from``: the target a restore read
    it from). Raises MissingChunks with the absent ids.

    The old version's references, when it is large, are released under an
    intent (:func:`vault.refs.release`; its id goes to ``released``)."""
    counts = Counter(chunks)
    metas: dict[bytes, ChunkMeta] = {}
    missing = []
    for d in counts:
        entry = txn.chunk(rec.vid, d)
        if entry is None:
            missing.append(d.hex())
        else:
            metas[d] = entry
    if missing:
        raise E.MissingChunks(f"vault {rec.name!r}: object {key!r} references {len(missing)} "
                              "chunk(s) the vault does not hold", missing=missing)
    size = sum(metas[d].length * n for d, n in counts.items())
    refs.apply(txn, rec.vid, counts.items(), metas)
    old_size = ObjectMeta.header(old_raw)[1] if old_raw is not None else 0
    refs.release(txn, rec.vid, old_raw, released)
    obj = ObjectMeta(created, size, list(chunks), meta)
    txn.put_object(rec.vid, key, obj)
    txn.add_usage(rec.vid, logical=size - old_size, objects=0 if old_raw is not None else 1)
    txn.emit(ObjectPut(rec, key, obj, restored_from))
    return obj


def _may_overwrite(vrec: VaultRec, key: str, old_raw: bytes | None, role: str, if_none_match: bool,
                   now: float) -> None:
    """Raise unless an object may be written where ``old_raw`` (or nothing) is."""
    old_created = ObjectMeta.header(old_raw)[0] if old_raw is not None else None
    policy.may_overwrite(vrec.name, vrec.append_only, vrec.retention_days, key, old_created, role,
                         if_none_match, now)
    if old_raw is not None and s3meta.is_s3_name(key):
        s3meta.check_removable(vrec.name, key, ObjectMeta.unpack(old_raw).meta, now, False)
