"""The core's typed, HTTP-free API: what every front door calls.

Services by concern, built in order over the metadata layer and the store:
vaults (and their settings), auth (principals and keys), chunks (the data
path), objects, and for the S3 front door buckets and S3 objects (vault
objects under a reserved prefix). Rules that refuse an operation (roles, append-only,
retention, quota) live in :mod:`vault.policy`; errors are
:mod:`vault.errors`, which carry no HTTP status.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..config import Config
from ..meta import Index
from ..store import Store
from ..secretbox import SecretBox
from .auth import AuthService, NewKey
from .buckets import BucketService
from .chunks import ChunkService, Healer, Recorder
from .objects import ObjectEntry, ObjectService
from .s3objects import S3ObjectService
from .vaults import UNSET, VaultSettings, VaultsService

__all__ = ["AuthService", "BucketService", "ChunkService", "Healer", "NewKey", "ObjectEntry", "ObjectService",
           "Recorder", "S3ObjectService", "Services", "UNSET", "VaultSettings", "VaultsService"]


@dataclass(frozen=True)
class Services:
    vaults: VaultsService
    auth: AuthService
    chunks: ChunkService
    objects: ObjectService
    buckets: BucketService
    s3: S3ObjectService

    @classmethod
    def build(cls, config: Config, index: Index, store: Store, recorder: Recorder | None = None,
              healer: Healer | None = None) -> "Services":
        """Raises :class:`vault.secretbox.MasterKeyError` for an unusable S3 master key."""
        vaults = VaultsService(index)
        chunks = ChunkService(config, index, store, recorder, healer)
        objects = ObjectService(index, vaults, chunks)
        # Generated on first start unless the configuration names a file (a Secret).
        box = SecretBox.from_file(config.s3_master_key_path, create=not config.s3.master_key_file)
        auth = AuthService(index, vaults, config.admin_token, box)
        # Caches are cleared after a batch that changes what they hold is durable.
        index.event_hooks += [vaults.invalidate_caches_on, auth.invalidate_caches_on]
        return cls(vaults, auth, chunks, objects, BucketService(index, vaults, objects),
                   S3ObjectService(index, objects, chunks, config.s3.chunk_bytes))
