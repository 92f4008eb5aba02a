"""Helpers shared by the benchmarks: a server subprocess, chunk generators, RSS sampling."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.server import Server, free_port  # noqa: E402
from vault.memdiag import proc_status  # noqa: E402


class ChunkSource:
    """Deterministic distinct chunks: a random base with the index in the first 8 bytes.

    Ids are computed up front so the timed phase measures the server, not the
    client hashing its own data.
    """

    def __init__(self, size: int, count: int, seed: int = 1) -> None:
        self.size, self.count = size, count
        self.base = bytearray(os.urandom(size) if seed else bytes(size))
        self.ids = [hashlib.sha256(self.data(i)).hexdigest() for i in range(count)]

    def data(self, i: int) -> bytes:
        b = self.base
        b[:8] = i.to_bytes(8, "little")
        return bytes(b)


class RSSSampler:
    """Samples a process's resident set size every 100 ms; reports the peak."""

    def __init__(self, pid: int) -> None:
        self.pid, self.peak = pid, 0
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            now = proc_status(self.pid, ("VmRSS",))
            if not now:
                return  # the process is gone
            self.peak = max(self.peak, now["VmRSS"])
            self._stop.wait(0.1)

    def __enter__(self):
        self._t.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._t.join()


def start_server(tmp: str | None = None, **kw) -> Server:
    root = Path(tmp or tempfile.mkdtemp(prefix="objvault-bench-", dir=os.environ.get("BENCH_DIR", "/tmp")))
    return Server(root, **kw).start()


async def upload_all(session, url: str, auth: str, src: ChunkSource, concurrency: int,
                     indices: range | None = None) -> tuple[float, int]:
    """PUT every chunk with ``concurrency`` workers; returns (seconds, bytes)."""
    indices = indices if indices is not None else range(src.count)
    it = iter(indices)
    headers = {"Authorization": f"Bearer {auth}", "Content-Type": "application/octet-stream"}
    sent = 0

    async def worker():
        nonlocal sent
        for i in it:
            data = src.data(i)
            async with session.put(f"{url}/chunks/{src.ids[i]}", data=data, headers=headers) as r:
                if r.status not in (200, 201):
                    raise RuntimeError(f"PUT {r.status}: {await r.text()}")
                await r.read()
            sent += len(data)

    t0 = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return time.perf_counter() - t0, sent


@contextlib.contextmanager
def null_server(script: str) -> Iterator[str]:
    """A server that stores nothing (``script``, given a port) running; its URL."""
    port = free_port()
    null = subprocess.Popen([sys.executable, "-c", script, str(port)])
    try:
        deadline = time.time() + 10
        while time.time() < deadline:
            try:
                httpx.put(f"http://127.0.0.1:{port}/x", content=b"x")
                break
            except httpx.HTTPError:
                time.sleep(0.1)
        yield f"http://127.0.0.1:{port}"
    finally:
        null.kill()
        null.wait()
