"""Contract tests (API.md, "Objects" and "Names"): manifests of chunks, keys, listing, locks."""

from __future__ import annotations

import base64
import concurrent.futures
import json
import os
import unicodedata
import uuid
from datetime import datetime
from urllib.parse import quote

import httpx
import pytest

from tests.apihelpers import admin_of, assert_problem, create_key, create_vault, raw_request  # noqa: F401
from tests.server import Server, sha


def uniq(prefix: str = "o") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def usage(admin, vault: str) -> dict:
    return admin.get(f"/v1/vaults/{vault}").json()["usage"]


def raw(srv: Server, method: str, path: str, body: dict | None = None, secret: str | None = None,
        headers: dict | None = None) -> tuple[int, bytes]:
    """Send ``path`` exactly as given, with ``body`` as JSON: ``(status, body)``."""
    data = None if body is None else json.dumps(body).encode()
    status, _, answer = raw_request(srv, method, path, data, headers=headers, secret=secret)
    return status, answer


def enc(key: str) -> str:
    """Percent-encode a key for the path, keeping '/' as the separator."""
    return quote(key, safe="/")


@pytest.fixture
def vault(srv) -> str:
    name = uniq()
    create_vault(srv, name)
    return name


def chunks(srv: Server, vault: str, *sizes: int) -> list[str]:
    c = srv.client(verify=False)
    return [srv.put_chunk(c, vault, os.urandom(n)) for n in sizes]


# -- PUT -----------------------------------------------------------------------------------


def test_put_object(srv, admin, vault):
    a, b, c = chunks(srv, vault, 100, 2000, 30000)
    r = admin.put(f"/v1/vaults/{vault}/objects/backups/day1.tar", json={"chunks": [a, b, a, c, a]})
    assert r.status_code == 201, r.text
    body = r.json()
    assert set(body) == {"key", "size", "chunks"}
    assert body["key"] == "backups/day1.tar"
    assert body["size"] == 100 * 3 + 2000 + 30000
    assert body["chunks"] in (5, [a, b, a, c, a])


def test_get_object(srv, admin, vault):
    a, b = chunks(srv, vault, 10, 20)
    meta = os.urandom(300)
    r = admin.put(f"/v1/vaults/{vault}/objects/x/y", json={"chunks": [b, a, b], "meta": base64.b64encode(meta).decode()})
    assert r.status_code == 201
    for c in (admin, srv.client(create_key(srv, vault, "read"), verify=False)):
        r = c.get(f"/v1/vaults/{vault}/objects/x/y")
        assert r.status_code == 200, r.text
        doc = r.json()
        assert set(doc) == {"key", "size", "chunks", "meta", "created"}
        assert doc["key"] == "x/y"
        assert doc["size"] == 50
        assert doc["chunks"] == [b, a, b]
        assert base64.b64decode(doc["meta"]) == meta
        datetime.fromisoformat(doc["created"].replace("Z", "+00:00"))


def test_object_without_meta(srv, admin, vault):
    (a,) = chunks(srv, vault, 10)
    assert admin.put(f"/v1/vaults/{vault}/objects/k", json={"chunks": [a]}).status_code == 201
    doc = admin.get(f"/v1/vaults/{vault}/objects/k").json()
    assert doc["meta"] in ("", None)


def test_empty_object(srv, admin, vault):
    r = admin.put(f"/v1/vaults/{vault}/objects/empty", json={"chunks": []})
    assert r.status_code == 201, r.text
    assert r.json()["size"] == 0
    assert admin.get(f"/v1/vaults/{vault}/objects/empty").json()["chunks"] == []
    assert usage(admin, vault)["objects"] == 1


def test_size_counts_repeats(srv, admin, vault):
    (a,) = chunks(srv, vault, 4096)
    r = admin.put(f"/v1/vaults/{vault}/objects/rep", json={"chunks": [a] * 1000})
    assert r.status_code == 201
    assert r.json()["size"] == 4096 * 1000
    assert usage(admin, vault) == {"stored_bytes": 4096, "logical_bytes": 4096 * 1000, "chunks": 1, "objects": 1}


def test_missing_chunks(srv, admin, vault):
    a, b = chunks(srv, vault, 10, 20)
    absent = [sha(f"absent {i}".encode()) for i in range(3)]
    before = usage(admin, vault)
    r = admin.put(f"/v1/vaults/{vault}/objects/m", json={"chunks": [a, absent[0], b, absent[1], absent[0], absent[2]]})
    body = assert_problem(r, 409, "missing_chunks")
    assert sorted(set(body["missing"])) == sorted(absent)
    assert len(body["missing"]) == len(set(body["missing"]))
    assert_problem(admin.get(f"/v1/vaults/{vault}/objects/m"), 404, "no_such_object")
    assert usage(admin, vault) == before
    # a chunk of another vault does not count
    other = uniq()
    create_vault(srv, other)
    (foreign,) = chunks(srv, other, 33)
    body = assert_problem(admin.put(f"/v1/vaults/{vault}/objects/m", json={"chunks": [a, foreign]}), 409,
                          "missing_chunks")
    assert body["missing"] == [foreign]


def test_missing_chunks_on_overwrite_keeps_the_old_version(srv, admin, vault):
    (a,) = chunks(srv, vault, 10)
    assert admin.put(f"/v1/vaults/{vault}/objects/k", json={"chunks": [a]}).status_code == 201
    before = usage(admin, vault)
    absent = sha(b"not here")
    assert_problem(admin.put(f"/v1/vaults/{vault}/objects/k", json={"chunks": [absent]}), 409, "missing_chunks")
    assert admin.get(f"/v1/vaults/{vault}/objects/k").json()["chunks"] == [a]
    assert usage(admin, vault) == before


def test_if_none_match(srv, admin, vault):
    a, b = chunks(srv, vault, 10, 20)
    r = admin.put(f"/v1/vaults/{vault}/objects/k", json={"chunks": [a]}, headers={"If-None-Match": "*"})
    assert r.status_code == 201, r.text
    before = usage(admin, vault)
    r = admin.put(f"/v1/vaults/{vault}/objects/k", json={"chunks": [b]}, headers={"If-None-Match": "*"})
    assert_problem(r, 412)
    c = srv.client(create_key(srv, vault, "full"), verify=False)
    assert_problem(c.put(f"/v1/vaults/{vault}/objects/k", json={"chunks": [b]}, headers={"If-None-Match": "*"}), 412)
    assert admin.get(f"/v1/vaults/{vault}/objects/k").json()["chunks"] == [a]
    assert usage(admin, vault) == before


def test_overwrite_with_full_key(srv, admin, vault):
    a, b, c = chunks(srv, vault, 100, 1000, 10000)
    k = srv.client(create_key(srv, vault, "full"), verify=False)
    assert k.put(f"/v1/vaults/{vault}/objects/o", json={"chunks": [a, a, b]}).status_code == 201
    assert usage(admin, vault) == {"stored_bytes": 11100, "logical_bytes": 1200, "chunks": 3, "objects": 1}
    r = k.put(f"/v1/vaults/{vault}/objects/o", json={"chunks": [c, b]})
    assert r.status_code == 201, r.text
    assert r.json()["size"] == 11000
    assert usage(admin, vault) == {"stored_bytes": 11100, "logical_bytes": 11000, "chunks": 3, "objects": 1}
    assert admin.get(f"/v1/vaults/{vault}/objects/o").json()["chunks"] == [c, b]
    # a second object sharing chunks
    assert k.put(f"/v1/vaults/{vault}/objects/p", json={"chunks": [b, b]}).status_code == 201
    assert usage(admin, vault) == {"stored_bytes": 11100, "logical_bytes": 13000, "chunks": 3, "objects": 2}
    assert k.delete(f"/v1/vaults/{vault}/objects/o").status_code == 204
    assert usage(admin, vault) == {"stored_bytes": 11100, "logical_bytes": 2000, "chunks": 3, "objects": 1}
    assert k.delete(f"/v1/vaults/{vault}/objects/p").status_code == 204
    assert usage(admin, vault)["logical_bytes"] == 0 and usage(admin, vault)["objects"] == 0
    # the chunks themselves stay until GC
    assert admin.head(f"/v1/vaults/{vault}/chunks/{a}").status_code == 200


def test_overwrite_with_append_key_is_403(srv, admin, vault):
    a, b = chunks(srv, vault, 10, 20)
    k = srv.client(create_key(srv, vault, "append"), verify=False)
    assert k.put(f"/v1/vaults/{vault}/objects/o", json={"chunks": [a]}).status_code == 201
    assert_problem(k.put(f"/v1/vaults/{vault}/objects/o", json={"chunks": [b]}), 403)
    assert admin.get(f"/v1/vaults/{vault}/objects/o").json()["chunks"] == [a]
    assert usage(admin, vault)["logical_bytes"] == 10


def test_head_object(srv, admin, vault):
    (a,) = chunks(srv, vault, 10)
    admin.put(f"/v1/vaults/{vault}/objects/h", json={"chunks": [a]})
    r = admin.head(f"/v1/vaults/{vault}/objects/h")
    assert r.status_code == 200 and r.content == b""
    r = admin.head(f"/v1/vaults/{vault}/objects/nope")
    assert r.status_code == 404 and r.content == b""
    assert admin.get(f"/v1/vaults/{vault}/objects/h").status_code == 200


def test_delete_object(srv, admin, vault):
    (a,) = chunks(srv, vault, 10)
    admin.put(f"/v1/vaults/{vault}/objects/d", json={"chunks": [a]})
    r = admin.delete(f"/v1/vaults/{vault}/objects/d")
    assert r.status_code == 204 and r.content == b""
    assert_problem(admin.get(f"/v1/vaults/{vault}/objects/d"), 404, "no_such_object")
    assert admin.head(f"/v1/vaults/{vault}/objects/d").status_code == 404
    assert_problem(admin.delete(f"/v1/vaults/{vault}/objects/d"), 404, "no_such_object")
    # it can be created again
    assert admin.put(f"/v1/vaults/{vault}/objects/d", json={"chunks": [a]},
                     headers={"If-None-Match": "*"}).status_code == 201


def test_same_key_in_two_vaults(srv, admin):
    v1, v2 = uniq(), uniq()
    create_vault(srv, v1)
    create_vault(srv, v2)
    (a,) = chunks(srv, v1, 10)
    (b,) = chunks(srv, v2, 20)
    assert admin.put(f"/v1/vaults/{v1}/objects/k", json={"chunks": [a]}).status_code == 201
    assert admin.put(f"/v1/vaults/{v2}/objects/k", json={"chunks": [b]}, headers={"If-None-Match": "*"}).status_code == 201
    assert admin.get(f"/v1/vaults/{v1}/objects/k").json()["size"] == 10
    assert admin.get(f"/v1/vaults/{v2}/objects/k").json()["size"] == 20


@pytest.mark.parametrize("body,code", [
    ({}, None),
    ({"chunks": "abc"}, None),
    ({"chunks": None}, None),
    ({"chunks": {"a": 1}}, None),
    ({"chunks": ["A" * 64]}, "bad_name"),
    ({"chunks": ["0" * 63]}, "bad_name"),
    ({"chunks": ["0" * 64 + "\n"]}, "bad_name"),
    ({"chunks": [5]}, None),
    ({"chunks": [], "colour": "red"}, None),
    ({"chunks": [], "meta": "!!!not base64!!!"}, None),
    ({"chunks": [], "meta": "abc"}, None),          # bad padding
    ({"chunks": [], "meta": 5}, None),
    ({"chunks": [], "meta": ["x"]}, None),
])
def test_put_object_bad_body(srv, admin, vault, body, code):
    r = admin.put(f"/v1/vaults/{vault}/objects/bad", json=body)
    assert_problem(r, 400, code)
    assert admin.get(f"/v1/vaults/{vault}/objects/bad").status_code == 404
    assert usage(admin, vault)["objects"] == 0


@pytest.mark.parametrize("content", [b"{", b"chunks=1", b'{"chunks": [}', b"\xff"])
def test_put_object_malformed_json(srv, admin, vault, content):
    r = admin.put(f"/v1/vaults/{vault}/objects/bad", content=content, headers={"Content-Type": "application/json"})
    assert_problem(r, 400, "bad_json")
    assert admin.get(f"/v1/vaults/{vault}/objects/bad").status_code == 404


def test_put_object_json_array(srv, admin, vault):
    r = admin.put(f"/v1/vaults/{vault}/objects/bad", json=[])
    assert_problem(r, 400)


@pytest.mark.parametrize("meta", [b"", b"\0", os.urandom(1), os.urandom(1000), os.urandom(60000)])
def test_meta_round_trip(srv, admin, vault, meta):
    (a,) = chunks(srv, vault, 1)
    r = admin.put(f"/v1/vaults/{vault}/objects/m", json={"chunks": [a], "meta": base64.b64encode(meta).decode()})
    assert r.status_code == 201, r.text
    assert base64.b64decode(admin.get(f"/v1/vaults/{vault}/objects/m").json()["meta"]) == meta


def _parallel(srv: Server, n: int, fn):
    def run(i):
        with httpx.Client(base_url=srv.url, timeout=30, verify=False,
                          headers={"Authorization": f"Bearer {srv.admin_token}"}) as c:
            return fn(c, i)

    with concurrent.futures.ThreadPoolExecutor(n) as pool:
        return list(pool.map(run, range(n)))


def test_concurrent_if_none_match_has_one_winner(srv, admin, vault):
    ids = chunks(srv, vault, *[100 + i for i in range(10)])
    statuses = _parallel(srv, 10, lambda c, i: c.put(f"/v1/vaults/{vault}/objects/race", json={"chunks": [ids[i]]},
                                                      headers={"If-None-Match": "*"}).status_code)
    assert sorted(statuses) == [201] + [412] * 9, statuses
    doc = admin.get(f"/v1/vaults/{vault}/objects/race").json()
    assert doc["size"] == 100 + statuses.index(201)
    assert usage(admin, vault)["objects"] == 1
    assert usage(admin, vault)["logical_bytes"] == doc["size"]


def test_concurrent_overwrites_keep_usage_exact(srv, admin, vault):
    ids = chunks(srv, vault, *[1000 * (i + 1) for i in range(8)])

    def work(c, i):
        out = []
        for j in range(6):
            refs = [ids[(i + j) % 8]] * (1 + (i + j) % 3)
            out.append(c.put(f"/v1/vaults/{vault}/objects/shared", json={"chunks": refs}).status_code)
            out.append(c.put(f"/v1/vaults/{vault}/objects/own-{i}", json={"chunks": refs}).status_code)
        return out

    results = _parallel(srv, 8, work)
    assert all(st == 201 for r in results for st in r), results
    listed = admin.get(f"/v1/vaults/{vault}/objects").json()["objects"]
    assert len(listed) == 9
    u = usage(admin, vault)
    assert u["objects"] == 9
    assert u["logical_bytes"] == sum(o["size"] for o in listed)
    for o in listed:
        doc = admin.get(f"/v1/vaults/{vault}/objects/{o['key']}").json()
        assert doc["size"] == o["size"] == len(doc["chunks"]) * (ids.index(doc["chunks"][0]) + 1) * 1000


# -- object keys ---------------------------------------------------------------------------


GOOD_KEYS = [
    "a",
    "dir/sub/file.txt",
    "with space",
    "é",                                   # NFC
    "日本語/ファイル",
    "emoji 😀",
    "...",                                 # not '.' or '..'
    ".hidden",
    "a/.b/..c/c..",
    "x" * 1024,                            # 1024 bytes
    "é" * 512,                             # 1024 bytes of UTF-8
    "a%2Fb",                               # a literal percent sign
    "100%",
    "q?x=1&y=2#frag",
    "+plus+",
]


@pytest.mark.parametrize("key", GOOD_KEYS, ids=lambda k: k[:30])
def test_good_object_keys(srv, admin, vault, key):
    (a,) = chunks(srv, vault, 5)
    path = f"/v1/vaults/{vault}/objects/{enc(key)}"
    status, body = raw(srv, "PUT", path, {"chunks": [a]})
    assert status == 201, body
    assert json.loads(body)["key"] == key
    status, body = raw(srv, "GET", path)
    assert status == 200 and json.loads(body)["key"] == key
    assert raw(srv, "HEAD", path)[0] == 200
    listed = admin.get(f"/v1/vaults/{vault}/objects").json()["objects"]
    assert [o["key"] for o in listed] == [key]
    assert raw(srv, "DELETE", path)[0] == 204
    assert admin.get(f"/v1/vaults/{vault}/objects").json()["objects"] == []


BAD_KEYS = [
    ("non-NFC", "e%CC%81"),
    ("non-NFC inner", "dir/cafe%CC%81/x"),
    ("NUL", "x%00"),
    ("SOH", "%01x"),
    ("LF", "x%0A"),
    ("LF inner", "a%0Ab"),
    ("CR", "a%0Db"),
    ("TAB", "a%09b"),
    ("US", "a%1F"),
    ("DEL", "a%7F"),
    ("C1 NEL", "a%C2%85"),
    ("leading slash", "%2Fabc"),
    ("leading slash raw", "/abc"),
    ("dotdot", ".."),
    ("dot", "."),
    ("dotdot encoded", "%2E%2E"),
    ("dotdot inner", "a/../b"),
    ("dotdot inner encoded", "a/%2E%2E/b"),
    ("dotdot via %2F", "a%2F..%2Fb"),
    ("dot inner", "a/./b"),
    ("dotdot last", "a/.."),
    ("empty inner", "a//b"),
    ("empty inner %2F", "a%2F%2Fb"),
    ("empty last", "a/"),
    ("1025 bytes", "x" * 1025),
    ("1025 bytes utf8", "%C3%A9" * 512 + "x"),
    ("not utf8", "%FF"),
    ("lone surrogate", "%ED%A0%80"),
    ("overlong", "%C0%AF"),
]


@pytest.mark.parametrize("name,key", BAD_KEYS, ids=[n for n, _ in BAD_KEYS])
def test_bad_object_keys(srv, admin, vault, name, key):
    (a,) = chunks(srv, vault, 5)
    path = f"/v1/vaults/{vault}/objects/{key}"
    for method, body in (("PUT", {"chunks": [a]}), ("GET", None), ("HEAD", None), ("DELETE", None)):
        status, data = raw(srv, method, path, body)
        assert status == 400, (method, name, status, data)
        if method != "HEAD":
            assert json.loads(data)["code"] == "bad_name", data
    assert admin.get(f"/v1/vaults/{vault}/objects").json()["objects"] == []
    assert usage(admin, vault)["objects"] == 0


def test_key_is_percent_decoded_exactly_once(srv, admin, vault):
    (a,) = chunks(srv, vault, 5)
    status, body = raw(srv, "PUT", f"/v1/vaults/{vault}/objects/a%252Fb", {"chunks": [a]})
    assert status == 201
    assert json.loads(body)["key"] == "a%2Fb"
    assert [o["key"] for o in admin.get(f"/v1/vaults/{vault}/objects").json()["objects"]] == ["a%2Fb"]
    status, body = raw(srv, "GET", f"/v1/vaults/{vault}/objects/a%252Fb")
    assert status == 200 and json.loads(body)["key"] == "a%2Fb"
    # 'a%2Fb' in the path is the key 'a/b', a different object
    assert raw(srv, "GET", f"/v1/vaults/{vault}/objects/a%2Fb")[0] == 404
    assert raw(srv, "GET", f"/v1/vaults/{vault}/objects/a/b")[0] == 404
    status, body = raw(srv, "PUT", f"/v1/vaults/{vault}/objects/a%2Fb", {"chunks": [a]})
    assert status == 201 and json.loads(body)["key"] == "a/b"
    assert raw(srv, "GET", f"/v1/vaults/{vault}/objects/a/b")[0] == 200
    assert sorted(o["key"] for o in admin.get(f"/v1/vaults/{vault}/objects").json()["objects"]) == ["a%2Fb", "a/b"]


def test_percent_decoding_before_authorization(srv, admin):
    mine, theirs = uniq(), uniq()
    create_vault(srv, mine)
    create_vault(srv, theirs)
    (a,) = chunks(srv, theirs, 5)
    admin.put(f"/v1/vaults/{theirs}/objects/secret", json={"chunks": [a]})
    key = create_key(srv, mine, "full")
    # an encoded name of the own vault is the own vault
    encoded_mine = "".join(f"%{b:02x}" for b in mine.encode())
    status, body = raw(srv, "GET", f"/v1/vaults/{encoded_mine}/objects", secret=key)
    assert status == 200, body
    # tricks that would reach the other vault after a second decoding are only names
    for path in (f"/v1/vaults/{mine}%2F..%2F{theirs}/objects/secret",
                 f"/v1/vaults/{mine}/objects/..%2F..%2F{theirs}%2Fobjects%2Fsecret",
                 f"/v1/vaults/{mine}/objects/%2E%2E/%2E%2E/{theirs}/objects/secret"):
        status, body = raw(srv, "GET", path, secret=key)
        assert status == 400, (path, body)
        assert json.loads(body)["code"] == "bad_name"
    status, body = raw(srv, "GET", f"/v1/vaults/{mine}/objects/..%252F{theirs}", secret=key)
    assert status == 404  # a literal key '..%2F<vault>' that does not exist


def test_unicode_keys_are_stored_as_sent(srv, admin, vault):
    (a,) = chunks(srv, vault, 5)
    nfc = unicodedata.normalize("NFC", "Ångström/naïve café")
    status, _ = raw(srv, "PUT", f"/v1/vaults/{vault}/objects/{enc(nfc)}", {"chunks": [a]})
    assert status == 201
    assert admin.get(f"/v1/vaults/{vault}/objects").json()["objects"][0]["key"] == nfc
    nfd = unicodedata.normalize("NFD", nfc)
    status, body = raw(srv, "GET", f"/v1/vaults/{vault}/objects/{enc(nfd)}")
    assert status == 400 and json.loads(body)["code"] == "bad_name"


# -- list ------------------------------------------------------------------------------------


LIST_KEYS = ["a/1", "a/2", "a/3", "a0", "b/1", "b/2/x", "c", "é/1"]


@pytest.fixture
def listed(srv, admin, vault):
    (a,) = chunks(srv, vault, 7)
    for k in reversed(LIST_KEYS):
        assert raw(srv, "PUT", f"/v1/vaults/{vault}/objects/{enc(k)}", {"chunks": [a, a]})[0] == 201
    return vault


def test_list_all(admin, listed):
    r = admin.get(f"/v1/vaults/{listed}/objects")
    assert r.status_code == 200
    body = r.json()
    assert set(body) == {"objects", "next"}
    assert [o["key"] for o in body["objects"]] == sorted(LIST_KEYS, key=lambda k: k.encode())
    assert body["next"] is None
    for o in body["objects"]:
        assert set(o) == {"key", "size", "created"}
        assert o["size"] == 14
        datetime.fromisoformat(o["created"].replace("Z", "+00:00"))


@pytest.mark.parametrize("params,expected", [
    ({"prefix": "a/"}, ["a/1", "a/2", "a/3"]),
    ({"prefix": "a"}, ["a/1", "a/2", "a/3", "a0"]),
    ({"prefix": "b/2/"}, ["b/2/x"]),
    ({"prefix": "é"}, ["é/1"]),
    ({"prefix": "zzz"}, []),
    ({"start_after": "a/2"}, ["a/3", "a0", "b/1", "b/2/x", "c", "é/1"]),
    ({"start_after": "a/25"}, ["a/3", "a0", "b/1", "b/2/x", "c", "é/1"]),
    ({"start_after": "c"}, ["é/1"]),
    ({"start_after": "é/1"}, []),
    ({"prefix": "a/", "start_after": "a/1"}, ["a/2", "a/3"]),
    ({"prefix": "b", "start_after": "a"}, ["b/1", "b/2/x"]),
    ({"prefix": "a/", "start_after": "b"}, []),
])
def test_list_prefix_start_after(admin, listed, params, expected):
    r = admin.get(f"/v1/vaults/{listed}/objects", params=params)
    assert r.status_code == 200, r.text
    assert [o["key"] for o in r.json()["objects"]] == expected
    assert r.json()["next"] is None


@pytest.mark.parametrize("limit", [1, 2, 3, 7, 8])
def test_list_pagination(admin, listed, limit):
    seen, start, pages = [], None, 0
    while True:
        params = {"limit": limit}
        if start is not None:
            params["start_after"] = start
        body = admin.get(f"/v1/vaults/{listed}/objects", params=params).json()
        pages += 1
        assert len(body["objects"]) <= limit
        seen += [o["key"] for o in body["objects"]]
        if body["next"] is None:
            break
        assert len(body["objects"]) == limit
        assert body["next"] == body["objects"][-1]["key"]
        start = body["next"]
        assert pages < 20
    assert seen == sorted(LIST_KEYS, key=lambda k: k.encode())
    assert pages in (-(-len(LIST_KEYS) // limit), -(-len(LIST_KEYS) // limit) + 1)


def test_list_pagination_with_prefix(admin, listed):
    body = admin.get(f"/v1/vaults/{listed}/objects", params={"prefix": "a", "limit": 3}).json()
    assert [o["key"] for o in body["objects"]] == ["a/1", "a/2", "a/3"]
    assert body["next"] == "a/3"
    body = admin.get(f"/v1/vaults/{listed}/objects", params={"prefix": "a", "limit": 3,
                                                             "start_after": body["next"]}).json()
    assert [o["key"] for o in body["objects"]] == ["a0"]
    assert body["next"] is None


@pytest.mark.parametrize("limit", ["0", "-1", "x", "1.5", "100001"])
def test_list_bad_limit(admin, listed, limit):
    assert_problem(admin.get(f"/v1/vaults/{listed}/objects", params={"limit": limit}), 400)


def test_list_empty_vault(admin, vault):
    assert admin.get(f"/v1/vaults/{vault}/objects").json() == {"objects": [], "next": None}


def test_list_missing_vault(admin):
    assert_problem(admin.get(f"/v1/vaults/{uniq('nope')}/objects"), 404, "no_such_vault")


# -- locks -------------------------------------------------------------------------------------


def test_append_only_vault(srv, admin):
    vault = uniq()
    create_vault(srv, vault, append_only=True)
    a, b = chunks(srv, vault, 10, 20)
    full = srv.client(create_key(srv, vault, "full"), verify=False)
    assert full.put(f"/v1/vaults/{vault}/objects/o", json={"chunks": [a]}).status_code == 201
    for c in (full, admin):
        assert_problem(c.put(f"/v1/vaults/{vault}/objects/o", json={"chunks": [b]}), 403, "append_only")
        assert_problem(c.delete(f"/v1/vaults/{vault}/objects/o"), 403, "append_only")
    assert admin.get(f"/v1/vaults/{vault}/objects/o").json()["chunks"] == [a]
    assert usage(admin, vault)["objects"] == 1
    # new keys are still fine
    assert full.put(f"/v1/vaults/{vault}/objects/p", json={"chunks": [b]}).status_code == 201
    # lifting the lock (admin) allows deletes again
    assert admin.patch(f"/v1/vaults/{vault}", json={"append_only": False}).status_code == 200
    assert full.delete(f"/v1/vaults/{vault}/objects/o").status_code == 204


def test_retention(srv, admin):
    vault = uniq()
    create_vault(srv, vault, retention_days=1)
    a, b = chunks(srv, vault, 10, 20)
    full = srv.client(create_key(srv, vault, "full"), verify=False)
    assert full.put(f"/v1/vaults/{vault}/objects/young", json={"chunks": [a]}).status_code == 201
    for c in (full, admin):
        assert_problem(c.delete(f"/v1/vaults/{vault}/objects/young"), 403, "retention")
        assert_problem(c.put(f"/v1/vaults/{vault}/objects/young", json={"chunks": [b]}), 403, "retention")
    assert admin.get(f"/v1/vaults/{vault}/objects/young").json()["chunks"] == [a]


def test_retention_set_later_covers_existing_objects(srv, admin):
    vault = uniq()
    create_vault(srv, vault)
    (a,) = chunks(srv, vault, 10)
    assert admin.put(f"/v1/vaults/{vault}/objects/o", json={"chunks": [a]}).status_code == 201
    assert admin.patch(f"/v1/vaults/{vault}", json={"retention_days": 7}).status_code == 200
    assert_problem(admin.delete(f"/v1/vaults/{vault}/objects/o"), 403, "retention")
    assert admin.patch(f"/v1/vaults/{vault}", json={"retention_days": 0}).status_code == 200
    assert admin.delete(f"/v1/vaults/{vault}/objects/o").status_code == 204


def test_objects_of_missing_vault(admin):
    v = uniq("nope")
    assert_problem(admin.put(f"/v1/vaults/{v}/objects/k", json={"chunks": []}), 404, "no_such_vault")
    assert_problem(admin.get(f"/v1/vaults/{v}/objects/k"), 404, "no_such_vault")
    assert_problem(admin.delete(f"/v1/vaults/{v}/objects/k"), 404, "no_such_vault")
    assert admin.head(f"/v1/vaults/{v}/objects/k").status_code == 404
