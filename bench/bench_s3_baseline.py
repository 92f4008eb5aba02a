"""Baseline: plain obstore PUTs into a SeaweedFS bucket on this machine.

    python bench/bench_s3_baseline.py [--total-mb 1024] [--small-count 10000] [--concurrency 16]

Prints ``name: value`` lines (``mb`` = MiB), e.g. ``s3_put_1mib_mb_per_s: 123.4``.
What objvault's replication to an S3 target should be compared against.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.s3baseline import run_baseline, weed_version  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--total-mb", type=int, default=1024, help="MiB of 1 MiB objects to PUT (default 1024)")
    ap.add_argument("--small-count", type=int, default=10000, help="number of 16 KiB objects (default 10000)")
    ap.add_argument("--concurrency", type=int, default=16, help="PUTs in flight (default 16)")
    ap.add_argument("--dir", default=None, help="parent of the temp data dir (default $BENCH_DIR or the system temp dir)")
    a = ap.parse_args(argv)

    print(f"# weed {weed_version()}, obstore put_async, {a.concurrency} concurrent", flush=True)
    results = run_baseline(a.total_mb, a.small_count, a.concurrency, a.dir)
    for name, value in results.items():
        print(f"{name}: {value:.1f}" if isinstance(value, float) else f"{name}: {value}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
