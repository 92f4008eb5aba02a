"""Scrub and self-healing on a real server with a real S3 replica: a byte
flipped inside a stored chunk on disk is found by scrub or by a GET, fetched
back from the bucket, verified and rewritten; a chunk no target holds is
reported as damaged and never served."""

from __future__ import annotations

import json
import os
import subprocess
import time

from tests.replhelpers import flip_byte, put_object, s3_target, upload, wait_drained
from tests.server import OBJVAULT, Server


def wait_scrub(srv: Server, timeout: float = 30) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        st = srv.admin.get("/v1/admin/scrub").json()
        if st["state"] == "idle" and st.get("last_pass"):
            return st
        assert time.monotonic() < deadline, st
        time.sleep(0.05)


def test_scrub_and_get_repair_a_flipped_byte_from_the_replica(mkserver, s3bucket):
    cfg = s3_target(s3bucket, vaults=["acme"]) + "\n[scrub]\ninterval_seconds = 0\n"
    # small segments: the active one is preallocated, and the test searches them all
    srv = mkserver("primary", config=cfg, env={"OBJVAULT_SEGMENT_BYTES": str(8 << 20)})
    srv.create_vault("acme")
    srv.create_vault("lonely")  # not replicated: nothing can repair it
    marks = [os.urandom(64) for _ in range(4)]
    data = [m + os.urandom(200_000) for m in marks]
    ids = upload(srv, "acme", data[:3])
    lonely = upload(srv, "lonely", data[3:])
    put_object(srv, "acme", "a", ids)
    put_object(srv, "lonely", "only/copy", lonely)
    wait_drained(srv)

    srv.stop()
    for m in marks:
        flip_byte(srv.data_dirs[0], m)
    srv.start()
    c = srv.admin

    # A GET that meets the bad checksum repairs the chunk before answering.
    r = c.get(f"/v1/vaults/acme/chunks/{ids[0]}")
    assert r.status_code == 200 and r.content == data[0]
    # Never bad bytes: a chunk no target holds answers 500 chunk_corrupt.
    r = c.get(f"/v1/vaults/lonely/chunks/{lonely[0]}")
    assert r.status_code == 500 and r.json()["code"] == "chunk_corrupt"

    r = c.post("/v1/admin/scrub")
    assert r.status_code == 202
    st = wait_scrub(srv)
    last = st["last_pass"]
    assert last["chunks"] == 4 and last["corrupt"] == 3 and last["healed"] == 2 and last["damaged"] == 1
    assert [(d["vault"], d["chunk"], d["objects"]) for d in st["damaged"]] == [("lonely", lonely[0], ["only/copy"])]
    assert st["damaged"][0]["tried"] == []
    for i, d in zip(ids, data):
        r = c.get(f"/v1/vaults/acme/chunks/{i}")
        assert r.status_code == 200 and r.content == d
    r = c.get(f"/v1/vaults/acme/chunks/{ids[2]}", headers={"Range": "bytes=100-199"})
    assert r.status_code == 206 and r.content == data[2][100:200]
    assert "objvault_scrub_damaged_chunks 1.0" in c.get("/metrics").text

    # the repaired chunks stay repaired across a restart; the damaged one stays reported
    srv.restart()
    c = srv.admin
    assert c.post("/v1/admin/scrub").status_code == 202
    last = wait_scrub(srv)["last_pass"]
    assert (last["corrupt"], last["healed"]) == (1, 0)
    env = {**srv.env(), "PATH": os.environ.get("PATH", "")}
    out = subprocess.run([OBJVAULT, "scrub", "--status", "--json"], env=env, capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["damaged"][0]["chunk"] == lonely[0]
    out = subprocess.run([OBJVAULT, "scrub", "--wait", "--json"], env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 1  # damaged chunks remain: a non-zero exit for cron/monitoring
    assert json.loads(out.stdout)["last_pass"]["damaged"] == 1


def test_scrub_is_rate_limited(mkserver):
    srv = mkserver("primary", config="[scrub]\ninterval_seconds = 0\nrate_bytes_per_second = 2000000\n")
    srv.create_vault("acme")
    upload(srv, "acme", [os.urandom(1_000_000) for _ in range(5)])
    t0 = time.monotonic()
    assert srv.admin.post("/v1/admin/scrub").status_code == 202
    last = wait_scrub(srv)["last_pass"]
    # 5 MB at 2 MB/s with a bucket of one second: at least ~1.5 s
    assert last["bytes"] == 5_000_000 and time.monotonic() - t0 >= 1.4
