"""Replication to a real S3 server (SeaweedFS) from real objvault servers:
bucket contents compared byte for byte, an outage (frozen S3) while
uploading, SIGKILL of the vault mid-replication, the delete delay, an
encrypted bucket holding no plaintext, index checkpoints, lag reporting
(API, metrics, CLI).

The helpers shared with test_restore.py, test_scrub.py and
test_replication_peer.py are in ``tests/replhelpers.py``.
"""

from __future__ import annotations

import json
import os
import subprocess
import time

import obstore
import pytest

from replication.checkpoint import unpack_tarball
from replication.crypto import Sealer
from replication.target import Manifest
from tests.replhelpers import blobs, bucket_get, layout, put_object, s3_target, status, upload, wait_drained
from tests.server import OBJVAULT
from vault.meta import Index


# -- helpers ----------------------------------------------------------------------------


def bucket_list(bucket, prefix: str = "replica") -> dict[str, int]:
    out = {}
    for batch in obstore.list(bucket.store, prefix + "/", chunk_size=1000):
        for m in batch:
            out[m["path"][len(prefix) + 1:]] = m["size"]
    return out


def check_replica(bucket, vault: str, chunks: dict[str, bytes], objects: dict[str, list[str]],
                  prefix: str = "replica") -> None:
    """Every chunk and manifest of ``vault`` is in the bucket, byte for byte."""
    lay = layout(bucket, prefix)
    for cid, data in chunks.items():
        got = bucket_get(bucket, f"{prefix}/{lay.chunk_path(vault, bytes.fromhex(cid))}")
        assert got == data, f"chunk {cid} differs in the bucket"
    for key, ids in objects.items():
        raw = bucket_get(bucket, f"{prefix}/{lay.object_path(vault, key)}")
        assert raw is not None, f"object {key} is not in the bucket"
        m = Manifest.decode(raw)
        assert m.key == key and [c.hex() for c in m.chunks] == ids


# -- tests -----------------------------------------------------------------------------


def test_replicates_vaults_chunks_and_objects_to_the_bucket(mkserver, s3bucket):
    cfg = s3_target(s3bucket, vaults=["acme*"], checkpoint_interval_seconds=2)
    # Chunks above 256 KiB take the streaming write path of the store.
    srv = mkserver("primary", config=cfg, env={"OBJVAULT_STREAM_THRESHOLD_BYTES": str(256 << 10)})
    srv.create_vault("acme", quota_bytes=1 << 30, retention_days=0)
    srv.create_vault("other")  # not matched by the target's globs
    data = blobs(20, 64 << 10) + blobs(3, 700 << 10) + [b"", b"x"]
    ids = upload(srv, "acme", data)
    upload(srv, "other", blobs(3, 1000))
    objects = {"plain": ids[:5], "dir/sub/ü ñ.txt": ids[5:20] + ids[:2], "big": ids[20:], "dup": [ids[0]] * 3}
    for key, oids in objects.items():
        put_object(srv, "acme", key, oids, meta=key.encode())
    st = wait_drained(srv)
    assert st["pending_bytes"] == 0 and st["last_error"] is None and st["last_success"]
    assert st["oldest_pending_seconds"] == 0

    listing = bucket_list(s3bucket)
    lay = layout(s3bucket)
    want = {"objvault-replica.json", "vaults/acme/vault.json"}
    want |= {lay.chunk_path("acme", bytes.fromhex(i)) for i in ids}
    want |= {lay.object_path("acme", k) for k in objects}
    got = {k for k in listing if not k.startswith("checkpoints/")}
    assert got == want
    check_replica(s3bucket, "acme", dict(zip(ids, data)), objects)
    doc = json.loads(bucket_get(s3bucket, "replica/vaults/acme/vault.json"))
    assert doc["name"] == "acme" and doc["quota_bytes"] == 1 << 30
    marker = json.loads(bucket_get(s3bucket, "replica/objvault-replica.json"))
    assert marker["format"] == "objvault-replica" and marker["encryption"] == "none"

    # index checkpoints go along (one at start, then every 2 s): unpack the
    # newest and read the vault back from it
    deadline = time.monotonic() + 20  # a loaded machine makes and uploads them more slowly
    while True:
        cps = sorted(k for k in bucket_list(s3bucket) if k.startswith("checkpoints/"))
        if len(cps) >= 2 or time.monotonic() > deadline:
            break
        time.sleep(0.25)
    assert len(cps) >= 2 and all(c.endswith(".tar.zst") for c in cps)
    tmp = srv.root / "cp"
    tmp.mkdir()
    (tmp / "cp.tar.zst").write_bytes(bucket_get(s3bucket, "replica/" + cps[-1]))
    idx = Index(unpack_tarball(tmp / "cp.tar.zst", tmp / "out"))
    try:
        assert idx.get("vaults", b"acme") is not None
    finally:
        idx.close()

    # lag as Prometheus gauges and through the CLI
    metrics = srv.admin.get("/metrics").text
    assert 'objvault_replication_pending_entries{target="offsite"} 0.0' in metrics
    assert 'objvault_replication_oldest_pending_seconds{target="offsite"}' in metrics
    assert "objvault_scrub_damaged_chunks 0.0" in metrics
    env = {**srv.env(), "PATH": os.environ.get("PATH", "")}
    out = subprocess.run([OBJVAULT, "replication", "status"], env=env, capture_output=True, text=True,
                         timeout=30)
    assert out.returncode == 0, out.stderr
    row = next(line.split() for line in out.stdout.splitlines() if line.startswith("offsite "))
    assert row[1] == "s3" and row[2].startswith("s3://") and row[3] == "0"  # TARGET KIND URL PENDING
    out = subprocess.run([OBJVAULT, "replication", "status", "--json"], env=env, capture_output=True,
                         text=True, timeout=30)
    assert json.loads(out.stdout)["targets"][0]["pending_entries"] == 0


def test_outage_while_uploading_catches_up_with_nothing_lost(mkserver, s3bucket):
    srv = mkserver("primary", config=s3_target(s3bucket, concurrency=4))
    srv.create_vault("acme")
    before = blobs(10, 128 << 10)
    ids = upload(srv, "acme", before)
    wait_drained(srv)
    with s3bucket.server.frozen_for():
        during = blobs(40, 128 << 10)
        ids += upload(srv, "acme", during)  # the vault keeps accepting while the target hangs
        put_object(srv, "acme", "during-outage", ids)
        time.sleep(1.0)
        st = status(srv)
        assert st["pending_entries"] > 0 and st["pending_bytes"] > 0
    wait_drained(srv, timeout=90)
    check_replica(s3bucket, "acme", dict(zip(ids, before + during)), {"during-outage": ids})


def test_sigkill_mid_replication_then_restart_catches_up(mkserver, s3bucket):
    srv = mkserver("primary", config=s3_target(s3bucket, concurrency=2))
    srv.create_vault("acme")
    first = blobs(10, 64 << 10)
    ids = upload(srv, "acme", first)
    wait_drained(srv)
    s3bucket.server.freeze()
    try:
        second = blobs(30, 256 << 10)
        ids += upload(srv, "acme", second)
        put_object(srv, "acme", "obj", ids)
        time.sleep(0.5)  # puts are in flight to the hung target
        assert status(srv)["pending_entries"] > 0
        srv.kill()
    finally:
        s3bucket.server.thaw()
    srv.start()
    wait_drained(srv, timeout=90)
    check_replica(s3bucket, "acme", dict(zip(ids, first + second)), {"obj": ids})


def test_deletes_reach_the_bucket_only_after_the_delay(mkserver, s3bucket):
    cfg = s3_target(s3bucket, delete_delay_seconds=3) + "\n[gc]\ngrace_seconds = 0\n"
    srv = mkserver("primary", config=cfg)
    srv.create_vault("acme")
    data = blobs(3, 10_000)
    ids = upload(srv, "acme", data)
    put_object(srv, "acme", "doomed", ids)
    put_object(srv, "acme", "keeper", ids[:1])
    wait_drained(srv)
    lay = layout(s3bucket)
    doomed = "replica/" + lay.object_path("acme", "doomed")
    assert bucket_get(s3bucket, doomed) is not None

    assert srv.admin.delete("/v1/vaults/acme/objects/doomed").status_code == 204
    r = srv.admin.post("/v1/admin/gc", json={})
    assert r.status_code == 200 and r.json()["chunks_deleted"] == 2, r.text
    t0 = time.monotonic()
    time.sleep(1.0)
    st = status(srv)
    assert st["delayed_entries"] == 3 and st["oldest_pending_seconds"] == 0
    # still all there within the delay
    assert bucket_get(s3bucket, doomed) is not None
    for i in ids:
        assert bucket_get(s3bucket, "replica/" + lay.chunk_path("acme", bytes.fromhex(i))) is not None
    wait_drained(srv, delayed=True, timeout=30)
    assert time.monotonic() - t0 >= 1.9
    assert bucket_get(s3bucket, doomed) is None
    assert bucket_get(s3bucket, "replica/" + lay.chunk_path("acme", bytes.fromhex(ids[0]))) == data[0]
    for i in ids[1:]:
        assert bucket_get(s3bucket, "replica/" + lay.chunk_path("acme", bytes.fromhex(i))) is None
    assert bucket_get(s3bucket, "replica/" + lay.object_path("acme", "keeper")) is not None


def test_encrypted_bucket_holds_no_plaintext_names_or_bodies(mkserver, s3bucket, tmp_path):
    key = os.urandom(32)
    key_file = tmp_path / "replica.key"
    key_file.write_text(key.hex() + "\n")
    srv = mkserver("primary", config=s3_target(s3bucket, encryption_key_file=str(key_file)))
    srv.create_vault("payroll-vault")
    tag = b"PLAINTEXT-MARKER-"
    data = [tag + os.urandom(20_000) + tag for _ in range(5)] + [tag * 100]
    ids = upload(srv, "payroll-vault", data)
    put_object(srv, "payroll-vault", "salaries/2024/confidential.xlsx", ids, meta=b"secret-meta-" * 4)
    wait_drained(srv)
    listing = bucket_list(s3bucket)
    # marker, vault, chunks, manifest (and the index checkpoint once it is up)
    assert len([p for p in listing if not p.startswith("checkpoints/")]) == 1 + 1 + len(ids) + 1
    needles = [b"payroll", b"salaries", b"confidential", b"secret-meta", tag, b"acme"]
    needles += [i.encode() for i in ids] + [bytes.fromhex(i) for i in ids]
    needles += [d[len(tag):len(tag) + 32] for d in data[:5]]
    for path in listing:
        name = path.encode()
        body = bucket_get(s3bucket, "replica/" + path)
        for n in needles:
            assert n not in name, f"{n!r} in name {path}"
            if path != "objvault-replica.json":
                assert n not in body, f"{n!r} in the body of {path}"
    assert all(".tar.zst.sealed" in p for p in listing if p.startswith("checkpoints/"))
    # and with the key it is all there
    lay = layout(s3bucket, key=key)
    lay.sealer = Sealer(key)
    for i, d in zip(ids, data):
        path = lay.chunk_path("payroll-vault", bytes.fromhex(i))
        assert lay.sealer.open(bucket_get(s3bucket, "replica/" + path), path.encode()) == d


def test_a_bad_target_configuration_stops_the_server_at_start(mkserver, s3bucket, tmp_path):
    (tmp_path / "short.key").write_bytes(b"too short")
    srv = mkserver("primary", start=False,
                      config=s3_target(s3bucket, encryption_key_file=str(tmp_path / "short.key")))
    with pytest.raises(RuntimeError, match="32 raw bytes or 64 hex"):
        srv.start(timeout=15)


# -- replication in the jobs API ----------------------------------------------------------


def test_jobs_list_replication_per_target_with_its_state_errors_and_last_pass(mkserver, tmp_path):
    """Each target's worker and seeder are jobs of the shared runner: a healthy
    directory target and a peer that refuses connections, side by side."""
    cfg = (f'[[replication.targets]]\nname = "nas"\nkind = "local"\nurl = "file://{tmp_path}/nas"\n'
           '[[replication.targets]]\nname = "down"\nkind = "objvault"\nurl = "http://127.0.0.1:9"\ntoken = "t"\n')
    srv = mkserver("primary", config=cfg)
    srv.create_vault("acme")
    upload(srv, "acme", blobs(3, 1000))
    wait_drained(srv, "nas")
    deadline = time.monotonic() + 30
    while True:
        jobs = {j["name"]: j for j in srv.admin.get("/v1/admin/jobs").json()["jobs"]}
        nas, down = jobs["replication:nas"], jobs["replication:down"]
        if nas["last_ok"] and down["consecutive_errors"] >= 1 and jobs["replication-seed:down"]["last_ok"]:
            break
        assert time.monotonic() < deadline, jobs
        time.sleep(0.1)
    assert nas["state"]["name"] == "nas" and nas["state"]["kind"] == "local"
    assert nas["state"]["pending_entries"] == 0 and nas["state"]["last_error"] is None
    assert nas["last_stats"]["failed"] == 0 and nas["last_success"] and nas["interval_seconds"] > 0
    assert "127.0.0.1:9" in down["last_error"] and down["last_ok"] is False and down["failures"] >= 1
    # Nothing left the outbox of the target that is down: the worker's state says how much waits.
    assert down["state"]["pending_entries"] >= 4 and "down" in down["state"]["last_error"]
    assert jobs["replication-seed:nas"]["last_ok"] and {"restore", "scrub"} <= set(jobs)
