"""POST /v1/vaults/{vault}/chunks/batch: many small chunks, all or nothing."""

import hashlib
import os

from tests.apihelpers import BATCH_HEADERS, batch_frames
from tests.server import sha


def usage(server, vault):
    return server.admin.get(f"/v1/vaults/{vault}").json()["usage"]


def test_batch_stores_all_then_dedups(server):
    server.create_vault("acme")
    c = server.client(server.create_key("acme", "append"))
    chunks = [os.urandom(16384) for _ in range(40)] + [b"", b"tiny"]
    chunks.append(chunks[0])  # a duplicate inside the batch is stored once
    r = c.post("/v1/vaults/acme/chunks/batch", content=batch_frames(chunks), headers=BATCH_HEADERS)
    assert r.status_code == 200, r.text
    doc = r.json()
    assert doc["stored"] == 42 and doc["existed"] == 1
    assert [x["status"] for x in doc["chunks"]] == [201] * 42 + [200]
    assert usage(server, "acme")["chunks"] == 42
    assert usage(server, "acme")["stored_bytes"] == sum(len(x) for x in chunks[:42])
    for data in chunks[:42]:
        got = c.get(f"/v1/vaults/acme/chunks/{sha(data)}")
        assert got.status_code == 200 and got.content == data

    again = c.post("/v1/vaults/acme/chunks/batch", content=batch_frames(chunks[:5]), headers=BATCH_HEADERS)
    assert again.status_code == 200 and again.json()["stored"] == 0 and again.json()["existed"] == 5
    assert usage(server, "acme")["chunks"] == 42


def test_one_bad_frame_stores_nothing(server):
    server.create_vault("acme")
    c = server.client(server.create_key("acme", "append"))
    chunks = [os.urandom(1000) for _ in range(10)]
    digests = [hashlib.sha256(x).digest() for x in chunks]
    digests[7] = hashlib.sha256(b"something else").digest()
    r = c.post("/v1/vaults/acme/chunks/batch", content=batch_frames(chunks, digests), headers=BATCH_HEADERS)
    assert r.status_code == 400 and r.json()["code"] == "digest_mismatch"
    assert usage(server, "acme")["chunks"] == 0
    assert c.head(f"/v1/vaults/acme/chunks/{sha(chunks[0])}").status_code == 404


def test_cut_frame_and_empty_batch_are_refused(server):
    server.create_vault("acme")
    c = server.client(server.create_key("acme", "append"))
    body = batch_frames([os.urandom(500), os.urandom(500)])
    r = c.post("/v1/vaults/acme/chunks/batch", content=body[:-10], headers=BATCH_HEADERS)
    assert r.status_code == 400 and r.json()["code"] == "truncated"
    r = c.post("/v1/vaults/acme/chunks/batch", content=b"", headers=BATCH_HEADERS)
    assert r.status_code == 400
    assert usage(server, "acme")["chunks"] == 0


def test_quota_is_checked_for_the_whole_batch(server):
    server.create_vault("acme", quota_bytes=10_000)
    c = server.client(server.create_key("acme", "append"))
    r = c.post("/v1/vaults/acme/chunks/batch", content=batch_frames([os.urandom(4000) for _ in range(3)]),
               headers=BATCH_HEADERS)
    assert r.status_code == 507 and r.json()["code"] == "quota_exceeded"
    assert usage(server, "acme")["stored_bytes"] == 0
    r = c.post("/v1/vaults/acme/chunks/batch", content=batch_frames([os.urandom(4000) for _ in range(2)]),
               headers=BATCH_HEADERS)
    assert r.status_code == 200 and usage(server, "acme")["stored_bytes"] == 8000


def test_roles_and_tenants(server):
    server.create_vault("acme")
    server.create_vault("other")
    body = batch_frames([b"x" * 100])
    read = server.client(server.create_key("acme", "read"))
    assert read.post("/v1/vaults/acme/chunks/batch", content=body, headers=BATCH_HEADERS).status_code == 403
    stranger = server.client(server.create_key("other", "full"))
    r = stranger.post("/v1/vaults/acme/chunks/batch", content=body, headers=BATCH_HEADERS)
    assert r.status_code == 404 and r.json()["code"] == "no_such_vault"
    assert usage(server, "acme")["chunks"] == 0
