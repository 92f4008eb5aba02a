"""The metadata layer in process: a real RocksDB in tmp_path, no server."""

from __future__ import annotations

import concurrent.futures
import os
import threading

import pytest

from vault import errors as E
from vault.events import ChunkDeleted, ChunkPut, ObjectPut
from vault.meta import (DELETABLE, PENDING, ChunkIds, ChunkMeta, Index, KeyRec, ObjectMeta, SegMeta, Usage,
                        VaultRec)
from vault.meta.checkpoint import CheckpointError, read_checkpoint
from vault.meta.outbox import (CHUNK_DELETE, CHUNK_PUT, DELQ, OBJECT_PUT, PUTQ, first_entry, iter_queue, next_seq,
                               outbox_stats, remove_op, target_id, write_entry)
from vault.meta.schema import CHUNKS, chunk_digest, chunk_key, vid_of


@pytest.fixture
def index(tmp_path):
    idx = Index(tmp_path / "index")
    yield idx
    idx.close()


class Loc:
    """A record location, as the store returns them."""

    def __init__(self, seg_id: int, offset: int, size: int, dir_idx: int = 0) -> None:
        self.seg_id, self.offset, self.size, self.dir_idx = seg_id, offset, size, dir_idx


def _chunk(seg_id: int = 1, offset: int = 4096, length: int = 10, refcount: int = 0) -> ChunkMeta:
    return ChunkMeta(seg_id, offset, length, refcount, PENDING, 1.5, 0.0)


# -- records ---------------------------------------------------------------------------


def test_records_round_trip_their_encoding():
    meta = ChunkMeta(7, 1 << 40, 123, 5, DELETABLE, 1.25, 2.5)
    assert ChunkMeta.unpack(meta.pack()) == meta
    seg = SegMeta(3, 1, 99999, 4096, 7.0)
    assert SegMeta.unpack(seg.pack()) == seg
    usage = Usage(1, 2, 3, 4)
    assert Usage.unpack(usage.pack()) == usage and Usage.unpack(None) == Usage()
    vault = VaultRec("acme", 9, 1.0, quota_bytes=100, append_only=True, retention_days=3)
    assert VaultRec.load(vault.dump()) == vault
    key = KeyRec("ab12", "acme", 9, "append", "laptop", "2026-01-01T00:00:00Z", os.urandom(32))
    assert KeyRec.load(key.dump()) == key


def test_object_records_round_trip_small_and_compressed():
    ids = [os.urandom(32) for _ in range(3)]
    small = ObjectMeta(1.0, 30, ids, b"m")
    assert ObjectMeta.unpack(small.pack()) == small
    # Repeated ids compress: the record is smaller than the ids and still decodes.
    many = ObjectMeta(2.0, 10, ids * 1000, b"x" * 600)
    packed = many.pack()
    assert len(packed) < 32 * 3000
    back = ObjectMeta.unpack(packed)
    assert back.chunks == ChunkIds.of(ids * 1000) and back.meta == b"x" * 600
    assert ObjectMeta.header(packed) == (2.0, 10, 3000)


# -- the committer -----------------------------------------------------------------------


def test_ops_of_one_batch_see_each_other_and_a_failing_op_rolls_back_only_itself(index):
    gate = threading.Event()
    index.submit(lambda txn: gate.wait(5))  # holds the committer: what follows lands in one batch
    seen = []

    def first(txn):
        txn.put_vault(VaultRec("a", txn.counter("vid"), txn.now))

    def failing(txn):
        txn.put_vault(VaultRec("b", txn.counter("vid"), txn.now))
        raise E.BadRequest("refused")

    def third(txn):
        seen.append(txn.vault("a"))
        seen.append(txn.vault("b"))
        txn.put_vault(VaultRec("c", txn.counter("vid"), txn.now))

    futs = [index.submit(op) for op in (first, failing, third)]
    gate.set()
    futs[0].result(5)
    with pytest.raises(E.BadRequest):
        futs[1].result(5)
    futs[2].result(5)
    assert seen[0] is not None and seen[0].vid == 1
    assert seen[1] is None  # the failed op's writes never joined the batch
    assert [(r.name, r.vid) for r in index.vaults()] == [("a", 1), ("c", 2)]


def test_after_callbacks_run_only_for_ops_that_commit(index):
    ran = []

    def ok(txn):
        txn.after.append(lambda: ran.append("ok"))

    def bad(txn):
        txn.after.append(lambda: ran.append("bad"))
        raise RuntimeError("bug")

    index.run_sync(ok)
    with pytest.raises(RuntimeError):
        index.run_sync(bad)
    assert ran == ["ok"]


def test_counters_persist_across_reopen(tmp_path):
    idx = Index(tmp_path / "i")
    assert [idx.run_sync(lambda txn: txn.counter("n")) for _ in range(3)] == [1, 2, 3]
    idx.close()
    idx = Index(tmp_path / "i")
    try:
        assert idx.run_sync(lambda txn: txn.counter("n")) == 4
        assert idx.run_sync(lambda txn: txn.counter("other")) == 1
    finally:
        idx.close()


def test_a_closed_index_refuses_ops(tmp_path):
    idx = Index(tmp_path / "i")
    idx.close()
    with pytest.raises(E.StorageFailure):
        idx.submit(lambda txn: None).result(5)


# -- chunks and batched reads --------------------------------------------------------------


def test_chunks_batched_reads_see_the_batch_and_the_database(index):
    held = [os.urandom(32) for _ in range(5)]
    absent = [os.urandom(32) for _ in range(3)]
    index.run_sync(lambda txn: [txn.put_chunk(1, d, _chunk(offset=4096 * (i + 1))) for i, d in enumerate(held)])
    fresh = os.urandom(32)

    def op(txn):
        txn.put_chunk(1, fresh, _chunk(offset=1 << 20))
        return txn.chunks(1, [held[0], absent[0], fresh, held[4]])

    got = index.run_sync(op)
    assert [m.offset if m else None for m in got] == [4096, None, 1 << 20, 4096 * 5]
    digests = held + absent
    assert index.chunks_held(1, digests) == [True] * 5 + [False] * 3
    assert index.missing_chunks(1, digests) == absent
    assert index.missing_chunks(2, held) == held  # another vault holds none of them
    keys = [chunk_key(1, d) for d in held[:2]] + [chunk_key(2, held[0])]
    assert [m is not None for m in index.chunks_at(keys)] == [True, True, False]


def test_touch_revives_a_chunk_and_reports_one_that_is_gone(index):
    d = os.urandom(32)
    index.run_sync(lambda txn: txn.put_chunk(3, d, _chunk()))
    assert index.run_sync(lambda txn: txn.touch_chunk(3, d)) is True
    assert index.chunk(3, d).created_at > 1.5
    assert index.run_sync(lambda txn: txn.touch_chunk(3, os.urandom(32))) is False


def test_prefix_scans_stay_in_their_vault_and_resume_after_a_key(index):
    ids = sorted(os.urandom(32) for _ in range(10))
    index.run_sync(lambda txn: [txn.put_chunk(vid, d, _chunk()) for vid in (1, 2) for d in ids])
    assert list(index.chunk_digests(1)) == ids
    assert index.chunk_keys(2, 3) == [chunk_key(2, d) for d in ids[:3]]
    assert index.count_chunks(1) == 10 and index.count_chunks(7) == 0
    everything = [k for k, _ in index.all_chunks()]
    assert len(everything) == 20 and vid_of(everything[0]) == 1 and vid_of(everything[-1]) == 2
    rest = [k for k, _ in index.all_chunks(everything[4])]
    assert rest == everything[5:]
    assert chunk_digest(rest[0]) == ids[5]


def test_objects_list_by_prefix_and_start_after(index):
    obj = ObjectMeta(1.0, 0, [], b"")
    names = ["a/1", "a/2", "a/3", "b/1"]
    index.run_sync(lambda txn: [txn.put_object(4, n, obj) for n in names])
    index.run_sync(lambda txn: txn.put_object(5, "a/9", obj))
    assert [n for n, _ in index.objects(4, "a/")] == ["a/1", "a/2", "a/3"]
    assert [n for n, _ in index.objects(4, "a/", "a/1")] == ["a/2", "a/3"]
    assert [n for n, _ in index.objects(4)] == names
    assert index.count_objects(4) == 4
    assert index.run_sync(lambda txn: txn.delete_objects_at(index.object_keys(4, 2))) == 2
    assert [n for n, _ in index.objects(4)] == ["a/3", "b/1"]


def test_unreferenced_chunks_pages_through_and_picks_old_unreferenced_ones_of_live_vaults(index):
    ids = sorted(os.urandom(32) for _ in range(6))

    def op(txn):
        txn.put_chunk(1, ids[0], ChunkMeta(1, 0, 10, 0, DELETABLE, 1.0, 1.0))    # candidate
        txn.put_chunk(1, ids[1], ChunkMeta(1, 0, 11, 2, PENDING, 1.0, 0.0))      # referenced
        txn.put_chunk(1, ids[2], ChunkMeta(1, 0, 12, 0, PENDING, 500.0, 0.0))    # re-uploaded lately
        txn.put_chunk(1, ids[3], ChunkMeta(1, 0, 13, 0, DELETABLE, 1.0, 500.0))  # freed lately
        txn.put_chunk(2, ids[4], ChunkMeta(1, 0, 14, 0, DELETABLE, 1.0, 1.0))    # a dead vault's
        txn.put_chunk(1, ids[5], ChunkMeta(1, 0, 15, 0, DELETABLE, 1.0, 1.0))    # candidate
    index.run_sync(op)
    found, n, last = index.unreferenced_chunks(None, 3, 100.0, {1})
    assert n == 3 and found == [(chunk_key(1, ids[0]), 10)]
    found, n, last = index.unreferenced_chunks(last, 3, 100.0, {1})
    assert n == 3 and last is not None and found == [(chunk_key(1, ids[5]), 15)]
    assert index.unreferenced_chunks(last, 3, 100.0, {1}) == ([], 0, None)


# -- usage ---------------------------------------------------------------------------------


def test_usage_adds_up_within_a_batch_and_snapshots_are_written_once(index):
    def op(txn):
        txn.add_usage(1, stored=10, chunks=1)
        txn.add_usage(1, stored=5, logical=7, chunks=1, objects=1)
        return txn.usage(1)

    assert index.run_sync(op) == Usage(15, 7, 2, 1)
    assert index.usage(1) == Usage(15, 7, 2, 1) and index.usage(2) == Usage()
    doc = {"name": "a", "vid": 1, "stored_bytes": 15}
    assert index.run_sync(lambda txn: txn.snapshot_usage("2026-01-02", 1, doc)) is True
    assert index.run_sync(lambda txn: txn.snapshot_usage("2026-01-02", 1, {**doc, "stored_bytes": 99})) is False
    index.run_sync(lambda txn: txn.snapshot_usage("2026-01-05", 1, doc))
    assert list(index.usage_snapshots("2026-01-02")) == [doc]
    old = index.usage_snapshot_keys_before("2026-01-03", 10)
    assert len(old) == 1
    index.run_sync(lambda txn: txn.delete_usage_snapshots(old))
    assert list(index.usage_snapshots("2026-01-02")) == []
    assert list(index.usage_snapshots("2026-01-05")) == [doc]
    assert dict(index.usages()) == {1: Usage(15, 7, 2, 1)}


# -- memory ------------------------------------------------------------------------------


def test_block_cache_holds_the_live_blocks_not_those_of_files_compaction_removed(index):
    """Chunks rewritten round after round, each round flushed, compacted and
    read back: the cache holds what the reads bring in, and dropping the
    obsolete files drops their blocks too, so it stays at the size of the live
    data instead of growing with every round (it grew 30-fold here when the
    blocks of dead files stayed until the LRU reached them)."""
    n = 1000
    usage = []
    for r in range(12):
        digests = [os.urandom(32) for _ in range(n)]

        def op(txn, digests=digests):
            for i, d in enumerate(digests):
                txn.put_chunk(1, d, _chunk(seg_id=r + 1, offset=4096 * (i + 1)))
            for k, _ in list(index.iter_prefix(CHUNKS, b"")):
                if chunk_digest(k) not in digests:
                    txn.delete_chunk_at(k)

        index.run_sync(op)
        # What RocksDB does by itself as writes accumulate, here at once.
        index.cf[CHUNKS].flush()
        index.cf[CHUNKS].compact_range(None, None)
        assert all(m is not None and m.seg_id == r + 1 for m in index.chunks_at([chunk_key(1, d) for d in digests]))
        usage.append(index.memory()["block_cache"])
    assert usage[0] > 30_000  # the reads put the live blocks in the cache, and it is measured
    assert max(usage) < 2 * usage[0], usage


# -- segments ------------------------------------------------------------------------------


def test_segment_bookkeeping_grows_the_end_counts_live_bytes_and_seals(index):
    index.run_sync(lambda txn: txn.seg_record(Loc(5, 4096, 100, dir_idx=1), True))
    index.run_sync(lambda txn: txn.seg_record(Loc(5, 8192, 50, dir_idx=1), False))  # dead bytes: end only
    index.run_sync(lambda txn: txn.seg_update(5, 30, end=1000))  # an end never shrinks
    seg = dict(index.segments())[5]
    assert (seg.dir_idx, seg.sealed, seg.end, seg.live_bytes) == (1, 0, 8242, 130)
    index.run_sync(lambda txn: txn.seg_update(5, -130))
    assert index.run_sync(lambda txn: txn.seal_segment(5)) is True
    assert index.run_sync(lambda txn: txn.seal_segment(6)) is False
    index.run_sync(lambda txn: txn.seg_update(6, -10))  # an unknown segment is not invented
    assert dict(index.segments()) == {5: seg._replace(sealed=1, live_bytes=0)}


def test_repoint_moves_a_chunk_only_if_it_is_still_where_it_was(index):
    d = os.urandom(32)
    key = chunk_key(1, d)

    def setup(txn):
        txn.put_chunk(1, d, _chunk(seg_id=1, offset=4096))
        txn.seg_record(Loc(1, 4096, 200), True)
    index.run_sync(setup)
    stale = index.run_sync(lambda txn: txn.repoint_chunk(key, txn.chunk(1, d), 1, 9999, Loc(2, 4096, 200)))
    assert stale is False and index.chunk(1, d).seg_id == 1
    moved = index.run_sync(lambda txn: txn.repoint_chunk(key, txn.chunk(1, d), 1, 4096, Loc(2, 8192, 200)))
    assert moved is True
    assert (index.chunk(1, d).seg_id, index.chunk(1, d).offset) == (2, 8192)
    segs = dict(index.segments())
    assert segs[1].live_bytes == 0 and segs[2].live_bytes == 200 and segs[2].end == 8392


# -- vaults, keys, dead vaults, intents, markers -------------------------------------------------


def test_deleting_a_vault_drops_its_keys_and_leaves_a_marker_until_its_data_is_gone(index):
    rec = VaultRec("acme", 3, 1.0)
    d = os.urandom(32)

    def setup(txn):
        txn.put_vault(rec)
        txn.put_vault(VaultRec("other", 4, 1.0))
        txn.put_key(KeyRec("k1", "acme", 3, "full", "", "t", b"h" * 32))
        txn.put_key(KeyRec("k2", "other", 4, "read", "", "t", b"h" * 32))
        txn.put_chunk(3, d, _chunk())
        txn.add_usage(3, stored=10, chunks=1)
    index.run_sync(setup)
    index.run_sync(lambda txn: txn.delete_vault(rec))
    assert index.vault("acme") is None and [k.id for k in index.keys()] == ["k2"]
    assert index.dead_vaults() == [3] and index.dead_vault_name(3) == "acme"
    assert index.run_sync(lambda txn: txn.finish_dead_vault(3)) is False  # a chunk is left
    index.run_sync(lambda txn: txn.delete_chunk_at(chunk_key(3, d)))
    assert index.run_sync(lambda txn: txn.finish_dead_vault(3)) is True
    assert index.dead_vaults() == [] and index.usage(3) == Usage()


def test_intents_record_progress_and_close(index):
    payload = ObjectMeta(0.0, 0, [os.urandom(32)], b"").pack()
    iid = index.run_sync(lambda txn: txn.open_intent(1, 42, payload))
    assert index.pending_intents() == [iid]
    index.run_sync(lambda txn: txn.set_intent_progress(iid, 2))
    kind, vid, obj, done = index.intent(iid)
    assert (kind, vid, done) == (1, 42, 2) and obj == ObjectMeta.unpack(payload)
    index.run_sync(lambda txn: txn.close_intent(iid))
    assert index.intent(iid) is None and index.pending_intents() == []
    assert index.run_sync(lambda txn: txn.intent_progress(iid)) is None


def test_markers_by_prefix(index):
    index.run_sync(lambda txn: [txn.put_marker(b"x:" + bytes([i]), bytes([i])) for i in range(3)])
    index.run_sync(lambda txn: txn.put_marker(b"y:0", b"0"))
    assert [v for _, v in index.markers(b"x:")] == [b"\0", b"\1", b"\2"]
    index.run_sync(lambda txn: txn.delete_marker(b"x:\1"))
    assert index.marker(b"x:\1") is None and index.marker(b"y:0") == b"0"


# -- outbox --------------------------------------------------------------------------------------


def test_outbox_entries_queue_in_order_and_a_put_supersedes_a_pending_delete(index):
    tid = target_id("t")
    vault = VaultRec("acme", 1, 0.0)
    d = os.urandom(32)

    def emit(event):
        return lambda txn: write_entry(txn, tid, 60.0, next_seq(txn), 1, "acme", event)

    index.run_sync(emit(ChunkPut(vault, d, 100)))
    index.run_sync(emit(ChunkDeleted(1, d, vault)))
    assert outbox_stats(index, tid) == (2, 100, 1)
    dele = first_entry(index, tid, DELQ)
    assert dele.kind == CHUNK_DELETE and dele.digest == d and dele.due >= dele.t + 60.0
    index.run_sync(emit(ChunkPut(vault, d, 100)))  # the chunk is back: its delete no longer applies
    assert first_entry(index, tid, DELQ) is None
    puts = list(iter_queue(index, tid, PUTQ))
    assert [e.kind for e in puts] == [CHUNK_PUT, CHUNK_PUT] and puts[0].seq < puts[1].seq
    assert [e.seq for e in iter_queue(index, tid, PUTQ, puts[0].seq)] == [puts[1].seq]
    assert outbox_stats(index, tid) == (2, 200, 0)
    assert index.run_sync(remove_op(tid, puts)) == 2
    assert outbox_stats(index, tid) == (0, 0, 0) and first_entry(index, tid, PUTQ) is None


def test_outbox_object_entries_carry_the_manifest_written_in_the_same_op(index):
    tid = target_id("t")
    obj = ObjectMeta(3.0, 20, [os.urandom(32), os.urandom(32)], b"meta")

    def op(txn):
        txn.put_object(1, "k", obj)
        write_entry(txn, tid, 0.0, next_seq(txn), 1, "acme", ObjectPut(VaultRec("acme", 1, 0.0), "k", obj))
    index.run_sync(op)
    entry = first_entry(index, tid, PUTQ)
    assert entry.kind == OBJECT_PUT and entry.okey == "k" and entry.obj == obj
    assert entry.size == 64 + 4


# -- checkpoints ------------------------------------------------------------------------------------


def test_a_checkpoint_reads_back_with_its_vaults_and_counts(index, tmp_path):
    index.run_sync(lambda txn: [txn.put_vault(VaultRec(n, i, 0.0)) for i, n in enumerate(("b", "a"), 1)])
    index.run_sync(lambda txn: txn.put_chunk(1, os.urandom(32), _chunk()))
    index.checkpoint(tmp_path / "cp")
    found = read_checkpoint(tmp_path / "cp")
    assert found["vaults"] == ["a", "b"]
    assert found["entries"]["vaults"] == 2 and found["entries"]["chunks"] == 1
    assert found["entries"]["objects"] == 0


def test_reading_something_that_is_no_index_names_the_path(tmp_path):
    (tmp_path / "junk").mkdir()
    with pytest.raises(CheckpointError, match="junk"):
        read_checkpoint(tmp_path / "junk")


def test_concurrent_submitters_all_get_their_own_results(index):
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        got = list(pool.map(lambda _: index.run_sync(lambda txn: txn.counter("c")), range(200)))
    assert sorted(got) == list(range(1, 201))
