"""Offline consistency check and index rebuild (``objvault fsck``).

Runs against the data directories of a stopped server (RocksDB's lock keeps
it from running beside a live one). Without ``--rebuild-index`` it only
reads and reports; with it, it scans every segment record, verifies each
record's SHA-256, and rewrites the chunk entries, refcounts, usage counters
and segment bookkeeping from what is on disk and in the objects.
"""

from __future__ import annotations

import hashlib
import time
from collections import Counter, defaultdict
from typing import Callable

from . import refs
from .config import Config
from .meta import DELETABLE, PENDING, REFERENCED, ChunkMeta, Index, ObjectMeta, SegMeta, Txn, Usage
from .meta.schema import chunk_digest, chunk_key, vid_of
from .errors import ChunkCorrupt
from .store import FILE_HEADER_SIZE, Store, record_size

Progress = Callable[[str, int, "int | None"], None]
"""Told ``(step, done, total)`` as a check goes: ``total`` None while unknown."""

# How often (in entries or objects) a long step reports that it is still going.
REPORT_EVERY = 1 << 16


def _open(cfg: Config) -> tuple[Index, Store]:
    index = Index(cfg.first_data_dir / "index")
    store = Store(cfg.data_dirs, cfg.segment_bytes)
    for sid, (idx, path) in store.scan_files().items():
        store.register_segment(sid, idx, path)
    return index, store


def check(cfg: Config, rebuild: bool = False, progress: Progress | None = None) -> dict:
    """Compare the index with the segments and the objects; optionally rebuild it.

    Reference counts left half-changed by a server stopped in the middle of
    a large object write are settled first, as the server's start would.
    """
    index, store = _open(cfg)
    try:
        settled = refs.settle_all(index)
        report = _check(index, store, rebuild, progress or (lambda step, done, total: None))
        report["reference_intents_settled"] = settled
        return report
    finally:
        store.close()
        index.close()


def _check(index: Index, store: Store, rebuild: bool, progress: Progress) -> dict:
    t0 = time.monotonic()
    report: dict = {"segments": len(store.paths), "chunk_entries": 0, "bad_entries": [], "objects": 0,
                    "missing_references": [], "refcount_mismatches": 0, "usage_mismatches": [],
                    "rebuilt": rebuild}
    # 1. every chunk entry points at a record whose header names that chunk
    entries: dict[bytes, ChunkMeta] = {}
    for key, meta in index.all_chunks():
        entries[key] = meta
        report["chunk_entries"] += 1
        if report["chunk_entries"] % REPORT_EVERY == 0:
            progress("chunk entries", report["chunk_entries"], None)
        ok = meta.seg_id in store.paths
        if ok:
            try:
                hdr = store.read_record_header(meta.seg_id, meta.offset)
            except OSError:
                hdr = None
            ok = hdr is not None and chunk_key(hdr[0], hdr[1]) == key and hdr[2] == meta.length
        if not ok:
            report["bad_entries"].append({"vid": vid_of(key), "chunk": chunk_digest(key).hex()})
    progress("chunk entries", len(entries), len(entries))
    # 2. objects: references and recounts
    refs: Counter = Counter()
    usage: dict[int, list[int]] = defaultdict(lambda: [0, 0, 0, 0])
    for vid, name, raw in index.all_objects():
        obj = ObjectMeta.unpack(raw)
        report["objects"] += 1
        if report["objects"] % REPORT_EVERY == 0:
            progress("objects", report["objects"], None)
        usage[vid][1] += obj.size
        usage[vid][3] += 1
        for c in obj.chunks:
            ckey = chunk_key(vid, c)
            refs[ckey] += 1
            if ckey not in entries and len(report["missing_references"]) < 1000:
                report["missing_references"].append({"vid": vid, "object": name.decode(errors="replace"),
                                                      "chunk": c.hex()})
    for key, meta in entries.items():
        if meta.refcount != refs.get(key, 0):
            report["refcount_mismatches"] += 1
        usage[vid_of(key)][0] += meta.length
        usage[vid_of(key)][2] += 1
    for vid, (stored, logical, chunks, objects) in usage.items():
        have = index.usage(vid)
        want = Usage(stored, logical, chunks, objects)
        if have != want:
            report["usage_mismatches"].append({"vid": vid, "index": have.as_dict(), "recount": want.as_dict()})
    progress("objects", report["objects"], report["objects"])
    if rebuild:
        report.update(_rebuild(index, store, entries, refs, progress))
    report["seconds"] = round(time.monotonic() - t0, 3)
    report["ok"] = not (report["bad_entries"] or report["missing_references"] or report["refcount_mismatches"]
                        or report["usage_mismatches"]) or rebuild
    return report


def _rebuild(index: Index, store: Store, entries: dict, refs: Counter, progress: Progress) -> dict:
    """Scan every record, verify it, and rewrite chunk entries, refcounts, usage and segments."""
    found: dict[bytes, tuple[int, int, int]] = {}
    seg_meta: dict[int, list] = {}
    bad_records = 0
    for n, sid in enumerate(sorted(store.paths), 1):
        dir_idx = store.seg_dir[sid]
        end = FILE_HEADER_SIZE
        for off, vid, digest, length in store.scan_segment(sid):
            end = off + record_size(length)
            key = chunk_key(vid, digest)
            try:
                data = store.read(sid, off, length, what=f"segment {sid} offset {off}") if length else b""
            except ChunkCorrupt:
                data = None
            if data is None or hashlib.sha256(data).digest() != digest:
                bad_records += 1
                continue
            cur = entries.get(key)
            # Keep the location the index already uses when it is valid.
            if cur is not None and cur.seg_id == sid and cur.offset == off:
                found[key] = (sid, off, length)
            elif key not in found or (cur is not None and found[key][:2] != (cur.seg_id, cur.offset)):
                found.setdefault(key, (sid, off, length))
        seg_meta[sid] = [dir_idx, 1, end, 0, time.time()]
        progress("segments", n, len(store.paths))

    now = time.time()

    def op(txn: Txn) -> dict:
        usage: dict[int, list[int]] = defaultdict(lambda: [0, 0, 0, 0])
        for key, _ in list(index.all_chunks()):
            if key not in found:
                txn.delete_chunk_at(key)
        for key, (sid, off, length) in found.items():
            old = entries.get(key)
            rc = refs.get(key, 0)
            state = REFERENCED if rc else (old.state if old is not None and old.state != REFERENCED else PENDING)
            if rc == 0 and old is not None and old.refcount > 0:
                state = DELETABLE
            created = old.created_at if old is not None else now
            zero_since = 0.0 if rc else (old.zero_since if old is not None and old.zero_since else now)
            txn.put_chunk_at(key, ChunkMeta(sid, off, length, rc, state, created, zero_since))
            usage[vid_of(key)][0] += length
            usage[vid_of(key)][2] += 1
            seg_meta[sid][3] += record_size(length)
        for vid, _, raw in index.all_objects():
            created, size, _ = ObjectMeta.header(raw)
            usage[vid][1] += size
            usage[vid][3] += 1
        for vid, _ in list(index.usages()):
            if vid not in usage:
                txn.delete_usage(vid)
        for vid, vals in usage.items():
            txn.put_usage(vid, Usage(*vals))
        for sid, _ in list(index.segments()):
            if sid not in seg_meta:
                txn.delete_segment(sid)
        for sid, vals in seg_meta.items():
            txn.put_segment(sid, SegMeta(*vals))
        return {"records_indexed": len(found), "bad_records": bad_records}

    return index.run_sync(op)
