"""A data directory that fills up: 507 ``no_space``, nothing acknowledged lost,
reads keep working, other directories keep taking writes, and writes resume
when space returns, without a restart.

The filesystems are real and small. Preferred is ext4 in an image on a loop
device: O_DIRECT, preallocation, ``fdatasync`` and delayed allocation behave
there as on the disks the server runs on. Where loop devices are missing
(many containers), a tmpfs of fixed size: the store falls back to buffered
writes there and ``fdatasync`` does nothing, but space runs out for real.
Without the privilege to mount at all, plain directories stand in, with a
budget enforced inside the server (``_SHIM`` below, loaded through
``sitecustomize``): statvfs reports what is left of the budget and a write
that would go past it fails with ENOSPC. ``OBJVAULT_TEST_FULL_DISK=ext4``,
``tmpfs`` or ``inject`` forces one kind.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import threading
from pathlib import Path

import httpx
import pytest

from tests.apihelpers import BATCH_HEADERS, batch_frames
from tests.fsckhelpers import run_fsck
from tests.server import Server, sha
from vault.meta import Index
from vault.meta.schema import chunk_digest
from vault.store import Store

MiB = 1 << 20
SEGMENT = 4 * MiB
SMALL = MiB                      # appended to the active segment (not above the threshold)
STREAMED = 2 * MiB + 12345       # above the threshold: a segment of its own, spliced from the socket
ENV = {"OBJVAULT_SEGMENT_BYTES": str(SEGMENT), "OBJVAULT_STREAM_THRESHOLD_BYTES": str(MiB)}
KINDS = ("ext4", "tmpfs", "inject")

_SHIM = r'''
"""Test-only (tests/test_full_disk.py): directories that behave like small
filesystems, for machines where the test may not mount one.

FULLDISK_BUDGETS="DIR=BYTES;...": the space allocated under DIR counts
against BYTES; shutil.disk_usage reports what is left, and a write that would
allocate beyond it fails with ENOSPC.
"""
import errno
import os
import shutil

_BUDGETS = {}
for _part in os.environ.get("FULLDISK_BUDGETS", "").split(";"):
    if _part:
        _d, _n = _part.rsplit("=", 1)
        _BUDGETS[os.path.realpath(_d)] = int(_n)


def _root(path):
    p = os.path.realpath(path)
    for d in _BUDGETS:
        if p == d or p.startswith(d + os.sep):
            return d
    return None


def _allocated(d):
    n = 0
    for dp, _, files in os.walk(d):
        for f in files:
            try:
                n += os.lstat(os.path.join(dp, f)).st_blocks * 512
            except OSError:
                pass
    return n


_disk_usage = shutil.disk_usage


def _usage(path):
    d = _root(os.fspath(path))
    if d is None:
        return _disk_usage(path)
    used = _allocated(d)
    return shutil._ntuple_diskusage(_BUDGETS[d], used, max(0, _BUDGETS[d] - used))


def _check(fd, offset, n):
    if n <= 0:
        return
    try:
        d = _root(os.readlink(f"/proc/self/fd/{fd}"))
    except OSError:
        return
    if d is None:
        return
    if offset is None:
        offset = os.lseek(fd, 0, os.SEEK_CUR)
    grow = offset + n - os.fstat(fd).st_blocks * 512
    if grow > 0 and grow > _BUDGETS[d] - _allocated(d):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def _patch(name, check):
    real = getattr(os, name)

    def patched(*a, **kw):
        check(*a, **kw)
        return real(*a, **kw)
    setattr(os, name, patched)


if _BUDGETS:
    shutil.disk_usage = _usage
    _patch("pwrite", lambda fd, data, offset: _check(fd, offset, len(data)))
    _patch("pwritev", lambda fd, bufs, offset, *a: _check(fd, offset, sum(memoryview(b).nbytes for b in bufs)))
    _patch("write", lambda fd, data: _check(fd, None, len(data)))
    _patch("posix_fallocate", lambda fd, offset, n: _check(fd, offset, n))
    _patch("splice", lambda src, dst, count, offset_src=None, offset_dst=None, flags=0:
           _check(dst, offset_dst, count))
'''

_unavailable: set[str] = set()  # kinds this machine refused once


def _run(*cmd: str) -> bool:
    try:
        return subprocess.run(cmd, capture_output=True, timeout=60).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def _allocated(d: Path) -> int:
    n = 0
    for dp, _, files in os.walk(d):
        for f in files:
            try:
                n += os.lstat(os.path.join(dp, f)).st_blocks * 512
            except OSError:
                pass
    return n


class SmallFs:
    """A filesystem of ``size`` bytes at ``mnt``; the server's data dir is ``data``."""

    def __init__(self, root: Path, size: int) -> None:
        self.root, self.size = root, size
        self.mnt = root / "mnt"
        self.mnt.mkdir(parents=True)
        forced = os.environ.get("OBJVAULT_TEST_FULL_DISK")
        for kind in (forced,) if forced else KINDS:
            if kind not in _unavailable and self._mount(kind):
                self.kind = kind
                break
            _unavailable.add(kind)
        else:
            raise RuntimeError(f"cannot make a small filesystem of kind {forced!r}")
        self.data = self.mnt / "data"
        self.data.mkdir()

    def _mount(self, kind: str) -> bool:
        if kind == "ext4":
            img = self.root / "fs.img"
            with open(img, "wb") as f:
                f.truncate(self.size)
            # -m 0: no blocks kept for root. The server runs as root here and
            # would write into them while statvfs (f_bavail) calls them used.
            if _run("mkfs.ext4", "-q", "-F", "-m", "0", str(img)) and \
                    _run("mount", "-o", "loop", str(img), str(self.mnt)):
                return True
            img.unlink()
            return False
        if kind == "tmpfs":
            return _run("mount", "-t", "tmpfs", "-o", f"size={self.size}", "tmpfs", str(self.mnt))
        return kind == "inject"

    def free(self) -> int:
        """Free bytes, as the server sees them."""
        if self.kind == "inject":
            return self.size - _allocated(self.mnt)
        return shutil.disk_usage(self.mnt).free

    def room(self) -> int:
        """Bytes above the reserve the server keeps free for the index and compaction."""
        total = self.size if self.kind == "inject" else shutil.disk_usage(self.mnt).total
        return self.free() - Store.reserve(None, total)  # type: ignore[arg-type]

    def fill(self, name: str, nbytes: int) -> Path:
        """Take ``nbytes`` with a file of other data (the test deletes it to free space)."""
        path = self.mnt / name
        fd = os.open(path, os.O_CREAT | os.O_WRONLY, 0o600)
        try:
            os.posix_fallocate(fd, 0, nbytes)
            os.fsync(fd)
        finally:
            os.close(fd)
        return path

    def close(self) -> None:
        if self.kind in ("ext4", "tmpfs") and not _run("umount", str(self.mnt)):
            _run("umount", "-l", str(self.mnt))
        (self.root / "fs.img").unlink(missing_ok=True)


@pytest.fixture
def small_fs(tmp_path):
    """Factory of small filesystems, unmounted at the end. Request it before
    ``make_server``: fixtures end in reverse order, so the servers stop first."""
    made: list[SmallFs] = []

    def make(name: str, size: int) -> SmallFs:
        fs = SmallFs(tmp_path / name, size)
        made.append(fs)
        return fs

    yield make
    for fs in reversed(made):
        fs.close()


def server_env(tmp_path: Path, *fss: SmallFs) -> dict:
    env = dict(ENV)
    budgets = [fs for fs in fss if fs.kind == "inject"]
    if budgets:
        shim = tmp_path / "shim"
        shim.mkdir(exist_ok=True)
        (shim / "sitecustomize.py").write_text(_SHIM)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(shim), os.environ.get("PYTHONPATH")) if p)
        env["FULLDISK_BUDGETS"] = ";".join(f"{fs.mnt}={fs.size}" for fs in budgets)
    return env


def put(c: httpx.Client, data: bytes) -> httpx.Response:
    return c.put(f"/v1/vaults/acme/chunks/{sha(data)}", content=data)


def assert_no_space(r: httpx.Response, *dirs: Path) -> None:
    assert r.status_code == 507, (r.status_code, r.text)
    assert r.headers["content-type"].split(";")[0] == "application/problem+json", r.headers
    body = r.json()
    assert body["code"] == "no_space" and body["status"] == 507, body
    assert any(str(d) in body["detail"] for d in dirs), body  # names the data dir


def assert_ready(s: Server) -> None:
    r = httpx.get(s.url + "/readyz", verify=False)
    assert r.status_code == 200, r.text


def assert_all_read_back(c: httpx.Client, acked: dict[str, bytes]) -> None:
    for cid, data in acked.items():
        r = c.get(f"/v1/vaults/acme/chunks/{cid}")
        assert r.status_code == 200, (cid, r.status_code, r.text)
        assert r.content == data, cid


def no_tmp_files(*fss: SmallFs) -> list[Path]:
    return [p for fs in fss for p in (fs.data / "segments").glob("*.tmp")]


def locations(s: Server) -> dict[str, int]:
    """Chunk id -> data dir index of every chunk the index holds (server
    stopped). Each must be found where the index says by scanning its segment
    as fsck and compaction do: a scan stops at the first hole, so a record
    acknowledged past bytes that were never written would be invisible."""
    store = Store(s.data_dirs, SEGMENT)
    index = Index(s.data_dirs[0] / "index")
    try:
        for sid, (idx, path) in store.scan_files().items():
            store.register_segment(sid, idx, path)
        scanned = {(sid, off, digest) for sid in list(store.paths) for off, _, digest, _ in store.scan_segment(sid)}
        out = {}
        for key, meta in index.all_chunks():
            digest = chunk_digest(key)
            assert (meta.seg_id, meta.offset, digest) in scanned, (digest.hex(), meta)
            out[digest.hex()] = store.seg_dir[meta.seg_id]
        return out
    finally:
        index.close()
        store.close()


def fsck(s: Server) -> dict:
    r = run_fsck(s)
    assert r.returncode == 0, r.stdout + r.stderr
    return json.loads(r.stdout)


def test_a_full_data_dir_answers_507_and_resumes_when_space_returns(small_fs, make_server, tmp_path):
    fs = small_fs("small", 48 * MiB)
    filler = fs.fill("other-data", 8 * MiB)
    s = make_server("srv", data_dirs=[fs.data], env=server_env(tmp_path, fs))
    s.create_vault("acme")
    secret = s.create_key("acme", "full")
    acked: dict[str, bytes] = {}
    statuses: list[int] = []
    lock = threading.Lock()

    def uploader(n: int) -> None:
        # Four at once, so that groups are in flight when the space runs out.
        with s.client(secret) as c:
            for i in range(200):
                data = os.urandom(STREAMED if (i + n) % 4 == 3 else SMALL)
                r = put(c, data)
                with lock:
                    statuses.append(r.status_code)
                    if r.status_code == 201:
                        acked[sha(data)] = data
                if r.status_code == 507:
                    assert_no_space(r, fs.data)
                    if len(data) == SMALL:
                        return
                else:
                    assert r.status_code == 201, r.text

    threads = [threading.Thread(target=uploader, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert set(statuses) == {201, 507}, statuses
    assert len(acked) >= 10, len(acked)

    c = s.client(secret)
    # Full: every way in answers 507 at once, and nothing half-written stays behind.
    assert_no_space(put(c, os.urandom(SMALL)), fs.data)
    assert_no_space(put(c, os.urandom(STREAMED)), fs.data)
    batch = [os.urandom(600_000) for _ in range(3)]
    assert_no_space(c.post("/v1/vaults/acme/chunks/batch", content=batch_frames(batch),
                           headers=BATCH_HEADERS), fs.data)
    assert no_tmp_files(fs) == []
    # Full is not failed: reads work and the server stays ready.
    assert_all_read_back(c, acked)
    assert_ready(s)

    # A server restarted while its disk is full starts and serves. Start-up
    # gives back the unused preallocated end of the segment that was active:
    # once that is used, it refuses again.
    s.restart()
    c = s.client(secret)
    assert_all_read_back(c, acked)
    for _ in range(SEGMENT // SMALL + 1):
        data = os.urandom(SMALL)
        r = put(c, data)
        if r.status_code != 201:
            break
        acked[sha(data)] = data
    assert_no_space(r, fs.data)
    assert_ready(s)

    # Space returns: writes resume without a restart.
    filler.unlink()
    for data in (os.urandom(SMALL), os.urandom(STREAMED), os.urandom(SMALL), os.urandom(SMALL)):
        r = put(c, data)
        assert r.status_code == 201, r.text
        acked[sha(data)] = data
    assert_all_read_back(c, acked)

    s.stop()
    assert no_tmp_files(fs) == []
    assert fsck(s)["ok"]
    assert set(acked) <= set(locations(s))
    s.start()
    assert_all_read_back(s.client(secret), acked)
    assert_ready(s)


def test_a_full_data_dir_is_passed_over_not_failed(small_fs, make_server, tmp_path):
    """Two data dirs: ``a`` small, ``b`` a larger one that also holds other
    data, so that to the emptiest-first choice both look alike and both take
    chunks until ``a`` is full. Every upload then goes to ``b``, ``a`` is not
    failed and /readyz stays 200; a 507 only once neither has room; once the
    other data leaves ``b``, uploads succeed again and land there."""
    a, b = small_fs("a", 48 * MiB), small_fs("b", 128 * MiB)
    s = make_server("srv", data_dirs=[a.data, b.data], env=server_env(tmp_path, a, b))
    other = b.fill("other-data", b.free() - a.free() - 2 * MiB)
    s.create_vault("acme")
    c = s.client(s.create_key("acme", "full"))
    acked: dict[str, bytes] = {}
    after_a_full: list[str] = []

    for i in range(300):
        data = os.urandom(STREAMED if i % 3 == 2 else SMALL)
        # With no room left on a's filesystem a streamed chunk (a file of its
        # own) can only go to b; a small one may still fit a's active segment.
        a_was_full = len(data) == STREAMED and a.room() < len(data)
        r = put(c, data)
        assert_ready(s)
        if r.status_code == 507:
            # Only when no directory had room for it.
            assert_no_space(r, a.data, b.data)
            assert a.room() < len(data) + 64 * 1024 and b.room() < len(data) + 64 * 1024, (a.room(), b.room())
            if len(data) == SMALL:
                break
            continue
        assert r.status_code == 201, r.text
        acked[sha(data)] = data
        if a_was_full:
            after_a_full.append(sha(data))
    else:
        pytest.fail("the data dirs never filled up")
    assert a.room() < SMALL + 64 * 1024

    # The other data leaves b: b takes writes again at once, a stays full.
    other.unlink()
    again = []
    for i in range(8):
        data = os.urandom(STREAMED if i % 3 == 2 else SMALL)
        r = put(c, data)
        assert r.status_code == 201, r.text
        acked[sha(data)] = data
        again.append(sha(data))
        assert_ready(s)
    assert_all_read_back(c, acked)

    s.stop()
    assert no_tmp_files(a, b) == []
    assert fsck(s)["ok"]
    where = locations(s)
    assert set(acked) <= set(where)
    assert sum(where[cid] == 0 for cid in acked) >= 10    # a did take chunks until it was full
    assert all(where[cid] == 1 for cid in again + after_a_full)
    s.start()
    assert_all_read_back(s.client(s.create_key("acme", "read")), acked)
    assert_ready(s)
