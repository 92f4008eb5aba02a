"""Contract tests (API.md, "Auth"): credentials, roles, key lifecycle, tenant isolation."""

from __future__ import annotations

import base64
import uuid

import httpx
import pytest

from tests.apihelpers import admin_of, create_key, create_vault  # noqa: F401
from tests.server import Server, sha


def uniq(prefix: str = "v") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def anon(srv: Server, **headers) -> httpx.Client:
    c = httpx.Client(base_url=srv.url, headers=headers, timeout=30, verify=False)
    srv._clients.append(c)
    return c


def assert_problem(r, status: int, code: str | None = None) -> dict:
    assert r.status_code == status, (r.request.method, r.request.url, r.status_code, r.text)
    if r.request.method == "HEAD":
        return {}
    assert r.headers["content-type"].split(";")[0] == "application/problem+json", r.headers
    body = r.json()
    assert body["status"] == status
    assert isinstance(body["code"], str) and body["code"]
    if code is not None:
        assert body["code"] == code, body
    return body


DATA = b"tenant data " * 100
CID = sha(DATA)
OTHER = b"never uploaded"
OTHER_CID = sha(OTHER)


@pytest.fixture(scope="module")
def tenant(srv, admin):
    """A vault holding one chunk and one object, and a key of each role."""
    name = uniq("tenant")
    create_vault(srv, name)
    srv.put_chunk(admin, name, DATA)
    r = admin.put(f"/v1/vaults/{name}/objects/dir/obj", json={"chunks": [CID]})
    assert r.status_code == 201, r.text
    keys = {role: create_key(srv, name, role) for role in ("read", "append", "full")}
    return name, keys


def requests_on(vault: str) -> list[tuple[str, str, dict]]:
    """Every vault-scoped route (method, path, httpx kwargs) a key might call."""
    return [
        ("GET", f"/v1/vaults/{vault}", {}),
        ("PUT", f"/v1/vaults/{vault}/chunks/{CID}", {"content": DATA}),
        ("PUT", f"/v1/vaults/{vault}/chunks/{OTHER_CID}", {"content": OTHER}),
        ("PUT", f"/v1/vaults/{vault}/chunks/{OTHER_CID}", {"content": b"wrong body"}),
        ("GET", f"/v1/vaults/{vault}/chunks/{CID}", {}),
        ("GET", f"/v1/vaults/{vault}/chunks/{CID}", {"headers": {"Range": "bytes=0-9"}}),
        ("GET", f"/v1/vaults/{vault}/chunks/{OTHER_CID}", {}),
        ("HEAD", f"/v1/vaults/{vault}/chunks/{CID}", {}),
        ("HEAD", f"/v1/vaults/{vault}/chunks/{OTHER_CID}", {}),
        ("POST", f"/v1/vaults/{vault}/chunks/missing", {"json": {"ids": [CID, OTHER_CID]}}),
        ("PUT", f"/v1/vaults/{vault}/objects/dir/obj", {"json": {"chunks": [CID]}}),
        ("PUT", f"/v1/vaults/{vault}/objects/new", {"json": {"chunks": [CID]}}),
        ("PUT", f"/v1/vaults/{vault}/objects/dir/obj", {"json": {"chunks": [CID]},
                                                        "headers": {"If-None-Match": "*"}}),
        ("GET", f"/v1/vaults/{vault}/objects/dir/obj", {}),
        ("GET", f"/v1/vaults/{vault}/objects/absent", {}),
        ("HEAD", f"/v1/vaults/{vault}/objects/dir/obj", {}),
        ("DELETE", f"/v1/vaults/{vault}/objects/dir/obj", {}),
        ("DELETE", f"/v1/vaults/{vault}/objects/absent", {}),
        ("GET", f"/v1/vaults/{vault}/objects", {}),
        ("GET", f"/v1/vaults/{vault}/objects?prefix=dir/&limit=1", {}),
    ]


ADMIN_VAULT_ROUTES = [
    ("POST", "/v1/vaults", {"json": {"name": "made-by-a-key"}}),
    ("GET", "/v1/vaults", {}),
    ("PATCH", "/v1/vaults/{vault}", {"json": {"append_only": False}}),
    ("DELETE", "/v1/vaults/{vault}", {}),
    ("POST", "/v1/vaults/{vault}/keys", {"json": {"role": "full"}}),
    ("GET", "/v1/vaults/{vault}/keys", {}),
    ("DELETE", "/v1/vaults/{vault}/keys/{key_id}", {}),
]

ADMIN_OPS_ROUTES = [
    ("GET", "/v1/admin/usage", {}),
    ("GET", "/v1/admin/usage?format=csv", {}),
    ("POST", "/v1/admin/gc", {"json": {"dry_run": True}}),
    ("POST", "/v1/admin/jobs/s3_lifecycle", {}),
    ("POST", "/v1/admin/scrub", {}),
    ("GET", "/v1/admin/scrub", {}),
    ("GET", "/v1/admin/replication", {}),
    ("POST", "/v1/admin/restore", {"json": {"vault": "x-restore", "from": "nowhere"}}),
    ("GET", "/v1/admin/restore", {}),
    ("GET", "/v1/admin/alerts", {}),
    ("GET", "/v1/admin/audit", {}),
]


def _key_id(admin, vault: str) -> str:
    return admin.get(f"/v1/vaults/{vault}/keys").json()["keys"][0]["id"]


# -- no or bad credentials ---------------------------------------------------------------


BAD_AUTH = [
    {},
    {"Authorization": "Bearer"},
    {"Authorization": "Bearer wrong-secret"},
    {"Authorization": "Bearer ovk_0123456789abcdef_notthesecret"},
    {"Authorization": "Bearer test-admin-token-but-longer"},
    {"Authorization": "Token test-admin-token"},
    {"Authorization": "test-admin-token"},
    {"Authorization": "Basic !!!not-base64!!!"},
    {"Authorization": "Basic " + base64.b64encode(b"no-colon-here").decode()},
    {"Authorization": "Basic " + base64.b64encode(b"vault:wrong").decode()},
]


@pytest.mark.parametrize("headers", BAD_AUTH, ids=lambda h: h.get("Authorization", "none")[:40])
def test_bad_credentials_on_every_vault_route(srv, admin, tenant, headers):
    vault, _ = tenant
    c = anon(srv, **headers)
    kid = _key_id(admin, vault)
    before = admin.get(f"/v1/vaults/{vault}").json()
    routes = requests_on(vault) + [(m, p.format(vault=vault, key_id=kid), kw) for m, p, kw in ADMIN_VAULT_ROUTES]
    for method, path, kw in routes:
        r = c.request(method, path, **kw)
        assert_problem(r, 401)
        assert r.headers.get("WWW-Authenticate"), (method, path, r.headers)
    # nothing changed
    assert admin.get(f"/v1/vaults/{vault}").json() == before
    assert admin.get(f"/v1/vaults/{vault}/objects/dir/obj").status_code == 200
    assert admin.head(f"/v1/vaults/{vault}/chunks/{OTHER_CID}").status_code == 404
    assert admin.get("/v1/vaults/made-by-a-key").status_code == 404


def test_no_credentials_challenge(srv, tenant):
    vault, _ = tenant
    r = anon(srv).get(f"/v1/vaults/{vault}")
    body = assert_problem(r, 401)
    challenge = r.headers["WWW-Authenticate"]
    assert "Bearer" in challenge or "Basic" in challenge
    assert "Basic" in challenge  # restic and curl answer a Basic challenge
    assert {"type", "title", "status", "code"} <= set(body)


@pytest.mark.parametrize("method,path,kw", ADMIN_OPS_ROUTES)
def test_admin_ops_routes_need_credentials(srv, method, path, kw):
    r = anon(srv).request(method, path, **kw)
    assert_problem(r, 401)
    assert r.headers.get("WWW-Authenticate")


# -- Basic auth ----------------------------------------------------------------------------


def test_basic_auth_works_like_bearer(srv, tenant):
    vault, keys = tenant
    for role, secret in keys.items():
        basic = anon(srv)
        basic.auth = httpx.BasicAuth(vault, secret)
        bearer = srv.client(secret, verify=False)
        for method, path, kw in [
            ("GET", f"/v1/vaults/{vault}", {}),
            ("GET", f"/v1/vaults/{vault}/chunks/{CID}", {}),
            ("HEAD", f"/v1/vaults/{vault}/chunks/{CID}", {}),
            ("GET", f"/v1/vaults/{vault}/objects/dir/obj", {}),
            ("GET", f"/v1/vaults/{vault}/objects", {}),
            ("POST", f"/v1/vaults/{vault}/chunks/missing", {"json": {"ids": [CID, OTHER_CID]}}),
            ("PUT", f"/v1/vaults/{vault}/objects/dir/obj", {"json": {"chunks": [CID]},
                                                            "headers": {"If-None-Match": "*"}}),
            ("GET", "/v1/vaults", {}),
        ]:
            a = basic.request(method, path, **kw)
            b = bearer.request(method, path, **kw)
            assert a.status_code == b.status_code, (role, method, path, a.text, b.text)
            if method != "HEAD" and a.status_code < 300:
                assert a.content == b.content, (role, method, path)


def test_basic_auth_can_write(srv, admin):
    vault = uniq()
    create_vault(srv, vault)
    secret = create_key(srv, vault, "append")
    c = anon(srv)
    c.auth = httpx.BasicAuth(vault, secret)
    data = b"written with basic auth"
    r = c.put(f"/v1/vaults/{vault}/chunks/{sha(data)}", content=data)
    assert r.status_code == 201, r.text
    assert admin.get(f"/v1/vaults/{vault}/chunks/{sha(data)}").content == data


def test_basic_auth_wrong_password(srv, tenant):
    vault, keys = tenant
    c = anon(srv)
    c.auth = httpx.BasicAuth(vault, keys["full"] + "x")
    r = c.get(f"/v1/vaults/{vault}")
    assert_problem(r, 401)
    assert r.headers.get("WWW-Authenticate")


# -- roles ---------------------------------------------------------------------------------


def test_read_key_cannot_write(srv, admin):
    vault = uniq()
    create_vault(srv, vault)
    srv.put_chunk(admin, vault, DATA)
    assert admin.put(f"/v1/vaults/{vault}/objects/o", json={"chunks": [CID]}).status_code == 201
    c = srv.client(create_key(srv, vault, "read"), verify=False)
    before = admin.get(f"/v1/vaults/{vault}").json()["usage"]

    assert_problem(c.put(f"/v1/vaults/{vault}/chunks/{OTHER_CID}", content=OTHER), 403, "forbidden")
    assert_problem(c.put(f"/v1/vaults/{vault}/chunks/{CID}", content=DATA), 403, "forbidden")
    assert_problem(c.put(f"/v1/vaults/{vault}/objects/new", json={"chunks": [CID]}), 403, "forbidden")
    assert_problem(c.put(f"/v1/vaults/{vault}/objects/o", json={"chunks": []}), 403, "forbidden")
    assert_problem(c.delete(f"/v1/vaults/{vault}/objects/o"), 403, "forbidden")

    assert admin.head(f"/v1/vaults/{vault}/chunks/{OTHER_CID}").status_code == 404
    assert admin.get(f"/v1/vaults/{vault}/objects/new").status_code == 404
    assert admin.get(f"/v1/vaults/{vault}/objects/o").json()["chunks"] == [CID]
    assert admin.get(f"/v1/vaults/{vault}").json()["usage"] == before
    # and it can read
    assert c.get(f"/v1/vaults/{vault}/chunks/{CID}").content == DATA
    assert c.head(f"/v1/vaults/{vault}/chunks/{CID}").status_code == 200
    assert c.get(f"/v1/vaults/{vault}/objects/o").status_code == 200
    assert c.head(f"/v1/vaults/{vault}/objects/o").status_code == 200
    assert c.get(f"/v1/vaults/{vault}/objects").json()["objects"][0]["key"] == "o"
    assert c.post(f"/v1/vaults/{vault}/chunks/missing", json={"ids": [CID, OTHER_CID]}).json() == \
        {"missing": [OTHER_CID]}


def test_append_key_cannot_delete_or_overwrite(srv, admin):
    vault = uniq()
    create_vault(srv, vault)
    c = srv.client(create_key(srv, vault, "append"), verify=False)
    a = srv.put_chunk(c, vault, b"A" * 10)
    b = srv.put_chunk(c, vault, b"B" * 20)
    r = c.put(f"/v1/vaults/{vault}/objects/o", json={"chunks": [a]})
    assert r.status_code == 201, r.text
    before = admin.get(f"/v1/vaults/{vault}").json()["usage"]

    assert_problem(c.put(f"/v1/vaults/{vault}/objects/o", json={"chunks": [b]}), 403, "forbidden")
    assert_problem(c.put(f"/v1/vaults/{vault}/objects/o", json={"chunks": [a]}), 403, "forbidden")
    assert_problem(c.delete(f"/v1/vaults/{vault}/objects/o"), 403, "forbidden")
    assert_problem(c.delete(f"/v1/vaults/{vault}/objects/absent"), 403, "forbidden")

    doc = admin.get(f"/v1/vaults/{vault}/objects/o").json()
    assert doc["chunks"] == [a] and doc["size"] == 10
    assert admin.get(f"/v1/vaults/{vault}").json()["usage"] == before
    # re-uploading an existing chunk is no overwrite: allowed (dedup)
    assert c.put(f"/v1/vaults/{vault}/chunks/{a}", content=b"A" * 10).status_code == 200


def test_full_key_can_overwrite_and_delete(srv, admin):
    vault = uniq()
    create_vault(srv, vault)
    c = srv.client(create_key(srv, vault, "full"), verify=False)
    a = srv.put_chunk(c, vault, b"A" * 10)
    assert c.put(f"/v1/vaults/{vault}/objects/o", json={"chunks": [a]}).status_code == 201
    assert c.put(f"/v1/vaults/{vault}/objects/o", json={"chunks": [a, a]}).status_code == 201
    assert c.delete(f"/v1/vaults/{vault}/objects/o").status_code == 204


@pytest.mark.parametrize("role", ["read", "append", "full"])
@pytest.mark.parametrize("method,path,kw", ADMIN_VAULT_ROUTES)
def test_admin_routes_refuse_keys(srv, admin, tenant, role, method, path, kw):
    vault, keys = tenant
    kid = _key_id(admin, vault)
    before_keys = admin.get(f"/v1/vaults/{vault}/keys").json()
    before = admin.get(f"/v1/vaults/{vault}").json()
    r = srv.client(keys[role], verify=False).request(method, path.format(vault=vault, key_id=kid), **kw)
    assert_problem(r, 403, "forbidden")
    assert admin.get(f"/v1/vaults/{vault}/keys").json() == before_keys
    assert admin.get(f"/v1/vaults/{vault}").json()["append_only"] == before["append_only"]
    assert admin.get("/v1/vaults/made-by-a-key").status_code == 404


@pytest.mark.parametrize("method,path,kw", ADMIN_OPS_ROUTES)
def test_admin_ops_routes_refuse_keys(srv, tenant, method, path, kw):
    _, keys = tenant
    r = srv.client(keys["full"], verify=False).request(method, path, **kw)
    assert_problem(r, 403, "forbidden")


# -- key lifecycle -----------------------------------------------------------------------


def test_revoked_key_stops_working_at_once(srv, admin):
    vault = uniq()
    create_vault(srv, vault)
    doc = admin.post(f"/v1/vaults/{vault}/keys", json={"role": "full"}).json()
    c = srv.client(doc["secret"], verify=False)  # one keep-alive connection before and after
    assert c.get(f"/v1/vaults/{vault}").status_code == 200
    assert admin.delete(f"/v1/vaults/{vault}/keys/{doc['id']}").status_code == 204
    r = c.get(f"/v1/vaults/{vault}")
    assert_problem(r, 401)
    assert r.headers.get("WWW-Authenticate")
    assert_problem(c.put(f"/v1/vaults/{vault}/chunks/{sha(b'z')}", content=b"z"), 401)
    assert admin.head(f"/v1/vaults/{vault}/chunks/{sha(b'z')}").status_code == 404


def test_revoking_one_key_leaves_the_others(srv, admin):
    vault = uniq()
    create_vault(srv, vault)
    k1 = admin.post(f"/v1/vaults/{vault}/keys", json={"role": "full"}).json()
    k2 = admin.post(f"/v1/vaults/{vault}/keys", json={"role": "full"}).json()
    assert admin.delete(f"/v1/vaults/{vault}/keys/{k1['id']}").status_code == 204
    assert_problem(srv.client(k1["secret"], verify=False).get(f"/v1/vaults/{vault}"), 401)
    assert srv.client(k2["secret"], verify=False).get(f"/v1/vaults/{vault}").status_code == 200


def test_keys_of_deleted_vault_stop_working(srv, admin):
    vault = uniq()
    create_vault(srv, vault)
    secrets = {role: create_key(srv, vault, role) for role in ("read", "append", "full")}
    assert admin.delete(f"/v1/vaults/{vault}").status_code == 204
    for secret in secrets.values():
        c = srv.client(secret, verify=False)
        assert_problem(c.get(f"/v1/vaults/{vault}"), 401)
        assert_problem(c.put(f"/v1/vaults/{vault}/chunks/{CID}", content=DATA), 401)


def test_recreated_vault_does_not_accept_old_keys(srv, admin):
    vault = uniq()
    create_vault(srv, vault)
    old = {role: create_key(srv, vault, role) for role in ("read", "append", "full")}
    assert admin.delete(f"/v1/vaults/{vault}").status_code == 204
    create_vault(srv, vault)
    for secret in old.values():
        c = srv.client(secret, verify=False)
        # invalid (401) or foreign (404, as for any other vault): never accepted
        r = c.get(f"/v1/vaults/{vault}")
        assert r.status_code in (401, 404), r.text
        r = c.put(f"/v1/vaults/{vault}/chunks/{CID}", content=DATA)
        assert r.status_code in (401, 404), r.text
    assert admin.head(f"/v1/vaults/{vault}/chunks/{CID}").status_code == 404
    assert admin.get(f"/v1/vaults/{vault}/keys").json()["keys"] == []
    new = create_key(srv, vault, "read")
    assert srv.client(new, verify=False).get(f"/v1/vaults/{vault}").status_code == 200


# -- tenant isolation ------------------------------------------------------------------------


def _normalise(r: httpx.Response, vault: str) -> tuple:
    """What a client sees, with the vault name it asked for blanked out."""
    headers = {k: v for k, v in r.headers.items()
               if k.lower() in ("content-type", "www-authenticate", "etag", "allow")}
    if r.request.method == "HEAD" or not r.content:
        return r.status_code, headers, None
    text = r.text.replace(vault, "{vault}")
    return r.status_code, headers, text


@pytest.mark.parametrize("role", ["read", "append", "full"])
def test_foreign_key_sees_exactly_a_missing_vault(srv, admin, tenant, role):
    victim, _ = tenant
    attacker = uniq("attacker")
    create_vault(srv, attacker)
    c = srv.client(create_key(srv, attacker, role), verify=False)
    nowhere = "zz" + uuid.uuid4().hex[:10]
    victim_before = admin.get(f"/v1/vaults/{victim}").json()
    for (method, path, kw), (_, path_nx, _) in zip(requests_on(victim), requests_on(nowhere)):
        a = c.request(method, path, **kw)
        b = c.request(method, path_nx, **kw)
        assert a.status_code == 404, (method, path, a.status_code, a.text)
        na, nb = _normalise(a, victim), _normalise(b, nowhere)
        assert na == nb, (method, path, na, nb)
        if method != "HEAD":
            assert a.json()["code"] == "no_such_vault"
    # and nothing happened to the victim
    assert admin.get(f"/v1/vaults/{victim}").json() == victim_before
    assert admin.get(f"/v1/vaults/{victim}/objects/dir/obj").status_code == 200
    assert admin.head(f"/v1/vaults/{victim}/chunks/{OTHER_CID}").status_code == 404
    assert admin.get(f"/v1/vaults/{victim}/objects/new").status_code == 404


def test_foreign_key_with_basic_user_of_the_victim(srv, admin, tenant):
    """Naming the victim vault as Basic user changes nothing: the key decides."""
    victim, _ = tenant
    attacker = uniq("attacker")
    create_vault(srv, attacker)
    c = anon(srv)
    c.auth = httpx.BasicAuth(victim, create_key(srv, attacker, "full"))
    r = c.get(f"/v1/vaults/{victim}/chunks/{CID}")
    assert_problem(r, 404, "no_such_vault")
    r = c.get(f"/v1/vaults/{victim}/objects/dir/obj")
    assert_problem(r, 404, "no_such_vault")


def test_admin_sees_every_vault(srv, admin, tenant):
    victim, _ = tenant
    assert admin.get(f"/v1/vaults/{victim}").status_code == 200
    assert admin.get(f"/v1/vaults/{victim}/chunks/{CID}").content == DATA


def test_secrets_are_not_stored_in_clear(srv, admin):
    vault = uniq()
    create_vault(srv, vault)
    secret = create_key(srv, vault, "full")
    assert srv.client(secret, verify=False).get(f"/v1/vaults/{vault}").status_code == 200
    tail = secret[-20:].encode()  # random in any secret format
    files = [p for d in srv.data_dirs for p in d.rglob("*") if p.is_file()]
    assert files
    for p in files:
        assert tail not in p.read_bytes(), p
