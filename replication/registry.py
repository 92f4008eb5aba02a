"""Replication targets by kind: which implementation of
:class:`replication.target.Replica` a configured ``kind`` is built with.

The protocol knows no implementation; the implementations know the protocol;
this module alone knows them all, so nothing imports in a circle.
"""

from __future__ import annotations

from typing import Callable

from vault.config import TargetConfig

from .crypto import Sealer, load_key
from .layout import BlobReplica
from .local import local_store
from .peer import PeerReplica
from .s3 import object_store
from .target import Replica, TargetError

Factory = Callable[[TargetConfig, bytes | None], Replica]


def _peer(cfg: TargetConfig, key: bytes | None) -> Replica:
    if key is not None:
        raise TargetError(f"target {cfg.name!r}: encryption_key_file applies to bucket targets, "
                          "not to an objvault peer")
    return PeerReplica(cfg)


def _directory(cfg: TargetConfig, key: bytes | None) -> Replica:
    return BlobReplica(cfg, local_store(cfg), Sealer(key))


def _bucket(cfg: TargetConfig, key: bytes | None) -> Replica:
    return BlobReplica(cfg, object_store(cfg), Sealer(key))


FACTORIES: dict[str, Factory] = {"objvault": _peer, "local": _directory, "s3": _bucket}
"""``kind`` (as the configuration spells it) → factory of its client."""


def open_target(cfg: TargetConfig) -> Replica:
    """Build the replica client for one configured target (no network I/O yet)."""
    factory = FACTORIES.get(cfg.kind)
    if factory is None:
        raise TargetError(f"target {cfg.name!r}: unknown kind {cfg.kind!r} (one of {', '.join(FACTORIES)})")
    key = load_key(cfg.encryption_key_file) if cfg.encryption_key_file else None
    return factory(cfg, key)
