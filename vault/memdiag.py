"""A memory diagnostic, off unless asked for: ``OBJVAULT_TRACEMALLOC=DIR``.

With it set, the server traces Python's allocations from its start
(``tracemalloc``, ``OBJVAULT_TRACEMALLOC_FRAMES`` frames per traceback,
default 12) and, at every ``SIGUSR2``, writes to ``DIR``:

* ``snap-<n>.tracemalloc``: the snapshot (``tracemalloc.Snapshot.load``);
* ``snap-<n>.json``: what the process holds at that moment besides: RSS
  and its anonymous part (``/proc/self/status``), the bytes tracemalloc
  sees, and glibc's own account of its heaps (``mallinfo2``: in use, free
  inside the heaps, mapped on their own).

Two snapshots compared by traceback tell a Python-level leak; RSS growing
while the traced bytes do not points at the C side (allocator
fragmentation, RocksDB, a C extension). Tracing slows every allocation
(the server runs at about half its speed), so it is a diagnostic, not a
setting for production. ``bench/soak.py --tracemalloc`` uses it.
"""

from __future__ import annotations

import asyncio
import ctypes
import json
import logging
import os
import signal
import time
import tracemalloc
from pathlib import Path

log = logging.getLogger("objvault")

ENV = "OBJVAULT_TRACEMALLOC"
FRAMES_ENV = "OBJVAULT_TRACEMALLOC_FRAMES"


class _Mallinfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks",
        "keepcost")]


def malloc_stats() -> dict[str, int]:
    """glibc's heaps: ``heap_bytes`` obtained from the system (sbrk and arena
    heaps), ``in_use_bytes`` of it allocated, ``free_bytes`` free inside it,
    ``mmapped_bytes`` in blocks mapped on their own. Empty elsewhere."""
    try:
        fn = ctypes.CDLL(None).mallinfo2
    except (OSError, AttributeError):
        return {}
    fn.restype = _Mallinfo2
    m = fn()
    return {"heap_bytes": m.arena, "in_use_bytes": m.uordblks, "free_bytes": m.fordblks,
            "mmapped_bytes": m.hblkhd, "top_free_bytes": m.keepcost}


def proc_status(pid: int | str = "self", fields: tuple[str, ...] = ("VmRSS", "RssAnon", "RssFile")) -> dict[str, int]:
    """``fields`` of ``/proc/<pid>/status``: sizes in bytes, counts (``Threads``)
    as they are; empty when the process is gone."""
    out: dict[str, int] = {}
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                k, _, v = line.partition(":")
                if k in fields:
                    number, *unit = v.split()
                    out[k] = int(number) * (1024 if unit == ["kB"] else 1)
    except OSError:
        pass
    return out


def install(loop: asyncio.AbstractEventLoop) -> None:
    """Start tracing and answer SIGUSR2 with a snapshot, when ``OBJVAULT_TRACEMALLOC`` names a directory."""
    target = os.environ.get(ENV)
    if not target:
        return
    out = Path(target)
    out.mkdir(parents=True, exist_ok=True)
    if not tracemalloc.is_tracing():
        tracemalloc.start(int(os.environ.get(FRAMES_ENV, "12")))
    count = [0]

    def dump() -> None:
        count[0] += 1
        t0 = time.perf_counter()
        snap = tracemalloc.take_snapshot()
        base = out / f"snap-{count[0]}"
        snap.dump(str(base) + ".tracemalloc")
        traced, peak = tracemalloc.get_traced_memory()
        info = {"time": time.time(), "traced_bytes": traced, "traced_peak_bytes": peak,
                "tracemalloc_overhead_bytes": tracemalloc.get_tracemalloc_memory(),
                "status": proc_status(), "malloc": malloc_stats(),
                "seconds": round(time.perf_counter() - t0, 3)}
        (out / f"snap-{count[0]}.json").write_text(json.dumps(info))
        log.info("tracemalloc snapshot written", extra={"path": str(base), "traced_bytes": traced})

    loop.add_signal_handler(signal.SIGUSR2, dump)
    log.warning("tracemalloc is on (a diagnostic: every allocation is slower)", extra={"dir": str(out)})
