"""Garbage collection over 1,000,000 chunks, and what it costs ingest.

Run: ``.venv/bin/python bench/bench_gc.py`` (``--chunks N``, ``--seconds S``).

How the index state is built (in-process, through the real code): a
:class:`vault.app.Vault` is opened on a temporary data directory and
``VaultService.put_chunks`` (the batch upload path: records appended to
segment files by the segment writer, group fdatasync, indexed by the
single committer) stores N chunks of 64 bytes in batches of 1000; then
``VaultService.put_object`` stores N/1000 objects, each referencing 950 of
the 1000 chunks of one batch, and ``delete_object`` removes 50 of them
again. So ~90% of the chunks are alive, 5% were never referenced and
4.75% lost their last reference, spread over every segment. The
committer's clock is set two days back while building, so the garbage is
past the default 24 h grace period; a real ``objvault serve`` (default
grace, GC on demand) is then started on that directory. Tiny chunks keep
the disk small; the sweep's cost depends on the number of index entries,
not on chunk sizes.

Printed, ``name: value``:

* the time of a GC pass that deletes the ~10% of garbage (idle server),
  and of a pass that finds nothing to delete (the steady state);
* ingest of 1 MiB chunks by 16 concurrent clients (``wrk`` with
  ``bench/put.lua``) into another vault, on a second copy of the same
  state: alone, while GC passes over the million chunks run back to back
  (the first one deleting the 97,500 chunks of garbage), and alone again;
  the ratio is the during-GC figure over the mean of the two others
  (target: >= 0.8).
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.server import Server  # noqa: E402

BENCH = Path(__file__).resolve().parent
TOKEN = "bench-admin-token"


def out(name: str, value, unit: str = "") -> None:
    print(f"{name}: {value}{(' ' + unit) if unit else ''}", flush=True)


class Chunks:
    """Distinct 1 MiB chunks for wrk: a 16-hex-digit counter, then a random tail."""

    def __init__(self, workdir: Path, tag: str, size: int, count: int) -> None:
        self.base = workdir / f"base-{tag}"
        self.ids_file = workdir / f"ids-{tag}"
        tail = os.urandom(size)
        self.base.write_bytes(tail)
        rest = tail[16:]
        with open(self.ids_file, "w") as f:
            for i in range(count):
                f.write(hashlib.sha256(b"%016x" % i + rest).hexdigest() + "\n")


def wrk(url: str, seconds: float, conns: int, env: dict) -> dict:
    threads = 2
    env = dict(os.environ, THREADS=str(threads), **env)
    t0 = time.perf_counter()
    res = subprocess.run(["wrk", f"-t{threads}", f"-c{conns}", f"-d{int(seconds)}s", "--timeout", "30s",
                          "-s", str(BENCH / "put.lua"), url], env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    text = res.stdout + res.stderr
    lua = re.search(r"LUA responses=(\d+) non2xx=(\d+)", text)
    if not lua:
        raise RuntimeError(f"wrk failed: {text}")
    return {"wall": wall, "responses": int(lua.group(1)), "errors": int(lua.group(2))}


def ingest(srv: Server, chunks: Chunks, token: str, seconds: float) -> tuple[float, int]:
    """MB/s (10^6) of new chunk bytes stored in vault ``ingest`` during one wrk run."""
    c = srv.client(timeout=60)
    before = c.get("/v1/vaults/ingest").json()["usage"]["stored_bytes"]
    r = wrk(srv.url, seconds, 16, {"BASE_FILE": str(chunks.base), "IDS_FILE": str(chunks.ids_file),
                                   "URL_PREFIX": "/v1/vaults/ingest/chunks/", "TOKEN": token})
    stored = c.get("/v1/vaults/ingest").json()["usage"]["stored_bytes"] - before
    return stored / r["wall"] / 1e6, r["errors"]


class Background:
    """Runs ``fn`` over and over in a thread until stopped; keeps the results."""

    def __init__(self, fn) -> None:
        self.fn, self.results = fn, []
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.results.append(self.fn())

    def __enter__(self):
        self._t.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._t.join()


def gc_pass(srv: Server) -> dict:
    r = srv.client(timeout=600).post("/v1/admin/gc", json={})
    if r.status_code != 200:
        raise RuntimeError(f"gc: {r.status_code} {r.text}")
    return r.json()


# -- building the index in-process ---------------------------------------------------


AGE = 2 * 86400  # the garbage is this old: past the default grace period


async def build(data_dir: Path, nchunks: int, per_object: int = 950, batch: int = 1000,
                deleted_objects: int = 50) -> float:
    import types

    import vault.meta.engine
    from vault.app import Vault
    from vault.config import load_config
    from vault.policy import Principal
    from vault.services import VaultSettings

    cfg = load_config(env={"OBJVAULT_DATA_DIRS": str(data_dir), "OBJVAULT_ADMIN_TOKEN": TOKEN})
    loop = asyncio.get_running_loop()
    # Every committer op stamps chunks with the committer's clock (created_at,
    # zero_since): set it back so the state is what two days of use leave.
    real = vault.meta.engine.time
    vault.meta.engine.time = types.SimpleNamespace(time=lambda: real.time() - AGE, perf_counter=real.perf_counter)
    vlt = await loop.run_in_executor(None, Vault, cfg)
    t0 = time.perf_counter()
    try:
        svc = vlt.services
        rec = await svc.vaults.create("gcdata", VaultSettings(), Principal(admin=True))
        tail = os.urandom(56)
        sem = asyncio.Semaphore(8)

        async def one(b: int) -> None:
            async with sem:
                bodies = [(b * batch + i).to_bytes(8, "big") + tail for i in range(batch)]
                ids = [hashlib.sha256(x).digest() for x in bodies]
                await svc.chunks.put_many(rec, [(d, memoryview(x)) for d, x in zip(ids, bodies)])
                await svc.objects.put(Principal(admin=True), rec, f"snap/{b:06d}", ids[:per_object], b"", False)

        nb = nchunks // batch
        for lo in range(0, nb, 64):
            await asyncio.gather(*(one(b) for b in range(lo, min(nb, lo + 64))))
            print(f"\r  built {min(nb, lo + 64) * batch} chunks", end="", file=sys.stderr, flush=True)
        print(file=sys.stderr)
        for b in range(0, nb, max(1, nb // deleted_objects)):
            await svc.objects.delete(rec, f"snap/{b:06d}")
        return time.perf_counter() - t0
    finally:
        await loop.run_in_executor(None, vlt.close)
        vault.meta.engine.time = real


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--chunks", type=int, default=1_000_000)
    ap.add_argument("--seconds", type=float, default=15, help="length of each ingest phase")
    ap.add_argument("--dir", default=os.environ.get("BENCH_DIR", str(ROOT / ".bench")))
    args = ap.parse_args()
    if not shutil.which("wrk"):
        raise SystemExit("wrk is needed: apt-get install wrk")
    Path(args.dir).mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="gc-", dir=args.dir))
    try:
        run(work, args.chunks, args.seconds)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def run(work: Path, nchunks: int, seconds: float) -> None:
    out("machine", f"{os.cpu_count()} cores; client and server on the same machine")
    import uvloop
    built = uvloop.run(build(work / "load" / "data", nchunks))
    out("index_build_seconds", f"{built:.0f}", f"({nchunks} chunks of 64 B via put_chunks, {nchunks // 1000} "
                                              "objects of 950 chunks via put_object, 50 of them deleted)")
    # The same state twice: one copy for the idle passes, one for the passes under load.
    shutil.copytree(work / "load" / "data", work / "idle" / "data")
    env = {"OBJVAULT_GC_INTERVAL_SECONDS": "0"}

    srv = Server(work / "idle", admin_token=TOKEN, env=env).start()
    try:
        for name in ("gc_pass_deleting", "gc_pass_steady"):
            st = gc_pass(srv)
            out(name + "_seconds", f"{st['duration_seconds']:.2f}",
                f"(idle; scanned {st['chunks_scanned']} in {st['sweep_seconds']:.2f} s, deleted "
                f"{st['chunks_deleted']}; compaction {st['compact_seconds']:.2f} s: {st['segments_compacted']} "
                f"segments, {st['records_copied']} records copied)")
    finally:
        srv.stop()
        shutil.rmtree(work / "idle", ignore_errors=True)

    # Enough distinct 1 MiB chunks that no phase runs out (then ids repeat as dedup hits).
    count = int(1100 * seconds)
    phases = {name: Chunks(work, name, 1 << 20, count) for name in ("before", "during", "after")}
    srv = Server(work / "load", admin_token=TOKEN, env=env).start()
    try:
        srv.create_vault("ingest")
        token = srv.create_key("ingest", "append")
        before, e1 = ingest(srv, phases["before"], token, seconds)
        with Background(lambda: gc_pass(srv)) as bg:
            time.sleep(0.2)
            during, e2 = ingest(srv, phases["during"], token, seconds)
        after, e3 = ingest(srv, phases["after"], token, seconds)
        passes = bg.results
        out("ingest_1mib_16conc_mb_s_without_gc", f"{before:.0f} / {after:.0f}", "(before / after)")
        out("ingest_1mib_16conc_mb_s_during_gc", f"{during:.0f}")
        out("ingest_ratio_during_gc", f"{during / ((before + after) / 2):.2f}", "(target >= 0.8)")
        out("gc_passes_during_ingest", len(passes),
            f"(back to back; deleted {sum(p['chunks_deleted'] for p in passes)}; pass seconds "
            f"{', '.join('%.1f' % p['duration_seconds'] for p in passes)})")
        out("ingest_errors", e1 + e2 + e3)
    finally:
        srv.stop()


if __name__ == "__main__":
    main()
