"""What a plain S3 client gets from a SeaweedFS bucket: the yardstick for
objvault's replication to S3 targets.

``obstore_put_throughput`` is importable by other benchmarks (bench scripts put
the repository root on ``sys.path`` first); ``run_baseline`` starts its own
SeaweedFS (tests/s3server.py) and measures the two standard cases.

Units: ``mb_per_s`` is MiB (2**20 bytes) per second.
"""

from __future__ import annotations

import asyncio
import os
import tempfile
import time
import uuid
from typing import Any

import obstore

MiB = 1024 * 1024
KiB = 1024


def _pct(sorted_vals: list[float], p: float) -> float:
    if not sorted_vals:
        return 0.0
    i = min(len(sorted_vals) - 1, max(0, round(p / 100 * (len(sorted_vals) - 1))))
    return sorted_vals[i]


async def obstore_put_throughput(
    store: Any,
    chunk_size: int,
    total_bytes: int,
    concurrency: int = 16,
    *,
    prefix: str | None = None,
    warmup: int | None = None,
) -> dict:
    """PUT ``total_bytes // chunk_size`` (at least one) distinct random
    objects of ``chunk_size`` bytes through ``obstore.put_async`` with
    ``concurrency`` requests in flight, and time it.

    The payloads are made before the clock starts (a random base per worker,
    the object's index stamped in its first 8 bytes, so every object
    differs). ``warmup`` untimed PUTs (default: ``concurrency``) go first, so
    connection set-up and the backend's first volume allocation are not
    counted. Keys are ``<prefix>/<n>`` under a fresh prefix.

    Returns ``{"chunk_size", "count", "bytes", "seconds", "mb_per_s",
    "objects_per_s", "p50_ms", "p99_ms", "max_ms", "concurrency"}``.
    """
    if chunk_size <= 0 or concurrency <= 0:
        raise ValueError("chunk_size and concurrency must be positive")
    count = max(1, total_bytes // chunk_size)
    prefix = prefix or f"bench-{chunk_size}-{uuid.uuid4().hex[:8]}"
    warmup = concurrency if warmup is None else warmup
    bases = [bytearray(os.urandom(chunk_size)) for _ in range(concurrency)]

    def payload(worker: int, i: int) -> bytes:
        b = bases[worker]
        if chunk_size >= 8:
            b[:8] = i.to_bytes(8, "little")
        return bytes(b)

    async def put(key: str, data: bytes) -> None:
        await obstore.put_async(store, key, data, use_multipart=False)

    if warmup:
        await asyncio.gather(*(put(f"{prefix}-warmup/{i}", payload(i % concurrency, i)) for i in range(warmup)))

    next_index = 0
    latencies: list[float] = []

    async def worker(w: int) -> None:
        nonlocal next_index
        while next_index < count:
            i = next_index
            next_index += 1
            data = payload(w, i)
            t = time.perf_counter()
            await put(f"{prefix}/{i}", data)
            latencies.append(time.perf_counter() - t)

    t0 = time.perf_counter()
    await asyncio.gather(*(worker(w) for w in range(min(concurrency, count))))
    seconds = time.perf_counter() - t0
    latencies.sort()
    nbytes = count * chunk_size
    return {
        "chunk_size": chunk_size,
        "count": count,
        "bytes": nbytes,
        "seconds": seconds,
        "mb_per_s": nbytes / MiB / seconds,
        "objects_per_s": count / seconds,
        "p50_ms": _pct(latencies, 50) * 1000,
        "p99_ms": _pct(latencies, 99) * 1000,
        "max_ms": latencies[-1] * 1000,
        "concurrency": concurrency,
    }


def weed_version(weed: str | None = None) -> str:
    import subprocess

    from tests.s3server import find_weed

    out = subprocess.run([weed or find_weed(), "version"], capture_output=True, text=True, timeout=30).stdout
    return next((line.strip() for line in out.splitlines() if line.startswith("version")), out.strip())


def run_baseline(
    total_mb: int = 1024,
    small_count: int = 10000,
    concurrency: int = 16,
    workdir: str | None = None,
) -> dict[str, float]:
    """Start a SeaweedFS in a temp dir, measure 1 MiB and 16 KiB PUTs into a
    fresh bucket each, stop it. Returns the metric lines' values by name."""
    from tests.s3server import SeaweedS3

    base = workdir or os.environ.get("BENCH_DIR") or None
    with tempfile.TemporaryDirectory(prefix="s3baseline-", dir=base) as tmp:
        with SeaweedS3(tmp, volume_max=400) as server:
            big = server.bucket(hint="baseline-1mib")
            r1 = asyncio.run(obstore_put_throughput(big.store, MiB, total_mb * MiB, concurrency))
            server.delete_bucket(big.name)
            small = server.bucket(hint="baseline-16kib")
            r2 = asyncio.run(obstore_put_throughput(small.store, 16 * KiB, small_count * 16 * KiB, concurrency))
            server.delete_bucket(small.name)
    return {
        "s3_put_1mib_mb_per_s": r1["mb_per_s"],
        "s3_put_1mib_objects_per_s": r1["objects_per_s"],
        "s3_put_1mib_p50_ms": r1["p50_ms"],
        "s3_put_1mib_p99_ms": r1["p99_ms"],
        "s3_put_1mib_total_mb": r1["bytes"] // MiB,
        "s3_put_1mib_seconds": r1["seconds"],
        "s3_put_16kib_objects_per_s": r2["objects_per_s"],
        "s3_put_16kib_mb_per_s": r2["mb_per_s"],
        "s3_put_16kib_p50_ms": r2["p50_ms"],
        "s3_put_16kib_p99_ms": r2["p99_ms"],
        "s3_put_16kib_count": r2["count"],
    }
