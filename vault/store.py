"""Chunk bytes on disk: append-only segment files on one or more data dirs.

Layout of a data directory::

    <dir>/segments/<segment id, 10 digits>.seg

A segment starts with a 4 KiB file header, then self-describing records::

    header (64 B): magic "OVR1", version, flags, vault id, sha256, length,
                   crc32 of the preceding 56 bytes
    block sums   : xxh3-64 of each 64 KiB block of the data (8 B each)
    data         : the chunk bytes

Small chunks (up to ``stream_threshold_bytes``) are appended to the data
directory's *active* segment by :class:`SegmentWriter`, which gathers
every record that arrived while earlier writes were in flight into one
aligned O_DIRECT group followed by one ``fdatasync`` (group commit).
Groups start on 4 KiB boundaries (zero padding between them). Larger chunks are
streamed into a segment of their own (temp file, fdatasync, rename,
directory fsync), so a 128 MiB body is never held in memory; a body may be
spliced into it straight from the socket (:meth:`StreamWriter.splice_from`).
Compaction copies records into segments of its own
(:class:`CompactionOutput`). Nothing else writes segment bytes.

The per-block checksums let a read verify exactly the blocks it serves
(a Range GET of a 128 MiB restic pack reads a few blocks, not the pack);
the full SHA-256 is re-checked by scrub.

This module knows nothing of RocksDB: it returns locations, and the index
decides what is live. A crash leaves at worst bytes past a segment's
committed end, which :meth:`Store.open` truncates at start-up.

A full data directory is not a failed one. Chunk writes leave a reserve
free on every filesystem (for RocksDB and compaction), a directory without
room is passed over for another (:meth:`Store.pick_dir`), a request that
finds none gets :class:`NoSpace` before anything is written, and the
directory takes writes again once it has room. Only other I/O errors fail a
directory for good (:meth:`Store.on_failure`).
"""

from __future__ import annotations

import collections
import concurrent.futures
import ctypes
import errno
import fcntl
import hashlib
import mmap
import os
import queue
import select
import shutil
import struct
import sys
import threading
import time
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Literal, Sequence, overload

import xxhash

from .errors import ChunkCorrupt, NoSpace, StorageFailure

ALIGN = 4096
BLOCK = 64 * 1024
FILE_HEADER_SIZE = ALIGN
FILE_MAGIC = b"OVSEG001"
REC_MAGIC = b"OVR1"
REC_VERSION = 1
_REC = struct.Struct("<4sHHQ32sQ")  # 56 bytes, then crc32 + 4 pad
REC_HEADER_SIZE = 64
GROUP_MAX = 16 << 20  # bytes gathered into one write + fdatasync at most
ABSORB_BYTES = 1 << 20  # read-back buffer of a spliced body (StreamWriter._absorb)
PIPE_BYTES = 1 << 20  # pipe between the socket and the file of a spliced body
# Space chunk writes leave free on every data directory's filesystem: RocksDB
# (on the first data dir) must still be able to write its WAL, flush and
# compact when the segments have filled the rest (a failed index write makes
# the index read-only until a restart), and compaction must copy before it
# can free. 2% of the filesystem, at least 4 MiB, at most 1 GiB.
RESERVE_FRACTION = 0.02
RESERVE_MIN = 4 << 20
RESERVE_MAX = 1 << 30
# Free space is asked of the filesystem (statvfs) again after this long, and
# on every check once it is within SPACE_SLACK of what a write needs.
SPACE_TTL = 0.5
SPACE_SLACK = 64 << 20
# A directory that answered ENOSPC although statvfs showed room (a quota,
# another writer) is passed over for this long, or until its free space grows.
FULL_RETRY_SECONDS = 5.0
_RWF_NOWAIT = getattr(os, "RWF_NOWAIT", 0)
_MAP_POPULATE = getattr(mmap, "MAP_POPULATE", 0)
_PAGE = mmap.PAGESIZE


class _CacheRange(ctypes.Structure):
    _fields_ = [("off", ctypes.c_uint64), ("len", ctypes.c_uint64)]


class _CacheStat(ctypes.Structure):
    _fields_ = [(n, ctypes.c_uint64) for n in ("nr_cache", "nr_dirty", "nr_writeback", "nr_evicted",
                                               "nr_recently_evicted")]


# cachestat(2), Linux 6.5+: the same number on every architecture. Called
# through PyDLL so that the GIL is kept: it returns in a microsecond.
_SYS_CACHESTAT = 451
_libc: ctypes.PyDLL | None = ctypes.PyDLL(None, use_errno=True) if sys.platform == "linux" else None


def cache_state(fd: int, lo: int, hi: int) -> tuple[int, int, int] | None:
    """Pages of bytes ``[lo, hi)`` of a file: (in all, in the page cache, dirty).

    None when the kernel can't say (no cachestat, or a seccomp filter
    refusing it); the answer then stays None for the life of the process.
    """
    global _libc
    if _libc is None:
        return None
    lo &= ~(_PAGE - 1)
    pages = -(-(hi - lo) // _PAGE)
    rng, st = _CacheRange(lo, pages * _PAGE), _CacheStat()
    if _libc.syscall(_SYS_CACHESTAT, fd, ctypes.byref(rng), ctypes.byref(st), 0) != 0:
        if ctypes.get_errno() in (errno.ENOSYS, errno.EPERM):
            _libc = None
            return None
        return pages, 0, 0
    return pages, st.nr_cache, st.nr_dirty


def all_cached(fd: int, lo: int, hi: int) -> bool | None:
    """Is every page of bytes ``[lo, hi)`` of a file in the page cache? None: can't tell."""
    state = cache_state(fd, lo, hi)
    return None if state is None else state[1] == state[0]


# sync_file_range(2) through CDLL, which lets go of the GIL: it can wait for
# the block layer to take the pages.
_SYNC_FILE_RANGE_WRITE = 2
_sync_file_range: Callable | None = None
if sys.platform == "linux":
    try:
        _sync_file_range = ctypes.CDLL(None, use_errno=True).sync_file_range
        _sync_file_range.argtypes = (ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint)
        _sync_file_range.restype = ctypes.c_int
    except AttributeError:
        _sync_file_range = None


def start_writeback(fd: int, offset: int, length: int) -> None:
    """Ask the kernel to start writing ``[offset, offset+length)`` of a file
    to disk now, without waiting: the ``fdatasync`` that makes it durable
    later has that much less left to do. Only a hint; errors are ignored
    here, the ``fdatasync`` reports them."""
    if _sync_file_range is not None:
        _sync_file_range(fd, offset, length, _SYNC_FILE_RANGE_WRITE)


def nblocks(length: int) -> int:
    return max(1, -(-length // BLOCK))


def record_size(length: int) -> int:
    return REC_HEADER_SIZE + 8 * nblocks(length) + length


def data_offset(offset: int, length: int) -> int:
    return offset + REC_HEADER_SIZE + 8 * nblocks(length)


# What a record's bytes may arrive as: request bodies are any of these.
ByteData = bytes | bytearray | memoryview


def block_sums(data: ByteData) -> bytes:
    mv = memoryview(data)
    n = nblocks(len(mv))
    return b"".join(xxhash.xxh3_64_digest(mv[i * BLOCK:(i + 1) * BLOCK]) for i in range(n))


def record_header(vid: int, digest: bytes, length: int) -> bytes:
    head = _REC.pack(REC_MAGIC, REC_VERSION, 0, vid, digest, length)
    return head + struct.pack("<I", zlib.crc32(head)) + b"\0" * 4


def parse_record_header(buf: bytes) -> tuple[int, bytes, int] | None:
    """Return ``(vid, digest, length)`` or ``None`` if ``buf`` is no valid header."""
    if len(buf) < REC_HEADER_SIZE or buf[:4] != REC_MAGIC:
        return None
    head = buf[:56]
    (crc,) = struct.unpack_from("<I", buf, 56)
    if zlib.crc32(head) != crc:
        return None
    _, _version, _flags, vid, digest, length = _REC.unpack(head)
    return vid, digest, length


def file_header(seg_id: int) -> bytes:
    head = FILE_MAGIC + struct.pack("<Qd", seg_id, time.time())
    return head + b"\0" * (FILE_HEADER_SIZE - len(head))


def _is_enospc(e: BaseException) -> bool:
    return getattr(e, "errno", None) in (errno.ENOSPC, errno.EDQUOT)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@dataclass(frozen=True)
class Location:
    """Where a record landed: segment, record offset, record size."""

    seg_id: int
    offset: int
    size: int
    dir_idx: int


Done = Callable[["Location | None", "Exception | None"], None]


class _Pending:
    __slots__ = ("header", "sums", "data", "done", "tried")

    def __init__(self, header: bytes, sums: bytes, data: ByteData, done: Done):
        self.header, self.sums, self.data, self.done = header, sums, data, done
        self.tried: tuple[int, ...] = ()  # data dirs that had no room for it

    @property
    def size(self) -> int:
        return len(self.header) + len(self.sums) + len(self.data)


class _Group:
    """Records written together: one aligned region, its pwrites, one fdatasync."""

    __slots__ = ("fd", "seg_id", "items", "locs", "writes", "buf", "end", "stop")

    def __init__(self, fd, seg_id, items, locs, writes, buf, end, stop):
        self.fd, self.seg_id, self.items, self.locs, self.writes, self.buf, self.end, self.stop = \
            fd, seg_id, items, locs, writes, buf, end, stop


class SegmentWriter:
    """The single writer of one data directory's active segment.

    Two threads and a small I/O pool make a pipeline:

    * the *assembler* takes every queued record (up to ``GROUP_MAX`` bytes),
      copies them into an aligned buffer, pads the group to 4 KiB and issues
      its O_DIRECT writes in 1 MiB pieces on the I/O pool (several writes in
      flight: this virtual disk does ~330 MB/s at queue depth 1, ~475 at 4);
    * the *syncer* takes every group whose writes were issued, waits for
      them, calls ``fdatasync`` once for all of them, then acknowledges.

    Each group starts on a fresh 4 KiB boundary, so a block that holds
    acknowledged bytes is never written again (a torn rewrite could not
    damage them). The padding costs < 4 KiB per group.

    A full filesystem (ENOSPC, EDQUOT) is not a failed one. Records that
    found no room, and were never synced, are offered to the other data
    directories (:meth:`Store.reroute`) and fail with :class:`NoSpace` when
    none has room; records whose ``fdatasync`` failed fail with it (never
    retried). Once a group of a segment failed that way, nothing after it in
    that segment is acknowledged: the segment is cut back to its last
    acknowledged group and the next group goes to a new segment. The
    directory takes writes again as soon as it has room. Any other write or
    ``fdatasync`` error fails the directory for good (:meth:`Store.on_failure`).
    """

    BUFFERS = 4
    # After this long with nothing to write, the group buffers' pages go back.
    IDLE_RELEASE_SECONDS = 1.0
    PIECE = 1 << 20
    IO_THREADS = 4

    def __init__(self, store: "Store", dir_idx: int) -> None:
        self.store = store
        self.dir_idx = dir_idx
        self._cv = threading.Condition()
        self._queue: collections.deque[_Pending] = collections.deque()
        self._stopping = False
        self._failed: OSError | None = None
        self._free: queue.SimpleQueue[mmap.mmap] = queue.SimpleQueue()
        for _ in range(self.BUFFERS):
            # Private: MADV_DONTNEED then frees the pages (on a shared
            # anonymous mapping it would only unmap them, and keep the data).
            self._free.put(mmap.mmap(-1, GROUP_MAX + ALIGN, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS))
        self._syncq: queue.SimpleQueue = queue.SimpleQueue()
        self._io = concurrent.futures.ThreadPoolExecutor(self.IO_THREADS, thread_name_prefix=f"segio-{dir_idx}")
        self._fd = -1
        self.seg_id = -1
        self.end = 0
        self.cap = 0                 # bytes preallocated for the active segment
        self.queued = 0              # bytes of records queued, not yet taken by the assembler
        self._need_new = True        # no active segment that may take the next group
        self._released = True        # the free buffers' pages were given back (assembler)
        self._bad_segs: set[int] = set()  # unsealed segments with a group failed for lack of space (syncer)
        # Padded end of the last acknowledged group of each unsealed segment (syncer).
        self._acked_end: dict[int, int] = {}
        self._assembler = threading.Thread(target=self._run, name=f"segwriter-{dir_idx}", daemon=True)
        self._syncer = threading.Thread(target=self._sync_loop, name=f"segsync-{dir_idx}", daemon=True)

    def start(self) -> None:
        """Open an active segment and start the threads. A directory that is
        full at start-up is no error: its first segment is opened once it has
        room. Raises OSError for any other failure."""
        try:
            self._open_new(0)
        except OSError as e:
            if not _is_enospc(e):
                raise
            self.store.note_full(self.dir_idx)
        self._assembler.start()
        self._syncer.start()

    def append(self, item: _Pending) -> None:
        """Queue a record; ``item.done(location, None)`` or ``item.done(None, error)``
        is called from a writer thread once it is durable or has failed."""
        with self._cv:
            if self._failed is not None:
                err: Exception | None = self._wrap(self._failed)
            elif self._stopping:
                err = StorageFailure("server is shutting down")
            else:
                err = None
                self._queue.append(item)
                self.queued += item.size
                self._cv.notify()
        if err is not None:
            item.done(None, err)

    def room(self) -> int:
        """Bytes the active segment can still take (an estimate, read without locks)."""
        if self._need_new or self._failed is not None:
            return 0
        return self.cap - self.end - self.queued

    def stop(self) -> None:
        with self._cv:
            self._stopping = True
            self._cv.notify()
        if self._assembler.is_alive():
            self._assembler.join()
        self._syncq.put(None)
        if self._syncer.is_alive():
            self._syncer.join()
        self._io.shutdown()
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    # -- assembler -------------------------------------------------------------

    def _open_new(self, need: int) -> None:
        """Make a new segment, with room for ``need`` bytes, the active one.

        It is preallocated with ``segment_bytes``, or with what the filesystem
        has left above the reserve when that is less. Raises OSError(ENOSPC)
        without creating anything when not even ``need`` fits, and removes
        the file again if anything fails after it was created.
        """
        want = FILE_HEADER_SIZE + -(-need // ALIGN) * ALIGN
        avail = self.store.available(self.dir_idx, fresh=True)
        if avail < want:
            raise OSError(errno.ENOSPC, f"{max(avail, 0)} bytes free above the reserve, a new segment needs {want}")
        size = max(want, min(self.store.segment_bytes, avail // ALIGN * ALIGN))
        seg_id = self.store.allocate_segment_id()
        path = self.store.segment_path(self.dir_idx, seg_id)
        fd = self.store.open_for_write(path)
        try:
            try:
                # Allocate the whole segment up front: ext4 serialises O_DIRECT
                # writes that extend a file, so without this the parallel writes
                # of a group run one at a time (measured: ~270 vs ~450 MB/s).
                # It also makes a full filesystem show here, before any record
                # is written, rather than in the middle of a group.
                os.posix_fallocate(fd, 0, size)
            except OSError as e:
                if e.errno not in (errno.EOPNOTSUPP, errno.EINVAL):
                    raise
            buf = self._free.get()
            try:
                buf[:FILE_HEADER_SIZE] = file_header(seg_id)
                os.pwrite(fd, memoryview(buf)[:FILE_HEADER_SIZE], 0)
            finally:
                self._free.put(buf)
            os.fdatasync(fd)
            _fsync_dir(path.parent)
        except BaseException:
            # A failed preallocation may keep what it got: give it back.
            os.close(fd)
            try:
                os.unlink(path)
            except OSError:
                pass
            raise
        old_fd, old_seg, old_end = self._fd, self.seg_id, self.end
        self.store.register_segment(seg_id, self.dir_idx, path)
        self._fd, self.seg_id, self.end, self.cap = fd, seg_id, FILE_HEADER_SIZE, size
        self._need_new = False
        if old_fd >= 0:
            # The syncer closes the old file after its last group is durable.
            self._syncq.put(("seal", old_fd, old_seg, old_end))

    def _abandon(self) -> None:
        """The active segment had a group fail for lack of space: what lies past
        its last acknowledged group is unknown, so nothing is appended there.
        Once no write is in flight, cut it back to that group (giving the
        preallocated rest back to the filesystem) and ask for a new segment."""
        held = [self._free.get() for _ in range(self.BUFFERS)]  # every issued group is through the syncer
        for buf in held:
            self._free.put(buf)
        self.end = self._acked_end.get(self.seg_id, FILE_HEADER_SIZE)
        self._need_new = True
        try:
            os.ftruncate(self._fd, self.end)
        except OSError:
            pass  # the seal cuts it again; start-up cuts an unsealed segment to its committed end

    def _wrap(self, e: OSError) -> Exception:
        return self.store.wrap_error(self.dir_idx, e)

    def _take(self) -> list[_Pending] | None:
        with self._cv:
            while not self._queue and not self._stopping:
                if not self._cv.wait(self.IDLE_RELEASE_SECONDS) and not self._queue and not self._released:
                    self._release_buffers()
            if not self._queue:
                return None
            group: list[_Pending] = []
            size = 0
            while self._queue and (not group or size + self._queue[0].size <= GROUP_MAX):
                item = self._queue.popleft()
                group.append(item)
                size += item.size
            self.queued -= size
            return group

    def _release_buffers(self) -> None:
        """Give the pages of the free group buffers back to the system (64 MiB
        per data directory once written): an idle writer holds no memory.
        They come back zeroed, page by page, when the next group is copied in."""
        bufs = []
        while True:
            try:
                bufs.append(self._free.get_nowait())
            except queue.Empty:
                break
        for buf in bufs:
            buf.madvise(mmap.MADV_DONTNEED)
            self._free.put(buf)
        self._released = True

    def _run(self) -> None:
        while True:
            items = self._take()
            if items is None:
                return
            self._assemble(items)
            # _take() may wait long for the next record: hold nothing of this
            # group meanwhile (its records' callbacks reach whole request bodies).
            items = None

    def _assemble(self, items: list[_Pending]) -> None:
        if self._failed is not None:
            self._fail(items, self._failed)
        else:
            try:
                size = sum(i.size for i in items)
                if self.seg_id in self._bad_segs and not self._need_new:
                    self._abandon()
                if self._need_new or self.end + size > self.cap:
                    self._open_new(size)
                self._issue(items, size)
            except OSError as e:
                if _is_enospc(e):
                    # Nothing of these records was written: another directory may take them.
                    self.store.note_full(self.dir_idx)
                    self.store.reroute(items, self.dir_idx)
                else:
                    self._fail(items, e)

    def _issue(self, items: list[_Pending], size: int) -> None:
        buf = self._free.get()  # back-pressure: at most BUFFERS groups in flight
        self._released = False
        pos = 0
        locs = []
        for item in items:
            locs.append(Location(self.seg_id, self.end + pos, item.size, self.dir_idx))
            for part in (item.header, item.sums, item.data):
                n = len(part)
                buf[pos:pos + n] = part
                pos += n
        padded = -(-pos // ALIGN) * ALIGN
        if padded > pos:
            buf[pos:padded] = bytes(padded - pos)
        start = self.end
        self.end = start + padded
        view = memoryview(buf)
        writes = [self._io.submit(_pwrite_all, self._fd, view[off:min(off + self.PIECE, padded)], start + off)
                  for off in range(0, padded, self.PIECE)]
        self._syncq.put(_Group(self._fd, self.seg_id, items, locs, writes, buf, start + pos, start + padded))

    def _fail(self, items: list[_Pending], e: OSError) -> None:
        # A failed write or fdatasync is never retried: what reached the disk
        # is unknown. Fail these records and every later one.
        self._failed = e
        err = self._wrap(e)
        with self._cv:
            rest = list(self._queue)
            self._queue.clear()
            self.queued = 0
        for item in items + rest:
            item.done(None, err)
        self.store.on_failure(self.dir_idx, e)

    # -- syncer ----------------------------------------------------------------

    def _sync_loop(self) -> None:
        while True:
            first = self._syncq.get()
            if first is None:
                return
            batch = [first]
            while True:
                try:
                    nxt = self._syncq.get_nowait()
                except queue.Empty:
                    break
                if nxt is None:
                    self._syncq.put(None)
                    break
                batch.append(nxt)
            self._sync(batch)
            # Hold nothing of these groups while waiting for the next: a
            # blocked thread's locals keep whole request bodies alive.
            first = nxt = None
            del batch

    def _sync(self, batch: list) -> None:
        groups = [g for g in batch if isinstance(g, _Group)]
        t0 = time.perf_counter()
        fatal: OSError | None = self._failed
        write_err: dict[int, OSError] = {}
        for g in groups:
            for w in g.writes:
                exc = w.exception()
                if exc is not None:
                    if not _is_enospc(exc):
                        fatal = fatal or exc
                    write_err.setdefault(id(g), exc)
        acked: list[_Group] = []
        spilled: list[_Group] = []     # never synced: the records may go elsewhere
        unsynced: list[tuple[_Group, OSError]] = []  # their fdatasync failed: the request fails
        if fatal is None:
            for g in groups:
                # Groups of a segment are in file order: after one that failed
                # for lack of space, none of that segment may be acknowledged,
                # or a later scan would stop at the hole and miss them.
                if g.seg_id in self._bad_segs or id(g) in write_err:
                    self._bad_segs.add(g.seg_id)
                    spilled.append(g)
                else:
                    acked.append(g)
            sync_err: dict[int, OSError] = {}
            for fd in dict.fromkeys(g.fd for g in acked):
                try:
                    os.fdatasync(fd)
                except OSError as e:
                    # Never retried: what reached the disk is unknown, these records fail.
                    if not _is_enospc(e):
                        fatal = e
                        break
                    sync_err[fd] = e
            if sync_err and fatal is None:
                for g in acked:
                    if g.fd in sync_err:
                        self._bad_segs.add(g.seg_id)
                        unsynced.append((g, sync_err[g.fd]))
                acked = [g for g in acked if g.fd not in sync_err]
            if fatal is None:
                for g in acked:
                    self._acked_end[g.seg_id] = g.stop
        for g in groups:
            self._free.put(g.buf)
        if fatal is not None:
            for g in groups:
                self._fail(g.items, fatal)
        else:
            if acked:
                self.store.recorder.fsync(time.perf_counter() - t0, sum(len(g.items) for g in acked))
            for g in acked:
                for item, loc in zip(g.items, g.locs):
                    item.done(loc, None)
            if spilled or unsynced:
                self.store.note_full(self.dir_idx)
            for g in spilled:
                self.store.reroute(g.items, self.dir_idx)
            for g, write_exc in unsynced:
                err = self._wrap(write_exc)
                for item in g.items:
                    item.done(None, err)
        for marker in batch:
            if isinstance(marker, tuple):
                _, fd, seg_id, end = marker
                acked_end = self._acked_end.pop(seg_id, FILE_HEADER_SIZE)
                if seg_id in self._bad_segs:
                    self._bad_segs.discard(seg_id)
                    end = acked_end  # cut off the groups that failed for lack of space
                if self._failed is None:
                    try:
                        os.ftruncate(fd, end)  # give back the unused preallocation
                        os.fdatasync(fd)
                    except OSError as e:
                        # Without room the tail merely stays: it is past every
                        # acknowledged record. Anything else is a failing disk.
                        if not _is_enospc(e):
                            self._failed = e
                            self.store.on_failure(self.dir_idx, e)
                os.close(fd)
                self.store.on_sealed(seg_id, end)


def _pwrite_all(fd: int, data: ByteData, offset: int) -> None:
    view = memoryview(data)
    while view:
        n = os.pwrite(fd, view, offset)
        offset += n
        view = view[n:]


class SegmentGone(ChunkCorrupt):
    """A read found no segment where the index pointed: compaction removed it
    meanwhile (the caller looks again), or the file is lost."""


class StreamWriter:
    """Writes one large chunk into a segment of its own, piece by piece.

    Feed the body with :meth:`write` / :meth:`write_parts`, or hand it the
    socket it arrives on with :meth:`splice_from` (all blocking: call them
    from a worker thread), then :meth:`commit` once the digest is verified,
    or :meth:`abort`. Every body byte is also fed to ``sha`` when one is
    given, whichever way it came. Made by :meth:`Store.stream`, which has
    checked that the directory has room and claimed the record's size on it
    (``claimed``) until commit or abort, so concurrent streams do not count
    the same free bytes twice. Every method raises :class:`NoSpace` or
    :class:`StorageFailure` (naming the data dir) when the filesystem refuses.
    """

    def __init__(self, store: "Store", dir_idx: int, vid: int, digest: bytes, length: int,
                 claimed: int = 0, sha: "hashlib._Hash | None" = None) -> None:
        self.store, self.dir_idx, self.length = store, dir_idx, length
        self._claim = claimed  # bytes of the dir's free space promised to this stream
        self._sha = sha
        self.seg_id = store.allocate_segment_id()
        self.final = store.segment_path(dir_idx, self.seg_id)
        self.tmp = self.final.with_suffix(".tmp")
        self._fd = -1
        self._sums = bytearray()
        self._block = xxhash.xxh3_64()  # the current incomplete block, hashed so far
        self._filled = 0                 # its length
        self._absorb_buf: bytearray | None = None
        self._pos = data_offset(FILE_HEADER_SIZE, length)  # where the next body byte goes
        try:
            self._fd = os.open(self.tmp, os.O_CREAT | os.O_EXCL | os.O_RDWR | os.O_CLOEXEC, 0o640)
            os.pwrite(self._fd, file_header(self.seg_id) + record_header(vid, digest, length), 0)
        except OSError as e:
            self.abort()
            raise store.wrap_error(dir_idx, e) from None

    def write(self, piece: ByteData) -> None:
        self.write_parts([piece])

    def write_parts(self, parts: list) -> None:
        """Append body pieces of any sizes: xxh3 per 64 KiB block, then one ``pwritev``.

        Nothing is copied: a block split across pieces is hashed with the
        streaming xxh3 state.
        """
        if self._sha is not None:
            for p in parts:
                self._sha.update(p)
        self._sum_parts(parts)
        try:
            views = [memoryview(p) for p in parts if len(p)]
            start = self._pos
            while views:
                n = os.pwritev(self._fd, views, self._pos)
                self._pos += n
                while views and n >= len(views[0]):
                    n -= len(views[0])
                    views.pop(0)
                if n:
                    views[0] = views[0][n:]
            start_writeback(self._fd, start, self._pos - start)
        except OSError as e:
            raise self.store.wrap_error(self.dir_idx, e) from None

    def splice_from(self, sock: int, n: int, head: bytes = b"", idle: float = 60.0) -> None:
        """Take ``n`` body bytes: ``head`` (already read off the socket), then
        the rest straight from the socket ``sock`` with ``splice(2)`` through a
        pipe, so they go from the socket buffers to the page cache without
        passing through Python. ``sock`` must be non-blocking (as an event
        loop's sockets are): the wait for more bytes is a ``poll``, bounded
        by ``idle``.

        Raises :class:`NoSpace` / :class:`StorageFailure` when the file side
        fails. The socket side's errors are the client's and pass through:
        EOFError (the body ended early), TimeoutError (no byte arrived for
        ``idle`` seconds), ConnectionError.
        """
        if head:
            self.write_parts([head])
        if n > len(head):
            self._splice(sock, n - len(head), idle)

    def _splice(self, sock: int, left: int, idle: float) -> None:
        r, w = os.pipe2(os.O_CLOEXEC)
        try:
            try:
                cap = fcntl.fcntl(w, fcntl.F_SETPIPE_SZ, PIPE_BYTES)
            except OSError:
                cap = fcntl.fcntl(w, fcntl.F_GETPIPE_SZ)
            poller = select.poll()
            poller.register(sock, select.POLLIN)
            pending = 0  # bytes in the file, not absorbed yet
            while left:
                try:
                    k = os.splice(sock, w, min(left, cap), flags=os.SPLICE_F_MOVE | os.SPLICE_F_NONBLOCK)
                except BlockingIOError:
                    if pending:  # hash what is in place while waiting for more
                        self._absorb(pending)
                        pending = 0
                    if not poller.poll(idle * 1000):
                        raise TimeoutError from None
                    continue
                if k == 0:
                    raise EOFError
                left -= k
                self._from_pipe(r, k, self._pos + pending)
                pending += k
                if pending >= cap:
                    self._absorb(pending)
                    pending = 0
            if pending:
                self._absorb(pending)
        finally:
            os.close(r)
            os.close(w)

    def _from_pipe(self, pipe: int, k: int, pos: int) -> None:
        """Move ``k`` bytes from ``pipe`` into the file at ``pos``."""
        try:
            while k:
                m = os.splice(pipe, self._fd, k, offset_dst=pos, flags=os.SPLICE_F_MOVE)
                pos += m
                k -= m
        except OSError as e:
            raise self.store.wrap_error(self.dir_idx, e) from None

    def _absorb(self, n: int) -> None:
        """Take ``n`` body bytes that were spliced into the file at ``_pos``:
        read them back from the page cache, compute their block sums and feed
        them to ``sha``, and start their writeback.

        Read with ``preadv`` into one reused buffer rather than through a
        mapping: a page evicted meanwhile and unreadable on the disk is then
        an error, never a SIGBUS.
        """
        buf = self._absorb_buf
        if buf is None:
            buf = self._absorb_buf = bytearray(ABSORB_BYTES)
        view = memoryview(buf)
        try:
            while n > 0:
                got = os.preadv(self._fd, [view[:min(n, len(buf))]], self._pos)
                if got <= 0:
                    raise OSError(errno.EIO, "short read of bytes just written")
                part = view[:got]
                if self._sha is not None:
                    self._sha.update(part)
                self._sum_parts([part])
                start_writeback(self._fd, self._pos, got)
                self._pos += got
                n -= got
        except OSError as e:
            raise self.store.wrap_error(self.dir_idx, e) from None

    def _sum_parts(self, parts: list) -> None:
        h, filled, sums = self._block, self._filled, self._sums
        for p in parts:
            mv = memoryview(p)
            while mv:
                if filled == 0 and len(mv) >= BLOCK:
                    n = (len(mv) // BLOCK) * BLOCK
                    for i in range(0, n, BLOCK):
                        sums += xxhash.xxh3_64_digest(mv[i:i + BLOCK])
                    mv = mv[n:]
                    continue
                take = mv[:BLOCK - filled]
                h.update(take)
                filled += len(take)
                mv = mv[len(take):]
                if filled == BLOCK:
                    sums += h.digest()
                    h.reset()
                    filled = 0
        self._filled = filled

    def commit(self) -> Location:
        """Make the segment durable and visible; returns the record location."""
        try:
            if self._filled or not self._sums:
                self._sums += self._block.digest()
            os.pwrite(self._fd, bytes(self._sums), FILE_HEADER_SIZE + REC_HEADER_SIZE)
            t0 = time.perf_counter()
            os.fdatasync(self._fd)
            os.close(self._fd)
            self._fd = -1
            os.rename(self.tmp, self.final)
            _fsync_dir(self.final.parent)
            self.store.recorder.fsync(time.perf_counter() - t0, 1)
        except OSError as e:
            self.abort()
            if not _is_enospc(e):
                # A failed fdatasync is never retried, and says the disk is failing.
                self.store.on_failure(self.dir_idx, e)
            raise self.store.wrap_error(self.dir_idx, e) from None
        self._release()
        self.store.register_segment(self.seg_id, self.dir_idx, self.final)
        return Location(self.seg_id, FILE_HEADER_SIZE, record_size(self.length), self.dir_idx)

    def abort(self) -> None:
        """Drop the unacknowledged chunk: close and remove the temp file."""
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
        try:
            os.unlink(self.tmp)
        except FileNotFoundError:
            pass
        self._release()

    def _release(self) -> None:
        if self._claim:
            self.store.claim(self.dir_idx, -self._claim)
            self._claim = 0


class CompactionOutput:
    """A segment written by compaction alone, beside the ingest writer's active one.

    Copies do not queue behind (or in front of) ingest in the segment
    writer's group commits: they are appended here in batches, each padded
    to a 4 KiB boundary (a block holding acknowledged bytes is never
    written again) and made durable by one ``fdatasync`` before the caller
    indexes them. The file exists under its final name from the start; like
    an active segment, its index entry says how far it is committed, so a
    crash leaves at worst an unindexed tail that start-up cuts off, or a
    file the index never heard of, which start-up deletes. Made by
    :meth:`Store.compaction_output`. All methods block: call them from a
    worker thread.
    """

    def __init__(self, store: "Store", dir_idx: int) -> None:
        self.store, self.dir_idx = store, dir_idx
        self.seg_id = store.allocate_segment_id()
        path = store.segment_path(dir_idx, self.seg_id)
        self._fd = -1
        try:
            self._fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY | os.O_CLOEXEC, 0o640)
            _pwrite_all(self._fd, file_header(self.seg_id), 0)
            os.fdatasync(self._fd)
            _fsync_dir(path.parent)
        except OSError as e:
            self._discard(path)
            raise store.wrap_error(dir_idx, e) from None
        self.end = FILE_HEADER_SIZE
        store.register_segment(self.seg_id, dir_idx, path)

    def _discard(self, path: Path) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
        try:
            os.unlink(path)
        except OSError:
            pass  # start-up removes a segment file the index never recorded

    @property
    def full(self) -> bool:
        """True once the segment reached ``segment_bytes``, or a write failed."""
        return self.end >= self.store.segment_bytes

    def append(self, records: list[tuple[int, bytes, ByteData, bytes]]) -> list[Location]:
        """Append ``(vid, digest, data, block sums)`` records durably: one
        write and one ``fdatasync``. Their locations, in order.

        Raises :class:`NoSpace` / :class:`StorageFailure`; a failed write or
        sync is never retried, and the output takes no more records.
        """
        parts: list[ByteData] = []
        locs, pos = [], self.end
        for vid, digest, data, sums in records:
            size = record_size(len(data))
            parts += (record_header(vid, digest, len(data)), sums, data)
            locs.append(Location(self.seg_id, pos, size, self.dir_idx))
            pos += size
        parts.append(bytes(-pos % ALIGN))
        try:
            _pwrite_all(self._fd, b"".join(parts), self.end)
            os.fdatasync(self._fd)
        except OSError as e:
            self.end = self.store.segment_bytes
            raise self.store.wrap_error(self.dir_idx, e) from None
        self.end = pos + (-pos % ALIGN)
        return locs

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


class NullRecorder:
    """Receives storage measurements; :mod:`vault.metrics` provides the real one."""

    def fsync(self, seconds: float, records: int) -> None:
        pass

    def storage_failure(self, dir_idx: int) -> None:
        pass


class Store:
    """All data directories: writers, readers and segment bookkeeping."""

    def __init__(self, dirs: Sequence[str | os.PathLike[str]], segment_bytes: int = 1 << 30,
                 recorder: NullRecorder | None = None, direct_io: bool = True,
                 sealed_hook: Callable[[int, int], None] | None = None) -> None:
        self.dirs = [Path(d) for d in dirs]
        self.segment_bytes = segment_bytes
        self.recorder = recorder or NullRecorder()
        self.direct_io = direct_io
        self._lock = threading.Lock()
        self._next_seg = 1
        self.paths: dict[int, Path] = {}
        self.seg_dir: dict[int, int] = {}
        self._fds: dict[int, int] = {}
        self.writers: list[SegmentWriter] = []
        self.failed_dirs: set[int] = set()
        self.sealed_hook = sealed_hook  # (seg_id, end) of a segment no longer written
        self._probe = bytearray(1)
        self._rr = 0
        self._space: dict[int, tuple[float, int, int]] = {}  # dir -> (when, total, free)
        self._claimed = [0] * len(self.dirs)  # bytes promised to streams in progress
        self._claim_lock = threading.Lock()
        self._full: dict[int, tuple[float, int]] = {}  # dir -> (when, free) of its last ENOSPC

    # -- start-up ------------------------------------------------------------

    def scan_files(self) -> dict[int, tuple[int, Path]]:
        """List segment files (names only, no content): ``{seg_id: (dir_idx, path)}``.

        Leftover ``.tmp`` files (a crash mid-stream, never acknowledged) are removed.
        """
        found: dict[int, tuple[int, Path]] = {}
        for idx, d in enumerate(self.dirs):
            segdir = d / "segments"
            segdir.mkdir(parents=True, exist_ok=True)
            for entry in os.scandir(segdir):
                name = entry.name
                if name.endswith(".tmp"):
                    os.unlink(entry.path)
                elif name.endswith(".seg") and name[:-4].isdigit():
                    found[int(name[:-4])] = (idx, Path(entry.path))
        return found

    def open(self, known: dict[int, int], committed_ends: dict[int, int]) -> None:
        """Open the store after a (possibly unclean) stop.

        ``known`` maps every segment the index knows to its data dir.
        ``committed_ends`` maps segments that were active at the last stop
        to the end of their last indexed record: anything after it was
        never acknowledged and is cut off. Segment files the index never
        recorded hold no acknowledged chunk and are removed.
        """
        files = self.scan_files()
        for seg_id, (idx, path) in files.items():
            if seg_id in committed_ends:
                end = committed_ends[seg_id]
                if path.stat().st_size != end:
                    os.truncate(path, end)
            elif seg_id not in known:
                os.unlink(path)
                continue
            self.paths[seg_id] = path
            self.seg_dir[seg_id] = idx
        self._next_seg = max([0, *files, *known]) + 1
        for idx in range(len(self.dirs)):
            w = SegmentWriter(self, idx)
            self.writers.append(w)
            w.start()

    def close(self) -> None:
        for w in self.writers:
            w.stop()
        with self._lock:
            for fd in self._fds.values():
                os.close(fd)
            self._fds.clear()

    # -- bookkeeping ---------------------------------------------------------

    def allocate_segment_id(self) -> int:
        with self._lock:
            seg_id = self._next_seg
            self._next_seg += 1
            return seg_id

    def segment_path(self, dir_idx: int, seg_id: int) -> Path:
        return self.dirs[dir_idx] / "segments" / f"{seg_id:010d}.seg"

    def register_segment(self, seg_id: int, dir_idx: int, path: Path) -> None:
        with self._lock:
            self.paths[seg_id] = path
            self.seg_dir[seg_id] = dir_idx

    def on_sealed(self, seg_id: int, end: int) -> None:
        if self.sealed_hook:
            self.sealed_hook(seg_id, end)

    def active_segments(self) -> set[int]:
        return {w.seg_id for w in self.writers}

    def open_for_write(self, path: Path) -> int:
        flags = os.O_CREAT | os.O_EXCL | os.O_WRONLY | os.O_CLOEXEC
        if self.direct_io and hasattr(os, "O_DIRECT"):
            try:
                return os.open(path, flags | os.O_DIRECT, 0o640)
            except OSError as e:
                if e.errno != errno.EINVAL:  # filesystem without O_DIRECT (tmpfs)
                    raise
        return os.open(path, flags, 0o640)

    def wrap_error(self, dir_idx: int, e: OSError) -> Exception:
        """The domain error for an OSError on a data dir: :class:`NoSpace` for
        ENOSPC/EDQUOT (and the directory is passed over until it has room),
        else :class:`StorageFailure`. Both name the directory."""
        if _is_enospc(e):
            self.note_full(dir_idx)
            return NoSpace(f"data dir {self.dirs[dir_idx]}: no space left ({e.strerror or e})")
        return StorageFailure(f"data dir {self.dirs[dir_idx]}: {getattr(e, 'strerror', None) or e}")

    def on_failure(self, dir_idx: int, e: OSError) -> None:
        """A write or fdatasync failed with anything but a lack of space: the
        directory takes no more writes until a restart (/readyz says so)."""
        if _is_enospc(e):
            self.note_full(dir_idx)
            return
        self.failed_dirs.add(dir_idx)
        self.recorder.storage_failure(dir_idx)

    # -- free space ------------------------------------------------------------

    def reserve(self, total: int) -> int:
        """Bytes chunk writes leave free on a filesystem of ``total`` bytes."""
        return min(RESERVE_MAX, max(RESERVE_MIN, int(total * RESERVE_FRACTION)))

    def _statvfs(self, dir_idx: int, fresh: bool) -> tuple[int, int]:
        now = time.monotonic()
        hit = self._space.get(dir_idx)
        if hit is not None and not fresh and now - hit[0] < SPACE_TTL:
            return hit[1], hit[2]
        try:
            u = shutil.disk_usage(self.dirs[dir_idx])
            total, free = u.total, u.free
        except OSError:
            total, free = 0, 0
        self._space[dir_idx] = (now, total, free)
        return total, free

    def available(self, dir_idx: int, want: int = 0, fresh: bool = False) -> int:
        """Bytes a new file may take on a data dir: free space (for an
        unprivileged user) less the reserve and what streams in progress
        have claimed. Asked of the filesystem again when ``fresh``, when the
        last answer is older than ``SPACE_TTL``, or when it was within
        ``SPACE_SLACK`` of ``want``."""
        total, free = self._statvfs(dir_idx, fresh)
        avail = free - self.reserve(total) - self._claimed[dir_idx]
        if not fresh and avail < want + SPACE_SLACK:
            total, free = self._statvfs(dir_idx, True)
            avail = free - self.reserve(total) - self._claimed[dir_idx]
        return avail

    def claim(self, dir_idx: int, nbytes: int) -> None:
        """Promise ``nbytes`` of a data dir to a stream in progress (negative: give back)."""
        with self._claim_lock:
            self._claimed[dir_idx] += nbytes

    def note_full(self, dir_idx: int) -> None:
        """A write on this data dir failed for lack of space."""
        self._full[dir_idx] = (time.monotonic(), self._statvfs(dir_idx, True)[1])

    def _still_full(self, dir_idx: int, need: int) -> bool:
        mark = self._full.get(dir_idx)
        if mark is None:
            return False
        when, free_then = mark
        if time.monotonic() - when < FULL_RETRY_SECONDS and self._statvfs(dir_idx, True)[1] < free_then + need:
            return True
        self._full.pop(dir_idx, None)
        return False

    def has_room(self, dir_idx: int, need: int, stream: bool = False) -> bool:
        """Can a healthy data dir take a record of ``need`` bytes now: into its
        active segment, or a new segment (``stream``: a file of its own)?"""
        if dir_idx in self.failed_dirs:
            return False
        if not stream and dir_idx < len(self.writers) and self.writers[dir_idx].room() >= need + ALIGN:
            return True
        if self._still_full(dir_idx, need):
            return False
        cost = need + ALIGN if stream else FILE_HEADER_SIZE + need + 2 * ALIGN
        return self.available(dir_idx, cost) >= cost

    def pick_dir(self, need: int = 0, stream: bool = False, exclude: tuple[int, ...] = ()) -> int:
        """Choose a data dir for a new chunk of ``need`` bytes (0: not known
        yet): the emptiest healthy one with room for it, round robin on ties.

        A full directory is passed over, not failed: it is chosen again once
        it has room. Raises :class:`NoSpace` when no healthy directory has
        room, :class:`StorageFailure` when every one has failed.
        """
        healthy = [i for i in range(len(self.dirs)) if i not in self.failed_dirs]
        if not healthy:
            raise StorageFailure("no healthy data directory")
        roomy = [i for i in healthy if i not in exclude and self.has_room(i, need, stream)]
        if not roomy:
            names = ", ".join(str(self.dirs[i]) for i in healthy)
            what = f"{need} bytes" if need else "a new chunk"
            raise NoSpace(f"data dir {names}: no space left for {what} (free space above the "
                          f"reserve kept for the index and compaction)")
        if len(roomy) == 1:
            return roomy[0]
        self._rr += 1
        free = {i: self._statvfs(i, False)[1] for i in roomy}
        best = max(free.values())
        near = [i for i in roomy if free[i] >= best * 0.9]
        return near[self._rr % len(near)]

    # -- data path -----------------------------------------------------------

    def append(self, dir_idx: int, vid: int, digest: bytes, data: ByteData, sums: bytes,
               done: Done) -> None:
        """Queue one small record on ``dir_idx``, or on the emptiest other data
        dir with room when that one has none (the location says which).

        ``done(location, None)`` is called once the record is durable, or
        ``done(None, error)``: :class:`NoSpace` when no directory has room
        (at once, from this call), :class:`StorageFailure` when the write
        failed.
        """
        self._route(_Pending(record_header(vid, digest, len(data)), sums, data, done), dir_idx)

    def reroute(self, items: list[_Pending], dir_idx: int) -> None:
        """Records ``dir_idx`` had no room for, none of them acknowledged or
        synced: hand them to another directory with room, or fail them with
        :class:`NoSpace`."""
        for item in items:
            item.tried += (dir_idx,)
            self._route(item, dir_idx)

    def _route(self, item: _Pending, dir_idx: int) -> None:
        if dir_idx not in item.tried and self.has_room(dir_idx, item.size):
            idx = dir_idx
        else:
            try:
                idx = self.pick_dir(item.size, exclude=item.tried)
            except (NoSpace, StorageFailure) as e:
                item.done(None, e)
                return
        self.writers[idx].append(item)

    def stream(self, dir_idx: int, vid: int, digest: bytes, length: int,
               sha: "hashlib._Hash | None" = None) -> StreamWriter:
        """A :class:`StreamWriter` for a chunk of ``length`` bytes on ``dir_idx``,
        or on the emptiest other data dir with room when that one has none;
        every body byte it takes is fed to ``sha`` too, when given.
        Raises :class:`NoSpace` when no directory has room for it, before
        anything is written."""
        need = FILE_HEADER_SIZE + record_size(length)
        # Checked and claimed under one lock: two streams never both count
        # the same free bytes.
        with self._claim_lock:
            if not self.has_room(dir_idx, need, stream=True):
                dir_idx = self.pick_dir(need, stream=True)
            self._claimed[dir_idx] += need
        return StreamWriter(self, dir_idx, vid, digest, length, claimed=need, sha=sha)

    def compaction_output(self, dir_idx: int) -> CompactionOutput:
        """A new segment of compaction's own on ``dir_idx`` (blocking).
        Raises :class:`NoSpace` / :class:`StorageFailure`."""
        return CompactionOutput(self, dir_idx)

    def _fd(self, seg_id: int) -> int:
        fd = self._fds.get(seg_id)
        if fd is None:
            with self._lock:
                fd = self._fds.get(seg_id)
                if fd is None:
                    path = self.paths.get(seg_id)
                    if path is None:
                        raise SegmentGone(f"segment {seg_id} is gone")
                    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
                    self._fds[seg_id] = fd
        return fd

    def forget_segment(self, seg_id: int) -> None:
        with self._lock:
            fd = self._fds.pop(seg_id, None)
            if fd is not None:
                os.close(fd)
            path = self.paths.pop(seg_id, None)
            self.seg_dir.pop(seg_id, None)
        if path is not None:
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass
            _fsync_dir(path.parent)

    @overload
    def read(self, seg_id: int, offset: int, length: int, start: int = 0, end: int | None = None,
             what: str = "", nowait: Literal[False] = False, mapped: bool = True) -> bytes | memoryview: ...
    @overload
    def read(self, seg_id: int, offset: int, length: int, start: int = 0, end: int | None = None,
             what: str = "", *, nowait: bool, mapped: bool = True) -> bytes | memoryview | None: ...

    def read(self, seg_id: int, offset: int, length: int, start: int = 0, end: int | None = None,
             what: str = "", nowait: bool = False, mapped: bool = True) -> bytes | memoryview | None:
        """Read data bytes ``[start, end)`` of a record, verifying every block it touches.

        A range in the page cache is mapped rather than copied, unless
        ``mapped`` is False: every live mapping holds a file descriptor of
        its own, so callers that keep many results at once (compaction holds
        up to 1,000) take copies. With ``nowait`` the read is served only
        from the page cache and returns None instead of waiting for the disk.
        Raises :class:`ChunkCorrupt` if a block's checksum does not match.
        """
        end = length if end is None else end
        if start >= end:
            return b""
        fd = self._fd(seg_id)
        first, last = start // BLOCK, (end - 1) // BLOCK
        sums_off = offset + REC_HEADER_SIZE
        dstart = sums_off + 8 * nblocks(length)
        bstart = first * BLOCK
        bend = min(length, (last + 1) * BLOCK)
        nsums = 8 * (last - first + 1)
        resident = all_cached(fd, sums_off + 8 * first, dstart + bend)
        cached = self._cached(fd, sums_off + 8 * first, dstart + bend - 1) if resident is None else resident
        if nowait and not cached:
            return None
        buf: bytes | memoryview
        if resident and mapped:
            # Every page of the range is in the page cache: map it instead of
            # copying it. The checksums are computed over the mapped pages and
            # the socket send copies from those same pages; the mapping goes
            # away with the last view of it, once the response is written.
            # Only resident pages are mapped (MAP_POPULATE, right after the
            # check), so reading them cannot fault on the disk: a read error
            # there would be a SIGBUS instead of a ChunkCorrupt.
            lo = (dstart + bstart) & ~(mmap.ALLOCATIONGRANULARITY - 1)
            try:
                sums = os.pread(fd, nsums, sums_off + 8 * first)
                m = mmap.mmap(fd, dstart + bend - lo, mmap.MAP_SHARED | _MAP_POPULATE, mmap.PROT_READ, offset=lo)
            except (OSError, ValueError) as e:
                raise ChunkCorrupt(f"{what}: read error in segment {seg_id}: {e}") from None
            buf = memoryview(m)[dstart + bstart - lo:]
            del m
        else:
            try:
                sums = os.pread(fd, nsums, sums_off + 8 * first)
                buf = os.pread(fd, bend - bstart, dstart + bstart)
            except OSError as e:
                raise ChunkCorrupt(f"{what}: read error in segment {seg_id}: {e.strerror}") from None
        if len(sums) != nsums or len(buf) != bend - bstart:
            raise ChunkCorrupt(f"{what}: segment {seg_id} is short")
        mv = memoryview(buf)
        for i in range(last - first + 1):
            if xxhash.xxh3_64_digest(mv[i * BLOCK:(i + 1) * BLOCK]) != sums[8 * i:8 * i + 8]:
                raise ChunkCorrupt(f"{what}: checksum mismatch in segment {seg_id} block {first + i}")
        if start == bstart and end == bend:
            return buf
        return mv[start - bstart:end - bstart]

    def _cached(self, fd: int, first: int, last: int) -> bool:
        """Are the first and last bytes of a range in the page cache (kernels without cachestat)?

        A one-byte ``preadv(RWF_NOWAIT)`` at each end answers without waiting
        for the disk. Records are written and read sequentially, so both ends
        cached almost always means the range is; a rare miss in between only
        makes that one read wait.
        """
        if not _RWF_NOWAIT:
            return False
        probe = self._probe
        try:
            return os.preadv(fd, [probe], first, _RWF_NOWAIT) == 1 and os.preadv(fd, [probe], last, _RWF_NOWAIT) == 1
        except OSError:
            return False

    def read_record_header(self, seg_id: int, offset: int) -> tuple[int, bytes, int] | None:
        return parse_record_header(os.pread(self._fd(seg_id), REC_HEADER_SIZE, offset))

    def scan_segment(self, seg_id: int) -> Iterator[tuple[int, int, bytes, int]]:
        """Yield ``(offset, vid, digest, length)`` for every record of a segment (fsck)."""
        fd = self._fd(seg_id)
        size = os.fstat(fd).st_size
        off = FILE_HEADER_SIZE
        while off + REC_HEADER_SIZE <= size:
            parsed = parse_record_header(os.pread(fd, REC_HEADER_SIZE, off))
            if parsed is None:
                # Zero padding up to the next group's 4 KiB boundary.
                nxt = -(-(off + 1) // ALIGN) * ALIGN
                if off % ALIGN == 0 or nxt + REC_HEADER_SIZE > size:
                    return
                off = nxt
                continue
            vid, digest, length = parsed
            yield off, vid, digest, length
            off += record_size(length)

    def free_bytes(self) -> list[tuple[str, int]]:
        return [(d, free) for d, _, free in self.disk_space()]

    def disk_space(self) -> list[tuple[str, int, int]]:
        """Each data directory with its filesystem's total and free bytes (0, 0 when unreadable)."""
        out = []
        for d in self.dirs:
            try:
                du = shutil.disk_usage(d)
                out.append((str(d), du.total, du.free))
            except OSError:
                out.append((str(d), 0, 0))
        return out
