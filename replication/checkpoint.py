"""Periodic RocksDB checkpoints shipped to bucket targets.

Every ``checkpoint_interval_seconds`` (per target; 0 = never) the index is
checkpointed (rocksdict ``Checkpoint``: hard links of the live SST files plus
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
from typing import Any

import zstandard
from rocksdict import AccessType, Checkpoint, Rdict

from vault.config import TargetConfig
from vault.workers import Job

from .outbox import checkpoint_key, target_id
from .target import CheckpointStore
from .worker import Context

log = logging.getLogger("objvault.replication")


def make_tarball(index: Any, workdir: Path, stamp: str) -> Path:
    """Checkpoint the index into ``workdir`` and pack it; returns the ``.tar.zst`` path."""
    workdir.mkdir(parents=True, exist_ok=True)
    cp = workdir / f"checkpoint-{stamp}"
    out = workdir / f"checkpoint-{stamp}.tar.zst"
    shutil.rmtree(cp, ignore_errors=True)
    try:
        Checkpoint(index.db).create_checkpoint(str(cp))
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


class CheckpointError(Exception):
    """A downloaded checkpoint is not a usable index (the message names the path)."""


def verify_index(path: Path) -> dict:
    """Open an unpacked checkpoint's index read-only and read every entry of every
    column family; RocksDB checks each block's checksum as it reads it.

    Returns ``{"vaults": [names], "entries": {column family: count}}``. Raises
    :class:`CheckpointError` naming ``path`` if RocksDB cannot open or read it, or
    if it has no ``vaults`` column family (then it is not an objvault index).
    Nothing in ``path`` is changed.
    """
    try:
        cfs = Rdict.list_cf(str(path))
    except Exception as e:
        raise CheckpointError(f"{path}: RocksDB cannot open it: {e}") from None
    if "vaults" not in cfs:
        raise CheckpointError(f"{path}: not an objvault index (no 'vaults' column family; it has "
                              f"{', '.join(sorted(cfs))})")
    try:
        db = Rdict(str(path), access_type=AccessType.read_only())
    except Exception as e:
        raise CheckpointError(f"{path}: RocksDB cannot open it: {e}") from None
    counts: dict[str, int] = {}
    vaults: list[str] = []
    try:
        for name in cfs:
            # The iterator, not keys(): only the iterator's status() reports a
            # block that failed its checksum instead of ending the scan early.
            it = db.get_column_family(name).iter()
            it.seek_to_first()
            n = 0
            while it.valid():
                if name == "vaults":
                    vaults.append(bytes(it.key()).decode("utf-8", "replace"))
                n += 1
                it.next()
            it.status()
            del it
            counts[name] = n
    except Exception as e:
        raise CheckpointError(f"{path}: RocksDB cannot read it: {e}") from None
    finally:
        db.close()
    return {"vaults": sorted(vaults), "entries": counts}


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
        raw = self.ctx.index.get("meta", checkpoint_key(self.tid))
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
        await self.ctx.index.run(lambda txn: txn.put("meta", checkpoint_key(self.tid), repr(now).encode()))
        stats = {"path": path, "bytes": size, "seconds": round(time.monotonic() - t0, 3)}
        log.info("index checkpoint shipped", extra={"target": self.cfg.name, **stats})
        return stats
