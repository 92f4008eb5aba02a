"""Vaults and their settings: create, change, delete, look up, usage."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from dataclasses import dataclass, fields as dc_fields
from typing import Any

from .. import errors as E
from .. import policy
from ..events import Event, VaultDeleted, VaultPut
from ..meta import Index, ObjectMeta, Txn, Usage, VaultRec
from ..meta import audit as A
from ..names import vault_name
from ..policy import Principal
from . import s3meta

audit = logging.getLogger("objvault.audit")

CACHE_ENTRIES = 100_000
MAX_QUOTA = 1 << 62
MAX_RETENTION_DAYS = 36500


class _Unset:
    def __repr__(self) -> str:
        return "UNSET"


UNSET: Any = _Unset()


@dataclass(frozen=True)
class VaultSettings:
    """Settings of a vault to set; a field left UNSET keeps its value."""

    quota_bytes: int | None = UNSET
    append_only: bool = UNSET
    retention_days: int = UNSET
    stale_after_days: float | None = UNSET

    def __post_init__(self) -> None:
        q = self.quota_bytes
        if q is not UNSET and q is not None and (not _is_int(q) or not 0 <= q < MAX_QUOTA):
            raise E.BadRequest("quota_bytes must be null or a non-negative integer")
        if self.append_only is not UNSET and not isinstance(self.append_only, bool):
            raise E.BadRequest("append_only must be true or false")
        r = self.retention_days
        if r is not UNSET and (not _is_int(r) or not 0 <= r <= MAX_RETENTION_DAYS):
            raise E.BadRequest(f"retention_days must be an integer from 0 to {MAX_RETENTION_DAYS}")
        s = self.stale_after_days
        if s is not UNSET and s is not None and (not isinstance(s, (int, float)) or isinstance(s, bool)
                                                 or not 0 < s <= MAX_RETENTION_DAYS):
            raise E.BadRequest(f"stale_after_days must be null or a number of days above 0, at most "
                               f"{MAX_RETENTION_DAYS}")

    def given(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in dc_fields(self) if getattr(self, f.name) is not UNSET}


def _is_int(v: object) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


class VaultsService:
    def __init__(self, index: Index) -> None:
        self.index = index
        # A read-through cache of the vault records. Every op that changes one
        # clears it after its batch is durable and before its caller is answered.
        self._vaults: dict[str, VaultRec] = {}

    def invalidate_caches_on(self, txn: Txn, event: Event) -> None:
        """The index's event hook that keeps the vault cache true."""
        if isinstance(event, (VaultPut, VaultDeleted)):
            txn.after.append(self._vaults.clear)

    def get(self, name: str) -> VaultRec:
        rec = self._vaults.get(name)
        if rec is None:
            rec = self.index.vault(name)
            if rec is None:
                raise E.NoSuchVault(f"no such vault {name!r}")
            if len(self._vaults) < CACHE_ENTRIES:
                self._vaults[name] = rec
        return rec

    def usage(self, vid: int) -> Usage:
        return self.index.usage(vid)

    async def audit_log(self, limit: int, where: A.Filter = A.Filter()) -> list[A.AuditRec]:
        """The newest ``limit`` audit lines ``where`` keeps, newest first (read in a worker thread)."""
        return await asyncio.to_thread(A.lines, self.index, limit, where)

    def list(self) -> list[VaultRec]:
        return self.index.vaults()

    async def create(self, name: str, settings: VaultSettings, who: Principal) -> VaultRec:
        vault_name(name)
        given = settings.given()

        def op(txn: Txn) -> VaultRec:
            if txn.vault(name) is not None:
                raise E.VaultExists(f"vault {name!r} already exists")
            rec = VaultRec(name, txn.counter("vid"), txn.now, **given)
            txn.put_vault(rec)
            txn.emit(VaultPut(rec))
            audited(txn, who, A.VAULT_CREATED, name, fields=given)
            return rec

        return await self.index.run(op)

    async def update(self, name: str, settings: VaultSettings, who: Principal) -> VaultRec:
        given = settings.given()

        def op(txn: Txn) -> VaultRec:
            old = vault_in(txn, name)
            before = {k: getattr(old, k) for k in given}
            rec = dataclasses.replace(old, **given)
            txn.put_vault(rec)
            txn.emit(VaultPut(rec, before=old))
            weakened = policy.lock_weakened(before, rec.append_only, rec.retention_days)
            audited(txn, who, A.VAULT_LOCK_WEAKENED if weakened else A.VAULT_UPDATED, name,
                    before=before, after={k: getattr(rec, k) for k in given})
            return rec

        return await self.index.run(op)

    async def delete(self, name: str, who: Principal) -> None:
        """Remove the vault, its keys and objects; its chunks go to GC (no longer indexed by name).

        Refused (VaultLocked) while any S3 version in it is under Object Lock
        retention or a legal hold: the versions are looked through first, and
        the deletion is refused too if a lock was set meanwhile."""
        found = self.index.vault(name)
        epoch = self.index.lock_epoch(found.vid) if found is not None else 0
        if found is not None:  # a scan of the vault's S3 objects: off the event loop
            await asyncio.to_thread(self._refuse_locked, found)

        def op(txn: Txn) -> VaultRec:
            rec = vault_in(txn, name)
            policy.may_delete_vault(name, rec.append_only, rec.retention_days)
            if found is None or rec.vid != found.vid or txn.lock_epoch(rec.vid) != epoch:
                raise E.Conflict(f"vault {name!r} changed while it was checked for locked objects; retry")
            # The vault's objects, chunks and usage are keyed by its internal id,
            # which is never reused: GC removes them in bounded passes.
            txn.delete_vault(rec)
            txn.emit(VaultDeleted(rec))
            audited(txn, who, A.VAULT_DELETED, name)
            return rec

        await self.index.run(op)

    def _refuse_locked(self, rec: VaultRec) -> None:
        now = time.time()
        for prefix in (s3meta.S3_PREFIX, s3meta.VERSIONS_PREFIX):
            for key, raw in self.index.objects(rec.vid, prefix):
                if s3meta.is_locked(ObjectMeta.unpack(raw).meta, now):
                    raise E.VaultLocked(f"vault {rec.name!r} holds S3 object versions under Object Lock "
                                        f"(such as {key[:200]!r}); it cannot be deleted before they expire")


# The log line of each audited action; those that weaken protection are warnings.
_LOG_LINES = {A.VAULT_CREATED: ("vault created", logging.INFO), A.VAULT_UPDATED: ("vault updated", logging.WARNING),
              A.VAULT_LOCK_WEAKENED: ("vault lock weakened", logging.WARNING),
              A.VAULT_DELETED: ("vault deleted", logging.WARNING), A.KEY_CREATED: ("key created", logging.INFO),
              A.KEY_REVOKED: ("key revoked", logging.INFO)}


def audited(txn: Txn, who: Principal, action: str, vault: str, **details: Any) -> None:
    """Record ``action`` in the audit log as part of ``txn``, and log it
    (logger ``objvault.audit``) once the change is durable."""
    A.record(txn, who.who, action, vault, details)
    message, level = _LOG_LINES[action]
    txn.after.append(lambda: audit.log(level, message, extra={"who": who.who, "vault": vault, **details}))


def vault_in(txn: Txn, name: str) -> VaultRec:
    rec = txn.vault(name)
    if rec is None:
        raise E.NoSuchVault(f"no such vault {name!r}")
    return rec


def live_vault(txn: Txn, rec: VaultRec) -> VaultRec:
    """The vault as the op sees it; NoSuchVault if it was deleted (or replaced) since ``rec`` was read."""
    cur = txn.vault(rec.name)
    if cur is None or cur.vid != rec.vid:
        raise E.NoSuchVault(f"no such vault {rec.name!r}")
    return cur
