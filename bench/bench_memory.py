"""Memory and responsiveness under large request bodies (issue: hardening, item 7).

Run: ``.venv/bin/python bench/bench_memory.py`` (``--distinct``, ``--refs``,
``--batches``, ``--manifests`` to change the mix).

The mix: ``--batches`` concurrent 64 MiB batch uploads (4,080 chunks of
16 KiB each, all new) together with ``--manifests`` concurrent object PUTs
whose manifests hold ``--refs`` chunk references each (over ``--distinct``
chunks uploaded beforehand). Meanwhile ``/healthz`` is asked every 50 ms on
a connection of its own and the server's RSS is sampled every 100 ms.

The same mix runs against two servers in the same run: objvault as
configured by default (``body_memory_bytes`` 256 MiB), and, as the
baseline, the same server with the bound lifted (``body_memory_bytes``
64 GiB), which is how it behaved before the bound existed.

Printed lines are ``name: value`` so the README can quote them.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import shutil
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import aiohttp  # noqa: E402

from tests.server import Server  # noqa: E402

MiB = 1 << 20
BATCH_CHUNKS = 4080  # frames of 16,420 bytes: just under the 64 MiB batch limit
BATCH_CHUNK_BYTES = 16 << 10
PREP_BATCH = 10_000
PROBE = """
import signal, sys, time, urllib.request
signal.signal(signal.SIGTERM, lambda *a: sys.exit(0))
while True:
    t0 = time.perf_counter()
    try:
        urllib.request.urlopen(sys.argv[1], timeout=60).read()
    except OSError:
        sys.exit(0)
    print(time.perf_counter() - t0, flush=True)
    time.sleep(0.05)
"""


def out(name: str, value, unit: str = "") -> None:
    print(f"{name}: {value}{(' ' + unit) if unit else ''}", flush=True)


def rss(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def frames(chunks: list[bytes]) -> bytes:
    return b"".join(hashlib.sha256(c).digest() + len(c).to_bytes(4, "big") + c for c in chunks)


def batch_bodies(n: int, salt: int) -> list[bytes]:
    base = bytearray(os.urandom(BATCH_CHUNK_BYTES))
    bodies = []
    for b in range(n):
        chunks = []
        for i in range(BATCH_CHUNKS):
            base[:16] = (salt << 40 | b << 20 | i).to_bytes(16, "little")
            chunks.append(bytes(base))
        bodies.append(frames(chunks))
    return bodies


async def prepare(session: aiohttp.ClientSession, url: str, distinct: int) -> list[str]:
    """Upload ``distinct`` small chunks; return their ids."""
    ids = []
    for start in range(0, distinct, PREP_BATCH):
        chunks = [i.to_bytes(8, "little") * 4 for i in range(start, min(distinct, start + PREP_BATCH))]
        ids += [hashlib.sha256(c).hexdigest() for c in chunks]
        async with session.post(f"{url}/v1/vaults/bench/chunks/batch", data=frames(chunks),
                                headers={"Content-Type": "application/vnd.objvault.chunks"}) as r:
            assert r.status == 200, await r.text()
    return ids


async def mix(server: Server, manifest: bytes, batches: list[bytes], manifests: int) -> dict:
    pid = server.proc.pid
    headers = {"Authorization": f"Bearer {server.admin_token}"}
    stop = asyncio.Event()
    peak = [rss(pid)]

    async def sample() -> None:
        while not stop.is_set():
            peak[0] = max(peak[0], rss(pid))
            await asyncio.sleep(0.1)

    # /healthz is asked from a process of its own, so that the client's own
    # work (sending half a gigabyte) never shows up as server latency.
    prober = subprocess.Popen([sys.executable, "-c", PROBE, f"{server.url}/healthz"], stdout=subprocess.PIPE,
                              text=True)

    async def put(session, method, path, body, ctype) -> int:
        async with session.request(method, server.url + path, data=body,
                                   headers={"Content-Type": ctype}) as r:
            await r.read()
            return r.status

    timeout = aiohttp.ClientTimeout(total=1800)
    async with aiohttp.ClientSession(headers=headers, timeout=timeout,
                                     connector=aiohttp.TCPConnector(limit=64)) as session:
        watchers = [asyncio.create_task(sample())]
        t0 = time.perf_counter()
        jobs = [put(session, "POST", "/v1/vaults/bench/chunks/batch", b, "application/vnd.objvault.chunks")
                for b in batches]
        jobs += [put(session, "PUT", f"/v1/vaults/bench/objects/m{i}", manifest, "application/json")
                 for i in range(manifests)]
        statuses = await asyncio.gather(*jobs)
        took = time.perf_counter() - t0
        stop.set()
        await asyncio.gather(*watchers)
    prober.terminate()
    health = sorted(float(x) for x in prober.communicate()[0].split())
    return {"statuses": statuses, "seconds": took, "rss_peak": peak[0], "healthz_max": health[-1],
            "healthz_p99": health[int(len(health) * 0.99) - 1] if len(health) > 1 else health[-1],
            "healthz_median": statistics.median(health), "healthz_n": len(health)}


async def run(args) -> None:
    root = Path(tempfile.mkdtemp(prefix="objvault-bench-memory-"))
    print(f"preparing: {args.batches} batch bodies of 64 MiB, a manifest of {args.refs:,} references "
          f"over {args.distinct:,} chunks", flush=True)
    results = {}
    servers = {"bounded": {}, "unbounded": {"OBJVAULT_BODY_MEMORY_BYTES": str(64 << 30)}}
    for label in args.servers.split(","):
        env = servers[label]
        server = Server(root / label, env={"OBJVAULT_GC_INTERVAL_SECONDS": "0", **env}).start()
        try:
            server.create_vault("bench")
            headers = {"Authorization": f"Bearer {server.admin_token}"}
            async with aiohttp.ClientSession(headers=headers) as s:
                ids = await prepare(s, server.url, args.distinct)
            refs = [ids[i % len(ids)] for i in range(args.refs)]
            manifest = json.dumps({"chunks": refs}).encode()
            del refs
            batches = batch_bodies(args.batches, salt=len(results) + 1)
            idle = rss(server.proc.pid)
            r = await mix(server, manifest, batches, args.manifests)
            r["rss_idle"] = idle
            results[label] = r
            del batches
        finally:
            server.stop()
        counts = {s: r["statuses"].count(s) for s in sorted(set(r["statuses"]))}
        out(f"{label}_statuses", counts)
        out(f"{label}_seconds", round(r["seconds"], 1), "s")
        out(f"{label}_rss_idle", round(r["rss_idle"] / MiB), "MiB")
        out(f"{label}_rss_peak", round(r["rss_peak"] / MiB), "MiB")
        out(f"{label}_healthz_max", round(r["healthz_max"] * 1000, 1), "ms")
        out(f"{label}_healthz_p99", round(r["healthz_p99"] * 1000, 1), "ms")
        out(f"{label}_healthz_median", round(r["healthz_median"] * 1000, 1), "ms")
    b, u = results.get("bounded"), results.get("unbounded")
    if b and u:
        out("rss_peak_bounded_over_unbounded", round(b["rss_peak"] / u["rss_peak"], 2))
    if b:
        out("rss_target_400MiB", "met" if b["rss_peak"] < 400 * MiB else "MISSED")
        out("healthz_target_200ms", "met" if b["healthz_max"] < 0.2 else "MISSED")
    shutil.rmtree(root, ignore_errors=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--distinct", type=int, default=1_000_000)
    p.add_argument("--refs", type=int, default=1_000_000)
    p.add_argument("--batches", type=int, default=8)
    p.add_argument("--manifests", type=int, default=8)
    p.add_argument("--servers", default="bounded,unbounded", help="which of bounded,unbounded to run")
    asyncio.run(run(p.parse_args()))


if __name__ == "__main__":
    main()
