"""Periodic RocksDB checkpoints shipped to bucket targets.

Every ``checkpoint_interval_seconds`` (per target; 0 = never) the index is
checkpointed (:meth:`vault.meta.Index.checkpoint`: hard links of the live SST files plus
a copy of the WAL, consistent as of one instant), packed as ``tar`` + zstd
and uploaded to ``checkpoints/<UTC stamp>.tar.zst`` on the target (sealed in
frames when the target is encrypted); the newest few are kept. Together with
the replicated chunks this recovers a whole server's index state (keys,
usage history, everything not in the per-vault layout): see
docs/replication.md, "Recovering the index".
"""

from __future__ import annotations

import asyncio
import io
import logging
import shutil
import tarfile
import time
from datetime import datetime, timezone
from pathlib import Path
import zstandard

from vault.config import TargetConfig
from vault.meta import Index
from vault.meta.outbox import checkpoint_key, target_id
from vault.workers import Job

from .target import CheckpointStore
from .worker import Context

log = logging.getLogger("objvault.replication")


def make_tarball(index: Index, workdir: Path, stamp: str) -> Path:
    """Checkpoint the index into ``workdir`` and pack it; returns the ``.tar.zst`` path."""
    workdir.mkdir(parents=True, exist_ok=True)
    cp = workdir / f"checkpoint-{stamp}"
    out = workdir / f"checkpoint-{stamp}.tar.zst"
    shutil.rmtree(cp, ignore_errors=True)
    try:
        index.checkpoint(cp)
        with open(out, "wb") as f:
            with zstandard.ZstdCompressor(level=3, threads=-1).stream_writer(f) as z:
                with tarfile.open(fileobj=z, mode="w|") as tar:
                    tar.add(cp, arcname="index")
    except BaseException:
        out.unlink(missing_ok=True)
        raise
    finally:
        shutil.rmtree(cp, ignore_errors=True)
    return out


def unpack_tarball(src: Path, dest: Path) -> Path:
    """Unpack a downloaded ``.tar.zst`` checkpoint; returns the index directory inside ``dest``."""
    dest.mkdir(parents=True, exist_ok=True)
    with open(src, "rb") as f:
        data = zstandard.ZstdDecompressor().stream_reader(f).read()
    with tarfile.open(fileobj=io.BytesIO(data), mode="r") as tar:
        tar.extractall(dest, filter="data")
    return dest / "index"


def stamp_time(stamp: str) -> datetime | None:
    """The UTC time a :func:`stamp_now` stamp names, None if ``stamp`` is not one."""
    try:
        return datetime.strptime(stamp, "%Y%m%dT%H%M%S.%fZ").replace(tzinfo=timezone.utc)
    except ValueError:
        return None


def stamp_now() -> str:
    return datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S.%fZ")


class Checkpointer(Job):
    """Ships checkpoints to one bucket target (a :class:`vault.workers.Job`, one per target)."""

    def __init__(self, ctx: Context, cfg: TargetConfig, replica: CheckpointStore) -> None:
        super().__init__()
        self.name = f"checkpoint:{cfg.name}"
        self.ctx = ctx
        self.cfg = cfg
        self.replica = replica
        self.tid = target_id(cfg.name)
        self.workdir = ctx.cfg.first_data_dir / "replication-tmp"

    def last(self) -> float:
        raw = self.ctx.index.marker(checkpoint_key(self.tid))
        return float(raw.decode()) if raw else 0.0

    def first_delay(self) -> float:
        """Seconds until the next checkpoint is due (now, for a target that never got one)."""
        return max(0.0, self.last() + self.cfg.checkpoint_interval_seconds - time.time())

    async def run_once(self) -> dict:
        """Make and upload one checkpoint now."""
        loop = asyncio.get_running_loop()
        stamp = stamp_now()
        t0 = time.monotonic()
        tarball = await loop.run_in_executor(None, make_tarball, self.ctx.index, self.workdir, stamp)
        try:
            size = tarball.stat().st_size
            await self.replica.open()
            path = await self.replica.put_checkpoint(stamp, tarball)
        finally:
            tarball.unlink(missing_ok=True)
        now = time.time()
        await self.ctx.index.run(lambda txn: txn.put_marker(checkpoint_key(self.tid), repr(now).encode()))
        stats = {"path": path, "bytes": size, "seconds": round(time.monotonic() - t0, 3)}
        log.info("index checkpoint shipped", extra={"target": self.cfg.name, **stats})
        return stats
