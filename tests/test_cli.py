"""The ``objvault`` admin commands against a running server (API.md, "Configuration", CLI)."""

from __future__ import annotations

import json
import os
import subprocess
import uuid

import httpx
import pytest

from tests.apihelpers import admin_of, create_vault  # noqa: F401
from tests.server import OBJVAULT, Server, free_port


def uniq(prefix: str = "cli") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def cli(srv: Server | None, *args: str, token: str | None = "test-admin-token", url: bool = True,
        env: dict | None = None, cwd=None) -> subprocess.CompletedProcess:
    e = {k: v for k, v in os.environ.items() if not k.startswith("OBJVAULT_")}
    if token is not None:
        e["OBJVAULT_ADMIN_TOKEN"] = token
    e.update(env or {})
    argv = [OBJVAULT, *args]
    if url and srv is not None:
        argv += ["--url", srv.url]
    return subprocess.run(argv, env=e, capture_output=True, text=True, timeout=60, cwd=cwd)


def ok(p: subprocess.CompletedProcess):
    assert p.returncode == 0, (p.returncode, p.stdout, p.stderr)
    return p


def test_vault_create_list_show(srv):
    name = uniq()
    doc = json.loads(ok(cli(srv, "vault", "create", name)).stdout)
    assert doc["name"] == name
    assert doc["usage"] == {"stored_bytes": 0, "logical_bytes": 0, "chunks": 0, "objects": 0}
    assert admin_of(srv).get(f"/v1/vaults/{name}").status_code == 200

    listed = json.loads(ok(cli(srv, "vault", "list")).stdout)
    assert name in [v["name"] for v in listed["vaults"]]

    shown = json.loads(ok(cli(srv, "vault", "show", name)).stdout)
    assert shown == admin_of(srv).get(f"/v1/vaults/{name}").json()


def test_vault_update_and_delete(srv):
    name = uniq()
    ok(cli(srv, "vault", "create", name, "--append-only", "true"))
    p = cli(srv, "vault", "delete", name)
    assert p.returncode != 0 and "vault_locked" in p.stderr
    doc = json.loads(ok(cli(srv, "vault", "update", name, "--append-only", "false", "--quota-bytes", "77")).stdout)
    assert (doc["append_only"], doc["quota_bytes"]) == (False, 77)
    ok(cli(srv, "vault", "delete", name))
    assert admin_of(srv).get(f"/v1/vaults/{name}").status_code == 404


def test_vault_create_with_fields(srv):
    name = uniq()
    doc = json.loads(ok(cli(srv, "vault", "create", name, "--quota-bytes", "1000", "--append-only", "true",
                            "--retention-days", "3")).stdout)
    assert (doc["quota_bytes"], doc["append_only"], doc["retention_days"]) == (1000, True, 3)


@pytest.mark.parametrize("args,code", [
    (("vault", "show", "no-such-vault-here"), "no_such_vault"),
    (("vault", "show", "BAD"), "bad_name"),
    (("vault", "create", "x_y"), "bad_name"),
    (("key", "create", "no-such-vault-here", "--role", "read"), "no_such_vault"),
    (("key", "list", "no-such-vault-here"), "no_such_vault"),
])
def test_errors_print_the_problem_code(srv, args, code):
    p = cli(srv, *args)
    assert p.returncode != 0
    assert code in p.stderr, (p.stdout, p.stderr)


def test_vault_create_existing(srv):
    name = uniq()
    ok(cli(srv, "vault", "create", name))
    p = cli(srv, "vault", "create", name)
    assert p.returncode != 0
    assert "vault_exists" in p.stderr


def test_key_create_list_revoke(srv):
    name = uniq()
    create_vault(srv, name)
    made = json.loads(ok(cli(srv, "key", "create", name, "--role", "append", "--label", "nas")).stdout)
    assert made["role"] == "append" and made["label"] == "nas" and made["secret"]
    c = srv.client(made["secret"], verify=False)
    assert c.get(f"/v1/vaults/{name}").status_code == 200

    p = ok(cli(srv, "key", "list", name))
    keys = json.loads(p.stdout)["keys"]
    assert [(k["id"], k["role"], k["label"]) for k in keys] == [(made["id"], "append", "nas")]
    assert made["secret"] not in p.stdout

    ok(cli(srv, "key", "revoke", name, made["id"]))
    assert c.get(f"/v1/vaults/{name}").status_code == 401
    assert json.loads(ok(cli(srv, "key", "list", name)).stdout)["keys"] == []

    p = cli(srv, "key", "revoke", name, made["id"])
    assert p.returncode != 0
    assert "no_such_key" in p.stderr


@pytest.mark.parametrize("role", ["read", "full"])
def test_key_roles(srv, role):
    name = uniq()
    create_vault(srv, name)
    made = json.loads(ok(cli(srv, "key", "create", name, "--role", role)).stdout)
    assert made["role"] == role


def test_unknown_role_is_refused(srv):
    name = uniq()
    create_vault(srv, name)
    p = cli(srv, "key", "create", name, "--role", "owner")
    assert p.returncode != 0
    assert admin_of(srv).get(f"/v1/vaults/{name}/keys").json()["keys"] == []


def test_wrong_admin_token(srv):
    p = cli(srv, "vault", "list", token="not-the-token")
    assert p.returncode != 0
    assert "401" in p.stderr or "unauthorized" in p.stderr


def test_url_from_listen(srv):
    p = ok(cli(srv, "vault", "list", url=False, env={"OBJVAULT_LISTEN": f"127.0.0.1:{srv.port}"}))
    assert "vaults" in json.loads(p.stdout)


def test_admin_token_from_the_token_file(srv, tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    (data / "admin.token").write_text(srv.admin_token + "\n")
    p = ok(cli(srv, "vault", "list", token=None, env={"OBJVAULT_DATA_DIRS": str(data)}))
    assert "vaults" in json.loads(p.stdout)


def test_no_admin_token_anywhere(srv, tmp_path):
    p = cli(srv, "vault", "list", token=None, env={"OBJVAULT_DATA_DIRS": str(tmp_path / "empty")})
    assert p.returncode != 0
    assert "token" in p.stderr.lower()


def test_server_unreachable(tmp_path):
    p = cli(None, "vault", "list", "--url", f"http://127.0.0.1:{free_port()}")
    assert p.returncode != 0
    assert p.stderr.strip()


def test_help_lists_the_commands():
    p = subprocess.run([OBJVAULT, "--help"], capture_output=True, text=True, timeout=60)
    assert p.returncode == 0
    import re
    m = re.search(r"\{([a-z,-]+)\}", p.stdout)
    assert m, p.stdout
    commands = set(m.group(1).split(","))
    assert {"serve", "vault", "key", "usage", "gc", "scrub", "replication", "restore", "fsck"} <= commands
    for group, actions in (("vault", {"create", "list", "show", "update", "delete"}),
                           ("key", {"create", "list", "revoke"})):
        p = subprocess.run([OBJVAULT, group, "--help"], capture_output=True, text=True, timeout=60)
        m = re.search(r"\{([a-z,-]+)\}", p.stdout)
        assert m and actions <= set(m.group(1).split(",")), p.stdout
