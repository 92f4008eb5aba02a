"""The metadata layer: the only package that knows RocksDB.

* :mod:`.schema` — column families and key layouts;
* :mod:`.records` — the records and their encodings;
* :mod:`.ops` — typed operations on a transaction and typed reads;
* :mod:`.engine` — RocksDB and the single committer (group commit);
* :mod:`.outbox` — the replication outbox's storage;
* :mod:`.checkpoint` — reading a checkpoint of the index.

Every mutation is an op ``op(txn)`` run by the one committer; see
:mod:`.engine`.
"""

from .engine import Index, IndexRecorder, Txn
from .records import (DELETABLE, PENDING, REFERENCED, STATE_NAMES, BucketRec, ChunkIds, ChunkMeta, KeyRec,
                      ObjectMeta, SegMeta, UploadRec, Usage, VaultRec, jdump)

__all__ = ["Index", "IndexRecorder", "Txn", "DELETABLE", "PENDING", "REFERENCED", "STATE_NAMES", "BucketRec",
           "ChunkIds", "ChunkMeta", "KeyRec", "ObjectMeta", "SegMeta", "UploadRec", "Usage", "VaultRec", "jdump"]
