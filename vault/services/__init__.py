"""The core's typed, HTTP-free API: what every front door calls.

Four services by concern, built in order over the metadata layer and the
store: vaults (and their settings), auth (principals and keys), chunks (the
data path) and objects. Rules that refuse an operation (roles, append-only,
retention, quota) live in :mod:`vault.policy`; errors are
:mod:`vault.errors`, which carry no HTTP status.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..config import Config
from ..meta import Index
from ..store import Store
from .auth import AuthService, NewKey
from .chunks import ChunkService, Healer, Recorder
from .objects import ObjectEntry, ObjectService
from .vaults import UNSET, VaultSettings, VaultsService

__all__ = ["AuthService", "ChunkService", "Healer", "NewKey", "ObjectEntry", "ObjectService", "Recorder",
           "Services", "UNSET", "VaultSettings", "VaultsService"]


@dataclass(frozen=True)
class Services:
    vaults: VaultsService
    auth: AuthService
    chunks: ChunkService
    objects: ObjectService

    @classmethod
    def build(cls, config: Config, index: Index, store: Store, recorder: Recorder | None = None,
              healer: Healer | None = None) -> "Services":
        vaults = VaultsService(index)
        auth = AuthService(index, vaults, config.admin_token)
        chunks = ChunkService(config, index, store, recorder, healer)
        # Caches are cleared after a batch that changes what they hold is durable.
        index.event_hooks += [vaults.invalidate_caches_on, auth.invalidate_caches_on]
        return cls(vaults, auth, chunks, ObjectService(index, vaults, chunks))
