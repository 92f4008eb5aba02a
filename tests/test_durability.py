"""Durability (API.md, "Chunks"): a 2xx means durable; corrupt bytes are never served;
start-up does not read segment contents."""

from __future__ import annotations

import concurrent.futures
import hashlib
import json
import mmap
import os
import threading
import time
import uuid
from pathlib import Path

import httpx
import pytest

from tests.apihelpers import SMALL_SEGMENTS, admin_of, create_vault
from tests.server import Server, sha
from vault import errors as E
from vault.store import all_cached


KiB, MiB = 1 << 10, 1 << 20


def uniq(prefix: str = "dur") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def _uploader(srv: Server, vault: str, stop: threading.Event, acked: list, refused: list) -> None:
    """Upload distinct chunks (3 of 16 KiB, then 1 of 1 MiB) until stopped or the server dies."""
    with httpx.Client(base_url=srv.url, timeout=30, verify=False,
                      headers={"Authorization": f"Bearer {srv.admin_token}"}) as c:
        i = 0
        while not stop.is_set():
            data = os.urandom(MiB if i % 4 == 3 else 16 * KiB)
            cid = sha(data)
            try:
                r = c.put(f"/v1/vaults/{vault}/chunks/{cid}", content=data)
            except httpx.HTTPError:
                return  # killed: this one was never acknowledged
            if r.status_code in (200, 201):
                acked.append((cid, len(data)))
            else:
                refused.append((r.status_code, r.text[:200]))
            i += 1


def _upload_then_kill(srv: Server, vault: str, seconds: float, clients: int = 16) -> list:
    acked: list = []
    refused: list = []
    stop = threading.Event()
    threads = [threading.Thread(target=_uploader, args=(srv, vault, stop, acked, refused), daemon=True)
               for _ in range(clients)]
    for t in threads:
        t.start()
    time.sleep(seconds)
    srv.kill()  # SIGKILL while requests are in flight
    stop.set()
    for t in threads:
        t.join(30)
        assert not t.is_alive()
    assert refused == [], refused[:5]
    return acked


def _verify(srv: Server, vault: str, acked: list) -> None:
    """GET every acknowledged chunk (8 connections) and check length and SHA-256."""
    def check_many(items):
        out = []
        with httpx.Client(base_url=srv.url, timeout=30, verify=False,
                          headers={"Authorization": f"Bearer {srv.admin_token}"}) as c:
            for cid, size in items:
                r = c.get(f"/v1/vaults/{vault}/chunks/{cid}")
                ok = r.status_code == 200 and len(r.content) == size and sha(r.content) == cid
                if not ok:
                    out.append((cid, size, r.status_code, len(r.content)))
        return out

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        bad = [b for part in pool.map(check_many, [acked[i::8] for i in range(8)]) for b in part]
    assert not bad, f"{len(bad)} of {len(acked)} acknowledged chunks lost or damaged after SIGKILL, e.g. {bad[:3]}"


def test_acknowledged_chunks_survive_sigkill(make_server):
    # 1 MiB chunks take the streamed path (own segment), 16 KiB ones the shared active segment.
    s = make_server("kill", env={**SMALL_SEGMENTS, "OBJVAULT_STREAM_THRESHOLD_BYTES": str(512 * KiB)})
    vault = uniq()
    create_vault(s, vault)
    all_acked: list = []
    for seconds in (1.3, 2.1):  # two kills at different moments
        acked = _upload_then_kill(s, vault, seconds)
        assert len(acked) >= 16, f"too few uploads acknowledged before the kill: {len(acked)}"
        assert any(size == MiB for _, size in acked) and any(size == 16 * KiB for _, size in acked)
        all_acked += acked
        s.start()
        _verify(s, vault, all_acked)
        u = admin_of(s).get(f"/v1/vaults/{vault}").json()["usage"]
        assert u["chunks"] >= len(all_acked)
        assert u["stored_bytes"] >= sum(size for _, size in all_acked)
    # the recovered server writes and dedups normally
    c = s.client(verify=False)
    cid, size = all_acked[0]
    data = c.get(f"/v1/vaults/{vault}/chunks/{cid}").content
    assert c.put(f"/v1/vaults/{vault}/chunks/{cid}", content=data).status_code == 200
    fresh = os.urandom(100 * KiB)
    assert c.put(f"/v1/vaults/{vault}/chunks/{sha(fresh)}", content=fresh).status_code == 201
    s.kill()
    s.start()
    assert s.client(verify=False).get(f"/v1/vaults/{vault}/chunks/{sha(fresh)}").content == fresh
    assert not list((s.data_dirs[0] / "segments").glob("*.tmp"))


def _object_writer(srv: Server, vault: str, tid: int, shared: str, stop: threading.Event,
                   expected: dict, pending: dict, refused: list) -> None:
    """Create, overwrite and delete this thread's objects until stopped or the server dies.

    ``expected[key]`` is the last acknowledged state (a chunk list, or None for
    deleted); ``pending[key]`` the state of a request the kill cut off.
    """
    with httpx.Client(base_url=srv.url, timeout=30, verify=False,
                      headers={"Authorization": f"Bearer {srv.admin_token}"}) as c:
        i = 0
        while not stop.is_set():
            data = os.urandom(8 * KiB)
            cid = sha(data)
            key = f"t{tid}/k{i % 5}"
            try:
                r = c.put(f"/v1/vaults/{vault}/chunks/{cid}", content=data)
                if r.status_code not in (200, 201):
                    refused.append((r.status_code, r.text[:200]))
                    return
                want = [cid, shared, cid]
                pending[key] = want
                r = c.put(f"/v1/vaults/{vault}/objects/{key}", json={"chunks": want})
                if r.status_code != 201:
                    refused.append((r.status_code, r.text[:200]))
                    return
                expected[key] = want
                del pending[key]
                if i % 7 == 6:
                    victim = f"t{tid}/k{(i + 1) % 5}"
                    pending[victim] = None
                    r = c.delete(f"/v1/vaults/{vault}/objects/{victim}")
                    if r.status_code not in (204, 404):
                        refused.append((r.status_code, r.text[:200]))
                        return
                    expected[victim] = None
                    del pending[victim]
            except httpx.HTTPError:
                return
            i += 1


def test_acknowledged_objects_survive_sigkill_and_usage_stays_exact(make_server):
    s = make_server("objkill", env=SMALL_SEGMENTS)
    vault = uniq()
    create_vault(s, vault)
    shared = s.put_chunk(admin_of(s), vault, os.urandom(1000))
    expected: dict = {}
    pending: dict = {}
    refused: list = []
    stop = threading.Event()
    threads = [threading.Thread(target=_object_writer, args=(s, vault, t, shared, stop, expected, pending, refused),
                                daemon=True) for t in range(8)]
    for t in threads:
        t.start()
    time.sleep(1.7)
    s.kill()
    stop.set()
    for t in threads:
        t.join(30)
    assert refused == [], refused[:5]
    assert len(expected) >= 8
    s.start()
    c = admin_of(s)
    for key in set(expected) | set(pending):
        r = c.get(f"/v1/vaults/{vault}/objects/{key}")
        got = r.json()["chunks"] if r.status_code == 200 else None
        assert r.status_code in (200, 404), r.text
        allowed = [expected.get(key)] + ([pending[key]] if key in pending else [])
        assert got in allowed, (key, got, allowed)
    # usage agrees with what is stored: logical bytes and object count, to the byte
    listed, start = [], None
    while True:
        params = {"limit": 1000, **({"start_after": start} if start else {})}
        page = c.get(f"/v1/vaults/{vault}/objects", params=params).json()
        listed += page["objects"]
        if page["next"] is None:
            break
        start = page["next"]
    u = c.get(f"/v1/vaults/{vault}").json()["usage"]
    assert u["objects"] == len(listed)
    assert u["logical_bytes"] == sum(o["size"] for o in listed)
    assert all(o["size"] == 2 * 8 * KiB + 1000 for o in listed)


# -- corruption ---------------------------------------------------------------------------------


def _flip_in_segments(srv: Server, pattern: bytes, at: int) -> Path:
    """Flip one byte ``at`` bytes after the (unique) place ``pattern`` is stored."""
    hits = []
    for seg in sorted((srv.data_dirs[0] / "segments").glob("*.seg")):
        with open(seg, "r+b") as f:
            if os.fstat(f.fileno()).st_size == 0:
                continue
            with mmap.mmap(f.fileno(), 0) as m:
                pos = m.find(pattern)
                if pos >= 0:
                    assert m.find(pattern, pos + 1) < 0
                    hits.append((seg, pos))
    assert len(hits) == 1, hits
    seg, pos = hits[0]
    with open(seg, "r+b") as f:
        f.seek(pos + at)
        b = f.read(1)
        f.seek(pos + at)
        f.write(bytes([b[0] ^ 0x5A]))
        f.flush()
        os.fsync(f.fileno())
    return seg


def _warm(srv: Server) -> None:
    """Read every segment into the page cache, so that GETs take the mapped (zero-copy) path."""
    for seg in (srv.data_dirs[0] / "segments").glob("*.seg"):
        fd = os.open(seg, os.O_RDONLY)
        try:
            size = os.fstat(fd).st_size
            for off in range(0, size, 1 << 20):
                os.pread(fd, 1 << 20, off)
            assert all_cached(fd, 0, size) is not False, seg
        finally:
            os.close(fd)


@pytest.mark.parametrize("cache", ["cold", "warm"])
def test_corrupt_bytes_are_never_served(make_server, cache):
    s = make_server("corrupt", env={"OBJVAULT_SEGMENT_BYTES": str(4 * MiB),
                                    "OBJVAULT_STREAM_THRESHOLD_BYTES": str(MiB)})
    vault = uniq()
    create_vault(s, vault)
    c = s.client(verify=False)
    small = os.urandom(3000)                 # shared segment, one block
    large = os.urandom(5 * 64 * KiB + 99)    # shared segment, six blocks
    streamed = os.urandom(3 * MiB)           # its own segment
    intact = os.urandom(2000)
    ids = {name: s.put_chunk(c, vault, data) for name, data in
           (("small", small), ("large", large), ("streamed", streamed), ("intact", intact))}
    assert s.stop() == 0

    _flip_in_segments(s, small[:256], 1500)
    _flip_in_segments(s, large[:256], 100)                   # block 0 of 6
    _flip_in_segments(s, streamed[:256], 2 * MiB + 12345)    # block 33 of 48
    if cache == "warm":
        _warm(s)
    s.start()
    c = s.client(verify=False)

    for name, data in (("small", small), ("large", large), ("streamed", streamed)):
        r = c.get(f"/v1/vaults/{vault}/chunks/{ids[name]}")
        assert r.status_code == 500, (name, r.status_code)
        assert r.headers["content-type"].startswith("application/problem+json")
        assert r.json()["code"] == "chunk_corrupt"
        assert data[:64] not in r.content and len(r.content) < 4096

    # a range over the damaged block is refused too...
    r = c.get(f"/v1/vaults/{vault}/chunks/{ids['large']}", headers={"Range": "bytes=0-9"})
    assert r.status_code == 500 and r.json()["code"] == "chunk_corrupt"
    r = c.get(f"/v1/vaults/{vault}/chunks/{ids['streamed']}", headers={"Range": f"bytes={2 * MiB}-{2 * MiB + 99999}"})
    assert r.status_code == 500 and r.json()["code"] == "chunk_corrupt"
    # ...while ranges over intact blocks of the same chunks are served
    lo, hi = 3 * 64 * KiB + 10, 4 * 64 * KiB + 500
    r = c.get(f"/v1/vaults/{vault}/chunks/{ids['large']}", headers={"Range": f"bytes={lo}-{hi - 1}"})
    assert r.status_code == 206 and r.content == large[lo:hi]
    r = c.get(f"/v1/vaults/{vault}/chunks/{ids['streamed']}", headers={"Range": "bytes=0-65535"})
    assert r.status_code == 206 and r.content == streamed[:65536]
    r = c.get(f"/v1/vaults/{vault}/chunks/{ids['streamed']}", headers={"Range": f"bytes={2 * MiB + 64 * KiB}-"})
    assert r.status_code == 206 and r.content == streamed[2 * MiB + 64 * KiB:]
    # other chunks are unaffected
    assert c.get(f"/v1/vaults/{vault}/chunks/{ids['intact']}").content == intact


# -- start-up cost -------------------------------------------------------------------------------


def _rchar(pid: int) -> int:
    for line in Path(f"/proc/{pid}/io").read_text().splitlines():
        if line.startswith("rchar:"):
            return int(line.split()[1])
    raise AssertionError("no rchar")


def test_restart_does_not_read_segments(make_server):
    s = make_server("big", env={"OBJVAULT_SEGMENT_BYTES": str(MiB)})
    empty_rchar = _rchar(s.proc.pid)
    vault = uniq()
    create_vault(s, vault)
    blobs = [os.urandom(256 * KiB) for _ in range(240)]   # 60 MiB

    def put(part):
        with httpx.Client(base_url=s.url, timeout=60, verify=False, headers={"Authorization": f"Bearer {s.admin_token}"}) as c:
            for b in part:
                assert c.put(f"/v1/vaults/{vault}/chunks/{sha(b)}", content=b).status_code == 201

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        list(pool.map(put, [blobs[i::8] for i in range(8)]))
    assert s.stop() == 0
    segs = list((s.data_dirs[0] / "segments").glob("*.seg"))
    seg_bytes = sum(p.stat().st_size for p in segs)
    assert len(segs) >= 40 and seg_bytes >= 60 * MiB, (len(segs), seg_bytes)

    s.start()
    big_rchar = _rchar(s.proc.pid)
    extra = big_rchar - empty_rchar
    assert extra < seg_bytes // 10, f"start-up read {extra} more bytes than on an empty store ({seg_bytes} in segments)"
    opened = [json.loads(line) for line in s.log_path.read_text().splitlines()
              if line.strip().startswith("{") and '"store open"' in line]
    assert opened and opened[-1]["seconds"] < 5
    # and the data is there
    c = s.client(verify=False)
    for b in blobs[::40]:
        assert c.get(f"/v1/vaults/{vault}/chunks/{sha(b)}").content == b


# -- a read racing with compaction --------------------------------------------------------


async def test_read_through_a_stale_location_looks_again(tmp_path):
    """A GET that looked a chunk up just before compaction moved it finds it at its new place."""
    from vault.app import Vault
    from vault.config import load_config
    from vault.body import Body
    from vault.policy import Principal
    from vault.services import VaultSettings

    cfg = load_config(env={"OBJVAULT_DATA_DIRS": str(tmp_path / "data"), "OBJVAULT_ADMIN_TOKEN": "t",
                           "OBJVAULT_SEGMENT_BYTES": str(16 << 20)})
    v = Vault(cfg)
    try:
        rec = await v.services.vaults.create("race", VaultSettings(), Principal(admin=True))
        blobs = [os.urandom(70_000 + i) for i in range(2)]
        digests = []
        for data in blobs:
            d = hashlib.sha256(data).digest()
            await v.services.chunks.put(rec, d, Body.of_bytes(data))
            digests.append(d)
        meta = v.services.chunks.meta(rec, digests[0])
        other = v.services.chunks.meta(rec, digests[1])
        # the segment the lookup saw is gone
        gone = meta._replace(seg_id=meta.seg_id + 1000)
        assert await v.services.chunks.get(rec, digests[0], meta=gone) == blobs[0]
        # the lookup saw a place now holding other bytes
        moved = meta._replace(offset=other.offset)
        assert bytes(await v.services.chunks.get(rec, digests[0], 5, 70_000, meta=moved)) == blobs[0][5:70_000]
        # a chunk deleted meanwhile is a 404, not a corruption
        absent = hashlib.sha256(b"never stored").digest()
        with pytest.raises(E.NoSuchChunk):
            await v.services.chunks.get(rec, absent, meta=gone)
    finally:
        v.close()


def test_streamed_bytes_start_their_writeback_before_the_fdatasync(tmp_path):
    """start_writeback hands dirty pages to the disk at once (the fdatasync that
    follows then waits only for the tail); without it they would stay dirty for
    the kernel's 30 s expiry."""
    from vault.store import cache_state, start_writeback

    size = 64 * MiB
    p = tmp_path / "f"
    fd = os.open(p, os.O_CREAT | os.O_RDWR, 0o600)
    try:
        before = _dirty_kib()
        os.pwrite(fd, os.urandom(size), 0)
        # The file's own dirty pages (cachestat(2)); where the kernel has no
        # cachestat, the system's (/proc/meminfo), which a 64 MiB write moves
        # far more than anything else on a test machine does.
        state = cache_state(fd, 0, size)
        if state is not None:
            assert state[2] > 0, state  # dirty, as nothing asked for writeback yet
        else:
            assert _dirty_kib() - before > size // 2048
        start_writeback(fd, 0, size)
        deadline = time.monotonic() + 10
        if state is not None:
            while cache_state(fd, 0, size)[2] and time.monotonic() < deadline:
                time.sleep(0.01)
            assert cache_state(fd, 0, size)[2] == 0
        else:
            while _dirty_kib() - before > size // 4096 and time.monotonic() < deadline:
                time.sleep(0.01)
            assert _dirty_kib() - before <= size // 4096
    finally:
        os.close(fd)


def _dirty_kib() -> int:
    """The system's dirty page cache, KiB."""
    for line in open("/proc/meminfo"):
        if line.startswith("Dirty:"):
            return int(line.split()[1])
    raise AssertionError("no Dirty: line in /proc/meminfo")
