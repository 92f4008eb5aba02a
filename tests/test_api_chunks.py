"""Contract tests (API.md, "Chunks"): upload, dedup, download, ranges, HEAD, batch lookup."""

from __future__ import annotations

import concurrent.futures
import gzip
import json
import os
import socket
import ssl
import time
import uuid

import httpx
import pytest

from tests.apihelpers import (SMALL_SEGMENTS, admin_of, assert_problem, create_key, create_vault,  # noqa: F401
                             self_signed)
from tests.server import Server, sha


MiB = 1 << 20


@pytest.fixture(scope="module")
def small_limit(tmp_path_factory):
    """A server whose chunks may be at most 64 KiB."""
    s = Server(tmp_path_factory.mktemp("limit"), env={**SMALL_SEGMENTS, "OBJVAULT_MAX_CHUNK_BYTES": "65536"}).start()
    yield s
    s.stop()


@pytest.fixture(scope="module")
def streaming(tmp_path_factory):
    """A server that streams chunks above 1 MiB into segments of their own."""
    s = Server(tmp_path_factory.mktemp("stream"), env={**SMALL_SEGMENTS, "OBJVAULT_STREAM_THRESHOLD_BYTES": str(MiB)}).start()
    yield s
    s.stop()


def uniq(prefix: str = "c") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def new_vault(srv: Server, **fields) -> str:
    name = uniq()
    create_vault(srv, name, **fields)
    return name


def usage(srv: Server, vault: str) -> dict:
    r = srv.client(verify=False).get(f"/v1/vaults/{vault}")
    assert r.status_code == 200, r.text
    return r.json()["usage"]


def raw_exchange(srv: Server, head: bytes, body: bytes, half_close: bool = True,
                 timeout: float = 15) -> tuple[int | None, dict, bytes]:
    """Send a hand-made request, optionally half-close, and read the answer until EOF."""
    with socket.create_connection(("127.0.0.1", srv.port), timeout=timeout) as so:
        so.sendall(head + body)
        if half_close:
            so.shutdown(socket.SHUT_WR)
        buf = b""
        try:
            while True:
                d = so.recv(65536)
                if not d:
                    break
                buf += d
                if b"\r\n\r\n" in buf:
                    hdr, _, rest = buf.partition(b"\r\n\r\n")
                    for line in hdr.split(b"\r\n")[1:]:
                        k, _, v = line.partition(b":")
                        if k.strip().lower() == b"content-length" and len(rest) >= int(v):
                            raise StopIteration
        except (StopIteration, socket.timeout, ConnectionResetError):
            pass
    if not buf:
        return None, {}, b""
    hdr, _, rest = buf.partition(b"\r\n\r\n")
    lines = hdr.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        k, _, v = line.partition(":")
        headers[k.strip().lower()] = v.strip()
    return status, headers, rest


def put_head(srv: Server, vault: str, cid: str, length: int) -> bytes:
    return (f"PUT /v1/vaults/{vault}/chunks/{cid} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            f"Authorization: Bearer {srv.admin_token}\r\nContent-Length: {length}\r\n\r\n").encode()


def no_tmp_files(srv: Server) -> list:
    return [p for d in srv.data_dirs for p in (d / "segments").glob("*.tmp")]


# -- PUT ---------------------------------------------------------------------------------


def test_put_201_then_200_dedup(srv, admin):
    vault = new_vault(srv)
    data = os.urandom(5000)
    cid = sha(data)
    r = admin.put(f"/v1/vaults/{vault}/chunks/{cid}", content=data)
    assert r.status_code == 201, r.text
    assert r.headers["ETag"] == f'"{cid}"'
    r = admin.put(f"/v1/vaults/{vault}/chunks/{cid}", content=data)
    assert r.status_code == 200, r.text
    assert r.headers["ETag"] == f'"{cid}"'
    assert usage(srv, vault) == {"stored_bytes": 5000, "logical_bytes": 0, "chunks": 1, "objects": 0}


def test_put_with_key_roles(srv):
    vault = new_vault(srv)
    for role in ("append", "full"):
        c = srv.client(create_key(srv, vault, role), verify=False)
        data = f"from {role}".encode()
        assert c.put(f"/v1/vaults/{vault}/chunks/{sha(data)}", content=data).status_code == 201
    assert usage(srv, vault)["chunks"] == 2


def test_empty_chunk(srv, admin):
    vault = new_vault(srv)
    cid = sha(b"")
    r = admin.put(f"/v1/vaults/{vault}/chunks/{cid}", content=b"")
    assert r.status_code == 201, r.text
    r = admin.get(f"/v1/vaults/{vault}/chunks/{cid}")
    assert r.status_code == 200 and r.content == b""
    assert admin.head(f"/v1/vaults/{vault}/chunks/{cid}").headers["Content-Length"] == "0"
    assert usage(srv, vault)["chunks"] == 1


def test_dedup_is_per_vault(srv, admin):
    a, b = new_vault(srv), new_vault(srv)
    data = b"shared bytes" * 10
    cid = sha(data)
    assert admin.put(f"/v1/vaults/{a}/chunks/{cid}", content=data).status_code == 201
    assert admin.head(f"/v1/vaults/{b}/chunks/{cid}").status_code == 404
    assert admin.post(f"/v1/vaults/{b}/chunks/missing", json={"ids": [cid]}).json() == {"missing": [cid]}
    assert admin.put(f"/v1/vaults/{b}/chunks/{cid}", content=data).status_code == 201
    assert usage(srv, a)["stored_bytes"] == usage(srv, b)["stored_bytes"] == len(data)


def test_digest_mismatch_stores_nothing(srv, admin):
    vault = new_vault(srv)
    good = os.urandom(3000)
    cid = sha(good)
    before = usage(srv, vault)
    for body in (b"not the body", good[:-1] + bytes([good[-1] ^ 1]), good + b"x", good[:-1]):
        r = admin.put(f"/v1/vaults/{vault}/chunks/{cid}", content=body)
        assert_problem(r, 400, "digest_mismatch")
    assert admin.head(f"/v1/vaults/{vault}/chunks/{cid}").status_code == 404
    assert_problem(admin.get(f"/v1/vaults/{vault}/chunks/{cid}"), 404, "no_such_chunk")
    assert usage(srv, vault) == before
    # a right body afterwards is stored normally
    assert admin.put(f"/v1/vaults/{vault}/chunks/{cid}", content=good).status_code == 201


def test_empty_body_for_a_nonempty_id_is_a_digest_mismatch(srv, admin):
    """Content-Length: 0 is a complete (empty) body, not a truncated one."""
    vault = new_vault(srv)
    cid = sha(b"something")
    assert_problem(admin.put(f"/v1/vaults/{vault}/chunks/{cid}", content=b""), 400, "digest_mismatch")
    assert admin.head(f"/v1/vaults/{vault}/chunks/{cid}").status_code == 404


def test_digest_mismatch_on_an_existing_chunk(srv, admin):
    vault = new_vault(srv)
    good = b"the real thing" * 50
    cid = srv.put_chunk(admin, vault, good)
    before = usage(srv, vault)
    assert_problem(admin.put(f"/v1/vaults/{vault}/chunks/{cid}", content=b"impostor"), 400, "digest_mismatch")
    assert admin.get(f"/v1/vaults/{vault}/chunks/{cid}").content == good
    assert usage(srv, vault) == before


def test_truncated_body_answers_400(srv):
    vault = new_vault(srv)
    cid = sha(b"0123456789" * 100)
    answers = [raw_exchange(srv, put_head(srv, vault, cid, 1000), b"0123456789") for _ in range(10)]
    statuses = [status for status, _, _ in answers]
    assert statuses == [400] * 10, f"answers to bodies cut short (half-close after 10 of 1000 bytes): {statuses}"
    for _, headers, body in answers:
        assert headers["content-type"].startswith("application/problem+json")
        assert json.loads(body)["code"] == "truncated"


def test_truncated_body_stores_nothing(srv, admin):
    vault = new_vault(srv)
    data = b"0123456789" * 100
    cid = sha(data)
    raw_exchange(srv, put_head(srv, vault, cid, 1000), data[:10])
    assert admin.head(f"/v1/vaults/{vault}/chunks/{cid}").status_code == 404
    assert usage(srv, vault)["chunks"] == 0
    assert admin.get("/healthz").status_code == 200
    # the full body afterwards works
    assert admin.put(f"/v1/vaults/{vault}/chunks/{cid}", content=data).status_code == 201


def test_requests_sent_whole_before_a_half_close_are_answered(srv, admin):
    """A client may end its side once its request is sent (shutdown(SHUT_WR)):
    what came whole is still answered, the stored chunk is durable, and the
    connection closes after the last answer."""
    vault = new_vault(srv)
    data = b"sent whole, then the client half-closed" * 100
    status, _, _ = raw_exchange(srv, put_head(srv, vault, sha(data), len(data)), data)
    assert status == 201
    assert admin.get(f"/v1/vaults/{vault}/chunks/{sha(data)}").content == data
    with socket.create_connection(("127.0.0.1", srv.port), timeout=15) as so:
        so.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n" * 2)
        so.shutdown(socket.SHUT_WR)
        got = b""
        while chunk := so.recv(65536):  # until the server closes
            got += chunk
    assert got.count(b"HTTP/1.1 200 ") == 2, got


def test_without_content_length_is_411(srv, admin):
    vault = new_vault(srv)
    data = b"streamed without a length" * 10

    def gen():
        yield data[:50]
        yield data[50:]

    r = admin.put(f"/v1/vaults/{vault}/chunks/{sha(data)}", content=gen())
    assert r.request.headers.get("Transfer-Encoding") == "chunked"
    assert_problem(r, 411)
    assert admin.head(f"/v1/vaults/{vault}/chunks/{sha(data)}").status_code == 404
    assert usage(srv, vault)["chunks"] == 0


@pytest.mark.parametrize("encoding", ["gzip", "deflate", "identity", "br", "zstd", "x-unknown"])
def test_content_encoding_is_415(srv, admin, encoding):
    vault = new_vault(srv)
    data = b"compress me " * 100
    body = gzip.compress(data) if encoding == "gzip" else data
    r = admin.put(f"/v1/vaults/{vault}/chunks/{sha(data)}", content=body,
                  headers={"Content-Encoding": encoding})
    assert_problem(r, 415)
    assert admin.head(f"/v1/vaults/{vault}/chunks/{sha(data)}").status_code == 404
    assert usage(srv, vault)["chunks"] == 0


def test_too_large(small_limit):
    s = small_limit
    c = s.client(verify=False)
    vault = new_vault(s)
    big = os.urandom(65537)
    r = c.put(f"/v1/vaults/{vault}/chunks/{sha(big)}", content=big)
    assert_problem(r, 413, "too_large")
    c2 = s.client(verify=False)
    assert c2.head(f"/v1/vaults/{vault}/chunks/{sha(big)}").status_code == 404
    assert usage(s, vault) == {"stored_bytes": 0, "logical_bytes": 0, "chunks": 0, "objects": 0}
    # exactly the limit is fine
    ok = os.urandom(65536)
    assert c2.put(f"/v1/vaults/{vault}/chunks/{sha(ok)}", content=ok).status_code == 201
    assert usage(s, vault)["stored_bytes"] == 65536


def test_too_large_declared_length(small_limit):
    """The limit applies to the declared length: the body need not be read."""
    s = small_limit
    vault = new_vault(s)
    cid = sha(b"x" * (1 << 20))
    status, _, body = raw_exchange(s, put_head(s, vault, cid, 1 << 20), b"x" * 100, half_close=False, timeout=5)
    assert status == 413
    assert json.loads(body)["code"] == "too_large"
    assert s.client(verify=False).head(f"/v1/vaults/{vault}/chunks/{cid}").status_code == 404


def test_put_into_missing_vault(srv, admin):
    data = b"orphan"
    assert_problem(admin.put(f"/v1/vaults/{uniq('nope')}/chunks/{sha(data)}", content=data), 404, "no_such_vault")


BAD_IDS = [
    "0" * 63,
    "0" * 65,
    "A" * 64,                         # uppercase hex
    ("ab" * 32).upper(),
    "g" * 64,
    "z",
    "..",
    "%2E%2E",
    "0" * 62 + "%2F",
    "%20" + "0" * 63,
    "0" * 64 + "%0A",                 # a trailing newline is no part of an id
    "0" * 64 + "%20",
    sha(b"x")[:60] + "%41%42%43%44",   # percent-encoded uppercase
]


@pytest.mark.parametrize("cid", BAD_IDS)
def test_bad_chunk_id(srv, admin, cid):
    vault = new_vault(srv)
    path = f"/v1/vaults/{vault}/chunks/{cid}"
    for method in ("PUT", "GET", "HEAD"):
        status, headers, body = _raw(srv, method, path, b"x" if method == "PUT" else None)
        assert status == 400, (method, cid, status, body)
        if method != "HEAD":
            assert json.loads(body)["code"] == "bad_name"
    assert usage(srv, vault)["chunks"] == 0


def _raw(srv: Server, method: str, path: str, body: bytes | None):
    import http.client
    conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=30)
    try:
        conn.request(method, path, body=body, headers={"Authorization": f"Bearer {srv.admin_token}"})
        resp = conn.getresponse()
        return resp.status, dict(resp.getheaders()), resp.read()
    finally:
        conn.close()


def test_percent_encoded_lowercase_id_is_decoded_once(srv, admin):
    vault = new_vault(srv)
    data = b"percent"
    cid = sha(data)
    enc = "".join(f"%{b:02x}" for b in cid.encode())
    status, headers, _ = _raw(srv, "PUT", f"/v1/vaults/{vault}/chunks/{enc}", data)
    assert status == 201
    assert admin.get(f"/v1/vaults/{vault}/chunks/{cid}").content == data


def test_quota(srv, admin):
    vault = new_vault(srv, quota_bytes=1000)
    a, b, c = os.urandom(600), os.urandom(600), os.urandom(400)
    assert admin.put(f"/v1/vaults/{vault}/chunks/{sha(a)}", content=a).status_code == 201
    assert_problem(admin.put(f"/v1/vaults/{vault}/chunks/{sha(b)}", content=b), 507, "quota_exceeded")
    assert admin.head(f"/v1/vaults/{vault}/chunks/{sha(b)}").status_code == 404
    assert admin.put(f"/v1/vaults/{vault}/chunks/{sha(a)}", content=a).status_code == 200  # dedup: no new bytes
    assert admin.put(f"/v1/vaults/{vault}/chunks/{sha(c)}", content=c).status_code == 201  # exactly full
    assert usage(srv, vault) == {"stored_bytes": 1000, "logical_bytes": 0, "chunks": 2, "objects": 0}
    # raising the quota lets it grow again
    assert admin.patch(f"/v1/vaults/{vault}", json={"quota_bytes": 2000}).status_code == 200
    assert admin.put(f"/v1/vaults/{vault}/chunks/{sha(b)}", content=b).status_code == 201


def test_concurrent_identical_uploads_store_once(srv):
    vault = new_vault(srv)
    data = os.urandom(200_000)
    cid = sha(data)

    def put(_):
        with httpx.Client(base_url=srv.url, timeout=30, verify=False,
                          headers={"Authorization": f"Bearer {srv.admin_token}"}) as c:
            return c.put(f"/v1/vaults/{vault}/chunks/{cid}", content=data).status_code

    with concurrent.futures.ThreadPoolExecutor(12) as pool:
        statuses = list(pool.map(put, range(12)))
    assert sorted(statuses) == [200] * 11 + [201], statuses
    assert usage(srv, vault) == {"stored_bytes": len(data), "logical_bytes": 0, "chunks": 1, "objects": 0}
    assert admin_of(srv).get(f"/v1/vaults/{vault}/chunks/{cid}").content == data


# -- GET / HEAD ---------------------------------------------------------------------------


def test_get_chunk(srv, admin):
    vault = new_vault(srv)
    data = os.urandom(200_000)
    cid = srv.put_chunk(admin, vault, data)
    for c in (admin, srv.client(create_key(srv, vault, "read"), verify=False)):
        r = c.get(f"/v1/vaults/{vault}/chunks/{cid}")
        assert r.status_code == 200
        assert r.content == data
        assert r.headers["ETag"] == f'"{cid}"'
        assert int(r.headers["Content-Length"]) == len(data)


def test_get_missing_chunk(srv, admin):
    vault = new_vault(srv)
    assert_problem(admin.get(f"/v1/vaults/{vault}/chunks/{sha(b'absent')}"), 404, "no_such_chunk")


def test_head_chunk(srv, admin):
    vault = new_vault(srv)
    data = os.urandom(12345)
    cid = srv.put_chunk(admin, vault, data)
    r = admin.head(f"/v1/vaults/{vault}/chunks/{cid}")
    assert r.status_code == 200
    assert r.headers["Content-Length"] == "12345"
    assert r.content == b""
    r = admin.head(f"/v1/vaults/{vault}/chunks/{sha(b'absent')}")
    assert r.status_code == 404
    assert r.content == b""
    # the connection is still usable after HEAD answers (no stray body bytes)
    assert admin.get(f"/v1/vaults/{vault}/chunks/{cid}").content == data


RANGE_DATA = bytes(range(100))


@pytest.mark.parametrize("header,start,end", [
    ("bytes=0-9", 0, 10),
    ("bytes=10-", 10, 100),
    ("bytes=-5", 95, 100),
    ("bytes=99-99", 99, 100),
    ("bytes=0-0", 0, 1),
    ("bytes=90-200", 90, 100),
    ("bytes=-500", 0, 100),
    ("bytes=0-", 0, 100),
])
def test_range(srv, admin, header, start, end):
    vault = new_vault(srv)
    cid = srv.put_chunk(admin, vault, RANGE_DATA)
    r = admin.get(f"/v1/vaults/{vault}/chunks/{cid}", headers={"Range": header})
    assert r.status_code == 206, r.text
    assert r.content == RANGE_DATA[start:end]
    assert r.headers["Content-Range"] == f"bytes {start}-{end - 1}/100"
    assert int(r.headers["Content-Length"]) == end - start
    assert r.headers["ETag"] == f'"{cid}"'


@pytest.mark.parametrize("header", ["bytes=100-", "bytes=100-200", "bytes=500-", "bytes=-0"])
def test_unsatisfiable_range(srv, admin, header):
    vault = new_vault(srv)
    cid = srv.put_chunk(admin, vault, RANGE_DATA)
    r = admin.get(f"/v1/vaults/{vault}/chunks/{cid}", headers={"Range": header})
    assert_problem(r, 416)


def test_range_in_a_large_chunk(srv, admin):
    vault = new_vault(srv)
    data = os.urandom(5 * 64 * 1024 + 123)
    cid = srv.put_chunk(admin, vault, data)
    for start, end in [(0, 65536), (65530, 65546), (3 * 65536 + 7, 3 * 65536 + 1000), (len(data) - 200, len(data))]:
        r = admin.get(f"/v1/vaults/{vault}/chunks/{cid}", headers={"Range": f"bytes={start}-{end - 1}"})
        assert r.status_code == 206
        assert r.content == data[start:end]
        assert r.headers["Content-Range"] == f"bytes {start}-{end - 1}/{len(data)}"


# -- missing -------------------------------------------------------------------------------


def test_missing_mixed(srv, admin):
    vault = new_vault(srv)
    present = [srv.put_chunk(admin, vault, f"present {i}".encode()) for i in range(5)]
    absent = [sha(f"absent {i}".encode()) for i in range(7)]
    ids = [x for pair in zip(present + present[:2], absent) for x in pair]
    r = admin.post(f"/v1/vaults/{vault}/chunks/missing", json={"ids": ids})
    assert r.status_code == 200, r.text
    assert sorted(r.json()["missing"]) == sorted(absent)
    assert set(r.json()) == {"missing"}
    # with a read key too
    c = srv.client(create_key(srv, vault, "read"), verify=False)
    assert sorted(c.post(f"/v1/vaults/{vault}/chunks/missing", json={"ids": ids}).json()["missing"]) == sorted(absent)


def test_missing_all_and_none(srv, admin):
    vault = new_vault(srv)
    cid = srv.put_chunk(admin, vault, b"only one")
    assert admin.post(f"/v1/vaults/{vault}/chunks/missing", json={"ids": []}).json() == {"missing": []}
    assert admin.post(f"/v1/vaults/{vault}/chunks/missing", json={"ids": [cid]}).json() == {"missing": []}
    other = sha(b"other")
    assert admin.post(f"/v1/vaults/{vault}/chunks/missing", json={"ids": [other]}).json() == {"missing": [other]}


def test_missing_limit(srv, admin):
    vault = new_vault(srv)
    cid = srv.put_chunk(admin, vault, b"here")
    ids = [sha(i.to_bytes(4, "big")) for i in range(100_000)]
    ids[12345] = cid
    r = admin.post(f"/v1/vaults/{vault}/chunks/missing", json={"ids": ids})
    assert r.status_code == 200, r.text
    missing = r.json()["missing"]
    assert missing == ids[:12345] + ids[12346:]  # in the order asked, across the parallel lookups
    r = admin.post(f"/v1/vaults/{vault}/chunks/missing", json={"ids": ids + [sha(b"one more")]})
    assert_problem(r, 413, "too_large")


@pytest.mark.parametrize("body", [
    {"ids": "0" * 64},
    {"ids": {"a": 1}},
    {"ids": None},
    {"ids": 5},
    {},
    {"chunks": []},
])
def test_missing_ids_not_a_list(srv, admin, body):
    vault = new_vault(srv)
    assert_problem(admin.post(f"/v1/vaults/{vault}/chunks/missing", json=body), 400)


@pytest.mark.parametrize("bad", ["A" * 64, "0" * 63 + "A", "0" * 62 + " a", "0" * 63 + "\u00e9", "0" * 63, "xyz", "",
                                 "0" * 64 + "\n", 5, None, ["0" * 64]])
def test_missing_bad_id(srv, admin, bad):
    vault = new_vault(srv)
    r = admin.post(f"/v1/vaults/{vault}/chunks/missing", json={"ids": [sha(b"fine"), bad]})
    body = assert_problem(r, 400)
    if isinstance(bad, str):
        assert body["code"] == "bad_name"


@pytest.mark.parametrize("content", [b"{", b"[1, 2]", b"\"ids\"", b"ids=1"])
def test_missing_bad_json(srv, admin, content):
    vault = new_vault(srv)
    r = admin.post(f"/v1/vaults/{vault}/chunks/missing", content=content,
                   headers={"Content-Type": "application/json"})
    body = assert_problem(r, 400)
    assert body["code"] in ("bad_json", "bad_request")


# -- usage ---------------------------------------------------------------------------------


def test_usage_is_exact(srv, admin):
    vault = new_vault(srv)
    sizes = [1, 100, 4096, 65536, 65537, 300_000]
    blobs = [os.urandom(n) for n in sizes]
    for b in blobs:
        srv.put_chunk(admin, vault, b)
    for b in blobs[:3]:  # dedup hits change nothing
        assert admin.put(f"/v1/vaults/{vault}/chunks/{sha(b)}", content=b).status_code == 200
    admin.put(f"/v1/vaults/{vault}/chunks/{sha(b'zzz')}", content=b"yyy")  # mismatch
    assert usage(srv, vault) == {"stored_bytes": sum(sizes), "logical_bytes": 0, "chunks": len(sizes),
                                 "objects": 0}


# -- the streamed path (chunks above stream_threshold_bytes) --------------------------------


def test_streamed_chunk_round_trip(streaming):
    s = streaming
    c = s.client(verify=False)
    vault = new_vault(s)
    data = os.urandom(3 * MiB + 17)
    cid = sha(data)
    r = c.put(f"/v1/vaults/{vault}/chunks/{cid}", content=data)
    assert r.status_code == 201, r.text
    assert r.headers["ETag"] == f'"{cid}"'
    r = c.get(f"/v1/vaults/{vault}/chunks/{cid}")
    assert r.status_code == 200 and sha(r.content) == cid
    assert c.head(f"/v1/vaults/{vault}/chunks/{cid}").headers["Content-Length"] == str(len(data))
    r = c.get(f"/v1/vaults/{vault}/chunks/{cid}", headers={"Range": f"bytes={2 * MiB - 5}-{2 * MiB + 5}"})
    assert r.status_code == 206 and r.content == data[2 * MiB - 5:2 * MiB + 6]
    assert c.put(f"/v1/vaults/{vault}/chunks/{cid}", content=data).status_code == 200
    assert usage(s, vault) == {"stored_bytes": len(data), "logical_bytes": 0, "chunks": 1, "objects": 0}
    # survives a restart
    s.restart()
    c = s.client(verify=False)
    assert sha(c.get(f"/v1/vaults/{vault}/chunks/{cid}").content) == cid


def test_streamed_digest_mismatch_stores_nothing(streaming):
    s = streaming
    c = s.client(verify=False)
    vault = new_vault(s)
    data = os.urandom(3 * MiB)
    wrong = sha(data[:-1] + b"\0")
    assert_problem(c.put(f"/v1/vaults/{vault}/chunks/{wrong}", content=data), 400, "digest_mismatch")
    assert c.head(f"/v1/vaults/{vault}/chunks/{wrong}").status_code == 404
    assert usage(s, vault)["chunks"] == 0
    assert no_tmp_files(s) == []


def test_streamed_truncated_answers_400(streaming):
    s = streaming
    vault = new_vault(s)
    data = os.urandom(3 * MiB)
    for cut in (MiB + 100, 10, 2 * MiB):
        status, _, body = raw_exchange(s, put_head(s, vault, sha(data), len(data)), data[:cut])
        assert status == 400, f"no answer to a streamed body cut short after {cut} bytes (client half-closed)"
        assert json.loads(body)["code"] == "truncated"


def test_streamed_truncated_stores_nothing(streaming):
    s = streaming
    vault = new_vault(s)
    data = os.urandom(3 * MiB)
    raw_exchange(s, put_head(s, vault, sha(data), len(data)), data[:2 * MiB])
    c = s.client(verify=False)
    assert c.head(f"/v1/vaults/{vault}/chunks/{sha(data)}").status_code == 404
    assert usage(s, vault)["chunks"] == 0
    assert no_tmp_files(s) == []
    assert c.put(f"/v1/vaults/{vault}/chunks/{sha(data)}", content=data).status_code == 201


def test_streamed_too_large_for_quota(streaming):
    s = streaming
    c = s.client(verify=False)
    vault = new_vault(s, quota_bytes=2 * MiB)
    data = os.urandom(3 * MiB)
    assert_problem(c.put(f"/v1/vaults/{vault}/chunks/{sha(data)}", content=data), 507, "quota_exceeded")
    assert c.head(f"/v1/vaults/{vault}/chunks/{sha(data)}").status_code == 404
    assert usage(s, vault)["stored_bytes"] == 0


def test_streamed_upload_closes_the_connection_after_the_answer(streaming):
    # The body went from the socket straight into the file (splice), past
    # aiohttp's parser: the connection cannot be reused, and says so.
    s = streaming
    vault = new_vault(s)
    data = os.urandom(2 * MiB + 3)
    status, headers, body = raw_exchange(s, put_head(s, vault, sha(data), len(data)), data, half_close=False)
    assert status == 201, body
    assert headers.get("connection", "").lower() == "close"
    assert sha(s.client(verify=False).get(f"/v1/vaults/{vault}/chunks/{sha(data)}").content) == sha(data)


def test_streamed_chunks_over_tls(tmp_path):
    # Over TLS the socket carries records, not the body: large bodies take the
    # ordinary path, and everything still round-trips and verifies.
    cert, key = self_signed(tmp_path)
    s = Server(tmp_path / "srv", env={**SMALL_SEGMENTS, "OBJVAULT_STREAM_THRESHOLD_BYTES": str(MiB),
                                      "OBJVAULT_TLS_CERT_FILE": cert, "OBJVAULT_TLS_KEY_FILE": key})
    s.url = s.url.replace("http://", "https://")
    s.start()
    try:
        c = s.client(verify=ssl.create_default_context(cafile=cert))
        vault = new_vault(s)
        big, small = os.urandom(3 * MiB + 5), os.urandom(5000)
        for data in (big, small):
            r = c.put(f"/v1/vaults/{vault}/chunks/{sha(data)}", content=data)
            assert r.status_code == 201, r.text
            assert c.get(f"/v1/vaults/{vault}/chunks/{sha(data)}").content == data
        r = c.put(f"/v1/vaults/{vault}/chunks/{sha(big + b'x')}", content=big)
        assert_problem(r, 400, "digest_mismatch")
    finally:
        s.stop()


def test_stalled_large_uploads_do_not_hold_up_the_server(streaming):
    # Clients that send the head of a large PUT and then stall hold at most
    # the splice slots; everything else, large uploads included, goes on.
    s = streaming
    vault = new_vault(s)
    stalled = []
    try:
        for i in range(12):
            data = os.urandom(3 * MiB)
            so = socket.create_connection(("127.0.0.1", s.port), timeout=10)
            so.sendall(put_head(s, vault, sha(data), len(data)) + data[:MiB + 4096 * i])
            stalled.append(so)
        time.sleep(0.5)
        c = s.client(verify=False, timeout=20)
        big, small = os.urandom(3 * MiB + 1), os.urandom(1000)
        for data in (big, small):
            assert c.put(f"/v1/vaults/{vault}/chunks/{sha(data)}", content=data).status_code == 201
            assert c.get(f"/v1/vaults/{vault}/chunks/{sha(data)}").content == data
    finally:
        for so in stalled:
            so.close()
    # the stalled bodies end as truncated: nothing of them is kept
    deadline = time.monotonic() + 10
    while no_tmp_files(s) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert no_tmp_files(s) == []
    assert usage(s, vault)["chunks"] == 2
