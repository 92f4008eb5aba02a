"""The real restic client (Debian's package) against /restic/{vault}/.

restic must be installed (`make system-deps`): these tests fail, never skip,
without it.
"""

from __future__ import annotations

import filecmp
import json
import os
import random
import shutil
import signal
import subprocess
import time
from pathlib import Path

RESTIC = shutil.which("restic")
# A pass of GC may be followed by compaction in the background: give it this long.
RECLAIM_SECONDS = 30


def restic_env(server, vault: str, secret: str, tmp: Path) -> dict:
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(tmp),
        "RESTIC_PASSWORD": "correct horse battery staple",
        "RESTIC_CACHE_DIR": str(tmp / "restic-cache"),
        "RESTIC_REPOSITORY": f"rest:http://{vault}:{secret}@127.0.0.1:{server.port}/restic/{vault}/",
    }


def restic(server, vault: str, secret: str, tmp: Path, *args: str) -> subprocess.CompletedProcess:
    """Run restic against the vault's repository; it must succeed."""
    assert RESTIC, "restic is not installed (make system-deps)"
    r = subprocess.run([RESTIC, *args], env=restic_env(server, vault, secret, tmp), capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0, f"restic {' '.join(args)} failed ({r.returncode}):\n{r.stderr[-3000:]}"
    return r


def make_tree(root: Path, seed: int, mib: int = 4) -> Path:
    """Random files with duplicates among them (dedup inside and across files)."""
    rnd = random.Random(seed)
    root.mkdir(parents=True)
    (root / "sub" / "deeper").mkdir(parents=True)
    blobs = []
    for i in range(mib * 2):
        data = rnd.randbytes(rnd.randint(256 << 10, 768 << 10))
        blobs.append(data)
        (root / f"file{i:02d}.bin").write_bytes(data)
    (root / "sub" / "copy-of-file00.bin").write_bytes(blobs[0])
    (root / "sub" / "deeper" / "copy-of-file03.bin").write_bytes(blobs[3])
    (root / "sub" / "twice.bin").write_bytes(blobs[1] + blobs[1])
    (root / "sub" / "small.txt").write_text("hello restic\n" * 100)
    (root / "empty").write_bytes(b"")
    return root


def assert_same_tree(a: Path, b: Path) -> None:
    cmp = filecmp.dircmp(a, b)
    assert not cmp.left_only and not cmp.right_only, (cmp.left_only, cmp.right_only)
    for name in cmp.common_files:
        assert filecmp.cmp(a / name, b / name, shallow=False), name
    for sub in cmp.common_dirs:
        assert_same_tree(a / sub, b / sub)


def restored(out: Path, src: Path) -> Path:
    return out / src.relative_to("/")


def refused_deletes(server) -> int:
    """DELETEs of restic files the server has answered with 403 so far (from /metrics)."""
    n = 0
    for line in server.admin.get("/metrics").text.splitlines():
        if line.startswith("objvault_http_requests_total{") and 'route="/restic/{vault}/{type}/{name}"' in line \
                and 'method="DELETE"' in line and 'status="403"' in line:
            n += int(float(line.rsplit(" ", 1)[1]))
    return n


def refused_forget(server, vault: str, secret: str, tmp: Path) -> int:
    """Run ``forget --keep-last 1 --prune``, which the server must refuse; return restic's exit code.

    restic 0.14 retries a refused DELETE with backoff for about a minute
    before it gives up; once the server has said 403 the test interrupts it
    instead. On SIGINT restic cleans up like on any failure: it removes its
    lock and exits nonzero.
    """
    assert RESTIC, "restic is not installed (make system-deps)"
    seen = refused_deletes(server)
    proc = subprocess.Popen([RESTIC, "forget", "--keep-last", "1", "--prune"],
                            env=restic_env(server, vault, secret, tmp), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while proc.poll() is None and refused_deletes(server) == seen:
            assert time.monotonic() < deadline, "restic never tried to delete anything"
            time.sleep(0.1)
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert refused_deletes(server) > seen, err[-2000:]
    return proc.returncode


def snapshots(server, vault, secret, tmp) -> list[dict]:
    return json.loads(restic(server, vault, secret, tmp, "snapshots", "--json").stdout)


def restic_objects(server, vault: str) -> dict[str, int]:
    out, after = {}, ""
    while True:
        r = server.admin.get(f"/v1/vaults/{vault}/objects", params={"prefix": "restic/", "start_after": after,
                                                                      "limit": 1000})
        assert r.status_code == 200, r.text
        out.update({o["key"]: o["size"] for o in r.json()["objects"]})
        after = r.json()["next"]
        if after is None:
            return out


def change_tree(src: Path, seed: int) -> None:
    """Drop some files, add new ones: a second backup with data of its own."""
    rnd = random.Random(seed)
    for i in (2, 4, 5):
        (src / f"file{i:02d}.bin").unlink()
    for i in range(3):
        (src / f"new{i}.bin").write_bytes(rnd.randbytes(512 << 10))


def test_backup_restore_append_key_and_prune(make_server, tmp_path):
    server = make_server()
    server.create_vault("acme")
    full = server.create_key("acme", "full")
    append = server.create_key("acme", "append")
    src = make_tree(tmp_path / "src", seed=1)

    restic(server, "acme", full, tmp_path, "init")
    restic(server, "acme", full, tmp_path, "backup", str(src))
    snaps = snapshots(server, "acme", full, tmp_path)
    assert len(snaps) == 1 and snaps[0]["paths"] == [str(src)]
    restic(server, "acme", full, tmp_path, "check", "--read-data")
    restic(server, "acme", full, tmp_path, "restore", "latest", "--target", str(tmp_path / "out1"))
    assert_same_tree(src, restored(tmp_path / "out1", src))

    # Every restic file is one object referencing one chunk; dedup happened in restic.
    objs = restic_objects(server, "acme")
    assert "restic/config" in objs
    assert any(k.startswith("restic/data/") for k in objs)
    usage = server.admin.get("/v1/vaults/acme").json()["usage"]
    assert usage["objects"] == len(objs)
    tree_bytes = sum(p.stat().st_size for p in src.rglob("*") if p.is_file())
    assert usage["stored_bytes"] < tree_bytes  # the duplicates are stored once

    # A second backup with an append-only key.
    change_tree(src, seed=2)
    restic(server, "acme", append, tmp_path, "backup", str(src))
    assert len(snapshots(server, "acme", append, tmp_path)) == 2

    # The append key cannot forget or prune: restic fails, nothing is deleted,
    # and restic could still remove its lock.
    before = restic_objects(server, "acme")
    assert refused_forget(server, "acme", append, tmp_path) != 0
    after = restic_objects(server, "acme")
    assert {k: v for k, v in after.items() if not k.startswith("restic/locks/")} == \
        {k: v for k, v in before.items() if not k.startswith("restic/locks/")}
    assert not any(k.startswith("restic/locks/") for k in after), "restic left a lock behind"
    assert len(snapshots(server, "acme", full, tmp_path)) == 2

    # The full key can.
    restic(server, "acme", full, tmp_path, "forget", "--keep-last", "1", "--prune")
    snaps = snapshots(server, "acme", full, tmp_path)
    assert len(snaps) == 1
    assert restic_objects(server, "acme").keys() != before.keys()
    restic(server, "acme", full, tmp_path, "check", "--read-data")
    restic(server, "acme", full, tmp_path, "restore", "latest", "--target", str(tmp_path / "out2"))
    assert_same_tree(src, restored(tmp_path / "out2", src))


def test_append_only_vault_backs_up_and_refuses_prune(make_server, tmp_path):
    """restic removes its own locks even in an append-only vault, and nothing else."""
    server = make_server()
    server.create_vault("locked", append_only=True)
    full = server.create_key("locked", "full")
    src = make_tree(tmp_path / "src", seed=3, mib=3)
    restic(server, "locked", full, tmp_path, "init")
    restic(server, "locked", full, tmp_path, "backup", str(src))
    change_tree(src, seed=4)
    restic(server, "locked", full, tmp_path, "backup", str(src))
    assert refused_forget(server, "locked", full, tmp_path) != 0
    assert len(snapshots(server, "locked", full, tmp_path)) == 2
    assert not any(k.startswith("restic/locks/") for k in restic_objects(server, "locked"))
    restic(server, "locked", full, tmp_path, "check")


def segment_bytes(server) -> int:
    """Bytes the segment files occupy on disk (RocksDB's files not counted)."""
    return sum(p.stat().st_blocks * 512 for d in server.data_dirs for p in (d / "segments").glob("*") if p.is_file())


def test_prune_then_gc_reclaims_disk_space(make_server, tmp_path):
    """forget --prune drops objects; a GC pass (POST /v1/admin/gc) gives the disk space back."""
    server = make_server(env={
        "OBJVAULT_GC_GRACE_SECONDS": "0",  # collectible at once
        "OBJVAULT_SEGMENT_BYTES": str(1 << 20),  # small segments seal, so they can be compacted
    })
    server.create_vault("acme")
    full = server.create_key("acme", "full")
    src = make_tree(tmp_path / "src", seed=5)
    restic(server, "acme", full, tmp_path, "init")
    restic(server, "acme", full, tmp_path, "backup", str(src))
    # Nothing of the first backup's data is left in the second.
    for p in src.glob("file*.bin"):
        p.unlink()
    shutil.rmtree(src / "sub")
    (src / "after.bin").write_bytes(os.urandom(300 << 10))
    restic(server, "acme", full, tmp_path, "backup", str(src))
    restic(server, "acme", full, tmp_path, "forget", "--keep-last", "1", "--prune")

    stored_before = server.admin.get("/v1/vaults/acme").json()["usage"]["stored_bytes"]
    disk_before = segment_bytes(server)
    deadline = time.monotonic() + RECLAIM_SECONDS
    while True:
        r = server.admin.post("/v1/admin/gc", json={"dry_run": False})
        assert r.status_code == 200, f"POST /v1/admin/gc: {r.status_code} {r.text}"
        stored = server.admin.get("/v1/vaults/acme").json()["usage"]["stored_bytes"]
        disk = segment_bytes(server)
        # The first backup's ~4 MiB of packs are no longer referenced.
        if stored <= stored_before - (3 << 20) and disk <= disk_before - (3 << 20):
            break
        assert time.monotonic() < deadline, \
            f"not reclaimed: stored {stored_before} -> {stored}, segments on disk {disk_before} -> {disk}"
        time.sleep(0.5)

    restic(server, "acme", full, tmp_path, "check", "--read-data")
    restic(server, "acme", full, tmp_path, "restore", "latest", "--target", str(tmp_path / "out"))
    assert_same_tree(src, restored(tmp_path / "out", src))

