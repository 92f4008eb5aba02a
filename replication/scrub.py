"""Scrub and self-healing: re-hash stored chunks, repair bad ones from a target.

:class:`Healer` repairs one chunk: it quarantines it (``meta``
``quarantine:<vid><id>``), fetches it back from every target holding the
vault in turn, verifies the bytes against the chunk id (SHA-256), appends
them to the active segment and repoints the chunk's index entry through the
committer (refcount, state and times unchanged; the old record becomes dead
bytes for compaction). A chunk no target can repair stays quarantined and is
reported as *damaged* (log line, ``objvault_scrub_damaged_chunks``, ``GET
/v1/admin/scrub`` with the objects that reference it). The GET path uses the
same healer (``ChunkService.healer``): a read that meets a bad
checksum is repaired before it is answered, or answers 500 ``chunk_corrupt``,
never bad bytes.

A chunk whose block checksums still pass but whose SHA-256 does not (the
bytes were wrong before they were checksummed) and that no target can repair
is re-recorded with checksums that can never match, so every later read fails
verification instead of serving it.

:class:`Scrubber` is the periodic pass (``[scrub] interval_seconds``): it reads
every indexed chunk, in segment order page by page, at
``rate_bytes_per_second`` at most (the shared :class:`vault.workers.Throttle`; 0 = unthrottled), checks
the block checksums and the full SHA-256, and heals what fails.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import time
from itertools import islice

from vault import errors as E
from vault.config import TargetConfig
from vault.events import ChunkQuarantined
from vault.meta import ChunkMeta, ObjectMeta, Txn, VaultRec
from vault.meta.schema import (QUARANTINE, SCRUB_EPOCH, SCRUB_LAST_PASS, chunk_digest, chunk_key, quarantine_chunk,
                               quarantine_key, vid_of)
from vault.timefmt import iso
from vault.store import ByteData, Location, block_sums, nblocks

from vault.workers import Job, Throttle

from .target import Replica
from .worker import Context

log = logging.getLogger("objvault.scrub")

PAGE = 2048
OBJECTS_LISTED = 100


READ_HEAL_SECONDS = 30.0


def check_chunk(store, meta: ChunkMeta, digest: bytes, what: str) -> str:
    """``ok``, ``corrupt`` (a block checksum failed or the record is short),
    ``mismatch`` (checksums pass, SHA-256 does not) or ``moved`` (the segment is gone)."""
    try:
        data = store.read(meta.seg_id, meta.offset, meta.length, 0, meta.length, what)
    except E.ChunkCorrupt:
        return "corrupt"
    except (KeyError, FileNotFoundError):
        return "moved"
    return "ok" if hashlib.sha256(data).digest() == digest else "mismatch"


class Healer:
    """Repairs corrupt chunks from the targets; see the module docstring."""

    def __init__(self, ctx: Context, replicas: list[tuple[TargetConfig, Replica]]) -> None:
        self.ctx = ctx
        self.replicas = replicas  # (TargetConfig, Replica)
        self.healed = 0
        self.failed = 0
        self._busy: dict[bytes, asyncio.Future] = {}

    async def heal(self, rec: VaultRec, digest: bytes, meta: ChunkMeta, reason: str = "checksum mismatch") -> bool:
        """Repair one chunk; True once the index points at verified bytes.

        Concurrent calls for the same chunk share one repair.
        """
        k = chunk_key(rec.vid, digest)
        fut = self._busy.get(k)
        if fut is not None:
            return await asyncio.shield(fut)
        fut = asyncio.get_running_loop().create_future()
        self._busy[k] = fut
        try:
            ok = await self._heal(rec, digest, meta, reason)
            fut.set_result(ok)
            return ok
        except BaseException as e:
            fut.set_exception(e)
            fut.exception()  # retrieved: waiters get it, nobody else needs to
            raise
        finally:
            self._busy.pop(k, None)

    async def heal_for_read(self, rec: VaultRec, digest: bytes, meta: ChunkMeta) -> bool:
        """The GET path's corruption handler: repair before answering, but answer
        (500 chunk_corrupt) after :data:`READ_HEAL_SECONDS` if the targets are slow;
        the repair itself carries on."""
        try:
            return await asyncio.wait_for(asyncio.shield(self.heal(rec, digest, meta)), READ_HEAL_SECONDS)
        except asyncio.TimeoutError:
            log.warning("repair still running, answering the read with an error",
                        extra={"vault": rec.name, "chunk": digest.hex()})
            return False

    async def _heal(self, rec: VaultRec, digest: bytes, meta: ChunkMeta, reason: str) -> bool:
        ctx = self.ctx
        hexid = digest.hex()
        await ctx.index.run(lambda txn: _mark(txn, rec, digest, reason))
        log.warning("chunk quarantined", extra={"vault": rec.name, "chunk": hexid, "reason": reason})
        tried = []
        for cfg, replica in self.replicas:
            if not cfg.matches(rec.name):
                continue
            tried.append(cfg.name)
            try:
                data = await replica.get_chunk(rec.name, digest)
            except Exception as e:
                log.warning("repair source failed", extra={"vault": rec.name, "chunk": hexid, "target": cfg.name,
                                                           "error": str(e)})
                continue
            if data is None:
                continue
            ok = await asyncio.get_running_loop().run_in_executor(None, _sha_eq, data, digest)
            if not ok or len(data) != meta.length:
                log.error("a target holds a bad copy", extra={"vault": rec.name, "chunk": hexid,
                                                              "target": cfg.name})
                continue
            if await self._rewrite(rec, digest, meta, data, None):
                self.healed += 1
                log.warning("chunk repaired", extra={"vault": rec.name, "chunk": hexid, "target": cfg.name})
                return True
            # The index entry changed under us: GC removed the chunk, or
            # compaction moved it (compaction copies only records whose
            # checksums pass). Either way there is nothing left to repair.
            cur = ctx.chunk_meta(rec.vid, digest)
            if cur is None or await asyncio.get_running_loop().run_in_executor(
                    None, check_chunk, ctx.store, cur, digest, hexid) == "ok":
                await ctx.index.run(lambda txn: _unmark(txn, rec.vid, digest))
                return True
            meta = cur
        self.failed += 1
        objects = await asyncio.get_running_loop().run_in_executor(None, self.referencing, rec.vid, digest)
        await ctx.index.run(lambda txn: _mark(txn, rec, digest, reason, damaged=True, objects=objects,
                                              tried=tried))
        log.error("damaged chunk: no target holds a good copy",
                  extra={"vault": rec.name, "chunk": hexid, "targets": tried, "objects": objects[:10]})
        if reason == "sha256 mismatch":
            # The block checksums pass: make sure no read ever serves these bytes.
            try:
                stored = await asyncio.get_running_loop().run_in_executor(
                    None, lambda: ctx.store.read(meta.seg_id, meta.offset, meta.length, 0, meta.length, ""))
                await self._rewrite(rec, digest, meta, stored, bytes(8 * nblocks(meta.length)))
            except Exception as e:
                log.error("could not fence a damaged chunk", extra={"vault": rec.name, "chunk": hexid,
                                                                    "error": str(e)})
        return False

    def referencing(self, vid: int, digest: bytes) -> list[str]:
        """Keys of the objects of vault ``vid`` that reference ``digest`` (at most 100)."""
        out = []
        for name, v in self.ctx.index.objects(vid):
            if digest in ObjectMeta.unpack(v).chunks:
                out.append(name)
                if len(out) >= OBJECTS_LISTED:
                    break
        return out

    async def _rewrite(self, rec: VaultRec, digest: bytes, old: ChunkMeta, data: ByteData,
                       sums: bytes | None) -> bool:
        """Append ``data`` as a fresh record and repoint the index entry at it."""
        ctx = self.ctx
        loop = asyncio.get_running_loop()
        store = ctx.store
        dir_idx = store.pick_dir()
        fence = sums is not None
        if fence and len(data) > ctx.cfg.stream_threshold_bytes:
            raise E.StorageFailure("only chunks up to stream_threshold_bytes can be fenced")
        if sums is None:
            sums = await loop.run_in_executor(None, block_sums, data)
        if len(data) <= ctx.cfg.stream_threshold_bytes:
            fut: asyncio.Future = loop.create_future()

            def durable(loc: Location | None, exc: Exception | None) -> None:
                loop.call_soon_threadsafe(_settle, fut, loc, exc)

            store.append(dir_idx, rec.vid, digest, data, sums, durable)
            loc = await fut
        else:
            def stream() -> Location:
                w = store.stream(dir_idx, rec.vid, digest, len(data))
                try:
                    for i in range(0, len(data), 1 << 20):
                        w.write(data[i:i + (1 << 20)])
                    return w.commit()
                except BaseException:
                    w.abort()
                    raise
            loc = await loop.run_in_executor(None, stream)

        def op(txn: Txn) -> bool:
            # Gone (GC) or moved (compaction) meanwhile: the new record is dead bytes.
            cur = txn.chunk(rec.vid, digest)
            if not txn.repoint_chunk(chunk_key(rec.vid, digest), cur, old.seg_id, old.offset, loc):
                return False
            if not fence:
                _unmark(txn, rec.vid, digest)
            return True

        moved = await ctx.index.run(op)
        return moved

    def damaged(self) -> list[dict]:
        """Damaged chunks still indexed (stale quarantine records are dropped from the list)."""
        out = []
        for k, v in self.ctx.index.markers(QUARANTINE):
            d = json.loads(v)
            if not d.get("damaged"):
                continue
            if self.ctx.index.chunk(*quarantine_chunk(k)) is None:
                continue
            out.append({"vault": d["vault"], "chunk": d["chunk"], "since": iso(d["since"]),
                        "reason": d["reason"], "objects": d.get("objects", []), "tried": d.get("tried", [])})
        return out


def _settle(fut: asyncio.Future, loc: Location | None, exc: Exception | None) -> None:
    if fut.done():
        return
    if exc is not None:
        fut.set_exception(exc)
    else:
        fut.set_result(loc)


def _sha_eq(data: bytes, digest: bytes) -> bool:
    return hashlib.sha256(data).digest() == digest


def _mark(txn: Txn, rec: VaultRec, digest: bytes, reason: str, damaged: bool = False,
          objects: list[str] | None = None, tried: list[str] | None = None) -> None:
    k = quarantine_key(rec.vid, digest)
    raw = txn.marker(k)
    since = json.loads(raw)["since"] if raw is not None else txn.now
    txn.put_marker(k, json.dumps({"vault": rec.name, "chunk": digest.hex(), "since": since, "reason": reason,
                                   "damaged": damaged, "objects": objects or [], "tried": tried or []}).encode())
    txn.emit(ChunkQuarantined(rec, digest, reason, damaged))


def _unmark(txn: Txn, vid: int, digest: bytes) -> None:
    txn.delete_marker(quarantine_key(vid, digest))


class Scrubber(Job):
    """The scrub pass (a :class:`vault.workers.Job`); see the module docstring."""

    name = "scrub"
    THREADS = 2

    def __init__(self, ctx: Context, healer: Healer) -> None:
        super().__init__()
        self.ctx = ctx
        self.healer = healer
        self.rate = ctx.cfg.scrub.rate_bytes_per_second
        self.interval = ctx.cfg.scrub.interval_seconds
        self.state = "idle"
        self.last: dict | None = None

    def first_delay(self) -> float:
        """Seconds until the next pass is due: ``interval`` after the last pass, or
        after the first start of this server (recorded) when there was none."""
        idx = self.ctx.index
        raw = idx.marker(SCRUB_LAST_PASS)
        if raw is not None:
            since = json.loads(raw).get("finished", 0)
        else:
            epoch = idx.marker(SCRUB_EPOCH)
            if epoch is None:
                since = time.time()
                idx.run_sync(lambda txn: txn.put_marker(SCRUB_EPOCH, repr(since).encode()))
            else:
                since = float(epoch.decode())
        return max(0.0, since + self.interval - time.time())

    async def run_once(self) -> dict:
        """One pass over every indexed chunk; returns its counters."""
        self.state = "running"
        try:
            return await self._pass()
        finally:
            self.state = "idle"

    async def _pass(self) -> dict:
        p = self.progress = {"started": time.time(), "chunks": 0, "bytes": 0, "corrupt": 0, "healed": 0,
                             "damaged": 0}
        throttle = Throttle(self.rate)
        sem = asyncio.Semaphore(self.THREADS)
        loop = asyncio.get_running_loop()
        store, idx = self.ctx.store, self.ctx.index
        start = None
        while True:
            page = list(islice(idx.all_chunks(start), PAGE))
            if not page:
                break
            start = page[-1][0]
            page.sort(key=lambda kv: (kv[1].seg_id, kv[1].offset))  # sequential reads

            async def one(k: bytes, meta: ChunkMeta) -> None:
                async with sem:
                    await throttle.take(meta.length)
                    vid, digest = vid_of(k), chunk_digest(k)
                    what = f"chunk {digest.hex()}"
                    verdict = await loop.run_in_executor(None, check_chunk, store, meta, digest, what)
                    if verdict == "moved":
                        cur = self.ctx.chunk_meta(vid, digest)
                        if cur is None:
                            return
                        meta = cur
                        verdict = await loop.run_in_executor(None, check_chunk, store, meta, digest, what)
                    if verdict in ("corrupt", "mismatch"):
                        # Compaction may have moved it while we read: judge the current copy.
                        cur = self.ctx.chunk_meta(vid, digest)
                        if cur is None:
                            return
                        if (cur.seg_id, cur.offset) != (meta.seg_id, meta.offset):
                            meta = cur
                            verdict = await loop.run_in_executor(None, check_chunk, store, meta, digest, what)
                p["chunks"] += 1
                p["bytes"] += meta.length
                if verdict in ("corrupt", "mismatch"):
                    p["corrupt"] += 1
                    rec = self._rec(vid)
                    reason = "block checksum mismatch" if verdict == "corrupt" else "sha256 mismatch"
                    if await self.healer.heal(rec, digest, meta, reason):
                        p["healed"] += 1
                    else:
                        p["damaged"] += 1

            await asyncio.gather(*(one(k, m) for k, m in page))
            if len(page) < PAGE:
                break
        p["finished"] = time.time()
        p["seconds"] = round(p["finished"] - p["started"], 3)
        await idx.run(lambda txn: txn.put_marker(SCRUB_LAST_PASS, json.dumps(p).encode()))
        self.last = dict(p)
        return {k: v for k, v in p.items() if k not in ("started", "finished")}

    def _rec(self, vid: int) -> VaultRec:
        for rec in self.ctx.index.vaults():
            if rec.vid == vid:
                return rec
        return VaultRec(self.ctx.index.dead_vault_name(vid) or f"vid-{vid}", vid, 0.0)

    def status(self) -> dict:
        raw = self.ctx.index.marker(SCRUB_LAST_PASS)
        last = self.last or (json.loads(raw) if raw else None)
        out = {"state": self.state, "rate_bytes_per_second": self.rate,
               "interval_seconds": self.interval}
        if self.state == "running":
            prog = dict(self.progress)
            if "started" in prog:
                prog["started"] = iso(prog["started"])
            out["progress"] = prog
        if last:
            out["last_pass"] = {**last, "started": iso(last["started"]),
                                "finished": iso(last["finished"]) if last.get("finished") else None}
        out["healed_total"] = self.healer.healed
        out["damaged"] = self.healer.damaged()
        return out
