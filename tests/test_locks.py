"""Append-only vaults and retention against a real server: every refusal,
who may weaken a lock, and the audit line each change leaves in the log."""

from __future__ import annotations

import json
import time

import pytest

from tests.server import Server


def audit_lines(s: Server) -> list[dict]:
    out = []
    for line in s.log_path.read_text(errors="replace").splitlines():
        try:
            doc = json.loads(line)
        except ValueError:
            continue
        if doc.get("logger") == "objvault.audit":
            out.append(doc)
    return out


def wait_audit(s: Server, msg: str, n: int = 1) -> list[dict]:
    deadline = time.monotonic() + 5
    while True:
        found = [d for d in audit_lines(s) if d["msg"] == msg]
        if len(found) >= n:
            return found
        assert time.monotonic() < deadline, f"no audit line {msg!r} in {s.log_path}"
        time.sleep(0.02)


def problem(r, status: int, code: str) -> None:
    assert r.status_code == status, (r.status_code, r.text)
    assert r.headers["Content-Type"] == "application/problem+json"
    assert r.json()["code"] == code, r.text


@pytest.fixture
def srv(make_server):
    return make_server(env={"OBJVAULT_GC_INTERVAL_SECONDS": "0", "OBJVAULT_GC_GRACE_SECONDS": "0"})


def test_append_only_refusals(srv):
    s = srv
    s.create_vault("aonly", append_only=True)
    full, append, read = (s.create_key("aonly", role) for role in ("full", "append", "read"))
    c = {"admin": s.admin, "full": s.client(full), "append": s.client(append), "read": s.client(read)}
    cid = s.put_chunk(c["append"], "aonly", b"backup data")
    other = s.put_chunk(c["append"], "aonly", b"other data")
    assert c["append"].put("/v1/vaults/aonly/objects/snap", json={"chunks": [cid]}).status_code == 201
    for who in ("admin", "full"):
        problem(c[who].delete("/v1/vaults/aonly/objects/snap"), 403, "append_only")
        problem(c[who].put("/v1/vaults/aonly/objects/snap", json={"chunks": [other]}), 403, "append_only")
    problem(c["append"].delete("/v1/vaults/aonly/objects/snap"), 403, "forbidden")
    # The vault's lock is checked before the key's role.
    problem(c["append"].put("/v1/vaults/aonly/objects/snap", json={"chunks": [other]}), 403, "append_only")
    problem(c["read"].put("/v1/vaults/aonly/objects/new", json={"chunks": [cid]}), 403, "forbidden")
    problem(c["read"].put(f"/v1/vaults/aonly/chunks/{'0' * 64}", content=b""), 403, "forbidden")
    problem(c["admin"].delete("/v1/vaults/aonly"), 409, "vault_locked")
    # New objects are fine, and nothing was changed by the refusals.
    assert c["full"].put("/v1/vaults/aonly/objects/snap2", json={"chunks": [other]}).status_code == 201
    assert c["read"].get("/v1/vaults/aonly/objects/snap").json()["chunks"] == [cid]
    # GC never takes a chunk an append-only vault's object holds.
    assert c["admin"].post("/v1/admin/gc", json={}).json()["chunks_deleted"] == 0
    assert c["read"].get(f"/v1/vaults/aonly/chunks/{cid}").content == b"backup data"
    # Only the admin may lift append-only; keys, even "full", may not.
    for who in ("full", "append", "read"):
        problem(c[who].patch("/v1/vaults/aonly", json={"append_only": False}), 403, "forbidden")
    assert c["admin"].get("/v1/vaults/aonly").json()["append_only"] is True
    r = c["admin"].patch("/v1/vaults/aonly", json={"append_only": False})
    assert r.status_code == 200 and r.json()["append_only"] is False
    [line] = wait_audit(s, "vault lock weakened")
    assert line["level"] == "warning" and line["who"] == "admin" and line["vault"] == "aonly"
    assert line["before"] == {"append_only": True} and line["after"] == {"append_only": False}
    # Now (and only now) deletion and overwrite work.
    assert c["full"].put("/v1/vaults/aonly/objects/snap", json={"chunks": [other]}).status_code == 201
    assert c["full"].delete("/v1/vaults/aonly/objects/snap").status_code == 204
    # Turning it back on is logged as an ordinary update, not a weakening.
    assert c["admin"].patch("/v1/vaults/aonly", json={"append_only": True}).status_code == 200
    assert any(d["msg"] == "vault updated" and d["after"] == {"append_only": True} for d in audit_lines(s))
    assert len(wait_audit(s, "vault lock weakened")) == 1
    problem(c["full"].delete("/v1/vaults/aonly/objects/snap2"), 403, "append_only")


def test_retention_refusals(srv):
    s = srv
    s.create_vault("ret", retention_days=30)
    full = s.create_key("ret", "full")
    k, a = s.client(full), s.admin
    cid = s.put_chunk(k, "ret", b"kept for 30 days")
    other = s.put_chunk(k, "ret", b"something else")
    assert k.put("/v1/vaults/ret/objects/daily", json={"chunks": [cid]}).status_code == 201
    for c in (k, a):
        problem(c.delete("/v1/vaults/ret/objects/daily"), 403, "retention")
        problem(c.put("/v1/vaults/ret/objects/daily", json={"chunks": [other]}), 403, "retention")
    problem(a.delete("/v1/vaults/ret"), 409, "vault_locked")
    assert "until" in k.delete("/v1/vaults/ret/objects/daily").json()["detail"]
    # Lowering retention needs the admin token and is audited as a weakening.
    problem(k.patch("/v1/vaults/ret", json={"retention_days": 0}), 403, "forbidden")
    assert a.patch("/v1/vaults/ret", json={"retention_days": 90}).status_code == 200   # stronger: fine
    assert a.patch("/v1/vaults/ret", json={"retention_days": 1}).status_code == 200
    [line] = wait_audit(s, "vault lock weakened")
    assert line["before"] == {"retention_days": 90} and line["after"] == {"retention_days": 1}
    problem(k.delete("/v1/vaults/ret/objects/daily"), 403, "retention")   # still 1 day
    assert a.patch("/v1/vaults/ret", json={"retention_days": 0}).status_code == 200
    assert len(wait_audit(s, "vault lock weakened", 2)) == 2
    assert k.put("/v1/vaults/ret/objects/daily", json={"chunks": [other]}).status_code == 201
    assert k.delete("/v1/vaults/ret/objects/daily").status_code == 204
    # With no lock left, the vault can go; its data is collected as a dead vault.
    assert a.delete("/v1/vaults/ret").status_code == 204
    wait_audit(s, "vault deleted")
    st = a.post("/v1/admin/gc", json={}).json()
    assert st["dead_vaults_purged"] == 1 and st["dead_vault_chunks_deleted"] == 2


def test_both_locks_and_bad_patches(srv):
    s = srv
    s.create_vault("both", append_only=True, retention_days=7)
    a = s.admin
    cid = s.put_chunk(a, "both", b"x" * 100)
    assert a.put("/v1/vaults/both/objects/o", json={"chunks": [cid]}).status_code == 201
    problem(a.delete("/v1/vaults/both/objects/o"), 403, "append_only")
    assert a.patch("/v1/vaults/both", json={"append_only": False}).status_code == 200
    problem(a.delete("/v1/vaults/both/objects/o"), 403, "retention")   # the other lock still holds
    problem(a.delete("/v1/vaults/both"), 409, "vault_locked")
    for bad in ({"append_only": "no"}, {"retention_days": -1}, {"retention_days": True}, {"name": "x"}):
        problem(a.patch("/v1/vaults/both", json=bad), 400, "bad_request")
    assert a.get("/v1/vaults/both").json()["retention_days"] == 7
    problem(s.client("not-a-token").patch("/v1/vaults/both", json={"retention_days": 0}), 401, "unauthorized")


def test_the_audit_log_keeps_every_change_and_filters(srv):
    """GET /v1/admin/audit: every audited change, newest first, filtered by vault,
    action and time; it survives a restart (each line is written with its change)."""
    s, a = srv, srv.admin
    s.create_vault("aud-a", append_only=True)
    s.create_vault("aud-b")
    key = s.create_key("aud-a", "read")
    key_id = key[4:].split("_")[0]
    assert a.patch("/v1/vaults/aud-a", json={"append_only": False}).status_code == 200
    assert a.delete(f"/v1/vaults/aud-a/keys/{key_id}").status_code == 204
    assert a.delete("/v1/vaults/aud-b").status_code == 204
    s.stop()
    s.start()
    a = s.admin
    lines = a.get("/v1/admin/audit").json()["lines"]
    assert [(d["action"], d["vault"]) for d in lines] == [
        ("vault.deleted", "aud-b"), ("key.revoked", "aud-a"), ("vault.lock_weakened", "aud-a"),
        ("key.created", "aud-a"), ("vault.created", "aud-b"), ("vault.created", "aud-a")]
    assert all(d["who"] == "admin" for d in lines)
    weakened = lines[2]
    assert weakened["details"] == {"before": {"append_only": True}, "after": {"append_only": False}}
    assert lines[1]["details"] == {"key": key_id} and lines[3]["details"] == {"key": key_id, "role": "read"}
    assert [d["seq"] for d in lines] == sorted((d["seq"] for d in lines), reverse=True)

    def actions(**query) -> list[str]:
        r = a.get("/v1/admin/audit", params=query)
        assert r.status_code == 200, r.text
        return [d["action"] for d in r.json()["lines"]]

    assert actions(vault="aud-a") == ["key.revoked", "vault.lock_weakened", "key.created", "vault.created"]
    assert actions(action="key") == ["key.revoked", "key.created"]
    assert actions(action="vault.lock_weakened", vault="aud-b") == []
    assert actions(vault="aud-a", limit="1") == ["key.revoked"]
    today = lines[0]["at"][:10]
    assert len(actions(since=today, until=today)) == 6
    assert actions(until="2001-01-01") == [] and actions(since="2999-01-01T00:00:00Z") == []
    assert len(actions(since=lines[2]["at"])) >= 3
    for bad in ({"since": "yesterday"}, {"until": "2026-13-01"}, {"action": "vault.exploded"}, {"limit": "-1"},
                {"limit": "1001"}):
        problem(a.get("/v1/admin/audit", params=bad), 400, "bad_request")
