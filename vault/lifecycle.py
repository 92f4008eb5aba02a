"""The life and death of chunks: garbage collection, compaction, dead vaults,
and the daily usage history used for billing.

Garbage collection (ARCHITECTURE.md, "Lifecycle of a chunk"): a chunk is
deleted only when its refcount is 0 and the grace period
(``gc.grace_seconds``) has passed since both its ``created_at`` (reset by
every re-upload) and its ``zero_since``. The sweep reads the ``chunks``
column family outside the committer to find candidates, then deletes them
in committer ops of at most :attr:`GarbageCollector.batch` chunks that
re-check the condition against the committed state. Because there is one
committer, a dedup hit or a new reference either lands before the op (and
the re-check keeps the chunk) or after it (and finds the chunk gone: a
re-upload then stores it again, an object PUT answers ``missing_chunks``).
Each op removes the chunk entries, lowers the vault's ``stored_bytes`` and
``chunks`` and the segments' ``live_bytes``, and emits ``chunk_delete`` for
replication, all in one durable batch.

Dead vaults (``meta`` key ``dead_vault:<vid>``, written by
``VaultService.delete_vault``) lose their objects, then their chunks, then
their usage counter, in bounded ops; the marker goes last, so a crash
anywhere simply resumes at the next pass.

Compaction gives disk space back. A segment that is neither the active one
of its data directory nor still unsealed, and whose ``live_bytes`` fell
below ``gc.compact_threshold`` of its size, has its live records (those the
index still points to) read back with their block checksums verified and
appended to a segment of compaction's own (:class:`_Output`, beside the
ingest writer's active segment, so copies never wait in, or delay, ingest's
group commits). Each batch of copies is made durable with one
``fdatasync``; then one committer op repoints each chunk, but only if it
still points at the old record (GC or a re-upload may have moved on
meanwhile), and moves the record's size from the old segment's
``live_bytes`` to the new one's. The old segment's entry is deleted, and
then its file, only once every live record was repointed in a durable
batch and its ``live_bytes`` is 0. A crash at any point loses nothing:
copies not yet indexed are an unindexed tail that start-up cuts off, and
the old segment stays referenced until the batch that repoints its last
record. Copying is rate-limited (``gc.compact_rate_bytes_per_second``).
"""

from __future__ import annotations

import asyncio
import collections
import csv
import functools
import io
import json
import logging
import os
import struct
import time
from datetime import date, datetime, timedelta, timezone
from typing import Any, Callable, Iterable

from rocksdict import ReadOptions

from . import errors as E
from .config import GCConfig
from .events import ChunkDeleted
from .index import ChunkMeta, Index, SegMeta, Txn, Usage, jdump, seg_key, vid_bytes
from .metrics import gauge
from .service import VaultRec
from .store import (ALIGN, FILE_HEADER_SIZE, Location, Store, block_sums, file_header, record_header,
                    record_size)
from .workers import Job, Throttle

log = logging.getLogger("objvault.gc")

DEAD_VAULT_PREFIX = b"dead_vault:"
HISTORY_KEEP_DAYS = 400
HISTORY_INTERVAL_SECONDS = 3600.0

# The sweep tests the refcount straight from the packed ChunkMeta bytes:
# most chunks are alive, and unpacking a million of them costs more than
# the rest of the scan together.
_RC = slice(struct.calcsize("<IQQ"), struct.calcsize("<IQQQ"))
_FAST_RC = ChunkMeta._S.format == "<IQQQBdd"
_ZERO8 = bytes(8)


def _utc_day(ts: float) -> str:
    return datetime.fromtimestamp(ts, timezone.utc).date().isoformat()


# -- committer helpers ------------------------------------------------------------


_MISSING = object()


def _usage_add(txn: Txn, vid: int, **delta: int) -> None:
    key = vid_bytes(vid)
    txn.put("usage", key, Usage.unpack(txn.get("usage", key)).add(**delta).pack())


def _seg_live(txn: Txn, seg_id: int, delta: int) -> None:
    raw = txn.get("segments", seg_key(seg_id))
    if raw is None:  # cannot happen while an indexed chunk points into it
        log.error("live bytes of an unknown segment", extra={"segment": seg_id, "delta": delta})
        return
    seg = SegMeta.unpack(raw)
    txn.put("segments", seg_key(seg_id), seg._replace(live_bytes=seg.live_bytes + delta).pack())


def _seg_record(txn: Txn, loc: Location, live: bool) -> None:
    """A record at ``loc`` is durable: extend the segment's committed end (so a
    restart does not cut it off) and count it as live if the index uses it."""
    key = seg_key(loc.seg_id)
    raw = txn.get("segments", key)
    seg = SegMeta.unpack(raw) if raw else SegMeta(loc.dir_idx, 0, 0, 0, txn.now)
    seg = seg._replace(end=max(seg.end, loc.offset + loc.size),
                       live_bytes=seg.live_bytes + (loc.size if live else 0))
    txn.put("segments", key, seg.pack())


def _repoint(txn: Txn, key: bytes, old_seg: int, old_offset: int, loc: Location, raw: Any = _MISSING) -> bool:
    """Point chunk ``key`` at its copy ``loc`` if it still points at the old record.

    False if the chunk was deleted or moved meanwhile (the copy is then dead bytes).
    ``raw`` is the chunk's entry if the caller already read it.
    """
    if raw is _MISSING:
        raw = txn.get("chunks", key)
    moved = False
    if raw is not None:
        meta = ChunkMeta.unpack(raw)
        if meta.seg_id == old_seg and meta.offset == old_offset:
            txn.put("chunks", key, meta._replace(seg_id=loc.seg_id, offset=loc.offset).pack())
            _seg_live(txn, old_seg, -record_size(meta.length))
            moved = True
    _seg_record(txn, loc, moved)
    return moved


def _repoint_many(txn: Txn, seg_id: int, copies: list[tuple[tuple, Location]]) -> tuple[int, int]:
    """Repoint each copied record ``(offset, vid, digest, length)`` of ``seg_id`` to its
    copy; returns how many were moved and their bytes."""
    moved = nbytes = 0
    keys = [vid_bytes(vid) + digest for (_, vid, digest, _), _ in copies]
    for key, raw, ((offset, _, _, _), loc) in zip(keys, txn.get_many("chunks", keys), copies):
        if _repoint(txn, key, seg_id, offset, loc, raw):
            moved += 1
            nbytes += loc.size
    return moved, nbytes




def _delete_chunks(keys: list[bytes], grace: float, vaults: dict[int, VaultRec]) -> Callable[[Txn], tuple]:
    """Op: delete those of ``keys`` that are still unreferenced past the grace period."""

    def op(txn: Txn) -> tuple[int, int]:
        cutoff = txn.now - grace
        usage: dict[int, list[int]] = {}
        segs: dict[int, int] = {}
        deleted = freed = 0
        for key, raw in zip(keys, txn.get_many("chunks", keys)):
            if raw is None:
                continue
            meta = ChunkMeta.unpack(raw)
            # The re-check that makes GC safe: a re-upload (created_at) or a
            # new reference since the scan keeps the chunk.
            if meta.refcount != 0 or meta.created_at > cutoff or meta.zero_since > cutoff:
                continue
            txn.delete("chunks", key)
            vid = int.from_bytes(key[:8], "big")
            u = usage.setdefault(vid, [0, 0])
            u[0] += meta.length
            u[1] += 1
            segs[meta.seg_id] = segs.get(meta.seg_id, 0) + record_size(meta.length)
            txn.emit(ChunkDeleted(vid, key[8:], vaults.get(vid)))
            deleted += 1
            freed += meta.length
        for vid, (nbytes, n) in usage.items():
            _usage_add(txn, vid, stored=-nbytes, chunks=-n)
        for seg_id, nbytes in segs.items():
            _seg_live(txn, seg_id, -nbytes)
        return deleted, freed

    return op


def _purge_objects(keys: list[bytes]) -> Callable[[Txn], int]:
    def op(txn: Txn) -> int:
        n = 0
        for key, raw in zip(keys, txn.get_many("objects", keys)):
            if raw is not None:
                txn.delete("objects", key)
                n += 1
        return n

    return op


def _purge_chunks(keys: list[bytes]) -> Callable[[Txn], int]:
    """Op: delete a dead vault's chunks (no refcount check: their objects are gone)."""

    def op(txn: Txn) -> int:
        segs: dict[int, int] = {}
        n = 0
        for key, raw in zip(keys, txn.get_many("chunks", keys)):
            if raw is None:
                continue
            meta = ChunkMeta.unpack(raw)
            txn.delete("chunks", key)
            segs[meta.seg_id] = segs.get(meta.seg_id, 0) + record_size(meta.length)
            n += 1
        for seg_id, nbytes in segs.items():
            _seg_live(txn, seg_id, -nbytes)
        return n

    return op


def _finish_dead_vault(marker: bytes, vid: int) -> Callable[[Txn], bool]:
    def op(txn: Txn) -> bool:
        prefix = vid_bytes(vid)
        if next(txn.items("objects", prefix), None) is not None or \
                next(txn.items("chunks", prefix), None) is not None:
            return False
        txn.delete("usage", prefix)
        txn.delete("meta", marker)
        return True

    return op


def _drop_segments(seg_ids: list[int], active: set[int]) -> Callable[[Txn], tuple]:
    """Op: forget the index entries of segments that hold no live record any more."""

    def op(txn: Txn) -> tuple[list[int], list[tuple[int, int]]]:
        dropped, kept = [], []
        for sid in seg_ids:
            raw = txn.get("segments", seg_key(sid))
            if raw is None:
                dropped.append(sid)
                continue
            seg = SegMeta.unpack(raw)
            if seg.live_bytes != 0 or sid in active:
                kept.append((sid, seg.live_bytes))
                continue
            txn.delete("segments", seg_key(sid))
            dropped.append(sid)
        return dropped, kept

    return op


class _Output:
    """A segment written by compaction alone, beside the ingest writer's active one.

    Copies do not queue behind (or in front of) ingest in the segment
    writer's group commits: they are appended here in batches, each padded
    to a 4 KiB boundary (a block holding acknowledged bytes is never
    written again) and made durable by one ``fdatasync`` before the
    committer op that repoints its chunks. The file exists under its final
    name from the start; like an active segment, its index entry says how
    far it is committed, so a crash leaves at worst an unindexed tail that
    start-up cuts off, or a file the index never heard of, which start-up
    deletes. All methods block: call them from a worker thread.
    """

    def __init__(self, store: Store, dir_idx: int) -> None:
        self.store, self.dir_idx = store, dir_idx
        self.seg_id = store.allocate_segment_id()
        self.path = store.segment_path(dir_idx, self.seg_id)
        self.fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY | os.O_CLOEXEC, 0o640)
        try:
            _pwrite_all(self.fd, file_header(self.seg_id), 0)
            os.fdatasync(self.fd)
            _fsync_dir(self.path.parent)
        except OSError as e:
            os.close(self.fd)
            raise store.wrap_error(dir_idx, e) from None
        self.end = FILE_HEADER_SIZE
        store.register_segment(self.seg_id, dir_idx, self.path)

    @property
    def full(self) -> bool:
        return self.end >= self.store.segment_bytes

    def write(self, items: list[tuple[tuple, bytes, bytes]]) -> list[tuple[tuple, Location]]:
        """Append ``(record, data, block sums)`` items durably; their locations."""
        parts, locs, pos = [], [], self.end
        for rec, data, sums in items:
            size = record_size(len(data))
            parts += (record_header(rec[1], rec[2], len(data)), sums, data)
            locs.append((rec, Location(self.seg_id, pos, size, self.dir_idx)))
            pos += size
        parts.append(bytes(-pos % ALIGN))
        try:
            _pwrite_all(self.fd, b"".join(parts), self.end)
            os.fdatasync(self.fd)
        except OSError as e:
            # Never retry a failed sync; this file takes no more copies.
            self.end = self.store.segment_bytes
            raise self.store.wrap_error(self.dir_idx, e) from None
        self.end = pos + (-pos % ALIGN)
        return locs

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


def _pwrite_all(fd: int, data: bytes, offset: int) -> None:
    view = memoryview(data)
    while view:
        n = os.pwrite(fd, view, offset)
        offset += n
        view = view[n:]


def _fsync_dir(path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _seal(seg_id: int) -> Callable[[Txn], bool]:
    """Op: mark a finished compaction output sealed; False if nothing was ever indexed in it."""

    def op(txn: Txn) -> bool:
        raw = txn.get("segments", seg_key(seg_id))
        if raw is None:
            return False
        txn.put("segments", seg_key(seg_id), SegMeta.unpack(raw)._replace(sealed=1).pack())
        return True

    return op


# -- the GC job ----------------------------------------------------------------------


class GarbageCollector(Job):
    """One pass: purge dead vaults, sweep unreferenced chunks, compact segments.

    ``run_pass(dry_run=True)`` only counts what a pass would do.
    """

    name = "gc"
    batch = 1000                  # chunks (or objects) per committer op
    scan_slice = 10_000           # chunks read per trip to a worker thread
    # Share of one core the sweep may use. The scan is pure Python and
    # holds the GIL; unpaced it would take it from the event loop serving
    # ingest. 1M chunks scan in ~1.3 s of CPU, so a pass takes ~5 s.
    sweep_duty = 0.25
    read_batch_bytes = 8 << 20    # live records copied per write + fdatasync + index op
    # Share of the time compaction may spend reading and writing copies
    # (see _evacuate). Measured (bench/bench_compaction.py): ingest keeps
    # ~0.9 of its speed while compaction runs; idle, it copies ~60 MiB/s.
    compact_duty = 0.5
    # Larger records (only large chunks' own segments hold them) are copied
    # piece by piece to a segment of their own, so memory stays bounded.
    stream_copy_bytes = 8 << 20
    # A GET may have looked a chunk up just before it was repointed (or
    # deleted) and read it from a worker thread a moment later: the old
    # file stays this long after its index entry went. The window is one
    # trip through the thread pool, normally well under 10 ms. A read that
    # still loses the race fails verification or finds no file, and the
    # service then looks the chunk up again (VaultService.get_chunk).
    reader_drain_seconds = 0.5
    # An unsealed segment that is not active is either a large chunk's own
    # segment (never sealed until restart) or one the writer just left and
    # whose last records are on their way to the index; only the first kind
    # stays unsealed for long.
    settle_seconds = 30.0
    max_segments_per_pass = 64

    def __init__(self, index: Index, store: Store, cfg: GCConfig, clock: Callable[[], float] = time.time) -> None:
        super().__init__()
        self.index = index
        self.store = store
        self.cfg = cfg
        self.clock = clock
        self._unsealed_since: dict[int, float] = {}
        self._outputs: dict[int, _Output] = {}

    async def run_once(self) -> dict:
        return await self.run_pass(dry_run=False)

    async def run_pass(self, dry_run: bool = False) -> dict:
        t0 = time.monotonic()
        stats = {"dry_run": dry_run, "dead_vaults": 0, "dead_vaults_purged": 0, "dead_vault_objects_deleted": 0,
                 "dead_vault_chunks_deleted": 0, "chunks_scanned": 0, "chunks_deleted": 0, "bytes_freed": 0,
                 "segments_compacted": 0, "segments_deleted": 0, "segments_kept": 0, "records_copied": 0,
                 "bytes_copied": 0, "bytes_reclaimed": 0, "corrupt_records": 0}
        if dry_run:
            stats.update(would_delete=0, would_free_bytes=0, would_compact=0, would_reclaim_bytes=0)
        self.progress = {"phase": "dead_vaults"}
        await self._dead_vaults(stats, dry_run)
        t1 = time.monotonic()
        self.progress["phase"] = "sweep"
        await self._sweep(stats, dry_run)
        t2 = time.monotonic()
        self.progress["phase"] = "compact"
        await self._compact(stats, dry_run)
        t3 = time.monotonic()
        stats.update(dead_vaults_seconds=round(t1 - t0, 3), sweep_seconds=round(t2 - t1, 3),
                     compact_seconds=round(t3 - t2, 3), duration_seconds=round(t3 - t0, 3))
        return stats

    # -- dead vaults -----------------------------------------------------------------

    def _first_keys(self, cf: str, prefix: bytes, n: int) -> list[bytes]:
        out = []
        for k, _ in self.index.iter_prefix(cf, prefix):
            out.append(k)
            if len(out) >= n:
                break
        return out

    def _count(self, cf: str, prefix: bytes) -> int:
        return sum(1 for _ in self.index.iter_prefix(cf, prefix))

    async def _dead_vaults(self, stats: dict, dry_run: bool) -> None:
        loop = asyncio.get_running_loop()
        markers = await loop.run_in_executor(None, lambda: [k for k, _ in self.index.iter_prefix(
            "meta", DEAD_VAULT_PREFIX)])
        stats["dead_vaults"] = len(markers)
        for marker in markers:
            vid = int.from_bytes(marker[len(DEAD_VAULT_PREFIX):], "big")
            prefix = vid_bytes(vid)
            if dry_run:
                stats["dead_vault_objects_deleted"] += await loop.run_in_executor(None, self._count, "objects", prefix)
                stats["dead_vault_chunks_deleted"] += await loop.run_in_executor(None, self._count, "chunks", prefix)
                continue
            # Objects first: even a dead vault never has an object whose chunk is gone.
            for cf, make, stat in (("objects", _purge_objects, "dead_vault_objects_deleted"),
                                   ("chunks", _purge_chunks, "dead_vault_chunks_deleted")):
                while True:
                    keys = await loop.run_in_executor(None, self._first_keys, cf, prefix, self.batch)
                    if not keys:
                        break
                    stats[stat] += await self.index.run(make(keys))
                    self.progress[stat] = stats[stat]
            if await self.index.run(_finish_dead_vault(marker, vid)):
                stats["dead_vaults_purged"] += 1
                log.info("dead vault purged", extra={"vid": vid})

    # -- sweep -----------------------------------------------------------------------

    def _scan(self, after: bytes | None, cutoff: float, live: set[int]) -> tuple[list[tuple[bytes, int]], int, bytes | None]:
        """Read up to ``scan_slice`` chunk entries after ``after``; return GC candidates,
        the number read and the last key (None at the end)."""
        cf = self.index.cf["chunks"]
        found: list[tuple[bytes, int]] = []
        n = 0
        last = None
        # The scan must not evict the block cache: ingest's lookups and the
        # delete ops' re-checks need its index and filter blocks (measured at
        # 1M chunks: a delete op's lookups took 330 ms after a filling scan,
        # 150 ms without, and 10 ms as one MultiGet, see Txn.get_many).
        ro = ReadOptions()
        ro.fill_cache(False)
        for k, v in (cf.items(read_opt=ro) if after is None else cf.items(from_key=after, read_opt=ro)):
            if k == after:
                continue
            n += 1
            last = k
            if (v[_RC] == _ZERO8) if _FAST_RC else ChunkMeta.unpack(v).refcount == 0:
                meta = ChunkMeta.unpack(v)
                if meta.created_at <= cutoff and meta.zero_since <= cutoff and \
                        int.from_bytes(k[:8], "big") in live:
                    found.append((k, meta.length))
            if n >= self.scan_slice:
                return found, n, last
        return found, n, None

    async def _sweep(self, stats: dict, dry_run: bool) -> None:
        loop = asyncio.get_running_loop()
        grace = float(self.cfg.grace_seconds)
        vaults = await loop.run_in_executor(None, lambda: {
            rec.vid: rec for rec in (VaultRec.load(v) for _, v in self.index.iter_prefix("vaults", b""))})
        live = set(vaults)
        pending: list[bytes] = []
        after: bytes | None = None
        idle = (1 - self.sweep_duty) / self.sweep_duty if self.sweep_duty > 0 else 0.0

        async def flush() -> None:
            keys = pending[:]
            pending.clear()
            deleted, freed = await self.index.run(_delete_chunks(keys, grace, vaults))
            stats["chunks_deleted"] += deleted
            stats["bytes_freed"] += freed
            self.progress["chunks_deleted"] = stats["chunks_deleted"]

        while True:
            t0 = time.monotonic()
            found, n, after = await loop.run_in_executor(None, self._scan, after, self.clock() - grace, live)
            spent = time.monotonic() - t0
            stats["chunks_scanned"] += n
            self.progress["chunks_scanned"] = stats["chunks_scanned"]
            if dry_run:
                stats["would_delete"] += len(found)
                stats["would_free_bytes"] += sum(length for _, length in found)
            else:
                for key, _ in found:
                    pending.append(key)
                    if len(pending) >= self.batch:
                        await flush()
            if after is None:
                break
            if idle:
                await asyncio.sleep(spent * idle)
        if pending:
            await flush()

    # -- compaction ------------------------------------------------------------------

    def _file_size(self, seg_id: int) -> int:
        path = self.store.paths.get(seg_id)
        try:
            return path.stat().st_size if path is not None else 0
        except OSError:
            return 0

    def _candidates(self) -> list[tuple[float, int, SegMeta]]:
        segs = [(int.from_bytes(k, "big"), SegMeta.unpack(v)) for k, v in self.index.iter_prefix("segments", b"")]
        active = self.store.active_segments()
        now = time.monotonic()
        threshold = self.cfg.compact_threshold
        unsealed: dict[int, float] = {}
        out = []
        for sid, seg in segs:
            if sid in active:
                continue
            if not seg.sealed:
                unsealed[sid] = self._unsealed_since.get(sid, now)
                if now - unsealed[sid] < self.settle_seconds:
                    continue
            if seg.live_bytes < 0:
                log.error("segment with negative live bytes", extra={"segment": sid, "live_bytes": seg.live_bytes})
                continue
            span = seg.end - FILE_HEADER_SIZE
            if seg.live_bytes == 0:
                out.append((0.0, sid, seg))
            elif span > 0 and seg.live_bytes / span < threshold:
                out.append((seg.live_bytes / span, sid, seg))
        self._unsealed_since = unsealed
        out.sort(key=lambda t: (t[0], t[1]))
        # Empty segments cost one index op each: all of them; copying is capped.
        empties = [t for t in out if t[0] == 0.0]
        return empties + [t for t in out if t[0] > 0.0][:self.max_segments_per_pass]

    async def _compact(self, stats: dict, dry_run: bool) -> None:
        loop = asyncio.get_running_loop()
        work = await loop.run_in_executor(None, self._candidates)
        if dry_run:
            stats["would_compact"] = len(work)
            stats["would_reclaim_bytes"] = sum(max(0, self._file_size(sid) - seg.live_bytes) for _, sid, seg in work)
            return
        limiter = Throttle(self.cfg.compact_rate_bytes_per_second)
        # Segments whose index entry is gone, waiting out the reader drain
        # before their file goes: (due, seg_id, bytes copied out of it).
        doomed: collections.deque[tuple[float, int, int]] = collections.deque()
        self._outputs = {}
        try:
            empties = [sid for ratio, sid, _ in work if ratio == 0.0]
            for i in range(0, len(empties), 256):
                await self._drop(empties[i:i + 256], {}, doomed, stats)
            rest = [(sid, seg) for ratio, sid, seg in work if ratio > 0.0]
            for n, (sid, seg) in enumerate(rest):
                self.progress.update(segment=sid, segments_done=n, segments_total=len(rest))
                if sid not in self.store.paths:
                    log.error("segment file missing", extra={"segment": sid, "live_bytes": seg.live_bytes})
                    stats["segments_kept"] += 1
                    continue
                ok, nbytes = await self._evacuate(sid, limiter, stats)
                if ok:
                    await self._drop([sid], {sid: nbytes}, doomed, stats)
                else:
                    stats["segments_kept"] += 1
                await self._forget_due(doomed, stats, time.monotonic())
        finally:
            # Also on cancellation: outputs are sealed, and the files whose
            # entries are gone must follow.
            await asyncio.shield(self._finish(doomed, stats))

    async def _finish(self, doomed: collections.deque, stats: dict) -> None:
        for out in self._outputs.values():
            await self._close_output(out)
        self._outputs = {}
        if doomed:
            await self._forget_all(doomed, stats)

    async def _close_output(self, out: _Output) -> None:
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, out.close)
        try:
            used = await self.index.run(_seal(out.seg_id))
        except E.VaultError:
            return  # left unsealed: start-up cuts it to its committed end and seals it
        if not used:
            await loop.run_in_executor(None, self.store.forget_segment, out.seg_id)

    async def _output(self, dir_idx: int) -> _Output:
        out = self._outputs.get(dir_idx)
        if out is not None and out.full:
            del self._outputs[dir_idx]
            await self._close_output(out)
            out = None
        if out is None:
            out = await asyncio.get_running_loop().run_in_executor(None, _Output, self.store, dir_idx)
            self._outputs[dir_idx] = out
        return out

    async def _drop(self, seg_ids: list[int], copied: dict[int, int], doomed: collections.deque,
                    stats: dict) -> None:
        dropped, kept = await self.index.run(_drop_segments(seg_ids, self.store.active_segments()))
        for sid, live in kept:
            # Every record the index used was repointed, yet the counter
            # disagrees: keep the file (losing nothing) and say so.
            log.error("segment kept: live bytes left after compaction", extra={"segment": sid, "live_bytes": live})
            stats["segments_kept"] += 1
        due = time.monotonic() + self.reader_drain_seconds
        for sid in dropped:
            doomed.append((due, sid, copied.get(sid, 0)))

    async def _forget_due(self, doomed: collections.deque, stats: dict, now: float) -> None:
        due = []
        while doomed and doomed[0][0] <= now:
            due.append(doomed.popleft())
        if not due:
            return
        sizes = await asyncio.get_running_loop().run_in_executor(None, self._forget, [sid for _, sid, _ in due])
        for _, sid, copied in due:
            stats["segments_compacted" if copied else "segments_deleted"] += 1
            stats["bytes_reclaimed"] += sizes.get(sid, 0) - copied
        self.progress["bytes_reclaimed"] = stats["bytes_reclaimed"]
        log.info("segments removed", extra={"segments": [sid for _, sid, _ in due], "bytes": sum(sizes.values())})

    async def _forget_all(self, doomed: collections.deque, stats: dict) -> None:
        wait = doomed[-1][0] - time.monotonic()
        if wait > 0:
            await asyncio.sleep(wait)
        await self._forget_due(doomed, stats, float("inf"))

    def _forget(self, seg_ids: list[int]) -> dict[int, int]:
        sizes = {}
        for sid in seg_ids:
            sizes[sid] = self._file_size(sid)
            self.store.forget_segment(sid)
        return sizes

    def _live_records(self, seg_id: int) -> list[tuple[int, int, bytes, int]]:
        """Records of ``seg_id`` the index still points to: ``(offset, vid, digest, length)``."""
        records = list(self.store.scan_segment(seg_id))
        cf = self.index.cf["chunks"]
        live = []
        for i in range(0, len(records), 1000):
            part = records[i:i + 1000]
            values = cf.get([vid_bytes(vid) + digest for _, vid, digest, _ in part])
            for rec, raw in zip(part, values):
                if raw is not None:
                    meta = ChunkMeta.unpack(raw)
                    if meta.seg_id == seg_id and meta.offset == rec[0]:
                        live.append(rec)
        return live

    def _read(self, seg_id: int, recs: list) -> list[tuple[tuple, bytes | None, bytes]]:
        out = []
        for rec in recs:
            off, vid, digest, length = rec
            try:
                data = self.store.read(seg_id, off, length, what=f"vault id {vid} chunk {digest.hex()}",
                                       mapped=False)
            except E.ChunkCorrupt as e:
                # Never copy damage around: the record stays where it is (and
                # so does its segment) until scrub repairs it from a replica.
                log.error("compaction: corrupt record left in place",
                          extra={"segment": seg_id, "chunk": digest.hex(), "detail": e.detail})
                out.append((rec, None, b""))
                continue
            out.append((rec, data, block_sums(data)))
        return out

    def _stream_copy(self, dir_idx: int, seg_id: int, rec: tuple) -> Location:
        off, vid, digest, length = rec
        what = f"vault id {vid} chunk {digest.hex()}"
        w = self.store.stream(dir_idx, vid, digest, length)
        try:
            pos = 0
            while pos < length:
                end = min(length, pos + (8 << 20))
                w.write(self.store.read(seg_id, off, length, pos, end, what))
                pos = end
            return w.commit()
        except BaseException:
            w.abort()
            raise

    async def _evacuate(self, seg_id: int, limiter: Throttle, stats: dict) -> tuple[bool, int]:
        """Copy the live records of ``seg_id`` and repoint them; ``(all moved, bytes moved)``."""
        loop = asyncio.get_running_loop()
        live = await loop.run_in_executor(None, self._live_records, seg_id)
        if not live:
            return True, 0
        dir_idx = self.store.seg_dir.get(seg_id, 0)
        if dir_idx in self.store.failed_dirs or dir_idx >= len(self.store.dirs):
            dir_idx = self.store.pick_dir()
        ok = True
        moved_bytes = 0
        big = self.stream_copy_bytes
        idle = (1 - self.compact_duty) / self.compact_duty if self.compact_duty > 0 else 0.0
        i = 0
        while i < len(live):
            t0 = time.monotonic()
            try:
                if live[i][3] > big:
                    rec = live[i]
                    i += 1
                    loc = await loop.run_in_executor(None, self._stream_copy, dir_idx, seg_id, rec)
                    copies, nbytes = [(rec, loc)], rec[3]
                else:
                    j, nbytes = i, 0
                    while j < len(live) and j - i < self.batch and live[j][3] <= big and \
                            (j == i or nbytes + live[j][3] <= self.read_batch_bytes):
                        nbytes += live[j][3]
                        j += 1
                    batch, i = live[i:j], j
                    items = []
                    for rec, data, sums in await loop.run_in_executor(None, self._read, seg_id, batch):
                        if data is None:
                            ok = False
                            stats["corrupt_records"] += 1
                        else:
                            items.append((rec, data, sums))
                    if not items:
                        continue
                    out = await self._output(dir_idx)
                    copies = await loop.run_in_executor(None, out.write, items)
                busy = time.monotonic() - t0
                moved, nmoved = await self.index.run(
                    functools.partial(_repoint_many, seg_id=seg_id, copies=copies))
            except E.VaultError as e:
                log.error("compaction: copy failed", extra={"segment": seg_id, "detail": e.detail})
                return False, moved_bytes
            stats["records_copied"] += moved
            stats["bytes_copied"] += sum(loc.size for _, loc in copies)
            moved_bytes += nmoved
            self.progress["bytes_copied"] = stats["bytes_copied"]
            # Two brakes: the configured rate, and a duty cycle on the time
            # the copy itself took. A busy disk makes that time longer, so
            # compaction backs off exactly when ingest needs the disk.
            if idle:
                await asyncio.sleep(busy * idle)
            await limiter.take(nbytes)
        return ok, moved_bytes


# -- usage and its history ------------------------------------------------------------


def usage_row(name: str, usage: Usage, quota: int | None) -> dict:
    ratio = round(usage.logical_bytes / usage.stored_bytes, 4) if usage.stored_bytes > 0 else 1.0
    return {"name": name, "stored_bytes": usage.stored_bytes, "logical_bytes": usage.logical_bytes,
            "chunks": usage.chunks, "objects": usage.objects, "quota_bytes": quota, "dedup_ratio": ratio}


def current_usage(index: Index) -> list[dict]:
    """Every live vault's usage now, by name."""
    rows = []
    for _, raw in index.iter_prefix("vaults", b""):
        rec = VaultRec.load(raw)
        rows.append(usage_row(rec.name, Usage.unpack(index.get("usage", vid_bytes(rec.vid))), rec.quota_bytes))
    return rows


def usage_history(index: Index, day: str) -> list[dict]:
    """The snapshot taken on ``day`` (YYYY-MM-DD), by name; empty if none."""
    rows = []
    for _, raw in index.iter_prefix("usage_hist", day.encode()):
        d = json.loads(raw)
        rows.append(usage_row(d["name"], Usage(d["stored_bytes"], d["logical_bytes"], d["chunks"], d["objects"]),
                              d.get("quota_bytes")))
    return sorted(rows, key=lambda r: r["name"])


def usage_csv(day: str, rows: list[dict]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    cols = ["name", "stored_bytes", "logical_bytes", "chunks", "objects", "quota_bytes", "dedup_ratio"]
    w.writerow(["date", *cols])
    for r in rows:
        w.writerow([day, *("" if r[c] is None else r[c] for c in cols)])
    return buf.getvalue()


class UsageReports:
    """Usage as the admin API reports it; the scans run in a thread."""

    def __init__(self, index: Index) -> None:
        self.index = index

    async def current(self) -> tuple[str, list[dict]]:
        """Today (UTC, YYYY-MM-DD) and every live vault's usage now."""
        rows = await asyncio.get_running_loop().run_in_executor(None, current_usage, self.index)
        return _utc_day(time.time()), rows

    async def on(self, day: str) -> list[dict]:
        """The snapshot of ``day`` (YYYY-MM-DD); empty if none was taken."""
        return await asyncio.get_running_loop().run_in_executor(None, usage_history, self.index, day)


class UsageHistory(Job):
    """Once a day (UTC), a usage snapshot per vault in ``usage_hist``
    (key ``YYYY-MM-DD`` + vid); snapshots older than :data:`HISTORY_KEEP_DAYS`
    days are pruned. A pass writes only the snapshots missing for today, so
    it can run hourly (and at start-up) and still writes each one once."""

    name = "usage_history"
    batch = 1000

    def __init__(self, index: Index, clock: Callable[[], float] = time.time,
                 keep_days: int = HISTORY_KEEP_DAYS) -> None:
        super().__init__()
        self.index = index
        self.clock = clock
        self.keep_days = keep_days

    async def run_once(self) -> dict:
        loop = asyncio.get_running_loop()
        today = _utc_day(self.clock())
        vids = await loop.run_in_executor(None, lambda: [
            (rec.vid, rec.name, rec.quota_bytes)
            for rec in (VaultRec.load(v) for _, v in self.index.iter_prefix("vaults", b""))])
        written = 0
        for i in range(0, len(vids), self.batch):
            written += await self.index.run(functools.partial(self._snapshot, today, vids[i:i + self.batch]))
        cutoff = (date.fromisoformat(today) - timedelta(days=self.keep_days)).isoformat().encode()
        pruned = 0
        while True:
            old = await loop.run_in_executor(None, self._older, cutoff)
            if not old:
                break
            pruned += await self.index.run(functools.partial(self._prune, old))
        return {"date": today, "snapshots_written": written, "snapshots_pruned": pruned}

    def _older(self, cutoff: bytes) -> list[bytes]:
        out = []
        for k, _ in self.index.iter_prefix("usage_hist", b""):
            if k[:10] >= cutoff or len(out) >= self.batch:
                break
            out.append(k)
        return out

    @staticmethod
    def _snapshot(day: str, vids: list[tuple[int, str, int | None]], txn: Txn) -> int:
        n = 0
        for vid, name, quota in vids:
            key = day.encode() + vid_bytes(vid)
            if txn.get("usage_hist", key) is not None:
                continue
            if txn.get("vaults", name.encode()) is None:  # deleted since the listing
                continue
            u = Usage.unpack(txn.get("usage", vid_bytes(vid)))
            txn.put("usage_hist", key, jdump({"name": name, "vid": vid, "quota_bytes": quota, "at": txn.now,
                                              **u.as_dict()}))
            n += 1
        return n

    @staticmethod
    def _prune(keys: list[bytes], txn: Txn) -> int:
        for k in keys:
            txn.delete("usage_hist", k)
        return len(keys)


def usage_gauges(index: Index) -> Callable[[], Iterable]:
    """Per-vault usage gauges (label ``vault``), computed at scrape time."""

    def collect():
        rows = current_usage(index)
        for field, doc in (("stored_bytes", "Bytes of distinct chunks stored"),
                           ("logical_bytes", "Sum of object sizes"),
                           ("chunks", "Distinct chunks stored"), ("objects", "Objects")):
            yield gauge(f"objvault_vault_{field}", f"{doc}, per vault", ["vault"],
                        [([r["name"]], r[field]) for r in rows])
        yield gauge("objvault_vault_quota_bytes", "Quota, per vault that has one", ["vault"],
                    [([r["name"]], r["quota_bytes"]) for r in rows if r["quota_bytes"] is not None])

    return collect
