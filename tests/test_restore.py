"""Rebuilding a vault on an empty server from the replica in a real bucket,
compared byte for byte with the original; through the API and the CLI, plain
and encrypted, and with a chunk spoiled in the bucket."""

from __future__ import annotations

import json
import os
import subprocess

import obstore

from tests.replhelpers import (blobs, bucket_get, dump_vault, fill, layout, put_object, s3_target, upload,
                               wait_drained, wait_restore)
from tests.server import OBJVAULT


def test_restore_rebuilds_a_vault_on_an_empty_server(mkserver, s3bucket):
    cfg = s3_target(s3bucket)
    a = mkserver("a", config=cfg)
    a.create_vault("acme", quota_bytes=50_000_000)
    fill(a, "acme")
    assert a.admin.patch("/v1/vaults/acme", json={"append_only": True, "retention_days": 30}).status_code == 200
    a.create_vault("other")
    upload(a, "other", blobs(2, 1000))
    wait_drained(a)
    before = dump_vault(a, "acme")
    a.stop()

    b = mkserver("b", config=cfg)  # empty, same target
    c = b.admin
    assert c.get("/v1/admin/restore").json()["state"] == "idle"
    r = c.post("/v1/admin/restore", json={"vault": "acme", "from": "nowhere"})
    assert r.status_code == 400 and "offsite" in r.json()["detail"]
    r = c.post("/v1/admin/restore", json={"vault": "acme", "from": "offsite"})
    assert r.status_code == 202, r.text
    st = wait_restore(b)
    assert st["state"] == "done", st
    assert st["objects"] == st["objects_total"] == 4 and st["chunks"] == 16 and st["error"] is None
    assert st["bytes"] == sum(len(v) for v in before["chunks"].values())
    after = dump_vault(b, "acme")
    assert after == before  # config, usage, objects (creation times too), every chunk's bytes
    # what came from the bucket is not sent back to it: only the vault's configuration
    st = wait_drained(b)
    assert st["sent_bytes"] == 0 and st["sent_entries"] <= 2, st
    assert c.get("/v1/vaults/other").status_code == 404  # only what was asked for

    r = c.post("/v1/admin/restore", json={"vault": "acme", "from": "offsite"})
    assert r.status_code == 409 and r.json()["code"] == "vault_exists"
    r = c.post("/v1/admin/restore", json={"vault": "ghost", "from": "offsite"})
    assert r.status_code == 202
    st = wait_restore(b)
    assert st["state"] == "failed" and "ghost" in st["error"]


def test_restore_from_an_encrypted_bucket_with_the_cli(mkserver, s3bucket, tmp_path):
    key_file = tmp_path / "k"
    key_file.write_bytes(os.urandom(32))
    cfg = s3_target(s3bucket, encryption_key_file=str(key_file))
    a = mkserver("a", config=cfg)
    a.create_vault("acme")
    fill(a, "acme")
    wait_drained(a)
    before = dump_vault(a, "acme")
    a.stop()

    b = mkserver("b", config=cfg)
    env = {**b.env(), "PATH": os.environ.get("PATH", "")}
    out = subprocess.run([OBJVAULT, "restore", "acme", "--from", "offsite", "--json"], env=env, capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr
    assert out.stderr == ""  # the progress bar is for a terminal; a pipe gets the result only
    assert json.loads(out.stdout)["state"] == "done" and json.loads(out.stdout)["objects"] == 4
    assert dump_vault(b, "acme") == before


def test_a_spoiled_chunk_in_the_bucket_is_caught_by_its_hash(mkserver, s3bucket):
    cfg = s3_target(s3bucket)
    a = mkserver("a", config=cfg)
    a.create_vault("acme")
    ids = upload(a, "acme", blobs(4, 20_000))
    put_object(a, "acme", "good", ids[:2])
    put_object(a, "acme", "spoiled", ids[2:])
    wait_drained(a)
    a.stop()
    path = "replica/" + layout(s3bucket).chunk_path("acme", bytes.fromhex(ids[3]))
    body = bytearray(bucket_get(s3bucket, path))
    body[1000] ^= 1
    obstore.put(s3bucket.store, path, bytes(body))

    b = mkserver("b", config=cfg)
    assert b.admin.post("/v1/admin/restore", json={"vault": "acme", "from": "offsite"}).status_code == 202
    st = wait_restore(b)
    assert st["state"] == "failed" and "spoiled" in st["error"] and ids[3] in st["error"]
    assert st["objects"] == 1
    assert b.admin.get("/v1/vaults/acme/objects/good").status_code == 200
    assert b.admin.get("/v1/vaults/acme/objects/spoiled").status_code == 404
    assert b.admin.get(f"/v1/vaults/acme/chunks/{ids[3]}").status_code == 404
