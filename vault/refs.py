"""Chunk reference counts of objects, and large objects' references in slices.

RocksDB's Python binding holds the GIL for the whole of a batch write, about 2.3 µs an
entry (measured: a batch of 1,000,000 entries stops every thread, the event
loop included, for 2.3 s; 100,000 for 0.12-0.15 s). An object that
references more than :data:`REF_SLICE` chunks therefore has its refcounts
changed in slices, one committer op each, bracketed by an intent record in
``meta`` that makes the sequence whole across a refusal or a crash:

* **acquire** runs before the object record is written: increments, slice
  by slice, each slice checking that its chunks exist. If the object is
  then refused, or the process stops, the applied slices are undone.
* **release** runs after the object record was removed or replaced:
  decrements, slice by slice; after a crash the next start finishes them.

Between slices other ops run. A chunk being acquired already has its count
raised, so GC cannot collect it under the object about to be written; a
chunk being released keeps its count until its slice runs, so GC frees it
later, never earlier. Only the counts themselves are briefly above their
final value, never below.

The intent's payload is a packed :class:`vault.meta.ObjectMeta` (for a
release, the old object record as it was), so the slices can be computed
again, identically, by whoever settles the intent.
"""

from __future__ import annotations

import logging
import threading
from collections import Counter
from collections.abc import Sequence
from typing import Callable, Iterable

from . import errors as E
from .meta import DELETABLE, REFERENCED, ChunkMeta, Index, ObjectMeta, Txn

log = logging.getLogger("objvault")

# References changed in one op: at ~2.3 µs an entry, about 20 ms of GIL.
REF_SLICE = 8192
ACQUIRE, RELEASE = 1, 2

Pairs = list[tuple[bytes, int]]


def nslices(chunks: Sequence[bytes]) -> int:
    return -(-len(chunks) // REF_SLICE)


def slice_pairs(chunks: Sequence[bytes], k: int) -> Pairs:
    """Slice ``k`` of a manifest's references, as ``(id, references in the
    slice)``: made from the manifest alone, so whoever settles an intent
    gets the same slices. An id in several slices is counted in each."""
    return list(Counter(chunks[k * REF_SLICE:(k + 1) * REF_SLICE]).items())


def lookup(txn: Txn, vid: int, ids: list[bytes]) -> dict[bytes, ChunkMeta]:
    """The entries of those of ``ids`` the vault holds (one MultiGet)."""
    return {d: meta for d, meta in zip(ids, txn.chunks(vid, ids)) if meta is not None}


def apply(txn: Txn, vid: int, pairs: Iterable[tuple[bytes, int]], metas: dict[bytes, ChunkMeta] | None = None) -> None:
    """Add ``n`` to the refcount of each chunk; zero makes it deletable from now.

    ``metas``: entries already looked up in this op, if the caller has them."""
    pairs = [(d, n) for d, n in pairs if n]
    if metas is None:
        metas = lookup(txn, vid, [d for d, _ in pairs])
    for d, n in pairs:
        meta = metas.get(d)
        if meta is None:  # cannot happen while refcounts are exact; never go negative
            log.error("refcount of a missing chunk", extra={"chunk": d.hex()})
            continue
        rc = meta.refcount + n
        if rc < 0:
            log.error("refcount below zero", extra={"chunk": d.hex(), "refcount": rc})
            rc = 0
        if rc == 0:
            meta = meta._replace(refcount=0, state=DELETABLE, zero_since=txn.now)
        else:
            meta = meta._replace(refcount=rc, state=REFERENCED, zero_since=0.0)
        txn.put_chunk(vid, d, meta)


def is_large(nrefs: int) -> bool:
    return nrefs > REF_SLICE


# -- intents -------------------------------------------------------------------------


def _slice_op(iid: int, vid: int, k: int, part: Pairs, sign: int, expect: int, then: int,
              check: Callable[[Txn, Pairs, dict[bytes, ChunkMeta]], None] | None = None) -> Callable[[Txn], None]:
    """An op adding ``sign`` × the references of slice ``k``, valid only while
    the intent's progress is ``expect``; it leaves the progress at ``then``."""
    def op(txn: Txn) -> None:
        if txn.intent_progress(iid) != expect:
            raise RuntimeError(f"reference intent {iid}: slice {k} out of order")
        metas = lookup(txn, vid, [d for d, _ in part])
        if check is not None:
            check(txn, part, metas)
        apply(txn, vid, [(d, sign * n) for d, n in part], metas)
        txn.set_intent_progress(iid, then)
    return op


def acquire(index: Index, iid: int, vid: int, chunks: Sequence[bytes],
            check: Callable[[Txn, Pairs, dict[bytes, ChunkMeta]], None]) -> None:
    """Apply every slice of an open acquire intent (blocking: call from a thread).

    ``check(txn, part, metas)`` runs in each slice's op before its
    increments, with the entries of the slice's chunks the vault holds, and may raise
    (MissingChunks); the caller then undoes with :func:`settle`.
    """
    for k in range(nslices(chunks)):
        index.run_sync(_slice_op(iid, vid, k, slice_pairs(chunks, k), +1, k, k + 1, check))


def settle(index: Index, iid: int) -> str:
    """Finish an intent as if its process went on no further (blocking: call from a thread).

    An acquire is undone (its object was never written); a release is
    completed (its object is gone). Returns what was done.
    """
    intent = index.intent(iid)
    if intent is None:
        return "none"
    kind, vid, obj, done = intent
    chunks = obj.chunks
    if kind == ACQUIRE:
        for k in range(done - 1, -1, -1):
            index.run_sync(_slice_op(iid, vid, k, slice_pairs(chunks, k), -1, k + 1, k))
    else:
        for k in range(done, nslices(chunks)):
            index.run_sync(_slice_op(iid, vid, k, slice_pairs(chunks, k), -1, k, k + 1))
    index.run_sync(lambda txn: txn.close_intent(iid))
    return "undone" if kind == ACQUIRE else "released"


def settle_all(index: Index) -> int:
    """Settle every intent left by a stop in the middle (at start-up, and by fsck)."""
    ids = index.pending_intents()
    for iid in ids:
        what = settle(index, iid)
        log.info("reference intent settled", extra={"intent": iid, "action": what})
    return len(ids)


def release(txn: Txn, vid: int, old_raw: bytes | None, pending: list[int] | None = None) -> None:
    """Drop the references of an object record being replaced or deleted (in that op).

    A large record gets a release intent instead: its id goes to ``pending``
    for the caller to :func:`settle` once the op is durable, or, without
    ``pending``, a thread settles it then.
    """
    if old_raw is None:
        return
    if not is_large(ObjectMeta.header(old_raw)[2]):
        apply(txn, vid, [(d, -n) for d, n in Counter(ObjectMeta.unpack(old_raw).chunks).items()])
        return
    iid = txn.open_intent(RELEASE, vid, old_raw)
    if pending is not None:
        pending.append(iid)
    else:
        index = txn.index
        txn.after.append(lambda: threading.Thread(target=settle, args=(index, iid), daemon=True).start())


def missing_error(vault: str, key: str, missing: list[bytes]) -> E.VaultError:
    return E.MissingChunks(f"vault {vault!r}: object {key!r} references {len(missing)} "
                           "chunk(s) the vault does not hold", missing=[d.hex() for d in missing])
