"""restic's REST protocol (v1 and v2) under /restic/{vault}/, spoken by hand.

Every status restic or rest-server relies on, against a real server; the
real restic client is driven in tests/test_restic.py.
"""

from __future__ import annotations

import os

import httpx
import pytest

from tests.server import Server, sha

V1 = "application/vnd.x.restic.rest.v1"
V2 = "application/vnd.x.restic.rest.v2"


def repo(server: Server, vault: str, secret: str | None) -> httpx.Client:
    """A client rooted at the repository URL, with restic's Basic auth (user = vault)."""
    auth = (vault, secret) if secret is not None else None
    c = httpx.Client(base_url=f"{server.url}/restic/{vault}/", auth=auth, timeout=60)
    server._clients.append(c)
    return c


@pytest.fixture
def acme(server):
    """A vault with one key per role and a repository client for each."""
    server.create_vault("acme")
    keys = {role: server.create_key("acme", role) for role in ("read", "append", "full")}
    return server, {role: repo(server, "acme", k) for role, k in keys.items()}


def test_create_and_config(acme):
    server, c = acme
    full, app = c["full"], c["append"]
    assert app.post("", params={"create": "true"}).status_code == 200
    assert app.post("?create=true").status_code == 200  # idempotent
    assert app.post("").status_code == 400  # without create=true
    r = app.get("")
    assert r.status_code == 405 and r.headers["Allow"] == "POST"
    assert c["read"].post("?create=true").status_code == 403

    assert app.head("config").status_code == 404
    assert app.get("config").status_code == 404
    cfg = os.urandom(180)
    assert c["read"].post("config", content=cfg).status_code == 403
    assert app.post("config", content=cfg).status_code == 200
    r = app.head("config")
    assert r.status_code == 200 and r.headers["Content-Length"] == str(len(cfg)) and r.content == b""
    r = c["read"].get("config")
    assert r.status_code == 200 and r.content == cfg
    assert app.post("config", content=cfg).status_code == 200  # same bytes again: a retry, not an overwrite

    # Never overwritten, whatever the key (as in rest-server).
    assert app.post("config", content=b"other").status_code == 403
    assert full.post("config", content=b"other").status_code == 403
    assert full.get("config").content == cfg
    r = full.put("config", content=cfg)
    assert r.status_code == 405 and set(r.headers["Allow"].split(",")) == {"HEAD", "GET", "POST", "DELETE"}

    # The mapping: one object referencing one chunk, the SHA-256 of the config.
    obj = server.admin.get("/v1/vaults/acme/objects/restic/config").json()
    assert obj["chunks"] == [sha(cfg)] and obj["size"] == len(cfg)

    assert app.delete("config").status_code == 403
    assert full.delete("config").status_code == 200
    assert full.head("config").status_code == 404
    assert full.delete("config").status_code == 404


def test_files_listing_and_mapping(acme):
    server, c = acme
    app, read = c["append"], c["read"]
    files = {kind: [os.urandom(n) for n in (10, 3000)] for kind in ("data", "keys", "locks", "snapshots", "index")}
    for kind, bodies in files.items():
        for b in bodies:
            assert app.post(f"{kind}/{sha(b)}", content=b).status_code == 200

    for kind, bodies in files.items():
        r = read.get(f"{kind}/", headers={"Accept": V2})
        assert r.status_code == 200 and r.headers["Content-Type"] == V2
        assert sorted(r.json(), key=lambda d: d["name"]) == \
            sorted(({"name": sha(b), "size": len(b)} for b in bodies), key=lambda d: d["name"])
        r = read.get(f"{kind}/")  # no Accept: version 1, names only
        assert r.status_code == 200 and r.headers["Content-Type"] == V1
        assert sorted(r.json()) == sorted(sha(b) for b in bodies)
        r = read.get(f"{kind}/", headers={"Accept": V1})
        assert r.headers["Content-Type"] == V1 and isinstance(r.json()[0], str)

    b = files["data"][1]
    r = read.head(f"data/{sha(b)}")
    assert r.status_code == 200 and r.headers["Content-Length"] == str(len(b))
    r = read.get(f"data/{sha(b)}")
    assert r.status_code == 200 and r.content == b

    # Each file is the object restic/<type>/<name> holding one chunk: <name>.
    obj = server.admin.get(f"/v1/vaults/acme/objects/restic/data/{sha(b)}").json()
    assert obj["chunks"] == [sha(b)] and obj["size"] == len(b)
    usage = server.admin.get("/v1/vaults/acme").json()["usage"]
    assert usage["objects"] == 10 and usage["logical_bytes"] == 5 * 3010

    # The native API cannot put objects under restic/: the listing stays restic's own.
    cid = server.put_chunk(server.admin, "acme", b"native")
    r = server.admin.put("/v1/vaults/acme/objects/restic/data/notes.txt", json={"chunks": [cid]})
    assert r.status_code == 403 and r.json()["code"] == "reserved_key"
    assert len(read.get("data/", headers={"Accept": V2}).json()) == 2

    # An empty type lists as [], not null.
    server.create_vault("empty")
    r = repo(server, "empty", server.create_key("empty", "read")).get("data/", headers={"Accept": V2})
    assert r.status_code == 200 and r.json() == []


def test_statuses_404_405_400(acme):
    _, c = acme
    app = c["append"]
    missing = sha(b"missing")
    assert app.get(f"data/{missing}").status_code == 404
    assert app.head(f"data/{missing}").status_code == 404
    assert app.get("bogus/").status_code == 404
    assert app.get(f"bogus/{missing}").status_code == 404
    assert app.get("data").status_code == 404  # a listing needs the trailing slash
    assert app.get(f"data/{missing}/x").status_code == 404

    r = app.post("data/")
    assert r.status_code == 405 and r.headers["Allow"] == "GET"
    r = app.put(f"data/{missing}", content=b"x")
    assert r.status_code == 405 and set(r.headers["Allow"].split(",")) == {"HEAD", "GET", "POST", "DELETE"}

    # Names are SHA-256 hex, and the body must hash to the name.
    r = app.post("data/not-a-hash", content=b"x")
    assert r.status_code == 400 and r.json()["code"] == "bad_name"
    assert app.get("data/" + "A" * 64).status_code == 400
    body = os.urandom(5000)
    r = app.post(f"data/{sha(b'something else')}", content=body)
    assert r.status_code == 400 and r.json()["code"] == "digest_mismatch"
    assert app.head(f"data/{sha(b'something else')}").status_code == 404
    assert app.get("data/", headers={"Accept": V2}).json() == []
    r = app.post(f"keys/{sha(body)}", content=body, headers={"Content-Encoding": "gzip"})
    assert r.status_code == 415


def test_range_reads(acme):
    _, c = acme
    app = c["append"]
    body = os.urandom(300_000)
    name = sha(body)
    assert app.post(f"data/{name}", content=body).status_code == 200
    for rng, lo, hi in (("bytes=0-99", 0, 100), ("bytes=1000-199999", 1000, 200000),
                        ("bytes=299990-", 299990, 300000), ("bytes=-10", 299990, 300000),
                        ("bytes=5-5", 5, 6), ("bytes=250000-999999", 250000, 300000)):
        r = app.get(f"data/{name}", headers={"Range": rng})
        assert r.status_code == 206, rng
        assert r.content == body[lo:hi], rng
        assert r.headers["Content-Range"] == f"bytes {lo}-{hi - 1}/{len(body)}"
    assert app.get(f"data/{name}", headers={"Range": "bytes=300000-"}).status_code == 416
    assert app.get(f"data/{name}").headers["Accept-Ranges"] == "bytes"


def test_large_pack_streams_both_ways(acme):
    """A pack above stream_threshold_bytes (8 MiB) goes to disk as it arrives and back in windows."""
    server, c = acme
    full = c["full"]
    body = os.urandom(21 << 20)
    name = sha(body)
    assert full.post(f"data/{name}", content=body).status_code == 200
    r = full.get(f"data/{name}")
    assert r.status_code == 200 and r.headers["Content-Length"] == str(len(body)) and r.content == body
    lo, hi = (4 << 20) - 7, (13 << 20) + 5  # crosses two window boundaries
    r = full.get(f"data/{name}", headers={"Range": f"bytes={lo}-{hi - 1}"})
    assert r.status_code == 206 and r.content == body[lo:hi]
    # A retried upload of the same large file is verified while streaming, then a no-op.
    assert c["append"].post(f"data/{name}", content=body).status_code == 200
    bad = bytearray(body)
    bad[-1] ^= 1
    assert c["append"].post(f"data/{name}", content=bytes(bad)).status_code == 400
    assert server.admin.get("/v1/vaults/acme").json()["usage"]["stored_bytes"] == len(body)


def test_restic_names_cannot_be_planted_through_the_native_api(acme):
    """A restic data file's bytes hash to its name whatever route was tried:
    the native API cannot name some other chunk restic/data/<X>."""
    server, c = acme
    genuine = os.urandom(5000)
    x = sha(genuine)
    append = server.client(server.create_key("acme", "append"))
    other = server.put_chunk(append, "acme", b"some other bytes")
    for who in (append, server.admin):
        for key in (f"restic/data/{x}", "restic/config", f"restic/index/{x}", "restic/x"):
            r = who.put(f"/v1/vaults/acme/objects/{key}", json={"chunks": [other]})
            assert r.status_code == 403 and r.json()["code"] == "reserved_key", (key, r.text)
    assert c["read"].get(f"data/{x}").status_code == 404
    # The genuine upload of X's bytes with an append key then succeeds.
    assert c["append"].post(f"data/{x}", content=genuine).status_code == 200
    assert c["read"].get(f"data/{x}").content == genuine
    # Reading restic's files through the native API still works.
    assert server.admin.get(f"/v1/vaults/acme/objects/restic/data/{x}").json()["chunks"] == [x]


def test_roles_append_key_and_overwrites(acme):
    server, c = acme
    app, full, read = c["append"], c["full"], c["read"]
    files = {kind: os.urandom(1000) for kind in ("data", "keys", "locks", "snapshots", "index")}
    for kind, b in files.items():
        assert read.post(f"{kind}/{sha(b)}", content=b).status_code == 403
        assert app.post(f"{kind}/{sha(b)}", content=b).status_code == 200
        # A retry with the same bytes succeeds even for an append key.
        assert app.post(f"{kind}/{sha(b)}", content=b).status_code == 200
        # ... but only with the same bytes.
        r = app.post(f"{kind}/{sha(b)}", content=b"not it")
        assert r.status_code == 400
    for kind, b in files.items():
        r = app.delete(f"{kind}/{sha(b)}")
        if kind == "locks":
            assert r.status_code == 200
            assert app.head(f"locks/{sha(b)}").status_code == 404
        else:
            assert r.status_code == 403, kind
            assert app.head(f"{kind}/{sha(b)}").status_code == 200
        assert read.delete(f"{kind}/{sha(b)}").status_code == 403
    assert full.delete(f"data/{sha(files['data'])}").status_code == 200
    assert full.get(f"data/{sha(files['data'])}").status_code == 404
    assert full.delete(f"data/{sha(files['data'])}").status_code == 404
    # The admin token works too (Bearer), as a full key.
    admin = httpx.Client(base_url=f"{server.url}/restic/acme/",
                         headers={"Authorization": f"Bearer {server.admin_token}"})
    with admin:
        assert admin.delete(f"index/{sha(files['index'])}").status_code == 200


def test_append_only_vault(server):
    server.create_vault("locked", append_only=True)
    full = repo(server, "locked", server.create_key("locked", "full"))
    assert full.post("?create=true").status_code == 200
    cfg = os.urandom(200)
    assert full.post("config", content=cfg).status_code == 200
    assert full.post("config", content=b"new").status_code == 403
    assert full.delete("config").status_code == 403
    data, lock = os.urandom(2000), os.urandom(300)
    assert full.post(f"data/{sha(data)}", content=data).status_code == 200
    assert full.post(f"locks/{sha(lock)}", content=lock).status_code == 200
    r = full.delete(f"data/{sha(data)}")
    assert r.status_code == 403 and r.json()["code"] == "append_only"
    assert full.head(f"data/{sha(data)}").status_code == 200
    # Locks are not backup data: restic must be able to remove its own.
    assert full.delete(f"locks/{sha(lock)}").status_code == 200
    assert full.get("locks/").json() == []


def test_auth(acme):
    server, c = acme
    anon = repo(server, "acme", None)
    for method, path in (("GET", "config"), ("POST", "?create=true"), ("GET", "data/"),
                         ("HEAD", f"data/{sha(b'x')}"), ("DELETE", f"locks/{sha(b'x')}")):
        r = anon.request(method, path)
        assert r.status_code == 401, (method, path)
        assert "Basic" in r.headers["WWW-Authenticate"]
    assert repo(server, "acme", "ovk_wrong_secret").get("data/").status_code == 401

    # A key of another vault gets exactly what a vault that does not exist gets.
    server.create_vault("other")
    other_key = server.create_key("other", "full")
    body = os.urandom(100)
    for method, path in (("GET", "config"), ("GET", "data/"), ("POST", f"data/{sha(body)}"),
                         ("DELETE", f"data/{sha(body)}"), ("POST", "?create=true"), ("PUT", "config")):
        theirs = repo(server, "acme", other_key).request(method, path, content=body)
        nobody = repo(server, "nosuchvault", other_key).request(method, path, content=body)
        assert theirs.status_code == nobody.status_code == 404, (method, path)
        assert theirs.json()["code"] == nobody.json()["code"]
    assert c["full"].get("data/").json() == []
    assert repo(server, "Bad_Name", other_key).get("data/").status_code == 400


def test_quota_is_507(server):
    server.create_vault("small", quota_bytes=10_000)
    full = repo(server, "small", server.create_key("small", "full"))
    ok = os.urandom(6000)
    assert full.post(f"data/{sha(ok)}", content=ok).status_code == 200
    big = os.urandom(6000)
    r = full.post(f"data/{sha(big)}", content=big)
    assert r.status_code == 507 and r.json()["code"] == "quota_exceeded"
    assert full.head(f"data/{sha(big)}").status_code == 404
    # Deduplicated bytes cost nothing: the same content under another type fits.
    assert full.post(f"index/{sha(ok)}", content=ok).status_code == 200
