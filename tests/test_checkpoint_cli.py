"""``objvault checkpoint list|download`` against a real server and a real S3
server (SeaweedFS): the server ships index checkpoints to its bucket target,
is stopped (its index counts as lost), and the CLI, reading only the
configuration, lists the checkpoints and downloads one into an index
directory RocksDB opens; plaintext and encrypted targets; refusals (non-empty
destination, unknown target, wrong key) are clear messages with a non-zero
exit status and leave the destination as it was.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from datetime import datetime, timezone
from pathlib import Path

import obstore

from tests.replhelpers import s3_target
from tests.server import OBJVAULT, Server
from vault.meta import Index

PREFIX = "replica"  # s3_target's default prefix


def bucket_checkpoints(bucket) -> dict[str, int]:
    """``checkpoints/…`` names in the bucket → size."""
    out = {}
    for batch in obstore.list(bucket.store, f"{PREFIX}/checkpoints/", chunk_size=1000):
        for m in batch:
            out[m["path"][len(PREFIX) + 1:]] = m["size"]
    return out


def stamp_of(path: str) -> str:
    return path.rsplit("/", 1)[-1].split(".tar.zst", 1)[0]


def now_stamp() -> str:
    return datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S.%fZ")


def wait_checkpoint_after(bucket, stamp: str, timeout: float = 30) -> dict[str, int]:
    """Wait until the bucket holds a checkpoint taken after ``stamp``; the listing then."""
    deadline = time.monotonic() + timeout
    while True:
        cps = bucket_checkpoints(bucket)
        if any(stamp_of(p) > stamp for p in cps):
            return cps
        if time.monotonic() > deadline:
            raise AssertionError(f"no checkpoint after {stamp} in the bucket: {sorted(cps)}")
        time.sleep(0.25)


def cli(srv: Server, *args: str, config: Path | None = None) -> subprocess.CompletedProcess:
    """Run ``objvault`` with the server's environment (its config, data dirs) and no server needed."""
    env = {**srv.env(), "PATH": os.environ.get("PATH", "")}
    if config is not None:
        env["OBJVAULT_CONFIG"] = str(config)
    return subprocess.run([OBJVAULT, *args], env=env, capture_output=True, text=True, timeout=180)


def make_primary(make_server, bucket, **target) -> Server:
    """A server shipping checkpoints every 2 s to ``bucket``, the first one at start."""
    return make_server("primary", config=s3_target(bucket, checkpoint_interval_seconds=2, **target),
                       env={"OBJVAULT_SEGMENT_BYTES": str(16 << 20)})


def populate(srv: Server, bucket) -> tuple[str, str, str]:
    """Two vaults and a key; returns (key id, the stamp of a checkpoint certainly without
    them, a stamp taken after them).

    A checkpoint's stamp is taken before its contents, so only one that is in the
    bucket before the vaults are created is known to lack them; one stamped after
    they were created holds them.
    """
    before = max(stamp_of(p) for p in wait_checkpoint_after(bucket, ""))
    srv.create_vault("acme", quota_bytes=1 << 30)
    srv.create_vault("beta")
    r = srv.admin.post("/v1/vaults/acme/keys", json={"role": "full", "label": "backup-host"})
    assert r.status_code == 201, r.text
    return r.json()["id"], before, now_stamp()


def open_index(path: Path) -> Index:
    assert (path / "CURRENT").is_file(), f"{path} is not a RocksDB directory: {sorted(os.listdir(path))}"
    return Index(path)


def assert_refused(res: subprocess.CompletedProcess, *needles: str) -> None:
    assert res.returncode != 0, res.stdout
    assert "Traceback" not in res.stderr, res.stderr
    assert res.stderr.startswith("objvault"), res.stderr
    for n in needles:
        assert n in res.stderr, (n, res.stderr)


# -- tests -----------------------------------------------------------------------------


def test_list_and_download_a_plaintext_checkpoint(make_server, s3bucket, tmp_path):
    srv = make_primary(make_server, s3bucket)
    key_id, before, after = populate(srv, s3bucket)
    wait_checkpoint_after(s3bucket, after)
    srv.stop()  # the index counts as lost: the CLI must not need the server
    cps = bucket_checkpoints(s3bucket)
    assert cps and all(p.endswith(".tar.zst") for p in cps)
    newest_first = sorted(cps, reverse=True)

    # list: every checkpoint, newest first, with its time and size
    res = cli(srv, "checkpoint", "list", "--target", "offsite")
    assert res.returncode == 0, res.stderr
    lines = res.stdout.splitlines()
    assert lines[0].startswith(f"offsite (s3 s3://{s3bucket.name}/{PREFIX})") and "newest first" in lines[0]
    rows = [ln.split() for ln in lines[1:]]
    assert [r[0] for r in rows] == [stamp_of(p) for p in newest_first]
    for (ident, taken, *_), path in zip(rows, newest_first):
        t = datetime.strptime(ident, "%Y%m%dT%H%M%S.%fZ")
        assert taken == t.strftime("%Y-%m-%dT%H:%M:%SZ")
    res = cli(srv, "checkpoint", "list", "--target", "offsite", "--json")
    assert res.returncode == 0, res.stderr
    doc = json.loads(res.stdout)
    assert doc["target"] == "offsite"
    assert [(c["id"], c["bytes"], c["path"]) for c in doc["checkpoints"]] == \
        [(stamp_of(p), cps[p], p) for p in newest_first]

    # download the newest: an index RocksDB opens, holding what was there before it
    dest = tmp_path / "recovered"
    res = cli(srv, "checkpoint", "download", "--target", "offsite", "--latest", "--to", str(dest))
    assert res.returncode == 0, res.stderr
    assert sorted(os.listdir(dest)) == ["index"]  # the tarball is not left behind
    assert stamp_of(newest_first[0]) in res.stdout
    live = srv.data_dirs[0] / "index"
    assert "stop the server" in res.stdout and f"mv {dest / 'index'} {live}" in res.stdout
    assert "objvault fsck --rebuild-index" in res.stdout and "start the server" in res.stdout
    assert "2 vaults (acme, beta)" in res.stdout
    idx = open_index(dest / "index")
    try:
        assert json.loads(idx.get("vaults", b"acme"))["quota_bytes"] == 1 << 30
        assert idx.get("vaults", b"beta") is not None
        assert json.loads(idx.get("keys", key_id.encode()))["label"] == "backup-host"
    finally:
        idx.close()

    # --at picks that one: a checkpoint shipped before the vaults existed
    assert before in [stamp_of(p) for p in cps]
    older = tmp_path / "older"
    older.mkdir()  # an existing empty directory is fine
    res = cli(srv, "checkpoint", "download", "--target", "offsite", "--at", before, "--to", str(older))
    assert res.returncode == 0, res.stderr
    idx = open_index(older / "index")
    try:
        assert idx.get("vaults", b"acme") is None
    finally:
        idx.close()

    # refusals: a non-empty destination (left untouched), an unknown checkpoint, an unknown target
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "notes.txt").write_text("keep me")
    res = cli(srv, "checkpoint", "download", "--target", "offsite", "--to", str(busy))
    assert_refused(res, str(busy), "not empty", "'offsite'")
    assert sorted(os.listdir(busy)) == ["notes.txt"] and (busy / "notes.txt").read_text() == "keep me"

    res = cli(srv, "checkpoint", "download", "--target", "offsite", "--at", "20000101T000000.000000Z",
              "--to", str(tmp_path / "none"))
    assert_refused(res, "'offsite'", "20000101T000000.000000Z", stamp_of(newest_first[0]))
    assert not (tmp_path / "none").exists()

    for action in (["list"], ["download", "--to", str(tmp_path / "never")]):
        res = cli(srv, "checkpoint", *action, "--target", "nope")
        assert_refused(res, "no replication target named 'nope'", str(srv.config_path), "targets: offsite")
    assert not (tmp_path / "never").exists()


def test_download_from_an_encrypted_target(make_server, s3bucket, tmp_path):
    key_file = tmp_path / "replica.key"
    key_file.write_text(os.urandom(32).hex() + "\n")
    srv = make_primary(make_server, s3bucket, encryption_key_file=str(key_file))
    key_id, _, after = populate(srv, s3bucket)
    wait_checkpoint_after(s3bucket, after)
    srv.stop()
    cps = bucket_checkpoints(s3bucket)
    assert cps and all(p.endswith(".tar.zst.sealed") for p in cps)
    newest = max(cps)

    res = cli(srv, "checkpoint", "list", "--target", "offsite", "--json")
    assert res.returncode == 0, res.stderr
    assert [c["path"] for c in json.loads(res.stdout)["checkpoints"]] == sorted(cps, reverse=True)

    dest = tmp_path / "recovered"
    res = cli(srv, "checkpoint", "download", "--target", "offsite", "--to", str(dest))
    assert res.returncode == 0, res.stderr
    assert stamp_of(newest) in res.stdout
    idx = open_index(dest / "index")
    try:
        assert idx.get("vaults", b"acme") is not None and idx.get("vaults", b"beta") is not None
        assert idx.get("keys", key_id.encode()) is not None
    finally:
        idx.close()

    # another key (or none) is named as the problem, and nothing is left behind
    other = tmp_path / "other.key"
    other.write_bytes(os.urandom(32))
    for extra in ({"encryption_key_file": str(other)}, {}):
        cfg = tmp_path / "wrong.toml"
        cfg.write_text(s3_target(s3bucket, **extra))
        dest = tmp_path / "wrong"
        res = cli(srv, "checkpoint", "download", "--target", "offsite", "--to", str(dest), config=cfg)
        assert_refused(res, "'offsite'", "wrong encryption_key_file?")
        assert not dest.exists()
