"""The transactional outbox: what still has to reach each target.

:class:`OutboxHook` is an index event hook: for every event of a committed op
(``vault_put``, ``vault_delete``, ``chunk_put``, ``chunk_delete``,
``object_put``, ``object_delete``) it writes one entry per matching target in
the *same* RocksDB batch as the change itself, so a change is never committed
without its entries, across crashes and restarts.

Column family ``outbox`` (big-endian, so iteration follows sequence order)::

    tid(8) "Q" seq(8)                 → entry   puts: sent as soon as possible
    tid(8) "R" seq(8)                 → entry   deletes: due at entry.due (event time
                                                + the target's delete_delay_seconds)
    tid(8) "S" "o"|"c" vid(8) name    → seq     the pending delete of an object key /
                                                chunk id, so a later put of the same
                                                name supersedes it

``tid`` is the first 8 bytes of SHA-256 of the target's name; ``seq`` comes
from one persistent counter (``meta counter:outbox``), so entries of every
target are ordered by the commit order of their changes. ``meta repl:<tid>``
holds the target's pending entries, pending bytes and delayed entries,
maintained in the same batches as the entries.

A put entry carries what it replicates except chunk bytes: the vault's
configuration, the object's manifest (ObjectMeta as committed), the chunk id
and length; chunk bytes are read from the store (and verified) when sent.
"""

from __future__ import annotations

import hashlib
import json
import struct
from dataclasses import dataclass
from typing import Callable, Iterator, Union

from vault.config import TargetConfig
from vault.events import ChunkDeleted, ChunkPut, Event, ObjectDeleted, ObjectPut, VaultDeleted, VaultPut
from vault.index import ChunkMeta, Index, ObjectMeta, Txn, vid_bytes
from vault.service import VaultRec

CF = "outbox"
PUTQ, DELQ, SUPERSEDE = b"Q", b"R", b"S"

# Entry kinds.
VAULT_PUT, VAULT_DELETE = "V", "X"
CHUNK_PUT, CHUNK_DELETE = "C", "D"
OBJECT_PUT, OBJECT_DELETE = "O", "R"
DELETES = (VAULT_DELETE, CHUNK_DELETE, OBJECT_DELETE)

Replicated = Union[VaultPut, VaultDeleted, ChunkPut, ChunkDeleted, ObjectPut, ObjectDeleted]
REPLICATED = (VaultPut, VaultDeleted, ChunkPut, ChunkDeleted, ObjectPut, ObjectDeleted)
"""The events that become outbox entries (a key change does not travel)."""

_HEAD = struct.Struct("<cddQB")  # kind, event time, due, vid, len(vault name)
_STATS = struct.Struct("<qqq")    # entries, bytes, delayed


def target_id(name: str) -> bytes:
    return hashlib.sha256(b"objvault-target\0" + name.encode()).digest()[:8]


def stats_key(tid: bytes) -> bytes:
    return b"repl:" + tid


def seeded_key(tid: bytes) -> bytes:
    return b"repl_seeded:" + tid


def checkpoint_key(tid: bytes) -> bytes:
    return b"repl_checkpoint:" + tid


@dataclass
class Entry:
    """One decoded outbox entry."""

    key: bytes
    seq: int
    kind: str
    t: float
    due: float
    vid: int
    vault: str
    digest: bytes = b""
    length: int = 0
    okey: str = ""
    obj: ObjectMeta | None = None
    doc: dict | None = None

    @property
    def is_delete(self) -> bool:
        return self.kind in DELETES

    @property
    def size(self) -> int:
        """Bytes this entry still has to move (for ``pending_bytes``)."""
        if self.kind == CHUNK_PUT:
            return self.length
        if self.kind == OBJECT_PUT:
            return 32 * len(self.obj.chunks) + len(self.obj.meta) if self.obj else 0
        return 0

    @property
    def order_key(self) -> tuple:
        """Entries with equal order keys reach the target in sequence order."""
        if self.kind in (CHUNK_PUT, CHUNK_DELETE):
            return ("c", self.vault, self.digest)
        if self.kind in (OBJECT_PUT, OBJECT_DELETE):
            return ("o", self.vault, self.okey)
        return ("v", self.vault)

    def supersede_key(self, tid: bytes) -> bytes | None:
        if self.kind == OBJECT_DELETE:
            return tid + SUPERSEDE + b"o" + vid_bytes(self.vid) + self.okey.encode()
        if self.kind == CHUNK_DELETE:
            return tid + SUPERSEDE + b"c" + vid_bytes(self.vid) + self.digest
        return None

    def describe(self) -> str:
        what = {VAULT_PUT: "vault config", VAULT_DELETE: "vault delete",
                CHUNK_PUT: f"chunk {self.digest.hex()}", CHUNK_DELETE: f"chunk delete {self.digest.hex()}",
                OBJECT_PUT: f"object {self.okey!r}", OBJECT_DELETE: f"object delete {self.okey!r}"}[self.kind]
        return f"vault {self.vault!r} {what} (seq {self.seq})"


def encode(kind: str, t: float, due: float, vid: int, vault: str, body: bytes) -> bytes:
    name = vault.encode()
    return _HEAD.pack(kind.encode(), t, due, vid, len(name)) + name + body


def decode(key: bytes, value: bytes) -> Entry:
    kind_b, t, due, vid, nlen = _HEAD.unpack_from(value)
    pos = _HEAD.size
    vault = value[pos:pos + nlen].decode()
    body = value[pos + nlen:]
    e = Entry(key, int.from_bytes(key[9:17], "big"), kind_b.decode(), t, due, vid, vault)
    if e.kind == CHUNK_PUT:
        e.digest, e.length = body[:32], int.from_bytes(body[32:40], "big")
    elif e.kind == CHUNK_DELETE:
        e.digest = body[:32]
    elif e.kind in (OBJECT_PUT, OBJECT_DELETE):
        (klen,) = struct.unpack_from("<H", body)
        e.okey = body[2:2 + klen].decode()
        if e.kind == OBJECT_PUT:
            e.obj = ObjectMeta.unpack(body[2 + klen:])
    else:
        e.doc = json.loads(body)
    return e


def _key_body(key: str, rest: bytes = b"") -> bytes:
    k = key.encode()
    return struct.pack("<H", len(k)) + k + rest


class Stats:
    """``(entries, bytes, delayed)`` of one target, read from or written to a txn."""

    @staticmethod
    def get(raw: bytes | None) -> tuple[int, int, int]:
        return _STATS.unpack(raw) if raw else (0, 0, 0)

    @staticmethod
    def add(txn: Txn, tid: bytes, entries: int, nbytes: int, delayed: int) -> None:
        k = stats_key(tid)
        e, b, d = Stats.get(txn.get("meta", k))
        txn.put("meta", k, _STATS.pack(e + entries, b + nbytes, d + delayed))


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
        raw = txn.get("meta", b"dead_vault:" + vid_bytes(vid))
        if raw is not None:
            name = json.loads(raw)["name"]
        else:
            for _, v in txn.items("vaults", b""):
                d = json.loads(v)
                self._names[d["vid"]] = d["name"]
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
        if not slots:
            return
        seq = txn.counter("outbox")
        for s in slots:
            write_entry(txn, s, seq, vid, name, event)
        if self.wake is not None:
            wake, tids = self.wake, [s.tid for s in slots]
            txn.after.append(lambda: [wake(t) for t in tids])


def write_entry(txn: Txn, slot: TargetSlot, seq: int, vid: int, name: str, event: Replicated) -> None:
    """Write one entry of ``event`` for ``slot``'s target (and its bookkeeping) into ``txn``."""
    tid, now = slot.tid, txn.now
    due = now + slot.cfg.delete_delay_seconds
    sk = None
    if isinstance(event, VaultPut):
        entry = encode(VAULT_PUT, now, 0.0, vid, name, _vault_doc(event.rec))
        queue, size = PUTQ, 0
    elif isinstance(event, VaultDeleted):
        entry = encode(VAULT_DELETE, now, due, vid, name, _vault_doc(event.rec))
        queue, size = DELQ, 0
    elif isinstance(event, ChunkPut):
        digest, length = event.digest, event.length
        entry = encode(CHUNK_PUT, now, 0.0, vid, name, digest + length.to_bytes(8, "big"))
        queue, size = PUTQ, length
        _supersede(txn, tid, tid + SUPERSEDE + b"c" + vid_bytes(vid) + digest)
    elif isinstance(event, ChunkDeleted):
        digest = event.digest
        entry = encode(CHUNK_DELETE, now, due, vid, name, digest)
        queue, size = DELQ, 0
        sk = tid + SUPERSEDE + b"c" + vid_bytes(vid) + digest
    elif isinstance(event, ObjectPut):
        key, obj = event.key, event.obj
        # The op has just written the packed manifest: reuse it rather than pack twice.
        packed = txn.get("objects", vid_bytes(vid) + key.encode()) or obj.pack()
        entry = encode(OBJECT_PUT, now, 0.0, vid, name, _key_body(key, packed))
        queue, size = PUTQ, 32 * len(obj.chunks) + len(obj.meta)
        _supersede(txn, tid, tid + SUPERSEDE + b"o" + vid_bytes(vid) + key.encode())
    else:
        key = event.key
        entry = encode(OBJECT_DELETE, now, due, vid, name, _key_body(key))
        queue, size = DELQ, 0
        sk = tid + SUPERSEDE + b"o" + vid_bytes(vid) + key.encode()
    okey = tid + queue + seq.to_bytes(8, "big")
    txn.put(CF, okey, entry)
    if sk is not None:
        txn.put(CF, sk, seq.to_bytes(8, "big"))
    Stats.add(txn, tid, 1, size, 1 if queue == DELQ else 0)

def _supersede(txn: Txn, tid: bytes, sk: bytes) -> None:
    """A put of a name whose delete is still pending: the put replaces what the
    delete would remove, so that delete no longer applies."""
    raw = txn.get(CF, sk)
    if raw is None:
        return
    dkey = tid + DELQ + raw
    if txn.get(CF, dkey) is not None:
        txn.delete(CF, dkey)
        Stats.add(txn, tid, -1, 0, -1)
    txn.delete(CF, sk)


def _vault_doc(rec: VaultRec) -> bytes:
    return json.dumps({"name": rec.name, "created": rec.created, "quota_bytes": rec.quota_bytes,
                       "append_only": rec.append_only, "retention_days": rec.retention_days},
                      separators=(",", ":"), sort_keys=True).encode()


def remove_op(tid: bytes, entries: list[Entry]) -> Callable[[Txn], int]:
    """A committer op removing finished entries (and their supersede records)."""

    def op(txn: Txn) -> int:
        n = nbytes = delayed = 0
        for e in entries:
            if txn.get(CF, e.key) is None:  # superseded meanwhile: already counted out
                continue
            txn.delete(CF, e.key)
            n += 1
            nbytes += e.size
            if e.is_delete:
                delayed += 1
                sk = e.supersede_key(tid)
                if sk is not None and txn.get(CF, sk) == e.seq.to_bytes(8, "big"):
                    txn.delete(CF, sk)
        if n:
            Stats.add(txn, tid, -n, -nbytes, -delayed)
        return n

    return op


def iter_queue(index: Index, tid: bytes, queue: bytes, after_seq: int = -1) -> Iterator[Entry]:
    """Committed entries of one queue with ``seq > after_seq``, in sequence order."""
    prefix = tid + queue
    start = prefix + (after_seq + 1).to_bytes(8, "big") if after_seq >= 0 else None
    for k, v in index.iter_prefix(CF, prefix, start):
        yield decode(k, v)


def first_entry(index: Index, tid: bytes, queue: bytes) -> Entry | None:
    for e in iter_queue(index, tid, queue):
        return e
    return None


# -- seeding: a target added to a server that already holds data ----------------


def seed_vault_op(slot: TargetSlot, name: str) -> Callable[[Txn], VaultRec | None]:
    """Enqueue the vault's configuration; returns its record (None if it is gone)."""

    def op(txn: Txn) -> VaultRec | None:
        raw = txn.get("vaults", name.encode())
        if raw is None:
            return None
        rec = VaultRec.load(raw)
        write_entry(txn, slot, txn.counter("outbox"), rec.vid, name, VaultPut(rec))
        return rec

    return op


def seed_chunks_op(slot: TargetSlot, rec: VaultRec, keys: list[bytes]) -> Callable[[Txn], int]:
    def op(txn: Txn) -> int:
        n = 0
        for k in keys:
            raw = txn.get("chunks", k)
            if raw is None:
                continue
            meta = ChunkMeta.unpack(raw)
            write_entry(txn, slot, txn.counter("outbox"), rec.vid, rec.name, ChunkPut(rec, k[8:], meta.length))
            n += 1
        return n

    return op


def seed_objects_op(slot: TargetSlot, rec: VaultRec, keys: list[bytes]) -> Callable[[Txn], int]:
    def op(txn: Txn) -> int:
        n = 0
        for k in keys:
            raw = txn.get("objects", k)
            if raw is None:
                continue
            write_entry(txn, slot, txn.counter("outbox"), rec.vid, rec.name,
                        ObjectPut(rec, k[8:].decode(), ObjectMeta.unpack(raw)))
            n += 1
        return n

    return op


def forget_targets_op(keep: set[bytes], limit: int = 1000) -> Callable[[Txn], int]:
    """Op: delete up to ``limit`` outbox records of targets no longer configured
    (and their counters); returns how many it deleted (0 = none left)."""

    def op(txn: Txn) -> int:
        n = 0
        start: bytes | None = None
        while n < limit:
            first = next(iter(txn.items(CF, b"", start)), None)
            if first is None:
                break
            tid = first[0][:8]
            if tid in keep:  # skip this target's records in one seek
                nxt = int.from_bytes(tid, "big") + 1
                if nxt >= 1 << 64:
                    break
                start = nxt.to_bytes(8, "big")
                continue
            for k, _ in txn.items(CF, tid):
                txn.delete(CF, k)
                n += 1
                if n >= limit:
                    break
            else:
                nxt = int.from_bytes(tid, "big") + 1
                if nxt >= 1 << 64:
                    break
                start = nxt.to_bytes(8, "big")
        if n == 0:  # the outbox is clean: drop the counters too
            for prefix in (b"repl:", b"repl_seeded:", b"repl_checkpoint:"):
                for k, _ in txn.items("meta", prefix):
                    if k[len(prefix):] not in keep:
                        txn.delete("meta", k)
        return n

    return op
