"""A vault's room: its quota and usage, or the data directories' space when it
has no quota; what Veeam's capacity document (``vault.s3.sosapi``) reports."""

from __future__ import annotations

import os
from dataclasses import dataclass

from ..meta import VaultRec
from .chunks import ChunkService
from .vaults import VaultsService


@dataclass(frozen=True)
class Capacity:
    """Bytes: what the vault may hold, what it may still add, what it holds."""

    capacity: int
    available: int
    used: int


def disk_totals(disk_space: list[tuple[str, int, int]]) -> tuple[int, int]:
    """Total and free bytes of the data directories' filesystems, each
    filesystem counted once (directories on one disk share its space)."""
    seen: set[int] = set()
    total = free = 0
    for path, size, left in disk_space:
        try:
            device = os.stat(path).st_dev
        except OSError:
            continue
        if device not in seen:
            seen.add(device)
            total, free = total + size, free + left
    return total, free


def vault_capacity(vaults: VaultsService, chunks: ChunkService, rec: VaultRec) -> Capacity:
    """``rec``'s capacity: its quota, or with none the data directories' size.

    Used is the vault's stored bytes (what its quota counts). Available is
    what is left of the quota, but never more than the disks have free: a
    quota larger than the free space cannot be filled."""
    used = vaults.usage(rec.vid).stored_bytes
    total, free = disk_totals(chunks.store.disk_space())
    if rec.quota_bytes is None:
        return Capacity(total, free, used)
    return Capacity(rec.quota_bytes, max(0, min(rec.quota_bytes - used, free)), used)
