"""What an index op announces with ``txn.emit(event)``.

The committer hands every event of an op, inside that op's batch, to the
index's event hooks: the service's cache invalidation and the replication
outbox, whose entries are thereby written in the same durable batch as the
change they describe. Events are values: frozen, typed, never a bare tuple.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Union

if TYPE_CHECKING:
    from .meta import ObjectMeta, VaultRec

# What alerts are about (vault/alerts): each opens once and resolves once.
QUOTA_WARNING, QUOTA_FULL, VAULT_STALE = "quota_warning", "quota_full", "vault_stale"
REPLICATION_BACKLOG, TARGET_FAILING = "replication_backlog", "target_failing"
CHUNK_CORRUPT, DATA_DIR_FAILED, DATA_DIR_LOW_SPACE = "chunk_corrupt", "data_dir_failed", "data_dir_low_space"
LOCK_WEAKENED = "lock_weakened"
ALERT_KINDS = (QUOTA_WARNING, QUOTA_FULL, VAULT_STALE, REPLICATION_BACKLOG, TARGET_FAILING, CHUNK_CORRUPT,
               DATA_DIR_FAILED, DATA_DIR_LOW_SPACE, LOCK_WEAKENED)


@dataclass(frozen=True)
class _VaultChange:
    rec: VaultRec


@dataclass(frozen=True)
class VaultPut(_VaultChange):
    """A vault was created or its configuration changed; ``before`` is the
    configuration it replaced (None for a new vault)."""

    before: VaultRec | None = None


class VaultDeleted(_VaultChange):
    """A vault was deleted (its data goes later, in bounded GC passes)."""


class BucketChanged(_VaultChange):
    """An S3 bucket of the vault was created, had a setting changed, or was
    deleted: the vault's bucket records travel with its configuration."""


@dataclass(frozen=True)
class KeyChanged:
    """A key of the vault named ``vault`` was created or revoked."""

    vault: str


@dataclass(frozen=True)
class ChunkPut:
    """A chunk was stored (not a dedup hit: the chunk is new to the vault)."""

    rec: VaultRec
    digest: bytes
    length: int


@dataclass(frozen=True)
class ChunkDeleted:
    """GC deleted a chunk. ``rec`` is None when the vault itself is gone: only its id is known."""

    vid: int
    digest: bytes
    rec: VaultRec | None = None


@dataclass(frozen=True)
class ObjectPut:
    """An object was written. ``restored_from`` names the target a restore read it
    from: that target holds it already."""

    rec: VaultRec
    key: str
    obj: ObjectMeta
    restored_from: str = ""


@dataclass(frozen=True)
class ObjectDeleted:
    rec: VaultRec
    key: str


@dataclass(frozen=True)
class ChunkQuarantined:
    """A chunk failed verification (scrub or a read) and was quarantined;
    ``damaged`` once no target could give a good copy back."""

    rec: VaultRec
    digest: bytes
    reason: str
    damaged: bool


Event = Union[VaultPut, BucketChanged, VaultDeleted, KeyChanged, ChunkPut, ChunkDeleted, ObjectPut, ObjectDeleted,
              ChunkQuarantined]
