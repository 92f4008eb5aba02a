"""Contract tests (API.md, "Admin" and "Names"): vaults and their keys."""

from __future__ import annotations

import json
import uuid
from datetime import datetime

import httpx
import pytest

from tests.apihelpers import admin_of, create_key, create_vault, raw_request  # noqa: F401
from tests.server import sha


VAULT_FIELDS = {"name", "created", "quota_bytes", "append_only", "retention_days", "usage"}
USAGE_FIELDS = {"stored_bytes", "logical_bytes", "chunks", "objects"}
ZERO_USAGE = {"stored_bytes": 0, "logical_bytes": 0, "chunks": 0, "objects": 0}


def uniq(prefix: str = "v") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def assert_problem(r, status: int, code: str | None = None) -> dict:
    assert r.status_code == status, (r.status_code, r.text)
    assert r.headers["content-type"].split(";")[0] == "application/problem+json", r.headers
    body = r.json()
    assert body["status"] == status
    assert isinstance(body["type"], str) and body["type"]
    assert isinstance(body["title"], str) and body["title"]
    assert isinstance(body["code"], str) and body["code"]
    assert isinstance(body.get("detail", ""), str)
    if code is not None:
        assert body["code"] == code, body
    return body


def assert_vault_doc(doc: dict, name: str, quota=None, append_only=False, retention_days=0) -> None:
    assert set(doc) == VAULT_FIELDS, doc
    assert doc["name"] == name
    assert doc["quota_bytes"] == quota
    assert doc["append_only"] is append_only
    assert doc["retention_days"] == retention_days
    assert set(doc["usage"]) == USAGE_FIELDS
    assert isinstance(doc["created"], str)
    datetime.fromisoformat(doc["created"].replace("Z", "+00:00"))


# -- create --------------------------------------------------------------------------


def test_create_vault_defaults(admin):
    name = uniq()
    r = admin.post("/v1/vaults", json={"name": name})
    assert r.status_code == 201, r.text
    assert r.headers["content-type"].startswith("application/json")
    doc = r.json()
    assert_vault_doc(doc, name)
    assert doc["usage"] == ZERO_USAGE


def test_create_vault_with_all_fields(admin):
    name = uniq()
    r = admin.post("/v1/vaults", json={"name": name, "quota_bytes": 12345, "append_only": True,
                                       "retention_days": 30})
    assert r.status_code == 201, r.text
    assert_vault_doc(r.json(), name, quota=12345, append_only=True, retention_days=30)
    assert r.json()["usage"] == ZERO_USAGE
    got = admin.get(f"/v1/vaults/{name}")
    assert got.status_code == 200
    assert got.json() == r.json()


def test_create_vault_null_quota(admin):
    name = uniq()
    r = admin.post("/v1/vaults", json={"name": name, "quota_bytes": None})
    assert r.status_code == 201, r.text
    assert r.json()["quota_bytes"] is None


def test_create_existing_vault_is_409_and_changes_nothing(admin):
    name = uniq()
    first = admin.post("/v1/vaults", json={"name": name, "quota_bytes": 100}).json()
    r = admin.post("/v1/vaults", json={"name": name, "quota_bytes": 999, "append_only": True})
    assert_problem(r, 409, "vault_exists")
    assert admin.get(f"/v1/vaults/{name}").json() == first


@pytest.mark.parametrize("name", [
    "ab",                    # too short (2)
    "a",
    "",
    "Abc",                   # uppercase
    "ABC",
    "abC",
    "-abc",                  # leading '-'
    "abc-",                  # trailing '-'
    "a" * 64,                # 64 chars
    "a_b",
    "a.b",
    "a b",
    "ab/cd",
    "ab%2Fcd",
    "..",
    "äbc",
    "abc\n",
    "abc\x00",
])
def test_create_vault_bad_name(admin, name):
    r = admin.post("/v1/vaults", json={"name": name})
    assert_problem(r, 400, "bad_name")
    names = [v["name"] for v in admin.get("/v1/vaults").json()["vaults"]]
    assert name not in names


@pytest.mark.parametrize("name", [123, None, ["abc"], {"n": "abc"}, True])
def test_create_vault_name_not_a_string(admin, name):
    r = admin.post("/v1/vaults", json={"name": name})
    assert_problem(r, 400, "bad_name")


def test_create_vault_without_name(admin):
    assert_problem(admin.post("/v1/vaults", json={"quota_bytes": 5}), 400, "bad_name")


@pytest.mark.parametrize("name", ["abc", "a-b", "0a0", "a" * 63, "1-2-3", "a--b"])
def test_create_vault_good_names_at_the_edges(admin, name):
    r = admin.post("/v1/vaults", json={"name": name})
    assert r.status_code == 201, r.text
    assert admin.get(f"/v1/vaults/{name}").json()["name"] == name


@pytest.mark.parametrize("field,value", [
    ("quota_bytes", -1),
    ("quota_bytes", "100"),
    ("quota_bytes", 1.5),
    ("quota_bytes", True),
    ("append_only", "yes"),
    ("append_only", 1),
    ("append_only", None),
    ("retention_days", -1),
    ("retention_days", "7"),
    ("retention_days", 36501),
    ("retention_days", True),
])
def test_create_vault_bad_field_values(admin, field, value):
    name = uniq()
    r = admin.post("/v1/vaults", json={"name": name, field: value})
    assert_problem(r, 400)
    assert_problem(admin.get(f"/v1/vaults/{name}"), 404, "no_such_vault")


def test_create_vault_unknown_field(admin):
    name = uniq()
    r = admin.post("/v1/vaults", json={"name": name, "colour": "blue"})
    assert_problem(r, 400, "bad_request")
    assert_problem(admin.get(f"/v1/vaults/{name}"), 404, "no_such_vault")


@pytest.mark.parametrize("body", [b"{", b"{'name': 'abc'}", b"not json", b'{"name": "abc",}', b"\xff\xfe"])
def test_create_vault_malformed_json(admin, body):
    r = admin.post("/v1/vaults", content=body, headers={"Content-Type": "application/json"})
    assert_problem(r, 400, "bad_json")


@pytest.mark.parametrize("body", [b"[]", b'"abc"', b"42", b"null"])
def test_create_vault_json_not_an_object(admin, body):
    r = admin.post("/v1/vaults", content=body, headers={"Content-Type": "application/json"})
    body = assert_problem(r, 400)
    assert body["code"] in ("bad_json", "bad_request")


# -- names in the path -----------------------------------------------------------------


@pytest.mark.parametrize("raw", [
    "ab%2Fcd",     # decodes to 'ab/cd'
    "abc%2F",
    "%2E%2E",      # '..'
    "..",
    "ab%252Fcd",   # decoded once: 'ab%2Fcd', still invalid
    "AB%43",
    "a%00b",
    "abc%0A",      # a trailing newline is no part of a name
    "%FF%FE%FD",   # not UTF-8
    "ab",
    "a" * 64,
    "-abc",
])
@pytest.mark.parametrize("method", ["GET", "PATCH", "DELETE"])
def test_bad_vault_name_in_path(srv, raw, method):
    body = b"{}" if method == "PATCH" else None
    status, headers, data = raw_request(srv, method, f"/v1/vaults/{raw}", body)
    assert status == 400, data
    assert headers["content-type"].startswith("application/problem+json")
    assert json.loads(data)["code"] == "bad_name"


def test_percent_encoded_vault_name_is_decoded_once(srv, admin):
    name = uniq("pct")
    create_vault(srv, name)
    enc = "".join(f"%{b:02X}" for b in name.encode())
    status, _, data = raw_request(srv, "GET", f"/v1/vaults/{enc}")
    assert status == 200, data
    assert json.loads(data)["name"] == name
    # encoded twice: decoded once it is '%61...', which is no vault name
    twice = enc.replace("%", "%25")
    status, _, data = raw_request(srv, "GET", f"/v1/vaults/{twice}")
    assert status == 400 and json.loads(data)["code"] == "bad_name"


# -- list and show ---------------------------------------------------------------------


def test_list_vaults(srv, admin):
    names = [uniq("list") for _ in range(3)]
    for n in names:
        create_vault(srv, n, quota_bytes=7)
    r = admin.get("/v1/vaults")
    assert r.status_code == 200
    body = r.json()
    assert set(body) >= {"vaults"}
    by_name = {v["name"]: v for v in body["vaults"]}
    for n in names:
        assert_vault_doc(by_name[n], n, quota=7)
    for v in body["vaults"]:
        assert set(v) == VAULT_FIELDS


def test_list_vaults_after_delete(srv, admin):
    name = uniq("gone")
    create_vault(srv, name)
    assert admin.delete(f"/v1/vaults/{name}").status_code == 204
    assert name not in [v["name"] for v in admin.get("/v1/vaults").json()["vaults"]]


@pytest.mark.parametrize("role", ["read", "append", "full"])
def test_show_vault_with_a_key_of_that_vault(srv, admin, role):
    name = uniq()
    create_vault(srv, name, quota_bytes=1000)
    secret = create_key(srv, name, role)
    r = srv.client(secret, verify=False).get(f"/v1/vaults/{name}")
    assert r.status_code == 200, r.text
    assert r.json() == admin.get(f"/v1/vaults/{name}").json()
    assert_vault_doc(r.json(), name, quota=1000)


def test_show_missing_vault(admin):
    assert_problem(admin.get(f"/v1/vaults/{uniq('nope')}"), 404, "no_such_vault")


def test_show_reports_usage(srv, admin):
    name = uniq()
    create_vault(srv, name)
    c = srv.client(verify=False)
    a, b = b"x" * 1000, b"y" * 24
    srv.put_chunk(c, name, a)
    srv.put_chunk(c, name, b)
    r = c.put(f"/v1/vaults/{name}/objects/o1", json={"chunks": [sha(a), sha(a), sha(b)]})
    assert r.status_code == 201, r.text
    usage = admin.get(f"/v1/vaults/{name}").json()["usage"]
    assert usage == {"stored_bytes": 1024, "logical_bytes": 2024, "chunks": 2, "objects": 1}


# -- update ----------------------------------------------------------------------------


def test_patch_vault(srv, admin):
    name = uniq()
    created = create_vault(srv, name)
    r = admin.patch(f"/v1/vaults/{name}", json={"quota_bytes": 5000})
    assert r.status_code == 200, r.text
    assert_vault_doc(r.json(), name, quota=5000)
    assert r.json()["created"] == created["created"]
    r = admin.patch(f"/v1/vaults/{name}", json={"append_only": True, "retention_days": 3})
    assert r.status_code == 200
    assert_vault_doc(r.json(), name, quota=5000, append_only=True, retention_days=3)
    r = admin.patch(f"/v1/vaults/{name}", json={"quota_bytes": None, "append_only": False,
                                                "retention_days": 0})
    assert_vault_doc(r.json(), name)
    assert admin.get(f"/v1/vaults/{name}").json() == r.json()


def test_patch_vault_empty_body_changes_nothing(srv, admin):
    name = uniq()
    before = create_vault(srv, name, quota_bytes=10)
    r = admin.patch(f"/v1/vaults/{name}", json={})
    assert r.status_code == 200
    assert r.json() == before


@pytest.mark.parametrize("body", [
    {"quota_bytes": -5},
    {"append_only": "true"},
    {"retention_days": -1},
    {"retention_days": 1.5},
    {"name": "other-name"},     # not a patchable field
    {"colour": "red"},
])
def test_patch_vault_bad_body(srv, admin, body):
    name = uniq()
    before = create_vault(srv, name)
    assert_problem(admin.patch(f"/v1/vaults/{name}", json=body), 400)
    assert admin.get(f"/v1/vaults/{name}").json() == before


def test_patch_vault_malformed_json(srv, admin):
    name = uniq()
    create_vault(srv, name)
    r = admin.patch(f"/v1/vaults/{name}", content=b'{"quota_bytes": ', headers={"Content-Type": "application/json"})
    assert_problem(r, 400, "bad_json")


def test_patch_missing_vault(admin):
    assert_problem(admin.patch(f"/v1/vaults/{uniq('nope')}", json={"quota_bytes": 1}), 404, "no_such_vault")


# -- delete ----------------------------------------------------------------------------


def test_delete_vault(srv, admin):
    name = uniq()
    create_vault(srv, name)
    srv.put_chunk(srv.client(verify=False), name, b"some bytes")
    r = admin.delete(f"/v1/vaults/{name}")
    assert r.status_code == 204
    assert r.content == b""
    assert_problem(admin.get(f"/v1/vaults/{name}"), 404, "no_such_vault")
    assert_problem(admin.delete(f"/v1/vaults/{name}"), 404, "no_such_vault")


def test_recreated_vault_starts_empty(srv, admin):
    name = uniq()
    create_vault(srv, name)
    cid = srv.put_chunk(srv.client(verify=False), name, b"old tenant data")
    assert admin.put(f"/v1/vaults/{name}/objects/k", json={"chunks": [cid]}).status_code == 201
    assert admin.delete(f"/v1/vaults/{name}").status_code == 204
    doc = create_vault(srv, name)
    assert doc["usage"] == ZERO_USAGE
    assert admin.head(f"/v1/vaults/{name}/chunks/{cid}").status_code == 404
    assert_problem(admin.get(f"/v1/vaults/{name}/objects/k"), 404, "no_such_object")
    assert admin.get(f"/v1/vaults/{name}/objects").json()["objects"] == []


@pytest.mark.parametrize("fields", [{"append_only": True}, {"retention_days": 1},
                                    {"append_only": True, "retention_days": 10}])
def test_delete_locked_vault_is_409(srv, admin, fields):
    name = uniq()
    create_vault(srv, name, **fields)
    assert_problem(admin.delete(f"/v1/vaults/{name}"), 409, "vault_locked")
    assert admin.get(f"/v1/vaults/{name}").status_code == 200
    # unlocking (an admin decision) makes it deletable
    assert admin.patch(f"/v1/vaults/{name}", json={"append_only": False, "retention_days": 0}).status_code == 200
    assert admin.delete(f"/v1/vaults/{name}").status_code == 204


# -- keys ------------------------------------------------------------------------------


@pytest.mark.parametrize("role", ["read", "append", "full"])
def test_create_key(srv, admin, role):
    name = uniq()
    create_vault(srv, name)
    r = admin.post(f"/v1/vaults/{name}/keys", json={"role": role, "label": "laptop"})
    assert r.status_code == 201, r.text
    doc = r.json()
    assert {"id", "secret", "role", "label"} <= set(doc)
    assert doc["role"] == role and doc["label"] == "laptop"
    assert isinstance(doc["secret"], str) and len(doc["secret"]) >= 32
    assert isinstance(doc["id"], str) and doc["id"]
    # the secret works at once
    assert srv.client(doc["secret"], verify=False).get(f"/v1/vaults/{name}").status_code == 200


def test_create_key_without_label(srv, admin):
    name = uniq()
    create_vault(srv, name)
    r = admin.post(f"/v1/vaults/{name}/keys", json={"role": "read"})
    assert r.status_code == 201, r.text
    assert r.json()["role"] == "read"
    assert r.json()["label"] in ("", None)


def test_secret_shown_once_and_not_listed(srv, admin):
    name = uniq()
    create_vault(srv, name)
    made = [admin.post(f"/v1/vaults/{name}/keys", json={"role": role, "label": f"l-{role}"}).json()
            for role in ("read", "append", "full")]
    r = admin.get(f"/v1/vaults/{name}/keys")
    assert r.status_code == 200
    body = r.json()
    assert set(body) >= {"keys"}
    assert len(body["keys"]) == 3
    for k in body["keys"]:
        assert set(k) == {"id", "role", "label", "created"}, k
        datetime.fromisoformat(k["created"].replace("Z", "+00:00"))
    assert {(k["id"], k["role"], k["label"]) for k in body["keys"]} == \
        {(m["id"], m["role"], m["label"]) for m in made}
    for m in made:
        assert m["secret"] not in r.text
        # nor anywhere else an admin can read
        assert m["secret"] not in admin.get(f"/v1/vaults/{name}").text
        assert m["secret"] not in admin.get("/v1/vaults").text


def test_secrets_are_distinct(srv, admin):
    name = uniq()
    create_vault(srv, name)
    docs = [admin.post(f"/v1/vaults/{name}/keys", json={"role": "full"}).json() for _ in range(5)]
    assert len({d["secret"] for d in docs}) == 5
    assert len({d["id"] for d in docs}) == 5


def test_keys_listed_per_vault(srv, admin):
    a, b = uniq(), uniq()
    create_vault(srv, a)
    create_vault(srv, b)
    ka = admin.post(f"/v1/vaults/{a}/keys", json={"role": "read"}).json()
    kb = admin.post(f"/v1/vaults/{b}/keys", json={"role": "full"}).json()
    assert [k["id"] for k in admin.get(f"/v1/vaults/{a}/keys").json()["keys"]] == [ka["id"]]
    assert [k["id"] for k in admin.get(f"/v1/vaults/{b}/keys").json()["keys"]] == [kb["id"]]


@pytest.mark.parametrize("body", [
    {"role": "admin"},
    {"role": "write"},
    {"role": "READ"},
    {"role": ""},
    {"role": None},
    {"role": 1},
    {},
    {"label": "no role"},
    {"role": "read", "label": 5},
    {"role": "read", "label": "x" * 10000},
    {"role": "read", "expires": "never"},
])
def test_create_key_bad_body(srv, admin, body):
    name = uniq()
    create_vault(srv, name)
    assert_problem(admin.post(f"/v1/vaults/{name}/keys", json=body), 400)
    assert admin.get(f"/v1/vaults/{name}/keys").json()["keys"] == []


def test_create_key_malformed_json(srv, admin):
    name = uniq()
    create_vault(srv, name)
    r = admin.post(f"/v1/vaults/{name}/keys", content=b'{"role": "read"', headers={"Content-Type": "application/json"})
    assert_problem(r, 400, "bad_json")


def test_keys_of_missing_vault(admin):
    name = uniq("nope")
    assert_problem(admin.post(f"/v1/vaults/{name}/keys", json={"role": "read"}), 404, "no_such_vault")
    assert_problem(admin.get(f"/v1/vaults/{name}/keys"), 404, "no_such_vault")


def test_revoke_key(srv, admin):
    name = uniq()
    create_vault(srv, name)
    keep = admin.post(f"/v1/vaults/{name}/keys", json={"role": "read"}).json()
    drop = admin.post(f"/v1/vaults/{name}/keys", json={"role": "full"}).json()
    r = admin.delete(f"/v1/vaults/{name}/keys/{drop['id']}")
    assert r.status_code == 204
    assert r.content == b""
    assert [k["id"] for k in admin.get(f"/v1/vaults/{name}/keys").json()["keys"]] == [keep["id"]]
    assert_problem(admin.delete(f"/v1/vaults/{name}/keys/{drop['id']}"), 404, "no_such_key")


def test_revoke_key_through_another_vault_is_404(srv, admin):
    a, b = uniq(), uniq()
    create_vault(srv, a)
    create_vault(srv, b)
    kb = admin.post(f"/v1/vaults/{b}/keys", json={"role": "full"}).json()
    assert_problem(admin.delete(f"/v1/vaults/{a}/keys/{kb['id']}"), 404, "no_such_key")
    assert srv.client(kb["secret"], verify=False).get(f"/v1/vaults/{b}").status_code == 200


@pytest.mark.parametrize("key_id", ["doesnotexist", "0000000000000000", "..", "a%2Fb"])
def test_revoke_unknown_key(srv, admin, key_id):
    name = uniq()
    create_vault(srv, name)
    status, headers, data = raw_request(srv, "DELETE", f"/v1/vaults/{name}/keys/{key_id}")
    assert status in (400, 404), data
    assert json.loads(data)["code"] in ("no_such_key", "bad_name")
