"""The ``objvault`` admin commands against a running server (API.md, "Configuration", CLI)."""

from __future__ import annotations

import fcntl
import json
import os
import pty
import re
import struct
import subprocess
import termios
import uuid

import httpx
import pytest

from tests.apihelpers import admin_of, create_key, create_vault  # noqa: F401
from tests.fsckhelpers import run_fsck
from tests.server import OBJVAULT, Server, free_port, sha


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
    doc = json.loads(ok(cli(srv, "vault", "create", name, "--json")).stdout)
    assert doc["name"] == name
    assert doc["usage"] == {"stored_bytes": 0, "logical_bytes": 0, "chunks": 0, "objects": 0}
    assert admin_of(srv).get(f"/v1/vaults/{name}").status_code == 200

    listed = json.loads(ok(cli(srv, "vault", "list", "--json")).stdout)
    assert name in [v["name"] for v in listed["vaults"]]

    shown = json.loads(ok(cli(srv, "vault", "show", name, "--json")).stdout)
    assert shown == admin_of(srv).get(f"/v1/vaults/{name}").json()


def test_vault_update_and_delete(srv):
    name = uniq()
    ok(cli(srv, "vault", "create", name, "--append-only", "true"))
    p = cli(srv, "vault", "delete", name)
    assert p.returncode != 0 and "vault_locked" in p.stderr
    doc = json.loads(ok(cli(srv, "vault", "update", name, "--append-only", "false", "--quota-bytes", "77", "--json")).stdout)
    assert (doc["append_only"], doc["quota_bytes"]) == (False, 77)
    ok(cli(srv, "vault", "delete", name))
    assert admin_of(srv).get(f"/v1/vaults/{name}").status_code == 404


def test_vault_create_with_fields(srv):
    name = uniq()
    doc = json.loads(ok(cli(srv, "vault", "create", name, "--quota-bytes", "1000", "--append-only", "true",
                            "--retention-days", "3", "--json")).stdout)
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
    made = json.loads(ok(cli(srv, "key", "create", name, "--role", "append", "--label", "nas", "--json")).stdout)
    assert made["role"] == "append" and made["label"] == "nas" and made["secret"]
    c = srv.client(made["secret"], verify=False)
    assert c.get(f"/v1/vaults/{name}").status_code == 200

    p = ok(cli(srv, "key", "list", name, "--json"))
    keys = json.loads(p.stdout)["keys"]
    assert [(k["id"], k["role"], k["label"]) for k in keys] == [(made["id"], "append", "nas")]
    assert made["secret"] not in p.stdout

    ok(cli(srv, "key", "revoke", name, made["id"]))
    assert c.get(f"/v1/vaults/{name}").status_code == 401
    assert json.loads(ok(cli(srv, "key", "list", name, "--json")).stdout)["keys"] == []

    p = cli(srv, "key", "revoke", name, made["id"])
    assert p.returncode != 0
    assert "no_such_key" in p.stderr


@pytest.mark.parametrize("role", ["read", "full"])
def test_key_roles(srv, role):
    name = uniq()
    create_vault(srv, name)
    made = json.loads(ok(cli(srv, "key", "create", name, "--role", role, "--json")).stdout)
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
    p = ok(cli(srv, "vault", "list", "--json", url=False, env={"OBJVAULT_LISTEN": f"127.0.0.1:{srv.port}"}))
    assert "vaults" in json.loads(p.stdout)


def test_admin_token_from_the_token_file(srv, tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    (data / "admin.token").write_text(srv.admin_token + "\n")
    p = ok(cli(srv, "vault", "list", "--json", token=None, env={"OBJVAULT_DATA_DIRS": str(data)}))
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
    m = re.search(r"\{([a-z,-]+)\}", p.stdout)
    assert m, p.stdout
    commands = set(m.group(1).split(","))
    assert {"serve", "vault", "key", "usage", "gc", "scrub", "replication", "restore", "fsck", "status"} <= commands
    for group, actions in (("vault", {"create", "list", "show", "update", "delete"}),
                           ("key", {"create", "list", "revoke"})):
        p = subprocess.run([OBJVAULT, group, "--help"], capture_output=True, text=True, timeout=60)
        m = re.search(r"\{([a-z,-]+)\}", p.stdout)
        assert m and actions <= set(m.group(1).split(",")), p.stdout


# -- output for people: tables by default, the API's document with --json -------------


JUST_NOW = re.compile(r"now|a second ago|\d+ seconds ago")
"""The age of something made during the test."""


def filled_vault(srv) -> str:
    """A vault with a 1 GiB quota and 3 MiB in one chunk."""
    name = uniq()
    create_vault(srv, name, quota_bytes=1 << 30)
    body = os.urandom(3 << 20)
    c = srv.client(create_key(srv, name), verify=False)
    assert c.put(f"/v1/vaults/{name}/chunks/{sha(body)}", content=body).status_code in (200, 201)
    return name


def row_of(text: str, first: str) -> list[str]:
    """The cells of the table row that starts with ``first`` (cells are separated by two spaces or more)."""
    line = next(line for line in text.splitlines() if line.startswith(first + " "))
    return re.split(r"\s{2,}", line.strip())


def test_vault_list_is_a_table_with_sizes_and_ages(srv):
    name = filled_vault(srv)
    p = ok(cli(srv, "vault", "list"))
    assert p.stdout.splitlines()[0].split() == ["VAULT", "STORED", "QUOTA", "USED", "OBJECTS", "APPEND-ONLY",
                                                "RETENTION", "CREATED"]
    *cells, created = row_of(p.stdout, name)
    assert cells == [name, "3.0 MiB", "1.0 GiB", "0 %", "0", "no", "-"]
    assert JUST_NOW.fullmatch(created), created
    assert p.stderr == ""


def test_vault_show_and_json_are_the_same_vault(srv):
    name = filled_vault(srv)
    table = ok(cli(srv, "vault", "show", name)).stdout
    assert row_of(table, "stored") == ["stored", "3.0 MiB"]
    assert row_of(table, "quota") == ["quota", "1.0 GiB (0 % used)"]
    assert json.loads(ok(cli(srv, "vault", "show", name, "--json")).stdout) == \
        admin_of(srv).get(f"/v1/vaults/{name}").json()


def test_key_create_prints_the_secrets_once_and_list_omits_them(srv):
    name = uniq()
    create_vault(srv, name)
    made = ok(cli(srv, "key", "create", name, "--role", "read", "--label", "nas")).stdout
    secret = row_of(made, "secret")[1]
    assert srv.client(secret, verify=False).get(f"/v1/vaults/{name}").status_code == 200
    assert row_of(made, "S3 access key id")[1].startswith("OVK")
    listed = ok(cli(srv, "key", "list", name)).stdout
    key_id = row_of(made, "key")[1]
    *cells, created = row_of(listed, key_id)
    assert cells == [key_id, "read", "nas"] and JUST_NOW.fullmatch(created), created
    assert secret not in listed


def test_usage_and_gc_tables(srv):
    name = filled_vault(srv)
    usage = ok(cli(srv, "usage")).stdout
    assert row_of(usage, name) == [name, "3.0 MiB", "0 Bytes", "0.00x", "0", "1", "1.0 GiB"]
    assert json.loads(ok(cli(srv, "usage", "--json")).stdout)["vaults"] == \
        admin_of(srv).get("/v1/admin/usage").json()["vaults"]
    gc = ok(cli(srv, "gc", "--dry-run")).stdout
    assert row_of(gc, "dry run") == ["dry run", "yes"]
    assert row_of(gc, "would free bytes")[1].endswith("Bytes") or row_of(gc, "would free bytes")[1].endswith("iB")


def test_status_one_screen_and_json(srv):
    filled_vault(srv)
    p = ok(cli(srv, "status"))
    lines = p.stdout.splitlines()
    assert lines[0] == "ready"
    assert re.match(r"^\d+ vaults, [\d.]+ MiB stored", lines[1]), lines[1]
    assert row_of(p.stdout, str(srv.data_dirs[0]))[1].endswith("iB")  # free space, in binary units
    assert "no replication targets configured" in p.stdout
    assert row_of(p.stdout, "gc")[0] == "gc" and "JOB" in p.stdout
    assert "alerts:" in p.stdout  # a server without /v1/admin/alerts is tolerated
    doc = json.loads(ok(cli(srv, "status", "--json")).stdout)
    assert doc["readyz"] == {"status": "ready"}
    assert doc["replication"] == admin_of(srv).get("/v1/admin/replication").json()
    assert [d["dir"] for d in doc["data_dirs"]] == [str(d) for d in srv.data_dirs]
    assert {j["name"] for j in doc["jobs"]["jobs"]} >= {"gc", "scrub"}


def test_objvault_url_is_honoured(srv):
    # The listen address names no server: only OBJVAULT_URL leads to this one.
    env = {"OBJVAULT_URL": srv.url, "OBJVAULT_LISTEN": f"127.0.0.1:{free_port()}"}
    assert "vaults" in json.loads(ok(cli(srv, "vault", "list", "--json", url=False, env=env)).stdout)
    # --url is stronger than the environment.
    p = cli(None, "vault", "list", "--url", f"http://127.0.0.1:{free_port()}", env={"OBJVAULT_URL": srv.url})
    assert p.returncode != 0 and "cannot reach" in p.stderr


def test_a_bad_objvault_url_is_named():
    p = cli(None, "vault", "list", env={"OBJVAULT_URL": "127.0.0.1:8470"})
    assert p.returncode != 0 and "'url'" in p.stderr


def test_scrub_progress_stays_out_of_a_pipe(srv):
    filled_vault(srv)
    p = ok(cli(srv, "scrub", "--wait", "--interval", "0.05"))
    assert p.stderr == ""
    assert row_of(p.stdout, "state") == ["state", "idle"]


def on_a_terminal(*argv: str, env: dict) -> tuple[subprocess.CompletedProcess, bytes]:
    """Run ``objvault argv`` with stderr on a 120-column terminal: its result and what the terminal showed."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
    e = {k: v for k, v in os.environ.items() if not k.startswith("OBJVAULT_")}
    proc = subprocess.run([OBJVAULT, *argv], env={**e, **env}, stdout=subprocess.PIPE, stderr=slave, timeout=120)
    os.close(slave)
    shown = b""
    while True:
        try:
            part = os.read(master, 65536)
        except OSError:  # EIO: the terminal's other end is closed and drained
            break
        if not part:
            break
        shown += part
    os.close(master)
    return proc, shown


def test_progress_bars_on_a_terminal(srv):
    filled_vault(srv)
    env = {"OBJVAULT_ADMIN_TOKEN": srv.admin_token, "OBJVAULT_URL": srv.url}
    proc, shown = on_a_terminal("scrub", "--wait", env=env)
    assert proc.returncode == 0
    assert re.search(rb"scrub: +\d+%\|.*iB", shown), shown  # the bar: percentage and sizes (rate, ETA)
    assert b"scrub:" not in proc.stdout
    proc, shown = on_a_terminal("gc", "--dry-run", "--json", env=env)
    assert proc.returncode == 0 and json.loads(proc.stdout)["dry_run"] is True
    assert b"gc:" in shown


def test_fsck_progress_on_a_terminal_only(mkserver):
    s = mkserver("fsck")
    create_vault(s, "acme")
    s.stop()
    piped = run_fsck(s)
    assert piped.returncode == 0 and json.loads(piped.stdout)["ok"] is True
    assert piped.stderr == ""
    proc, shown = on_a_terminal("fsck", "--rebuild-index", env={"OBJVAULT_DATA_DIRS": str(s.data_dirs[0])})
    assert proc.returncode == 0 and json.loads(proc.stdout)["rebuilt"] is True
    assert b"fsck chunk entries" in shown and b"fsck segments" in shown


def test_bucket_commands_table_and_json(srv):
    name = uniq()
    create_vault(srv, name)
    made = ok(cli(srv, "bucket", "create", name, "photos")).stdout
    assert JUST_NOW.fullmatch(row_of(made, "created")[1]) and row_of(made, "bucket") == ["bucket", "photos"]
    assert row_of(made, "vault") == ["vault", name]
    doc = json.loads(ok(cli(srv, "bucket", "create", name, "music", "--json")).stdout)
    assert doc["name"] == "music" and doc["vault"] == name
    listed = ok(cli(srv, "bucket", "list", name)).stdout
    assert listed.splitlines()[0].split() == ["BUCKET", "CREATED"]
    assert row_of(listed, "music")[0] == "music" and JUST_NOW.fullmatch(row_of(listed, "photos")[1])
    assert json.loads(ok(cli(srv, "bucket", "list", name, "--json")).stdout) == \
        admin_of(srv).get(f"/v1/vaults/{name}/buckets").json()
    assert ok(cli(srv, "bucket", "delete", name, "music")).stdout.strip() == "bucket music deleted"
    assert [b["name"] for b in json.loads(ok(cli(srv, "bucket", "list", name, "--json")).stdout)["buckets"]] == \
        ["photos"]


def test_replication_status_table_json_and_restore_progress(mkserver, tmp_path):
    """A local target: its status as a table and as the API's document; a restore
    from it on another server shows its bar on a terminal and its result on stdout."""
    from tests.replhelpers import wait_drained

    target = f'[[replication.targets]]\nname = "nas"\nkind = "local"\nurl = "file://{tmp_path / "replica"}"\n'
    a = mkserver("a", config=target)
    create_vault(a, "acme")
    key = create_key(a, "acme")
    body = os.urandom(300_000)
    c = a.client(key)
    assert c.put(f"/v1/vaults/acme/chunks/{sha(body)}", content=body).status_code in (200, 201)
    assert c.put("/v1/vaults/acme/objects/disk.img", json={"chunks": [sha(body)]}).status_code == 201
    wait_drained(a, "nas")
    shown = ok(cli(a, "replication", "status")).stdout
    assert shown.splitlines()[0].split()[:5] == ["TARGET", "KIND", "URL", "PENDING", "BACKLOG"]
    assert row_of(shown, "nas")[:5] == ["nas", "local", f"file://{tmp_path / 'replica'}", "0", "0 Bytes"]
    assert json.loads(ok(cli(a, "replication", "status", "--json")).stdout)["targets"][0]["name"] == "nas"
    a.stop()

    b = mkserver("b", config=target)
    env = {"OBJVAULT_ADMIN_TOKEN": b.admin_token, "OBJVAULT_URL": b.url}
    proc, terminal = on_a_terminal("restore", "acme", "--from", "nas", env=env)
    assert proc.returncode == 0, (proc.stdout, terminal)
    assert b"restore acme" in terminal and b"objects" in terminal
    out = proc.stdout.decode()
    assert row_of(out, "state") == ["state", "done"] and row_of(out, "objects") == ["objects", "1 of 1"]
    assert b"restore acme" not in proc.stdout
    assert b.admin.get(f"/v1/vaults/acme/chunks/{sha(body)}").content == body  # keys are not restored
