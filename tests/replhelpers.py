"""Helpers of the replication, restore, scrub and checkpoint tests
(test_replication.py, test_restore.py, test_scrub.py,
test_replication_peer.py, test_checkpoint_cli.py): target configuration for
a bucket, where things are in the bucket, waiting for a target to drain or a
restore to end, and filling and dumping vaults. The ``mkserver`` fixture most
of them use is in ``tests/conftest.py``.
"""

from __future__ import annotations

import base64
import json
import os
import time
from pathlib import Path

import obstore

from replication.crypto import Sealer
from replication.layout import BlobReplica
from tests.server import Server
from vault.config import TargetConfig

# -- the target and its bucket ---------------------------------------------------------


def s3_target(bucket, name: str = "offsite", prefix: str = "replica", **extra) -> str:
    """A ``[[replication.targets]]`` table for ``bucket`` (values of ``extra`` are TOML-quoted)."""
    lines = ["[[replication.targets]]", f'name = "{name}"', 'kind = "s3"',
             f'url = "s3://{bucket.name}/{prefix}"', f'endpoint = "{bucket.endpoint}"',
             f'region = "{bucket.region}"', f'access_key_id = "{bucket.access_key}"',
             f'secret_access_key = "{bucket.secret_key}"']
    for k, v in extra.items():
        lines.append(f"{k} = {json.dumps(v)}")
    return "\n".join(lines) + "\n"


def target_cfg(bucket, name: str = "offsite", prefix: str = "replica", key_file: str = "") -> TargetConfig:
    return TargetConfig(name=name, kind="s3", url=f"s3://{bucket.name}/{prefix}", endpoint=bucket.endpoint,
                        region=bucket.region, access_key_id=bucket.access_key,
                        secret_access_key=bucket.secret_key, encryption_key_file=key_file)


def layout(bucket, prefix: str = "replica", key: bytes | None = None) -> BlobReplica:
    """The layout's naming rules, to find things in the bucket."""
    return BlobReplica(target_cfg(bucket, prefix=prefix), bucket.new_store(prefix=prefix), Sealer(key))


def bucket_get(bucket, path: str) -> bytes | None:
    try:
        return bytes(obstore.get(bucket.store, path).bytes())
    except FileNotFoundError:
        return None


# -- the server's side -----------------------------------------------------------------


def status(server: Server, name: str = "offsite") -> dict:
    r = server.admin.get("/v1/admin/replication")
    assert r.status_code == 200, r.text
    return next(t for t in r.json()["targets"] if t["name"] == name)


def wait_drained(server: Server, name: str = "offsite", timeout: float = 60, delayed: bool = False) -> dict:
    """Wait until the target has nothing pending (but deletes waiting for their delay,
    unless ``delayed``)."""
    deadline = time.monotonic() + timeout
    while True:
        st = status(server, name)
        left = st["pending_entries"] - (0 if delayed else st["delayed_entries"])
        if left == 0:
            return st
        if time.monotonic() > deadline:
            raise AssertionError(f"target {name} did not catch up: {st}\n{server.log_tail()}")
        time.sleep(0.05)


def blobs(n: int, size: int, tag: bytes = b"") -> list[bytes]:
    return [tag + os.urandom(size - len(tag)) for _ in range(n)]


def upload(server: Server, vault: str, blobs: list[bytes], client=None) -> list[str]:
    c = client or server.admin
    return [server.put_chunk(c, vault, b) for b in blobs]


def put_object(server: Server, vault: str, key: str, ids: list[str], meta: bytes = b"") -> None:
    r = server.admin.put(f"/v1/vaults/{vault}/objects/{key}",
                         json={"chunks": ids, "meta": base64.b64encode(meta).decode()})
    assert r.status_code == 201, r.text


# -- restore ---------------------------------------------------------------------------


def dump_vault(srv: Server, vault: str) -> dict:
    """Everything a client can see of a vault: config, usage, objects, chunk bytes."""
    c = srv.admin
    doc = c.get(f"/v1/vaults/{vault}").json()
    objects, chunks, after = {}, {}, ""
    while True:
        page = c.get(f"/v1/vaults/{vault}/objects", params={"start_after": after, "limit": 1000}).json()
        for o in page["objects"]:
            full = c.get(f"/v1/vaults/{vault}/objects/{o['key']}").json()
            objects[o["key"]] = full
            for cid in full["chunks"]:
                if cid not in chunks:
                    r = c.get(f"/v1/vaults/{vault}/chunks/{cid}")
                    assert r.status_code == 200, r.text
                    chunks[cid] = r.content
        if not page["next"]:
            break
        after = page["next"]
    doc.pop("created")
    return {"vault": doc, "objects": objects, "chunks": chunks}


def fill(srv: Server, vault: str) -> None:
    data = blobs(12, 50_000) + blobs(2, 600_000) + [b"", b"tiny"]
    ids = upload(srv, vault, data)
    put_object(srv, vault, "a", ids[:6], meta=b"first")
    put_object(srv, vault, "nested/dir/b with space", ids[4:], meta=b"\x00\x01binary")
    put_object(srv, vault, "c/ünïcode", [ids[0], ids[0], ids[13]])
    put_object(srv, vault, "empty", [])


def wait_restore(srv: Server, timeout: float = 60) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        st = srv.admin.get("/v1/admin/restore").json()
        if st["state"] in ("done", "failed"):
            return st
        assert time.monotonic() < deadline, st
        time.sleep(0.05)


def flip_byte(data_dir: Path, pattern: bytes, skip: int = 100) -> None:
    """Flip one byte of the record whose bytes contain ``pattern`` (in every segment holding it)."""
    hits = 0
    for seg in sorted((data_dir / "segments").glob("*.seg")):
        buf = seg.read_bytes()
        at = buf.find(pattern)
        while at >= 0:
            with open(seg, "r+b") as f:
                f.seek(at + skip)
                b = f.read(1)
                f.seek(at + skip)
                f.write(bytes([b[0] ^ 0x20]))
            hits += 1
            at = buf.find(pattern, at + 1)
    assert hits >= 1, f"pattern {pattern[:8]!r}… not found in the segments"
