"""Replication inside one server: the outbox hook, and the jobs of the shared
runner (:mod:`vault.workers`) — per target a worker and a seeder, index
checkpoints to bucket targets, scrub and restore — and their gauges.

Built by the composition root (:mod:`vault.app`) after the services, with the
replica clients and the healer it built before the services; its admin routes
are in :mod:`vault.admin_http`.
"""

from __future__ import annotations

import asyncio
import logging
import threading

from vault.config import Config
from vault.meta import Index
from vault.meta.outbox import forget_targets_op
from vault.metrics import gauge
from vault.services import Services
from vault.store import Store
from vault.workers import Runner

from .checkpoint import Checkpointer
from .outbox import OutboxHook
from .restore import Restorer
from .scrub import Healer, Scrubber
from .target import CheckpointStore, Replica
from .worker import Context, Seeder, TargetWorker

log = logging.getLogger("objvault.replication")


class Replication:
    """Everything replication runs inside one server."""

    def __init__(self, cfg: Config, index: Index, store: Store, services: Services,
                 replicas: dict[str, Replica], healer: Healer, runner: Runner) -> None:
        targets = cfg.replication_targets
        self.cfg = cfg
        self.index = index
        self.replicas = replicas
        self.healer = healer
        self.runner = runner
        self.ctx = Context(cfg, index, store, heal=healer.heal)
        self.loop = asyncio.get_running_loop()
        self.workers = {t.name: TargetWorker(self.ctx, t, replicas[t.name]) for t in targets}
        self._by_tid = {w.tid: w for w in self.workers.values()}
        self._wake_lock = threading.Lock()
        self._wake_pending: set[bytes] = set()
        self.hook = OutboxHook(targets, index, wake=self._wake_threadsafe)
        self.scrubber = Scrubber(self.ctx, healer)
        self.restorer = Restorer(self.ctx, services, replicas, runner, self.hook)
        self.checkpointers = [Checkpointer(self.ctx, t, r) for t in targets
                              if isinstance(r := replicas[t.name], CheckpointStore)
                              and t.checkpoint_interval_seconds > 0]
        self._scrub: asyncio.Task | None = None

    async def start(self) -> None:
        """Hook into the index and hand the jobs to the runner (before it starts)."""
        # Before any job can commit a change: every change from here on has its entries.
        self.index.event_hooks.append(self.hook)
        await self._forget_old_targets()
        for w in self.workers.values():
            self.runner.add(w, TargetWorker.INTERVAL_SECONDS, first_delay=0)
            self.runner.add(Seeder(w), Seeder.INTERVAL_SECONDS, first_delay=0)
        # The next checkpoint or scrub is due counting from the last one recorded
        # in the index, so restarts do not postpone them.
        for c in self.checkpointers:
            self.runner.add(c, c.cfg.checkpoint_interval_seconds, first_delay=c.first_delay())
        self.runner.add(self.scrubber, self.scrubber.interval,
                        first_delay=self.scrubber.first_delay() if self.scrubber.interval > 0 else None)
        self.runner.add(self.restorer, 0)  # on demand only
        log.info("replication started", extra={"targets": [f"{t.name} ({t.kind} {t.url})"
                                                           for t in self.cfg.replication_targets]})

    async def _forget_old_targets(self) -> None:
        """Drop outbox records of targets removed from the configuration."""
        keep = set(self._by_tid)
        total = 0
        while True:
            n = await self.index.run(forget_targets_op(keep))
            total += n
            if n == 0:
                break
        if total:
            log.warning("dropped the outbox of targets no longer configured", extra={"entries": total})

    def _wake_threadsafe(self, tid: bytes) -> None:
        """Called by the committer thread after a batch with entries for ``tid``:
        at most one wake-up per target is queued on the loop at a time."""
        with self._wake_lock:
            if tid in self._wake_pending:
                return
            self._wake_pending.add(tid)
        try:
            self.loop.call_soon_threadsafe(self._wake, tid)
        except RuntimeError:  # loop closed at shutdown
            pass

    def _wake(self, tid: bytes) -> None:
        with self._wake_lock:
            self._wake_pending.discard(tid)
        w = self._by_tid.get(tid)
        if w is not None:
            w.notify()

    def start_scrub(self) -> bool:
        """Start a scrub pass now unless one is running; True if this call started it."""
        if self.scrubber.state == "running" or (self._scrub is not None and not self._scrub.done()):
            return False
        self._scrub = asyncio.ensure_future(self.runner.run_now(self.scrubber.name))
        # Failures are logged and counted by the runner; cancelled at its stop.
        self._scrub.add_done_callback(lambda t: t.cancelled() or t.exception())
        return True

    async def stop(self) -> None:
        """Once the runner has stopped: confirm what was sent, close the clients, unhook."""
        await asyncio.gather(*(w.stop() for w in self.workers.values()), return_exceptions=True)
        for r in self.replicas.values():
            try:
                await r.close()
            except Exception:
                pass
        try:
            self.index.event_hooks.remove(self.hook)
        except ValueError:
            pass

    def status(self) -> dict:
        return {"targets": [w.status() for w in self.workers.values()]}

    def gauges(self):
        rows = [w.status() for w in self.workers.values()]

        def g(name: str, doc: str, field: str):
            return gauge(name, doc, ["target"], [([r["name"]], float(r[field] or 0)) for r in rows])

        yield g("objvault_replication_pending_entries", "Outbox entries not yet on the target", "pending_entries")
        yield g("objvault_replication_pending_bytes", "Bytes of outbox entries not yet on the target",
                "pending_bytes")
        yield g("objvault_replication_delayed_entries", "Deletes waiting out delete_delay_seconds",
                "delayed_entries")
        yield g("objvault_replication_oldest_pending_seconds", "Age of the oldest entry that is due",
                "oldest_pending_seconds")
        yield gauge("objvault_replication_last_success_timestamp_seconds",
                    "Unix time the target last confirmed an entry", ["target"],
                    [([w.cfg.name], w.last_success or 0.0) for w in self.workers.values()])
        yield gauge("objvault_replication_sent_bytes", "Bytes sent to the target since start", ["target"],
                    [([w.cfg.name], float(w.sent_bytes)) for w in self.workers.values()])
        yield gauge("objvault_replication_failures", "Failed sends since start (each is retried)", ["target"],
                    [([w.cfg.name], float(w.failures)) for w in self.workers.values()])
        yield gauge("objvault_scrub_damaged_chunks", "Corrupt chunks no target could repair", [],
                    [([], float(len(self.healer.damaged())))])
        yield gauge("objvault_scrub_healed_chunks", "Chunks repaired from a target since start", [],
                    [([], float(self.healer.healed))])
        last = self.scrubber.last or {}
        yield gauge("objvault_scrub_last_pass_bytes", "Bytes checked by the last scrub pass", [],
                    [([], float(last.get("bytes", 0)))])
