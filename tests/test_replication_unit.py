"""Replication pieces in-process, against a real index, store and directory target:
envelope encryption, the outbox hook (same batch as the change), and the
worker's ordering rules (delays, objects before chunks, superseded deletes,
per-key order). Faults are injected by wrapping the real target."""

from __future__ import annotations

import asyncio
import hashlib
import os

import pytest

from replication.crypto import FRAME, KeyFileError, SealError, Sealer, load_key
from replication.layout import BlobReplica
from replication.outbox import OutboxHook
from replication.registry import open_target
from replication.target import Manifest, TargetError
from replication.worker import Context, TargetWorker
from vault.app import Vault
from vault.config import GCConfig, TargetConfig, load_config
from vault.events import VaultPut
from vault.lifecycle import GarbageCollector
from vault.meta import VaultRec
from vault.meta.outbox import PUTQ, forget_targets_op, iter_queue, outbox_stats, stats_key, target_id
from vault.body import Body
from vault.policy import Principal
from vault.services import VaultSettings

ADMIN = Principal(admin=True)


# -- crypto ----------------------------------------------------------------------------


def test_key_file_accepts_32_raw_bytes_or_64_hex(tmp_path):
    raw = os.urandom(32)
    (tmp_path / "raw").write_bytes(raw)
    (tmp_path / "hex").write_text(raw.hex() + "\n")
    assert load_key(tmp_path / "raw") == raw
    assert load_key(tmp_path / "hex") == raw
    (tmp_path / "bad").write_text("not a key")
    with pytest.raises(KeyFileError, match="bad"):
        load_key(tmp_path / "bad")
    with pytest.raises(KeyFileError, match="missing"):
        load_key(tmp_path / "missing")


def test_seal_roundtrip_binds_the_name_and_detects_tampering():
    s = Sealer(os.urandom(32))
    data = os.urandom(100_000)
    blob = s.seal(data, b"vaults/x/chunks/ab/abc")
    assert data not in blob and len(blob) == len(data) + 89
    assert s.open(blob, b"vaults/x/chunks/ab/abc") == data
    with pytest.raises(SealError):
        s.open(blob, b"vaults/x/chunks/ab/other")  # moved to another name
    bad = bytearray(blob)
    bad[-1] ^= 1
    with pytest.raises(SealError):
        s.open(bytes(bad), b"vaults/x/chunks/ab/abc")
    with pytest.raises(SealError):
        Sealer(os.urandom(32)).open(blob, b"vaults/x/chunks/ab/abc")  # another key
    # names: deterministic per key, unrelated across keys
    assert s.name(b"vault\0acme") == s.name(b"vault\0acme") != Sealer(os.urandom(32)).name(b"vault\0acme")


def test_sealed_stream_frames_detect_truncation():
    s = Sealer(os.urandom(32))
    data = os.urandom(FRAME * 2 + 123)
    sealed = b"".join(s.seal_stream([data[i:i + 1_000_000] for i in range(0, len(data), 1_000_000)], b"cp"))
    assert b"".join(s.open_stream(sealed, b"cp")) == data
    # cut after the first frame: the frame that is now last was not sealed as last
    first = int.from_bytes(sealed[:4], "little") + 4
    with pytest.raises(SealError):
        b"".join(s.open_stream(sealed[:first], b"cp"))


def test_a_replica_refuses_another_key(tmp_path):
    async def main():
        k1, k2 = tmp_path / "k1", tmp_path / "k2"
        k1.write_bytes(os.urandom(32))
        k2.write_bytes(os.urandom(32))
        url = f"file://{tmp_path}/replica"
        await open_target(TargetConfig(name="t", kind="local", url=url, encryption_key_file=str(k1))).open()
        with pytest.raises(TargetError, match="key id"):
            await open_target(TargetConfig(name="t", kind="local", url=url, encryption_key_file=str(k2))).open()
        with pytest.raises(TargetError, match="encryption"):
            await open_target(TargetConfig(name="t", kind="local", url=url)).open()
    asyncio.run(main())


# -- a vault in this process -------------------------------------------------------------


class Faulty:
    """The real directory target, recording calls; ``fail`` makes chosen calls raise."""

    def __init__(self, inner: BlobReplica) -> None:
        self.inner = inner
        self.calls: list[tuple] = []
        self.fail: dict[str, int] = {}

    def __getattr__(self, name):
        attr = getattr(self.inner, name)
        if not callable(attr) or name.startswith("_"):
            return attr

        async def call(*args, **kw):
            if self.fail.get(name, 0) > 0:
                self.fail[name] -= 1
                raise TargetError(f"injected failure of {name}")
            self.calls.append((name, *[a for a in args if isinstance(a, (str, bytes))]))
            return await attr(*args, **kw)
        return call


@pytest.fixture
def vault(tmp_path):
    cfg = load_config(env={"OBJVAULT_DATA_DIRS": str(tmp_path / "data"), "OBJVAULT_ADMIN_TOKEN": "t",
                           "OBJVAULT_SEGMENT_BYTES": str(16 << 20)})
    v = Vault(cfg)
    yield v
    v.close()


def make_worker(v, tmp_path, name="t", delay=0, vaults=("*",), concurrency=4):
    tc = TargetConfig(name=name, kind="local", url=f"file://{tmp_path}/{name}", delete_delay_seconds=delay,
                      vaults=list(vaults), concurrency=concurrency)
    replica = Faulty(open_target(tc))
    ctx = Context(v.cfg, v.index, v.store)
    return TargetWorker(ctx, tc, replica), replica


async def put_chunk(v, rec, data: bytes) -> bytes:
    d = hashlib.sha256(data).digest()
    await v.services.chunks.put(rec, d, Body.of_bytes(data))
    return d


async def test_hook_writes_entries_in_the_same_batch_and_only_for_matching_targets(vault, tmp_path):
    t_all = TargetConfig(name="all", kind="local", url="file:///x", vaults=["*"])
    t_acme = TargetConfig(name="acme-only", kind="local", url="file:///y", vaults=["acme*"])
    vault.index.event_hooks.append(OutboxHook([t_all, t_acme], vault.index))
    acme = await vault.services.vaults.create("acme", VaultSettings(), ADMIN)
    other = await vault.services.vaults.create("other", VaultSettings(), ADMIN)
    await put_chunk(vault, acme, b"a" * 1000)
    await put_chunk(vault, other, b"b" * 500)

    def entries(name):
        return [(e.kind, e.vault) for e in iter_queue(vault.index, target_id(name), PUTQ)]
    assert entries("all") == [("V", "acme"), ("V", "other"), ("C", "acme"), ("C", "other")]
    assert entries("acme-only") == [("V", "acme"), ("C", "acme")]
    assert outbox_stats(vault.index, target_id("all")) == (4, 1500, 0)

    # An op that fails after emitting leaves neither its change nor an entry.
    def failing(txn):
        txn.put_vault(VaultRec("ghost", 999, 0.0))
        txn.emit(VaultPut(acme))
        raise RuntimeError("boom")
    with pytest.raises(RuntimeError):
        await vault.index.run(failing)
    assert vault.index.vault("ghost") is None
    assert len(entries("all")) == 4


async def test_deletes_wait_for_the_delay_and_chunks_wait_for_object_deletes(vault, tmp_path):
    w, replica = make_worker(vault, tmp_path, delay=1)
    vault.index.event_hooks.append(OutboxHook([w.cfg], vault.index))
    rec = await vault.services.vaults.create("acme", VaultSettings(), ADMIN)
    a = await put_chunk(vault, rec, os.urandom(3000))
    b = await put_chunk(vault, rec, os.urandom(3000))
    await vault.services.objects.put(ADMIN, rec, "docs/x", [a, b], b"m", False)
    stats = await w.run_once()
    assert stats["sent"] == 4 and stats["failed"] == 0
    inner = replica.inner
    assert (tmp_path / "t" / inner.chunk_path("acme", a)).exists()

    await vault.services.objects.delete(rec, "docs/x")
    gc = GarbageCollector(vault.index, vault.store, GCConfig(grace_seconds=0))
    assert (await gc.run_once())["chunks_deleted"] == 2
    await w.run_once()
    # nothing deleted before the delay
    assert [c for c in replica.calls if c[0].startswith("delete")] == []
    assert w.status()["delayed_entries"] == 3
    assert (tmp_path / "t" / inner.object_path("acme", "docs/x")).exists()

    await asyncio.sleep(1.1)
    replica.fail["delete_object"] = 1  # the object delete fails once: chunk deletes must wait for it
    await w.run_once()
    assert [c for c in replica.calls if c[0] == "delete_chunk"] == []
    assert w.status()["last_error"] and "injected" in w.status()["last_error"]
    for _ in range(50):
        await w.run_once()
        if w.status()["pending_entries"] == 0:
            break
        await asyncio.sleep(0.1)
    deletes = [c[0] for c in replica.calls if c[0].startswith("delete")]
    assert deletes == ["delete_object", "delete_chunk", "delete_chunk"]
    assert not (tmp_path / "t" / inner.chunk_path("acme", a)).exists()
    assert not (tmp_path / "t" / inner.object_path("acme", "docs/x")).exists()
    st = w.status()
    assert (st["pending_entries"], st["pending_bytes"], st["delayed_entries"]) == (0, 0, 0)
    assert st["last_error"] is None


async def test_a_put_supersedes_a_pending_delete_of_the_same_name(vault, tmp_path):
    w, replica = make_worker(vault, tmp_path, delay=0.5)
    vault.index.event_hooks.append(OutboxHook([w.cfg], vault.index))
    rec = await vault.services.vaults.create("acme", VaultSettings(), ADMIN)
    a = await put_chunk(vault, rec, os.urandom(1000))
    await vault.services.objects.put(ADMIN, rec, "k", [a], b"v1", False)
    await w.run_once()
    await vault.services.objects.delete(rec, "k")
    await vault.services.objects.put(ADMIN, rec, "k", [a, a], b"v2", False)
    assert w.status()["delayed_entries"] == 0  # the delete is gone with its counters
    await asyncio.sleep(0.6)
    await w.run_once()
    assert not [c for c in replica.calls if c[0] == "delete_object"]
    m = await replica.inner.get_object("acme", replica.inner.object_path("acme", "k"))
    assert m.meta == b"v2" and m.chunks == [a, a]
    assert w.status()["pending_entries"] == 0


async def test_puts_of_one_key_arrive_in_order_and_a_restart_resends_what_was_not_confirmed(vault, tmp_path):
    w, replica = make_worker(vault, tmp_path, concurrency=8)
    vault.index.event_hooks.append(OutboxHook([w.cfg], vault.index))
    rec = await vault.services.vaults.create("acme", VaultSettings(), ADMIN)
    chunks = [await put_chunk(vault, rec, os.urandom(2000)) for _ in range(8)]
    for i in range(8):
        await vault.services.objects.put(ADMIN, rec, "same", chunks[:i + 1], str(i).encode(), False)
    replica.fail["put_chunk"] = 3
    await w.run_once()  # three chunk puts fail: their entries stay
    assert w.status()["pending_entries"] >= 3
    # a new worker (a restart) loads what is left from the index
    w2 = TargetWorker(Context(vault.cfg, vault.index, vault.store), w.cfg, replica)
    for _ in range(50):
        await w2.run_once()
        if w2.status()["pending_entries"] == 0:
            break
        await asyncio.sleep(0.1)
    puts = [c for c in replica.calls if c[0] == "put_object"]
    assert len(puts) == 8
    m = await replica.inner.get_object("acme", replica.inner.object_path("acme", "same"))
    assert m.meta == b"7" and m.chunks == chunks
    for d in chunks:
        assert await replica.inner.get_chunk("acme", d) is not None


async def test_seeding_a_new_target_enqueues_what_the_vault_already_holds(vault, tmp_path):
    rec = await vault.services.vaults.create("acme", VaultSettings(), ADMIN)
    a = await put_chunk(vault, rec, os.urandom(5000))
    await vault.services.objects.put(ADMIN, rec, "old", [a], b"", False)
    w, replica = make_worker(vault, tmp_path)
    vault.index.event_hooks.append(OutboxHook([w.cfg], vault.index))
    assert await w.seed() == 2
    assert await w.seed() == 0  # once per target configuration
    await w.run_once()
    assert await replica.inner.get_chunk("acme", a) is not None
    assert (await replica.inner.get_vault("acme"))["name"] == "acme"
    assert len(await replica.inner.object_handles("acme")) == 1


def test_manifest_encoding_roundtrip():
    m = Manifest("a/ü/b", 1.25, 10, [os.urandom(32) for _ in range(3)], b"\0meta")
    assert Manifest.decode(m.encode()) == m


async def test_records_of_a_removed_target_are_dropped(vault, tmp_path):
    t1 = TargetConfig(name="kept", kind="local", url="file:///x")
    t2 = TargetConfig(name="removed", kind="local", url="file:///y")
    vault.index.event_hooks.append(OutboxHook([t1, t2], vault.index))
    rec = await vault.services.vaults.create("acme", VaultSettings(), ADMIN)
    for i in range(30):
        await put_chunk(vault, rec, os.urandom(100) + bytes([i]))
    keep = {target_id("kept")}
    total = 0
    while (n := await vault.index.run(forget_targets_op(keep, limit=7))):
        total += n
    assert total == 31
    assert len(list(iter_queue(vault.index, target_id("kept"), PUTQ))) == 31
    assert list(iter_queue(vault.index, target_id("removed"), PUTQ)) == []
    assert vault.index.marker(stats_key(target_id("removed"))) is None
    assert vault.index.marker(stats_key(target_id("kept"))) is not None


def test_bucket_urls_map_to_obstore_stores(tmp_path):
    from obstore.store import AzureStore, GCSStore, LocalStore, S3Store

    from replication.s3 import object_store, split_url

    def store(url, **kw):
        return object_store(TargetConfig(name="t", kind="s3", url=url, **kw))
    s3 = store("s3://bucket/some/prefix", endpoint="http://127.0.0.1:9", access_key_id="a", secret_access_key="b")
    assert isinstance(s3, S3Store) and s3.prefix == "some/prefix" and s3.config["bucket"] == "bucket"
    assert s3.config["virtual_hosted_style_request"] in (False, "false")
    gcs = store("gs://bkt/p")
    assert isinstance(gcs, GCSStore) and gcs.prefix == "p" and gcs.config["bucket"] == "bkt"
    az = store("az://container/x/y", access_key_id="account", secret_access_key="a2V5")
    assert isinstance(az, AzureStore) and az.prefix == "x/y"
    assert split_url("abfss://c@acct.dfs.core.windows.net/p") == ("az", "c", "p", "acct")
    with pytest.raises(TargetError, match="expected s3://"):
        split_url("ftp://x/y")
    local = open_target(TargetConfig(name="t", kind="local", url=f"file://{tmp_path}/dir"))
    assert isinstance(local.store, LocalStore)
