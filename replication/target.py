"""The narrow interface every replication target implements.

A :class:`Replica` stores, per vault name: the vault's configuration, its
chunks (by id) and its objects (manifests). Three implementations sit beside
it: :mod:`replication.s3` (S3-compatible buckets, GCS and Azure through
obstore), :mod:`replication.local` (a directory) — both use the blob layout of
:mod:`replication.layout` — and :mod:`replication.peer` (another objvault
over its HTTP API). They import this module, never the reverse; which kind
is built by which of them is :mod:`replication.registry`. A replica that also
keeps index checkpoints (the blob layout) is a :class:`CheckpointStore`.

Every method may raise :class:`TargetError` (or any exception of the
transport); callers retry with backoff. Every write is idempotent, so a retry
after an unknown outcome (a timed-out PUT that still landed) is harmless.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Awaitable, Callable, Iterable, Protocol, Sequence, runtime_checkable

import zstandard


class TargetError(Exception):
    """A target failed or refused a request (retried by the caller)."""


class LayoutError(TargetError):
    """The target holds something that is not this replica (other key, other format)."""


class Skip(Exception):
    """The entry no longer applies (what it names is gone locally): done without effect."""


@dataclass
class Manifest:
    """One object as the replica holds it."""

    key: str
    created: float
    size: int
    chunks: Sequence[bytes]
    meta: bytes

    def doc(self) -> dict:
        return {"key": self.key, "created": self.created, "size": self.size,
                "chunks": [c.hex() for c in self.chunks], "meta": base64.b64encode(self.meta).decode()}

    @classmethod
    def from_doc(cls, d: dict) -> "Manifest":
        return cls(d["key"], float(d["created"]), int(d["size"]), [bytes.fromhex(c) for c in d["chunks"]],
                   base64.b64decode(d.get("meta", "")))

    def encode(self) -> bytes:
        """zstd-compressed JSON (the layout's manifest body before sealing)."""
        return zstandard.ZstdCompressor(level=3).compress(json.dumps(self.doc(), separators=(",", ":")).encode())

    @classmethod
    def decode(cls, blob: bytes) -> "Manifest":
        return cls.from_doc(json.loads(zstandard.ZstdDecompressor().decompress(blob, max_output_size=256 << 20)))


ChunkLoader = Callable[[bytes], Awaitable[bytes | None]]
"""Reads a chunk of the primary by id (verified), or None if it no longer exists there."""


class Replica(Protocol):
    """What replication, restore and healing need from a target."""

    name: str
    kind: str
    chunk_batch: int
    """How many chunk puts of one vault :meth:`prepare` may look at in one call."""
    concurrency: int
    """Requests the target is meant to take at once (the configured ``concurrency``)."""

    async def open(self) -> None:
        """Check (or create) the replica's marker; raise :class:`LayoutError` on a mismatch."""

    async def close(self) -> None: ...

    async def put_vault(self, vault: str, doc: dict) -> None:
        """Store the vault's configuration (``name``, ``created``, ``quota_bytes``, …)."""

    async def get_vault(self, vault: str) -> dict | None: ...

    async def list_vaults(self) -> list[str]: ...

    async def prepare(self, vault: str, digests: list[bytes]) -> None:
        """A hint before some chunk puts: a target that can answer "which are missing"
        in one round trip does so here, so chunks it has never travel."""

    async def put_chunk(self, vault: str, digest: bytes, data: bytes | None, load: ChunkLoader) -> bool:
        """Store a chunk (create-only; an existing chunk is success). True if its bytes
        were sent, False if the target was known to hold it already.

        ``data`` may be None: then the bytes are read through ``load`` only if
        the target does not have them (raise :class:`Skip` if ``load`` gives None).
        """

    async def get_chunk(self, vault: str, digest: bytes) -> bytes | None:
        """The chunk's bytes as stored (decrypted, not yet verified), None if absent."""

    async def delete_chunk(self, vault: str, digest: bytes) -> None: ...

    async def put_object(self, vault: str, m: Manifest, load: ChunkLoader) -> None:
        """Store (or replace) an object's manifest. A target that needs the chunks
        first (an objvault) fetches the ones it lacks through ``load``."""

    async def delete_object(self, vault: str, key: str) -> None: ...

    async def object_handles(self, vault: str) -> list[str]:
        """Opaque handles of every object of the vault (for restore and purge)."""

    async def get_object(self, vault: str, handle: str) -> Manifest | None: ...

    async def purge_vault(self, vault: str, keep_object: Callable[[str], bool] | None,
                          keep_chunks: Callable[[], Iterable[bytes]] | None) -> None:
        """Delete a vault's objects (except those ``keep_object(key)`` keeps), then its
        chunks (except ``keep_chunks()``); with both None the vault is gone on the
        primary and its configuration goes too."""


@runtime_checkable
class CheckpointStore(Protocol):
    """A replica that also keeps index checkpoints (``checkpoints/<stamp>.tar.zst``)."""

    async def open(self) -> None:
        """As :meth:`Replica.open`: check (or create) the marker before uploading."""

    async def check_marker(self) -> None:
        """Check the replica's marker without writing one; raise :class:`LayoutError` on a mismatch."""

    def checkpoint_path(self, stamp: str) -> str: ...

    async def put_checkpoint(self, stamp: str, tarball: Path) -> str:
        """Upload (sealed) and return its path; older checkpoints beyond the kept number go."""

    async def checkpoint_sizes(self) -> dict[str, int]:
        """Every file under ``checkpoints/`` with its size."""

    async def get_checkpoint(self, path: str, dest: Path) -> None:
        """Download (and unseal) one checkpoint into ``dest``."""
