"""Refcounts under random interleavings (hypothesis stateful testing).

One real server (grace 0, 1 MiB segments, eager compaction) for the whole
run; each example gets a fresh vault and a model of what must be there.
Rules: chunk PUTs, object PUTs and overwrites (including ones naming
chunks the vault does not hold), object DELETEs, GC passes, and a few
restarts (clean or SIGKILL). After every step, through the public API only:
no object references a missing chunk, every chunk the model expects is
there (and no other), and the vault's usage counters equal a recount from
scratch. At the end the stopped server's index is recounted directly
(refcounts, usage, segment live bytes, records in the segment files).
"""

from __future__ import annotations

import itertools
import random
from collections import Counter

import httpx
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from tests.gchelpers import GC_ENV, check_index, recount, run_model
from tests.server import Server, sha

_rnd = random.Random(1234)
# Sizes spread over one to several 64 KiB blocks, so 1 MiB segments fill,
# seal and get compacted during the run.
POOL = [_rnd.randbytes(size) for size in (1, 100, 4096, 20_000, 65_536, 65_537, 90_000, 150_000, 200_000, 33)]
IDS = [sha(b) for b in POOL]
KEYS = ["a", "b", "dir/c", "dir/sub/d"]
MAX_RESTARTS = 5


class VaultModel(RuleBasedStateMachine):
    server: Server
    restarts = 0
    seen = Counter()                           # what the run exercised
    counter = itertools.count()

    def __init__(self) -> None:
        super().__init__()
        self.vault = f"model-{next(self.counter)}"
        self.c = self._client()
        r = self.c.post("/v1/vaults", json={"name": self.vault})
        assert r.status_code == 201, r.text
        self.stored: set[int] = set()          # chunks of POOL the vault holds
        self.fillers: dict[str, int] = {}      # never-referenced chunks: id -> size
        self.objects: dict[str, list[int]] = {}
        self.restarted = False

    def _client(self) -> httpx.Client:
        return httpx.Client(base_url=self.server.url, timeout=60,
                            headers={"Authorization": f"Bearer {self.server.admin_token}"})

    def refcount(self, i: int) -> int:
        return sum(refs.count(i) for refs in self.objects.values())

    @initialize(uploads=st.lists(st.integers(0, len(POOL) - 1), min_size=1, max_size=4))
    def seed(self, uploads):
        # Object "a" holds the first uploads, then a chunk nearly as large as
        # a segment makes the writer seal the segment they are in: so every
        # example has a sealed segment mixing live chunks with garbage
        # (earlier examples' dead vaults), which its first GC compacts.
        for i in uploads:
            self.put_chunk(i)
        r = self.c.put(f"/v1/vaults/{self.vault}/objects/a", json={"chunks": [IDS[i] for i in uploads]})
        assert r.status_code == 201, r.text
        self.objects["a"] = list(uploads)
        self.put_filler(1_000_000)

    @rule(i=st.integers(0, len(POOL) - 1))
    def put_chunk(self, i):
        r = self.c.put(f"/v1/vaults/{self.vault}/chunks/{IDS[i]}", content=POOL[i])
        assert r.status_code == (200 if i in self.stored else 201), (i, r.status_code, r.text)
        self.stored.add(i)

    @rule(size=st.integers(100_000, 400_000))
    def put_filler(self, size):
        """A chunk no object will reference: fills segments (they seal at 1 MiB)
        with garbage, so GC compacts them around the chunks that stay live."""
        data = next(self.counter).to_bytes(8, "big") + bytes(size - 8)
        r = self.c.put(f"/v1/vaults/{self.vault}/chunks/{sha(data)}", content=data)
        assert r.status_code == 201, r.text
        self.fillers[sha(data)] = size

    @rule(key=st.sampled_from(KEYS), data=st.data(), any_chunk=st.booleans())
    def put_object(self, key, data, any_chunk):
        # Half the time only chunks the vault holds (so most PUTs succeed),
        # else any chunk of the pool (missing ones make it a 409).
        choices = list(range(len(POOL))) if any_chunk or not self.stored else sorted(self.stored)
        refs = data.draw(st.lists(st.sampled_from(choices), max_size=6), label="refs")
        r = self.c.put(f"/v1/vaults/{self.vault}/objects/{key}", json={"chunks": [IDS[i] for i in refs]})
        missing = {IDS[i] for i in refs if i not in self.stored}
        if missing:
            assert r.status_code == 409 and r.json()["code"] == "missing_chunks", r.text
            assert set(r.json()["missing"]) == missing
        else:
            assert r.status_code == 201, r.text
            assert r.json()["size"] == sum(len(POOL[i]) for i in refs)
            self.objects[key] = list(refs)

    @rule(key=st.sampled_from(KEYS))
    def delete_object(self, key):
        r = self.c.delete(f"/v1/vaults/{self.vault}/objects/{key}")
        if key in self.objects:
            assert r.status_code == 204, r.text
            del self.objects[key]
        else:
            assert r.status_code == 404 and r.json()["code"] == "no_such_object"

    @rule(dry_run=st.booleans())
    def gc(self, dry_run):
        doomed = {i for i in self.stored if self.refcount(i) == 0}
        ndoomed = len(doomed) + len(self.fillers)
        freed = sum(len(POOL[i]) for i in doomed) + sum(self.fillers.values())
        r = self.c.post("/v1/admin/gc", json={"dry_run": dry_run})
        assert r.status_code == 200, r.text
        stats = r.json()
        # Other vaults (earlier examples) are deleted, so they count as dead
        # vaults, never in chunks_deleted: the counts are exactly this vault's.
        if dry_run:
            assert stats["would_delete"] == ndoomed, (stats, doomed)
            assert stats["would_free_bytes"] == freed
        else:
            assert stats["chunks_deleted"] == ndoomed, (stats, doomed)
            assert stats["bytes_freed"] == freed
            assert stats["segments_kept"] == 0 and stats["corrupt_records"] == 0
            self.stored -= doomed
            self.fillers.clear()
            VaultModel.seen["gc"] += 1
            VaultModel.seen["chunks_deleted"] += stats["chunks_deleted"]
            VaultModel.seen["segments_compacted"] += stats["segments_compacted"]
            VaultModel.seen["segments_deleted"] += stats["segments_deleted"]
            VaultModel.seen["records_copied"] += stats["records_copied"]

    @precondition(lambda self: not self.restarted)
    @rule(kill=st.booleans())
    def restart(self, kill):
        # At most one per example and MAX_RESTARTS per run (each costs ~0.5 s).
        # The run-wide budget is checked here, not in the precondition: a
        # precondition must depend on the example's own state only.
        self.restarted = True
        if VaultModel.restarts >= MAX_RESTARTS:
            return
        VaultModel.restarts += 1
        self.c.close()
        if kill:
            self.server.kill()
        else:
            self.server.stop()
        self.server.start()
        self.c = self._client()

    @invariant()
    def matches_a_recount(self):
        got = recount(self.c, self.vault)
        assert got["objects"] == len(self.objects)
        assert got["logical_bytes"] == sum(len(POOL[i]) for refs in self.objects.values() for i in refs)
        held = set(self.c.post(f"/v1/vaults/{self.vault}/chunks/missing", json={"ids": IDS}).json()["missing"])
        held = {i for i, cid in enumerate(IDS) if cid not in held}
        assert held == self.stored, (held, self.stored)
        assert set(got["referenced"]) <= {IDS[i] for i in held}
        if self.fillers:
            assert self.c.post(f"/v1/vaults/{self.vault}/chunks/missing",
                               json={"ids": list(self.fillers)}).json()["missing"] == []
        assert got["usage"] == {"stored_bytes": sum(len(POOL[i]) for i in held) + sum(self.fillers.values()),
                                "logical_bytes": got["logical_bytes"], "chunks": len(held) + len(self.fillers),
                                "objects": got["objects"]}, got["usage"]

    def teardown(self):
        # Byte-for-byte check of what is left, then hand the vault to GC as a dead vault.
        for i in sorted(self.stored)[:3]:
            assert self.c.get(f"/v1/vaults/{self.vault}/chunks/{IDS[i]}").content == POOL[i]
        assert self.c.delete(f"/v1/vaults/{self.vault}").status_code == 204
        self.c.close()


def test_refcounts_under_random_interleavings(make_server):
    server = make_server(env=GC_ENV)
    run_model(VaultModel, server, examples=15, steps=30)
    assert VaultModel.seen["segments_compacted"] > 0 and VaultModel.seen["records_copied"] > 0
    c = server.client()
    stats = c.post("/v1/admin/gc", json={}).json()
    assert stats["dead_vaults"] == stats["dead_vaults_purged"] >= 1
    server.stop()
    totals = check_index(server.data_dirs[0])
    assert totals["chunks"] == 0 and totals["dead_vaults"] == 0
