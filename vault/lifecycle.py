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
``chunks`` and the segments' ``live_bytes``, and emits ``ChunkDeleted`` for
replication, all in one durable batch.

Dead vaults (``meta`` key ``dead_vault:<vid>``, written by
``VaultService.delete_vault``) lose their objects, then their chunks, then
their usage counter, in bounded ops; the marker goes last, so a crash
anywhere simply resumes at the next pass.

Compaction gives disk space back. A segment that is neither the active one
of its data directory nor still unsealed, and whose ``live_bytes`` fell
below ``gc.compact_threshold`` of its size, has its live records (those the
index still points to) read back with their block checksums verified and
appended to a segment of compaction's own
(:meth:`vault.store.Store.compaction_output`, beside the ingest writer's
active segment, so copies never wait in, or delay, ingest's group commits).
Each batch of copies is made durable with one ``fdatasync``; then one
committer op repoints each chunk, but only if it still points at the old
record (GC or a re-upload may have moved on meanwhile), and moves the
record's size from the old segment's ``live_bytes`` to the new one's. The
old segment's entry is deleted, and then its file, only once every live
record was repointed in a durable batch and its ``live_bytes`` is 0. A crash
at any point loses nothing: copies not yet indexed are an unindexed tail
that start-up cuts off, and the old segment stays referenced until the batch
that repoints its last record. Copying is rate-limited
(``gc.compact_rate_bytes_per_second``).
"""

from __future__ import annotations

import asyncio
import collections
import csv
import functools
import io
import logging
import time
from datetime import date, datetime, timedelta, timezone
from typing import Callable, Iterable

from . import errors as E
from .config import GCConfig
from .events import ChunkDeleted
from .meta import Index, SegMeta, Txn, Usage, VaultRec
from .meta.schema import chunk_digest, chunk_key, vid_of
from .metrics import gauge
from .store import FILE_HEADER_SIZE, ByteData, CompactionOutput, Location, Store, block_sums, record_size
from .workers import Job, Throttle

log = logging.getLogger("objvault.gc")

HISTORY_KEEP_DAYS = 400
HISTORY_INTERVAL_SECONDS = 3600.0

def _utc_day(ts: float) -> str:
    return datetime.fromtimestamp(ts, timezone.utc).date().isoformat()


# -- committer helpers ------------------------------------------------------------


def _repoint_many(txn: Txn, seg_id: int, copies: list[tuple[tuple, Location]]) -> tuple[int, int]:
    """Repoint each copied record ``(offset, vid, digest, length)`` of ``seg_id`` to its
    copy; returns how many were moved and their bytes."""
    moved = nbytes = 0
    keys = [chunk_key(vid, digest) for (_, vid, digest, _), _ in copies]
    for key, meta, ((offset, _, _, _), loc) in zip(keys, txn.chunks_at(keys), copies):
        if txn.repoint_chunk(key, meta, seg_id, offset, loc):
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
        for key, meta in zip(keys, txn.chunks_at(keys)):
            if meta is None:
                continue
            # The re-check that makes GC safe: a re-upload (created_at) or a
            # new reference since the scan keeps the chunk.
            if meta.refcount != 0 or meta.created_at > cutoff or meta.zero_since > cutoff:
                continue
            txn.delete_chunk_at(key)
            vid = vid_of(key)
            u = usage.setdefault(vid, [0, 0])
            u[0] += meta.length
            u[1] += 1
            segs[meta.seg_id] = segs.get(meta.seg_id, 0) + record_size(meta.length)
            txn.emit(ChunkDeleted(vid, chunk_digest(key), vaults.get(vid)))
            deleted += 1
            freed += meta.length
        for vid, (nbytes, n) in usage.items():
            txn.add_usage(vid, stored=-nbytes, chunks=-n)
        for seg_id, nbytes in segs.items():
            txn.seg_update(seg_id, -nbytes)
        return deleted, freed

    return op


def _purge_objects(keys: list[bytes]) -> Callable[[Txn], int]:
    return lambda txn: txn.delete_objects_at(keys)


def _purge_chunks(keys: list[bytes]) -> Callable[[Txn], int]:
    """Op: delete a dead vault's chunks (no refcount check: their objects are gone)."""

    def op(txn: Txn) -> int:
        segs: dict[int, int] = {}
        n = 0
        for key, meta in zip(keys, txn.chunks_at(keys)):
            if meta is None:
                continue
            txn.delete_chunk_at(key)
            segs[meta.seg_id] = segs.get(meta.seg_id, 0) + record_size(meta.length)
            n += 1
        for seg_id, nbytes in segs.items():
            txn.seg_update(seg_id, -nbytes)
        return n

    return op


def _drop_segments(seg_ids: list[int], active: set[int]) -> Callable[[Txn], tuple]:
    """Op: forget the index entries of segments that hold no live record any more."""

    def op(txn: Txn) -> tuple[list[int], list[tuple[int, int]]]:
        dropped, kept = [], []
        for sid in seg_ids:
            seg = txn.segment(sid)
            if seg is None:
                dropped.append(sid)
                continue
            if seg.live_bytes != 0 or sid in active:
                kept.append((sid, seg.live_bytes))
                continue
            txn.delete_segment(sid)
            dropped.append(sid)
        return dropped, kept

    return op




def _seal(seg_id: int) -> Callable[[Txn], bool]:
    """Op: mark a finished compaction output sealed; False if nothing was ever indexed in it."""
    return lambda txn: txn.seal_segment(seg_id)


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
        self._outputs: dict[int, CompactionOutput] = {}

    async def run_once(self) -> dict:
        return await self.run_pass(dry_run=False)

    async def run_pass(self, dry_run: bool = False) -> dict:
        t0 = time.monotonic()
        stats: dict[str, float] = {
            "dry_run": dry_run, "dead_vaults": 0, "dead_vaults_purged": 0, "dead_vault_objects_deleted": 0,
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

    async def _dead_vaults(self, stats: dict, dry_run: bool) -> None:
        loop = asyncio.get_running_loop()
        vids = await loop.run_in_executor(None, self.index.dead_vaults)
        stats["dead_vaults"] = len(vids)
        for vid in vids:
            if dry_run:
                stats["dead_vault_objects_deleted"] += await loop.run_in_executor(None, self.index.count_objects, vid)
                stats["dead_vault_chunks_deleted"] += await loop.run_in_executor(None, self.index.count_chunks, vid)
                continue
            # Objects first: even a dead vault never has an object whose chunk is gone.
            for first, make, stat in ((self.index.object_keys, _purge_objects, "dead_vault_objects_deleted"),
                                      (self.index.chunk_keys, _purge_chunks, "dead_vault_chunks_deleted")):
                while True:
                    keys = await loop.run_in_executor(None, first, vid, self.batch)
                    if not keys:
                        break
                    stats[stat] += await self.index.run(make(keys))
                    self.progress[stat] = stats[stat]
            if await self.index.run(lambda txn: txn.finish_dead_vault(vid)):
                stats["dead_vaults_purged"] += 1
                log.info("dead vault purged", extra={"vid": vid})

    # -- sweep -----------------------------------------------------------------------

    async def _sweep(self, stats: dict, dry_run: bool) -> None:
        loop = asyncio.get_running_loop()
        grace = float(self.cfg.grace_seconds)
        vaults = await loop.run_in_executor(None, lambda: {rec.vid: rec for rec in self.index.vaults()})
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
            found, n, after = await loop.run_in_executor(None, self.index.unreferenced_chunks, after,
                                                         self.scan_slice, self.clock() - grace, live)
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
        segs = list(self.index.segments())
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

    async def _close_output(self, out: CompactionOutput) -> None:
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, out.close)
        try:
            used = await self.index.run(_seal(out.seg_id))
        except E.VaultError:
            return  # left unsealed: start-up cuts it to its committed end and seals it
        if not used:
            await loop.run_in_executor(None, self.store.forget_segment, out.seg_id)

    async def _output(self, dir_idx: int) -> CompactionOutput:
        out = self._outputs.get(dir_idx)
        if out is not None and out.full:
            del self._outputs[dir_idx]
            await self._close_output(out)
            out = None
        if out is None:
            out = await asyncio.get_running_loop().run_in_executor(None, self.store.compaction_output, dir_idx)
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
        live = []
        for i in range(0, len(records), 1000):
            part = records[i:i + 1000]
            metas = self.index.chunks_at([chunk_key(vid, digest) for _, vid, digest, _ in part])
            for rec, meta in zip(part, metas):
                if meta is not None and meta.seg_id == seg_id and meta.offset == rec[0]:
                    live.append(rec)
        return live

    def _read(self, seg_id: int, recs: list) -> list[tuple[tuple, bytes | memoryview | None, bytes]]:
        out: list[tuple[tuple, bytes | memoryview | None, bytes]] = []
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
                    items: list[tuple[tuple, ByteData, bytes]] = []
                    for rec, data, sums in await loop.run_in_executor(None, self._read, seg_id, batch):
                        if data is None:
                            ok = False
                            stats["corrupt_records"] += 1
                        else:
                            items.append((rec, data, sums))
                    if not items:
                        continue
                    out = await self._output(dir_idx)
                    locs = await loop.run_in_executor(
                        None, out.append, [(rec[1], rec[2], data, sums) for rec, data, sums in items])
                    copies = [(rec, loc) for (rec, _, _), loc in zip(items, locs)]
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
    return [usage_row(rec.name, index.usage(rec.vid), rec.quota_bytes) for rec in index.vaults()]


def usage_history(index: Index, day: str) -> list[dict]:
    """The snapshot taken on ``day`` (YYYY-MM-DD), by name; empty if none."""
    rows = []
    for d in index.usage_snapshots(day):
        rows.append(usage_row(d["name"], Usage(d["stored_bytes"], d["logical_bytes"], d["chunks"], d["objects"]),
                              d.get("quota_bytes")))
    return sorted(rows, key=lambda r: r["name"])


def vault_history(index: Index, vid: int, today: str, days: int = HISTORY_KEEP_DAYS) -> list[dict]:
    """The vault's daily snapshots of the last ``days`` days up to ``today``, oldest first;
    days without a snapshot (the server was down) are left out."""
    last = date.fromisoformat(today)
    out = []
    for back in range(days - 1, -1, -1):
        day = (last - timedelta(days=back)).isoformat()
        snap = index.usage_snapshot(day, vid)
        if snap is not None:
            out.append({"date": day, "stored_bytes": snap["stored_bytes"], "logical_bytes": snap["logical_bytes"],
                        "objects": snap["objects"]})
    return out


def unchanged_since(index: Index, vid: int, today: str) -> str:
    """The oldest day of the unbroken run of daily snapshots, back from ``today``,
    that equal the vault's usage now: no object was written or deleted since
    (to a day's precision). ``today`` itself when even today's snapshot differs."""
    now = index.usage(vid)
    day = date.fromisoformat(today)
    since = today
    for _ in range(HISTORY_KEEP_DAYS):
        snap = index.usage_snapshot(day.isoformat(), vid)
        if snap is None or (snap["logical_bytes"], snap["objects"]) != (now.logical_bytes, now.objects):
            break
        since = day.isoformat()
        day -= timedelta(days=1)
    return since


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

    async def history(self, vid: int) -> list[dict]:
        """One vault's daily snapshots (:func:`vault_history`), oldest first."""
        today = _utc_day(time.time())
        return await asyncio.get_running_loop().run_in_executor(None, vault_history, self.index, vid, today)

    async def unchanged_since(self, vids: list[int]) -> dict[int, str]:
        """For each vault, the day since which it has not changed (:func:`unchanged_since`)."""
        today = _utc_day(time.time())

        def scan() -> dict[int, str]:
            return {vid: unchanged_since(self.index, vid, today) for vid in vids}

        return await asyncio.get_running_loop().run_in_executor(None, scan)


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
            (rec.vid, rec.name, rec.quota_bytes) for rec in self.index.vaults()])
        written = 0
        for i in range(0, len(vids), self.batch):
            written += await self.index.run(functools.partial(self._snapshot, today, vids[i:i + self.batch]))
        cutoff = (date.fromisoformat(today) - timedelta(days=self.keep_days)).isoformat()
        pruned = 0
        while True:
            old = await loop.run_in_executor(None, self.index.usage_snapshot_keys_before, cutoff, self.batch)
            if not old:
                break
            pruned += await self.index.run(functools.partial(self._prune, old))
        return {"date": today, "snapshots_written": written, "snapshots_pruned": pruned}

    @staticmethod
    def _snapshot(day: str, vids: list[tuple[int, str, int | None]], txn: Txn) -> int:
        n = 0
        for vid, name, quota in vids:
            if txn.vault(name) is None:  # deleted since the listing
                continue
            doc = {"name": name, "vid": vid, "quota_bytes": quota, "at": txn.now, **txn.usage(vid).as_dict()}
            n += txn.snapshot_usage(day, vid, doc)
        return n

    @staticmethod
    def _prune(keys: list[bytes], txn: Txn) -> int:
        txn.delete_usage_snapshots(keys)
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
