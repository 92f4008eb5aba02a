"""Rebuild a vault from a target: configuration, objects, chunks.

``POST /v1/admin/restore {"vault", "from"}`` (or ``objvault restore VAULT
--from TARGET``) starts one restore; ``GET /v1/admin/restore`` reports it.
The vault must not exist here yet, unless an earlier restore of it was
interrupted (then it resumes: chunks already here are not fetched again).

Steps: read the vault's configuration from the target and create the vault
(without quota, append-only or retention, so nothing the restore does can be
refused); list its objects; for each object fetch the chunks this server
lacks, check each one's SHA-256 against its id (the store checks it again),
store them, and put the object with its original creation time; then
put back the vault's S3 bucket records the target keeps with its
configuration (creation time and settings: versioning, Object Lock,
lifecycle, CORS, tags; empty buckets too), create a bucket for restored
objects whose record the target does not hold (a replica written before
bucket records travelled, or a peer objvault, which keeps none), and report
a name another vault here already owns; finally apply the configuration. Only chunks that some object references are
restored: a chunk nobody references is garbage on the replica too.

An object that cannot be restored (a chunk missing on the target, or bad
there) is reported in ``error`` and the rest is restored; the state is then
``failed``.

A restore is a pass of the on-demand job ``restore`` of the shared runner
(listed by ``GET /v1/admin/jobs``, cancelled with the others at shutdown).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import time
from functools import partial

from vault import errors as E
from vault.body import Body
from vault.meta import ObjectMeta, Txn, VaultRec
from vault.meta.outbox import target_id
from vault.meta.schema import restoring_key
from vault.names import vault_name
from vault.policy import Principal
from vault.services import Services, VaultSettings
from vault.services.objects import S3_PREFIX, write_object
from vault.services.vaults import live_vault
from vault.workers import Job, Runner

from .outbox import OutboxHook
from .target import Manifest, Replica
from .worker import Context

log = logging.getLogger("objvault.restore")

ADMIN = Principal(admin=True)
OBJECTS_AT_ONCE = 8


def restore_object_op(rec: VaultRec, m: Manifest, source: str = ""):
    """Put an object as the replica recorded it (creation time included);
    its event is tagged with the ``source`` target, which already holds it."""

    def op(txn: Txn) -> ObjectMeta:
        live_vault(txn, rec)
        return write_object(txn, rec, m.key, list(m.chunks), m.meta, m.created or txn.now,
                            txn.object_packed(rec.vid, m.key), source)

    return op


def _unreachable(bucket: str, e: E.VaultError) -> str:
    return f"bucket {bucket[:80]!r}: {e}; its objects are in the vault but not reachable through S3"


class Restorer(Job):
    """One restore at a time per server; progress in :attr:`state`."""

    name = "restore"

    def __init__(self, ctx: Context, services: Services, replicas: dict[str, Replica], runner: Runner,
                 hook: OutboxHook | None = None) -> None:
        super().__init__()
        self.ctx = ctx
        self.services = services
        self.replicas = replicas
        self.runner = runner
        self.hook = hook  # the outbox hook: what came from a target is not sent back to it
        self.state: dict = {"state": "idle", "vault": None, "from": None, "chunks": 0, "objects": 0,
                            "objects_total": None, "bytes": 0, "error": None}
        self._task: asyncio.Task | None = None

    def status(self) -> dict:
        return dict(self.state)

    async def run_once(self) -> dict:
        """Nothing to restore unless asked (:meth:`start`)."""
        return self.status()

    def start(self, vault: str, target: str) -> dict:
        """Validate and start; raises a :class:`vault.errors.VaultError` the API reports."""
        vault_name(vault)
        replica = self.replicas.get(target)
        if replica is None:
            raise E.BadRequest(f"no replication target named {target!r} is configured here "
                               f"(targets: {', '.join(sorted(self.replicas)) or 'none'})")
        if self._task is not None and not self._task.done():
            raise E.Conflict(f"a restore of vault {self.state['vault']!r} is running")
        idx = self.ctx.index
        if idx.vault(vault) is not None and idx.marker(restoring_key(vault)) is None:
            raise E.VaultExists(f"vault {vault!r} already exists here: restore rebuilds a vault on a server "
                                "that does not have it")
        self.state = {"state": "running", "vault": vault, "from": target, "chunks": 0, "objects": 0,
                      "objects_total": None, "bytes": 0, "error": None, "started": time.time(),
                      "finished": None}
        self._task = asyncio.ensure_future(self.runner.run_now(self.name, partial(self._run, vault, target, replica)))
        # Failures are in the state (and logged); a cancelled one as well.
        self._task.add_done_callback(lambda t: t.cancelled() or t.exception())
        return self.status()

    async def _run(self, vault: str, target: str, replica: Replica) -> dict:
        st = self.state
        try:
            problems = await self._restore(vault, target, replica)
            if problems:
                st["error"] = f"{len(problems)} object(s) could not be restored: " + "; ".join(problems[:5])
                st["state"] = "failed"
            else:
                st["state"] = "done"
        except asyncio.CancelledError:
            st["state"], st["error"] = "failed", "cancelled (server shutting down)"
            raise
        except Exception as e:
            log.exception("restore failed", extra={"vault": vault, "target": target})
            st["state"], st["error"] = "failed", str(e) or type(e).__name__
        finally:
            st["finished"] = time.time()
            log.info("restore finished", extra={k: v for k, v in st.items()})
        return {k: st[k] for k in ("vault", "from", "state", "chunks", "objects", "bytes")}

    async def _restore(self, vault: str, target: str, replica: Replica) -> list[str]:
        svc, idx, st = self.services, self.ctx.index, self.state
        await replica.open()
        doc = await replica.get_vault(vault)
        if doc is None:
            raise E.NoSuchVault(f"target {target!r} holds no vault {vault!r}")
        rec = idx.vault(vault)
        if rec is None:
            def create(txn: Txn) -> None:
                txn.put_marker(restoring_key(vault), json.dumps({"from": target, "at": txn.now}).encode())
            await idx.run(create)
            rec = await svc.vaults.create(vault, VaultSettings(), ADMIN)
        handles = await replica.object_handles(vault)
        st["objects_total"] = len(handles)
        chunk_sem = asyncio.Semaphore(max(1, replica.concurrency))
        fetching: dict[bytes, asyncio.Future] = {}
        problems: list[str] = []
        buckets: set[str] = set()
        loop = asyncio.get_running_loop()

        async def fetch(d: bytes) -> None:
            async with chunk_sem:
                if svc.chunks.meta(rec, d) is not None:
                    return
                data = await replica.get_chunk(vault, d)
                if data is None:
                    raise E.NoSuchChunk(f"target {target!r} does not hold chunk {d.hex()}")
                ok = hashlib.sha256(data).digest() == d if len(data) <= 65536 else \
                    await loop.run_in_executor(None, lambda: hashlib.sha256(data).digest() == d)
                if not ok:
                    raise E.DigestMismatch(f"target {target!r}: chunk {d.hex()} does not match its id")

                mark = (target_id(target), rec.vid, d)
                if self.hook is not None:
                    self.hook.from_target.add(mark)
                try:
                    existed = await svc.chunks.put(rec, d, Body.of_bytes(data))
                finally:
                    if self.hook is not None:
                        self.hook.from_target.discard(mark)
                if not existed:
                    st["chunks"] += 1
                    st["bytes"] += len(data)

        def chunk(d: bytes) -> asyncio.Future:
            fut = fetching.get(d)
            if fut is None:
                fut = fetching[d] = asyncio.ensure_future(fetch(d))
            return fut

        async def one(handle: str) -> None:
            m = await replica.get_object(vault, handle)
            if m is None:  # deleted on the target while we listed
                return
            try:
                await asyncio.gather(*(chunk(d) for d in dict.fromkeys(m.chunks)))
                await idx.run(restore_object_op(rec, m, target))
                st["objects"] += 1
                if m.key.startswith(S3_PREFIX):
                    buckets.add(m.key[len(S3_PREFIX):].partition("/")[0])
            except (E.NoSuchChunk, E.DigestMismatch, E.MissingChunks) as e:
                problems.append(f"{m.key!r}: {e}")
                log.error("object not restored", extra={"vault": vault, "key": m.key, "error": str(e)})
            finally:
                for d in m.chunks:  # keep the map small: finished chunks are in the index now
                    f = fetching.get(d)
                    if f is not None and f.done() and f.exception() is None:
                        fetching.pop(d, None)

        queue = iter(handles)

        async def worker() -> None:
            for h in queue:
                await one(h)

        await asyncio.gather(*(worker() for _ in range(OBJECTS_AT_ONCE)))
        kept = doc.get("buckets")
        if not isinstance(kept, list):
            kept = []
        for b in kept:
            try:
                name, created, settings = b["name"], float(b["created"]), b.get("settings") or {}
                if not isinstance(name, str) or not isinstance(settings, dict):
                    raise TypeError("malformed")
            except (KeyError, TypeError, ValueError):
                problems.append(f"a bucket record of the target is malformed: {str(b)[:80]}")
                continue
            buckets.discard(name)
            try:
                await svc.buckets.restore(rec, name, created, settings)
            except (E.BucketExists, E.BadBucketName) as e:
                problems.append(_unreachable(name, e))
        for name in sorted(buckets):  # of objects whose bucket record the target does not hold
            try:
                await svc.buckets.create(ADMIN, vault, name)
            except E.BucketOwned:
                pass  # an interrupted restore made it
            except (E.BucketExists, E.BadBucketName) as e:
                problems.append(_unreachable(name, e))
        fields = {k: doc[k] for k in ("quota_bytes", "append_only", "retention_days") if k in doc}
        if fields:
            await svc.vaults.update(vault, VaultSettings(**fields), ADMIN)
        await idx.run(lambda txn: txn.delete_marker(restoring_key(vault)))
        return problems
