"""Contract tests (API.md, "Operations"): health, readiness, metrics, OpenAPI, logs, shutdown, admin token."""

from __future__ import annotations

import json
import os
import re
import signal
import stat
import threading
import time
import uuid

import httpx
import pytest

from tests.apihelpers import SMALL_SEGMENTS, admin_of, create_key, create_vault  # noqa: F401
from tests.server import sha


MiB = 1 << 20


def uniq(prefix: str = "ops") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


# -- health ---------------------------------------------------------------------------------


def test_healthz(srv):
    r = httpx.get(srv.url + "/healthz", verify=False)
    assert r.status_code == 200


def test_readyz(srv):
    r = httpx.get(srv.url + "/readyz", verify=False)
    assert r.status_code == 200


def test_health_needs_no_credentials_but_accepts_them(srv, admin):
    assert admin.get("/healthz").status_code == 200
    assert httpx.get(srv.url + "/readyz", headers={"Authorization": "Bearer junk"}, verify=False).status_code == 200


def test_readyz_503_while_a_data_dir_is_gone(make_server, tmp_path):
    d1, d2 = tmp_path / "d1", tmp_path / "d2"
    s = make_server("ready", data_dirs=[d1, d2], env=SMALL_SEGMENTS)
    assert httpx.get(s.url + "/readyz", verify=False).status_code == 200
    d2.rename(tmp_path / "d2-away")
    try:
        r = httpx.get(s.url + "/readyz", verify=False)
        assert r.status_code == 503, r.text
        assert httpx.get(s.url + "/healthz", verify=False).status_code == 200  # still serving
    finally:
        (tmp_path / "d2-away").rename(d2)
    assert httpx.get(s.url + "/readyz", verify=False).status_code == 200


# -- metrics --------------------------------------------------------------------------------


def _samples(text: str) -> list[tuple[str, dict, float]]:
    out = []
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = re.match(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})? (\S+)$", line)
        assert m, line
        labels = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', m.group(3) or ""))
        out.append((m.group(1), labels, float(m.group(4))))
    return out


@pytest.fixture(scope="module")
def traffic(srv, admin):
    """Some requests of every kind, so that every labelled series exists."""
    vault = uniq("metrics")
    create_vault(srv, vault)
    datas = [os.urandom(1000 + i) for i in range(5)]
    ids = [srv.put_chunk(admin, vault, d) for d in datas]
    admin.put(f"/v1/vaults/{vault}/chunks/{ids[0]}", content=datas[0])  # dedup
    for cid in ids:
        assert admin.get(f"/v1/vaults/{vault}/chunks/{cid}").status_code == 200
        assert admin.head(f"/v1/vaults/{vault}/chunks/{cid}").status_code == 200
    absent = sha(b"never stored here")
    assert admin.get(f"/v1/vaults/{vault}/chunks/{absent}").status_code == 404
    admin.post(f"/v1/vaults/{vault}/chunks/missing", json={"ids": ids + [absent]})
    assert admin.put(f"/v1/vaults/{vault}/objects/secret-object-name", json={"chunks": ids}).status_code == 201
    admin.get(f"/v1/vaults/{vault}/objects/secret-object-name")
    admin.get(f"/v1/vaults/{vault}/objects")
    admin.get(f"/nowhere/{absent}")  # no route
    return vault, ids + [absent]


def test_metrics_text(srv, traffic):
    r = httpx.get(srv.url + "/metrics", verify=False)
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/plain")
    samples = _samples(r.text)
    assert samples
    for name, _, _ in samples:
        assert name.startswith("objvault_"), name


def test_metrics_requests_by_route_template(srv, traffic):
    samples = _samples(httpx.get(srv.url + "/metrics", verify=False).text)
    reqs = [(labels, v) for name, labels, v in samples if name == "objvault_http_requests_total"]
    assert reqs
    routes = {labels["route"] for labels, _ in reqs}
    chunk_route = "/v1/vaults/{vault}/chunks/{chunk}"
    assert chunk_route in routes, routes
    assert "/v1/vaults/{vault}/chunks/missing" in routes
    assert any(r.startswith("/v1/vaults/{vault}/objects/") for r in routes), routes
    by = {(labels["route"], labels["method"], labels["status"]): v for labels, v in reqs}
    assert by[(chunk_route, "PUT", "201")] >= 5
    assert by[(chunk_route, "PUT", "200")] >= 1
    assert by[(chunk_route, "GET", "200")] >= 5
    assert by[(chunk_route, "GET", "404")] >= 1
    assert by[(chunk_route, "HEAD", "200")] >= 5
    for route in routes:
        assert route.startswith("/") or route == "unmatched", route
        assert not re.search(r"[0-9a-f]{64}", route), route


def test_metrics_never_name_chunk_ids_or_object_keys(srv, traffic):
    vault, ids = traffic
    text = httpx.get(srv.url + "/metrics", verify=False).text
    assert not re.search(r"[0-9a-f]{64}", text)
    for cid in ids:
        assert cid not in text and cid[:16] not in text
    assert "secret-object-name" not in text
    assert "/nowhere" not in text


def test_metrics_storage_series(srv, traffic):
    samples = _samples(httpx.get(srv.url + "/metrics", verify=False).text)
    names = {n for n, _, _ in samples}
    written = [v for n, _, v in samples if n == "objvault_chunks_written_total"]
    assert written and written[0] >= 5
    assert {"objvault_index_commit_batch_ops_bucket", "objvault_index_commit_batch_ops_count",
            "objvault_index_commit_batch_ops_sum"} <= names
    assert [v for n, _, v in samples if n == "objvault_index_commit_batch_ops_count"][0] >= 1
    assert {"objvault_segment_fsync_duration_seconds_bucket", "objvault_segment_fsync_duration_seconds_count"} <= names
    assert [v for n, _, v in samples if n == "objvault_segment_fsync_duration_seconds_count"][0] >= 1
    free = [(labels, v) for n, labels, v in samples if n == "objvault_data_dir_free_bytes"]
    assert len(free) == len(srv.data_dirs)
    for labels, v in free:
        assert v > 0
        assert any(str(d) in json.dumps(labels) or labels.get("dir") in ("0", str(d)) for d in srv.data_dirs)


# -- OpenAPI ---------------------------------------------------------------------------------


# Every route of API.md's tables and "Operations" (method, path).
API_ROUTES = [
    ("post", "/v1/vaults"),
    ("get", "/v1/vaults"),
    ("get", "/v1/vaults/{vault}"),
    ("patch", "/v1/vaults/{vault}"),
    ("delete", "/v1/vaults/{vault}"),
    ("post", "/v1/vaults/{vault}/keys"),
    ("get", "/v1/vaults/{vault}/keys"),
    ("delete", "/v1/vaults/{vault}/keys/{id}"),
    ("get", "/v1/admin/usage"),
    ("post", "/v1/admin/gc"),
    ("post", "/v1/admin/scrub"),
    ("get", "/v1/admin/scrub"),
    ("get", "/v1/admin/replication"),
    ("post", "/v1/admin/restore"),
    ("get", "/v1/admin/restore"),
    ("get", "/v1/admin/alerts"),
    ("get", "/v1/admin/audit"),
    ("put", "/v1/vaults/{vault}/chunks/{id}"),
    ("get", "/v1/vaults/{vault}/chunks/{id}"),
    ("head", "/v1/vaults/{vault}/chunks/{id}"),
    ("post", "/v1/vaults/{vault}/chunks/missing"),
    ("put", "/v1/vaults/{vault}/objects/{key}"),
    ("get", "/v1/vaults/{vault}/objects/{key}"),
    ("head", "/v1/vaults/{vault}/objects/{key}"),
    ("delete", "/v1/vaults/{vault}/objects/{key}"),
    ("get", "/v1/vaults/{vault}/objects"),
    ("get", "/healthz"),
    ("get", "/readyz"),
    ("get", "/metrics"),
    ("get", "/v1/openapi.json"),
]


def _template(path: str) -> str:
    return re.sub(r"\{[^}]*\}", "{}", path)


def test_openapi(srv):
    r = httpx.get(srv.url + "/v1/openapi.json", verify=False)
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("application/json")
    doc = r.json()
    assert re.match(r"^3\.1\.\d+$", doc["openapi"]), doc.get("openapi")
    assert doc["info"]["title"] and doc["info"]["version"]
    described = {(m.lower(), _template(p)) for p, ops in doc["paths"].items() for m in ops
                 if m.lower() in ("get", "put", "post", "delete", "patch", "head", "options")}
    missing = [(m, p) for m, p in API_ROUTES if (m, _template(p)) not in described]
    assert not missing, f"routes of API.md not in /v1/openapi.json: {missing}"
    for path, ops in doc["paths"].items():
        params = set(re.findall(r"\{([^}]*)\}", path))
        for method, op in ops.items():
            assert op.get("responses"), (method, path)
            declared = {p["name"] for p in op.get("parameters", []) + ops.get("parameters", [])
                        if isinstance(p, dict) and p.get("in") == "path"}
            assert params <= declared, (method, path, params, declared)


def test_openapi_describes_every_served_route(srv, admin):
    """Each described path answers (not 404 'no route'), so the document matches the server."""
    doc = httpx.get(srv.url + "/v1/openapi.json", verify=False).json()
    fill = {"vault": "nosuchvault", "id": "0" * 64, "chunk": "0" * 64, "key": "k", "key_id": "kid"}
    for path, ops in doc["paths"].items():
        concrete = re.sub(r"\{([^}]*)\}", lambda m: fill.get(m.group(1), "x"), path)
        for method in ops:
            if method.lower() not in ("get", "head"):
                continue
            r = admin.request(method.upper(), concrete)
            if r.status_code == 404 and method.lower() == "get":
                assert r.json()["code"] != "not_found", (method, path)


# -- logs ------------------------------------------------------------------------------------


def test_logs_are_json_lines(srv, admin, traffic):
    admin.post("/v1/vaults", content=b"{", headers={"Content-Type": "application/json"})  # an error, too
    time.sleep(0.2)
    lines = [l for l in srv.log_path.read_text().splitlines() if l.strip()]
    assert len(lines) >= 2
    for line in lines:
        doc = json.loads(line)
        assert isinstance(doc, dict), line
        assert {"ts", "level", "msg"} <= set(doc), line
    assert any(json.loads(l)["msg"] == "listening" or "listen" in json.loads(l) for l in lines)


def test_logs_never_contain_secrets(srv, admin):
    vault = uniq()
    create_vault(srv, vault)
    secret = create_key(srv, vault, "full")
    srv.client(secret, verify=False).get(f"/v1/vaults/{vault}")
    httpx.get(srv.url + f"/v1/vaults/{vault}", headers={"Authorization": "Bearer " + secret + "x"}, verify=False)
    time.sleep(0.2)
    text = srv.log_path.read_text()
    assert secret not in text
    assert srv.admin_token not in text


# -- shutdown ----------------------------------------------------------------------------------


def test_sigterm_drains_in_flight_uploads(make_server):
    s = make_server("drain", env=SMALL_SEGMENTS)
    c = s.client(verify=False)
    vault = uniq("drain")
    create_vault(s, vault)
    N, SIZE, PIECE = 8, 4 * MiB, 128 * 1024
    blobs = [os.urandom(SIZE) for _ in range(N)]
    started = [threading.Event() for _ in range(N)]
    results: list = [None] * N

    def body(i):
        data = blobs[i]
        for off in range(0, SIZE, PIECE):
            yield data[off:off + PIECE]
            started[i].set()
            time.sleep(0.02)

    def upload(i):
        cid = sha(blobs[i])
        try:
            with httpx.Client(base_url=s.url, timeout=60, verify=False,
                              headers={"Authorization": f"Bearer {s.admin_token}"}) as cl:
                r = cl.put(f"/v1/vaults/{vault}/chunks/{cid}", content=body(i),
                           headers={"Content-Length": str(SIZE)})
                results[i] = r.status_code
        except httpx.HTTPError as e:
            results[i] = e

    threads = [threading.Thread(target=upload, args=(i,)) for i in range(N)]
    for t in threads:
        t.start()
    for e in started:
        assert e.wait(10)
    time.sleep(0.1)
    s.proc.send_signal(signal.SIGTERM)
    # Each upload needs well under a second more; give them 10 s, then stop waiting.
    deadline = time.monotonic() + 10
    for t in threads:
        t.join(max(0.0, deadline - time.monotonic()))
    hung = [i for i, t in enumerate(threads) if t.is_alive()]
    if hung:
        s.proc.kill()
        for t in threads:
            t.join(30)
    rc = s.proc.wait(30)
    assert not hung, f"uploads {hung} got no answer within 10 s of SIGTERM: {results}"
    assert rc == 0, s.log_tail()
    assert results == [201] * N, results
    s.start()
    c = s.client(verify=False)
    for i, status in enumerate(results):
        if status in (200, 201):
            r = c.get(f"/v1/vaults/{vault}/chunks/{sha(blobs[i])}")
            assert r.status_code == 200 and r.content == blobs[i]
    assert c.get(f"/v1/vaults/{vault}").json()["usage"]["chunks"] == N


def test_sigterm_idle_exits_zero(make_server):
    s = make_server("idle", env=SMALL_SEGMENTS)
    assert s.stop(signal.SIGTERM) == 0
    assert any(json.loads(l).get("msg") == "stopped" for l in s.log_path.read_text().splitlines() if l.strip())


# -- admin token -------------------------------------------------------------------------------


def test_admin_token_generated_when_not_configured(make_server):
    s = make_server("gen", admin_token="", env=SMALL_SEGMENTS)
    path = s.data_dirs[0] / "admin.token"
    assert path.exists()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    token = path.read_text().strip()
    assert len(token) >= 20
    assert httpx.get(s.url + "/v1/vaults", headers={"Authorization": f"Bearer {token}"}, verify=False).status_code == 200
    assert httpx.get(s.url + "/v1/vaults", headers={"Authorization": "Bearer"}, verify=False).status_code == 401
    assert httpx.get(s.url + "/v1/vaults", headers={"Authorization": f"Bearer {token}x"}, verify=False).status_code == 401
    assert token not in s.log_path.read_text()
    # kept across restarts
    s.restart()
    assert path.read_text().strip() == token
    assert httpx.get(s.url + "/v1/vaults", headers={"Authorization": f"Bearer {token}"}, verify=False).status_code == 200


def test_configured_admin_token_is_used(make_server):
    s = make_server("conf", admin_token="a-configured-token-123", env=SMALL_SEGMENTS)
    assert httpx.get(s.url + "/v1/vaults", headers={"Authorization": "Bearer a-configured-token-123"}, verify=False).status_code == 200
    r = httpx.get(s.url + "/v1/vaults", headers={"Authorization": "Bearer test-admin-token"}, verify=False)
    assert r.status_code == 401
