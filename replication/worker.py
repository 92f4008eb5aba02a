"""Drains one target's outbox: bounded concurrency, ordering, retries forever.

One :class:`TargetWorker` per configured target, a job of the shared runner
(:mod:`vault.workers`). :meth:`TargetWorker.run_once` is one bounded pass: it
loads entries (puts at once, deletes once due), sends every entry it may send
with at most ``concurrency`` requests in flight, and returns when nothing more
can be sent now (the queue is empty, the rest waits for its turn, its delay or
a backoff). Between passes the runner waits in :meth:`TargetWorker.wait_for_work`,
which returns when new entries arrive, a delete falls due or a backoff ends.
A target that cannot be opened fails the pass: the runner backs off.
:class:`Seeder`, a second job per target, enqueues what the index held
before the target was configured.

Ordering rules (what keeps the replica consistent though entries run in
parallel):

* entries naming the same chunk or the same object key reach the target in
  sequence order;
* a vault's configuration change or deletion is a barrier for that vault:
  everything before it first, everything after it afterwards;
* a delete is sent only once every put committed before it has reached the
  target (a lagging put can never resurrect what was deleted);
* a chunk delete waits for every object delete committed before it, so no
  replicated object ever points at a chunk the replica no longer holds.

Nothing is dropped: a failed entry stays in the outbox and is retried with
exponential backoff and jitter (:data:`RETRY`), forever; an entry leaves the
outbox (through the committer) only once the target has confirmed it, or once
it no longer applies because what it names is gone locally (:class:`Skip`).
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import heapq
import logging
import time
from dataclasses import dataclass
from itertools import islice
from typing import Awaitable, Callable, Iterator, cast

from vault import errors as E
from vault.config import Config, TargetConfig
from vault.meta import ChunkMeta, Index, ObjectMeta, VaultRec
from vault.meta.outbox import (CHUNK_DELETE, CHUNK_PUT, DELQ, OBJECT_DELETE, OBJECT_PUT, PUTQ, VAULT_DELETE,
                               VAULT_PUT, Entry, first_entry, iter_queue, remove_op, seeded_key, outbox_stats,
                               target_id)
from vault.store import Store
from vault.timefmt import iso
from vault.workers import Backoff, Job

from .outbox import TargetSlot, seed_chunks_op, seed_objects_op, seed_vault_op
from .target import Manifest, Replica, Skip, TargetError

log = logging.getLogger("objvault.replication")

RETRY = Backoff(base=0.5, factor=2.0, cap=30.0, jitter=0.5)
"""Per entry, per target after failures in a row, and per failed pass."""
WINDOW = 2048
WINDOW_MANIFEST_BYTES = 64 << 20
REMOVE_BATCH = 256
REMOVE_DELAY = 0.2
IDLE_WAKE = 30.0
SEED_CHECK_SECONDS = 3600.0

Heal = Callable[[VaultRec, bytes, ChunkMeta], Awaitable[bool]]


def _read_verified(store, meta: ChunkMeta, digest: bytes, what: str) -> bytes:
    # Store.read checks every block's xxh3 checksum and raises ChunkCorrupt.
    # That is enough here: the checksums were computed from the very bytes
    # whose SHA-256 was verified at ingest, so bytes that pass them are the
    # chunk. Hashing every chunk again before sending would cost a core's
    # worth of SHA-256 at full replication speed; scrub does the full check.
    return store.read(meta.seg_id, meta.offset, meta.length, 0, meta.length, what)


@dataclass(frozen=True)
class Context:
    """What replication needs from the running vault: config, index, store, and
    the repair of a corrupt local chunk (None: reading it fails the entry)."""

    cfg: Config
    index: Index
    store: Store
    heal: Heal | None = None

    def live(self, name: str) -> VaultRec | None:
        return self.index.vault(name)

    def live_vid(self, name: str) -> int | None:
        rec = self.live(name)
        return rec.vid if rec is not None else None

    def chunk_meta(self, vid: int, digest: bytes) -> ChunkMeta | None:
        return self.index.chunk(vid, digest)

    def has_object(self, vid: int, key: str) -> bool:
        return self.index.object_packed(vid, key) is not None

    def chunk_ids(self, vid: int) -> Iterator[bytes]:
        return self.index.chunk_digests(vid)

    async def load_chunk(self, vault: str, vid: int, digest: bytes) -> bytes | None:
        """The primary's bytes of a chunk, verified (block checksums); None if it no longer exists.

        A corrupt local copy is healed first when a target has it; otherwise
        this raises (the entry is retried later), never returns bad bytes.
        """
        what = f"vault {vault!r} chunk {digest.hex()}"
        loop = asyncio.get_running_loop()
        for _ in range(3):
            meta = self.chunk_meta(vid, digest)
            if meta is None:
                return None
            try:
                return await loop.run_in_executor(None, _read_verified, self.store, meta, digest, what)
            except E.ChunkCorrupt as e:
                rec = self.live(vault)
                if rec is None or rec.vid != vid:
                    rec = VaultRec(vault, vid, 0.0)
                if self.heal is not None and await self.heal(rec, digest, meta):
                    continue
                raise TargetError(f"{e} (no target could repair it)") from None
            except (KeyError, FileNotFoundError):
                # Compaction moved the record between the index read and the
                # file read: read the index again.
                await asyncio.sleep(0.01)
        raise TargetError(f"{what}: could not be read from the store")


class TargetWorker(Job):
    """Sends one target's outbox entries; see the module docstring."""

    backoff = RETRY
    log_level = logging.DEBUG  # a pass per burst of writes
    expected_errors = (OSError, TargetError)
    INTERVAL_SECONDS = IDLE_WAKE

    def __init__(self, ctx: Context, cfg: TargetConfig, replica: Replica) -> None:
        super().__init__()
        self.name = f"replication:{cfg.name}"
        self.ctx = ctx
        self.cfg = cfg
        self.replica = replica
        self.tid = target_id(cfg.name)
        self.slot = TargetSlot(cfg, self.tid)
        self.concurrency = max(1, cfg.concurrency)
        self.puts: dict[int, Entry] = {}
        self.dels: dict[int, Entry] = {}
        self.inflight: dict[asyncio.Task, Entry] = {}
        self.put_cursor = -1
        self.del_cursor = -1
        self.put_exhausted = False
        self.next_due: float | None = None
        self.not_before: dict[int, float] = {}
        self.attempts: dict[int, int] = {}
        self.level = 0
        self.consecutive_failures = 0
        self.paused_until = 0.0  # after failures of several entries in a row
        self.opened = False
        self.last_error: str | None = None
        self.last_error_at: float | None = None
        self.last_success: float | None = None
        self.sent_entries = 0
        self.sent_bytes = 0
        self.skipped = 0
        self.failures = 0
        self._finished: list[Entry] = []
        self._remover: asyncio.Task | None = None
        self._flush_timer: asyncio.TimerHandle | None = None
        self._wake = asyncio.Event()
        self._stopping = False

    # -- wake-ups --------------------------------------------------------------------

    def notify(self) -> None:
        """New entries were committed (called on the event loop)."""
        self.put_exhausted = False
        self._wake.set()

    # -- one pass ----------------------------------------------------------------------

    async def run_once(self) -> dict:
        """Send what can be sent now; return counters of this pass.

        Raises :class:`TargetError` when the target cannot be opened."""
        stats = {"sent": 0, "skipped": 0, "failed": 0, "bytes": 0}
        if self._stopping:
            return stats
        if not self.opened:
            await self._open()
        self.put_exhausted = False  # a pass always looks for new entries
        waker: asyncio.Task | None = None
        try:
            while True:
                self._wake.clear()
                await self._load()
                self._dispatch()
                if not self.inflight:
                    break
                waker = waker if waker is not None and not waker.done() else \
                    asyncio.ensure_future(self._wake.wait())
                done, _ = await asyncio.wait(set(self.inflight) | {waker}, return_when=asyncio.FIRST_COMPLETED)
                for task in done:
                    if task is waker:
                        continue
                    entry = self.inflight.pop(task)
                    self._complete(entry, task, stats)
                self._flush()
        finally:
            if waker is not None and not waker.done():
                waker.cancel()
        await self._drain_removals()
        if not self.puts and not self.dels and self.put_exhausted and stats["failed"] == 0:
            caught_up = first_entry(self.ctx.index, self.tid, PUTQ) is None
            if caught_up:
                self.last_error = None
        return stats

    async def _open(self) -> None:
        try:
            await self.replica.open()
        except Exception as e:
            msg = f"target {self.cfg.name!r}: {e}"
            self._record_error(msg)
            raise TargetError(msg) from None
        self.opened = True

    async def wait_for_work(self, timeout: float) -> None:
        """Until new entries arrive, a delete or a retry falls due, or ``timeout``."""
        now = time.time()
        wait = timeout
        if self.next_due is not None:
            wait = min(wait, max(0.0, self.next_due - now) + 0.01)
        if self.paused_until > now:
            wait = min(wait, self.paused_until - now)
        if self.not_before:
            wait = min(wait, max(0.0, min(self.not_before.values()) - now))
        try:
            await asyncio.wait_for(self._wake.wait(), timeout=max(0.01, wait))
        except asyncio.TimeoutError:
            pass

    async def stop(self) -> None:
        """After the runner stopped: cancel sends in flight, record what was confirmed."""
        self._stopping = True
        for t in list(self.inflight):
            t.cancel()
        if self.inflight:
            await asyncio.gather(*self.inflight, return_exceptions=True)
        self.inflight.clear()
        try:
            await asyncio.wait_for(self._drain_removals(), timeout=10)
        except (asyncio.TimeoutError, Exception):
            pass
        if self._flush_timer is not None:
            self._flush_timer.cancel()
            self._flush_timer = None

    # -- loading -------------------------------------------------------------------------

    async def _load(self) -> None:
        idx = self.ctx.index
        new_chunks: dict[str, list[bytes]] = {}
        room = WINDOW - len(self.puts)
        if room > 0 and not self.put_exhausted:
            # Manifests travel inside their entries: bound what a window holds.
            held = sum(e.size for e in self.puts.values() if e.kind == OBJECT_PUT)
            got = 0
            for e in islice(iter_queue(idx, self.tid, PUTQ, self.put_cursor), room):
                self.puts[e.seq] = e
                self.put_cursor = e.seq
                got += 1
                if e.kind == CHUNK_PUT:
                    new_chunks.setdefault(e.vault, []).append(e.digest)
                elif e.kind == OBJECT_PUT:
                    held += e.size
                    if held > WINDOW_MANIFEST_BYTES:
                        break
            else:
                if got < room:
                    self.put_exhausted = True
        room = WINDOW - len(self.dels)
        now = time.time()
        self.next_due = None
        if room > 0:
            for e in iter_queue(idx, self.tid, DELQ, self.del_cursor):
                if e.due > now:
                    self.next_due = e.due
                    break
                self.dels[e.seq] = e
                self.del_cursor = e.seq
                room -= 1
                if room == 0:
                    break
        if new_chunks and self.replica.chunk_batch > 1:
            for vault, digests in new_chunks.items():
                for i in range(0, len(digests), self.replica.chunk_batch):
                    try:
                        await self.replica.prepare(vault, digests[i:i + self.replica.chunk_batch])
                    except Exception as e:  # only an optimisation: the puts still happen
                        log.debug("prepare failed", extra={"target": self.cfg.name, "error": str(e)})

    # -- dispatch ------------------------------------------------------------------------

    def _dispatch(self) -> None:
        now = time.time()
        if now < self.paused_until:
            return
        free = self.concurrency - len(self.inflight)
        if free <= 0:
            return
        running = {e.seq for e in self.inflight.values()}
        # Puts are loaded in sequence order and stay in ``self.puts`` until
        # confirmed: the first one is the oldest put not yet on the target.
        put_low = next(iter(self.puts)) if self.puts else (
            float("inf") if self.put_exhausted else self.put_cursor + 1)
        blocked_keys: set[tuple] = set()
        vaults_seen: set[str] = set()
        barriers: set[str] = set()
        object_delete_before = False
        merged = heapq.merge(self.puts.values(), self.dels.values(), key=lambda e: e.seq)
        for e in merged:
            ok = True
            if e.vault in barriers or e.order_key in blocked_keys:
                ok = False
            elif e.kind in (VAULT_PUT, VAULT_DELETE) and e.vault in vaults_seen:
                ok = False
            elif e.is_delete and e.seq > put_low:
                ok = False
            elif e.kind == CHUNK_DELETE and object_delete_before:
                ok = False
            blocked_keys.add(e.order_key)
            vaults_seen.add(e.vault)
            if e.kind in (VAULT_PUT, VAULT_DELETE):
                barriers.add(e.vault)
            if e.kind in (OBJECT_DELETE, VAULT_DELETE):
                object_delete_before = True
            if not ok or e.seq in running:
                continue
            nb = self.not_before.get(e.seq)
            if nb is not None and nb > now:
                continue
            task = asyncio.ensure_future(self._execute(e))
            self.inflight[task] = e
            running.add(e.seq)
            free -= 1
            if free == 0:
                return

    def _complete(self, e: Entry, task: asyncio.Task, stats: dict) -> None:
        exc = task.exception() if not task.cancelled() else asyncio.CancelledError()
        if exc is None or isinstance(exc, Skip):
            if isinstance(exc, Skip):
                stats["skipped"] += 1
                self.skipped += 1
                log.info("replication entry no longer applies",
                         extra={"target": self.cfg.name, "entry": e.describe(), "reason": str(exc)})
            else:
                moved = task.result()
                stats["sent"] += 1
                stats["bytes"] += moved
                self.sent_entries += 1
                self.sent_bytes += moved
            self.last_success = time.time()
            self.level = 0
            self.consecutive_failures = 0
            (self.dels if e.is_delete else self.puts).pop(e.seq, None)
            self.not_before.pop(e.seq, None)
            self.attempts.pop(e.seq, None)
            self._finished.append(e)
            return
        stats["failed"] += 1
        self.failures += 1
        n = self.attempts.get(e.seq, 0) + 1
        self.attempts[e.seq] = n
        self.not_before[e.seq] = time.time() + RETRY.jittered(n)
        msg = f"{e.describe()}: {exc}"
        self._record_error(msg)
        if isinstance(exc, asyncio.CancelledError):
            return
        log.warning("replication failed, will retry", extra={"target": self.cfg.name, "error": msg,
                                                           "attempt": n})
        # Several failures in a row and no success between them: the target
        # itself is down (not one bad entry); back off as a whole.
        self.consecutive_failures += 1
        if self.consecutive_failures >= min(3, self.concurrency) and time.time() >= self.paused_until:
            self.level += 1
            self.paused_until = time.time() + RETRY.jittered(self.level)

    def _record_error(self, msg: str) -> None:
        self.last_error = msg
        self.last_error_at = time.time()

    # -- sending -------------------------------------------------------------------------

    async def _execute(self, e: Entry) -> int:
        """Apply one entry to the target; returns the bytes that travelled."""
        ctx, r = self.ctx, self.replica

        def load(digest: bytes):
            return ctx.load_chunk(e.vault, e.vid, digest)

        if e.kind == CHUNK_PUT:
            if ctx.live_vid(e.vault) != e.vid:
                raise Skip("the vault was deleted")
            return e.length if await r.put_chunk(e.vault, e.digest, None, load) else 0
        elif e.kind == OBJECT_PUT:
            if ctx.live_vid(e.vault) != e.vid:
                raise Skip("the vault was deleted")
            o = cast(ObjectMeta, e.obj)  # decode() sets it on every OBJECT_PUT entry
            await r.put_object(e.vault, Manifest(e.okey, o.created, o.size, o.chunks, o.meta), load)
            return e.size
        elif e.kind == VAULT_PUT:
            if ctx.live_vid(e.vault) != e.vid:
                raise Skip("the vault was deleted")
            await r.put_vault(e.vault, cast(dict, e.doc))  # decode() sets it on every VAULT_PUT entry
        elif e.kind == OBJECT_DELETE:
            vid = ctx.live_vid(e.vault)
            if vid is not None and ctx.has_object(vid, e.okey):
                raise Skip("the object exists again")
            await r.delete_object(e.vault, e.okey)
        elif e.kind == CHUNK_DELETE:
            vid = ctx.live_vid(e.vault)
            if vid is not None and ctx.chunk_meta(vid, e.digest) is not None:
                raise Skip("the chunk exists again")
            await r.delete_chunk(e.vault, e.digest)
        elif e.kind == VAULT_DELETE:
            live = ctx.live(e.vault)
            if live is None:
                await r.purge_vault(e.vault, None, None)
            else:
                # A vault of the same name exists again: remove only what it does not hold.
                await r.purge_vault(e.vault, lambda key: ctx.has_object(live.vid, key),
                                    lambda: ctx.chunk_ids(live.vid))
        return 0

    # -- removing finished entries ------------------------------------------------------

    def _flush(self, force: bool = False) -> None:
        """Remove finished entries through the committer, in batches: a removal
        costs a synced index write, and losing one (a crash) only means the
        entries are sent again, which every target accepts."""
        if not self._finished:
            return
        if not force and len(self._finished) < REMOVE_BATCH:
            if self._flush_timer is None:
                self._flush_timer = asyncio.get_running_loop().call_later(REMOVE_DELAY, self._timer_flush)
            return
        if self._remover is None or self._remover.done():
            if self._flush_timer is not None:
                self._flush_timer.cancel()
                self._flush_timer = None
            batch, self._finished = self._finished, []
            self._remover = asyncio.ensure_future(self.ctx.index.run(remove_op(self.tid, batch)))
            self._remover.add_done_callback(functools.partial(self._removed, batch=batch))

    def _removed(self, task: asyncio.Task, batch: list[Entry]) -> None:
        if task.cancelled() or task.exception() is not None:
            # The entries stay in the outbox and are sent again after a restart
            # (every send is idempotent); try removing them again now.
            self._finished[:0] = batch
            if not task.cancelled():
                log.warning("could not remove finished outbox entries",
                            extra={"target": self.cfg.name, "error": str(task.exception())})
            return
        if self._finished and not self._stopping:
            self._flush()

    def _timer_flush(self) -> None:
        self._flush_timer = None
        self._flush(force=True)

    async def _drain_removals(self) -> None:
        for _ in range(100):
            if self._remover is not None and not self._remover.done():
                try:
                    await asyncio.shield(self._remover)
                except Exception:
                    pass
                continue
            if not self._finished:
                return
            self._flush(force=True)

    # -- seeding ---------------------------------------------------------------------------

    def fingerprint(self) -> bytes:
        return hashlib.sha256(repr((self.cfg.kind, self.cfg.url, sorted(self.cfg.vaults))).encode()).digest()

    async def seed(self) -> int:
        """Enqueue everything the index already holds for this target (once per
        target configuration): a target added to a running vault gets the
        data written before it existed. Duplicates of live entries are harmless."""
        idx = self.ctx.index
        fp = self.fingerprint()
        if idx.marker(seeded_key(self.tid)) == fp:
            return 0
        n = 0
        names = idx.vault_names()
        for name in names:
            if not self.cfg.matches(name):
                continue
            rec = await idx.run(seed_vault_op(self.slot, name))
            if rec is None:
                continue
            for ids, make in ((idx.chunk_digests(rec.vid), seed_chunks_op),
                              ((k for k, _ in idx.objects(rec.vid)), seed_objects_op)):
                page: list = []
                for k in ids:
                    page.append(k)
                    if len(page) == 1000:
                        n += await idx.run(make(self.slot, rec, page))
                        page = []
                        self.notify()
                if page:
                    n += await idx.run(make(self.slot, rec, page))
        await idx.run(lambda txn: txn.put_marker(seeded_key(self.tid), fp))
        if n:
            log.info("replication seeded", extra={"target": self.cfg.name, "entries": n})
        self.notify()
        return n

    # -- lag ---------------------------------------------------------------------------

    def status(self) -> dict:
        idx = self.ctx.index
        entries, nbytes, delayed = outbox_stats(idx, self.tid)
        now = time.time()
        oldest = 0.0
        first = first_entry(idx, self.tid, PUTQ)
        if first is not None:
            oldest = max(oldest, now - first.t)
        first = first_entry(idx, self.tid, DELQ)
        if first is not None and first.due <= now:
            oldest = max(oldest, now - first.due)
        return {
            "name": self.cfg.name,
            "kind": self.cfg.kind,
            "url": self.cfg.url,
            "pending_entries": entries,
            "pending_bytes": nbytes,
            "delayed_entries": delayed,
            "oldest_pending_seconds": round(oldest, 3),
            "last_error": self.last_error,
            "last_error_at": iso(self.last_error_at) if self.last_error_at else None,
            "last_success": iso(self.last_success) if self.last_success else None,
            "sent_entries": self.sent_entries,
            "sent_bytes": self.sent_bytes,
            "encrypted": bool(self.cfg.encryption_key_file),
        }


class Seeder(Job):
    """Makes sure a target has been seeded (:meth:`TargetWorker.seed`): at start,
    and again every :data:`SEED_CHECK_SECONDS` (a no-op once seeded); the runner
    retries a failed seeding after :data:`RETRY`."""

    backoff = RETRY
    INTERVAL_SECONDS = SEED_CHECK_SECONDS

    def __init__(self, worker: TargetWorker) -> None:
        super().__init__()
        self.name = f"replication-seed:{worker.cfg.name}"
        self.worker = worker

    async def run_once(self) -> dict:
        return {"entries": await self.worker.seed()}
