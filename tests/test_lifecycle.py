"""Chunk lifecycle against a real server: the job runner, GC grace and revival,
GC racing re-uploads, SIGKILL during GC and during compaction, disk space
coming back, dead vaults, usage reports and their daily history, the CLI.

The recounts from scratch (:func:`recount`, :func:`check_index`) are in
``tests/gchelpers.py``, shared with ``test_gc_stateful.py``.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import logging
import os
import random
import subprocess
import threading
import time
from collections import Counter, defaultdict
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

import aiohttp
import httpx
import pytest

from tests.gchelpers import GC_ENV, check_index, recount
from tests.server import OBJVAULT, Server, sha
from vault.meta import Index
from vault.workers import Backoff, Job, Runner, Throttle


# -- helpers ----------------------------------------------------------------------------


def seg_files(data_dir: Path) -> dict[str, int]:
    """Segment file name -> size on disk."""
    return {p.name: p.stat().st_size for p in (Path(data_dir) / "segments").glob("*.seg")}


def put_chunks(s: Server, c: httpx.Client, vault: str, blobs: list[bytes], concurrency: int = 32) -> list[str]:
    """PUT every blob as a chunk, ``concurrency`` at a time (aiohttp: many small
    PUTs per second); returns the ids. ``c`` is unused (kept for symmetry)."""

    async def run() -> None:
        it = iter(blobs)
        async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {s.admin_token}"}) as sess:
            async def worker() -> None:
                for b in it:
                    async with sess.put(f"{s.url}/v1/vaults/{vault}/chunks/{sha(b)}", data=b) as r:
                        assert r.status in (200, 201), await r.text()

            await asyncio.gather(*(worker() for _ in range(concurrency)))

    asyncio.run(run())
    return [sha(b) for b in blobs]


def blob(i: int, size: int, seed: int = 0) -> bytes:
    rnd = random.Random(i * 7919 + seed)
    return i.to_bytes(8, "big") + rnd.randbytes(size - 8)


def gc_in_background(s: Server) -> threading.Thread:
    """POST a GC pass from a thread (the server may be killed under it)."""

    def run():
        try:
            s.client(timeout=120).post("/v1/admin/gc", json={})
        except httpx.HTTPError:
            pass

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t


def gc(c: httpx.Client, dry_run: bool = False) -> dict:
    r = c.post("/v1/admin/gc", json={"dry_run": dry_run}, timeout=120)
    assert r.status_code == 200, r.text
    return r.json()


# -- the runner (in-process: tests call run_once and the runner directly) ----------------


class _Recorder:
    def __init__(self):
        self.passes = []

    def job_pass(self, job, ok, seconds, stats, now):
        self.passes.append((job, ok, stats))


class _Counting(Job):
    name = "counting"

    def __init__(self, fail_first: int = 0):
        super().__init__()
        self.calls = 0
        self.times: list[float] = []
        self.fail_first = fail_first

    async def run_once(self):
        self.calls += 1
        self.times.append(time.monotonic())
        if self.calls <= self.fail_first:
            raise RuntimeError("boom")
        return {"calls": self.calls}


async def test_runner_interval_backoff_and_clean_stop(caplog):
    rec = _Recorder()
    runner = Runner(rec, jitter=0.0)
    runner.backoff = lambda errors: 0.02 * 1.5 ** errors  # same shape, faster clock
    job = _Counting(fail_first=3)
    runner.add(job, interval=0.05, first_delay=0)
    runner.start()
    await asyncio.sleep(0.5)
    # Three failures retried with growing delays, then the regular interval.
    gaps = [b - a for a, b in zip(job.times, job.times[1:])]
    assert job.calls >= 6
    assert gaps[0] < gaps[1] < gaps[2]
    assert [ok for _, ok, _ in rec.passes[:4]] == [False, False, False, True]
    st = runner.status()[0]
    assert st["failures"] == 3 and st["consecutive_errors"] == 0 and st["last_ok"]
    assert st["last_stats"]["calls"] == job.calls or st["running"]

    # A long pass cancelled by stop() is not an error: nothing logged or counted.
    gate = asyncio.Event()

    class Slow(Job):
        name = "slow"

        async def run_once(self):
            gate.set()
            await asyncio.sleep(3600)

    runner.add(Slow(), interval=1, first_delay=0)
    await gate.wait()
    n = len(rec.passes)
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="objvault.workers"):
        t0 = time.monotonic()
        await runner.stop()
    assert time.monotonic() - t0 < 1
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert [p for p in rec.passes[n:] if p[0] == "slow"] == []


async def test_runner_backoff_caps_and_run_now_serialises():
    runner = Runner(None, backoff_cap=600)
    assert runner.backoff(1) == 1.5 and runner.backoff(4) == 1.5 ** 4 and runner.backoff(100) == 600
    active = 0
    peak = 0

    class Sync(Job):
        name = "sync"

        def run_once(self):  # a plain function: runs in a thread, not on the loop
            nonlocal active, peak
            active += 1
            peak = max(peak, active)
            time.sleep(0.05)
            active -= 1
            return {"thread": threading.current_thread().name}

    runner.add(Sync(), interval=0)  # on demand only
    runner.start()
    results = await asyncio.gather(*(runner.run_now("sync") for _ in range(4)))
    assert peak == 1
    assert all(r["thread"] != threading.main_thread().name for r in results)
    assert runner.status()[0]["runs"] == 4
    await runner.stop()


# -- GC semantics ------------------------------------------------------------------------


def test_grace_period_and_revival(make_server):
    s = make_server(env={"OBJVAULT_GC_GRACE_SECONDS": "2", "OBJVAULT_GC_INTERVAL_SECONDS": "0"})
    c = s.admin
    s.create_vault("acme")
    a, b = blob(1, 5000), blob(2, 7000)
    ida, idb = s.put_chunk(c, "acme", a), s.put_chunk(c, "acme", b)
    assert c.put("/v1/vaults/acme/objects/o", json={"chunks": [idb]}).status_code == 201
    assert gc(c, dry_run=True)["would_delete"] == 0          # a is inside its grace period
    time.sleep(2.1)
    assert gc(c, dry_run=True)["would_delete"] == 1          # a is past it; b is referenced
    assert c.put(f"/v1/vaults/acme/chunks/{ida}", content=a).status_code == 200   # re-upload revives
    assert c.delete("/v1/vaults/acme/objects/o").status_code == 204               # b: zero_since = now
    st = gc(c)
    assert st["chunks_deleted"] == 0 and st["chunks_scanned"] == 2
    time.sleep(2.1)
    st = gc(c)
    assert st["chunks_deleted"] == 2 and st["bytes_freed"] == len(a) + len(b)
    assert c.head(f"/v1/vaults/acme/chunks/{ida}").status_code == 404
    assert c.get("/v1/vaults/acme").json()["usage"] == {"stored_bytes": 0, "logical_bytes": 0, "chunks": 0,
                                                         "objects": 0}
    # A new reference inside the grace period keeps a chunk for good.
    ida = s.put_chunk(c, "acme", a)
    time.sleep(1)
    assert c.put("/v1/vaults/acme/objects/o2", json={"chunks": [ida]}).status_code == 201
    time.sleep(1.2)
    assert gc(c)["chunks_deleted"] == 0
    assert c.get(f"/v1/vaults/acme/chunks/{ida}").content == a


def test_gc_races_reupload_of_same_chunks(make_server):
    """GC passes racing re-uploads of exactly the chunks they are deleting:
    an acknowledged re-upload is never lost within its grace period, and an
    object PUT either succeeds with every chunk present or answers
    missing_chunks."""
    grace = 2
    s = make_server(env={**GC_ENV, "OBJVAULT_GC_GRACE_SECONDS": str(grace)})
    c = s.admin
    s.create_vault("race")
    blobs = [blob(i, 2048 + 97 * i) for i in range(300)]
    ids = put_chunks(s, c, "race", blobs)
    statuses: Counter = Counter()
    for rnd in range(3):
        time.sleep(grace + 0.1)                              # every chunk now collectable
        present = len(ids) - len(c.post("/v1/vaults/race/chunks/missing", json={"ids": ids}).json()["missing"])
        assert gc(c, dry_run=True)["would_delete"] == present
        errors: list = []
        stop = threading.Event()
        passes: list[float] = []                             # start time of every GC pass
        sent = [0.0] * len(ids)                              # when each re-upload was sent

        first_pass = threading.Event()

        def gc_loop():
            cl = s.client()
            while not stop.is_set():
                passes.append(time.time())
                gc(cl)
                first_pass.set()

        def reupload(part):
            cl = s.client()
            for i in part:
                if i >= late:                                # only after a pass has deleted it
                    first_pass.wait(30)
                sent[i] = time.time()
                r = cl.put(f"/v1/vaults/race/chunks/{ids[i]}", content=blobs[i])
                statuses[r.status_code] += 1
                if r.status_code not in (200, 201):
                    errors.append(r.text)

        # Both sides of the race are made certain each round: a few present
        # chunks are revived before the first pass (200), the last quarter is
        # sent only after a pass has deleted it (201); the rest race freely.
        gone = set(c.post("/v1/vaults/race/chunks/missing", json={"ids": ids}).json()["missing"])
        early = [i for i in range(len(ids)) if ids[i] not in gone][:4]
        late = len(ids) * 3 // 4
        reupload(early)
        g = threading.Thread(target=gc_loop)
        g.start()
        rest = [i for i in range(len(ids)) if i not in early]
        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            list(pool.map(reupload, [rest[k::8] for k in range(8)]))
        stop.set()
        g.join()
        assert not errors and passes
        # A re-upload sets created_at no earlier than it was sent, so no pass
        # that started less than a grace period later may delete it: those
        # chunks must all be there, byte for byte.
        protected = [i for i in range(len(ids)) if sent[i] > passes[-1] - grace]
        assert len(protected) > len(ids) // 2
        missing = set(c.post("/v1/vaults/race/chunks/missing", json={"ids": ids}).json()["missing"])
        assert not missing & {ids[i] for i in protected}
        for i in random.Random(rnd).sample(protected, 40):
            assert c.get(f"/v1/vaults/race/chunks/{ids[i]}").content == blobs[i]
        u = c.get("/v1/vaults/race").json()["usage"]
        held = [i for i in range(len(ids)) if ids[i] not in missing]
        assert u["chunks"] == len(held) and u["stored_bytes"] == sum(len(blobs[i]) for i in held)
    # Both sides of the race happened: re-uploads that revived a chunk (200)
    # and re-uploads of chunks a pass had just deleted (201).
    assert statuses[200] >= 12 and statuses[201] > 0, statuses

    # Grace 0: object PUTs racing GC never leave an object with a missing chunk.
    s.stop()
    s.extra_env["OBJVAULT_GC_GRACE_SECONDS"] = "0"
    s.start()
    c = s.admin
    stop = threading.Event()

    def gc_loop():
        cl = s.client()
        while not stop.is_set():
            gc(cl)

    outcomes = Counter()

    def writer(k):
        cl = s.client()
        for j in range(25):
            i = (k * 25 + j) % len(ids)
            mine = [ids[i], ids[(i + 1) % len(ids)]]
            for m in mine:
                cl.put(f"/v1/vaults/race/chunks/{m}", content=blobs[ids.index(m)])
            r = cl.put(f"/v1/vaults/race/objects/k{k}-{j}", json={"chunks": mine})
            assert r.status_code in (201, 409), r.text
            outcomes[r.status_code] += 1

    g = threading.Thread(target=gc_loop)
    g.start()
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        list(pool.map(writer, range(8)))
    stop.set()
    g.join()
    assert outcomes[201] > 0
    got = recount(c, "race")
    assert got["objects"] == outcomes[201]
    assert got["usage"]["objects"] == got["objects"] and got["usage"]["logical_bytes"] == got["logical_bytes"]
    gc(c)
    got = recount(c, "race")
    assert got["usage"]["stored_bytes"] == sum(got["referenced"].values())
    assert got["usage"]["chunks"] == len(got["referenced"])
    s.stop()
    check_index(s.data_dirs[0])


def _objects_setup(s: Server, c: httpx.Client, vault: str, nobj: int, per: int, size: int) -> dict[str, list]:
    blobs = [blob(i, size, seed=hash(vault) & 0xffff) for i in range(nobj * per)]
    ids = put_chunks(s, c, vault, blobs)
    objs = {}
    for k in range(nobj):
        chunk_ids = ids[k * per:(k + 1) * per]
        assert c.put(f"/v1/vaults/{vault}/objects/obj{k}", json={"chunks": chunk_ids}).status_code == 201
        objs[f"obj{k}"] = [(cid, blobs[k * per + j]) for j, cid in enumerate(chunk_ids)]
    return objs


def _verify_objects(c: httpx.Client, vault: str, objs: dict) -> None:
    for key, chunks in objs.items():
        r = c.get(f"/v1/vaults/{vault}/objects/{key}")
        assert r.status_code == 200, (key, r.text)
        assert r.json()["chunks"] == [cid for cid, _ in chunks]
        for cid, data in chunks:
            g = c.get(f"/v1/vaults/{vault}/chunks/{cid}")
            assert g.status_code == 200 and g.content == data, (key, cid, g.status_code)


def wait_for_progress(s: Server, pred, timeout: float = 30) -> dict:
    """Poll ``GET /v1/admin/jobs`` until the GC job's progress satisfies ``pred``."""
    c = s.client(timeout=5)
    deadline = time.monotonic() + timeout
    while True:
        jobs = {j["name"]: j for j in c.get("/v1/admin/jobs").json()["jobs"]}
        if jobs["gc"]["running"] and pred(jobs["gc"]["progress"]):
            return jobs["gc"]["progress"]
        assert time.monotonic() < deadline, jobs["gc"]
        time.sleep(0.002)


def test_sigkill_during_gc(make_server):
    s = make_server(env=GC_ENV)
    c = s.admin
    s.create_vault("kil")
    objs = _objects_setup(s, c, "kil", nobj=20, per=25, size=1500)
    for key in list(objs)[:10]:
        assert c.delete(f"/v1/vaults/kil/objects/{key}").status_code == 204
        del objs[key]
    put_chunks(s, c, "kil", [blob(i, 1024, seed=99) for i in range(8000)])   # unreferenced
    before = gc(c, dry_run=True)["would_delete"]
    assert before == 8000 + 250
    # 1: killed in the middle of the sweep (some delete batches durable, some not).
    t = gc_in_background(s)
    wait_for_progress(s, lambda p: p.get("chunks_deleted", 0) >= 1000)
    s.kill()
    t.join()
    check_index(s.data_dirs[0])              # consistent after the crash
    s.start()
    c = s.admin
    after = gc(c, dry_run=True)["would_delete"]
    assert 0 < after < before, (before, after)
    _verify_objects(c, "kil", objs)
    got = recount(c, "kil")
    assert got["usage"]["objects"] == 10 and got["usage"]["logical_bytes"] == got["logical_bytes"]
    # 2: killed while compacting / removing the segments the sweep emptied.
    t = gc_in_background(s)
    wait_for_progress(s, lambda p: p.get("phase") == "compact")
    s.kill()
    t.join()
    check_index(s.data_dirs[0])
    s.start()
    c = s.admin
    _verify_objects(c, "kil", objs)
    st = gc(c)
    assert st["chunks_deleted"] == 0
    _verify_objects(c, "kil", objs)
    got = recount(c, "kil")
    assert got["usage"]["chunks"] == len(got["referenced"]) == 250
    assert got["usage"]["stored_bytes"] == sum(got["referenced"].values())
    s.stop()
    check_index(s.data_dirs[0])


def test_sigkill_during_compaction_then_space_comes_back(make_server):
    # 2 MiB/s of copying: the pass lasts seconds, so the kill lands inside it.
    s = make_server(env={**GC_ENV, "OBJVAULT_GC_COMPACT_RATE_BYTES_PER_SECOND": str(2 << 20)})
    c = s.admin
    s.create_vault("cmp")
    objs = _objects_setup(s, c, "cmp", nobj=48, per=10, size=64 * 1024)      # 30 MiB, 1 MiB segments
    for key in [k for i, k in enumerate(list(objs)) if i % 3]:
        assert c.delete(f"/v1/vaults/cmp/objects/{key}").status_code == 204
        del objs[key]
    s.restart()                                  # seals the active segment too
    c = s.admin
    before = sum(seg_files(s.data_dirs[0]).values())
    t = gc_in_background(s)
    wait_for_progress(s, lambda p: p.get("phase") == "compact" and p.get("segments_done", 0) >= 3)
    s.kill()
    t.join()
    mid = check_index(s.data_dirs[0])
    s.start()
    c = s.admin
    _verify_objects(c, "cmp", objs)
    assert gc(c, dry_run=True)["would_compact"] > 0          # the kill did land mid-compaction
    s.stop()
    s.extra_env["OBJVAULT_GC_COMPACT_RATE_BYTES_PER_SECOND"] = str(1 << 30)
    s.start()
    c = s.admin
    st = gc(c)
    assert st["segments_compacted"] + st["segments_deleted"] > 0, st
    _verify_objects(c, "cmp", objs)
    got = recount(c, "cmp")
    assert got["usage"]["stored_bytes"] == sum(got["referenced"].values()) == 16 * 10 * 64 * 1024
    after_files = seg_files(s.data_dirs[0])
    after = sum(after_files.values())
    print(f"segment files: {before} bytes before GC, {after} after ({len(after_files)} files); "
          f"index after the kill: {mid}")
    # 1/3 of 30 MiB is live; the rest comes back (plus at most the active, preallocated segment).
    assert after <= 10.5 * 2 ** 20 + 2 * 2 ** 20, (before, after)
    assert before - after >= 17 * 2 ** 20
    s.stop()
    check_index(s.data_dirs[0])


def test_everything_deleted_leaves_only_the_active_segment(make_server):
    s = make_server(env=GC_ENV)
    c = s.admin
    s.create_vault("gone")
    objs = _objects_setup(s, c, "gone", nobj=10, per=10, size=40_000)
    for key in objs:
        assert c.delete(f"/v1/vaults/gone/objects/{key}").status_code == 204
    before = seg_files(s.data_dirs[0])
    st = gc(c)
    after = seg_files(s.data_dirs[0])
    assert st["chunks_deleted"] == 100 and st["bytes_freed"] == 100 * 40_000
    assert len(after) == 1 and len(before) >= 4, (before, after)
    assert st["bytes_reclaimed"] >= sum(before.values()) - 2 * 2 ** 20
    assert c.get("/v1/vaults/gone").json()["usage"] == {"stored_bytes": 0, "logical_bytes": 0, "chunks": 0,
                                                         "objects": 0}


def test_dead_vault_is_purged(make_server):
    s = make_server(env=GC_ENV)
    c = s.admin
    s.create_vault("doomed")
    s.create_vault("keeper")
    key = s.create_key("doomed", "full")
    _objects_setup(s, c, "doomed", nobj=30, per=40, size=3000)          # 1200 chunks: several ops
    kept = _objects_setup(s, c, "keeper", nobj=2, per=5, size=3000)
    assert c.delete("/v1/vaults/doomed").status_code == 204
    assert s.client(key).get("/v1/vaults/doomed").status_code == 401
    assert gc(c, dry_run=True)["dead_vault_chunks_deleted"] == 1200
    st = gc(c)
    assert st["dead_vaults"] == 1 and st["dead_vaults_purged"] == 1
    assert st["dead_vault_objects_deleted"] == 30 and st["dead_vault_chunks_deleted"] == 1200
    assert gc(c)["dead_vaults"] == 0
    s.create_vault("doomed")                                             # same name, new vault: empty
    assert c.get("/v1/vaults/doomed").json()["usage"]["chunks"] == 0
    assert c.get("/v1/vaults/doomed/objects").json()["objects"] == []
    _verify_objects(c, "keeper", kept)
    s.stop()
    totals = check_index(s.data_dirs[0])
    assert totals["chunks"] == 10 and totals["dead_vaults"] == 0


# -- usage for billing -----------------------------------------------------------------


def test_usage_report_json_csv_metrics_and_cli(make_server):
    s = make_server(env={"OBJVAULT_GC_INTERVAL_SECONDS": "0"})
    c = s.admin
    s.create_vault("bravo", quota_bytes=10 ** 9)
    s.create_vault("alpha")
    a = [blob(i, 10_000) for i in range(3)]
    ids = put_chunks(s, c, "alpha", a)
    assert c.put("/v1/vaults/alpha/objects/x", json={"chunks": ids + ids}).status_code == 201
    assert c.put("/v1/vaults/alpha/objects/y", json={"chunks": ids[:1]}).status_code == 201
    doc = c.get("/v1/admin/usage").json()
    assert doc["date"] == datetime.now(timezone.utc).date().isoformat()
    assert [v["name"] for v in doc["vaults"]] == ["alpha", "bravo"]
    alpha = doc["vaults"][0]
    assert alpha == {"name": "alpha", "stored_bytes": 30_000, "logical_bytes": 70_000, "chunks": 3, "objects": 2,
                     "quota_bytes": None, "dedup_ratio": round(70_000 / 30_000, 4)}
    assert doc["vaults"][1]["quota_bytes"] == 10 ** 9 and doc["vaults"][1]["dedup_ratio"] == 1.0
    r = c.get("/v1/admin/usage", params={"format": "csv"})
    assert r.status_code == 200 and r.headers["Content-Type"].startswith("text/csv")
    lines = r.text.strip().splitlines()
    assert lines[0] == "date,name,stored_bytes,logical_bytes,chunks,objects,quota_bytes,dedup_ratio"
    assert lines[1] == f"{doc['date']},alpha,30000,70000,3,2,,2.3333" and lines[2].startswith(f"{doc['date']},bravo,0,")
    assert len(lines) == 3
    # Admin only; bad parameters are 400s.
    key = s.create_key("alpha", "full")
    assert s.client(key).get("/v1/admin/usage").status_code == 403
    assert s.client(key).post("/v1/admin/gc", json={}).status_code == 403
    assert c.get("/v1/admin/usage", params={"format": "xml"}).status_code == 400
    for bad in ("2024-13-01", "yesterday", "2024-1-1"):
        r = c.get("/v1/admin/usage", params={"date": bad})
        assert r.status_code == 400 and r.json()["code"] == "bad_request", bad
    r = c.get("/v1/admin/usage", params={"date": "1999-01-01"})
    assert r.status_code == 404 and r.headers["Content-Type"] == "application/problem+json"
    assert c.post("/v1/admin/gc", json={"dry_run": "yes"}).status_code == 400
    assert c.post("/v1/admin/gc", json={"dryrun": True}).status_code == 400
    # Per-vault gauges.
    metrics = c.get("/metrics").text
    assert 'objvault_vault_stored_bytes{vault="alpha"} 30000.0' in metrics
    assert 'objvault_vault_logical_bytes{vault="alpha"} 70000.0' in metrics
    assert 'objvault_vault_quota_bytes{vault="bravo"} 1e+09' in metrics
    assert 'objvault_job_runs_total{job="usage_history",outcome="ok"}' in metrics
    # The CLI.
    env = {**os.environ, "OBJVAULT_ADMIN_TOKEN": s.admin_token}
    out = subprocess.run([OBJVAULT, "usage", "--url", s.url, "--csv"], env=env, capture_output=True, text=True,
                         check=True).stdout
    assert out.splitlines()[:2] == lines[:2]
    out = json.loads(subprocess.run([OBJVAULT, "usage", "--json", "--url", s.url], env=env, capture_output=True, text=True,
                                    check=True).stdout)
    assert out["vaults"][0] == alpha
    out = json.loads(subprocess.run([OBJVAULT, "gc", "--dry-run", "--json", "--url", s.url], env=env, capture_output=True,
                                    text=True, check=True).stdout)
    assert out["dry_run"] is True and out["would_delete"] == 0 and out["chunks_scanned"] == 3
    out = json.loads(subprocess.run([OBJVAULT, "gc", "--json", "--url", s.url], env=env, capture_output=True, text=True,
                                    check=True).stdout)
    assert out["dry_run"] is False and out["chunks_deleted"] == 0
    jobs = {j["name"]: j for j in c.get("/v1/admin/jobs").json()["jobs"]}
    assert jobs["gc"]["runs"] == 1 and jobs["gc"]["last_stats"]["chunks_scanned"] == 3   # the dry run is not a pass


def test_usage_history_daily_snapshot_and_pruning(make_server):
    s = make_server(env={"OBJVAULT_GC_INTERVAL_SECONDS": "0"})
    c = s.admin
    s.create_vault("hist")
    ids = put_chunks(s, c, "hist", [blob(i, 5000) for i in range(4)])
    assert c.put("/v1/vaults/hist/objects/a", json={"chunks": ids}).status_code == 201
    s.stop()
    today = datetime.now(timezone.utc).date()
    old, recent = (today - timedelta(days=401)).isoformat(), (today - timedelta(days=399)).isoformat()
    idx = Index(s.data_dirs[0] / "index")
    try:
        vid = idx.vault("hist").vid

        def seed(txn):
            for day, stored in ((old, 1), (recent, 2)):
                txn.snapshot_usage(day, vid, {"name": "hist", "vid": vid, "quota_bytes": None, "at": 0,
                                              "stored_bytes": stored, "logical_bytes": stored, "chunks": 1,
                                              "objects": 1})

        idx.run_sync(seed)
    finally:
        idx.close()
    s.start()                                          # the start-up pass: today's snapshot, pruning
    c = s.admin
    deadline = time.monotonic() + 10
    while c.get("/v1/admin/usage", params={"date": today.isoformat()}).status_code != 200:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    snap = c.get("/v1/admin/usage", params={"date": today.isoformat()}).json()
    assert snap["vaults"][0]["stored_bytes"] == 20_000 and snap["vaults"][0]["objects"] == 1
    assert c.get("/v1/admin/usage", params={"date": recent}).json()["vaults"][0]["stored_bytes"] == 2
    assert c.get("/v1/admin/usage", params={"date": old}).status_code == 404
    csv_text = c.get("/v1/admin/usage", params={"date": recent, "format": "csv"}).text
    assert csv_text.splitlines()[1].startswith(f"{recent},hist,2,2,1,1,,")
    # Once a day: later changes do not rewrite today's snapshot.
    assert c.delete("/v1/vaults/hist/objects/a").status_code == 204
    s.restart()
    c = s.admin
    time.sleep(0.3)
    assert c.get("/v1/admin/usage", params={"date": today.isoformat()}).json()["vaults"][0]["objects"] == 1


# -- the shared backoff and throttle ----------------------------------------------------


def test_backoff_grows_by_its_factor_up_to_the_cap_and_jitter_only_shortens_it():
    b = Backoff(base=0.5, factor=2.0, cap=30.0, jitter=0.5)
    assert [b.delay(n) for n in range(8)] == [0.5, 1, 2, 4, 8, 16, 30, 30]
    assert b.delay(10_000) == 30  # days of failures do not overflow
    rng = random.Random(7)
    for n in range(12):
        d = b.jittered(n, rng)
        assert b.delay(n) * 0.5 <= d <= b.delay(n)
    assert Backoff().delay(3) == 1.5 ** 3 and Backoff(jitter=0.0).jittered(3) == 1.5 ** 3


async def test_throttle_allows_one_second_of_burst_then_holds_the_rate():
    now = [100.0]
    t = Throttle(1000, clock=lambda: now[0])
    assert t.debt(1000) == 0  # a full bucket: one second's worth at once
    assert t.debt(500) == pytest.approx(0.5)  # beyond it: wait what the rate needs
    now[0] += 3600  # idle for an hour: still at most one second of burst
    assert t.debt(1000) == 0 and t.debt(1000) == pytest.approx(1.0)
    now[0] += 1.0
    assert t.debt(1000) == pytest.approx(1.0)  # the debt of the last take was paid by waiting
    assert Throttle(0).debt(1 << 40) == 0  # 0: unlimited
    fast = Throttle(1_000_000)
    t0 = time.monotonic()
    await fast.take(1_050_000)  # 5% beyond the bucket: a 50 ms wait
    assert 0.03 < time.monotonic() - t0 < 1.0


async def test_a_job_told_of_new_work_runs_before_its_interval_but_not_during_a_backoff():
    class Woken(Job):
        name = "woken"
        backoff = Backoff(base=0.3, factor=1.0, cap=0.3)

        def __init__(self):
            super().__init__()
            self.work = asyncio.Event()
            self.times: list[float] = []
            self.fail = False

        async def run_once(self):
            self.times.append(time.monotonic())
            if self.fail:
                raise RuntimeError("down")
            return {}

        async def wait_for_work(self, timeout):
            try:
                await asyncio.wait_for(self.work.wait(), timeout)
            except asyncio.TimeoutError:
                pass
            self.work.clear()

    async def passes(n: int) -> None:
        deadline = time.monotonic() + 10
        while len(job.times) < n:
            assert time.monotonic() < deadline, job.times
            await asyncio.sleep(0.01)

    job = Woken()
    runner = Runner(None)
    runner.add(job, interval=3600, first_delay=0)
    runner.start()
    await passes(1)
    job.work.set()
    await passes(2)  # woken, an hour early
    job.fail = True
    job.work.set()
    await passes(3)
    job.work.set()  # new work during the backoff: it waits the backoff out (the job's own: 0.3 s)
    await passes(4)
    assert job.times[3] - job.times[2] >= 0.29
    st = runner.status()[0]
    assert st["consecutive_errors"] >= 1 and st["last_error"] == "RuntimeError: down" and st["state"] == {}
    await runner.stop()
