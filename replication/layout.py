"""The replica layout in a bucket or directory (docs/replica-layout.md).

Plaintext::

    objvault-replica.json                           marker: format, version, encryption, key id
    vaults/<vault>/vault.json                       the vault's configuration (JSON)
    vaults/<vault>/chunks/<id[:2]>/<id>             chunk bytes, named by their SHA-256
    vaults/<vault>/objects/<sha256(key)>.json.zst   manifest: zstd(JSON {key, created, size, chunks, meta})
    checkpoints/<UTC stamp>.tar.zst                 RocksDB checkpoint of the whole index

Encrypted (``encryption_key_file`` set; see :mod:`replication.crypto`), every
name is an HMAC and every body sealed with its path as associated data::

    vaults/<H("vault" 0 vault)>/vault                              sealed(zstd(JSON))
    vaults/<H(...)>/chunks/<h[:2]>/<h = H("chunk" 0 vault 0 id)>   sealed(chunk)
    vaults/<H(...)>/objects/<H("object" 0 vault 0 key)>           sealed(zstd(JSON))
    checkpoints/<UTC stamp>.tar.zst.sealed                         sealed frames

Chunks are written with a create-only PUT (``If-None-Match: *``): a chunk is
immutable, an existing one is success. Every request is retried here a few
times (transient network errors) before the caller's backoff takes over.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import tempfile
from pathlib import Path
from typing import Any, Awaitable, Callable, Iterable

import obstore
import zstandard
from obstore.exceptions import AlreadyExistsError, NotFoundError, PreconditionError

from vault.config import TargetConfig
from vault.workers import Backoff

from .crypto import SealError, Sealer
from .target import ChunkLoader, LayoutError, Manifest, Skip, TargetError

log = logging.getLogger("objvault.replication")

MARKER = "objvault-replica.json"
FORMAT = "objvault-replica"
VERSION = 1
INLINE_CRYPTO_BYTES = 64 * 1024
ATTEMPTS = 4
REQUEST_RETRY = Backoff(base=0.3, factor=3.0, cap=10.0, jitter=0.5)
"""Between attempts of one request; the outbox worker retries behind that."""
KEEP_CHECKPOINTS = 7

_NOT_FOUND = (FileNotFoundError, NotFoundError)
_EXISTS = (AlreadyExistsError, PreconditionError)


async def _retry(what: str, fn: Callable[[], Awaitable[Any]]) -> Any:
    """Run ``fn`` up to :data:`ATTEMPTS` times on transient errors (not on "absent"/"exists")."""
    for attempt in range(ATTEMPTS):
        try:
            return await fn()
        except _NOT_FOUND + _EXISTS + (SealError, LayoutError, Skip, asyncio.CancelledError):
            raise
        except Exception as e:
            if attempt == ATTEMPTS - 1:
                raise TargetError(f"{what}: {type(e).__name__}: {e}") from None
            await asyncio.sleep(REQUEST_RETRY.jittered(attempt))


class BlobReplica:
    """A replica in an obstore store (S3, GCS, Azure, local directory)."""

    chunk_batch = 1

    def __init__(self, cfg: TargetConfig, store: Any, sealer: Sealer) -> None:
        self.name = cfg.name
        self.kind = cfg.kind
        self.url = cfg.url
        self.store = store
        self.sealer = sealer
        self.concurrency = max(1, cfg.concurrency)
        self._opened = False

    # -- names -------------------------------------------------------------------

    def vault_dir(self, vault: str) -> str:
        if self.sealer.enabled:
            return "vaults/" + self.sealer.name(b"vault\0" + vault.encode())
        return "vaults/" + vault

    def vault_path(self, vault: str) -> str:
        return self.vault_dir(vault) + ("/vault" if self.sealer.enabled else "/vault.json")

    def chunk_path(self, vault: str, digest: bytes) -> str:
        if self.sealer.enabled:
            h = self.sealer.name(b"chunk\0" + vault.encode() + b"\0" + digest)
        else:
            h = digest.hex()
        return f"{self.vault_dir(vault)}/chunks/{h[:2]}/{h}"

    def object_path(self, vault: str, key: str) -> str:
        if self.sealer.enabled:
            return f"{self.vault_dir(vault)}/objects/" + self.sealer.name(
                b"object\0" + vault.encode() + b"\0" + key.encode())
        return f"{self.vault_dir(vault)}/objects/{hashlib.sha256(key.encode()).hexdigest()}.json.zst"

    # -- raw I/O -------------------------------------------------------------------

    async def _put(self, path: str, body: bytes, create: bool = False) -> bool:
        """PUT ``body``; True if written, False if ``create`` and it already existed."""
        async def put() -> bool:
            try:
                await obstore.put_async(self.store, path, body, mode="create" if create else "overwrite",
                                        use_multipart=False)
            except _EXISTS:
                if create:
                    return False
                raise
            return True
        return await _retry(f"target {self.name!r}: PUT {path}", put)

    async def _get(self, path: str) -> bytes | None:
        async def get() -> bytes | None:
            try:
                r = await obstore.get_async(self.store, path)
                return bytes(await r.bytes_async())
            except _NOT_FOUND:
                return None
        return await _retry(f"target {self.name!r}: GET {path}", get)

    async def _delete(self, path: str) -> None:
        async def delete() -> None:
            try:
                await obstore.delete_async(self.store, path)
            except _NOT_FOUND:
                pass
        await _retry(f"target {self.name!r}: DELETE {path}", delete)

    async def _list(self, prefix: str) -> list[str]:
        async def ls() -> list[str]:
            out: list[str] = []
            async for batch in obstore.list(self.store, prefix, chunk_size=1000):
                out.extend(m["path"] for m in batch)
            return out
        return await _retry(f"target {self.name!r}: LIST {prefix}", ls)

    async def _dirs(self, prefix: str) -> list[str]:
        async def ls() -> list[str]:
            r = await obstore.list_with_delimiter_async(self.store, prefix)
            return [p.rstrip("/") for p in r["common_prefixes"]]
        return await _retry(f"target {self.name!r}: LIST {prefix}", ls)

    async def _seal(self, data: bytes | memoryview, aad: str) -> bytes:
        if not self.sealer.enabled:
            return data if isinstance(data, bytes) else bytes(data)
        if len(data) <= INLINE_CRYPTO_BYTES:
            return self.sealer.seal(data, aad.encode())
        return await asyncio.get_running_loop().run_in_executor(None, self.sealer.seal, data, aad.encode())

    async def _open_body(self, blob: bytes, aad: str) -> bytes:
        if not self.sealer.enabled:
            return blob
        try:
            if len(blob) <= INLINE_CRYPTO_BYTES:
                return self.sealer.open(blob, aad.encode())
            return await asyncio.get_running_loop().run_in_executor(None, self.sealer.open, blob, aad.encode())
        except SealError as e:
            raise TargetError(f"target {self.name!r}: {aad}: {e}") from None

    async def _put_doc(self, path: str, doc: dict, compress: bool) -> None:
        raw = json.dumps(doc, separators=(",", ":"), sort_keys=True).encode()
        if self.sealer.enabled or compress:
            raw = zstandard.ZstdCompressor(level=3).compress(raw)
        await self._put(path, await self._seal(raw, path))

    async def _get_doc(self, path: str, compressed: bool) -> dict | None:
        blob = await self._get(path)
        if blob is None:
            return None
        raw = await self._open_body(blob, path)
        if self.sealer.enabled or compressed:
            raw = zstandard.ZstdDecompressor().decompress(raw, max_output_size=256 << 20)
        return json.loads(raw)

    async def _gather(self, items: Iterable, fn: Callable[[Any], Awaitable[Any]]) -> None:
        sem = asyncio.Semaphore(self.concurrency)

        async def one(x):
            async with sem:
                await fn(x)
        await asyncio.gather(*(one(x) for x in items))

    # -- Replica -------------------------------------------------------------------

    def marker(self) -> dict:
        return {"format": FORMAT, "version": VERSION,
                "encryption": "aes-256-gcm-envelope" if self.sealer.enabled else "none",
                "key_id": self.sealer.key_id}

    async def open(self) -> None:
        if self._opened:
            return
        want = self.marker()
        raw = await self._get(MARKER)
        if raw is None:
            body = json.dumps(want, indent=2).encode() + b"\n"
            if not await self._put(MARKER, body, create=True):
                raw = await self._get(MARKER)
        if raw is not None:
            self._check_marker(raw)
        self._opened = True

    async def check_marker(self) -> None:
        """Like :meth:`open`, but never writes: raise :class:`LayoutError` if the
        target has no marker or one that does not match this configuration.

        For readers (checkpoint download): a wrong URL must be reported, not
        turned into a new, empty replica.
        """
        raw = await self._get(MARKER)
        if raw is None:
            raise LayoutError(f"target {self.name!r}: no {MARKER} at {self.url}: it holds no replica "
                              "(wrong url or prefix?)")
        self._check_marker(raw)

    def _check_marker(self, raw: bytes) -> None:
        want = self.marker()
        try:
            have = json.loads(raw)
        except ValueError:
            raise LayoutError(f"target {self.name!r}: {MARKER} is not JSON") from None
        if have.get("format") != FORMAT or have.get("version") != VERSION:
            raise LayoutError(f"target {self.name!r}: {MARKER} describes {have.get('format')!r} "
                              f"version {have.get('version')!r}, not {FORMAT} {VERSION}")
        if have.get("encryption") != want["encryption"] or have.get("key_id") != want["key_id"]:
            raise LayoutError(f"target {self.name!r}: the replica was written with encryption "
                              f"{have.get('encryption')!r} key id {have.get('key_id')!r}; this server has "
                              f"{want['encryption']!r} key id {want['key_id']!r} (wrong encryption_key_file?)")

    async def close(self) -> None:
        pass

    async def put_vault(self, vault: str, doc: dict) -> None:
        await self._put_doc(self.vault_path(vault), doc, compress=False)

    async def get_vault(self, vault: str) -> dict | None:
        return await self._get_doc(self.vault_path(vault), compressed=False)

    async def list_vaults(self) -> list[str]:
        names = []
        for d in await self._dirs("vaults/"):
            if self.sealer.enabled:
                doc = await self._get_doc(d + "/vault", compressed=False)
                if doc is not None:
                    names.append(doc["name"])
            else:
                names.append(d.rsplit("/", 1)[-1])
        return sorted(names)

    async def prepare(self, vault: str, digests: list[bytes]) -> None:
        pass

    async def put_chunk(self, vault: str, digest: bytes, data: bytes | None, load: ChunkLoader) -> bool:
        if data is None:
            data = await load(digest)
            if data is None:
                raise Skip(f"vault {vault!r}: chunk {digest.hex()} is gone")
        path = self.chunk_path(vault, digest)
        await self._put(path, await self._seal(data, path), create=True)
        return True

    async def get_chunk(self, vault: str, digest: bytes) -> bytes | None:
        path = self.chunk_path(vault, digest)
        blob = await self._get(path)
        return None if blob is None else await self._open_body(blob, path)

    async def delete_chunk(self, vault: str, digest: bytes) -> None:
        await self._delete(self.chunk_path(vault, digest))

    async def put_object(self, vault: str, m: Manifest, load: ChunkLoader) -> None:
        path = self.object_path(vault, m.key)
        await self._put(path, await self._seal(m.encode(), path))

    async def delete_object(self, vault: str, key: str) -> None:
        await self._delete(self.object_path(vault, key))

    async def object_handles(self, vault: str) -> list[str]:
        return sorted(await self._list(self.vault_dir(vault) + "/objects/"))

    async def get_object(self, vault: str, handle: str) -> Manifest | None:
        blob = await self._get(handle)
        if blob is None:
            return None
        return Manifest.decode(await self._open_body(blob, handle))

    async def purge_vault(self, vault: str, keep_object: Callable[[str], bool] | None,
                          keep_chunks: Callable[[], Iterable[bytes]] | None) -> None:
        handles = await self.object_handles(vault)

        async def drop_object(h: str) -> None:
            if keep_object is not None:
                m = await self.get_object(vault, h)
                if m is not None and keep_object(m.key):
                    return
            await self._delete(h)

        await self._gather(handles, drop_object)
        keep = {self.chunk_path(vault, d) for d in keep_chunks()} if keep_chunks is not None else set()
        chunks = [p for p in await self._list(self.vault_dir(vault) + "/chunks/") if p not in keep]
        await self._gather(chunks, self._delete)
        if keep_chunks is None:
            await self._delete(self.vault_path(vault))

    # -- index checkpoints ---------------------------------------------------------

    def checkpoint_path(self, stamp: str) -> str:
        return f"checkpoints/{stamp}.tar.zst" + (".sealed" if self.sealer.enabled else "")

    async def put_checkpoint(self, stamp: str, tarball: Path) -> str:
        """Upload a ``.tar.zst`` (sealed in frames when encrypted); keep the newest few."""
        path = self.checkpoint_path(stamp)
        src = tarball
        tmp = None
        if self.sealer.enabled:
            fd, name = tempfile.mkstemp(dir=tarball.parent, suffix=".sealed")
            os.close(fd)
            tmp = Path(name)

            def seal() -> None:
                with open(tarball, "rb") as f, open(tmp, "wb") as out:
                    for frame in self.sealer.seal_stream(iter(lambda: f.read(1 << 20), b""), path.encode()):
                        out.write(frame)
            await asyncio.get_running_loop().run_in_executor(None, seal)
            src = tmp
        try:
            await _retry(f"target {self.name!r}: PUT {path}",
                         lambda: obstore.put_async(self.store, path, src, use_multipart=True))
        finally:
            if tmp is not None:
                tmp.unlink(missing_ok=True)
        existing = sorted(p for p in await self._list("checkpoints/"))
        for old in existing[:-KEEP_CHECKPOINTS]:
            await self._delete(old)
        return path

    async def list_checkpoints(self) -> list[str]:
        return sorted(await self._list("checkpoints/"))

    async def checkpoint_sizes(self) -> dict[str, int]:
        """Every object under ``checkpoints/``: path → stored size in bytes (sealed size when encrypted)."""
        async def ls() -> dict[str, int]:
            out: dict[str, int] = {}
            async for batch in obstore.list(self.store, "checkpoints/", chunk_size=1000):
                out.update((m["path"], int(m["size"])) for m in batch)
            return out
        return await _retry(f"target {self.name!r}: LIST checkpoints/", ls)

    async def get_checkpoint(self, path: str, dest: Path) -> None:
        """Download a checkpoint to ``dest`` as a plain ``.tar.zst``."""
        blob = await self._get(path)
        if blob is None:
            raise TargetError(f"target {self.name!r}: no checkpoint {path}")

        def write() -> None:
            with open(dest, "wb") as out:
                for piece in self.sealer.open_stream(blob, path.encode()):
                    out.write(piece)
        await asyncio.get_running_loop().run_in_executor(None, write)
