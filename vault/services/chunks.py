"""Chunks: the data path. Verify a body against its id, store it, index it, read it back verified."""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import hashlib
import logging
import os
import threading
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TypedDict, cast

from .. import errors as E
from .. import policy
from ..body import Body
from ..config import Config
from ..events import ChunkPut
from ..meta import PENDING, ChunkMeta, Index, Txn, VaultRec
from ..store import ByteData, Location, Store, block_sums
from .vaults import live_vault

log = logging.getLogger("objvault")

# Bodies up to this size are hashed on the event loop: a thread hop costs
# more than hashing 64 KiB with SHA-NI.
INLINE_HASH_BYTES = 64 * 1024
MISSING_THREADS = max(1, min(4, os.cpu_count() or 1))

_SHA256 = hashlib.sha256()
# Hashing is CPU work that releases the GIL: a thread per core does it all.
# More threads only take turns at the GIL and the cores (1 MiB S3 PUTs, 16
# concurrent, on 2 cores: 7% faster with 2 hashing threads than with the
# loop's default executor of 6); the default executor keeps the blocking
# reads and writes.
HASHING = concurrent.futures.ThreadPoolExecutor(max(2, os.cpu_count() or 1), thread_name_prefix="hash")


class Recorder:
    """Measurements of the data path; :mod:`vault.metrics` subclasses it."""

    def chunk_written(self, nbytes: int) -> None: ...
    def chunk_deduplicated(self, nbytes: int) -> None: ...
    def bytes_out(self, nbytes: int) -> None: ...
    def corrupt_chunk(self) -> None: ...


# Called with a chunk that failed verification on read; True if it was repaired
# (from a replica) and may be read again.
Healer = Callable[[VaultRec, bytes, ChunkMeta], Awaitable[bool]]
# Sees each chunk of a stream with its SHA-256 state (a hashlib object that has
# hashed exactly that chunk: copy it, never update it).
Observer = Callable[[memoryview, "hashlib._Hash"], None]


class ChunkService:
    def __init__(self, config: Config, index: Index, store: Store, recorder: Recorder | None = None,
                 healer: Healer | None = None) -> None:
        self.config = config
        self.index = index
        self.store = store
        self.recorder = recorder or Recorder()
        self.healer = healer
        # Quota bytes held per vault id by uploads in flight (event loop only).
        self._reserved: dict[int, int] = {}

    def meta(self, rec: VaultRec, digest: bytes) -> ChunkMeta | None:
        return self.index.chunk(rec.vid, digest)

    async def put(self, rec: VaultRec, digest: bytes, body: Body) -> bool:
        """Store the chunk ``digest`` from ``body``; return True if it already existed.

        Nothing is indexed unless the SHA-256 of the body equals ``digest``;
        the call returns only after the bytes and the index entry are durable.
        A chunk already held is verified and revived, not stored again.
        """
        return await self._guarded(rec, digest, body.length,
                                   lambda existing: self._put(rec, digest, body, existing))

    async def _guarded(self, rec: VaultRec, digest: bytes, length: int,
                       store: Callable[[ChunkMeta | None], Awaitable[bool]]) -> bool:
        """``store(what the index holds of the chunk)`` within the size limit,
        with the vault's quota held for a new chunk meanwhile."""
        if length > self.config.max_chunk_bytes:
            raise E.TooLarge(f"vault {rec.name!r}: chunk {digest.hex()} is {length} bytes, the limit is "
                             f"{self.config.max_chunk_bytes}")
        existing = self.meta(rec, digest)
        held = self._reserve(rec, length) if existing is None else 0
        try:
            return await store(existing)
        finally:
            self._release(rec.vid, held)

    def check_room(self, rec: VaultRec, length: int) -> None:
        """Raise QuotaExceeded if ``length`` more bytes would pass the vault's
        quota now (with what uploads in flight hold): a body that cannot fit
        is refused before any of it is read."""
        policy.check_quota(rec.name, rec.quota_bytes, self.index.usage(rec.vid).stored_bytes,
                           self._reserved.get(rec.vid, 0), length)

    async def put_stream(self, rec: VaultRec, pieces: AsyncIterator[bytes | memoryview], chunk_bytes: int,
                         observe: Observer) -> tuple[list[bytes], int]:
        """Cut a stream into chunks of ``chunk_bytes`` (the last one shorter) and
        store each; return their ids in order and the total length.

        Each chunk is joined once into an immutable ``bytes`` and, in a worker
        thread, hashed once (SHA-256, the id) together with its block sums:
        the id is computed from the very bytes that are written. ``observe``
        sees every chunk there, once, in order, with its SHA-256 state (the
        S3 front door's MD5 and checksums; a signed payload's SHA-256 starts
        from the first chunk's). At most one chunk is held at a time. A
        stream that fails leaves its stored chunks unreferenced: GC collects
        them after the grace period.
        """
        held: list[memoryview] = []
        digests: list[bytes] = []
        filled = total = 0
        async for received in pieces:
            total += len(received)
            # Held until the chunk is full: only immutable bytes may wait across reads.
            piece = memoryview(received if isinstance(received, bytes) else bytes(received))
            while piece:
                take = min(len(piece), chunk_bytes - filled)
                held.append(piece[:take])
                piece, filled = piece[take:], filled + take
                if filled == chunk_bytes:
                    digests.append(await self._put_cut(rec, held, observe))
                    held, filled = [], 0
        if filled:
            digests.append(await self._put_cut(rec, held, observe))
        return digests, total

    async def _put_cut(self, rec: VaultRec, parts: list[memoryview], observe: Observer) -> bytes:
        def digest() -> tuple[bytes, bytes, bytes]:
            whole = parts[0].obj if len(parts) == 1 else None
            data = whole if isinstance(whole, bytes) and len(whole) == len(parts[0]) else b"".join(parts)
            h = _SHA256.copy()
            h.update(data)
            observe(memoryview(data), h)
            return h.digest(), data, block_sums(data)

        cid, data, sums = await asyncio.get_running_loop().run_in_executor(HASHING, digest)
        await self._guarded(rec, cid, len(data), lambda existing: self._keep(rec, cid, data, sums, existing))
        return cid

    def _reserve(self, rec: VaultRec, length: int) -> int:
        """Hold ``length`` bytes of the vault's quota for a body about to be stored; returns what was held.

        Checked against the stored bytes plus what other uploads in flight
        hold, so concurrent uploads can never pass the quota together and a
        refused upload is refused before its body is read. Raises
        QuotaExceeded. Release with :meth:`_release` once the upload is
        indexed or has failed.
        """
        if rec.quota_bytes is None or length <= 0:
            return 0
        held = self._reserved.get(rec.vid, 0)
        policy.check_quota(rec.name, rec.quota_bytes, self.index.usage(rec.vid).stored_bytes, held, length)
        self._reserved[rec.vid] = held + length
        return length

    def _release(self, vid: int, held: int) -> None:
        if held:
            left = self._reserved[vid] - held
            if left:
                self._reserved[vid] = left
            else:
                del self._reserved[vid]

    async def _put(self, rec: VaultRec, digest: bytes, body: Body, existing: ChunkMeta | None) -> bool:
        hexid, length = digest.hex(), body.length
        loop = asyncio.get_running_loop()
        if existing is not None and length > self.config.stream_threshold_bytes:
            # A large chunk we already hold: verify the body as it streams,
            # store nothing. A body of another length cannot hash to the id.
            await self._verify_stream(rec, digest, body)
            if existing.length == length and await self.index.run(lambda txn: _touch(txn, rec, digest)):
                self.recorder.chunk_deduplicated(length)
                return True
            raise E.Conflict(f"vault {rec.name!r}: chunk {hexid} was collected during the upload; retry")
        if existing is not None or length <= self.config.stream_threshold_bytes:
            data = await body.read(length)
            # One pass over the body: SHA-256 (the address) and the xxh3 block
            # sums stored with the record; off the loop for large bodies.
            if length <= INLINE_HASH_BYTES:
                ok, sums = _digest_and_sums(data, digest)
            else:
                ok, sums = await loop.run_in_executor(HASHING, _digest_and_sums, data, digest)
            if not ok:
                raise E.DigestMismatch(f"vault {rec.name!r}: body does not hash to chunk id {hexid}")
            return await self._keep(rec, digest, data, sums, existing)
        loc = await self._stream(rec, digest, body)
        try:
            existed = await self.index.run(lambda txn: _insert_chunk(txn, rec, digest, length, loc))
        except (E.QuotaExceeded, E.NoSuchVault):
            # The index refused the record (the quota was lowered or the
            # vault deleted meanwhile): its segment, of its own, holds
            # nothing anyone knows of. (After any other failure the index
            # state is unknown; the next start removes files it never recorded.)
            await loop.run_in_executor(None, self.store.forget_segment, loc.seg_id)
            raise
        return self._recorded(existed, length)

    def _recorded(self, existed: bool, length: int) -> bool:
        if existed:
            self.recorder.chunk_deduplicated(length)
        else:
            self.recorder.chunk_written(length)
        return existed

    async def _keep(self, rec: VaultRec, digest: bytes, data: ByteData, sums: bytes,
                    existing: ChunkMeta | None) -> bool:
        """Store a verified chunk (``digest`` is the SHA-256 of ``data``, ``sums``
        its block sums) through the shared segment, or revive the copy held;
        True if it already existed. Returns once durable and indexed."""
        length = len(data)
        if existing is not None and existing.length == length:
            if await self.index.run(lambda txn: _touch(txn, rec, digest)):
                return self._recorded(True, length)
        loop = asyncio.get_running_loop()
        dir_idx = self.store.pick_dir()
        fut = loop.create_future()

        def durable(loc: Location | None, exc: Exception | None) -> None:
            # Runs on the segment syncer thread: hand the index entry
            # straight to the committer, without a trip through the loop.
            if exc is not None:
                loop.call_soon_threadsafe(_fail_future, fut, exc)
            else:
                where = cast(Location, loc)  # Done's contract: no error, a location
                self.index.enqueue(lambda txn: _insert_chunk(txn, rec, digest, length, where), fut, loop)

        self.store.append(dir_idx, rec.vid, digest, data, sums, durable)
        return self._recorded(await fut, length)

    async def put_many(self, rec: VaultRec, chunks: list[tuple[bytes, memoryview]]) -> list[bool]:
        """Store many small chunks at once; returns, per chunk, whether it already existed.

        All or nothing: every body is verified before anything is written, and
        all new chunks are indexed in one committer op (which also enforces
        the quota for the batch as a whole). Answers only once all of them are
        durable. Duplicate ids within the batch are stored once.
        """
        loop = asyncio.get_running_loop()
        total = sum(len(b) for _, b in chunks)

        def verify(on_loop: bool) -> list[bytes] | int:
            sums = []
            for i, (digest, body) in enumerate(chunks):
                ok, s = _digest_and_sums(body, digest, on_loop)
                if not ok:
                    return i
                sums.append(s)
            return sums

        sums = verify(True) if total <= INLINE_HASH_BYTES else await loop.run_in_executor(HASHING, verify, False)
        if isinstance(sums, int):
            raise E.DigestMismatch(f"vault {rec.name!r}: chunk {sums} of the batch does not hash to its id "
                                   f"{chunks[sums][0].hex()}; nothing was stored")
        found = self.index.chunks_held(rec.vid, [d for d, _ in chunks])
        new: dict[bytes, int] = {}
        for i, ((digest, body), holds) in enumerate(zip(chunks, found)):
            if not holds and digest not in new:
                new[digest] = i
        held = self._reserve(rec, sum(len(chunks[i][1]) for i in new.values()))
        try:
            existed_now = await self._put_new(rec, chunks, found, new, sums)
        finally:
            self._release(rec.vid, held)
        out = []
        seen: set[bytes] = set()
        for digest, body in chunks:
            ex = digest in existed_now or digest in seen or digest not in new
            seen.add(digest)
            out.append(ex)
            if ex:
                self.recorder.chunk_deduplicated(len(body))
            else:
                self.recorder.chunk_written(len(body))
        return out

    async def _put_new(self, rec: VaultRec, chunks: list[tuple[bytes, memoryview]], found: list[bool],
                       new: dict[bytes, int], sums: list[bytes]) -> set[bytes]:
        """Append the ``new`` chunks of a verified batch and index the batch in one op."""
        loop = asyncio.get_running_loop()
        old = [d for (d, _), held in zip(chunks, found) if held]
        fut = loop.create_future()
        if new:
            dir_idx = self.store.pick_dir()
            locs: dict[bytes, Location] = {}
            lock = threading.Lock()
            state: _BatchState = {"left": len(new), "error": None}

            def durable(digest: bytes, loc: Location | None, exc: Exception | None) -> None:
                with lock:
                    if exc is not None and state["error"] is None:
                        state["error"] = exc
                    if loc is not None:
                        locs[digest] = loc
                    state["left"] -= 1
                    last = state["left"] == 0
                if not last:
                    return
                if state["error"] is not None:
                    loop.call_soon_threadsafe(_fail_future, fut, state["error"])
                else:
                    entries = [(d, len(chunks[i][1]), locs[d]) for d, i in new.items()]
                    self.index.enqueue(lambda txn: _insert_batch(txn, rec, entries, old), fut, loop)

            for digest, i in new.items():
                self.store.append(dir_idx, rec.vid, digest, chunks[i][1], sums[i],
                                  functools.partial(durable, digest))
        else:
            self.index.enqueue(lambda txn: _insert_batch(txn, rec, [], old), fut, loop)
        return await fut

    async def _drain_body(self, rec: VaultRec, digest: bytes, body: Body,
                          sink: Callable[[list[ByteData]], None]) -> None:
        """Feed a streamed body to ``sink`` in a thread, about 1 MiB at a time, while
        the next MiB is read from the socket (one call in flight, in order).

        Raises Truncated / BadRequest when the body is not ``length`` bytes.
        """
        loop = asyncio.get_running_loop()
        got, length = 0, body.length
        pending: list[ByteData] = []
        pending_len = 0
        inflight: asyncio.Future | None = None
        try:
            async for piece in body.pieces():
                got += len(piece)
                if got > length:
                    raise E.BadRequest("body longer than Content-Length")
                pending.append(piece)
                pending_len += len(piece)
                if pending_len >= 1 << 20:
                    if inflight is not None:
                        await inflight
                    inflight = loop.run_in_executor(None, sink, pending)
                    pending, pending_len = [], 0
            if inflight is not None:
                await inflight
                inflight = None
            if got != length:
                raise E.Truncated(f"vault {rec.name!r}: chunk {digest.hex()}: got {got} of {length} bytes")
            if pending:
                await loop.run_in_executor(None, sink, pending)
        finally:
            if inflight is not None:  # never leave a write running behind an error
                await asyncio.gather(inflight, return_exceptions=True)

    async def _verify_stream(self, rec: VaultRec, digest: bytes, body: Body) -> None:
        """Hash a streamed body without keeping it; DigestMismatch/Truncated if it is wrong."""
        h = _SHA256.copy()

        def update(parts: list[ByteData]) -> None:
            for p in parts:
                h.update(p)

        await self._drain_body(rec, digest, body, update)
        if h.digest() != digest:
            raise E.DigestMismatch(f"vault {rec.name!r}: body does not hash to chunk id {digest.hex()}")

    async def _stream(self, rec: VaultRec, digest: bytes, body: Body) -> Location:
        """A large chunk into a segment of its own: through ``body.splice`` (the
        socket straight into the file, see :class:`vault.http.BodySplice`)
        when the front door offers it, else piece by piece."""
        length, splice = body.length, body.splice
        loop = asyncio.get_running_loop()
        dir_idx = self.store.pick_dir()
        h = _SHA256.copy()
        w = await loop.run_in_executor(None, lambda: self.store.stream(dir_idx, rec.vid, digest, length, sha=h))
        try:
            if splice is None or not await splice.into(w, length):
                await self._drain_body(rec, digest, body, w.write_parts)
            if h.digest() != digest:
                raise E.DigestMismatch(f"vault {rec.name!r}: body does not hash to chunk id {digest.hex()}")
            return await loop.run_in_executor(None, w.commit)
        except BaseException:
            await loop.run_in_executor(None, w.abort)
            raise

    async def get(self, rec: VaultRec, digest: bytes, start: int = 0, end: int | None = None,
                  meta: ChunkMeta | None = None) -> bytes | memoryview:
        """Bytes ``[start, end)`` of a chunk, every block verified (``meta``: a fresh lookup, if the caller has one)."""
        meta = meta or self.meta(rec, digest)
        if meta is None:
            raise E.NoSuchChunk(f"vault {rec.name!r}: no such chunk {digest.hex()}")
        end = meta.length if end is None else end
        loop = asyncio.get_running_loop()
        what = f"vault {rec.name!r} chunk {digest.hex()}"
        try:
            # Served from the page cache without leaving the loop when it can be
            # (RWF_NOWAIT); only a read that would wait for the disk takes a thread.
            data = self.store.read(meta.seg_id, meta.offset, meta.length, start, end, what, nowait=True)
            if data is None:
                data = await loop.run_in_executor(None, self.store.read, meta.seg_id, meta.offset,
                                                  meta.length, start, end, what)
        except E.ChunkCorrupt:
            # Compaction may have moved (or GC deleted) the chunk between the
            # lookup and the read: look again before calling it damaged.
            fresh = self.meta(rec, digest)
            if fresh is None:
                raise E.NoSuchChunk(f"vault {rec.name!r}: no such chunk {digest.hex()}") from None
            if (fresh.seg_id, fresh.offset) != (meta.seg_id, meta.offset):
                return await self.get(rec, digest, start, end, meta=fresh)
            self.recorder.corrupt_chunk()
            log.error("corrupt chunk", extra={"vault": rec.name, "chunk": digest.hex()})
            if self.healer is not None and await self.healer(rec, digest, meta):
                return await self.get(rec, digest, start, end)
            raise
        self.recorder.bytes_out(len(data))
        return data

    async def missing(self, rec: VaultRec, digests: list[bytes]) -> list[bytes]:
        def check(part: list[bytes]) -> list[bytes]:
            return self.index.missing_chunks(rec.vid, part)

        if len(digests) <= 64:
            return check(digests)
        # RocksDB's MultiGet runs without the GIL: large lists are split
        # over threads, so a 10 000-id call uses every core.
        loop = asyncio.get_running_loop()
        n = min(MISSING_THREADS, -(-len(digests) // 2048))
        step = -(-len(digests) // n)
        parts = await asyncio.gather(*(loop.run_in_executor(None, check, digests[i:i + step])
                                       for i in range(0, len(digests), step)))
        return [d for part in parts for d in part]


class _BatchState(TypedDict):
    """A batch's appends still outstanding and its first failure."""

    left: int
    error: Exception | None


def _fail_future(fut: asyncio.Future, exc: Exception) -> None:
    if not fut.done():
        fut.set_exception(exc)


# hashlib releases the GIL for updates of 2048 bytes or more. On the event
# loop that is a loss: after a few microseconds of hashing the loop waits up
# to the switch interval to get the GIL back from the busy I/O threads
# (profiled: ~80 us per 16 KiB PUT). Small bodies are fed in pieces below
# that size, so the loop never lets go.
_GIL_PIECE = 31 * 64


def _sha256_on_loop(body: ByteData) -> bytes:
    h = _SHA256.copy()
    mv = memoryview(body)
    for i in range(0, len(mv), _GIL_PIECE):
        h.update(mv[i:i + _GIL_PIECE])
    return h.digest()


def _digest_and_sums(body: ByteData, digest: bytes, on_loop: bool = True) -> tuple[bool, bytes]:
    """SHA-256 check and xxh3 block sums in one call (on the loop for small bodies, else in a thread).

    On the loop a small body is hashed in pieces that keep the GIL; in a
    thread the GIL is let go, so that the loop runs meanwhile.
    """
    if on_loop and len(body) <= INLINE_HASH_BYTES:
        got = _sha256_on_loop(body)
    else:
        h = _SHA256.copy()  # copying a template skips OpenSSL's per-call algorithm lookup
        h.update(body)
        got = h.digest()
    if got != digest:
        return False, b""
    return True, block_sums(body)


def _touch(txn: Txn, rec: VaultRec, digest: bytes) -> bool:
    """Dedup hit: revive the chunk for a new grace period. False if it is gone."""
    live_vault(txn, rec)
    # A re-upload restarts the grace period (ARCHITECTURE.md lifecycle, step 4).
    return txn.touch_chunk(rec.vid, digest)


def _insert_chunk(txn: Txn, rec: VaultRec, digest: bytes, length: int, loc: Location) -> bool:
    """Index a durable record. True if the chunk was already indexed (its new bytes are dead)."""
    vrec = live_vault(txn, rec)
    if txn.touch_chunk(rec.vid, digest):
        txn.seg_record(loc, False)
        return True
    usage = txn.usage(rec.vid)
    try:
        policy.check_quota(rec.name, vrec.quota_bytes, usage.stored_bytes, 0, length,
                           f"chunk {digest.hex()} ({length} bytes)")
    except E.QuotaExceeded:
        txn.seg_record(loc, False)
        raise
    txn.put_chunk(rec.vid, digest, ChunkMeta(loc.seg_id, loc.offset, length, 0, PENDING, txn.now, 0.0))
    txn.seg_record(loc, True)
    txn.put_usage(rec.vid, usage.add(stored=length, chunks=1))
    txn.emit(ChunkPut(rec, digest, length))
    return False


def _insert_batch(txn: Txn, rec: VaultRec, entries: list[tuple[bytes, int, Location]],
                  touched: list[bytes]) -> set[bytes]:
    """Index a batch of durable records atomically; returns the ids that were already indexed."""
    vrec = live_vault(txn, rec)
    existed: set[bytes] = set()
    added = 0
    for d in touched:
        txn.touch_chunk(rec.vid, d)
    fresh = []
    for d, length, loc in entries:
        if txn.touch_chunk(rec.vid, d):
            existed.add(d)
        else:
            fresh.append((d, length, loc))
            added += length
    usage = txn.usage(rec.vid)
    policy.check_quota(rec.name, vrec.quota_bytes, usage.stored_bytes, 0, added,
                       note="; nothing of the batch was stored")
    # One update per segment: every record counts for its end, only fresh ones are live.
    segs: dict[int, list] = {}
    for _, _, loc in entries:
        seg = segs.setdefault(loc.seg_id, [loc.dir_idx, 0, 0])
        seg[1] = max(seg[1], loc.offset + loc.size)
    for d, length, loc in fresh:
        segs[loc.seg_id][2] += loc.size
        txn.put_chunk(rec.vid, d, ChunkMeta(loc.seg_id, loc.offset, length, 0, PENDING, txn.now, 0.0))
        txn.emit(ChunkPut(rec, d, length))
    for seg_id, (dir_idx, end, live) in segs.items():
        txn.seg_update(seg_id, live, end=end, dir_idx=dir_idx)
    txn.put_usage(rec.vid, usage.add(stored=added, chunks=len(fresh)))
    return existed
