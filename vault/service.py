"""The vault service: what handlers call. Tenants, keys, chunks, objects.

Handlers parse and authenticate; everything that touches the disk or the
index happens here, through :class:`vault.store.Store` and the single
committer of :class:`vault.index.Index`. Errors are :mod:`vault.errors`.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import os
import secrets
import threading
import time
from collections import Counter
from dataclasses import dataclass
from datetime import datetime, timezone
from collections.abc import Sequence
from typing import Any, AsyncIterator, Awaitable, Callable

from . import errors as E
from . import refs
from .config import Config
from .events import ChunkPut, Event, KeyChanged, ObjectDeleted, ObjectPut, VaultDeleted, VaultPut
from .index import (PENDING, ChunkMeta, Index, ObjectMeta, SegMeta, Txn,
                    Usage, jdump, seg_key, vid_bytes)
from .names import vault_name
from .store import Location, Store, block_sums

log = logging.getLogger("objvault")
audit = logging.getLogger("objvault.audit")

ROLES = ("read", "append", "full")
_RANK = {r: i for i, r in enumerate(ROLES)}
KEY_PREFIX = "ovk_"
MAX_OBJECT_CHUNKS = 1_000_000
MAX_META_BYTES = 64 * 1024
RESTIC_PREFIX = "restic/"
# Bodies up to this size are hashed on the event loop: a thread hop costs
# more than hashing 64 KiB with SHA-NI.
INLINE_HASH_BYTES = 64 * 1024
MISSING_THREADS = max(1, min(4, os.cpu_count() or 1))


def iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")


_SHA256 = hashlib.sha256()


def _sha(secret: str) -> bytes:
    h = _SHA256.copy()  # copying a template skips OpenSSL's per-call algorithm lookup
    h.update(secret.encode("utf-8", "surrogatepass"))  # short: hashed without releasing the GIL
    return h.digest()


@dataclass(frozen=True)
class Principal:
    """Who is calling: the operator (admin) or one key of one vault."""

    admin: bool
    vault: str = ""
    vid: int = 0
    role: str = ""
    key_id: str = ""

    @property
    def who(self) -> str:
        return "admin" if self.admin else f"key:{self.key_id}"


@dataclass
class VaultRec:
    name: str
    vid: int
    created: float
    quota_bytes: int | None = None
    append_only: bool = False
    retention_days: int = 0

    @classmethod
    def load(cls, raw: bytes) -> "VaultRec":
        d = json.loads(raw)
        return cls(d["name"], d["vid"], d["created"], d.get("quota_bytes"), d.get("append_only", False),
                   d.get("retention_days", 0))

    def dump(self) -> bytes:
        return jdump({"name": self.name, "vid": self.vid, "created": self.created, "quota_bytes": self.quota_bytes,
                      "append_only": self.append_only, "retention_days": self.retention_days})

    def public(self, usage: Usage) -> dict:
        return {"name": self.name, "created": iso(self.created), "quota_bytes": self.quota_bytes,
                "append_only": self.append_only, "retention_days": self.retention_days,
                "usage": usage.as_dict()}


class Recorder:
    """Measurements from the service; :mod:`vault.metrics` subclasses it."""

    def chunk_written(self, nbytes: int) -> None: ...
    def chunk_deduplicated(self, nbytes: int) -> None: ...
    def bytes_out(self, nbytes: int) -> None: ...
    def corrupt_chunk(self) -> None: ...


def _validate_vault_fields(body: dict, creating: bool) -> dict:
    allowed = {"name", "quota_bytes", "append_only", "retention_days"} if creating else \
        {"quota_bytes", "append_only", "retention_days"}
    unknown = set(body) - allowed
    if unknown:
        raise E.BadRequest(f"unknown field(s): {', '.join(sorted(unknown))}")
    out = {}
    if "quota_bytes" in body:
        q = body["quota_bytes"]
        if q is not None and (not isinstance(q, int) or isinstance(q, bool) or q < 0 or q >= 1 << 62):
            raise E.BadRequest("quota_bytes must be null or a non-negative integer")
        out["quota_bytes"] = q
    if "append_only" in body:
        if not isinstance(body["append_only"], bool):
            raise E.BadRequest("append_only must be true or false")
        out["append_only"] = body["append_only"]
    if "retention_days" in body:
        r = body["retention_days"]
        if not isinstance(r, int) or isinstance(r, bool) or not 0 <= r <= 36500:
            raise E.BadRequest("retention_days must be an integer from 0 to 36500")
        out["retention_days"] = r
    return out


class VaultService:
    def __init__(self, config: Config, index: Index, store: Store, recorder: Recorder | None = None,
                 corruption_handler: Callable[[VaultRec, bytes, ChunkMeta], Awaitable[bool]] | None = None
                 ) -> None:
        self.config = config
        self.index = index
        self.store = store
        self.recorder = recorder or Recorder()
        self.admin_hash = _sha(config.admin_token) if config.admin_token else None
        # Repairs a chunk whose bytes fail their checksums on a read; True once repaired.
        self.corruption_handler = corruption_handler
        # Read-through caches of the vaults and keys column families. Every
        # op that changes either clears them after its batch is durable and
        # before its caller is answered, so a revoked key fails on the next
        # request. Secrets are still compared (constant time) on every call.
        self._vaults: dict[str, VaultRec] = {}
        self._keys: dict[str, dict] = {}
        # Quota bytes held per vault id by uploads in flight (event loop only).
        self._reserved: dict[int, int] = {}

    def invalidate_caches_on(self, txn: Txn, event: Event) -> None:
        """The index's event hook that keeps the vault and key caches true."""
        if isinstance(event, (VaultPut, VaultDeleted, KeyChanged)):
            txn.after.append(self._clear_caches)

    def _clear_caches(self) -> None:
        self._vaults.clear()
        self._keys.clear()

    # -- auth ------------------------------------------------------------------

    def authenticate(self, secret: str | None) -> Principal:
        """Map a presented secret to a principal; raise Unauthorized otherwise."""
        if not secret:
            raise E.Unauthorized("credentials required")
        digest = _sha(secret)
        if self.admin_hash is not None and hmac.compare_digest(digest, self.admin_hash):
            return Principal(admin=True)
        if secret.startswith(KEY_PREFIX):
            key_id = secret[len(KEY_PREFIX):].split("_", 1)[0]
            rec = self._keys.get(key_id)
            if rec is None and key_id.isalnum():
                raw = self.index.get("keys", key_id.encode())
                if raw is not None:
                    rec = json.loads(raw)
                    rec["hash"] = bytes.fromhex(rec["hash"])
                    if len(self._keys) < 100_000:
                        self._keys[key_id] = rec
            if rec is not None and hmac.compare_digest(digest, rec["hash"]):
                return Principal(False, rec["vault"], rec["vid"], rec["role"], key_id)
        raise E.Unauthorized("invalid credentials")

    def vault_for(self, who: Principal, name: str, role: str = "read") -> VaultRec:
        """The vault ``name`` if ``who`` may act on it with ``role``.

        A key of another vault gets exactly what a missing vault gets (404),
        so keys cannot probe for other tenants.
        """
        rec = self.get_vault(name)
        if who.admin:
            return rec
        if who.vault != name or who.vid != rec.vid:
            raise E.NoSuchVault(f"no such vault {name!r}")
        if _RANK[who.role] < _RANK[role]:
            raise E.Forbidden(f"vault {name!r}: key {who.key_id} has role {who.role!r}, this needs {role!r}")
        return rec

    # -- vaults ----------------------------------------------------------------

    def get_vault(self, name: str) -> VaultRec:
        rec = self._vaults.get(name)
        if rec is None:
            raw = self.index.get("vaults", name.encode())
            if raw is None:
                raise E.NoSuchVault(f"no such vault {name!r}")
            rec = VaultRec.load(raw)
            if len(self._vaults) < 100_000:
                self._vaults[name] = rec
        return rec

    def usage(self, vid: int) -> Usage:
        return Usage.unpack(self.index.get("usage", vid_bytes(vid)))

    def vault_json(self, rec: VaultRec) -> dict:
        return rec.public(self.usage(rec.vid))

    def list_vaults(self) -> list[VaultRec]:
        return [VaultRec.load(v) for _, v in self.index.iter_prefix("vaults", b"")]

    async def create_vault(self, body: dict, who: Principal) -> VaultRec:
        name = body.get("name")
        if not isinstance(name, str):
            raise E.BadName("vault name is required")
        vault_name(name)
        fields = _validate_vault_fields(body, creating=True)

        def op(txn: Txn) -> VaultRec:
            if txn.get("vaults", name.encode()) is not None:
                raise E.VaultExists(f"vault {name!r} already exists")
            rec = VaultRec(name, txn.counter("vid"), txn.now, **fields)
            txn.put("vaults", name.encode(), rec.dump())
            txn.emit(VaultPut(rec))
            return rec

        rec = await self.index.run(op)
        audit.info("vault created", extra={"who": who.who, "vault": name, "fields": fields})
        return rec

    async def update_vault(self, name: str, body: dict, who: Principal) -> VaultRec:
        fields = _validate_vault_fields(body, creating=False)

        def op(txn: Txn) -> tuple[VaultRec, dict]:
            raw = txn.get("vaults", name.encode())
            if raw is None:
                raise E.NoSuchVault(f"no such vault {name!r}")
            rec = VaultRec.load(raw)
            before = {k: getattr(rec, k) for k in fields}
            for k, v in fields.items():
                setattr(rec, k, v)
            txn.put("vaults", name.encode(), rec.dump())
            txn.emit(VaultPut(rec))
            return rec, before

        rec, before = await self.index.run(op)
        weakened = (before.get("append_only") is True and rec.append_only is False) or \
            ("retention_days" in before and rec.retention_days < before["retention_days"])
        audit.warning("vault lock weakened" if weakened else "vault updated",
                      extra={"who": who.who, "vault": name, "before": before,
                             "after": {k: getattr(rec, k) for k in fields}})
        return rec

    async def delete_vault(self, name: str, who: Principal) -> None:
        """Remove the vault, its keys and objects; its chunks go to GC (no longer indexed by name)."""

        def op(txn: Txn) -> VaultRec:
            raw = txn.get("vaults", name.encode())
            if raw is None:
                raise E.NoSuchVault(f"no such vault {name!r}")
            rec = VaultRec.load(raw)
            if rec.append_only or rec.retention_days > 0:
                raise E.VaultLocked(f"vault {name!r} is append-only or under retention")
            txn.delete("vaults", name.encode())
            for k, v in txn.items("keys", b""):
                if json.loads(v)["vid"] == rec.vid:
                    txn.delete("keys", k)
            # The vault's objects, chunks and usage are keyed by its internal id,
            # which is never reused: GC removes them in bounded passes.
            txn.put("meta", b"dead_vault:" + vid_bytes(rec.vid), jdump({"name": name, "at": txn.now}))
            txn.emit(VaultDeleted(rec))
            return rec

        await self.index.run(op)
        audit.warning("vault deleted", extra={"who": who.who, "vault": name})

    # -- keys ------------------------------------------------------------------

    async def create_key(self, name: str, role: Any, label: Any, who: Principal) -> dict:
        if role not in ROLES:
            raise E.BadRequest(f"role must be one of {', '.join(ROLES)}", )
        if label is not None and (not isinstance(label, str) or len(label) > 256):
            raise E.BadRequest("label must be a string of at most 256 characters")
        key_id = secrets.token_hex(8)
        secret = f"{KEY_PREFIX}{key_id}_{secrets.token_urlsafe(32)}"

        def op(txn: Txn) -> dict:
            raw = txn.get("vaults", name.encode())
            if raw is None:
                raise E.NoSuchVault(f"no such vault {name!r}")
            rec = VaultRec.load(raw)
            doc = {"id": key_id, "vault": name, "vid": rec.vid, "role": role, "label": label or "",
                   "created": iso(txn.now), "hash": _sha(secret).hex()}
            txn.put("keys", key_id.encode(), jdump(doc))
            txn.emit(KeyChanged(name))
            return doc

        doc = await self.index.run(op)
        audit.info("key created", extra={"who": who.who, "vault": name, "key": key_id, "role": role})
        return {"id": key_id, "secret": secret, "role": role, "label": doc["label"], "created": doc["created"]}

    def list_keys(self, rec: VaultRec) -> list[dict]:
        out = []
        for _, v in self.index.iter_prefix("keys", b""):
            d = json.loads(v)
            if d["vid"] == rec.vid:
                out.append({"id": d["id"], "role": d["role"], "label": d["label"], "created": d["created"]})
        return sorted(out, key=lambda d: (d["created"], d["id"]))

    async def revoke_key(self, name: str, key_id: str, who: Principal) -> None:
        def op(txn: Txn) -> None:
            raw = txn.get("keys", key_id.encode()) if key_id.isalnum() else None
            if raw is None or json.loads(raw)["vault"] != name:
                raise E.NoSuchKey(f"vault {name!r}: no such key {key_id!r}")
            txn.delete("keys", key_id.encode())
            txn.emit(KeyChanged(name))

        await self.index.run(op)
        audit.info("key revoked", extra={"who": who.who, "vault": name, "key": key_id})

    # -- chunks ----------------------------------------------------------------

    def chunk_meta(self, rec: VaultRec, digest: bytes) -> ChunkMeta | None:
        raw = self.index.get("chunks", vid_bytes(rec.vid) + digest)
        return ChunkMeta.unpack(raw) if raw is not None else None

    async def put_chunk(self, rec: VaultRec, digest: bytes, length: int,
                        read: Callable[[int], Awaitable[bytes]],
                        pieces: Callable[[], AsyncIterator[bytes]], splice=None) -> bool:
        """Store a chunk whose body is ``length`` bytes; return True if it already existed.

        ``read(n)`` returns exactly n body bytes (raises Truncated); ``pieces()``
        yields the body incrementally (for large chunks). Nothing is indexed
        unless the SHA-256 of the body equals ``digest``; 201/200 happen only
        after the bytes and the index entry are durable.
        """
        hexid = digest.hex()
        if length > self.config.max_chunk_bytes:
            raise E.TooLarge(f"vault {rec.name!r}: chunk {hexid} is {length} bytes, the limit is "
                             f"{self.config.max_chunk_bytes}")
        existing = self.chunk_meta(rec, digest)
        held = self._reserve(rec, length) if existing is None else 0
        try:
            return await self._put_chunk(rec, digest, length, existing, read, pieces, splice)
        finally:
            self._release(rec.vid, held)

    def _reserve(self, rec: VaultRec, length: int) -> int:
        """Hold ``length`` bytes of the vault's quota for a body about to be stored; returns what was held.

        Checked against the stored bytes plus what other uploads in flight
        hold, so concurrent uploads can never pass the quota together and a
        refused upload is refused before its body is read. Raises
        QuotaExceeded. Release with :meth:`_release` once the upload is
        indexed or has failed.
        """
        if rec.quota_bytes is None or length <= 0:
            return 0
        held = self._reserved.get(rec.vid, 0)
        stored = self.usage(rec.vid).stored_bytes
        if stored + held + length > rec.quota_bytes:
            raise E.QuotaExceeded(
                f"vault {rec.name!r}: storing {length} bytes would exceed the quota of {rec.quota_bytes} bytes "
                f"({stored} used, {held} held by uploads in progress)")
        self._reserved[rec.vid] = held + length
        return length

    def _release(self, vid: int, held: int) -> None:
        if held:
            left = self._reserved[vid] - held
            if left:
                self._reserved[vid] = left
            else:
                del self._reserved[vid]

    async def _put_chunk(self, rec: VaultRec, digest: bytes, length: int, existing: ChunkMeta | None,
                         read: Callable[[int], Awaitable[bytes]],
                         pieces: Callable[[], AsyncIterator[bytes]], splice=None) -> bool:
        hexid = digest.hex()
        loop = asyncio.get_running_loop()
        if existing is not None and length > self.config.stream_threshold_bytes:
            # A large chunk we already hold: verify the body as it streams,
            # store nothing. A body of another length cannot hash to the id.
            await self._verify_stream(rec, digest, length, pieces)
            if existing.length == length and await self.index.run(lambda txn: _touch(txn, rec, digest)):
                self.recorder.chunk_deduplicated(length)
                return True
            raise E.Conflict(f"vault {rec.name!r}: chunk {hexid} was collected during the upload; retry")
        if existing is not None or length <= self.config.stream_threshold_bytes:
            body = await read(length)
            # One pass over the body: SHA-256 (the address) and the xxh3 block
            # sums stored with the record; off the loop for large bodies.
            if length <= INLINE_HASH_BYTES:
                ok, sums = _digest_and_sums(body, digest)
            else:
                ok, sums = await loop.run_in_executor(None, _digest_and_sums, body, digest)
            if not ok:
                raise E.DigestMismatch(f"vault {rec.name!r}: body does not hash to chunk id {hexid}")
            if existing is not None and existing.length == length:
                if await self.index.run(lambda txn: _touch(txn, rec, digest)):
                    self.recorder.chunk_deduplicated(length)
                    return True
            dir_idx = self.store.pick_dir()
            fut = loop.create_future()

            def durable(loc: Location | None, exc: Exception | None) -> None:
                # Runs on the segment syncer thread: hand the index entry
                # straight to the committer, without a trip through the loop.
                if exc is not None:
                    loop.call_soon_threadsafe(_fail_future, fut, exc)
                else:
                    self.index.enqueue(lambda txn: _insert_chunk(txn, rec, digest, length, loc), fut, loop)

            self.store.append(dir_idx, rec.vid, digest, body, sums, durable)
            existed = await fut
        else:
            loc = await self._stream_chunk(rec, digest, length, pieces, splice)
            try:
                existed = await self.index.run(lambda txn: _insert_chunk(txn, rec, digest, length, loc))
            except (E.QuotaExceeded, E.NoSuchVault):
                # The index refused the record (the quota was lowered or the
                # vault deleted meanwhile): its segment, of its own, holds
                # nothing anyone knows of. (After any other failure the index
                # state is unknown; the next start removes files it never recorded.)
                await loop.run_in_executor(None, self.store.forget_segment, loc.seg_id)
                raise
        if existed:
            self.recorder.chunk_deduplicated(length)
        else:
            self.recorder.chunk_written(length)
        return existed

    async def put_chunks(self, rec: VaultRec, chunks: list[tuple[bytes, memoryview]]) -> list[bool]:
        """Store many small chunks at once; returns, per chunk, whether it already existed.

        All or nothing: every body is verified before anything is written, and
        all new chunks are indexed in one committer op (which also enforces
        the quota for the batch as a whole). Answers only once all of them are
        durable. Duplicate ids within the batch are stored once.
        """
        loop = asyncio.get_running_loop()
        total = sum(len(b) for _, b in chunks)

        def verify(on_loop: bool) -> list[bytes] | int:
            sums = []
            for i, (digest, body) in enumerate(chunks):
                ok, s = _digest_and_sums(body, digest, on_loop)
                if not ok:
                    return i
                sums.append(s)
            return sums

        sums = verify(True) if total <= INLINE_HASH_BYTES else await loop.run_in_executor(None, verify, False)
        if isinstance(sums, int):
            raise E.DigestMismatch(f"vault {rec.name!r}: chunk {sums} of the batch does not hash to its id "
                                   f"{chunks[sums][0].hex()}; nothing was stored")
        prefix = vid_bytes(rec.vid)
        found = self.index.cf["chunks"].get([prefix + d for d, _ in chunks])
        new: dict[bytes, int] = {}
        for i, ((digest, body), raw) in enumerate(zip(chunks, found)):
            if raw is None and digest not in new:
                new[digest] = i
        held = self._reserve(rec, sum(len(chunks[i][1]) for i in new.values()))
        try:
            existed_now = await self._put_new(rec, chunks, found, new, sums)
        finally:
            self._release(rec.vid, held)
        out = []
        seen: set[bytes] = set()
        for digest, body in chunks:
            ex = digest in existed_now or digest in seen or digest not in new
            seen.add(digest)
            out.append(ex)
            if ex:
                self.recorder.chunk_deduplicated(len(body))
            else:
                self.recorder.chunk_written(len(body))
        return out

    async def _put_new(self, rec: VaultRec, chunks: list[tuple[bytes, memoryview]], found: list,
                       new: dict[bytes, int], sums: list[bytes]) -> set[bytes]:
        """Append the ``new`` chunks of a verified batch and index the batch in one op."""
        loop = asyncio.get_running_loop()
        old = [d for (d, _), raw in zip(chunks, found) if raw is not None]
        fut = loop.create_future()
        if new:
            dir_idx = self.store.pick_dir()
            locs: dict[bytes, Location] = {}
            lock = threading.Lock()
            state = {"left": len(new), "error": None}

            def durable(digest: bytes, loc: Location | None, exc: Exception | None) -> None:
                with lock:
                    if exc is not None and state["error"] is None:
                        state["error"] = exc
                    if loc is not None:
                        locs[digest] = loc
                    state["left"] -= 1
                    last = state["left"] == 0
                if not last:
                    return
                if state["error"] is not None:
                    loop.call_soon_threadsafe(_fail_future, fut, state["error"])
                else:
                    entries = [(d, len(chunks[i][1]), locs[d]) for d, i in new.items()]
                    self.index.enqueue(lambda txn: _insert_batch(txn, rec, entries, old), fut, loop)

            for digest, i in new.items():
                self.store.append(dir_idx, rec.vid, digest, chunks[i][1], sums[i],
                                  lambda loc, exc, d=digest: durable(d, loc, exc))
        else:
            self.index.enqueue(lambda txn: _insert_batch(txn, rec, [], old), fut, loop)
        return await fut

    async def _drain_body(self, rec: VaultRec, digest: bytes, length: int,
                          pieces: Callable[[], AsyncIterator[bytes]], sink: Callable[[list[bytes]], None]) -> None:
        """Feed a streamed body to ``sink`` in a thread, about 1 MiB at a time, while
        the next MiB is read from the socket (one call in flight, in order).

        Raises Truncated / BadRequest when the body is not ``length`` bytes.
        """
        loop = asyncio.get_running_loop()
        got = 0
        pending: list[bytes] = []
        pending_len = 0
        inflight: asyncio.Future | None = None
        try:
            async for piece in pieces():
                got += len(piece)
                if got > length:
                    raise E.BadRequest("body longer than Content-Length")
                pending.append(piece)
                pending_len += len(piece)
                if pending_len >= 1 << 20:
                    if inflight is not None:
                        await inflight
                    inflight = loop.run_in_executor(None, sink, pending)
                    pending, pending_len = [], 0
            if inflight is not None:
                await inflight
                inflight = None
            if got != length:
                raise E.Truncated(f"vault {rec.name!r}: chunk {digest.hex()}: got {got} of {length} bytes")
            if pending:
                await loop.run_in_executor(None, sink, pending)
        finally:
            if inflight is not None:  # never leave a write running behind an error
                await asyncio.gather(inflight, return_exceptions=True)

    async def _verify_stream(self, rec: VaultRec, digest: bytes, length: int,
                             pieces: Callable[[], AsyncIterator[bytes]]) -> None:
        """Hash a streamed body without keeping it; DigestMismatch/Truncated if it is wrong."""
        h = _SHA256.copy()

        def update(parts: list[bytes]) -> None:
            for p in parts:
                h.update(p)

        await self._drain_body(rec, digest, length, pieces, update)
        if h.digest() != digest:
            raise E.DigestMismatch(f"vault {rec.name!r}: body does not hash to chunk id {digest.hex()}")

    async def _stream_chunk(self, rec: VaultRec, digest: bytes, length: int,
                            pieces: Callable[[], AsyncIterator[bytes]], splice=None) -> Location:
        """A large chunk into a segment of its own: through ``splice`` (the
        socket straight into the file, see :class:`vault.http.BodySplice`)
        when the caller offers it, else piece by piece from ``pieces``."""
        loop = asyncio.get_running_loop()
        dir_idx = self.store.pick_dir()
        w = await loop.run_in_executor(None, self.store.stream, dir_idx, rec.vid, digest, length)
        h = _SHA256.copy()

        def write(parts: list[bytes]) -> None:
            for p in parts:
                h.update(p)
            w.write_parts(parts)

        try:
            if splice is None or not await splice.into(w.fileno, w.position, length, lambda k: w.absorb(k, h)):
                await self._drain_body(rec, digest, length, pieces, write)
            if h.digest() != digest:
                raise E.DigestMismatch(f"vault {rec.name!r}: body does not hash to chunk id {digest.hex()}")
            return await loop.run_in_executor(None, w.commit)
        except BaseException:
            await loop.run_in_executor(None, w.abort)
            raise

    async def get_chunk(self, rec: VaultRec, digest: bytes, start: int = 0, end: int | None = None,
                        meta: ChunkMeta | None = None) -> bytes:
        """Bytes ``[start, end)`` of a chunk, every block verified (``meta``: a fresh lookup, if the caller has one)."""
        meta = meta or self.chunk_meta(rec, digest)
        if meta is None:
            raise E.NoSuchChunk(f"vault {rec.name!r}: no such chunk {digest.hex()}")
        end = meta.length if end is None else end
        loop = asyncio.get_running_loop()
        what = f"vault {rec.name!r} chunk {digest.hex()}"
        try:
            # Served from the page cache without leaving the loop when it can be
            # (RWF_NOWAIT); only a read that would wait for the disk takes a thread.
            data = self.store.read(meta.seg_id, meta.offset, meta.length, start, end, what, nowait=True)
            if data is None:
                data = await loop.run_in_executor(None, self.store.read, meta.seg_id, meta.offset,
                                                  meta.length, start, end, what)
        except E.ChunkCorrupt:
            # Compaction may have moved (or GC deleted) the chunk between the
            # lookup and the read: look again before calling it damaged.
            fresh = self.chunk_meta(rec, digest)
            if fresh is None:
                raise E.NoSuchChunk(f"vault {rec.name!r}: no such chunk {digest.hex()}") from None
            if (fresh.seg_id, fresh.offset) != (meta.seg_id, meta.offset):
                return await self.get_chunk(rec, digest, start, end, meta=fresh)
            self.recorder.corrupt_chunk()
            log.error("corrupt chunk", extra={"vault": rec.name, "chunk": digest.hex()})
            if self.corruption_handler is not None and await self.corruption_handler(rec, digest, meta):
                return await self.get_chunk(rec, digest, start, end)
            raise
        self.recorder.bytes_out(len(data))
        return data

    async def missing(self, rec: VaultRec, digests: list[bytes]) -> list[bytes]:
        prefix = vid_bytes(rec.vid)
        cf = self.index.cf["chunks"]

        def check(part: list[bytes]) -> list[bytes]:
            out = []
            for i in range(0, len(part), 65536):  # keys made a slice at a time: bounded memory
                piece = part[i:i + 65536]
                found = cf.get([prefix + d for d in piece])
                out += [d for d, v in zip(piece, found) if v is None]
            return out

        if len(digests) <= 64:
            return check(digests)
        # RocksDB's MultiGet runs without the GIL: large lists are split
        # over threads, so a 10 000-id call uses every core.
        loop = asyncio.get_running_loop()
        n = min(MISSING_THREADS, -(-len(digests) // 2048))
        step = -(-len(digests) // n)
        parts = await asyncio.gather(*(loop.run_in_executor(None, check, digests[i:i + step])
                                       for i in range(0, len(digests), step)))
        return [d for part in parts for d in part]

    # -- objects ---------------------------------------------------------------

    async def put_object(self, rec: VaultRec, key: str, chunks: Sequence[bytes], meta: bytes,
                         role: str, if_none_match: bool, restic: bool = False) -> ObjectMeta:
        """Write the object ``key`` of ``chunks``; raises MissingChunks,
        PreconditionFailed, Forbidden, AppendOnly, RetentionLocked, ReservedKey.

        Keys under ``restic/`` are restic's files, whose names promise that
        their bytes hash to them: only the restic layer (``restic=True``),
        which verifies that promise, may write them.
        """
        if key.startswith(RESTIC_PREFIX) and not restic:
            raise E.ReservedKey(f"vault {rec.name!r}: keys under {RESTIC_PREFIX!r} are written only through "
                                f"the restic backend (/restic/{rec.name}/)")
        if refs.is_large(len(chunks)):
            # Shielded: once references are being counted, the sequence
            # finishes (or is undone) even if the client goes away.
            return await asyncio.shield(asyncio.ensure_future(
                self._put_large_object(rec, key, chunks, meta, role, if_none_match)))
        okey = vid_bytes(rec.vid) + key.encode()
        released: list[int] = []

        def op(txn: Txn) -> ObjectMeta:
            vrec = _live_vault(txn, rec)
            old_raw = txn.get("objects", okey)
            _may_overwrite(vrec, key, old_raw, role, if_none_match, txn.now)
            return write_object(txn, rec, key, chunks, meta, txn.now, old_raw, released=released)

        obj = await self.index.run(op)
        await self._settle(released)
        return obj

    async def _settle(self, intents: list[int]) -> None:
        loop = asyncio.get_running_loop()
        for iid in intents:
            await loop.run_in_executor(None, refs.settle, self.index, iid)

    async def _put_large_object(self, rec: VaultRec, key: str, chunks: Sequence[bytes], meta: bytes,
                                role: str, if_none_match: bool) -> ObjectMeta:
        """:meth:`put_object` for an object of more than :data:`vault.refs.REF_SLICE`
        references: counted in slices under an acquire intent, then the
        object written in one op (see :mod:`vault.refs`)."""
        loop = asyncio.get_running_loop()
        okey = vid_bytes(rec.vid) + key.encode()
        missing: dict[bytes, None] = {}
        for i in range(0, len(chunks), 65536):  # ids made a slice at a time: bounded memory
            missing.update(dict.fromkeys(await self.missing(rec, list(dict.fromkeys(chunks[i:i + 65536])))))
        if missing:
            raise refs.missing_error(rec.name, key, list(missing))
        # Refuse now what the final op would refuse, before any counting.
        vrec = self.get_vault(rec.name)
        if vrec.vid != rec.vid:
            raise E.NoSuchVault(f"no such vault {rec.name!r}")
        _may_overwrite(vrec, key, self.index.get("objects", okey), role, if_none_match, time.time())
        payload = [await loop.run_in_executor(None, ObjectMeta(0.0, 0, chunks, b"").pack)]
        iid = await self.index.run(lambda txn: refs.open_intent(txn, refs.ACQUIRE, _live_vault(txn, rec).vid,
                                                                 payload[0]))
        payload.clear()  # 32 MB for a million references: not kept while the slices run
        size = [0]

        def check(txn: Txn, part: refs.Pairs, metas: dict[bytes, ChunkMeta]) -> None:
            _live_vault(txn, rec)
            absent = [d for d, _ in part if d not in metas]
            if absent:
                raise refs.missing_error(rec.name, key, absent)
            size[0] += sum(metas[d].length * n for d, n in part)

        released: list[int] = []

        def final(txn: Txn) -> ObjectMeta:
            vrec = _live_vault(txn, rec)
            old_raw = txn.get("objects", okey)
            _may_overwrite(vrec, key, old_raw, role, if_none_match, txn.now)
            obj = ObjectMeta(txn.now, size[0], chunks, meta)
            txn.put("objects", okey, obj.pack())
            old_size = ObjectMeta.header(old_raw)[1] if old_raw is not None else 0
            _add_usage(txn, rec.vid, logical=obj.size - old_size, objects=0 if old_raw is not None else 1)
            txn.emit(ObjectPut(rec, key, obj))
            refs.close_intent(txn, iid)
            refs.release(txn, rec.vid, old_raw, released)
            return obj

        try:
            await loop.run_in_executor(None, refs.acquire, self.index, iid, rec.vid, chunks, check)
            obj = await self.index.run(final)
        except BaseException:
            await loop.run_in_executor(None, refs.settle, self.index, iid)
            raise
        await self._settle(released)
        return obj

    def get_object(self, rec: VaultRec, key: str) -> ObjectMeta:
        raw = self.index.get("objects", vid_bytes(rec.vid) + key.encode())
        if raw is None:
            raise E.NoSuchObject(f"vault {rec.name!r}: no such object {key!r}")
        return ObjectMeta.unpack(raw)

    async def delete_object(self, rec: VaultRec, key: str, ephemeral: bool = False) -> None:
        """Delete the object ``key``; raise NoSuchObject, AppendOnly or RetentionLocked.

        ``ephemeral`` marks an object that is not backup data (a restic lock
        file): neither append-only nor retention holds it, because a lock
        that cannot be removed would block its repository for good.
        """
        okey = vid_bytes(rec.vid) + key.encode()

        def op(txn: Txn) -> None:
            vrec = _live_vault(txn, rec)
            raw = txn.get("objects", okey)
            if raw is None:
                raise E.NoSuchObject(f"vault {rec.name!r}: no such object {key!r}")
            if vrec.append_only and not ephemeral:
                raise E.AppendOnly(f"vault {rec.name!r} is append-only: object {key!r} cannot be deleted")
            created, size, _ = ObjectMeta.header(raw)
            if not ephemeral and vrec.retention_days and txn.now < created + vrec.retention_days * 86400:
                raise E.RetentionLocked(f"vault {rec.name!r}: object {key!r} is under retention until "
                                        f"{iso(created + vrec.retention_days * 86400)}")
            txn.delete("objects", okey)
            _add_usage(txn, rec.vid, logical=-size, objects=-1)
            txn.emit(ObjectDeleted(rec, key))
            refs.release(txn, rec.vid, raw, released)

        released: list[int] = []
        await self.index.run(op)
        await self._settle(released)

    def list_objects(self, rec: VaultRec, prefix: str, start_after: str, limit: int) -> tuple[list[dict], str | None]:
        vp = vid_bytes(rec.vid)
        start = vp + start_after.encode() + b"\0" if start_after else None
        out: list[dict] = []
        nxt = None
        for k, v in self.index.iter_prefix("objects", vp + prefix.encode(), start):
            if len(out) == limit:
                nxt = out[-1]["key"]
                break
            created, size, _ = ObjectMeta.header(v)
            out.append({"key": k[8:].decode(), "size": size, "created": iso(created)})
        return out, nxt


def _fail_future(fut: asyncio.Future, exc: Exception) -> None:
    if not fut.done():
        fut.set_exception(exc)


# hashlib releases the GIL for updates of 2048 bytes or more. On the event
# loop that is a loss: after a few microseconds of hashing the loop waits up
# to the switch interval to get the GIL back from the busy I/O threads
# (profiled: ~80 us per 16 KiB PUT). Small bodies are fed in pieces below
# that size, so the loop never lets go.
_GIL_PIECE = 31 * 64


def _sha256_on_loop(body) -> bytes:
    h = _SHA256.copy()
    mv = memoryview(body)
    for i in range(0, len(mv), _GIL_PIECE):
        h.update(mv[i:i + _GIL_PIECE])
    return h.digest()


def _digest_and_sums(body: bytes, digest: bytes, on_loop: bool = True) -> tuple[bool, bytes]:
    """SHA-256 check and xxh3 block sums in one call (on the loop for small bodies, else in a thread).

    On the loop a small body is hashed in pieces that keep the GIL; in a
    thread the GIL is let go, so that the loop runs meanwhile.
    """
    if on_loop and len(body) <= INLINE_HASH_BYTES:
        got = _sha256_on_loop(body)
    else:
        h = _SHA256.copy()  # copying a template skips OpenSSL's per-call algorithm lookup
        h.update(body)
        got = h.digest()
    if got != digest:
        return False, b""
    return True, block_sums(body)


def _live_vault(txn: Txn, rec: VaultRec) -> VaultRec:
    raw = txn.get("vaults", rec.name.encode())
    cur = VaultRec.load(raw) if raw is not None else None
    if cur is None or cur.vid != rec.vid:
        raise E.NoSuchVault(f"no such vault {rec.name!r}")
    return cur


def _add_usage(txn: Txn, vid: int, **delta: int) -> None:
    key = vid_bytes(vid)
    txn.put("usage", key, Usage.unpack(txn.get("usage", key)).add(**delta).pack())


def _seg_update(txn: Txn, seg_id: int, dir_idx: int, end: int | None, live_delta: int) -> None:
    key = seg_key(seg_id)
    raw = txn.get("segments", key)
    seg = SegMeta.unpack(raw) if raw else SegMeta(dir_idx, 0, 0, 0, txn.now)
    seg = seg._replace(live_bytes=seg.live_bytes + live_delta,
                       end=max(seg.end, end) if end is not None else seg.end)
    txn.put("segments", key, seg.pack())


def _touch(txn: Txn, rec: VaultRec, digest: bytes) -> bool:
    """Dedup hit: revive the chunk for a new grace period. False if it is gone."""
    _live_vault(txn, rec)
    key = vid_bytes(rec.vid) + digest
    raw = txn.get("chunks", key)
    if raw is None:
        return False
    meta = ChunkMeta.unpack(raw)
    # A re-upload restarts the grace period (ARCHITECTURE.md lifecycle, step 4).
    txn.put("chunks", key, meta._replace(created_at=txn.now).pack())
    return True


def _insert_chunk(txn: Txn, rec: VaultRec, digest: bytes, length: int, loc: Location) -> bool:
    """Index a durable record. True if the chunk was already indexed (its new bytes are dead)."""
    vrec = _live_vault(txn, rec)
    key = vid_bytes(rec.vid) + digest
    raw = txn.get("chunks", key)
    if raw is not None:
        _seg_update(txn, loc.seg_id, loc.dir_idx, loc.offset + loc.size, 0)
        txn.put("chunks", key, ChunkMeta.unpack(raw)._replace(created_at=txn.now).pack())
        return True
    usage = Usage.unpack(txn.get("usage", vid_bytes(rec.vid)))
    if vrec.quota_bytes is not None and usage.stored_bytes + length > vrec.quota_bytes:
        _seg_update(txn, loc.seg_id, loc.dir_idx, loc.offset + loc.size, 0)
        raise E.QuotaExceeded(
            f"vault {rec.name!r}: storing chunk {digest.hex()} ({length} bytes) would exceed the quota of "
            f"{vrec.quota_bytes} bytes ({usage.stored_bytes} used)")
    txn.put("chunks", key, ChunkMeta(loc.seg_id, loc.offset, length, 0, PENDING, txn.now, 0.0).pack())
    _seg_update(txn, loc.seg_id, loc.dir_idx, loc.offset + loc.size, loc.size)
    txn.put("usage", vid_bytes(rec.vid), usage.add(stored=length, chunks=1).pack())
    txn.emit(ChunkPut(rec, digest, length))
    return False


def _insert_batch(txn: Txn, rec: VaultRec, entries: list[tuple[bytes, int, Location]],
                  touched: list[bytes]) -> set[bytes]:
    """Index a batch of durable records atomically; returns the ids that were already indexed."""
    vrec = _live_vault(txn, rec)
    prefix = vid_bytes(rec.vid)
    existed: set[bytes] = set()
    added = 0
    for d in touched:
        raw = txn.get("chunks", prefix + d)
        if raw is not None:
            txn.put("chunks", prefix + d, ChunkMeta.unpack(raw)._replace(created_at=txn.now).pack())
    fresh = []
    for d, length, loc in entries:
        raw = txn.get("chunks", prefix + d)
        if raw is not None:
            existed.add(d)
            txn.put("chunks", prefix + d, ChunkMeta.unpack(raw)._replace(created_at=txn.now).pack())
        else:
            fresh.append((d, length, loc))
            added += length
    usage = Usage.unpack(txn.get("usage", prefix))
    if vrec.quota_bytes is not None and usage.stored_bytes + added > vrec.quota_bytes:
        raise E.QuotaExceeded(
            f"vault {rec.name!r}: storing {added} bytes would exceed the quota of {vrec.quota_bytes} bytes "
            f"({usage.stored_bytes} used); nothing of the batch was stored")
    # One update per segment: every record counts for its end, only fresh ones are live.
    segs: dict[int, list] = {}
    for _, _, loc in entries:
        seg = segs.setdefault(loc.seg_id, [loc.dir_idx, 0, 0])
        seg[1] = max(seg[1], loc.offset + loc.size)
    for d, length, loc in fresh:
        segs[loc.seg_id][2] += loc.size
        txn.put("chunks", prefix + d, ChunkMeta(loc.seg_id, loc.offset, length, 0, PENDING, txn.now, 0.0).pack())
        txn.emit(ChunkPut(rec, d, length))
    for seg_id, (dir_idx, end, live) in segs.items():
        _seg_update(txn, seg_id, dir_idx, end, live)
    txn.put("usage", prefix, usage.add(stored=added, chunks=len(fresh)).pack())
    return existed


def _may_overwrite(vrec: VaultRec, key: str, old_raw: bytes | None, role: str, if_none_match: bool,
                   now: float) -> None:
    """Raise unless an object may be written where ``old_raw`` (or nothing) is."""
    if old_raw is None:
        return
    if if_none_match:
        raise E.PreconditionFailed(f"vault {vrec.name!r}: object {key!r} exists")
    if vrec.append_only:
        raise E.AppendOnly(f"vault {vrec.name!r} is append-only: object {key!r} cannot be overwritten")
    if _RANK[role] < _RANK["full"]:
        raise E.Forbidden(f"vault {vrec.name!r}: overwriting object {key!r} needs role 'full'")
    if vrec.retention_days:
        created = ObjectMeta.header(old_raw)[0]
        if now < created + vrec.retention_days * 86400:
            raise E.RetentionLocked(f"vault {vrec.name!r}: object {key!r} is under retention")


def write_object(txn: Txn, rec: VaultRec, key: str, chunks: list[bytes], meta: bytes, created: float,
                 old_raw: bytes | None, restored_from: str = "", released: list[int] | None = None) -> ObjectMeta:
    """Write an object whose chunks must all be in the vault: references of the
    new version added and of the old one (``old_raw``) removed, usage and the
    outbox event in the same op (``restored_from``: the target a restore read
    it from). Raises MissingChunks with the absent ids.

    The old version's references, when it is large, are released under an
    intent (:func:`vault.refs.release`; its id goes to ``released``)."""
    prefix = vid_bytes(rec.vid)
    counts = Counter(chunks)
    metas: dict[bytes, ChunkMeta] = {}
    missing = []
    for d in counts:
        raw = txn.get("chunks", prefix + d)
        if raw is None:
            missing.append(d.hex())
        else:
            metas[d] = ChunkMeta.unpack(raw)
    if missing:
        raise E.MissingChunks(f"vault {rec.name!r}: object {key!r} references {len(missing)} "
                              "chunk(s) the vault does not hold", missing=missing)
    size = sum(metas[d].length * n for d, n in counts.items())
    refs.apply(txn, rec.vid, counts.items(), metas)
    old_size = ObjectMeta.header(old_raw)[1] if old_raw is not None else 0
    refs.release(txn, rec.vid, old_raw, released)
    obj = ObjectMeta(created, size, list(chunks), meta)
    txn.put("objects", prefix + key.encode(), obj.pack())
    _add_usage(txn, rec.vid, logical=size - old_size, objects=0 if old_raw is not None else 1)
    txn.emit(ObjectPut(rec, key, obj, restored_from))
    return obj
