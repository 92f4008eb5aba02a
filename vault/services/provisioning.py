"""A vault made ready for one client in one call: the vault, a ``full`` key and
a bucket of the same name (what Comet's "Custom Remote Bucket" asks for)."""

from __future__ import annotations

import logging
import secrets
from dataclasses import dataclass

from .. import errors as E
from ..meta import BucketRec, VaultRec
from ..policy import Principal
from .auth import AuthService, NewKey
from .buckets import BucketService
from .vaults import VaultSettings, VaultsService

audit = logging.getLogger("objvault.audit")

SUFFIX_BYTES = 6  # 12 hex characters
ATTEMPTS = 3


@dataclass(frozen=True)
class Provisioned:
    vault: VaultRec
    key: NewKey
    bucket: BucketRec


async def provision(vaults: VaultsService, auth: AuthService, buckets: BucketService, prefix: str,
                    quota_bytes: int | None, object_lock: bool, label: str) -> Provisioned:
    """A new vault named ``prefix`` and a unique suffix, its ``full`` key
    (labelled ``label``) and its bucket of the same name (Object Lock enabled
    if ``object_lock``). Nothing of it is left if a step fails."""
    who = Principal(admin=True)
    rec = await _new_vault(vaults, prefix, quota_bytes, who)
    name = rec.name
    try:
        key = await auth.create_key(name, "full", label, who)
        bucket = await buckets.create(who, name, name, object_lock=object_lock)
    except Exception:
        await vaults.delete(name, who)  # no objects yet, no locks set: it goes, keys included
        raise
    audit.info("vault provisioned", extra={"vault": name, "for": label, "object_lock": object_lock})
    return Provisioned(rec, key, bucket)


async def _new_vault(vaults: VaultsService, prefix: str, quota_bytes: int | None, who: Principal) -> VaultRec:
    """A vault named ``prefix`` and a random suffix (another one if that name is taken)."""
    settings = VaultSettings(quota_bytes=quota_bytes)
    for _ in range(ATTEMPTS - 1):
        try:
            return await vaults.create(prefix + secrets.token_hex(SUFFIX_BYTES), settings, who)
        except E.VaultExists:
            pass
    return await vaults.create(prefix + secrets.token_hex(SUFFIX_BYTES), settings, who)
