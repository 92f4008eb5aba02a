"""The replication outbox's storage: key layout, entry encoding, the queue ops.

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
Which events become entries for which target is :mod:`replication.outbox`'s
business.
"""

from __future__ import annotations

import hashlib
import json
import struct
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Iterator, Union

from ..events import BucketChanged, ChunkDeleted, ChunkPut, ObjectDeleted, ObjectPut, VaultDeleted, VaultPut
from . import schema as S
from .records import BucketRec, ObjectMeta, VaultRec

if TYPE_CHECKING:
    from .engine import Index, Txn

PUTQ, DELQ, SUPERSEDE = b"Q", b"R", b"S"

# Entry kinds.
VAULT_PUT, VAULT_DELETE = "V", "X"
CHUNK_PUT, CHUNK_DELETE = "C", "D"
OBJECT_PUT, OBJECT_DELETE = "O", "R"
DELETES = (VAULT_DELETE, CHUNK_DELETE, OBJECT_DELETE)

Replicated = Union[VaultPut, BucketChanged, VaultDeleted, ChunkPut, ChunkDeleted, ObjectPut, ObjectDeleted]
REPLICATED = (VaultPut, BucketChanged, VaultDeleted, ChunkPut, ChunkDeleted, ObjectPut, ObjectDeleted)
"""The events that become outbox entries (a key change does not travel)."""

_HEAD = struct.Struct("<cddQB")  # kind, event time, due, vid, len(vault name)
_STATS = struct.Struct("<qqq")    # entries, bytes, delayed


def target_id(name: str) -> bytes:
    return hashlib.sha256(b"objvault-target\0" + name.encode()).digest()[:8]


def stats_key(tid: bytes) -> bytes:
    return S.REPL_STATS + tid


def seeded_key(tid: bytes) -> bytes:
    return S.REPL_SEEDED + tid


def checkpoint_key(tid: bytes) -> bytes:
    return S.REPL_CHECKPOINT + tid


def next_seq(txn: Txn) -> int:
    """The next entry sequence number: one counter for every target."""
    return txn.counter("outbox")


def _supersede_key(tid: bytes, what: bytes, vid: int, name: bytes) -> bytes:
    """``what``: b"o" (an object key) or b"c" (a chunk id)."""
    return tid + SUPERSEDE + what + S.vid_bytes(vid) + name


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
            return _supersede_key(tid, b"o", self.vid, self.okey.encode())
        if self.kind == CHUNK_DELETE:
            return _supersede_key(tid, b"c", self.vid, self.digest)
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


def _unpack_stats(raw: bytes | None) -> tuple[int, int, int]:
    return _STATS.unpack(raw) if raw else (0, 0, 0)


def outbox_stats(index: Index, tid: bytes) -> tuple[int, int, int]:
    """``(entries, bytes, delayed)`` pending for target ``tid``."""
    return _unpack_stats(index.marker(stats_key(tid)))


def _add_stats(txn: Txn, tid: bytes, entries: int, nbytes: int, delayed: int) -> None:
    k = stats_key(tid)
    e, b, d = _unpack_stats(txn.get(S.META, k))
    txn.put(S.META, k, _STATS.pack(e + entries, b + nbytes, d + delayed))


def write_entry(txn: Txn, tid: bytes, delete_delay: float, seq: int, vid: int, name: str,
                event: Replicated) -> None:
    """Write one entry of ``event`` for target ``tid`` (and its bookkeeping) into ``txn``;
    a delete is due ``delete_delay`` seconds from now."""
    now = txn.now
    due = now + delete_delay
    sk = None
    if isinstance(event, (VaultPut, BucketChanged)):
        entry = encode(VAULT_PUT, now, 0.0, vid, name, _vault_doc(event.rec, txn.vault_buckets(vid)))
        queue, size = PUTQ, 0
    elif isinstance(event, VaultDeleted):
        entry = encode(VAULT_DELETE, now, due, vid, name, _vault_doc(event.rec, []))
        queue, size = DELQ, 0
    elif isinstance(event, ChunkPut):
        digest, length = event.digest, event.length
        entry = encode(CHUNK_PUT, now, 0.0, vid, name, digest + length.to_bytes(8, "big"))
        queue, size = PUTQ, length
        _supersede(txn, tid, _supersede_key(tid, b"c", vid, digest))
    elif isinstance(event, ChunkDeleted):
        digest = event.digest
        entry = encode(CHUNK_DELETE, now, due, vid, name, digest)
        queue, size = DELQ, 0
        sk = _supersede_key(tid, b"c", vid, digest)
    elif isinstance(event, ObjectPut):
        key, obj = event.key, event.obj
        # The op has just written the packed manifest: reuse it rather than pack twice.
        packed = txn.object_packed(vid, key) or obj.pack()
        entry = encode(OBJECT_PUT, now, 0.0, vid, name, _key_body(key, packed))
        queue, size = PUTQ, 32 * len(obj.chunks) + len(obj.meta)
        _supersede(txn, tid, _supersede_key(tid, b"o", vid, key.encode()))
    else:
        key = event.key
        entry = encode(OBJECT_DELETE, now, due, vid, name, _key_body(key))
        queue, size = DELQ, 0
        sk = _supersede_key(tid, b"o", vid, key.encode())
    okey = tid + queue + seq.to_bytes(8, "big")
    txn.put(S.OUTBOX, okey, entry)
    if sk is not None:
        txn.put(S.OUTBOX, sk, seq.to_bytes(8, "big"))
    _add_stats(txn, tid, 1, size, 1 if queue == DELQ else 0)


def _supersede(txn: Txn, tid: bytes, sk: bytes) -> None:
    """A put of a name whose delete is still pending: the put replaces what the
    delete would remove, so that delete no longer applies."""
    raw = txn.get(S.OUTBOX, sk)
    if raw is None:
        return
    dkey = tid + DELQ + raw
    if txn.get(S.OUTBOX, dkey) is not None:
        txn.delete(S.OUTBOX, dkey)
        _add_stats(txn, tid, -1, 0, -1)
    txn.delete(S.OUTBOX, sk)


def _vault_doc(rec: VaultRec, buckets: list[BucketRec]) -> bytes:
    """The configuration a VAULT_PUT entry carries: the vault's settings and its
    S3 bucket records (name, creation time, settings), by name."""
    return json.dumps({"name": rec.name, "created": rec.created, "quota_bytes": rec.quota_bytes,
                       "append_only": rec.append_only, "retention_days": rec.retention_days,
                       "buckets": [{"name": b.name, "created": b.created, "settings": b.settings}
                                   for b in sorted(buckets, key=lambda b: b.name)]},
                      separators=(",", ":"), sort_keys=True).encode()


def remove_op(tid: bytes, entries: list[Entry]) -> Callable[[Txn], int]:
    """A committer op removing finished entries (and their supersede records)."""

    def op(txn: Txn) -> int:
        n = nbytes = delayed = 0
        for e in entries:
            if txn.get(S.OUTBOX, e.key) is None:  # superseded meanwhile: already counted out
                continue
            txn.delete(S.OUTBOX, e.key)
            n += 1
            nbytes += e.size
            if e.is_delete:
                delayed += 1
                sk = e.supersede_key(tid)
                if sk is not None and txn.get(S.OUTBOX, sk) == e.seq.to_bytes(8, "big"):
                    txn.delete(S.OUTBOX, sk)
        if n:
            _add_stats(txn, tid, -n, -nbytes, -delayed)
        return n

    return op


def iter_queue(index: Index, tid: bytes, queue: bytes, after_seq: int = -1) -> Iterator[Entry]:
    """Committed entries of one queue with ``seq > after_seq``, in sequence order."""
    prefix = tid + queue
    start = prefix + (after_seq + 1).to_bytes(8, "big") if after_seq >= 0 else None
    for k, v in index.iter_prefix(S.OUTBOX, prefix, start):
        yield decode(k, v)


def first_entry(index: Index, tid: bytes, queue: bytes) -> Entry | None:
    for e in iter_queue(index, tid, queue):
        return e
    return None


def forget_targets_op(keep: set[bytes], limit: int = 1000) -> Callable[[Txn], int]:
    """Op: delete up to ``limit`` outbox records of targets no longer configured
    (and their counters); returns how many it deleted (0 = none left)."""

    def op(txn: Txn) -> int:
        n = 0
        start: bytes | None = None
        while n < limit:
            first = next(iter(txn.items(S.OUTBOX, b"", start)), None)
            if first is None:
                break
            tid = first[0][:8]
            if tid in keep:  # skip this target's records in one seek
                nxt = int.from_bytes(tid, "big") + 1
                if nxt >= 1 << 64:
                    break
                start = nxt.to_bytes(8, "big")
                continue
            for k, _ in txn.items(S.OUTBOX, tid):
                txn.delete(S.OUTBOX, k)
                n += 1
                if n >= limit:
                    break
            else:
                nxt = int.from_bytes(tid, "big") + 1
                if nxt >= 1 << 64:
                    break
                start = nxt.to_bytes(8, "big")
        if n == 0:  # the outbox is clean: drop the counters too
            for prefix in S.REPL_PREFIXES:
                for k, _ in txn.items(S.META, prefix):
                    if k[len(prefix):] not in keep:
                        txn.delete(S.META, k)
        return n

    return op
