"""Objects of many references: refcounts changed in slices under an intent
(vault/refs.py), whole across refusals and crashes."""

from __future__ import annotations

import os
from collections import Counter

import pytest

from tests.apihelpers import BATCH_HEADERS, batch_frames
from tests.fsckhelpers import fsck
from tests.server import sha
from vault import refs
from vault import errors as E
from vault.meta import PENDING, ChunkIds, ChunkMeta, Index, ObjectMeta

N = refs.REF_SLICE * 2 + 100  # three slices


@pytest.fixture
def big(server):
    """A vault holding N small distinct chunks; their ids."""
    server.create_vault("acme")
    chunks = [i.to_bytes(4, "big") * 8 for i in range(N)]
    for i in range(0, N, 10_000):
        r = server.admin.post("/v1/vaults/acme/chunks/batch", content=batch_frames(chunks[i:i + 10_000]),
                              headers=BATCH_HEADERS)
        assert r.status_code == 200, r.text
    return server, [sha(c) for c in chunks]


def test_large_objects_keep_refcounts_exact(big):
    server, ids = big
    c = server.admin
    refs_list = ids + ids[:50]  # repeated references count twice
    r = c.put("/v1/vaults/acme/objects/a", json={"chunks": refs_list})
    assert r.status_code == 201 and r.json() == {"key": "a", "size": 32 * len(refs_list), "chunks": len(refs_list)}
    assert c.get("/v1/vaults/acme/objects/a").json()["chunks"] == refs_list
    # Overwrite the large object with a small one, then with a large one again, and delete.
    assert c.put("/v1/vaults/acme/objects/a", json={"chunks": ids[:3]}).status_code == 201
    assert c.put("/v1/vaults/acme/objects/b", json={"chunks": ids[::-1]}).status_code == 201
    assert c.put("/v1/vaults/acme/objects/b", json={"chunks": ids[5:]}).status_code == 201
    assert c.put("/v1/vaults/acme/objects/c", json={"chunks": ids}).status_code == 201
    assert c.delete("/v1/vaults/acme/objects/c").status_code == 204
    usage = c.get("/v1/vaults/acme").json()["usage"]
    assert usage["objects"] == 2 and usage["logical_bytes"] == 32 * (3 + N - 5)
    # Missing chunks: 409 with every absent id, and nothing counted.
    absent = [sha(b"absent %d" % i) for i in range(3)]
    r = c.put("/v1/vaults/acme/objects/d", json={"chunks": ids + absent})
    assert r.status_code == 409 and sorted(r.json()["missing"]) == sorted(absent)
    # If-None-Match on an existing large object is refused before any counting.
    r = c.put("/v1/vaults/acme/objects/b", json={"chunks": ids}, headers={"If-None-Match": "*"})
    assert r.status_code == 412
    server.stop()
    code, report = fsck(server, timeout=300)  # N chunks to check
    assert code == 0 and report["ok"] and report["refcount_mismatches"] == 0, report
    assert report["reference_intents_settled"] == 0


# -- in process: the metadata layer alone -----------------------------------------------


def _index_with_chunks(path, n: int) -> tuple[Index, list[bytes]]:
    index = Index(path)
    ids = [os.urandom(32) for _ in range(n)]

    def op(txn):
        for d in ids:
            txn.put_chunk(1, d, ChunkMeta(1, 0, 10, 0, PENDING, txn.now, 0.0))
    index.run_sync(op)
    return index, ids


def _counts(index: Index, ids: list[bytes]) -> list[int]:
    return [index.chunk(1, d).refcount for d in ids]


def test_an_acquire_cut_short_is_undone_at_the_next_start(tmp_path):
    index, ids = _index_with_chunks(tmp_path / "idx", N)
    chunks = ids + ids[:10]
    payload = ObjectMeta(0.0, 0, chunks, b"").pack()
    iid = index.run_sync(lambda txn: txn.open_intent(refs.ACQUIRE, 1, payload))
    calls = []

    def check(txn, part, metas):
        calls.append(len(part))
        if len(calls) == 3:
            raise KeyboardInterrupt  # the process stops in the middle of the third slice

    with pytest.raises(KeyboardInterrupt):
        refs.acquire(index, iid, 1, chunks, check)
    assert sum(_counts(index, ids)) == 2 * refs.REF_SLICE  # two slices applied, the third not
    index.close()
    index = Index(tmp_path / "idx")
    assert index.pending_intents() == [iid]
    assert refs.settle_all(index) == 1
    assert _counts(index, ids) == [0] * N and index.pending_intents() == []
    index.close()


def test_a_refused_acquire_is_undone(tmp_path):
    index, ids = _index_with_chunks(tmp_path / "idx", N)
    iid = index.run_sync(lambda txn: txn.open_intent(refs.ACQUIRE, 1, ObjectMeta(0.0, 0, ids, b"").pack()))

    def check(txn, part, metas):
        if part[0][0] == ids[refs.REF_SLICE]:
            raise E.MissingChunks("gone")

    with pytest.raises(E.MissingChunks):
        refs.acquire(index, iid, 1, ids, check)
    assert refs.settle(index, iid) == "undone"
    assert _counts(index, ids) == [0] * N
    index.close()


def test_a_release_cut_short_is_finished_at_the_next_start(tmp_path):
    index, ids = _index_with_chunks(tmp_path / "idx", N)
    chunks = ids + ids[:7]
    index.run_sync(lambda txn: refs.apply(txn, 1, Counter(chunks).items()))
    assert sum(_counts(index, ids)) == N + 7
    old_raw = ObjectMeta(1.0, 0, chunks, b"").pack()
    pending: list[int] = []
    index.run_sync(lambda txn: refs.release(txn, 1, old_raw, pending))
    # The process stops before any slice: the next start releases them all.
    assert sum(_counts(index, ids)) == N + 7
    index.close()
    index = Index(tmp_path / "idx")
    assert refs.settle_all(index) == 1
    counts = _counts(index, ids)
    assert counts == [0] * N
    states = {index.chunk(1, d).state for d in ids}
    assert states == {2}  # deletable, from now: GC's grace starts at the release
    index.close()


def test_small_objects_release_in_their_own_op(tmp_path):
    index, ids = _index_with_chunks(tmp_path / "idx", 10)
    index.run_sync(lambda txn: refs.apply(txn, 1, Counter(ids + ids).items()))
    pending: list[int] = []
    index.run_sync(lambda txn: refs.release(txn, 1, ObjectMeta(1.0, 0, ids, b"").pack(), pending))
    assert pending == [] and _counts(index, ids) == [1] * 10
    index.close()


def test_manifests_pack_in_many_threads_at_once():
    """ObjectMeta.pack runs in the committer and in worker threads at once
    (large objects): a compressor shared between threads crashed the process."""
    import concurrent.futures

    chunks = [os.urandom(32) for _ in range(2000)] * 50  # repeats: zstd keeps its output
    want = ObjectMeta(1.0, 5, chunks, b"m").pack()
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        packed = list(pool.map(lambda _: ObjectMeta(1.0, 5, chunks, b"m").pack(), range(64)))
    assert all(p == want for p in packed)
    assert ObjectMeta.unpack(want).chunks == chunks


def test_chunk_ids_read_like_a_list():
    ids = [os.urandom(32) for _ in range(5)]
    c = ChunkIds(b"".join(ids))
    assert c == ids and list(c) == ids and len(c) == 5 and c[-1] == ids[4] and c[1:3] == ids[1:3]
    assert ids[2] in c and os.urandom(32) not in c and ids[0][1:] + ids[1][:1] not in c  # aligned only
    assert c != ids[:4] and c != ids[::-1] and ChunkIds.of(ids) == c
    assert ObjectMeta.unpack(ObjectMeta(1.0, 2, c, b"x").pack()) == (1.0, 2, ids, b"x")
