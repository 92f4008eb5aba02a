"""Compaction: how fast disk space comes back, and what it costs ingest.

Run: ``.venv/bin/python bench/bench_compaction.py`` (``--gib N``, ``--seconds S``).

How the state is built (in-process, through the real code): a
:class:`vault.app.Vault` with 256 MiB segments stores N GiB of distinct
1 MiB chunks with ``VaultService.put_chunks`` (segment writer, group
fdatasync, single committer), objects reference every third chunk, and one
in-process GC pass (grace 0, compaction off) deletes the other two thirds.
So every sealed segment is one third live, two thirds garbage. Then a real
``objvault serve`` is started on that directory with the default GC
settings (threshold 0.5, copy rate 200 MiB/s, 256 MiB segments).

Printed, ``name: value``:

* ingest of 1 MiB chunks by 16 concurrent clients (``wrk`` with
  ``bench/put.lua``) into another vault: alone, while one GC pass compacts
  every segment, and alone again; the during figure is measured over the
  compaction itself (from the vault's stored bytes at its start and end),
  the ratio is over the mean of the two others (target: >= 0.7);
* what the pass did: segments compacted, bytes copied, bytes reclaimed, and
  the reclaim rate (net bytes given back to the filesystem per second),
  also for a pass over a quarter of the data on an otherwise idle server;
* the segment files' total size before and after.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.bench_gc import BENCH, TOKEN, Chunks, gc_pass, ingest, out  # noqa: E402
from tests.server import Server  # noqa: E402

SEGMENT = 256 << 20


async def build(data_dir: Path, nchunks: int, batch: int = 8) -> dict:
    from vault.app import Vault
    from vault.config import load_config
    from vault.lifecycle import GarbageCollector
    from vault.policy import Principal
    from vault.services import VaultSettings

    cfg = load_config(env={"OBJVAULT_DATA_DIRS": str(data_dir), "OBJVAULT_ADMIN_TOKEN": TOKEN,
                           "OBJVAULT_SEGMENT_BYTES": str(SEGMENT), "OBJVAULT_GC_GRACE_SECONDS": "0",
                           "OBJVAULT_GC_COMPACT_THRESHOLD": "0"})
    loop = asyncio.get_running_loop()
    vlt = await loop.run_in_executor(None, Vault, cfg)
    try:
        svc = vlt.services
        rec = await svc.vaults.create("cold", VaultSettings(), Principal(admin=True))
        rest = os.urandom(1 << 20)[16:]
        sem = asyncio.Semaphore(4)

        async def one(b: int) -> None:
            async with sem:
                bodies = [b"%016x" % (b * batch + i) + rest for i in range(batch)]
                ids = await loop.run_in_executor(None, lambda: [hashlib.sha256(x).digest() for x in bodies])
                await svc.chunks.put_many(rec, [(d, memoryview(x)) for d, x in zip(ids, bodies)])
                keep = [d for i, d in enumerate(ids) if (b * batch + i) % 3 == 0]
                await svc.objects.put(Principal(admin=True), rec, f"keep/{b:06d}", keep, b"", False)

        nb = nchunks // batch
        for lo in range(0, nb, 32):
            await asyncio.gather(*(one(b) for b in range(lo, min(nb, lo + 32))))
            print(f"\r  built {min(nb, lo + 32) * batch} MiB", end="", file=sys.stderr, flush=True)
        print(file=sys.stderr)
        return await GarbageCollector(vlt.index, vlt.store, cfg.gc).run_once()
    finally:
        await loop.run_in_executor(None, vlt.close)


def seg_bytes(data_dir: Path) -> int:
    return sum(p.stat().st_size for p in (data_dir / "segments").glob("*.seg"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--gib", type=float, default=2, help="GiB of 1 MiB chunks to build (a third stays live)")
    ap.add_argument("--seconds", type=float, default=12, help="length of each ingest baseline")
    ap.add_argument("--rate-mib", type=float, default=None,
                    help="gc.compact_rate_bytes_per_second in MiB/s (default: the configured default)")
    ap.add_argument("--dir", default=os.environ.get("BENCH_DIR", str(ROOT / ".bench")))
    args = ap.parse_args()
    if not shutil.which("wrk"):
        raise SystemExit("wrk is needed: apt-get install wrk")
    Path(args.dir).mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="compaction-", dir=args.dir))
    try:
        run(work, int(args.gib * 1024), args.seconds, args.rate_mib)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def run(work: Path, nchunks: int, seconds: float, rate_mib: float | None = None) -> None:
    out("machine", f"{os.cpu_count()} cores; client and server on the same machine")
    import uvloop
    env = {"OBJVAULT_GC_INTERVAL_SECONDS": "0", "OBJVAULT_SEGMENT_BYTES": str(SEGMENT)}
    if rate_mib:
        env["OBJVAULT_GC_COMPACT_RATE_BYTES_PER_SECOND"] = str(int(rate_mib * 2**20))
    from vault.config import load_config
    rate = load_config(env=env).gc.compact_rate_bytes_per_second

    # Idle: a quarter of the data, compacted with nothing else running.
    uvloop.run(build(work / "idle" / "data", nchunks // 4))
    srv = Server(work / "idle", admin_token=TOKEN, env=env).start()
    try:
        b0 = seg_bytes(work / "idle" / "data")
        st = gc_pass(srv)
        b1 = seg_bytes(work / "idle" / "data")
    finally:
        srv.stop()
        shutil.rmtree(work / "idle", ignore_errors=True)
    out("idle_compaction_reclaimed_mb_s", f"{st['bytes_reclaimed'] / st['compact_seconds'] / 1e6:.0f}",
        f"({st['segments_compacted']} segments, copied {st['bytes_copied'] / 2**20:.0f} MiB, reclaimed "
        f"{st['bytes_reclaimed'] / 2**20:.0f} MiB in {st['compact_seconds']:.1f} s; segment files "
        f"{b0 / 2**20:.0f} -> {b1 / 2**20:.0f} MiB)")

    data = work / "srv" / "data"
    st = uvloop.run(build(data, nchunks))
    out("built", f"{nchunks} chunks of 1 MiB in {SEGMENT >> 20} MiB segments, {st['chunks_deleted']} deleted "
                 f"(objects keep every third)")
    count = int(1100 * seconds) + 40 * 1100
    phases = {name: Chunks(work, name, 1 << 20, count if name == "during" else int(1100 * seconds))
              for name in ("before", "during", "after")}
    srv = Server(work / "srv", admin_token=TOKEN, env=env).start()
    try:
        srv.create_vault("ingest")
        token = srv.create_key("ingest", "append")
        cold_before = seg_bytes(data)
        before, e1 = ingest(srv, phases["before"], token, seconds)

        # During: wrk runs while one GC pass compacts; the rate is taken over the pass.
        c = srv.client(timeout=60)
        stored = lambda: c.get("/v1/vaults/ingest").json()["usage"]["stored_bytes"]  # noqa: E731
        env = dict(os.environ, THREADS="2", BASE_FILE=str(phases["during"].base),
                   IDS_FILE=str(phases["during"].ids_file), URL_PREFIX="/v1/vaults/ingest/chunks/", TOKEN=token)
        w = subprocess.Popen(["wrk", "-t2", "-c16", "-d300s", "--timeout", "30s", "-s", str(BENCH / "put.lua"),
                              srv.url], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        try:
            time.sleep(2)
            s0, t0 = stored(), time.perf_counter()
            st = gc_pass(srv)
            s1, t1 = stored(), time.perf_counter()
        finally:
            w.send_signal(signal.SIGINT)
            text = w.communicate(timeout=60)[0]
        during = (s1 - s0) / (t1 - t0) / 1e6
        after, e3 = ingest(srv, phases["after"], token, seconds)
        cold_after = seg_bytes(data)
        out("ingest_1mib_16conc_mb_s_without_compaction", f"{before:.0f} / {after:.0f}", "(before / after)")
        out("ingest_1mib_16conc_mb_s_during_compaction", f"{during:.0f}", f"(over {t1 - t0:.1f} s)")
        out("ingest_ratio_during_compaction", f"{during / ((before + after) / 2):.2f}", "(target >= 0.7)")
        out("compaction_segments", st["segments_compacted"], f"(+{st['segments_deleted']} empty, "
                                                             f"{st['segments_kept']} kept)")
        out("compaction_copied_mib", f"{st['bytes_copied'] / 2**20:.0f}",
            f"({st['records_copied']} records, rate limit {rate / 2**20:.0f} MiB/s)")
        out("compaction_reclaimed_mib", f"{st['bytes_reclaimed'] / 2**20:.0f}")
        out("compaction_seconds", f"{st['compact_seconds']:.1f}")
        out("compaction_reclaimed_mb_s", f"{st['bytes_reclaimed'] / st['compact_seconds'] / 1e6:.0f}",
            "(under ingest; net bytes given back per second of compaction)")
        out("segment_files_mib_before_after", f"{cold_before / 2**20:.0f} -> {cold_after / 2**20:.0f}",
            "(after includes what the ingest phases added)")
        out("ingest_errors", e1 + e3 + (0 if "non2xx=0" in text else text.count("non2xx")))
    finally:
        srv.stop()


if __name__ == "__main__":
    main()
