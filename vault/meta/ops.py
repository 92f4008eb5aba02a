"""Typed operations on the index: what the rest of objvault calls.

:class:`TxnOps` is mixed into :class:`vault.meta.engine.Txn` (reads see the
batch's earlier writes; writes join the op's batch), :class:`IndexReads`
into :class:`vault.meta.engine.Index` (committed state, any thread). Both
stand on the engine's raw ``get``/``put``/``delete`` and keep encoding and
key layout here; callers pass ids and records.

Bulk operations take and return *chunk keys* (:func:`schema.chunk_key`)
where the chunks of several vaults are handled together (GC, compaction):
opaque bytes that only this package builds and parses.
"""

from __future__ import annotations

import json
import logging
import struct
from typing import Iterator, Protocol, cast

from rocksdict import Rdict, ReadOptions

from . import schema as S
from .records import CHUNK_META, BucketRec, ChunkMeta, KeyRec, ObjectMeta, SegMeta, UploadRec, Usage, VaultRec, jdump

log = logging.getLogger("objvault")

# The sweep tests the refcount straight from the packed ChunkMeta bytes:
# most chunks are alive, and unpacking a million of them costs more than
# the rest of the scan together.
_RC = slice(struct.calcsize("<IQQ"), struct.calcsize("<IQQQ"))
_FAST_RC = CHUNK_META.format == "<IQQQBdd"
_ZERO8 = bytes(8)
# Keys asked of RocksDB per MultiGet: bounded memory for huge lists.
_MULTIGET_SLICE = 65536


class RecordLoc(Protocol):
    """Where a durable segment record is (:class:`vault.store.Location`); read-only."""

    @property
    def seg_id(self) -> int: ...
    @property
    def offset(self) -> int: ...
    @property
    def size(self) -> int: ...
    @property
    def dir_idx(self) -> int: ...


def multi_get(cf: Rdict, keys: list[bytes]) -> list[bytes | None]:
    """One RocksDB MultiGet: each key's value or None, in order."""
    # rocksdict's stub types a list of keys like one key (one value back, and
    # its key list is invariant); the binding returns one value per key.
    return cast("list[bytes | None]", cf.get(cast("list[str | int | float | bytes | bool]", keys)))


def _chunk(raw: bytes | None) -> ChunkMeta | None:
    return ChunkMeta.unpack(raw) if raw is not None else None


class PointReads:
    """Reads of one record by its id; the same on a transaction and on the index."""

    __slots__ = ()

    def get(self, cf: str, key: bytes) -> bytes | None: raise NotImplementedError

    def vault(self, name: str) -> VaultRec | None:
        raw = self.get(S.VAULTS, name.encode())
        return VaultRec.load(raw) if raw is not None else None

    def dead_vault_name(self, vid: int) -> str | None:
        raw = self.get(S.META, S.dead_vault_key(vid))
        return json.loads(raw)["name"] if raw is not None else None

    def key(self, key_id: str) -> KeyRec | None:
        raw = self.get(S.KEYS, key_id.encode())
        return KeyRec.load(raw) if raw is not None else None

    def chunk(self, vid: int, digest: bytes) -> ChunkMeta | None:
        return _chunk(self.get(S.CHUNKS, S.chunk_key(vid, digest)))

    def object_packed(self, vid: int, name: str) -> bytes | None:
        """The object's packed record (read its header with :meth:`ObjectMeta.header`)."""
        return self.get(S.OBJECTS, S.object_key(vid, name))

    def usage(self, vid: int) -> Usage:
        return Usage.unpack(self.get(S.USAGE, S.vid_bytes(vid)))

    def usage_snapshot(self, day: str, vid: int) -> dict | None:
        """The vault's usage snapshot of ``day`` (YYYY-MM-DD), if one was taken."""
        raw = self.get(S.USAGE_HIST, S.usage_hist_key(day, vid))
        return json.loads(raw) if raw is not None else None

    def segment(self, seg_id: int) -> SegMeta | None:
        raw = self.get(S.SEGMENTS, S.seg_key(seg_id))
        return SegMeta.unpack(raw) if raw is not None else None

    def marker(self, key: bytes) -> bytes | None:
        return self.get(S.META, key)

    def bucket(self, name: str) -> BucketRec | None:
        raw = self.get(S.META, S.bucket_key(name))
        return BucketRec.load(raw) if raw is not None else None

    def upload(self, vid: int, bucket: str, key: str, upload_id: str) -> UploadRec | None:
        raw = self.get(S.META, S.upload_key(vid, bucket, key, upload_id))
        return UploadRec.load(raw) if raw is not None else None

    def lock_epoch(self, vid: int) -> int:
        """How many ops have set an S3 Object Lock in the vault (a vault deletion
        that scanned for locks checks nothing set one meanwhile)."""
        raw = self.get(S.META, S.LOCK_EPOCH + S.vid_bytes(vid))
        return int.from_bytes(raw, "big") if raw else 0


class TxnOps(PointReads):
    """Typed reads and writes of one committer op (see :class:`vault.meta.engine.Txn`)."""

    __slots__ = ()
    now: float

    def get_many(self, cf: str, keys: list[bytes]) -> list[bytes | None]: raise NotImplementedError
    def put(self, cf: str, key: bytes, value: bytes) -> None: raise NotImplementedError
    def delete(self, cf: str, key: bytes) -> None: raise NotImplementedError
    def items(self, cf: str, prefix: bytes, start: bytes | None = None) -> Iterator[tuple[bytes, bytes]]:
        raise NotImplementedError

    def counter(self, name: str) -> int:
        """Increment and return a persistent counter."""
        key = S.counter_key(name)
        cur = int.from_bytes(self.get(S.META, key) or b"\0", "big") + 1
        self.put(S.META, key, cur.to_bytes(8, "big"))
        return cur

    # -- vaults and keys -----------------------------------------------------------

    def put_vault(self, rec: VaultRec) -> None:
        self.put(S.VAULTS, rec.name.encode(), rec.dump())

    def delete_vault(self, rec: VaultRec) -> None:
        """Remove the vault's name and keys and mark its id dead: GC then
        removes its objects, chunks and usage (:meth:`finish_dead_vault`)."""
        self.delete(S.VAULTS, rec.name.encode())
        for k, v in self.items(S.KEYS, b""):
            if json.loads(v)["vid"] == rec.vid:
                self.delete(S.KEYS, k)
        # Bucket names are global: a deleted vault's become free at once.
        for bucket in self.vault_buckets(rec.vid):
            self.delete_bucket(bucket.name)
        for k, _ in self.items(S.META, S.UPLOAD + S.vid_bytes(rec.vid)):
            self.delete(S.META, k)
        self.delete(S.META, S.LOCK_EPOCH + S.vid_bytes(rec.vid))
        self.put(S.META, S.dead_vault_key(rec.vid), jdump({"name": rec.name, "at": self.now}))

    def finish_dead_vault(self, vid: int) -> bool:
        """Drop a dead vault's usage and marker once its objects and chunks are gone."""
        prefix = S.vid_bytes(vid)
        if next(self.items(S.OBJECTS, prefix), None) is not None or \
                next(self.items(S.CHUNKS, prefix), None) is not None:
            return False
        self.delete(S.USAGE, prefix)
        self.delete(S.META, S.dead_vault_key(vid))
        return True

    def vault_names_by_id(self) -> dict[int, str]:
        """Every live vault's name by id (committed state)."""
        return {d["vid"]: d["name"] for d in (json.loads(v) for _, v in self.items(S.VAULTS, b""))}

    def put_key(self, rec: KeyRec) -> None:
        self.put(S.KEYS, rec.id.encode(), rec.dump())

    def delete_key(self, key_id: str) -> None:
        self.delete(S.KEYS, key_id.encode())

    # -- S3 buckets and multipart uploads ---------------------------------------------

    def vault_buckets(self, vid: int) -> list[BucketRec]:
        """The S3 buckets of the vault ``vid`` as this op sees them (the batch's writes included)."""
        found = (BucketRec.load(raw) for _, raw in self.scan(S.META, S.BUCKET))
        return [b for b in found if b.vid == vid]

    def put_bucket(self, rec: BucketRec) -> None:
        self.put(S.META, S.bucket_key(rec.name), rec.dump())

    def delete_bucket(self, name: str) -> None:
        self.delete(S.META, S.bucket_key(name))

    def has_uploads(self, vid: int, bucket: str) -> bool:
        return next(self.items(S.META, S.uploads_prefix(vid, bucket)), None) is not None

    def has_objects(self, vid: int, prefix: str) -> bool:
        return next(self.items(S.OBJECTS, S.object_key(vid, prefix)), None) is not None

    def put_upload(self, rec: UploadRec) -> None:
        self.put(S.META, S.upload_key(rec.vid, rec.bucket, rec.key, rec.id), rec.dump())

    def delete_upload(self, rec: UploadRec) -> None:
        self.delete(S.META, S.upload_key(rec.vid, rec.bucket, rec.key, rec.id))

    # -- chunks ----------------------------------------------------------------------

    def chunks(self, vid: int, digests: list[bytes]) -> list[ChunkMeta | None]:
        """:meth:`chunk` for many ids of one vault: one MultiGet."""
        prefix = S.vid_bytes(vid)
        return [_chunk(raw) for raw in self.get_many(S.CHUNKS, [prefix + d for d in digests])]

    def chunks_at(self, keys: list[bytes]) -> list[ChunkMeta | None]:
        """The entries of chunk keys (of any vaults): one MultiGet."""
        return [_chunk(raw) for raw in self.get_many(S.CHUNKS, keys)]

    def put_chunk(self, vid: int, digest: bytes, meta: ChunkMeta) -> None:
        self.put(S.CHUNKS, S.chunk_key(vid, digest), meta.pack())

    def put_chunk_at(self, key: bytes, meta: ChunkMeta) -> None:
        self.put(S.CHUNKS, key, meta.pack())

    def delete_chunk_at(self, key: bytes) -> None:
        self.delete(S.CHUNKS, key)

    def touch_chunk(self, vid: int, digest: bytes) -> bool:
        """Restart a held chunk's grace period (a dedup hit); False if it is gone."""
        key = S.chunk_key(vid, digest)
        raw = self.get(S.CHUNKS, key)
        if raw is None:
            return False
        self.put(S.CHUNKS, key, ChunkMeta.unpack(raw)._replace(created_at=self.now).pack())
        return True

    # -- objects ---------------------------------------------------------------------

    def put_object(self, vid: int, name: str, obj: ObjectMeta) -> None:
        self.put(S.OBJECTS, S.object_key(vid, name), obj.pack())

    def delete_object(self, vid: int, name: str) -> None:
        self.delete(S.OBJECTS, S.object_key(vid, name))

    def move_object(self, vid: int, name: str, to: str, raw: bytes) -> None:
        """Rename the object ``name`` (its packed record ``raw``) to ``to``: its
        references, usage and record unchanged."""
        self.delete(S.OBJECTS, S.object_key(vid, name))
        self.put(S.OBJECTS, S.object_key(vid, to), raw)

    def scan(self, cf: str, prefix: bytes) -> Iterator[tuple[bytes, bytes]]: raise NotImplementedError

    def bump_lock_epoch(self, vid: int) -> None:
        self.put(S.META, S.LOCK_EPOCH + S.vid_bytes(vid), (self.lock_epoch(vid) + 1).to_bytes(8, "big"))

    def objects_seen(self, vid: int, prefix: str) -> Iterator[tuple[str, bytes]]:
        """``(name, packed record)`` of the objects under ``prefix`` as this op sees them."""
        for k, v in self.scan(S.OBJECTS, S.object_key(vid, prefix)):
            yield S.object_name(k), v

    def delete_objects_at(self, keys: list[bytes]) -> int:
        """Delete those of the object keys that exist; returns how many."""
        n = 0
        for key, raw in zip(keys, self.get_many(S.OBJECTS, keys)):
            if raw is not None:
                self.delete(S.OBJECTS, key)
                n += 1
        return n

    # -- usage -----------------------------------------------------------------------

    def put_usage(self, vid: int, usage: Usage) -> None:
        self.put(S.USAGE, S.vid_bytes(vid), usage.pack())

    def add_usage(self, vid: int, stored: int = 0, logical: int = 0, chunks: int = 0, objects: int = 0) -> None:
        self.put_usage(vid, self.usage(vid).add(stored, logical, chunks, objects))

    def delete_usage(self, vid: int) -> None:
        self.delete(S.USAGE, S.vid_bytes(vid))

    def snapshot_usage(self, day: str, vid: int, doc: dict) -> bool:
        """Write the vault's usage snapshot of ``day`` unless there is one; True if written."""
        key = S.usage_hist_key(day, vid)
        if self.get(S.USAGE_HIST, key) is not None:
            return False
        self.put(S.USAGE_HIST, key, jdump(doc))
        return True

    def delete_usage_snapshots(self, keys: list[bytes]) -> None:
        for k in keys:
            self.delete(S.USAGE_HIST, k)

    # -- segments --------------------------------------------------------------------

    def put_segment(self, seg_id: int, seg: SegMeta) -> None:
        self.put(S.SEGMENTS, S.seg_key(seg_id), seg.pack())

    def delete_segment(self, seg_id: int) -> None:
        self.delete(S.SEGMENTS, S.seg_key(seg_id))

    def seg_update(self, seg_id: int, live_delta: int, end: int | None = None, dir_idx: int = 0) -> None:
        """Segment bookkeeping for records at ``seg_id``: ``live_delta`` bytes the
        index now uses (or no longer uses) there, and, for a record just made
        durable, its ``end`` (the committed end only grows; an unknown segment
        is created in ``dir_idx``). Without ``end`` the segment must exist."""
        seg = self.segment(seg_id)
        if seg is None:
            if end is None:  # cannot happen while an indexed chunk points into it
                log.error("live bytes of an unknown segment", extra={"segment": seg_id, "delta": live_delta})
                return
            seg = SegMeta(dir_idx, 0, 0, 0, self.now)
        self.put_segment(seg_id, seg._replace(live_bytes=seg.live_bytes + live_delta,
                                              end=max(seg.end, end) if end is not None else seg.end))

    def seg_record(self, loc: RecordLoc, live: bool) -> None:
        """A record at ``loc`` is durable: its segment's committed end covers it
        (a restart does not cut it off), and it counts as live if the index uses it."""
        self.seg_update(loc.seg_id, loc.size if live else 0, end=loc.offset + loc.size, dir_idx=loc.dir_idx)

    def repoint_chunk(self, key: bytes, meta: ChunkMeta | None, old_seg: int, old_offset: int,
                      loc: RecordLoc) -> bool:
        """Point chunk ``key`` (its entry ``meta``, as read in this op) at its copy
        ``loc`` if it still points at the old record, with the segments' bookkeeping.

        False if the chunk was deleted or moved meanwhile: the copy is then dead
        bytes (its segment's end still covers it). A copy of a record has the
        record's size, so ``loc.size`` leaves the old segment's live bytes.
        """
        moved = meta is not None and meta.seg_id == old_seg and meta.offset == old_offset
        if meta is not None and moved:
            self.put(S.CHUNKS, key, meta._replace(seg_id=loc.seg_id, offset=loc.offset).pack())
            self.seg_update(old_seg, -loc.size)
        self.seg_record(loc, moved)
        return moved

    def seal_segment(self, seg_id: int) -> bool:
        """Mark a segment sealed (it takes no more records); False if it is unknown."""
        seg = self.segment(seg_id)
        if seg is None:
            return False
        self.put_segment(seg_id, seg._replace(sealed=1))
        return True

    # -- reference intents (vault/refs.py) -------------------------------------------

    def open_intent(self, kind: int, vid: int, payload: bytes) -> int:
        """Record an intent with no slice applied yet; returns its id."""
        iid = self.counter("refs_intent")
        self.put(S.META, S.intent_key(iid), bytes([kind]) + S.vid_bytes(vid) + payload)
        self.set_intent_progress(iid, 0)
        return iid

    def intent_progress(self, iid: int) -> int | None:
        """Slices applied under an open intent; None once it is closed."""
        raw = self.get(S.META, S.intent_key(iid) + S.INTENT_DONE)
        return int.from_bytes(raw, "big") if raw is not None else None

    def set_intent_progress(self, iid: int, done: int) -> None:
        self.put(S.META, S.intent_key(iid) + S.INTENT_DONE, done.to_bytes(4, "big"))

    def close_intent(self, iid: int) -> None:
        self.delete(S.META, S.intent_key(iid))
        self.delete(S.META, S.intent_key(iid) + S.INTENT_DONE)

    # -- markers: small bookkeeping values under the schema's ``meta`` keys -------------

    def put_marker(self, key: bytes, value: bytes) -> None:
        self.put(S.META, key, value)

    def delete_marker(self, key: bytes) -> None:
        self.delete(S.META, key)


class IndexReads(PointReads):
    """Typed reads of the committed state, from any thread (see :class:`vault.meta.engine.Index`)."""

    __slots__ = ()
    cf: dict[str, Rdict]

    def iter_prefix(self, cf: str, prefix: bytes, start: bytes | None = None) -> Iterator[tuple[bytes, bytes]]:
        raise NotImplementedError

    # -- vaults and keys -------------------------------------------------------------

    def vaults(self) -> list[VaultRec]:
        return [VaultRec.load(v) for _, v in self.iter_prefix(S.VAULTS, b"")]

    def vault_names(self) -> list[str]:
        return [k.decode() for k, _ in self.iter_prefix(S.VAULTS, b"")]

    def dead_vaults(self) -> list[int]:
        """Ids of deleted vaults whose data GC has not removed yet."""
        return [S.vid_of(k[len(S.DEAD_VAULT):]) for k, _ in self.iter_prefix(S.META, S.DEAD_VAULT)]

    def keys(self) -> Iterator[KeyRec]:
        return (KeyRec.load(v) for _, v in self.iter_prefix(S.KEYS, b""))

    # -- chunks ----------------------------------------------------------------------

    def chunks_held(self, vid: int, digests: list[bytes]) -> list[bool]:
        """Whether the vault holds each of ``digests``: one MultiGet."""
        prefix = S.vid_bytes(vid)
        return [raw is not None for raw in multi_get(self.cf[S.CHUNKS], [prefix + d for d in digests])]

    def missing_chunks(self, vid: int, digests: list[bytes]) -> list[bytes]:
        """Those of ``digests`` the vault does not hold (MultiGet, no GIL held: callers
        may split a long list over threads)."""
        prefix = S.vid_bytes(vid)
        cf = self.cf[S.CHUNKS]
        out = []
        for i in range(0, len(digests), _MULTIGET_SLICE):
            piece = digests[i:i + _MULTIGET_SLICE]
            found = multi_get(cf, [prefix + d for d in piece])
            out += [d for d, v in zip(piece, found) if v is None]
        return out

    def chunks_at(self, keys: list[bytes]) -> list[ChunkMeta | None]:
        return [_chunk(raw) for raw in multi_get(self.cf[S.CHUNKS], keys)]

    def chunk_digests(self, vid: int) -> Iterator[bytes]:
        for k, _ in self.iter_prefix(S.CHUNKS, S.vid_bytes(vid)):
            yield S.chunk_digest(k)

    def chunk_keys(self, vid: int, limit: int) -> list[bytes]:
        """The first ``limit`` chunk keys of a vault."""
        return self._first_keys(S.CHUNKS, S.vid_bytes(vid), limit)

    def count_chunks(self, vid: int) -> int:
        return sum(1 for _ in self.iter_prefix(S.CHUNKS, S.vid_bytes(vid)))

    def all_chunks(self, after: bytes | None = None) -> Iterator[tuple[bytes, ChunkMeta]]:
        """Every chunk entry as ``(chunk key, entry)`` in key order, after key ``after``."""
        for k, v in self.iter_prefix(S.CHUNKS, b"", after):
            if k != after:
                yield k, ChunkMeta.unpack(v)

    def unreferenced_chunks(self, after: bytes | None, limit: int, cutoff: float,
                            live: set[int]) -> tuple[list[tuple[bytes, int]], int, bytes | None]:
        """Read up to ``limit`` chunk entries after key ``after``; return the
        ``(chunk key, length)`` of those of ``live`` vaults with no reference since
        before ``cutoff`` (and not re-uploaded since), the number read and the
        last key read (None at the end)."""
        found: list[tuple[bytes, int]] = []
        n = 0
        last: bytes | None = None
        # The scan must not evict the block cache: ingest's lookups and the
        # delete ops' re-checks need its index and filter blocks (measured at
        # 1M chunks: a delete op's lookups took 330 ms after a filling scan,
        # 150 ms without, and 10 ms as one MultiGet, see Txn.get_many).
        ro = ReadOptions()
        ro.fill_cache(False)  # type: ignore[call-arg]  # the stub omits the flag the binding takes
        cf = self.cf[S.CHUNKS]
        # Raw-mode column families hold bytes keys and values; the stub types them loosely.
        rows = cast("Iterator[tuple[bytes, bytes]]",
                    cf.items(read_opt=ro) if after is None else cf.items(from_key=after, read_opt=ro))
        for k, v in rows:
            if k == after:
                continue
            n += 1
            last = k
            if (v[_RC] == _ZERO8) if _FAST_RC else ChunkMeta.unpack(v).refcount == 0:
                meta = ChunkMeta.unpack(v)
                if meta.created_at <= cutoff and meta.zero_since <= cutoff and S.vid_of(k) in live:
                    found.append((k, meta.length))
            if n >= limit:
                return found, n, last
        return found, n, None

    # -- objects ---------------------------------------------------------------------

    def objects(self, vid: int, prefix: str = "", start_after: str | None = None,
                past: str | None = None) -> Iterator[tuple[str, bytes]]:
        """``(name, packed record)`` of the vault's objects under ``prefix``, in name order,
        after the name ``start_after`` or after every name that starts with ``past``."""
        vp = S.vid_bytes(vid)
        start = vp + start_after.encode() + b"\0" if start_after else None
        if past:
            start = vp + past.encode() + b"\xff"  # 0xff never occurs in UTF-8: after all of them
        for k, v in self.iter_prefix(S.OBJECTS, vp + prefix.encode(), start):
            yield S.object_name(k), v

    def all_objects(self) -> Iterator[tuple[int, bytes, bytes]]:
        """Every object as ``(vid, name bytes, packed record)``."""
        for k, v in self.iter_prefix(S.OBJECTS, b""):
            yield S.vid_of(k), k[S.VID_BYTES:], v

    def object_keys(self, vid: int, limit: int) -> list[bytes]:
        """The first ``limit`` object keys of a vault (for :meth:`TxnOps.delete_objects_at`)."""
        return self._first_keys(S.OBJECTS, S.vid_bytes(vid), limit)

    def count_objects(self, vid: int) -> int:
        return sum(1 for _ in self.iter_prefix(S.OBJECTS, S.vid_bytes(vid)))

    # -- usage -----------------------------------------------------------------------

    def usages(self) -> Iterator[tuple[int, Usage]]:
        for k, v in self.iter_prefix(S.USAGE, b""):
            yield S.vid_of(k), Usage.unpack(v)

    def usage_snapshots(self, day: str) -> Iterator[dict]:
        """The usage snapshots taken on ``day`` (YYYY-MM-DD)."""
        return (json.loads(v) for _, v in self.iter_prefix(S.USAGE_HIST, day.encode()))

    def usage_snapshot_keys_before(self, day: str, limit: int) -> list[bytes]:
        """Keys of up to ``limit`` snapshots older than ``day``, oldest first."""
        cutoff = day.encode()
        out: list[bytes] = []
        for k, _ in self.iter_prefix(S.USAGE_HIST, b""):
            if S.usage_hist_day(k) >= cutoff or len(out) >= limit:
                break
            out.append(k)
        return out

    # -- segments and intents ------------------------------------------------------------

    def segments(self) -> Iterator[tuple[int, SegMeta]]:
        for k, v in self.iter_prefix(S.SEGMENTS, b""):
            yield S.seg_id_of(k), SegMeta.unpack(v)

    def intent(self, iid: int) -> tuple[int, int, ObjectMeta, int] | None:
        """``(kind, vid, manifest, slices applied)`` of an open intent, None if it is closed."""
        raw = self.get(S.META, S.intent_key(iid))
        if raw is None:
            return None
        done = int.from_bytes(self.get(S.META, S.intent_key(iid) + S.INTENT_DONE) or b"\0", "big")
        return raw[0], S.vid_of(raw[1:9]), ObjectMeta.unpack(raw[9:]), done

    def pending_intents(self) -> list[int]:
        return [S.intent_id(k) for k, _ in self.iter_prefix(S.META, S.INTENT) if not k.endswith(S.INTENT_DONE)]

    # -- S3 buckets and multipart uploads ---------------------------------------------

    def buckets(self) -> Iterator[BucketRec]:
        return (BucketRec.load(v) for _, v in self.iter_prefix(S.META, S.BUCKET))

    def uploads(self, vid: int, bucket: str, key: str | None = None) -> Iterator[UploadRec]:
        """The bucket's uploads (of one object key, when given) in (key, id) order."""
        return (UploadRec.load(v) for _, v in self.iter_prefix(S.META, S.uploads_prefix(vid, bucket, key)))

    def all_uploads(self) -> Iterator[UploadRec]:
        return (UploadRec.load(v) for _, v in self.iter_prefix(S.META, S.UPLOAD))

    # -- markers ---------------------------------------------------------------------

    def markers(self, prefix: bytes) -> Iterator[tuple[bytes, bytes]]:
        return self.iter_prefix(S.META, prefix)

    def _first_keys(self, cf: str, prefix: bytes, n: int) -> list[bytes]:
        out: list[bytes] = []
        for k, _ in self.iter_prefix(cf, prefix):
            out.append(k)
            if len(out) >= n:
                break
        return out
