"""The store in-process, on real temporary directories: no server, no index.

Appended, streamed, spliced and compaction-written records are read back
with their block sums verified, and a reopened store finds them again by
scanning its segments. Faults (ENOSPC, EIO) are injected by patching ``os``.
"""

from __future__ import annotations

import concurrent.futures
import errno
import hashlib
import os
import socket
import threading
from pathlib import Path

import pytest

from vault import store as store_mod
from vault.errors import ChunkCorrupt, NoSpace, StorageFailure
from vault.store import (ALIGN, FILE_HEADER_SIZE, Location, Store, block_sums, data_offset, record_size)

MiB = 1 << 20
VID = 7


def body(n: int, seed: int = 0) -> tuple[bytes, bytes]:
    data = hashlib.shake_256(f"{seed}:{n}".encode()).digest(n)
    return data, hashlib.sha256(data).digest()


def open_store(dirs: list[Path], known: dict[int, int] | None = None,
               committed_ends: dict[int, int] | None = None) -> Store:
    s = Store(dirs, segment_bytes=4 * MiB)
    s.open(known or {}, committed_ends or {})
    return s


@pytest.fixture
def store(tmp_path):
    s = open_store([tmp_path / "d0"])
    yield s
    s.close()


def append(s: Store, data: bytes, digest: bytes) -> Location:
    """One small record through the segment writer; its location once durable."""
    fut: concurrent.futures.Future[Location] = concurrent.futures.Future()

    def done(loc: Location | None, exc: Exception | None) -> None:
        if exc is not None:
            fut.set_exception(exc)
        else:
            fut.set_result(loc)

    s.append(0, VID, digest, data, block_sums(data), done)
    return fut.result(timeout=30)


def stream(s: Store, data: bytes, digest: bytes, piece: int = 300_000) -> Location:
    sha = hashlib.sha256()
    w = s.stream(0, VID, digest, len(data), sha=sha)
    for i in range(0, len(data), piece):
        w.write(data[i:i + piece])
    assert sha.digest() == digest
    return w.commit()


def segment_files(d: Path) -> set[str]:
    return {p.name for p in (d / "segments").iterdir()}


def test_append_reads_back_and_a_flipped_byte_is_detected(tmp_path, store):
    data, digest = body(200_000)
    loc = append(store, data, digest)
    assert (loc.dir_idx, loc.size) == (0, record_size(len(data)))
    assert loc.offset >= FILE_HEADER_SIZE and loc.offset % ALIGN == 0
    assert bytes(store.read(loc.seg_id, loc.offset, len(data))) == data
    assert bytes(store.read(loc.seg_id, loc.offset, len(data), 70_000, 70_010)) == data[70_000:70_010]
    assert store.read_record_header(loc.seg_id, loc.offset) == (VID, digest, len(data))

    fd = os.open(store.paths[loc.seg_id], os.O_WRONLY)
    try:
        at = data_offset(loc.offset, len(data)) + 100_000  # in the second 64 KiB block
        os.pwrite(fd, bytes([data[100_000] ^ 1]), at)
    finally:
        os.close(fd)
    with pytest.raises(ChunkCorrupt, match="block 1"):
        store.read(loc.seg_id, loc.offset, len(data), mapped=False)
    # A range in the untouched first block is still served.
    assert bytes(store.read(loc.seg_id, loc.offset, len(data), 0, 1000, mapped=False)) == data[:1000]


def test_streamed_body_committed_and_aborted(tmp_path, store, monkeypatch):
    # statvfs is asked once: free space differences below are then the claims alone.
    monkeypatch.setattr(store_mod, "SPACE_TTL", 3600.0)
    d = tmp_path / "d0"
    before = segment_files(d)
    free = store.available(0)
    data, digest = body(3 * MiB + 12345, 1)
    need = FILE_HEADER_SIZE + record_size(len(data))

    w = store.stream(0, VID, digest, len(data))
    assert store.available(0) == free - need  # claimed until commit
    w.write(data)
    loc = w.commit()
    assert store.available(0) == free
    assert (loc.offset, loc.size) == (FILE_HEADER_SIZE, record_size(len(data)))
    assert segment_files(d) == before | {f"{loc.seg_id:010d}.seg"}
    assert store.paths[loc.seg_id].stat().st_size == FILE_HEADER_SIZE + record_size(len(data))
    assert bytes(store.read(loc.seg_id, loc.offset, len(data), mapped=False)) == data

    other, other_digest = body(2 * MiB, 2)
    w = store.stream(0, VID, other_digest, len(other))
    w.write(other[:MiB])
    assert store.available(0) == free - FILE_HEADER_SIZE - record_size(len(other))
    w.abort()
    assert store.available(0) == free
    assert segment_files(d) == before | {f"{loc.seg_id:010d}.seg"}  # no temp file left


@pytest.mark.parametrize("err, kind", [(errno.ENOSPC, NoSpace), (errno.EIO, StorageFailure)])
def test_a_failed_stream_write_is_a_domain_error_and_leaves_no_file(tmp_path, store, monkeypatch, err, kind):
    before = segment_files(tmp_path / "d0")
    data, digest = body(MiB, 3)
    w = store.stream(0, VID, digest, len(data))

    def refuse(*a, **kw):
        raise OSError(err, os.strerror(err))

    monkeypatch.setattr(os, "pwritev", refuse)
    with pytest.raises(kind, match=str(tmp_path / "d0")):
        w.write(data)
    w.abort()
    assert segment_files(tmp_path / "d0") == before


def connected() -> tuple[socket.socket, socket.socket]:
    """Both ends of a loopback TCP connection: (client, server side), the
    server side non-blocking, as an event loop's sockets are."""
    with socket.create_server(("127.0.0.1", 0)) as srv:
        client = socket.create_connection(srv.getsockname())
        conn, _ = srv.accept()
    conn.setblocking(False)
    return client, conn


def test_splice_from_a_socket(tmp_path, store):
    data, digest = body(5 * MiB + 777, 4)
    head = 10_000  # what the HTTP parser had already read off the socket
    client, conn = connected()
    sender = threading.Thread(target=client.sendall, args=(data[head:],))
    sender.start()
    sha = hashlib.sha256()
    try:
        w = store.stream(0, VID, digest, len(data), sha=sha)
        w.splice_from(conn.fileno(), len(data), head=data[:head], idle=10)
        loc = w.commit()
    finally:
        sender.join()
        client.close()
        conn.close()
    assert sha.digest() == digest
    assert bytes(store.read(loc.seg_id, loc.offset, len(data), mapped=False)) == data


@pytest.mark.parametrize("hang_up, error", [(True, EOFError), (False, TimeoutError)])
def test_splice_of_a_body_cut_short_or_stalled(tmp_path, store, hang_up, error):
    before = segment_files(tmp_path / "d0")
    data, digest = body(2 * MiB, 5)
    client, conn = connected()
    client.sendall(data[:100_000])
    if hang_up:
        client.close()
    w = store.stream(0, VID, digest, len(data))
    try:
        with pytest.raises(error):
            w.splice_from(conn.fileno(), len(data), idle=0.2)
    finally:
        w.abort()
        client.close()
        conn.close()
    assert segment_files(tmp_path / "d0") == before


def test_compaction_output_records_read_back(tmp_path, store):
    out = store.compaction_output(0)
    bodies = [body(n, 10 + n) for n in (1, 4096, 70_000, 300_000)]
    first = out.append([(VID, digest, data, block_sums(data)) for data, digest in bodies[:2]])
    second = out.append([(VID, digest, data, block_sums(data)) for data, digest in bodies[2:]])
    out.close()
    assert first[0].offset == FILE_HEADER_SIZE
    assert second[0].offset % ALIGN == 0 and second[0].offset >= first[1].offset + first[1].size
    assert {loc.seg_id for loc in first + second} == {out.seg_id}
    assert out.seg_id not in store.active_segments()
    for (data, digest), loc in zip(bodies, first + second):
        assert loc.size == record_size(len(data))
        assert store.read_record_header(loc.seg_id, loc.offset) == (VID, digest, len(data))
        assert bytes(store.read(loc.seg_id, loc.offset, len(data), mapped=False)) == data


def test_reopen_and_scan_rebuilds_locations(tmp_path):
    d = tmp_path / "d0"
    s = open_store([d])
    locs: dict[bytes, Location] = {}
    try:
        for i in range(3):
            data, digest = body(50_000 + i, 20 + i)
            locs[digest] = append(s, data, digest)
        big, big_digest = body(2 * MiB, 30)
        locs[big_digest] = stream(s, big, big_digest)
        out = s.compaction_output(0)
        small, small_digest = body(9000, 31)
        (locs[small_digest],) = out.append([(VID, small_digest, small, block_sums(small))])
        out.close()
        (active,) = s.active_segments()
        active_end = max(loc.offset + loc.size for loc in locs.values() if loc.seg_id == active)
        # A stream still open at the stop was never acknowledged: its temp file goes.
        crashed, crashed_digest = body(MiB, 32)
        unfinished = s.stream(0, VID, crashed_digest, MiB)
        unfinished.write(crashed)
    finally:
        s.close()

    known = {loc.seg_id: 0 for loc in locs.values()}
    s = open_store([d], known, {active: active_end})
    try:
        assert not list((d / "segments").glob("*.tmp"))
        scanned = {digest: (sid, off, length) for sid in known for off, vid, digest, length in s.scan_segment(sid)}
        assert scanned == {digest: (loc.seg_id, loc.offset, s.read_record_header(loc.seg_id, loc.offset)[2])
                           for digest, loc in locs.items()}
        for digest, (sid, off, length) in scanned.items():
            assert hashlib.sha256(s.read(sid, off, length, mapped=False)).digest() == digest
    finally:
        unfinished.abort()
        s.close()
