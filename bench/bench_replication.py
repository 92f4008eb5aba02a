"""Replication to SeaweedFS, restore from it, and scrub: the figures.

    python bench/bench_replication.py [--mb 1024] [--rounds 2] [--outage 60] [--outage-mb-per-s 8] [--dir DIR]

Starts its own SeaweedFS and objvault servers (subprocesses on loopback) and
prints ``name: value`` lines (``mb`` = MiB):

* ``obstore_put_1mib_mb_per_s`` — plain obstore uploads of ``--mb`` distinct
  1 MiB objects (16 in flight) into the bucket: the yardstick;
* ``replication_1mib_mb_per_s`` and ``replication_ratio`` — a vault holding
  the same amount of 1 MiB chunks gets the bucket as a new target (restart
  with the target configured, concurrency 16): time from the server being
  ready until the outbox is empty (seeding included), as MiB/s and as a
  ratio to the yardstick (goal: >= 0.8). Rounds alternate the two (each
  round a fresh prefix); the best of each is reported, since on a shared
  2-core machine SeaweedFS's own speed varies from run to run;
* ``outage_*`` — the bucket's server is frozen (SIGSTOP) for ``--outage``
  seconds while a client keeps uploading at ``--outage-mb-per-s``; then
  thawed: how long until the backlog is on the bucket;
* ``restore_mb_per_s`` — an empty server rebuilds the vault from the bucket
  (every chunk fetched, SHA-256 verified, stored);
* ``scrub_mb_per_s`` — one scrub pass at full speed (no rate limit) over the
  restored vault (its segments are read from disk: writes are O_DIRECT).
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import aiohttp  # noqa: E402

from bench.common import ChunkSource, upload_all  # noqa: E402
from bench.s3baseline import obstore_put_throughput, weed_version  # noqa: E402
from tests.s3server import SeaweedS3  # noqa: E402
from tests.server import Server  # noqa: E402

MiB = 1 << 20


def target_toml(bucket, concurrency: int = 16, prefix: str = "replica", scrub_rate: int | None = None,
                **extra) -> str:
    lines = ["[[replication.targets]]", 'name = "bench"', 'kind = "s3"', f'url = "s3://{bucket.name}/{prefix}"',
             f'endpoint = "{bucket.endpoint}"', f'region = "{bucket.region}"',
             f'access_key_id = "{bucket.access_key}"', f'secret_access_key = "{bucket.secret_key}"',
             f"concurrency = {concurrency}", "checkpoint_interval_seconds = 0"]
    lines += [f"{k} = {v}" for k, v in extra.items()]
    scrub = "\n[scrub]\ninterval_seconds = 0\n"
    if scrub_rate is not None:
        scrub += f"rate_bytes_per_second = {scrub_rate}\n"
    return "\n".join(lines) + scrub


def status(srv: Server) -> dict:
    return srv.admin.get("/v1/admin/replication").json()["targets"][0]


def wait_drained(srv: Server, timeout: float = 1800) -> float:
    t0 = time.perf_counter()
    while True:
        st = status(srv)
        if st["pending_entries"] - st["delayed_entries"] == 0 and st["last_success"]:
            return time.perf_counter() - t0
        if time.perf_counter() - t0 > timeout:
            raise RuntimeError(f"not drained after {timeout} s: {st}")
        time.sleep(0.02)


async def upload(srv: Server, vault: str, src: ChunkSource, indices: range, concurrency: int = 16) -> None:
    async with aiohttp.ClientSession() as s:
        await upload_all(s, f"{srv.url}/v1/vaults/{vault}", srv.admin_token, src, concurrency, indices)


async def upload_paced(srv: Server, vault: str, src: ChunkSource, start: int, mb_per_s: float,
                       stop: threading.Event) -> int:
    """Upload 1 MiB chunks from ``start`` at ``mb_per_s`` until ``stop``; returns the next index."""
    i = start
    t0 = time.perf_counter()
    async with aiohttp.ClientSession() as s:
        while not stop.is_set() and i < src.count:
            await upload_all(s, f"{srv.url}/v1/vaults/{vault}", srv.admin_token, src, 1, range(i, i + 1))
            i += 1
            ahead = (i - start) / mb_per_s - (time.perf_counter() - t0)
            if ahead > 0:
                await asyncio.sleep(ahead)
    return i


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mb", type=int, default=1024, help="MiB of 1 MiB chunks (default 1024)")
    ap.add_argument("--outage", type=float, default=60.0, help="seconds the bucket is frozen (default 60)")
    ap.add_argument("--outage-mb-per-s", type=float, default=8.0, help="upload rate during the outage")
    ap.add_argument("--rounds", type=int, default=2, help="rounds of yardstick and replication (default 2)")
    ap.add_argument("--dir", default=os.environ.get("BENCH_DIR"), help="parent of the temp dirs")
    a = ap.parse_args(argv)
    n = a.mb
    outage_chunks = int(a.outage * a.outage_mb_per_s * 1.5) + 16
    src = ChunkSource(MiB, n + outage_chunks)

    print(f"# weed {weed_version()}; {n} x 1 MiB chunks; {os.cpu_count()} CPUs", flush=True)
    with tempfile.TemporaryDirectory(prefix="bench-repl-", dir=a.dir) as tmp:
        tmp = Path(tmp)
        with SeaweedS3(tmp / "s3", volume_max=400) as s3:
            bucket = s3.bucket(hint="bench-replication")

            primary = Server(tmp / "primary", env={"OBJVAULT_LOG_LEVEL": "warning"}).start()
            primary.create_vault("bench")
            asyncio.run(upload(primary, "bench", src, range(n)))
            # objects hold the chunks (64 per object): what a restore brings back
            for k in range(0, n, 64):
                r = primary.admin.put(f"/v1/vaults/bench/objects/part-{k // 64:05d}",
                                      json={"chunks": src.ids[k:k + 64]})
                assert r.status_code == 201, r.text
            primary.stop()
            primary.config_path = primary.root / "objvault.toml"

            # Rounds alternate the yardstick (plain obstore PUTs of the same
            # amount of 1 MiB objects into the bucket) and replication (the
            # vault gets a new target: restart with it configured, time from
            # ready to an empty outbox, seeding included); best of each.
            base_best = repl_best = 0.0
            for k in range(a.rounds):
                base = asyncio.run(obstore_put_throughput(bucket.store, MiB, n * MiB, 16, prefix=f"baseline-{k}"))
                base_best = max(base_best, base["mb_per_s"])
                print(f"# round {k}: obstore {base['mb_per_s']:.1f} MiB/s", flush=True)
                primary.config_path.write_text(target_toml(bucket, prefix=f"replica-{k}"))
                primary.start()
                seconds = wait_drained(primary)
                primary.stop()
                repl_best = max(repl_best, n / seconds)
                print(f"# round {k}: replication {n / seconds:.1f} MiB/s ({seconds:.2f} s)", flush=True)
            print(f"obstore_put_1mib_mb_per_s: {base_best:.1f}", flush=True)
            print(f"replication_1mib_mb_per_s: {repl_best:.1f}", flush=True)
            print(f"replication_ratio: {repl_best / base_best:.2f}", flush=True)
            primary.start()
            last_prefix = f"replica-{a.rounds - 1}"

            # -- catch-up after an outage -------------------------------------------------
            stop = threading.Event()
            result: dict = {}

            def pace() -> None:
                result["next"] = asyncio.run(upload_paced(primary, "bench", src, n, a.outage_mb_per_s, stop))

            s3.freeze()
            t_freeze = time.perf_counter()
            th = threading.Thread(target=pace)
            th.start()
            time.sleep(a.outage)
            stop.set()
            th.join()
            backlog = status(primary)
            s3.thaw()
            t_thaw = time.perf_counter()
            catch_up = wait_drained(primary)
            uploaded = result["next"] - n
            print(f"outage_seconds: {t_thaw - t_freeze:.1f}", flush=True)
            print(f"outage_backlog_entries: {backlog['pending_entries']}", flush=True)
            print(f"outage_backlog_mb: {backlog['pending_bytes'] / MiB:.1f}", flush=True)
            print(f"outage_uploaded_mb: {uploaded}", flush=True)
            print(f"outage_catch_up_seconds: {catch_up:.2f}", flush=True)
            primary.stop()

            # -- restore on an empty server -------------------------------------------------
            fresh = Server(tmp / "fresh", config=target_toml(bucket, prefix=last_prefix, vaults='["nothing"]'),
                           env={"OBJVAULT_LOG_LEVEL": "warning"}).start()
            t0 = time.perf_counter()
            r = fresh.admin.post("/v1/admin/restore", json={"vault": "bench", "from": "bench"})
            assert r.status_code == 202, r.text
            while True:
                st = fresh.admin.get("/v1/admin/restore").json()
                if st["state"] in ("done", "failed"):
                    break
                time.sleep(0.05)
            seconds = time.perf_counter() - t0
            if st["state"] != "done":
                raise RuntimeError(f"restore: {st}")
            print(f"restore_chunks: {st['chunks']}", flush=True)
            print(f"restore_mb_per_s: {st['bytes'] / MiB / seconds:.1f}", flush=True)
            # spot-check a few restored chunks byte for byte
            for i in (0, n // 2, n - 1):
                got = fresh.admin.get(f"/v1/vaults/bench/chunks/{src.ids[i]}").content
                assert hashlib.sha256(got).hexdigest() == src.ids[i]

            # -- scrub at full speed --------------------------------------------------------
            fresh.stop()
            fresh.config_path.write_text(target_toml(bucket, prefix=last_prefix, vaults='["nothing"]', scrub_rate=0))
            fresh.start()
            assert fresh.admin.post("/v1/admin/scrub").status_code == 202
            while True:
                st = fresh.admin.get("/v1/admin/scrub").json()
                if st["state"] == "idle" and st.get("last_pass"):
                    break
                time.sleep(0.05)
            last = st["last_pass"]
            print(f"scrub_chunks: {last['chunks']}", flush=True)
            print(f"scrub_mb_per_s: {last['bytes'] / MiB / max(last['seconds'], 1e-9):.1f}", flush=True)
            fresh.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
