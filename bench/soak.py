"""Soak run: a real server under a mixed, moderate load for a long time; leaks and losses.

    .venv/bin/python bench/soak.py [--minutes 30] [--interval 10] [--out soak.json] [--dir DIR] [--keep]
                                   [--seed N] [--server-env NAME=VALUE]

Starts a SeaweedFS S3 server and an ``objvault serve`` subprocess (own temp
data dir) configured with that bucket as a replication target, a GC grace of
20 s and a GC interval of 15 s, a scrub every 60 s, 32 MiB segments and a
1 MiB stream threshold, so that every background worker really runs many
times during the soak. Then, concurrently, for ``--minutes``:

* native clients on two long-lived vaults: single chunk PUTs of 0 B to 3 MiB
  (some above the stream threshold, so they are spliced to disk), batch
  uploads (``POST chunks/batch``), ``missing`` queries, objects referencing
  new and already-referenced chunks, overwrites and deletes (so refcounts
  drop and GC has work), dedup re-uploads, whole and ranged GETs;
* the real ``restic`` binary on a small source tree that changes every
  round: ``backup``, ``forget --keep-last 3 --prune``, ``check``;
* GC passes (``POST /v1/admin/gc``, which includes compaction) and scrub
  passes (``POST /v1/admin/scrub``) on top of their intervals;
* key rotation (create a key, switch the clients to it, revoke the old one,
  check that it is refused) and vault churn (vaults created, filled,
  deleted, their names reused);
* replication of all of it to the bucket.

Every ``--interval`` seconds it samples the server's RSS, open fds (by kind),
threads (``/proc/<pid>/status``, ``/proc/<pid>/fd``), the data directory's
size, the replication backlog, and the p99 latency per operation kind
(client side) and per route (the server's ``/metrics`` histogram, scraped
with the admin token). A row per sample is printed as it is taken.

After the load: the replication backlog must drain; a GC pass runs once the
grace period of the last write is over; a scrub pass must find nothing
damaged; every object the clients were acknowledged (and that they did not
delete since) must be listed with the same manifest, and every chunk those
objects reference is read back and compared byte for byte (chunks no
object references become collectable after the grace and are not checked);
the same objects and chunks must be in the bucket; ``restic check
--read-data`` and a restore of the last snapshot must match the source
tree. Then the server is stopped (SIGTERM) and ``objvault fsck`` runs on
its data directory.

The summary gives RSS and fds over the last 20 minutes of load (the last
two thirds when the run is shorter): min and max, the median of the
window's last quarter against its first and the rise of the least-squares
line over the window; flat = both within 10% (a leak moves both; a burst
caught by one sample, or bodies in flight between memory trims, moves
neither); the fd peak
between samples (polled twice a second) and what those fds pointed at;
threads; p99 per operation kind and per route; totals of operations and
errors, and the server's own count of 5xx answers (restic retries quietly);
chunks verified; fsck. Exit status 1 when anything was lost, fsck is
unclean, RSS or fds are not flat, a request failed or got a 5xx, a
background job failed, or the server did not stop cleanly. ``--out FILE``
writes the samples and the summary as JSON. The temp directory (with
``server.log``) is kept when the run fails, or with ``--keep``.

A run shorter than about 15 minutes mostly measures warm-up: the data set
grows for the first two minutes, and the heap for a while after.
``--server-env MALLOC_ARENA_MAX=2`` (or any NAME=VALUE) is passed to the
server, to tell allocator fragmentation from a leak. ``--tracemalloc`` runs
the server with ``OBJVAULT_TRACEMALLOC`` (vault/memdiag.py), has it snapshot
its Python heap at the start of the window and at the end of the load, and
prints what grew by line and by traceback, next to RSS and glibc's own
account of its heaps (in use, free): Python's bytes flat while glibc's "in
use" grows points at a C library (heaptrack then tells which: run the server
with ``--server-env LD_PRELOAD=.../libheaptrack_preload.so --server-env
DUMP_HEAPTRACK_OUTPUT=FIFO``). Tracing slows the server, so its figures are
not those of a plain run.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import filecmp
import hashlib
import json
import math
import os
import random
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from urllib.parse import quote

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import aiohttp  # noqa: E402
import obstore  # noqa: E402
import zstandard  # noqa: E402
from prometheus_client.parser import text_string_to_metric_families  # noqa: E402
from yarl import URL  # noqa: E402

from tests.s3server import SeaweedS3  # noqa: E402
from tests.server import OBJVAULT, Server  # noqa: E402
from vault.memdiag import proc_status  # noqa: E402

KiB, MiB = 1 << 10, 1 << 20
STREAM_THRESHOLD = 1 * MiB
SEGMENT_BYTES = 32 * MiB
GC_GRACE = 20
GC_INTERVAL = 15
SCRUB_INTERVAL = 60
SCRUB_RATE = 32 * MiB
REPLICA_PREFIX = "replica"
DELETE_DELAY = 30
FLAT_TOLERANCE = 0.10
FLAT_WINDOW = 20 * 60
RESTIC = shutil.which("restic")
BATCH_TYPE = "application/vnd.objvault.chunks"
# Objects per native client: the live data set stays bounded, so the
# server's memory and disk should reach a steady state, not grow with time.
MAX_OBJECTS = 100
# Kinds shown as columns of the sample table.
TABLE_KINDS = ("put_chunk", "batch", "put_object", "get_chunk")


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def chunk_bytes(seed: int, size: int) -> bytes:
    """The chunk of this seed: regenerated at will, so no payload is kept in memory."""
    return random.Random(seed).randbytes(size)


def pct(values: list[float], q: float) -> float | None:
    """Nearest-rank percentile."""
    if not values:
        return None
    s = sorted(values)
    return s[max(0, math.ceil(q * len(s)) - 1)]


# -- the clients' record of what must exist ------------------------------------------


@dataclass
class VaultModel:
    """What one vault must hold: acknowledged objects and the chunks they reference."""

    name: str
    full: tuple[str, str] = ("", "")        # (key id, secret) of the clients' full key
    append: tuple[str, str] = ("", "")      # the same for an append key
    objects: dict[str, tuple[str, ...]] = field(default_factory=dict)
    refs: Counter = field(default_factory=Counter)
    chunks: dict[str, tuple[int, int]] = field(default_factory=dict)  # id -> (seed, size)
    uncertain: set[str] = field(default_factory=set)  # keys whose last write has an unknown outcome
    deleted: bool = False

    def set_object(self, key: str, ids: tuple[str, ...]) -> None:
        self.drop_object(key)
        self.objects[key] = ids
        self.refs.update(ids)
        self.uncertain.discard(key)

    def drop_object(self, key: str) -> None:
        old = self.objects.pop(key, None)
        if old:
            self.refs.subtract(old)
            for c in set(old):
                if self.refs[c] <= 0:
                    del self.refs[c]
        self.uncertain.discard(key)

    def referenced(self, cid: str) -> bool:
        return self.refs.get(cid, 0) > 0


@dataclass
class Resp:
    status: int
    body: bytes
    headers: dict

    def json(self):
        return json.loads(self.body)


class Stats:
    """Client-side operation counts, latencies per interval, errors and losses."""

    def __init__(self) -> None:
        self.cur: dict[str, list[float]] = defaultdict(list)
        self.intervals: list[dict[str, list[float]]] = []
        self.ok: Counter = Counter()
        self.err: Counter = Counter()
        self.err_kinds: Counter = Counter()
        self.examples: list[dict] = []
        self.losses: list[dict] = []
        self.notes: Counter = Counter()   # expected-but-interesting outcomes (benign races)
        self.t0 = time.monotonic()

    def record(self, kind: str, seconds: float, ok: bool, what: str = "", detail: str = "") -> None:
        self.cur[kind].append(seconds)
        if ok:
            self.ok[kind] += 1
            return
        self.err[kind] += 1
        self.err_kinds[f"{kind}: {what}"] += 1
        if len(self.examples) < 60:
            self.examples.append({"t": round(time.monotonic() - self.t0, 1), "kind": kind, "what": what,
                                  "detail": detail[:600]})

    def lost(self, what: str, **info) -> None:
        if len(self.losses) < 200:
            self.losses.append({"t": round(time.monotonic() - self.t0, 1), "what": what, **info})
        else:
            self.notes["losses beyond the first 200"] += 1

    def roll(self) -> dict[str, list[float]]:
        cur, self.cur = self.cur, defaultdict(list)
        self.intervals.append(cur)
        return cur


# -- /proc and /metrics --------------------------------------------------------------


def proc_sample(pid: int, data_dir: Path) -> dict:
    out: dict = proc_status(pid, ("VmRSS", "VmHWM", "RssAnon", "RssFile", "Threads"))
    if not out:
        raise OSError(f"process {pid} is gone")
    out["threads"] = out.pop("Threads")
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    out["cpu_seconds"] = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    kinds: Counter = Counter()
    targets: Counter = Counter()
    index, segments = str(data_dir / "index"), str(data_dir / "segments")
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:  # closed while we looked
            continue
        targets[target] += 1
        if target.startswith("socket:"):
            kinds["socket"] += 1
        elif target.startswith("pipe:"):
            kinds["pipe"] += 1
        elif target.startswith("anon_inode:"):
            kinds["anon"] += 1
        elif target.startswith(index):
            kinds["index"] += 1
        elif target.startswith(segments):
            kinds["segment"] += 1
        elif target.startswith(str(data_dir)):
            kinds["data_other"] += 1
        else:
            kinds["other"] += 1
    # Many fds on one file (the same segment opened again and again) tell a leak
    # from many files legitimately open.
    out["fd_distinct_files"] = sum(1 for t in targets if t.startswith("/"))
    out["fd_repeated"] = {t: n for t, n in targets.most_common(5) if n > 1 and t.startswith("/")}
    out["fds"] = sum(kinds.values())
    out["fd_kinds"] = dict(kinds)
    return out


class PeakWatcher:
    """Polls the fd count twice a second between samples: a burst of fds that
    closes again within 10 s would be missed by the samples alone. At each new
    peak it keeps the fds' targets, to show what they were."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.peak = 0
        self.peak_targets: Counter = Counter()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()

    def _run(self) -> None:
        while not self._stop.wait(0.5):
            try:
                fds = os.listdir(f"/proc/{self.pid}/fd")
            except OSError:
                return
            if len(fds) > self.peak:
                targets: Counter = Counter()
                for fd in fds:
                    with contextlib.suppress(OSError):
                        t = os.readlink(f"/proc/{self.pid}/fd/{fd}")
                        targets[t.rsplit("/", 1)[0] + "/*" if t.startswith("/") else t.split(":")[0]] += 1
                with self._lock:
                    self.peak, self.peak_targets = len(fds), targets

    def take(self) -> tuple[int, dict]:
        """The peak since the last call, and where its fds pointed (by directory)."""
        with self._lock:
            out = (self.peak, dict(self.peak_targets.most_common(6)))
            self.peak, self.peak_targets = 0, Counter()
        return out

    def stop(self) -> None:
        self._stop.set()
        self._t.join()


def dir_bytes(path: Path) -> int:
    total = 0
    for root, _, files in os.walk(path):
        for name in files:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(root, name)).st_blocks * 512
    return total


def parse_metrics(text: str) -> dict:
    """Cumulative latency buckets per (route, method), and requests per status class."""
    hist: dict[tuple[str, str], dict[float, float]] = defaultdict(dict)
    statuses: Counter = Counter()
    index_mem = 0.0
    for fam in text_string_to_metric_families(text):
        if fam.name == "objvault_index_memory_bytes":
            index_mem = sum(s.value for s in fam.samples)
        elif fam.name == "objvault_http_request_duration_seconds":
            for s in fam.samples:
                if s.name.endswith("_bucket"):
                    hist[(s.labels["route"], s.labels["method"])][float(s.labels["le"])] = s.value
        elif fam.name == "objvault_http_requests":
            for s in fam.samples:
                if s.name.endswith("_total"):
                    statuses[s.labels["status"][0] + "xx"] += s.value
    return {"hist": dict(hist), "statuses": dict(statuses), "index_mem": index_mem}


def hist_delta(new: dict, old: dict | None) -> dict[tuple[str, str], dict[float, float]]:
    out = {}
    for key, buckets in new["hist"].items():
        prev = (old or {}).get("hist", {}).get(key, {})
        out[key] = {le: v - prev.get(le, 0.0) for le, v in buckets.items()}
    return out


def hist_p99(buckets: dict[float, float]) -> tuple[int, float | None]:
    """(requests, upper bound of the bucket holding the 99th percentile)."""
    total = buckets.get(math.inf, 0.0)
    if total <= 0:
        return 0, None
    want = 0.99 * total
    for le in sorted(buckets):
        if buckets[le] >= want:
            return int(total), le
    return int(total), math.inf


# -- the soak --------------------------------------------------------------------------


class Soak:
    """The clients, the sampler and the final checks, on one event loop."""

    def __init__(self, srv: Server, bucket, args, tmp: Path) -> None:
        self.srv, self.bucket, self.args, self.tmp = srv, bucket, args, tmp
        self.url = srv.url
        self.admin = srv.admin_token
        self.stats = Stats()
        self.vaults: dict[str, VaultModel] = {}
        self.seed_base = random.Random(args.seed).getrandbits(40) << 20
        self.seed_n = 0
        self.rnd = random.Random(args.seed)
        self.stopping = asyncio.Event()
        self.samples: list[dict] = []
        self.scrapes: list[dict] = []
        self.gc_passes: list[dict] = []
        self.restic_log: Counter = Counter()
        self.restic_last_backup: float | None = None
        self.dead_incarnations: dict[str, list[str]] = {}
        self.server_died = False
        self.final: dict = {}
        self.load_seconds = 0.0
        self.sample_lock = asyncio.Lock()

    # -- HTTP --------------------------------------------------------------------------

    async def call(self, kind: str, method: str, path: str, *, secret: str | None = None,
                   expect: tuple[int, ...] = (200,), data: bytes | None = None, js=None,
                   headers: dict | None = None, record: bool = True) -> Resp | None:
        """One request; latency and outcome recorded under ``kind``. None on a transport error."""
        hdrs = {"Authorization": f"Bearer {secret or self.admin}"}
        hdrs.update(headers or {})
        t0 = time.perf_counter()
        try:
            # encoded=True: the path is already percent-encoded exactly once, as the server expects.
            async with self.session.request(method, URL(self.url + path, encoded=True), data=data, json=js,
                                            headers=hdrs) as r:
                body = await r.read()
                resp = Resp(r.status, body, dict(r.headers))
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as e:
            self.stats.record(kind, time.perf_counter() - t0, False, type(e).__name__, f"{method} {path}: {e!r}")
            return None
        dt = time.perf_counter() - t0
        if resp.status in expect:
            if record:
                self.stats.record(kind, dt, True)
        else:
            code = ""
            with contextlib.suppress(Exception):
                code = resp.json().get("code", "")
            self.stats.record(kind, dt, False, f"{resp.status} {code}".strip(),
                              f"{method} {path} -> {resp.status}: {resp.body[:400]!r}")
        return resp

    def new_chunk(self, rnd: random.Random, small: bool = False) -> tuple[str, int, int, bytes]:
        self.seed_n += 1
        seed = self.seed_base + self.seed_n
        r = rnd.random()
        if small:
            size = rnd.randint(512, 32 * KiB)
        elif r < 0.005:
            size = 0
        elif r < 0.05:
            size = rnd.randint(STREAM_THRESHOLD + 1, 3 * STREAM_THRESHOLD)  # spliced, not buffered
        elif r < 0.30:
            size = rnd.randint(64 * KiB, 512 * KiB)
        else:
            size = rnd.randint(1, 64 * KiB)
        data = chunk_bytes(seed, size)
        return sha(data), seed, size, data

    async def pause(self, lo: float, hi: float) -> None:
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self.stopping.wait(), self.rnd.uniform(lo, hi))

    # -- native operations -------------------------------------------------------------

    def vpath(self, v: VaultModel) -> str:
        return f"/v1/vaults/{quote(v.name, safe='')}"

    async def put_chunk(self, v: VaultModel, rnd: random.Random, secret: str) -> str | None:
        cid, seed, size, data = self.new_chunk(rnd)
        kind = "put_chunk_streamed" if size > STREAM_THRESHOLD else "put_chunk"
        r = await self.call(kind, "PUT", f"{self.vpath(v)}/chunks/{cid}", secret=secret, data=data,
                            expect=(201, 200), headers={"Content-Type": "application/octet-stream"})
        if r is None or r.status not in (200, 201):
            return None
        v.chunks[cid] = (seed, size)
        return cid

    async def reupload(self, v: VaultModel, cid: str, secret: str) -> None:
        """A dedup hit: the chunk is referenced, so the server must answer 200 (201 would mean it was gone)."""
        seed, size = v.chunks[cid]
        r = await self.call("put_chunk_dedup", "PUT", f"{self.vpath(v)}/chunks/{cid}", secret=secret,
                            data=chunk_bytes(seed, size), expect=(200, 201),
                            headers={"Content-Type": "application/octet-stream"})
        if r is not None and r.status == 201:
            if v.referenced(cid):
                self.stats.lost("referenced chunk was stored anew on re-upload (201)", vault=v.name, chunk=cid)
            else:
                self.stats.notes["re-upload of a chunk that just lost its last reference: 201"] += 1

    async def put_batch(self, v: VaultModel, rnd: random.Random, secret: str) -> list[str] | None:
        new = [self.new_chunk(rnd, small=True) for _ in range(rnd.randint(8, 48))]
        again = list(dict.fromkeys(self.pick_referenced(v, rnd, rnd.choice((0, 0, 1, 2)))))
        frames, order = [], []
        for cid, seed, size, data in new:
            frames += [bytes.fromhex(cid), size.to_bytes(4, "big"), data]
            order.append(cid)
        for cid in again:
            seed, size = v.chunks[cid]
            frames += [bytes.fromhex(cid), size.to_bytes(4, "big"), chunk_bytes(seed, size)]
            order.append(cid)
        r = await self.call("batch", "POST", f"{self.vpath(v)}/chunks/batch", secret=secret, data=b"".join(frames),
                            headers={"Content-Type": BATCH_TYPE})
        if r is None or r.status != 200:
            return None
        doc = r.json()
        got = {c["id"]: c["status"] for c in doc["chunks"]}
        if [c["id"] for c in doc["chunks"]] != order:
            self.stats.record("batch_answer", 0, False, "ids out of order", json.dumps(doc)[:400])
        for cid, seed, size, _ in new:
            v.chunks[cid] = (seed, size)
        for cid in again:
            if got.get(cid) == 201:
                if v.referenced(cid):
                    self.stats.lost("referenced chunk was stored anew by a batch (201)", vault=v.name, chunk=cid)
                else:
                    self.stats.notes["batch re-sent a chunk that just lost its last reference: 201"] += 1
        ids = [c[0] for c in new]
        if rnd.random() < 0.3:
            # Ids never uploaded, mixed in: exactly those must be missing, in the order asked.
            fresh = [sha(os.urandom(16)) for _ in range(3)]
            asked = ids + fresh
            rnd.shuffle(asked)
            m = await self.call("missing", "POST", f"{self.vpath(v)}/chunks/missing", secret=secret,
                                js={"ids": asked})
            if m is not None and m.status == 200:
                missing = m.json()["missing"]
                want = [c for c in asked if c in fresh]
                if missing != want:
                    gone = [c for c in missing if c in ids]
                    if gone:
                        self.stats.lost("chunks just stored by a batch reported missing", vault=v.name,
                                        chunks=gone[:5])
                    else:
                        self.stats.record("missing_answer", 0, False, "wrong answer",
                                          f"asked {len(asked)}, want {want}, got {missing}")
        return ids

    def pick_referenced(self, v: VaultModel, rnd: random.Random, n: int) -> list[str]:
        if n <= 0 or not v.objects:
            return []
        keys = list(v.objects)
        out = []
        for _ in range(n):
            ids = v.objects[rnd.choice(keys)]
            if ids:
                out.append(rnd.choice(ids))
        return out

    async def put_object(self, v: VaultModel, key: str, ids: list[str], secret: str, kind: str) -> bool:
        path = f"{self.vpath(v)}/objects/{quote(key, safe='/')}"
        r = await self.call(kind, "PUT", path, secret=secret, js={"chunks": ids}, expect=(201, 409))
        if r is None:
            await self.resolve(v, key)
            return False
        if r.status == 409:
            doc = r.json()
            missing = doc.get("missing", [])
            bad = [c for c in missing if v.referenced(c)]
            if bad:
                self.stats.lost("object PUT: referenced chunks missing on the server", vault=v.name, key=key,
                                chunks=bad[:5])
            elif doc.get("code") == "missing_chunks":
                self.stats.notes["object PUT named a chunk collected meanwhile (409)"] += 1
            return False
        if r.status != 201:
            return False
        v.set_object(key, tuple(ids))
        return True

    async def delete_object(self, v: VaultModel, key: str, secret: str) -> None:
        path = f"{self.vpath(v)}/objects/{quote(key, safe='/')}"
        r = await self.call("delete_object", "DELETE", path, secret=secret, expect=(204,))
        if r is None:
            await self.resolve(v, key)
        elif r.status == 204:
            v.drop_object(key)
        elif r.status == 404:
            self.stats.lost("acknowledged object gone before its delete", vault=v.name, key=key)
            v.drop_object(key)

    async def resolve(self, v: VaultModel, key: str) -> None:
        """After a write whose answer never came: ask the server what the key holds now."""
        path = f"{self.vpath(v)}/objects/{quote(key, safe='/')}"
        r = await self.call("get_object", "GET", path, secret=v.full[1], expect=(200, 404))
        if r is None or r.status not in (200, 404):
            v.drop_object(key)
            v.uncertain.add(key)
        elif r.status == 200:
            v.set_object(key, tuple(r.json()["chunks"]))
        else:
            v.drop_object(key)

    async def read_some(self, v: VaultModel, rnd: random.Random, own: list[str]) -> None:
        keys = list(v.objects)
        if not keys:
            return
        key = rnd.choice(keys)
        ids = v.objects[key]
        if ids:
            cid = rnd.choice(ids)
            seed, size = v.chunks[cid]
            data = chunk_bytes(seed, size)
            headers, want, expect = {}, data, (200,)
            if size > 16 and rnd.random() < 0.3:
                a = rnd.randrange(size // 2)
                b = rnd.randrange(a, size)
                headers, want, expect = {"Range": f"bytes={a}-{b}"}, data[a:b + 1], (206,)
            r = await self.call("get_chunk", "GET", f"{self.vpath(v)}/chunks/{cid}", secret=v.full[1],
                                headers=headers, expect=expect + (404,))
            if r is not None and r.status == 404:
                if v.referenced(cid):
                    self.stats.lost("referenced chunk answered 404", vault=v.name, chunk=cid)
                else:
                    self.stats.notes["GET of a chunk that lost its last reference meanwhile: 404"] += 1
            elif r is not None and r.status in expect and r.body != want:
                self.stats.lost("chunk bytes differ", vault=v.name, chunk=cid, range=headers.get("Range"))
        if key in own:
            path = f"{self.vpath(v)}/objects/{quote(key, safe='/')}"
            r = await self.call("get_object", "GET", path, secret=v.full[1], expect=(200, 404))
            if r is not None and r.status == 404:
                self.stats.lost("acknowledged object answered 404", vault=v.name, key=key)
            elif r is not None and r.status == 200 and tuple(r.json()["chunks"]) != v.objects.get(key):
                self.stats.lost("object manifest differs", vault=v.name, key=key)

    # What a client does next, by how many objects it holds: a ramp up to 80% of
    # MAX_OBJECTS, then a band in which writes and deletes balance, so the data
    # set reaches a steady state within the first minutes.
    RAMP = {"new": .75, "overwrite": .08, "delete": .07, "read": .10}
    BAND = {"new": .35, "overwrite": .20, "delete": .30, "read": .15}
    FULL = {"new": 0, "overwrite": .30, "delete": .40, "read": .30}

    async def native_cycle(self, v: VaultModel, rnd: random.Random, name: str, own: list[str], counter: list[int],
                           batch: bool) -> None:
        """One step of a client: a new object, an overwrite, a delete or a read."""
        live = [k for k in own if k in v.objects]
        own[:] = live
        weights = dict(self.RAMP if len(live) < 0.8 * MAX_OBJECTS else
                       self.BAND if len(live) < MAX_OBJECTS else self.FULL)
        if batch:  # its append key may not overwrite
            weights["read"] += weights.pop("overwrite")
        if len(live) < 3:
            weights = {"new": 1}
        action = rnd.choices(list(weights), list(weights.values()))[0]
        if action == "new":
            counter[0] += 1
            n = counter[0]
            # Some keys need percent-encoding; the server decodes a path exactly once.
            key = f"{name}/{n:07d}" if n % 7 else f"{name}/odd key ü+%25/{n}"
            if batch:
                # A backup agent with many small chunks: the batch endpoint, with an append key.
                ids = await self.put_batch(v, rnd, v.append[1])
                secret = v.append[1]
            else:
                ids, secret = [], v.full[1]
                for _ in range(rnd.randint(1, 4)):
                    cid = await self.put_chunk(v, rnd, secret)
                    if cid is None:
                        ids = None
                        break
                    ids.append(cid)
            if ids is None:
                return
            shared = self.pick_referenced(v, rnd, rnd.choice((0, 0, 1, 2)))
            if shared and rnd.random() < 0.3:
                await self.reupload(v, shared[0], secret)
            ids = ids + shared
            if ids and rnd.random() < 0.1:
                ids.append(ids[0])  # one chunk twice in a manifest: two references
            rnd.shuffle(ids)
            if await self.put_object(v, key, ids, secret, "put_object"):
                own.append(key)
        elif action == "overwrite":
            key = rnd.choice(live)
            keep = [c for c in v.objects[key] if rnd.random() < 0.5]
            for _ in range(rnd.randint(1, 2)):
                cid = await self.put_chunk(v, rnd, v.full[1])
                if cid is None:
                    return
                keep.append(cid)
            await self.put_object(v, key, keep, v.full[1], "overwrite_object")
        elif action == "delete":
            key = rnd.choice(live)
            if batch and rnd.random() < 0.1:
                # The append key may not delete: 403, and the object stays.
                path = f"{self.vpath(v)}/objects/{quote(key, safe='/')}"
                await self.call("delete_refused", "DELETE", path, secret=v.append[1], expect=(403,))
            await self.delete_object(v, key, v.full[1])
        else:
            await self.read_some(v, rnd, own)

    async def native_client(self, v: VaultModel, name: str, batch: bool) -> None:
        rnd = random.Random(f"{self.args.seed}:{name}")
        own: list[str] = []
        counter = [0]
        while not self.stopping.is_set():
            await self.native_cycle(v, rnd, name, own, counter, batch)
            await self.pause(0.15, 0.6)

    # -- vaults and keys ---------------------------------------------------------------

    async def create_vault(self, name: str, **fields) -> VaultModel | None:
        r = await self.call("create_vault", "POST", "/v1/vaults", js={"name": name, **fields}, expect=(201,))
        if r is None or r.status != 201:
            return None
        v = VaultModel(name)
        full = await self.create_key(v, "full")
        append = await self.create_key(v, "append")
        if full is None or append is None:
            return None
        v.full, v.append = full, append
        self.vaults[name] = v
        return v

    async def create_key(self, v: VaultModel, role: str) -> tuple[str, str] | None:
        r = await self.call("create_key", "POST", f"{self.vpath(v)}/keys", js={"role": role, "label": "soak"},
                            expect=(201,))
        if r is None or r.status != 201:
            return None
        doc = r.json()
        return doc["id"], doc["secret"]

    async def revoke_key(self, v: VaultModel, key: tuple[str, str]) -> None:
        r = await self.call("revoke_key", "DELETE", f"{self.vpath(v)}/keys/{key[0]}", expect=(204,))
        if r is not None and r.status == 204:
            # A revoked key must be refused at once.
            await self.call("revoked_key_refused", "GET", self.vpath(v), secret=key[1], expect=(401,))

    async def key_rotation(self, long_lived: list[VaultModel]) -> None:
        n = 0
        while not self.stopping.is_set():
            await self.pause(10, 20)
            if self.stopping.is_set():
                break
            n += 1
            v = long_lived[n % len(long_lived)]
            role = "full" if n % 2 else "append"
            new = await self.create_key(v, role)
            if new is None:
                continue
            old = v.full if role == "full" else v.append
            if role == "full":
                v.full = new
            else:
                v.append = new
            # A short-lived read key: reads, may not delete, refused once revoked.
            ro = await self.create_key(v, "read")
            if ro is not None:
                await self.call("list_objects", "GET", f"{self.vpath(v)}/objects?limit=10", secret=ro[1])
                if v.objects:
                    key = self.rnd.choice(list(v.objects))
                    path = f"{self.vpath(v)}/objects/{quote(key, safe='/')}"
                    await self.call("delete_refused", "DELETE", path, secret=ro[1], expect=(403,))
                await self.revoke_key(v, ro)
            # Requests already sent with the old key finish first.
            await asyncio.sleep(8)
            await self.revoke_key(v, old)
            r = await self.call("list_keys", "GET", f"{self.vpath(v)}/keys")
            if r is not None and r.status == 200 and len(r.json()["keys"]) != 2:
                self.stats.record("list_keys", 0, False, "key count",
                                  f"{v.name}: {len(r.json()['keys'])} keys listed, 2 expected")

    async def vault_churn(self) -> None:
        """Create vaults, fill them a little, delete them; names come back after a delete."""
        n = 0
        while not self.stopping.is_set():
            await self.pause(8, 16)
            if self.stopping.is_set():
                break
            name = f"tmp-{n % 3}"
            n += 1
            v = self.vaults.get(name)
            if v is not None:
                r = await self.call("delete_vault", "DELETE", self.vpath(v), expect=(204,))
                if r is None or r.status != 204:
                    continue
                v.deleted = True
                del self.vaults[name]
                self.dead_incarnations[name] = list(v.chunks)[:20]
                await self.call("deleted_vault_gone", "GET", self.vpath(v), expect=(404,))
                await self.call("deleted_vault_key_refused", "GET", self.vpath(v), secret=v.full[1], expect=(401,))
                continue
            v = await self.create_vault(name, quota_bytes=256 * MiB)
            if v is None:
                continue
            # A name used before: nothing of the old vault may show through.
            r = await self.call("list_objects", "GET", f"{self.vpath(v)}/objects", secret=v.full[1])
            if r is not None and r.status == 200 and r.json()["objects"]:
                self.stats.record("reused_name_empty", 0, False, "old objects visible",
                                  f"{name}: {[o['key'] for o in r.json()['objects'][:5]]}")
            for cid in self.dead_incarnations.get(name, [])[:5]:
                await self.call("old_chunk_gone", "HEAD", f"{self.vpath(v)}/chunks/{cid}", secret=v.full[1],
                                expect=(404,))
            rnd = random.Random(f"{self.args.seed}:{name}:{n}")
            own: list[str] = []
            counter = [0]
            for i in range(12):
                await self.native_cycle(v, rnd, "w", own, counter, batch=i % 3 == 0)

    # -- admin -------------------------------------------------------------------------

    async def admin_passes(self) -> None:
        n = 0
        while not self.stopping.is_set():
            await self.pause(15, 25)
            if self.stopping.is_set():
                break
            n += 1
            r = await self.call("admin_gc", "POST", "/v1/admin/gc", js={})
            if r is not None and r.status == 200:
                self.gc_passes.append(r.json())
            if n % 3 == 0:
                await self.call("admin_gc_dry_run", "POST", "/v1/admin/gc", js={"dry_run": True})
            if n % 3 == 1:
                await self.call("admin_scrub", "POST", "/v1/admin/scrub", expect=(202,))
            if n % 4 == 0:
                await self.call("admin_usage", "GET", "/v1/admin/usage")

    # -- restic ------------------------------------------------------------------------

    def restic_env(self, v: VaultModel) -> dict:
        return {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(self.tmp / "restic-home"),
            "RESTIC_PASSWORD": "soak soak soak",
            "RESTIC_CACHE_DIR": str(self.tmp / "restic-cache"),
            "RESTIC_REPOSITORY": f"rest:http://{v.name}:{v.full[1]}@127.0.0.1:{self.srv.port}/restic/{v.name}/",
        }

    async def restic(self, v: VaultModel, kind: str, *args: str, timeout: float = 600) -> bool:
        t0 = time.perf_counter()
        proc = await asyncio.create_subprocess_exec(RESTIC, *args, env=self.restic_env(v),
                                                    stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        try:
            out, err = await asyncio.wait_for(proc.communicate(), timeout)
        except asyncio.TimeoutError:
            proc.kill()
            await proc.wait()
            self.stats.record(kind, time.perf_counter() - t0, False, "timeout", f"restic {' '.join(args)}")
            return False
        dt = time.perf_counter() - t0
        ok = proc.returncode == 0
        self.stats.record(kind, dt, ok, f"exit {proc.returncode}",
                          f"restic {' '.join(args)}: {err.decode(errors='replace')[-500:]}")
        if ok:
            self.restic_log[kind] += 1
            if kind == "restic_backup":
                self.restic_last_backup = dt
        return ok

    def change_tree(self, src: Path, rnd: random.Random, first: bool) -> None:
        """A small tree that changes every round: files replaced, grown, added and removed."""
        if first:
            (src / "sub").mkdir(parents=True)
            for i in range(10):
                (src / f"file{i:02d}.bin").write_bytes(rnd.randbytes(rnd.randint(128 * KiB, 768 * KiB)))
            (src / "sub" / "notes.txt").write_text("soak\n" * 1000)
            (src / "sub" / "empty").write_bytes(b"")
            return
        files = sorted(p for p in src.glob("*.bin"))
        victim = rnd.choice(files)
        victim.write_bytes(rnd.randbytes(rnd.randint(128 * KiB, 768 * KiB)))
        with open(rnd.choice(files), "ab") as f:
            f.write(rnd.randbytes(rnd.randint(1, 64 * KiB)))
        (src / f"new{rnd.getrandbits(32):08x}.bin").write_bytes(rnd.randbytes(rnd.randint(64 * KiB, 512 * KiB)))
        if len(files) > 12:
            rnd.choice(files).unlink()
        (src / "sub" / "notes.txt").write_text(f"round {rnd.getrandbits(16)}\n" * 1000)

    async def restic_client(self, v: VaultModel, src: Path) -> None:
        rnd = random.Random(f"{self.args.seed}:restic")
        self.change_tree(src, rnd, first=True)
        if not await self.restic(v, "restic_init", "init"):
            return
        n = 0
        while not self.stopping.is_set():
            n += 1
            if n > 1:
                self.change_tree(src, rnd, first=False)
            await self.restic(v, "restic_backup", "backup", "--host", "soak", str(src))
            if n % 3 == 0:
                await self.restic(v, "restic_forget_prune", "forget", "--host", "soak", "--keep-last", "3",
                                  "--prune")
            if n % 5 == 0:
                await self.restic(v, "restic_check", "check")
            await self.pause(8, 16)

    # -- sampling ----------------------------------------------------------------------

    async def sample(self, t: float, phase: str) -> dict:
        # One at a time: samples, latency intervals and scrapes stay aligned by index.
        async with self.sample_lock:
            return await self._sample(t, phase)

    async def _sample(self, t: float, phase: str) -> dict:
        lat = self.stats.roll()
        s: dict = {"t": round(t, 1), "phase": phase}
        try:
            p = proc_sample(self.srv.proc.pid, self.srv.data_dirs[0])
        except OSError:
            # Keep samples, latencies and scrapes aligned by index.
            self.server_died = True
            s["server_gone"] = True
            self.samples.append(s)
            self.scrapes.append(self.scrapes[-1] if self.scrapes else {"hist": {}, "statuses": {}})
            self.print_row(s)
            return s
        # RssFile is mostly segment pages mapped by reads in flight; RssAnon is the heap.
        s.update(wall=round(time.time(), 1), rss_mib=round(p["VmRSS"] / MiB, 1), hwm_mib=round(p["VmHWM"] / MiB, 1),
                 anon_mib=round(p.get("RssAnon", 0) / MiB, 1), file_mib=round(p.get("RssFile", 0) / MiB, 1),
                 fds=p["fds"],
                 fd_kinds=p["fd_kinds"], fd_distinct_files=p["fd_distinct_files"], fd_repeated=p["fd_repeated"],
                 threads=p["threads"], cpu_seconds=round(p["cpu_seconds"], 2))
        prev = next((x for x in reversed(self.samples) if "cpu_seconds" in x), None)
        span = t - prev["t"] if prev else 0.0
        s["span"] = round(span, 1)
        s["cpu_pct"] = round(100 * (p["cpu_seconds"] - prev["cpu_seconds"]) / span, 1) if span > 0 else None
        peak, where = self.watcher.take()
        s["fds_peak"] = max(peak, p["fds"])
        if peak > 1.5 * p["fds"]:
            s["fds_peak_where"] = where
        s["data_mib"] = round(await asyncio.to_thread(dir_bytes, self.srv.data_dirs[0]) / MiB, 1)
        s["ops"] = sum(len(v) for v in lat.values())
        s["errors_total"] = sum(self.stats.err.values())
        s["ops_total"] = sum(self.stats.ok.values()) + s["errors_total"]
        s["client_p99_ms"] = {k: round(pct(v, 0.99) * 1000, 1) for k, v in sorted(lat.items())}
        s["client_n"] = {k: len(v) for k, v in sorted(lat.items())}
        m = await self.call("metrics", "GET", "/metrics", record=False)
        if m is not None and m.status == 200:
            scrape = parse_metrics(m.body.decode())
            prev = self.scrapes[-1] if self.scrapes else None
            self.scrapes.append(scrape)
            s["server_p99_ms"] = {}
            for (route, method), b in sorted(hist_delta(scrape, prev).items()):
                n, le = hist_p99(b)
                if n:
                    s["server_p99_ms"][f"{method} {route}"] = None if le == math.inf else round(le * 1000, 1)
            s["server_status_total"] = scrape["statuses"]
            # RocksDB's caches fill towards their caps as the index is read:
            # RSS without them tells growth of the caches from a leak.
            s["index_mem_mib"] = round(scrape["index_mem"] / MiB, 1)
            s["rss_less_index_mib"] = round(s["rss_mib"] - scrape["index_mem"] / MiB, 1)
        else:
            self.scrapes.append(self.scrapes[-1] if self.scrapes else {"hist": {}, "statuses": {}})
        r = await self.call("admin_replication", "GET", "/v1/admin/replication", record=False)
        if r is not None and r.status == 200:
            tg = r.json()["targets"][0]
            s["repl"] = {k: tg[k] for k in ("pending_entries", "delayed_entries", "pending_bytes",
                                            "oldest_pending_seconds", "sent_entries", "last_error")}
        r = await self.call("admin_jobs", "GET", "/v1/admin/jobs", record=False)
        if r is not None and r.status == 200:
            s["jobs"] = {j["name"]: {"runs": j["runs"], "failures": j["failures"]} for j in r.json()["jobs"]}
        r = await self.call("admin_usage", "GET", "/v1/admin/usage", record=False)
        if r is not None and r.status == 200:
            rows = r.json()["vaults"]
            s["stored_mib"] = round(sum(x["stored_bytes"] for x in rows) / MiB, 1)
            s["chunks"] = sum(x["chunks"] for x in rows)
            s["objects"] = sum(x["objects"] for x in rows)
        self.samples.append(s)
        self.print_row(s)
        return s

    HEADER = (f"{'t s':>6} {'phase':>5} {'rss MiB':>8} {'anon':>6} {'fds':>5} {'peak':>5} {'seg':>4} {'thr':>4} "
              f"{'cpu%':>5} {'ops/s':>6} {'err':>4} "
              + " ".join(f"{k[:9] + ' p99':>13}" for k in TABLE_KINDS)
              + f" {'restic s':>8} {'repl pend':>9} {'stored MiB':>10} {'disk MiB':>8}")

    def print_row(self, s: dict) -> None:
        if "rss_mib" not in s:
            print(f"{s['t']:>6} server gone", flush=True)
            return
        p99 = s.get("client_p99_ms", {})
        cols = " ".join(f"{(str(round(p99[k])) + ' ms') if k in p99 else '-':>13}" for k in TABLE_KINDS)
        repl = s.get("repl", {})
        pend = repl.get("pending_entries", 0) - repl.get("delayed_entries", 0) if repl else "-"
        rb = f"{self.restic_last_backup:.1f}" if self.restic_last_backup else "-"
        rate = f"{s['ops'] / s['span']:.1f}" if s["span"] else "-"
        cpu = "-" if s["cpu_pct"] is None else f"{s['cpu_pct']:.0f}"
        print(f"{s['t']:>6.0f} {s['phase']:>5} {s['rss_mib']:>8.1f} {s['anon_mib']:>6.1f} {s['fds']:>5} "
              f"{s['fds_peak']:>5} {s['fd_kinds'].get('segment', 0):>4} {s['threads']:>4} {cpu:>5} {rate:>6} "
              f"{s['errors_total']:>4} {cols} {rb:>8} {pend:>9} "
              f"{s.get('stored_mib', '-'):>10} {s['data_mib']:>8.1f}", flush=True)

    async def sampler(self, t0: float, phase: str, until: asyncio.Event) -> None:
        k = 1
        while not until.is_set():
            delay = t0 + k * self.args.interval - time.monotonic()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(until.wait(), max(0.0, delay))
            if until.is_set():
                break
            await self.sample(time.monotonic() - t0, phase)
            if self.srv.proc.poll() is not None:
                self.server_died = True
                self.stopping.set()
                break
            k += 1

    # -- the run -----------------------------------------------------------------------

    async def run(self) -> None:
        self.watcher = PeakWatcher(self.srv.proc.pid)
        with open(f"/proc/{self.srv.proc.pid}/limits") as f:
            self.fd_limit = next((line.split()[3] for line in f if line.startswith("Max open files")), "?")
        try:
            await self._run()
        finally:
            self.watcher.stop()

    async def _run(self) -> None:
        timeout = aiohttp.ClientTimeout(total=300, sock_connect=10)
        connector = aiohttp.TCPConnector(limit=24)
        async with aiohttp.ClientSession(timeout=timeout, connector=connector) as self.session:
            a = await self.create_vault("soak-a")
            b = await self.create_vault("soak-b")
            rv = await self.create_vault("restic")
            if None in (a, b, rv):
                raise RuntimeError(f"could not set up the vaults: {self.stats.examples}")
            src = self.tmp / "restic-src"
            t0 = time.monotonic()
            self.stats.t0 = t0
            print(self.HEADER, flush=True)
            await self.sample(0.0, "load")
            load_done = asyncio.Event()
            tasks = [asyncio.create_task(self.guard(c)) for c in (
                self.native_client(a, "w0", batch=False),
                self.native_client(a, "b0", batch=True),
                self.native_client(b, "w1", batch=False),
                self.native_client(b, "b1", batch=True),
                self.key_rotation([a, b]),
                self.vault_churn(),
                self.admin_passes(),
                self.restic_client(rv, src),
            )]
            sampler = asyncio.create_task(self.sampler(t0, "load", load_done))
            snapper = asyncio.create_task(self.window_snapshot())
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self.stopping.wait(), self.args.minutes * 60)
            self.stopping.set()
            # Every client finishes the step it is in (a restic backup included).
            await asyncio.gather(*tasks)
            self.load_seconds = time.monotonic() - t0
            snapper.cancel()
            self.snapshot()
            if self.load_seconds - self.samples[-1]["t"] > 2:
                await self.sample(self.load_seconds, "load")
            load_done.set()
            await sampler
            if self.server_died:
                return
            await self.finish(rv, src, time.monotonic())
            await self.sample(time.monotonic() - t0, "final")

    def snapshot(self) -> None:
        """With ``--tracemalloc``: the server writes a snapshot of its heap (vault/memdiag.py)."""
        if self.args.tracemalloc and self.srv.proc.poll() is None:
            self.srv.proc.send_signal(signal.SIGUSR2)

    async def window_snapshot(self) -> None:
        """The first snapshot at the start of the window RSS is judged over."""
        minutes = self.args.minutes * 60
        await asyncio.sleep(minutes - min(FLAT_WINDOW, minutes * 2 / 3))
        self.snapshot()

    async def guard(self, coro) -> None:
        """A client that crashes is a bug of this script: shown at once, counted as an error."""
        try:
            await coro
        except Exception as e:
            traceback.print_exc()
            self.stats.record("client_crash", 0, False, type(e).__name__, repr(e))

    async def finish(self, rv: VaultModel, src: Path, last_write: float) -> None:
        f = self.final
        # 1. Replication catches up with everything that is due.
        t = time.monotonic()
        drained = False
        while time.monotonic() - t < 300:
            r = await self.call("admin_replication", "GET", "/v1/admin/replication", record=False)
            if r is not None and r.status == 200:
                tg = r.json()["targets"][0]
                f["replication_status"] = tg
                if tg["pending_entries"] - tg["delayed_entries"] == 0:
                    drained = True
                    break
            await asyncio.sleep(1)
        f["replication_drained"] = drained
        f["replication_drain_seconds"] = round(time.monotonic() - t, 1)
        # 2. A GC pass once the grace of the last write is over: whatever is
        # collectable goes now, and nothing referenced may go with it.
        await asyncio.sleep(max(0.0, last_write + GC_GRACE + 2 - time.monotonic()))
        r = await self.call("admin_gc", "POST", "/v1/admin/gc", js={})
        f["final_gc"] = r.json() if r is not None and r.status == 200 else None
        # 3. A scrub pass over everything stored.
        f["scrub"] = await self.scrub_pass()
        # 4. Every acknowledged object and every chunk it references.
        f["native"] = await self.verify_native()
        # 5. The same on the bucket.
        f["replica"] = await self.verify_replica()
        # 6. restic's own view.
        f["restic"] = await self.verify_restic(rv, src)

    async def scrub_pass(self) -> dict:
        """A whole scrub pass that started after the last write (one already running may not have)."""
        started = time.time()
        deadline = time.monotonic() + 600
        await self.call("admin_scrub", "POST", "/v1/admin/scrub", expect=(202,))
        while time.monotonic() < deadline:
            await asyncio.sleep(1)
            r = await self.call("admin_scrub", "GET", "/v1/admin/scrub", record=False)
            if r is None or r.status != 200:
                continue
            doc = r.json()
            if doc["state"] != "idle":
                continue
            last = doc.get("last_pass") or {}
            begun = last.get("started")
            if begun and datetime.fromisoformat(begun.replace("Z", "+00:00")).timestamp() >= started - 1:
                return {"chunks": last.get("chunks"), "bytes": last.get("bytes"), "corrupt": last.get("corrupt"),
                        "healed": last.get("healed"), "damaged": last.get("damaged"),
                        "damaged_list": doc.get("damaged", [])[:10], "seconds": last.get("seconds")}
            await self.call("admin_scrub", "POST", "/v1/admin/scrub", expect=(202,))
        return {"error": "no scrub pass finished within 600 s"}

    async def list_objects(self, v: VaultModel) -> dict[str, int] | None:
        out, after = {}, ""
        while True:
            q = f"?limit=1000&start_after={quote(after, safe='')}"
            r = await self.call("list_objects", "GET", f"{self.vpath(v)}/objects{q}", secret=v.full[1])
            if r is None or r.status != 200:
                return None
            doc = r.json()
            out.update({o["key"]: o["size"] for o in doc["objects"]})
            if not doc.get("next"):
                return out
            after = doc["next"]

    async def verify_native(self) -> dict:
        res = {"vaults": 0, "objects": 0, "chunks": 0, "bytes": 0, "lost_objects": 0, "lost_chunks": 0,
               "bad_manifests": 0, "unexpected_objects": 0, "deleted_vaults_gone": 0}
        sem = asyncio.Semaphore(4)
        for v in list(self.vaults.values()):
            if v.name == "restic":
                continue
            res["vaults"] += 1
            listed = await self.list_objects(v)
            if listed is None:
                res["list_failed"] = res.get("list_failed", 0) + 1
                continue
            for key in set(listed) - set(v.objects) - v.uncertain:
                res["unexpected_objects"] += 1
                self.stats.lost("object listed that was deleted or never acknowledged", vault=v.name, key=key)
            for key in set(v.objects) - set(listed):
                res["lost_objects"] += 1
                self.stats.lost("acknowledged object not listed", vault=v.name, key=key)

            async def obj(key: str) -> None:
                async with sem:
                    path = f"{self.vpath(v)}/objects/{quote(key, safe='/')}"
                    r = await self.call("verify_object", "GET", path, secret=v.full[1], expect=(200, 404))
                if r is None:
                    return
                res["objects"] += 1
                if r.status != 200 or tuple(r.json()["chunks"]) != v.objects[key]:
                    res["bad_manifests"] += 1
                    self.stats.lost("object manifest differs or is gone", vault=v.name, key=key, status=r.status)

            async def chunk(cid: str) -> None:
                seed, size = v.chunks[cid]
                async with sem:
                    r = await self.call("verify_chunk", "GET", f"{self.vpath(v)}/chunks/{cid}", secret=v.full[1],
                                        expect=(200, 404))
                if r is None:
                    return
                ok = r.status == 200 and sha(r.body) == cid and r.body == chunk_bytes(seed, size)
                if ok:
                    res["chunks"] += 1
                    res["bytes"] += size
                else:
                    res["lost_chunks"] += 1
                    self.stats.lost("referenced chunk missing or wrong at the end", vault=v.name, chunk=cid,
                                    status=r.status)

            await asyncio.gather(*(obj(k) for k in v.objects))
            await asyncio.gather(*(chunk(c) for c in v.refs))
        for name in self.dead_incarnations:
            if name in self.vaults:
                continue
            r = await self.call("deleted_vault_gone", "GET", f"/v1/vaults/{quote(name, safe='')}", expect=(404,))
            res["deleted_vaults_gone"] += r is not None and r.status == 404
        r = await self.call("list_vaults", "GET", "/v1/vaults")
        if r is not None and r.status == 200:
            names = sorted(x["name"] for x in r.json()["vaults"])
            if names != sorted(self.vaults):
                res["vault_list_mismatch"] = {"server": names, "expected": sorted(self.vaults)}
                self.stats.lost("vault list differs", server=names, expected=sorted(self.vaults))
        return res

    async def verify_replica(self) -> dict:
        """Every live object's manifest and every chunk it references, on the bucket."""
        res = {"chunks": 0, "manifests": 0, "missing_chunks": 0, "missing_manifests": 0, "bad_manifests": 0,
               "extra_manifests": 0}
        store = self.bucket.store
        for v in list(self.vaults.values()):
            if v.name == "restic":
                continue
            base = f"{REPLICA_PREFIX}/vaults/{v.name}"
            listed = await asyncio.to_thread(lambda: obstore.list(store, f"{base}/chunks/").collect())
            sizes = {m["path"].rsplit("/", 1)[1]: m["size"] for m in listed}
            for cid in v.refs:
                if sizes.get(cid) == v.chunks[cid][1]:
                    res["chunks"] += 1
                else:
                    res["missing_chunks"] += 1
                    self.stats.lost("referenced chunk missing on the replica", vault=v.name, chunk=cid,
                                    size=sizes.get(cid))
            listed = await asyncio.to_thread(lambda: obstore.list(store, f"{base}/objects/").collect())
            names = {m["path"].rsplit("/", 1)[1] for m in listed}
            want = {sha(k.encode()) + ".json.zst": k for k in v.objects}
            res["extra_manifests"] += len(names - set(want))  # deletes still waiting out their delay
            for name, key in want.items():
                if name not in names:
                    res["missing_manifests"] += 1
                    self.stats.lost("object manifest missing on the replica", vault=v.name, key=key)
                    continue
                raw = await obstore.get_async(store, f"{base}/objects/{name}")
                doc = json.loads(zstandard.ZstdDecompressor().decompress(bytes(await raw.bytes_async())))
                if doc.get("key") != key or tuple(doc.get("chunks", ())) != v.objects[key]:
                    res["bad_manifests"] += 1
                    self.stats.lost("object manifest differs on the replica", vault=v.name, key=key)
                else:
                    res["manifests"] += 1
        return res

    async def verify_restic(self, rv: VaultModel, src: Path) -> dict:
        res = {"backups": self.restic_log["restic_backup"], "forget_prune": self.restic_log["restic_forget_prune"],
               "checks": self.restic_log["restic_check"]}
        if not res["backups"]:
            res["check_read_data"] = False
            return res
        res["check_read_data"] = await self.restic(rv, "restic_check_read_data", "check", "--read-data")
        out = self.tmp / "restic-restore"
        ok = await self.restic(rv, "restic_restore", "restore", "latest", "--target", str(out))
        res["restore_matches"] = ok and same_tree(src, out / src.relative_to("/"))
        if not res["check_read_data"]:
            self.stats.lost("restic check --read-data failed")
        if not res["restore_matches"]:
            self.stats.lost("restic restore of the last snapshot differs from the source tree")
        return res


def same_tree(a: Path, b: Path) -> bool:
    cmp = filecmp.dircmp(a, b)
    if cmp.left_only or cmp.right_only or cmp.funny_files:
        return False
    if any(not filecmp.cmp(a / n, b / n, shallow=False) for n in cmp.common_files):
        return False
    return all(same_tree(a / d, b / d) for d in cmp.common_dirs)


# -- setup, summary --------------------------------------------------------------------


def config_toml(bucket) -> str:
    return f"""
stream_threshold_bytes = {STREAM_THRESHOLD}

[gc]
grace_seconds = {GC_GRACE}
interval_seconds = {GC_INTERVAL}

[scrub]
interval_seconds = {SCRUB_INTERVAL}
rate_bytes_per_second = {SCRUB_RATE}

[[replication.targets]]
name = "offsite"
kind = "s3"
url = "s3://{bucket.name}/{REPLICA_PREFIX}"
endpoint = "{bucket.endpoint}"
region = "{bucket.region}"
access_key_id = "{bucket.access_key}"
secret_access_key = "{bucket.secret_key}"
delete_delay_seconds = {DELETE_DELAY}
concurrency = 4
checkpoint_interval_seconds = 120
"""


def run_fsck(srv: Server) -> dict:
    env = srv.env()
    r = subprocess.run([OBJVAULT, "fsck"], env=env, cwd=srv.root, capture_output=True, text=True, timeout=1800)
    try:
        report = json.loads(r.stdout)
    except ValueError:
        report = {"stdout": r.stdout[-2000:]}
    return {"exit": r.returncode, "report": report, "stderr": r.stderr[-2000:]}


def server_log_summary(path: Path) -> dict:
    levels: Counter = Counter()
    messages: Counter = Counter()
    other = 0
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError:
        return {}
    for line in lines:
        try:
            doc = json.loads(line)
        except ValueError:
            other += 1
            continue
        lvl = doc.get("level", "?")
        levels[lvl] += 1
        if lvl in ("warning", "error", "critical"):
            messages[f"{lvl}: {doc.get('logger', '')}: {doc.get('msg', '')}"[:200]] += 1
    return {"levels": dict(levels), "non_json_lines": other, "top": messages.most_common(15)}


def flat(values: list[float]) -> dict:
    """Whether ``values`` (equally spaced samples) grow: ``trend`` compares the
    medians of the window's first and last quarters, ``slope`` is the
    least-squares line's rise over the whole window, both relative to where
    the window starts; flat = both within FLAT_TOLERANCE. A leak moves both;
    the swing of single samples (bodies in flight between memory trims, a
    burst of connections) moves neither, so it is reported (min, max,
    ``growth`` = max over min) but does not decide."""
    lo, hi = min(values), max(values)
    n = len(values)
    q = max(1, n // 4)
    first, last = sorted(values[:q])[(q - 1) // 2], sorted(values[-q:])[(q - 1) // 2]
    mx, my = (n - 1) / 2, sum(values) / n
    den = sum((i - mx) ** 2 for i in range(n))
    rise = sum((i - mx) * (v - my) for i, v in enumerate(values)) / den * (n - 1) if den else 0.0
    base = my - rise / 2  # the line's value at the window's start
    trend = (last - first) / first if first else 0.0
    slope = rise / base if base else 0.0
    return {"min": lo, "max": hi, "growth": round((hi - lo) / lo, 4) if lo else None,
            "trend": round(trend, 4), "slope": round(slope, 4),
            "flat": abs(trend) <= FLAT_TOLERANCE and slope <= FLAT_TOLERANCE}


def summarize(soak: Soak, stop: dict, fsck: dict, log: dict) -> tuple[dict, list[str]]:
    window = min(FLAT_WINDOW, soak.load_seconds * 2 / 3)
    start = soak.load_seconds - window
    idx = [i for i, s in enumerate(soak.samples) if s.get("phase") == "load" and "rss_mib" in s and s["t"] >= start]
    win = [soak.samples[i] for i in idx]
    summary: dict = {"load_seconds": round(soak.load_seconds, 1), "window_seconds": round(window, 1),
                     "window_samples": len(win)}
    failures: list[str] = []
    if len(win) >= 2:
        summary["rss_mib"] = flat([s["rss_mib"] for s in win])
        summary["rss_anon_mib"] = flat([s["anon_mib"] for s in win])
        if all("rss_less_index_mib" in s for s in win):
            summary["index_mem_mib"] = flat([s["index_mem_mib"] for s in win])
            summary["rss_less_index_mib"] = flat([s["rss_less_index_mib"] for s in win])
        summary["fds"] = flat([s["fds"] for s in win])
        summary["fds"]["peak_between_samples"] = max(s.get("fds_peak", s["fds"]) for s in win)
        summary["fds"]["limit"] = soak.fd_limit
        summary["threads"] = {"min": min(s["threads"] for s in win), "max": max(s["threads"] for s in win)}
        cpu = [s["cpu_pct"] for s in win if s.get("cpu_pct") is not None]
        summary["server_cpu_pct_mean"] = round(sum(cpu) / len(cpu), 1) if cpu else None
        spans = sum(s["span"] for s in win if s.get("span"))
        summary["ops_per_second_mean"] = round(sum(s["ops"] for s in win if s.get("span")) / spans, 1) if spans \
            else None
        for k in ("rss_mib", "fds"):
            if not summary[k]["flat"]:
                x = summary[k]
                failures.append(f"{k} not flat over the window (the median of its last quarter "
                                f"{x['trend'] * 100:+.1f}% from its first; least-squares rise {x['slope'] * 100:+.1f}%)")
    else:
        failures.append("too few samples in the window to judge RSS and fds")
    # Client-side latency over the window: the intervals that ended inside it.
    lat: dict[str, list[float]] = defaultdict(list)
    for i in idx:
        for k, v in soak.stats.intervals[i].items():
            lat[k].extend(v)
    summary["client_latency_ms"] = {k: {"n": len(v), "p50": round(pct(v, .5) * 1000, 1),
                                        "p99": round(pct(v, .99) * 1000, 1), "max": round(max(v) * 1000, 1)}
                                    for k, v in sorted(lat.items())}
    # Server-side: the histogram's growth over the window.
    if idx and len(soak.scrapes) > idx[-1]:
        first = soak.scrapes[idx[0] - 1] if idx[0] > 0 else None
        delta = hist_delta(soak.scrapes[idx[-1]], first)
        summary["server_p99_ms"] = {}
        for (route, method), b in sorted(delta.items()):
            n, le = hist_p99(b)
            if n:
                summary["server_p99_ms"][f"{method} {route}"] = {"n": n, "p99_le": None if le == math.inf
                                                                 else round(le * 1000, 1)}
    st = soak.stats
    summary["operations"] = {"total": sum(st.ok.values()) + sum(st.err.values()), "errors": sum(st.err.values()),
                             "by_kind": {k: {"ok": st.ok[k], "errors": st.err[k]}
                                         for k in sorted(set(st.ok) | set(st.err))},
                             "errors_by_kind": dict(st.err_kinds.most_common()), "error_examples": st.examples,
                             "benign_races": dict(st.notes)}
    gc_stats: Counter = Counter()
    for p in soak.gc_passes:
        for k in ("chunks_deleted", "bytes_freed", "segments_compacted", "segments_deleted", "bytes_reclaimed",
                  "dead_vaults_purged", "corrupt_records", "segments_kept"):
            gc_stats[k] += p.get(k, 0) or 0
    jobs = next((s["jobs"] for s in reversed(soak.samples) if "jobs" in s), {})
    statuses = next((x["server_status_total"] for x in reversed(soak.samples) if "server_status_total" in x), {})
    summary["server_statuses"] = statuses
    summary["gc"] = {"admin_passes": len(soak.gc_passes), "admin_pass_totals": dict(gc_stats), "jobs": jobs}
    summary["final"] = soak.final
    summary["losses"] = st.losses
    summary["server_stop"] = stop
    summary["fsck"] = fsck
    summary["server_log"] = log
    native = soak.final.get("native", {})
    if st.losses:
        failures.append(f"{len(st.losses)} losses (see 'losses')")
    if soak.server_died:
        failures.append("the server died during the run")
    if summary["operations"]["errors"]:
        failures.append(f"{summary['operations']['errors']} failed operations")
    if statuses.get("5xx"):
        # restic retries quietly: a 5xx it got may show nowhere else.
        failures.append(f"the server answered {statuses['5xx']:.0f} requests with 5xx (/metrics)")
    if not soak.final.get("replication_drained", False) and not soak.server_died:
        failures.append("replication did not catch up")
    scrub = soak.final.get("scrub", {})
    if scrub.get("error") or scrub.get("damaged") or scrub.get("corrupt"):
        failures.append(f"scrub: {scrub}")
    if native.get("list_failed"):
        failures.append("object listing failed during verification")
    if fsck.get("exit") != 0:
        failures.append(f"fsck exit {fsck.get('exit')}")
    if stop.get("exit") != 0:
        failures.append(f"server exit status {stop.get('exit')} on SIGTERM")
    if jobs and any(j["failures"] for j in jobs.values()):
        failures.append(f"background job failures: { {k: j['failures'] for k, j in jobs.items() if j['failures']} }")
    return summary, failures


def print_summary(summary: dict, failures: list[str]) -> None:
    p = print
    p()
    p(f"== summary: {summary['load_seconds'] / 60:.1f} min of load; window = last "
      f"{summary['window_seconds'] / 60:.1f} min ({summary['window_samples']} samples)")
    for k, unit in (("rss_mib", "MiB"), ("rss_anon_mib", "MiB"), ("index_mem_mib", "MiB"),
                    ("rss_less_index_mib", "MiB"), ("fds", "")):
        if k in summary:
            x = summary[k]
            p(f"{k:<12} min {x['min']} {unit}  max {x['max']} {unit}  (+{x['growth'] * 100:.1f}%)  "
              f"median of the last quarter vs the first {x['trend'] * 100:+.1f}%, least-squares rise "
              f"{x['slope'] * 100:+.1f}%: {'flat' if x['flat'] else 'NOT FLAT'} "
              f"(tolerance {FLAT_TOLERANCE * 100:.0f}%)")
    if "fds" in summary:
        p(f"{'':<12} fds peak between samples {summary['fds']['peak_between_samples']} "
          f"(the server's limit: {summary['fds']['limit']})")
    if "threads" in summary:
        p(f"{'threads':<12} min {summary['threads']['min']}  max {summary['threads']['max']}")
        p(f"{'load':<12} {summary['ops_per_second_mean']} client operations/s, server CPU "
          f"{summary['server_cpu_pct_mean']}% of one core (mean over the window)")
    p("\nclient-side latency per operation (window): n, p50, p99, max in ms")
    for k, v in summary["client_latency_ms"].items():
        p(f"  {k:<26} {v['n']:>7} {v['p50']:>9.1f} {v['p99']:>9.1f} {v['max']:>9.1f}")
    p("\nserver-side p99 per route (/metrics histogram, window; upper bound of the bucket)")
    for k, v in summary.get("server_p99_ms", {}).items():
        p(f"  {k:<50} {v['n']:>7}  p99 <= {v['p99_le'] if v['p99_le'] is not None else '>30000'} ms")
    ops = summary["operations"]
    p(f"\noperations: {ops['total']} ({ops['errors']} errors); the server's answers by class (/metrics): "
      f"{ {k: int(v) for k, v in sorted(summary['server_statuses'].items())} }")
    for k, n in ops["errors_by_kind"].items():
        p(f"  error  {k}: {n}")
    for e in ops["error_examples"][:10]:
        p(f"    t={e['t']} {e['kind']} {e['what']}: {e['detail'][:300]}")
    for k, n in ops["benign_races"].items():
        p(f"  note   {k}: {n}")
    gc = summary["gc"]
    p(f"gc (admin passes: {gc['admin_passes']}): {gc['admin_pass_totals']}")
    p(f"jobs: {gc['jobs']}")
    f = summary["final"]
    if f:
        rs = f.get("replication_status", {})
        p(f"replication: drained={f.get('replication_drained')} in {f.get('replication_drain_seconds')} s; "
          f"sent {rs.get('sent_entries')} entries; last_error {rs.get('last_error')!r}")
        p(f"final gc: {f.get('final_gc')}")
        p(f"scrub: {f.get('scrub')}")
        p(f"verified (server): {f.get('native')}")
        p(f"verified (replica): {f.get('replica')}")
        p(f"restic: {f.get('restic')}")
        n = f.get("native", {})
        p(f"chunks verified: {n.get('chunks', 0)} ({n.get('bytes', 0) / MiB:.1f} MiB) referenced by "
          f"{n.get('objects', 0)} objects in {n.get('vaults', 0)} vaults; lost: "
          f"{n.get('lost_chunks', 0)} chunks, {n.get('lost_objects', 0)} objects")
    for loss in summary["losses"][:20]:
        p(f"  LOST {loss}")
    st = summary["server_stop"]
    p(f"server stop: exit {st.get('exit')} after {st.get('seconds')} s")
    log = summary["server_log"]
    p(f"server log: {log.get('levels')}")
    for msg, n in log.get("top", [])[:10]:
        p(f"  {n:>5} x {msg}")
    fs = summary["fsck"]
    rep = fs.get("report", {})
    p(f"fsck: exit {fs.get('exit')}, ok={rep.get('ok')}, {rep.get('chunk_entries')} chunk entries, "
      f"{rep.get('objects')} objects, bad entries {len(rep.get('bad_entries', []))}, missing references "
      f"{len(rep.get('missing_references', []))}, refcount mismatches {rep.get('refcount_mismatches')}, "
      f"usage mismatches {len(rep.get('usage_mismatches', []))}")
    p()
    if failures:
        p("FAIL:")
        for x in failures:
            p(f"  - {x}")
    else:
        p("PASS: nothing lost, fsck clean, RSS and fds flat, no failed operation")


def tracemalloc_report(snap_dir: Path, top: int = 25) -> dict:
    """What grew between the first and the last snapshot: Python's traced
    bytes against RSS and glibc's heaps, and the tracebacks that grew most."""
    import tracemalloc
    infos = sorted(snap_dir.glob("snap-*.json"), key=lambda p: int(p.stem.split("-")[1]))
    if len(infos) < 2:
        return {"error": f"{len(infos)} snapshot(s) in {snap_dir}"}
    a, b = (json.loads(p.read_text()) for p in (infos[0], infos[-1]))

    def mib(x: int) -> float:
        return round(x / MiB, 2)
    out: dict = {"seconds_apart": round(b["time"] - a["time"], 1),
                 "traced_mib": [mib(a["traced_bytes"]), mib(b["traced_bytes"])],
                 "rss_mib": [mib(a["status"].get("VmRSS", 0)), mib(b["status"].get("VmRSS", 0))],
                 "anon_mib": [mib(a["status"].get("RssAnon", 0)), mib(b["status"].get("RssAnon", 0))],
                 "tracemalloc_overhead_mib": [mib(a["tracemalloc_overhead_bytes"]),
                                              mib(b["tracemalloc_overhead_bytes"])],
                 "malloc_mib": {k: [mib(a["malloc"].get(k, 0)), mib(b["malloc"].get(k, 0))] for k in a["malloc"]}}
    old, new = (tracemalloc.Snapshot.load(str(p.with_suffix(".tracemalloc"))) for p in (infos[0], infos[-1]))
    filters = [tracemalloc.Filter(False, tracemalloc.__file__)]
    old, new = old.filter_traces(filters), new.filter_traces(filters)
    for key in ("lineno", "traceback"):
        diff = new.compare_to(old, key)
        diff.sort(key=lambda d: d.size_diff, reverse=True)
        out[f"grew_by_{key}"] = [{"kib": round(d.size_diff / KiB, 1), "count": d.count_diff,
                                  "total_kib": round(d.size / KiB, 1),
                                  "where": [f"{f.filename}:{f.lineno}" for f in d.traceback][-8:]}
                                 for d in diff[:top]]
    return out


def print_tracemalloc(rep: dict) -> None:
    print("# tracemalloc, first vs last snapshot: " + json.dumps({k: v for k, v in rep.items()
                                                                 if not k.startswith("grew_by")}))
    for d in rep.get("grew_by_lineno", []):
        print(f"#   {d['kib']:>9} KiB {d['count']:>+7} blocks (now {d['total_kib']} KiB)  {d['where'][-1]}")
    for d in rep.get("grew_by_traceback", [])[:10]:
        print(f"#   {d['kib']:>9} KiB {d['count']:>+7} blocks:")
        for w in d["where"]:
            print(f"#       {w}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, default=30.0, help="minutes of load (default 30)")
    ap.add_argument("--interval", type=float, default=10.0, help="seconds between samples (default 10)")
    ap.add_argument("--out", help="write the samples and the summary as JSON to this file")
    ap.add_argument("--dir", default=os.environ.get("BENCH_DIR"), help="parent of the temp dir")
    ap.add_argument("--keep", action="store_true", help="keep the temp dir (it is kept anyway on failure)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--server-env", action="append", default=[], metavar="NAME=VALUE",
                    help="extra environment of the server (repeatable), e.g. MALLOC_ARENA_MAX=2 to tell "
                         "allocator fragmentation from a leak")
    ap.add_argument("--tracemalloc", action="store_true",
                    help="trace the server's Python allocations (OBJVAULT_TRACEMALLOC, slows it down), snapshot "
                         "them at the start of the window and at the end of the load, and show what grew")
    a = ap.parse_args(argv)
    if not RESTIC:
        print("restic is not installed (make system-deps)", file=sys.stderr)
        return 2
    sys.stdout.reconfigure(line_buffering=True)
    tmp = Path(tempfile.mkdtemp(prefix="objvault-soak-", dir=a.dir))
    print(f"# soak: {a.minutes} min, sample every {a.interval} s, dir {tmp}; {os.cpu_count()} CPUs", flush=True)
    s3 = SeaweedS3(tmp / "s3", volume_max=100)
    s3.start(timeout=90)
    srv = None
    failures = ["did not finish"]
    try:
        bucket = s3.bucket(hint="soak")
        srv = Server(tmp / "objvault", config=config_toml(bucket), admin_token=secrets.token_hex(16),
                     env={"OBJVAULT_SEGMENT_BYTES": str(SEGMENT_BYTES),
                          **({"OBJVAULT_TRACEMALLOC": str(tmp / "tracemalloc")} if a.tracemalloc else {}),
                          **dict(kv.split("=", 1) for kv in a.server_env)})
        srv.start()
        print(f"# server pid {srv.proc.pid} at {srv.url}; weed pid {s3.pid}; log {srv.log_path}", flush=True)
        soak = Soak(srv, bucket, a, tmp)
        try:
            asyncio.run(soak.run())
        except KeyboardInterrupt:
            print("# interrupted", flush=True)
        t = time.monotonic()
        try:
            code = srv.stop(signal.SIGTERM, timeout=90)
        except subprocess.TimeoutExpired:
            code = "killed after 90 s"
        stop = {"exit": code, "seconds": round(time.monotonic() - t, 2)}
        fsck = run_fsck(srv)
        log = server_log_summary(srv.log_path)
        summary, failures = summarize(soak, stop, fsck, log)
        print_summary(summary, failures)
        if a.tracemalloc:
            summary["tracemalloc"] = tracemalloc_report(tmp / "tracemalloc")
            print_tracemalloc(summary["tracemalloc"])
        if a.out:
            Path(a.out).write_text(json.dumps({"args": vars(a), "samples": soak.samples, "summary": summary,
                                               "failures": failures}, indent=1, default=str))
            print(f"# wrote {a.out}")
    finally:
        if srv is not None and srv.proc is not None and srv.proc.poll() is None:
            srv.kill()
        s3.stop()
        if failures or a.keep:
            print(f"# kept {tmp}", flush=True)
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
