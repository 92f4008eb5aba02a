"""Slow and surplus clients, and protocol edge cases, over raw sockets.

A client that trickles its request head, stalls its body or idles on a
kept-alive connection is cut off after the configured time (408 or a close),
leaving nothing stored; connections beyond ``max_connections`` are refused
with 503; ``100 Continue`` is only sent to a request whose credentials hold;
a request line without an HTTP version gets 400.
"""

from __future__ import annotations

import base64
import json
import os
import socket
import time
import uuid
from xml.etree import ElementTree

import httpx
import pytest

from tests.apihelpers import SMALL_SEGMENTS, admin_of, create_key, create_vault
from tests.rawhttp import recv_head, request_head
from tests.server import Server, sha

KiB = 1 << 10
# Small limits keep every test to a few seconds. The keep-alive timeout
# differs from the header timeout so that each can be told apart.
LIMITS = {
    **SMALL_SEGMENTS,
    "OBJVAULT_HEADER_TIMEOUT_SECONDS": "1",
    "OBJVAULT_BODY_IDLE_TIMEOUT_SECONDS": "1",
    "OBJVAULT_KEEPALIVE_TIMEOUT_SECONDS": "3",
    # Chunks above 64 KiB are streamed into a segment of their own.
    "OBJVAULT_STREAM_THRESHOLD_BYTES": str(64 * KiB),
}


@pytest.fixture(scope="module")
def srv(tmp_path_factory):
    s = Server(tmp_path_factory.mktemp("slow"), env=LIMITS).start()
    yield s
    s.stop()


def connect(srv: Server, timeout: float = 5.0) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", srv.port))
    sock.settimeout(timeout)
    return sock


def read_response(sock: socket.socket) -> tuple[int, dict, bytes, bytes]:
    """One response: ``(status, headers, body, raw head)``; raises socket.timeout if none comes."""
    buf = recv_head(sock)
    if b"\r\n\r\n" not in buf:
        raise ConnectionError(f"closed after {buf!r}")
    head, _, rest = buf.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines[1:]:
        k, _, v = line.partition(":")
        headers[k.strip().lower()] = v.strip()
    n = int(headers.get("content-length", "0"))
    while len(rest) < n:
        data = sock.recv(65536)
        if not data:
            break
        rest += data
    return int(lines[0].split()[1]), headers, rest[:n], head + b"\r\n\r\n"


def closed_within(sock: socket.socket, seconds: float) -> bool:
    """True when the server closes (EOF or reset) within ``seconds``, sending nothing more."""
    sock.settimeout(seconds)
    try:
        return sock.recv(1) == b""
    except ConnectionResetError:
        return True
    except socket.timeout:
        return False


def new_vault(srv: Server) -> str:
    name = f"s-{uuid.uuid4().hex[:10]}"
    create_vault(srv, name)
    return name


def usage(srv: Server, vault: str) -> dict:
    return admin_of(srv).get(f"/v1/vaults/{vault}").json()["usage"]


def segment_files(srv: Server) -> dict:
    return {p.name: p.stat().st_size for d in srv.data_dirs for p in (d / "segments").iterdir()}


# -- request heads -------------------------------------------------------------------


def test_trickled_head_gets_408_and_close(srv):
    sock = connect(srv)
    t0 = time.monotonic()
    sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ")
    sock.settimeout(0.1)
    got = b""
    while time.monotonic() - t0 < 5:
        try:
            sock.send(b"a")
            got += sock.recv(65536)
        except socket.timeout:
            continue
        except (BrokenPipeError, ConnectionResetError):
            break
        if got.endswith(b"}"):
            break
    elapsed = time.monotonic() - t0
    assert got.startswith(b"HTTP/1.1 408 "), got
    assert b'"code": "request_timeout"' in got
    assert 0.9 <= elapsed < 2.5
    assert closed_within(sock, 2)


def test_silent_connection_is_closed_without_an_answer(srv):
    sock = connect(srv)
    t0 = time.monotonic()
    assert closed_within(sock, 3)  # nothing was asked: nothing is answered
    assert 0.9 <= time.monotonic() - t0 < 2.5


def test_idle_keepalive_connection_is_closed(srv):
    sock = connect(srv)
    sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    status, _, body, _ = read_response(sock)
    assert status == 200 and body == b'{"status":"ok"}'
    # Idle between requests is the keep-alive timeout (3 s), not the header one (1 s).
    assert not closed_within(sock, 2)
    sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    assert read_response(sock)[0] == 200
    t0 = time.monotonic()
    assert closed_within(sock, 5)
    assert 2.5 <= time.monotonic() - t0 < 4.5


def test_request_line_without_version_gets_400(srv):
    sock = connect(srv)
    sock.sendall(b"GET /healthz\r\n\r\n")
    data = b""
    while True:
        piece = sock.recv(65536)
        if not piece:
            break
        data += piece
    assert data.split(b"\r\n", 1)[0].split()[1] == b"400", data
    assert b"HTTP/0.9" not in data


MALFORMED = {
    "header without a colon": b"GET /healthz HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n",
    "Content-Length not a number": b"PUT /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: 12a\r\n\r\n",
    "head over 8 KiB": b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 9000 + b"\r\n\r\n",
    "no HTTP version": b"GET /healthz\r\n\r\n",
}


def _one_answer(port: int, data: bytes) -> tuple[int, dict, bytes, bytes]:
    sock = socket.create_connection(("127.0.0.1", port))
    sock.settimeout(5)
    sock.sendall(data)
    answer = read_response(sock)
    assert closed_within(sock, 2)
    return answer


@pytest.mark.parametrize("what", MALFORMED)
def test_a_malformed_request_gets_the_listeners_own_error_then_a_close(srv, what):
    """The parser's refusals are answered like every other error of each
    listener: a problem document natively, an S3 XML error with its request
    id on the S3 one; the HTTP library's plain text and versions never show."""
    status, headers, body, head = _one_answer(srv.port, MALFORMED[what])
    assert status == 400 and headers["content-type"] == "application/problem+json", head + body
    problem = json.loads(body)
    assert problem["code"] == "bad_request" and problem["detail"].startswith("malformed request: ")
    assert headers["server"] == "objvault" and b"aiohttp" not in head + body
    status, headers, body, head = _one_answer(srv.s3_port, MALFORMED[what])
    assert status == 400 and headers["content-type"] == "application/xml", head + body
    error = ElementTree.fromstring(body)
    assert error.findtext("Code") == "InvalidRequest"
    assert error.findtext("Message").startswith("malformed request: ")
    assert error.findtext("RequestId") == headers["x-amz-request-id"]
    assert headers["server"] == "objvault" and b"aiohttp" not in head + body


def test_a_trickled_head_on_the_s3_listener_gets_an_s3_timeout(srv):
    sock = socket.create_connection(("127.0.0.1", srv.s3_port))
    sock.settimeout(5)
    sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nX-Slow: a")
    status, headers, body, _ = read_response(sock)
    error = ElementTree.fromstring(body)
    assert (status, error.findtext("Code")) == (400, "RequestTimeout")
    assert error.findtext("RequestId") == headers["x-amz-request-id"]
    assert closed_within(sock, 2)


def test_answers_name_the_product_not_its_libraries(srv):
    for url in (srv.url + "/healthz", srv.s3_url + "/"):
        assert httpx.get(url, timeout=5).headers["server"] == "objvault"


# -- request bodies ------------------------------------------------------------------


def _stall(srv: Server, head: bytes, sent: bytes) -> tuple[int, bytes, float]:
    sock = connect(srv)
    sock.sendall(head + sent)
    t0 = time.monotonic()
    status, _, body, _ = read_response(sock)
    return status, body, time.monotonic() - t0


def _put_head(srv: Server, vault: str, cid: str, length: int) -> bytes:
    return request_head("PUT", f"/v1/vaults/{vault}/chunks/{cid}", length, srv.admin_token)


@pytest.mark.parametrize("size", [10 * KiB, 1 << 20], ids=["buffered", "streamed"])
def test_stalled_chunk_body_gets_408_and_stores_nothing(srv, size):
    vault = new_vault(srv)
    data = os.urandom(size)
    before = segment_files(srv)
    status, body, elapsed = _stall(srv, _put_head(srv, vault, sha(data), size), data[:size // 3])
    assert status == 408, body
    assert b'"code": "request_timeout"' in body
    assert 0.9 <= elapsed < 3
    assert segment_files(srv) == before  # no temp file, nothing appended
    assert usage(srv, vault)["chunks"] == 0 and usage(srv, vault)["stored_bytes"] == 0
    assert admin_of(srv).head(f"/v1/vaults/{vault}/chunks/{sha(data)}").status_code == 404


def test_stalled_body_of_a_large_chunk_already_held_gets_408(srv):
    vault = new_vault(srv)
    data = os.urandom(1 << 20)
    cid = sha(data)
    assert admin_of(srv).put(f"/v1/vaults/{vault}/chunks/{cid}", content=data).status_code == 201
    before, held = segment_files(srv), usage(srv, vault)
    status, body, elapsed = _stall(srv, _put_head(srv, vault, cid, len(data)), data[:100 * KiB])
    assert status == 408, body
    assert 0.9 <= elapsed < 3
    assert segment_files(srv) == before and usage(srv, vault) == held


def test_stalled_json_body_gets_408(srv):
    vault = new_vault(srv)
    body = b'{"chunks": []}'
    head = (f"PUT /v1/vaults/{vault}/objects/o HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {srv.admin_token}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n").encode()
    status, answer, _ = _stall(srv, head, body[:5])
    assert status == 408, answer
    assert admin_of(srv).get(f"/v1/vaults/{vault}/objects/o").status_code == 404


# -- 100 Continue ----------------------------------------------------------------------


def _expect(srv: Server, method: str, path: str, body: bytes, auth: str | None) -> tuple[socket.socket, bytes]:
    """Send a head with ``Expect: 100-continue``; return the socket and the first answer's head."""
    sock = connect(srv)
    head = f"{method} {path} HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\nExpect: 100-continue\r\n"
    if auth:
        head += f"Authorization: {auth}\r\n"
    sock.sendall((head + "\r\n").encode())
    return sock, recv_head(sock)


def test_100_continue_only_after_authentication(srv):
    vault = new_vault(srv)
    other = new_vault(srv)
    data = os.urandom(4 * KiB)
    path = f"/v1/vaults/{vault}/chunks/{sha(data)}"
    refused = [
        (path, None, 401),
        (path, "Bearer not-a-key", 401),
        (path, f"Bearer {create_key(srv, other, 'append')}", 404),  # another tenant's key
        (f"/restic/{vault}/data/{sha(data)}", None, 401),
        ("/v1/admin/gc", None, 401),
        ("/v1/vaults", None, 401),
    ]
    for target, auth, want in refused:
        method = "PUT" if "/chunks/" in target else "POST"
        sock, first = _expect(srv, method, target, data, auth)
        assert first.startswith(f"HTTP/1.1 {want} ".encode()), (target, first)
        assert b"100 Continue" not in first
    assert usage(srv, vault)["chunks"] == 0

    key = create_key(srv, vault, "append")
    for auth in (f"Bearer {key}", "Basic " + base64.b64encode(f"{vault}:{key}".encode()).decode()):
        sock, first = _expect(srv, "PUT", path, data, auth)
        assert first == b"HTTP/1.1 100 Continue\r\n\r\n", first
        sock.sendall(data)
        status, _, body, _ = read_response(sock)
        assert status in (200, 201), body
    assert usage(srv, vault)["chunks"] == 1


# -- the connection cap ----------------------------------------------------------------


def test_connections_beyond_the_cap_get_503(make_server):
    cap = 20
    s = make_server("cap", env={**SMALL_SEGMENTS, "OBJVAULT_MAX_CONNECTIONS": str(cap),
                                "OBJVAULT_HEADER_TIMEOUT_SECONDS": "3", "OBJVAULT_KEEPALIVE_TIMEOUT_SECONDS": "1"})
    time.sleep(0.2)  # the readiness probe's connection is gone
    socks = [connect(s) for _ in range(2 * cap)]
    time.sleep(0.5)
    held, refused = [], []
    for sock in socks:
        sock.setblocking(False)
        try:
            data = sock.recv(65536)
        except BlockingIOError:  # open, nothing said: being served
            held.append(sock)
            continue
        except ConnectionResetError:
            data = b""
        refused.append(data)
    assert len(held) == cap, (len(held), refused[:1])
    assert any(r.startswith(b"HTTP/1.1 503 ") and b"Retry-After: 1" in r for r in refused), refused[:3]
    # Those served are served in full.
    for sock in held:
        sock.settimeout(5)
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        assert read_response(sock)[0] == 200
    # Once they time out the server takes new connections again.
    assert all(closed_within(sock, 3) for sock in held)
    time.sleep(0.2)
    assert httpx.get(s.url + "/healthz", timeout=5).status_code == 200
    fresh = [connect(s) for _ in range(cap)]
    time.sleep(0.2)
    for sock in fresh:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        assert read_response(sock)[0] == 200
