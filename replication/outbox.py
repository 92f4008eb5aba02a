"""The transactional outbox: what still has to reach each target.

:class:`OutboxHook` is an index event hook: for every event of a committed op
that travels (:data:`vault.meta.outbox.REPLICATED`: vault, chunk and object
puts and deletes) it writes one entry per matching target in
the *same* RocksDB batch as the change itself, so a change is never committed
without its entries, across crashes and restarts.

The storage of the entries (key layout, encoding, queue ops) is
:mod:`vault.meta.outbox`; this module decides which events become entries
for which target, and seeds a target added to a server that holds data.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Callable

from vault.config import TargetConfig
from vault.events import BucketChanged, ChunkDeleted, ChunkPut, Event, ObjectPut, VaultPut
from vault.meta import Index, ObjectMeta, Txn, VaultRec
from vault.meta.outbox import REPLICATED, Replicated, next_seq, target_id, write_entry
from vault.meta.schema import restoring_key


@dataclass
class TargetSlot:
    cfg: TargetConfig
    tid: bytes


class OutboxHook:
    """Index event hook writing outbox entries in the batch of the change.

    ``wake(tid)`` is called (from the committer thread, after the batch is
    durable) for every target that got entries.

    What a restore brings back from a target is not sent back to it: the
    restore registers each chunk in :attr:`from_target` before storing it
    (``(tid, vid, chunk id)``: that target holds that chunk, so a put of it,
    by the restore or by anyone, needs no entry for it), and tags its object
    puts with the target's name (:attr:`vault.events.ObjectPut.restored_from`).
    Nor does the configuration of a vault being restored (its settings and
    bucket records) go to the target it is restored from: that target holds
    it as it was, and a restore that is interrupted and resumed reads it
    again; once the restore is over, changes travel as usual.
    """

    def __init__(self, targets: list[TargetConfig], index: Index,
                 wake: Callable[[bytes], None] | None = None) -> None:
        self.slots = [TargetSlot(t, target_id(t.name)) for t in targets]
        self.index = index
        self.wake = wake
        self.from_target: set[tuple[bytes, int, bytes]] = set()
        self._names: dict[int, str] = {}

    def vault_name(self, txn: Txn, vid: int) -> str | None:
        """The name a vault id had (dead vaults too); cached, ids are never reused."""
        name = self._names.get(vid)
        if name is not None:
            return name
        name = txn.dead_vault_name(vid)
        if name is None:
            self._names.update(txn.vault_names_by_id())
            name = self._names.get(vid)
        if name is not None:
            self._names[vid] = name
        return name

    def _vault(self, txn: Txn, event: Replicated) -> tuple[int, str | None]:
        rec = event.rec
        if rec is None:  # a chunk of a deleted vault
            assert isinstance(event, ChunkDeleted)
            return event.vid, self.vault_name(txn, event.vid)
        self._names[rec.vid] = rec.name
        return rec.vid, rec.name

    def __call__(self, txn: Txn, event: Event) -> None:
        if not isinstance(event, REPLICATED):
            return
        vid, name = self._vault(txn, event)
        if name is None:  # a vault this server never named: nothing can address it
            return
        slots = [s for s in self.slots if s.cfg.matches(name)]
        if isinstance(event, ChunkPut) and self.from_target:
            slots = [s for s in slots if (s.tid, vid, event.digest) not in self.from_target]
        elif isinstance(event, ObjectPut) and event.restored_from:
            slots = [s for s in slots if s.cfg.name != event.restored_from]
        elif isinstance(event, (VaultPut, BucketChanged)):
            source = _restoring_from(txn, name)
            if source is not None:
                slots = [s for s in slots if s.cfg.name != source]
        if not slots:
            return
        seq = next_seq(txn)
        for s in slots:
            write_entry(txn, s.tid, s.cfg.delete_delay_seconds, seq, vid, name, event)
        if self.wake is not None:
            wake, tids = self.wake, [s.tid for s in slots]
            txn.after.append(lambda: [wake(t) for t in tids])


def _restoring_from(txn: Txn, vault: str) -> str | None:
    """The target the vault is being restored from (None: no restore of it is under way)."""
    raw = txn.marker(restoring_key(vault))
    if raw is None:
        return None
    try:
        source = json.loads(raw).get("from")
    except (ValueError, AttributeError):
        return None
    return source if isinstance(source, str) else None


# -- seeding: a target added to a server that already holds data ----------------


def seed_vault_op(slot: TargetSlot, name: str) -> Callable[[Txn], VaultRec | None]:
    """Enqueue the vault's configuration; returns its record (None if it is gone)."""
    def op(txn: Txn) -> VaultRec | None:
        rec = txn.vault(name)
        if rec is None:
            return None
        _write(txn, slot, rec, VaultPut(rec))
        return rec

    return op


def seed_chunks_op(slot: TargetSlot, rec: VaultRec, digests: list[bytes]) -> Callable[[Txn], int]:
    def op(txn: Txn) -> int:
        n = 0
        for d in digests:
            meta = txn.chunk(rec.vid, d)
            if meta is None:
                continue
            _write(txn, slot, rec, ChunkPut(rec, d, meta.length))
            n += 1
        return n

    return op


def seed_objects_op(slot: TargetSlot, rec: VaultRec, keys: list[str]) -> Callable[[Txn], int]:
    def op(txn: Txn) -> int:
        n = 0
        for k in keys:
            raw = txn.object_packed(rec.vid, k)
            if raw is None:
                continue
            _write(txn, slot, rec, ObjectPut(rec, k, ObjectMeta.unpack(raw)))
            n += 1
        return n

    return op


def _write(txn: Txn, slot: TargetSlot, rec: VaultRec, event: Replicated) -> None:
    """One entry of a seeded event, in sequence after every committed one."""
    write_entry(txn, slot.tid, slot.cfg.delete_delay_seconds, next_seq(txn), rec.vid, rec.name, event)
