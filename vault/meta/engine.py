"""The index engine: RocksDB and the single committer.

Every mutation of the index is a function ``op(txn) -> result`` submitted
to :class:`Index`. One committer thread runs the ops in arrival order,
each against a :class:`Txn` that sees the committed database plus the
writes of the ops before it in the same batch, and writes the whole batch
as one ``WriteBatch`` with a synced WAL: many requests, one fsync. Because
there is exactly one committer, read-modify-write of refcounts and usage
counters needs no locks, and a dedup hit and a GC sweep can never
interleave. An op that raises leaves no trace in the batch.

The column families and key layouts are in :mod:`vault.meta.schema`, the
records in :mod:`vault.meta.records`, the typed operations callers use in
:mod:`vault.meta.ops`. This module is the engine: RocksDB, the raw
``get``/``put``/``delete`` those operations stand on, and the committer.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import enum
import os
import queue
import threading
import time
from pathlib import Path
from typing import Any, Callable, Final, Iterator

from rocksdict import (BlockBasedOptions, Cache, Checkpoint, Options, Rdict, WriteBatch,
                       WriteOptions)

from ..errors import StorageFailure, VaultError
from ..events import Event
from .ops import IndexReads, TxnOps, multi_get
from .schema import CFS, CHUNKS, OBJECTS

BLOCK_CACHE_BYTES = 64 << 20
# When compaction or a flush makes an SST file obsolete, erase its blocks from
# the block cache (RocksDB's effort on a scale where 0 is none and ~1000 near
# all of them). Without it the blocks of dead files stay until the LRU pushes
# them out, so under steady churn the cache fills to its capacity with them:
# in a 10-minute soak it held the index's live data several times over and
# was most of the server's RSS growth; a test with 30 rounds of rewrite and
# compaction grew it 30-fold (13.6 MB for 0.45 MB of live blocks), with 300
# it stays at the live blocks.
UNCACHE_AGGRESSIVENESS = 300


class _Missing(enum.Enum):
    """Not in this batch (``None`` there is a delete)."""

    MISSING = enum.auto()


_MISSING: Final = _Missing.MISSING


class Txn(TxnOps):
    """One op's view: the database plus earlier writes of the same batch.

    The raw ``get``/``put``/``delete`` are for :mod:`vault.meta` alone; callers
    use the typed operations of :class:`vault.meta.ops.TxnOps`."""

    __slots__ = ("index", "batch", "writes", "now", "after", "events")

    def __init__(self, index: "Index", batch: dict, now: float) -> None:
        self.index = index
        self.batch = batch
        self.writes: dict[tuple[str, bytes], bytes | None] = {}
        self.now = now
        self.after: list[Callable[[], object]] = []  # run once committed; results ignored
        self.events: list[Event] = []

    def get(self, cf: str, key: bytes) -> bytes | None:
        k = (cf, key)
        v = self.writes.get(k, _MISSING)
        if v is _MISSING:
            v = self.batch.get(k, _MISSING)
            if v is _MISSING:
                return self.index.cf[cf].get(key)
        return v

    def get_many(self, cf: str, keys: list[bytes]) -> list[bytes | None]:
        """:meth:`get` for many keys: one RocksDB MultiGet for those this batch did not write.

        A thousand single gets cost up to 150 us each once the index outgrows the
        block cache; a sorted MultiGet shares the index and data block reads."""
        out: list = [None] * len(keys)
        ask, where = [], []
        for i, key in enumerate(keys):
            k = (cf, key)
            v = self.writes.get(k, _MISSING)
            if v is _MISSING:
                v = self.batch.get(k, _MISSING)
            if v is _MISSING:
                ask.append(key)
                where.append(i)
            else:
                out[i] = v
        if ask:
            for i, v in zip(where, multi_get(self.index.cf[cf], ask)):
                out[i] = v
        return out

    def put(self, cf: str, key: bytes, value: bytes) -> None:
        self.writes[(cf, key)] = value

    def delete(self, cf: str, key: bytes) -> None:
        self.writes[(cf, key)] = None

    def emit(self, event: Event) -> None:
        """Announce a change; hooks (replication outbox) add writes to this txn."""
        self.events.append(event)

    def items(self, cf: str, prefix: bytes, start: bytes | None = None) -> Iterator[tuple[bytes, bytes]]:
        """Committed items with ``prefix`` (not including this batch's writes)."""
        yield from self.index.iter_prefix(cf, prefix, start)

    def scan(self, cf: str, prefix: bytes) -> Iterator[tuple[bytes, bytes]]:
        """Items with ``prefix`` in key order as this op sees them: the committed
        ones merged with the writes of this batch so far (for a short range,
        such as one S3 key's versions: the batch is looked through once)."""
        overlay: dict[bytes, bytes | None] = {}
        for writes in (self.batch, self.writes):
            for (c, key), value in writes.items():
                if c == cf and key.startswith(prefix):
                    overlay[key] = value
        pending = sorted((k, v) for k, v in overlay.items() if v is not None)
        i = 0
        for key, value in self.index.iter_prefix(cf, prefix):
            while i < len(pending) and pending[i][0] < key:
                yield pending[i][0], pending[i][1]
                i += 1
            if key not in overlay:
                yield key, value
        for key, pvalue in pending[i:]:
            yield key, pvalue


def _walk(it: Any, prefix: bytes, step: Callable[[], Any]) -> Iterator[tuple[bytes, bytes]]:
    """The items from ``it``'s position on, moved by ``step``, while keys start with ``prefix``."""
    while it.valid():
        k = it.key()
        if not k.startswith(prefix):
            break
        yield k, it.value()
        step()


class _Op:
    """An op and where its result goes: an asyncio future on ``loop``, or a
    ``concurrent.futures.Future`` when ``loop`` is None."""

    __slots__ = ("fn", "future", "loop")

    def __init__(self, fn, future, loop=None):
        self.fn, self.future, self.loop = fn, future, loop


def _deliver(results: list) -> None:
    """Runs on an event loop: settle the asyncio futures of one batch."""
    for fut, result, exc in results:
        if fut.done():  # the request was cancelled (client went away)
            continue
        if exc is not None:
            fut.set_exception(exc)
        else:
            fut.set_result(result)


class IndexRecorder:
    def batch(self, ops: int, seconds: float) -> None:
        pass


class Index(IndexReads):
    """RocksDB with one committer thread; see the module docstring. Reads are
    the typed ones of :class:`vault.meta.ops.IndexReads`."""

    MAX_BATCH_OPS = 2048

    def __init__(self, path: str | os.PathLike, recorder: IndexRecorder | None = None) -> None:
        self.path = Path(path)
        self.path.mkdir(parents=True, exist_ok=True)
        self.recorder = recorder or IndexRecorder()
        opts = Options(raw_mode=True)
        opts.create_if_missing(True)
        opts.create_missing_column_families(True)
        opts.set_max_background_jobs(2)
        opts.set_keep_log_file_num(3)
        # All memtables together: without a bound each column family keeps up
        # to two of 64 MiB, and one large object write (a million refcounts,
        # its manifest) filled several of them: hundreds of MB of RSS.
        opts.set_db_write_buffer_size(64 << 20)
        cache = Cache(BLOCK_CACHE_BYTES)
        cfs = {}
        for name in CFS:
            o = Options(raw_mode=True)
            bo = BlockBasedOptions()
            bo.set_block_cache(cache)
            if name in (CHUNKS, OBJECTS):
                bo.set_bloom_filter(10, False)
                # Index and bloom blocks stay pinned with their table readers
                # (a few MB per million chunks) instead of competing for the
                # block cache: measured 7 µs per hit, 1.5 µs per miss at 1M chunks.
                bo.set_cache_index_and_filter_blocks(False)
            o.set_block_based_table_factory(bo)
            if name == CHUNKS:
                o.optimize_for_point_lookup(64)
                o.set_block_based_table_factory(bo)
            cfs[name] = o
        self.db = Rdict(str(self.path), opts, column_families=cfs)
        self.cf = {name: self.db.get_column_family(name) for name in CFS}
        self._cache = cache
        for cf in self.cf.values():
            cf.set_options({"uncache_aggressiveness": str(UNCACHE_AGGRESSIVENESS)})
        self._handles = {name: self.db.get_column_family_handle(name) for name in CFS}
        # Batches are written unsynced, then the WAL is synced with
        # flush_wal(sync=True): rocksdict holds the GIL for the whole of a
        # synced write, fsync included, which stopped the event loop and every
        # other thread for each commit; flush_wal lets it go. Readers may see
        # a batch before it is durable, but nothing is acknowledged before
        # the sync that covers it (every answer waits for its own op's batch,
        # and WAL syncs are cumulative).
        self._wopts = WriteOptions()
        self._wopts.sync = False
        self._q: queue.SimpleQueue[_Op | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="committer", daemon=True)
        self.failed: Exception | None = None
        self.event_hooks: list[Callable[[Txn, Event], None]] = []
        self._closed = False
        self._thread.start()

    # -- reads (any thread) ------------------------------------------------------

    def get(self, cf: str, key: bytes) -> bytes | None:
        return self.cf[cf].get(key)

    def iter_prefix(self, cf: str, prefix: bytes, start: bytes | None = None) -> Iterator[tuple[bytes, bytes]]:
        """Committed items of ``cf`` under ``prefix``, from key ``start`` on."""
        it = self.cf[cf].iter()
        it.seek(start if start is not None and start > prefix else prefix)
        yield from _walk(it, prefix, it.next)

    def iter_prefix_newest(self, cf: str, prefix: bytes) -> Iterator[tuple[bytes, bytes]]:
        """Committed items of ``cf`` under ``prefix``, last key first."""
        it = self.cf[cf].iter()
        it.seek_for_prev(prefix + b"\xff" * 16)
        yield from _walk(it, prefix, it.prev)

    def memory(self) -> dict[str, int]:
        """Bytes RocksDB holds in memory: the shared block cache (at most 64 MiB),
        the memtables of all column families (at most 64 MiB, plus those being
        flushed) and the table readers' index and filter blocks (they grow
        with the number of chunks). The cache is asked directly: the database's
        ``rocksdb.block-cache-usage`` is that of the default column family,
        which has a cache of its own and holds nothing."""
        out = {"block_cache": self._cache.get_usage(), "memtables": 0, "table_readers": 0}
        for cf in self.cf.values():
            out["memtables"] += cf.property_int_value("rocksdb.cur-size-all-mem-tables") or 0
            out["table_readers"] += cf.property_int_value("rocksdb.estimate-table-readers-mem") or 0
        return out

    def checkpoint(self, dest: str | os.PathLike) -> None:
        """A consistent copy of the whole index in the new directory ``dest``
        (hard links of the live SST files plus a copy of the rest)."""
        Checkpoint(self.db).create_checkpoint(str(dest))

    # -- writes (through the committer) ---------------------------------------

    def submit(self, fn: Callable[[Txn], Any]) -> concurrent.futures.Future:
        fut: concurrent.futures.Future = concurrent.futures.Future()
        if self.failed is not None:
            fut.set_exception(StorageFailure(f"index is read-only after a failed write: {self.failed}"))
        elif self._closed:
            fut.set_exception(StorageFailure("index is closed"))
        else:
            self._q.put(_Op(fn, fut))
        return fut

    async def run(self, fn: Callable[[Txn], Any]) -> Any:
        loop = asyncio.get_running_loop()
        fut = loop.create_future()
        self.enqueue(fn, fut, loop)
        return await fut

    def enqueue(self, fn: Callable[[Txn], Any], fut: asyncio.Future, loop: asyncio.AbstractEventLoop) -> None:
        """Queue ``fn`` from any thread; its result settles ``fut`` on ``loop``.

        Results of one batch reach a loop in a single wake-up, not one per op.
        """
        if self.failed is not None or self._closed:
            err = StorageFailure(f"index is read-only after a failed write: {self.failed}") \
                if self.failed is not None else StorageFailure("index is closed")
            loop.call_soon_threadsafe(_deliver, [(fut, None, err)])
        else:
            self._q.put(_Op(fn, fut, loop))

    def run_sync(self, fn: Callable[[Txn], Any]) -> Any:
        return self.submit(fn).result()

    def _run(self) -> None:
        while True:
            first = self._q.get()
            if first is None:
                return
            ops = [first]
            stop = False
            while len(ops) < self.MAX_BATCH_OPS:
                try:
                    nxt = self._q.get_nowait()
                except queue.Empty:
                    break
                if nxt is None:
                    stop = True
                    break
                ops.append(nxt)
            self._commit(ops)
            if stop:
                return
            # The next get() may wait long: hold no op (its closure may reach a request body).
            first = nxt = None
            del ops

    def _commit(self, ops: list[_Op]) -> None:
        now = time.time()
        batch: dict[tuple[str, bytes], bytes | None] = {}
        done: list[tuple[_Op, Any, BaseException | None, Txn | None]] = []
        txn: Txn | None
        for op in ops:
            txn = Txn(self, batch, now)
            try:
                result = op.fn(txn)
                for ev in txn.events:
                    for hook in self.event_hooks:
                        hook(txn, ev)
            except VaultError as e:
                done.append((op, None, e, None))
                continue
            except BaseException as e:  # a bug in an op must not kill the committer
                done.append((op, None, e, None))
                continue
            batch.update(txn.writes)
            done.append((op, result, None, txn))
        if batch:
            wb = WriteBatch(raw_mode=True)
            for (cf, key), value in batch.items():
                if value is None:
                    wb.delete(key, self._handles[cf])
                else:
                    wb.put(key, value, self._handles[cf])
            t0 = time.perf_counter()
            try:
                self.db.write(wb, self._wopts)
                self.db.flush_wal(True)
            except Exception as e:
                # Never retry a failed sync: RocksDB's state is unknown. Every
                # op of this batch fails, and so does every later one.
                self.failed = e
                err = StorageFailure(f"index write failed: {e}")
                done = [(op, None, err, None) for op, _, _, _ in done]
            else:
                self.recorder.batch(len(ops), time.perf_counter() - t0)
        by_loop: dict[Any, list] = {}
        for op, result, exc, txn in done:
            if txn is not None:  # the op and the batch's write succeeded
                for cb in txn.after:
                    try:
                        cb()
                    except Exception:
                        pass
            if op.loop is not None:
                by_loop.setdefault(op.loop, []).append((op.future, result, exc))
            elif exc is not None:
                op.future.set_exception(exc)
            else:
                op.future.set_result(result)
        for loop, results in by_loop.items():
            try:
                loop.call_soon_threadsafe(_deliver, results)
            except RuntimeError:  # loop closed during shutdown
                pass

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._q.put(None)
        self._thread.join()
        self.cf.clear()
        self._handles.clear()
        self.db.close()
