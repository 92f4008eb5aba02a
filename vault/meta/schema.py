"""Column families and key layouts: the only place that spells either.

Keys are big-endian so iteration follows id order:

``vaults``     name utf-8 → :class:`VaultRec` (JSON)
``keys``       key id → :class:`KeyRec` (JSON)
``chunks``     vid(8) + sha256(32) → :class:`ChunkMeta` (bloom filter: most lookups miss)
``objects``    vid(8) + key utf-8 → :class:`ObjectMeta`
``usage``      vid(8) → :class:`Usage`
``usage_hist`` YYYY-MM-DD + vid(8) → JSON snapshot (billing history)
``segments``   seg id(4) → :class:`SegMeta`
``outbox``     replication queue (layout in :mod:`vault.meta.outbox`)
``meta``       counters, markers, intents, S3 buckets and uploads, alerts, the audit log
               (the prefixes below; layouts in :mod:`vault.meta.alerts`, :mod:`vault.meta.audit`)

Every key that starts with a vault's internal id (8 bytes, never reused)
is unreachable once the vault is gone; GC removes it in bounded passes.
"""

from __future__ import annotations

VAULTS, KEYS, CHUNKS, OBJECTS = "vaults", "keys", "chunks", "objects"
USAGE, USAGE_HIST, SEGMENTS, OUTBOX, META = "usage", "usage_hist", "segments", "outbox", "meta"
CFS = (VAULTS, KEYS, CHUNKS, OBJECTS, USAGE, USAGE_HIST, SEGMENTS, OUTBOX, META)

# Prefixes of the ``meta`` column family.
COUNTER = b"counter:"
DEAD_VAULT = b"dead_vault:"       # + vid(8) → {"name", "at"}
INTENT = b"refs_intent:"          # + iid(8) → kind(1) + vid(8) + packed ObjectMeta
INTENT_DONE = b"/done"            # intent key + this → slices applied (4)
QUARANTINE = b"quarantine:"       # + vid(8) + sha256 → JSON (scrub)
SCRUB_LAST_PASS = b"scrub:last_pass"
SCRUB_EPOCH = b"scrub:epoch"
RESTORING = b"restore:"           # + vault name → {"from", "at"}
REPL_STATS = b"repl:"             # + tid(8) → (entries, bytes, delayed)
REPL_SEEDED = b"repl_seeded:"     # + tid(8) → fingerprint of the seeded configuration
REPL_CHECKPOINT = b"repl_checkpoint:"  # + tid(8) → time of the last checkpoint
REPL_PREFIXES = (REPL_STATS, REPL_SEEDED, REPL_CHECKPOINT)
BUCKET = b"s3bucket:"             # + bucket name → BucketRec (JSON)
UPLOAD = b"s3upload:"             # + vid(8) + bucket + 0 + key + 0 + upload id → UploadRec (JSON)
ALERT_OPEN = b"alert:"            # + kind + 0 + subject → AlertRec (JSON): the open alerts
ALERT_HIST = b"alert_hist:"       # + seq(8) → AlertRec (JSON): openings and resolutions, oldest first
ALERT_QUEUE = b"alert_q:"         # + webhook id(8) + seq(8) → the delivery's JSON document
LAST_WRITE = b"last_write:"       # + vid(8) → time of the vault's last object put (float, 8)
AUDIT = b"audit:"                 # + seq(8) → AuditRec (JSON): the audit log, oldest first
LOCK_EPOCH = b"s3lock_epoch:"     # + vid(8) → ops that set an S3 Object Lock in the vault (8)

VID_BYTES = 8


def vid_bytes(vid: int) -> bytes:
    return vid.to_bytes(VID_BYTES, "big")


def vid_of(key: bytes) -> int:
    """The vault id a chunk, object or usage key starts with."""
    return int.from_bytes(key[:VID_BYTES], "big")


def chunk_key(vid: int, digest: bytes) -> bytes:
    return vid_bytes(vid) + digest


def chunk_digest(key: bytes) -> bytes:
    return key[VID_BYTES:]


def object_key(vid: int, name: str) -> bytes:
    return vid_bytes(vid) + name.encode()


def object_name(key: bytes) -> str:
    return key[VID_BYTES:].decode()


def seg_key(seg_id: int) -> bytes:
    return seg_id.to_bytes(4, "big")


def seg_id_of(key: bytes) -> int:
    return int.from_bytes(key, "big")


def usage_hist_key(day: str, vid: int) -> bytes:
    return day.encode() + vid_bytes(vid)


def usage_hist_day(key: bytes) -> bytes:
    """The ``YYYY-MM-DD`` a history key starts with (compares as bytes)."""
    return key[:10]


def counter_key(name: str) -> bytes:
    return COUNTER + name.encode()


def dead_vault_key(vid: int) -> bytes:
    return DEAD_VAULT + vid_bytes(vid)


def intent_key(iid: int) -> bytes:
    return INTENT + iid.to_bytes(8, "big")


def intent_id(key: bytes) -> int:
    return int.from_bytes(key[len(INTENT):len(INTENT) + 8], "big")


def quarantine_key(vid: int, digest: bytes) -> bytes:
    return QUARANTINE + vid_bytes(vid) + digest


def quarantine_chunk(key: bytes) -> tuple[int, bytes]:
    """``(vid, digest)`` of a quarantine key."""
    rest = key[len(QUARANTINE):]
    return vid_of(rest), rest[VID_BYTES:]


def bucket_key(name: str) -> bytes:
    return BUCKET + name.encode()


def uploads_prefix(vid: int, bucket: str, key: str | None = None) -> bytes:
    """The upload keys of a bucket (of one object key, when given), in key order."""
    prefix = UPLOAD + vid_bytes(vid) + bucket.encode() + b"\0"
    return prefix if key is None else prefix + key.encode() + b"\0"


def upload_key(vid: int, bucket: str, key: str, upload_id: str) -> bytes:
    return uploads_prefix(vid, bucket, key) + upload_id.encode()


def restoring_key(vault: str) -> bytes:
    return RESTORING + vault.encode()
