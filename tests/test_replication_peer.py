"""objvault to objvault: one server replicates into another over the HTTP API
(site to site), creating vaults there, sending only chunks the peer lacks,
delaying deletes; the peer can serve as a restore source."""

from __future__ import annotations

import time

from tests.replhelpers import blobs, dump_vault, fill, put_object, status, upload, wait_drained, wait_restore
from tests.server import Server


def peer_target(peer: Server, **extra) -> str:
    lines = ["[[replication.targets]]", 'name = "site-b"', 'kind = "objvault"', f'url = "{peer.url}"',
             f'token = "{peer.admin_token}"']
    lines += [f"{k} = {v!r}".replace("'", '"') for k, v in extra.items()]
    return "\n".join(lines) + "\n"


def test_objvault_replicates_to_another_objvault(mkserver):
    b = mkserver("b", admin_token="token-of-b")
    a = mkserver("a", config=peer_target(b, delete_delay_seconds=2, vaults=["acme", "beta"]))
    # chunks the peer already has do not travel
    shared = blobs(5, 30_000)
    b.create_vault("beta")
    upload(b, "beta", shared)
    a.create_vault("acme", append_only=False, quota_bytes=10_000_000)
    fill(a, "acme")
    a.create_vault("beta")
    ids = upload(a, "beta", shared + blobs(3, 30_000))
    put_object(a, "beta", "x", ids)
    a.create_vault("gamma")  # not replicated
    st = wait_drained(a, "site-b")
    assert st["last_error"] is None
    sent_chunk_bytes = st["sent_bytes"]

    want = dump_vault(a, "acme")
    got = dump_vault(b, "acme")
    # The peer records its own creation times and does not copy the quota.
    for o in list(want["objects"].values()) + list(got["objects"].values()):
        o.pop("created")
    assert got["objects"] == want["objects"] and got["chunks"] == want["chunks"]
    assert got["vault"]["usage"] == want["vault"]["usage"]
    assert got["vault"]["quota_bytes"] is None
    assert dump_vault(b, "beta")["objects"]["x"]["chunks"] == ids
    assert b.admin.get("/v1/vaults/gamma").status_code == 404
    acme_bytes = want["vault"]["usage"]["stored_bytes"]
    manifests = sum(32 * len(o["chunks"]) for o in want["objects"].values()) + 32 * len(ids) + 20
    assert acme_bytes + 3 * 30_000 <= sent_chunk_bytes <= acme_bytes + 3 * 30_000 + manifests

    # a delete reaches the peer after the delay
    assert a.admin.delete("/v1/vaults/acme/objects/a").status_code == 204
    time.sleep(0.5)
    assert b.admin.get("/v1/vaults/acme/objects/a").status_code == 200
    assert status(a, "site-b")["delayed_entries"] == 1
    wait_drained(a, "site-b", delayed=True, timeout=20)
    assert b.admin.get("/v1/vaults/acme/objects/a").status_code == 404

    # the peer is a restore source for a third, empty server
    c = mkserver("c", config=peer_target(b))
    assert c.admin.post("/v1/admin/restore", json={"vault": "acme", "from": "site-b"}).status_code == 202
    assert wait_restore(c)["state"] == "done"
    restored = dump_vault(c, "acme")
    assert restored["chunks"] == dump_vault(b, "acme")["chunks"]
    assert set(restored["objects"]) == {"nested/dir/b with space", "c/ünïcode", "empty"}


def test_a_peer_that_is_down_is_caught_up_later(mkserver):
    b = mkserver("b", admin_token="token-of-b")
    a = mkserver("a", config=peer_target(b, concurrency=4))
    a.create_vault("acme")
    b.stop()
    ids = upload(a, "acme", blobs(20, 20_000))
    put_object(a, "acme", "obj", ids)
    deadline = time.monotonic() + 10
    while not status(a, "site-b")["last_error"]:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    st = status(a, "site-b")
    assert st["pending_entries"] > 0 and "site-b" in st["last_error"]
    b.start()
    wait_drained(a, "site-b", timeout=60)
    assert b.admin.get("/v1/vaults/acme/objects/obj").json()["chunks"] == ids
