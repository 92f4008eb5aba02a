"""Ingest, read and lookup figures of the vault server (issue: the vault server).

Run: ``.venv/bin/python bench/bench_ingest.py`` (``--quick`` for a short run).

Everything runs on this machine, client included. The load generator is
``wrk`` (C, Debian package) with ``bench/put.lua`` / ``bench/get.lua``, so
the client costs little CPU; the batch upload uses an aiohttp client.
Because the machine is shared and noisy, every figure is printed next to a
baseline measured in the same run:

* ``disk``: the best this disk does for the same write pattern, without any
  server (1 MiB O_DIRECT writes, 4 in flight, into a preallocated file,
  ``fdatasync`` every 4 MiB);
* ``seaweedfs``: SeaweedFS's S3 PUT of the same chunks with the same client
  (wrk), for context;
* ``null``: an aiohttp server that reads the body and answers 201 without
  storing anything, with the same client (the HTTP stack's ceiling).

Printed lines are ``name: value`` so the README can quote them.
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import hashlib
import json
import mmap
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import httpx  # noqa: E402

from bench.common import RSSSampler, null_server  # noqa: E402
from tests.s3server import SeaweedS3  # noqa: E402
from tests.server import Server  # noqa: E402

BENCH = Path(__file__).resolve().parent


def out(name: str, value, unit: str = "") -> None:
    print(f"{name}: {value}{(' ' + unit) if unit else ''}", flush=True)


class Chunks:
    """Distinct chunks: a 16-hex-digit counter, then the same random tail."""

    def __init__(self, workdir: Path, size: int, count: int) -> None:
        self.size, self.count = size, count
        self.base = workdir / f"base-{size}"
        self.ids_file = workdir / f"ids-{size}"
        tail = os.urandom(size)
        self.base.write_bytes(tail)
        rest = tail[16:]
        with open(self.ids_file, "w") as f:
            for i in range(count):
                f.write(hashlib.sha256(b"%016x" % i + rest).hexdigest() + "\n")
        self.rest = rest

    def data(self, i: int) -> bytes:
        return b"%016x" % i + self.rest

    def ids(self) -> list[str]:
        return self.ids_file.read_text().split()


def wrk(script: str, url: str, seconds: int, conns: int, env: dict) -> dict:
    threads = 2
    env = dict(os.environ, THREADS=str(threads), **env)
    t0 = time.perf_counter()
    res = subprocess.run(["wrk", f"-t{threads}", f"-c{conns}", f"-d{seconds}s", "--timeout", "30s",
                          "-s", str(BENCH / script), url], env=env, capture_output=True, text=True)
    return client_summary(res.stdout + res.stderr, time.perf_counter() - t0)


def lean_put(url: str, seconds: int, conns: int, env: dict) -> dict:
    """Like :func:`wrk` with put.lua, from ``bench/put_client.py`` (a client
    that costs the shared cores a fifth of wrk's CPU; see there)."""
    t0 = time.perf_counter()
    res = subprocess.run([sys.executable, str(BENCH / "put_client.py"), url, str(seconds), str(conns)],
                         env=dict(os.environ, **env), capture_output=True, text=True)
    return client_summary(res.stdout + res.stderr, time.perf_counter() - t0)


def client_summary(text: str, wall: float) -> dict:
    """Requests per second, errors and transfer rate from wrk's summary (or put_client.py's)."""
    m = re.search(r"Requests/sec:\s+([\d.]+)", text)
    tr = re.search(r"Transfer/sec:\s+([\d.]+)(\w+)", text)
    lua = re.search(r"LUA responses=(\d+) non2xx=(\d+)", text)
    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", text)
    if not m:
        raise RuntimeError(f"wrk failed: {text}")
    mult = {"B": 1, "KB": 1 << 10, "MB": 1 << 20, "GB": 1 << 30}
    errors = int(lua.group(2)) if lua else int(non2xx.group(1)) if non2xx else 0
    first = re.search(r"LUA first non-2xx: (.*)", text)
    return {"rps": float(m.group(1)), "errors": errors, "first_error": first.group(1) if first else "",
            "wall": wall, "transfer": float(tr.group(1)) * mult.get(tr.group(2), 1) if tr else 0.0}


def disk_baseline(path: Path, total: int = 2 << 30) -> float:
    """MB/s of the best write pattern the store uses, with no server at all."""
    f = path / "disk-baseline"
    fd = os.open(f, os.O_CREAT | os.O_WRONLY | os.O_DIRECT, 0o600)
    try:
        os.posix_fallocate(fd, 0, total)
        buf = mmap.mmap(-1, 1 << 20)
        buf.write(os.urandom(1 << 20))
        pool = concurrent.futures.ThreadPoolExecutor(4)
        t0 = time.perf_counter()
        pending = []
        for off in range(0, total, 4 << 20):
            pending.append([pool.submit(os.pwrite, fd, buf, off + i * (1 << 20)) for i in range(4)])
            if len(pending) >= 2:
                for fut in pending.pop(0):
                    fut.result()
                os.fdatasync(fd)
        for group in pending:
            for fut in group:
                fut.result()
        os.fdatasync(fd)
        return total / (time.perf_counter() - t0) / 1e6
    finally:
        os.close(fd)
        f.unlink()


NULL_SERVER = """
import asyncio, os, sys, uvloop
from aiohttp import web
BODY = os.urandom(1 << 20)
async def h(req):
    await req.content.readexactly(req.content_length)
    return web.Response(status=201)
async def g(req):
    return web.Response(body=BODY)
async def main():
    app = web.Application(); app.router.add_put('/{tail:.*}', h); app.router.add_get('/{tail:.*}', g)
    r = web.AppRunner(app, access_log=None); await r.setup()
    await web.TCPSite(r, '127.0.0.1', int(sys.argv[1])).start()
    await asyncio.Event().wait()
uvloop.run(main())
"""


class AnonymousSeaweed(SeaweedS3):
    """SeaweedFS whose S3 accepts anonymous writes, so wrk can PUT without signing."""

    def _write_config(self) -> None:
        super()._write_config()
        cfg = json.loads(self.config_path.read_text())
        cfg["identities"].append({"name": "anonymous", "actions": ["Read", "Write", "List"]})
        self.config_path.write_text(json.dumps(cfg))


def metric(text: str, name: str, labels: str = "") -> float:
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name) and labels in line and not line.startswith("#"):
            rest = line[len(name):]
            if rest[:1] in ("{", " "):
                total += float(line.rsplit(" ", 1)[1])
    return total


async def batch_upload(url: str, token: str, chunks: Chunks, start: int, seconds: float, per_batch: int,
                       conns: int) -> tuple[int, float]:
    import aiohttp
    nxt = start
    stored = 0
    deadline = time.perf_counter() + seconds
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/vnd.objvault.chunks"}
    ids = [bytes.fromhex(x) for x in chunks.ids()]

    async def worker(session):
        nonlocal nxt, stored
        while time.perf_counter() < deadline and nxt + per_batch <= chunks.count:
            lo = nxt
            nxt += per_batch
            body = b"".join(ids[i] + chunks.size.to_bytes(4, "big") + chunks.data(i) for i in range(lo, lo + per_batch))
            async with session.post(url, data=body, headers=headers) as r:
                if r.status != 200:
                    raise RuntimeError(f"batch: {r.status} {await r.text()}")
                doc = await r.json()
                stored += doc["stored"]

    t0 = time.perf_counter()
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=conns)) as s:
        await asyncio.gather(*(worker(s) for _ in range(conns)))
    return stored, time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="short run (not the quoted figures)")
    ap.add_argument("--dir", default=os.environ.get("BENCH_DIR", str(BENCH.parent / ".bench")))
    args = ap.parse_args()
    if not shutil.which("wrk"):
        raise SystemExit("wrk is needed: apt-get install wrk (make bench installs it)")
    secs = 6 if args.quick else 20
    Path(args.dir).mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="ingest-", dir=args.dir))
    try:
        run(work, secs, args.quick)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def run(work: Path, secs: int, quick: bool) -> None:
    # Enough distinct chunks that no run wraps around into dedup hits.
    big = Chunks(work, 1 << 20, (1200 if quick else 1400) * secs)
    small = Chunks(work, 16 << 10, 16000 * secs)
    out("machine", f"{os.cpu_count()} cores; client and server on the same machine")

    disk = disk_baseline(work)
    out("disk_baseline_write_mb_s", f"{disk:.0f}")

    srv = Server(work / "srv").start()
    try:
        srv.create_vault("bench")
        token = srv.create_key("bench", "full")
        env = {"BASE_FILE": str(big.base), "IDS_FILE": str(big.ids_file), "URL_PREFIX": "/v1/vaults/bench/chunks/",
               "TOKEN": token}
        with RSSSampler(srv.proc.pid) as rss:
            before = srv.admin.get("/v1/vaults/bench").json()["usage"]
            r = wrk("put.lua", srv.url, secs, 16, env)
            after = srv.admin.get("/v1/vaults/bench").json()["usage"]
            stored = after["stored_bytes"] - before["stored_bytes"]
            mbs = stored / r["wall"] / 1e6
            out("put_1mib_16conc_mb_s", f"{mbs:.0f}")
            out("put_1mib_total_gb", f"{stored / 1e9:.1f}")
            out("put_1mib_errors", r["errors"])
            out("put_1mib_vs_disk_ratio", f"{mbs / disk:.2f}")

            # GET of the stored 1 MiB chunks (only ids that were stored)
            n_stored = after["chunks"]
            candidates = big.ids()[: n_stored + 64]
            gone = set(srv.client(token).post("/v1/vaults/bench/chunks/missing",
                                              json={"ids": candidates}).json()["missing"])
            # A 1 GiB working set, read once first so that the figure is the
            # server's (page cache), not the disk's: the PUT above bypassed the
            # cache (O_DIRECT).
            have = [i for i in candidates if i not in gone][:1024]
            stored_ids = work / "stored-ids"
            stored_ids.write_text("\n".join(have) + "\n")
            warm = srv.client(token)
            for cid in have:
                assert warm.get(f"/v1/vaults/bench/chunks/{cid}").status_code == 200
            g = wrk("get.lua", srv.url, secs // 2, 16, {**env, "IDS_FILE": str(stored_ids), "COUNT": str(len(have))})
            out("get_1mib_16conc_mb_s", f"{g['transfer'] / 1e6:.0f}")
            out("get_1mib_errors", g["errors"])

            # 16 KiB chunks: single PUTs, then batches of 64
            env_s = {**env, "BASE_FILE": str(small.base), "IDS_FILE": str(small.ids_file)}
            before = srv.admin.get("/v1/vaults/bench").json()["usage"]["chunks"]
            r = wrk("put.lua", srv.url, secs // 2, 64, env_s)
            single = srv.admin.get("/v1/vaults/bench").json()["usage"]["chunks"] - before
            out("put_16kib_single_64conc_chunks_s", f"{single / r['wall']:.0f}")
            start = single + 64
            n, dt = asyncio.run(batch_upload(f"{srv.url}/v1/vaults/bench/chunks/batch", token, small, start,
                                             secs, 64, 16))
            out("put_16kib_batch64_16conc_chunks_s", f"{n / dt:.0f}")

            # missing: 10,000 ids, half present
            ids = big.ids()
            present = ids[: min(5000, n_stored)]
            absent = [hashlib.sha256(b"absent%d" % i).hexdigest() for i in range(10000 - len(present))]
            query = json.dumps({"ids": present + absent})
            c = srv.client(token)
            m0 = c.get("/metrics").text
            for _ in range(20):
                resp = c.post("/v1/vaults/bench/chunks/missing", content=query,
                              headers={"Content-Type": "application/json"})
                assert resp.status_code == 200 and len(resp.json()["missing"]) >= len(absent)
            m1 = c.get("/metrics").text
            lab = 'route="/v1/vaults/{vault}/chunks/missing"'
            dsum = metric(m1, "objvault_http_request_duration_seconds_sum", lab) - \
                metric(m0, "objvault_http_request_duration_seconds_sum", lab)
            dcnt = metric(m1, "objvault_http_request_duration_seconds_count", lab) - \
                metric(m0, "objvault_http_request_duration_seconds_count", lab)
            out("missing_10000_ids_server_ms", f"{dsum / dcnt * 1000:.1f}")
        out("server_rss_peak_mib", rss.peak >> 20)
    finally:
        srv.stop()

    # Baselines with the same client: a null aiohttp server and SeaweedFS S3.
    with null_server(NULL_SERVER) as url:
        r = wrk("put.lua", url, secs // 2, 16, env)
        out("null_server_put_1mib_16conc_mb_s", f"{r['rps'] * big.size / 1e6:.0f}")
        r = wrk("put.lua", url, secs // 2, 64, env_s)
        out("null_server_put_16kib_64conc_req_s", f"{r['rps']:.0f}")
        r = wrk("get.lua", url, secs // 2, 16, {**env, "IDS_FILE": str(stored_ids), "COUNT": "1000"})
        out("null_server_get_1mib_16conc_mb_s", f"{r['transfer'] / 1e6:.0f}")

    with AnonymousSeaweed(work / "weed") as weed:
        weed.create_bucket("bench")
        r = wrk("put.lua", weed.endpoint, secs // 2, 16, {**env, "URL_PREFIX": "/bench/", "TOKEN": ""})
        out("seaweedfs_s3_put_1mib_16conc_mb_s", f"{r['rps'] * big.size / 1e6:.0f}")
        out("seaweedfs_s3_put_errors", r["errors"])
        r = wrk("put.lua", weed.endpoint, secs // 2, 64, {**env_s, "URL_PREFIX": "/bench/", "TOKEN": ""})
        out("seaweedfs_s3_put_16kib_64conc_req_s", f"{r['rps']:.0f}")


if __name__ == "__main__":
    main()
