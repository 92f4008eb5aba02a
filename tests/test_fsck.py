"""objvault fsck: the segments alone are enough to rebuild every chunk location."""

import os
import subprocess

from tests.fsckhelpers import fsck
from tests.server import OBJVAULT, sha
from vault.meta import Index
from vault.meta.schema import chunk_digest


def test_fsck_finds_and_rebuilds_a_lost_chunk_entry(server):
    server.create_vault("acme")
    c = server.client(server.create_key("acme", "full"))
    small = [os.urandom(3000 + i) for i in range(10)]
    ids = [server.put_chunk(c, "acme", d) for d in small]
    assert c.put("/v1/vaults/acme/objects/o", json={"chunks": ids + ids[:3]}).status_code == 201
    usage = server.admin.get("/v1/vaults/acme").json()["usage"]
    server.stop()

    code, report = fsck(server)
    assert code == 0 and report["ok"] and report["chunk_entries"] == 10

    # Lose one chunk entry from the index (as a damaged index would).
    idx = Index(server.data_dirs[0] / "index")
    key = next(k for k, _ in idx.all_chunks() if chunk_digest(k) == bytes.fromhex(ids[4]))
    idx.run_sync(lambda txn: txn.delete_chunk_at(key))
    idx.close()

    code, report = fsck(server)
    assert code == 1
    assert [m["chunk"] for m in report["missing_references"]] == [ids[4]]

    code, report = fsck(server, "--rebuild-index")
    assert code == 0 and report["records_indexed"] == 10 and report["bad_records"] == 0
    code, report = fsck(server)
    assert code == 0 and report["ok"]

    server.start()
    c = server.client(server.create_key("acme", "read"))
    r = c.get(f"/v1/vaults/acme/chunks/{ids[4]}")
    assert r.status_code == 200 and sha(r.content) == ids[4]
    assert server.admin.get("/v1/vaults/acme").json()["usage"] == usage


def test_fsck_refuses_while_the_server_runs(server):
    env = dict(os.environ, OBJVAULT_DATA_DIRS=str(server.data_dirs[0]))
    r = subprocess.run([OBJVAULT, "fsck"], env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode != 0
    assert "stop the server" in r.stderr
