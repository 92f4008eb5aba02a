"""Reading an index checkpoint that is not the live index (recovery of a lost one).

Checkpoints are made by :meth:`vault.meta.engine.Index.checkpoint`.
"""

from __future__ import annotations

from pathlib import Path

from rocksdict import AccessType, Rdict

from . import schema as S


class CheckpointError(Exception):
    """A downloaded checkpoint is not a usable index (the message names the path)."""


def read_checkpoint(path: Path) -> dict:
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
    if S.VAULTS not in cfs:
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
                if name == S.VAULTS:
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
