"""How fast one core digests an S3 PUT body: MD5 (the ETag), SHA-256 (a
signed payload) and CRC32 (what current SDKs send), each alone and all three
in one pass over the same pieces, as vault.s3.checksums.BodyDigests does.

    python bench/s3_digest_rate.py [--mib 64] [--piece-kib 1024] [--rounds 3]

Prints ``name: MB/s`` lines (MB = 10**6 bytes), the best of the rounds. The
all-three figure bounds what one core can take of S3 PUT bodies signed
with a SHA-256 payload; without it (UNSIGNED-PAYLOAD, aws-chunked) the
MD5 + CRC32 figure applies.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from vault.s3.checksums import ALGORITHMS, BodyDigests  # noqa: E402

CASES: dict[str, Callable[[], Any]] = {
    "md5": hashlib.md5,
    "sha256": hashlib.sha256,
    "crc32": ALGORITHMS["crc32"],
    "crc32c": ALGORITHMS["crc32c"],
    "md5_crc32": lambda: BodyDigests(["crc32"]),
    "md5_sha256_crc32": lambda: BodyDigests(["crc32"], sha256=True),
}


def rate(pieces: list[bytes], make: Callable[[], Any], rounds: int) -> float:
    """MB/s of the best round of feeding every piece to a fresh ``make()``."""
    best = float("inf")
    for _ in range(rounds):
        digests = make()
        t0 = time.perf_counter()
        for piece in pieces:
            digests.update(piece)
        best = min(best, time.perf_counter() - t0)
    return sum(map(len, pieces)) / best / 1e6


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--mib", type=int, default=64)
    parser.add_argument("--piece-kib", type=int, default=1024)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    size = args.piece_kib << 10
    pieces = [os.urandom(size) for _ in range((args.mib << 20) // size)]
    for name, make in CASES.items():
        print(f"{name}_mb_per_s: {rate(pieces, make, args.rounds):.0f}")


if __name__ == "__main__":
    main()
