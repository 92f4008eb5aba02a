"""Wiring: the outbox hook, one worker per target, healing, scrub, restore,
checkpoints, the admin routes and the gauges. Imported by
``vault.app._load_extensions``; registers itself in ``STARTUP`` and ``ROUTES``.

Admin routes (admin token):

``GET  /v1/admin/replication``  lag per target
``POST /v1/admin/restore``      ``{"vault", "from"}`` → 202, rebuilds the vault from that target
``GET  /v1/admin/restore``      progress of the last restore
``POST /v1/admin/scrub``        → 202, starts a scrub pass
``GET  /v1/admin/scrub``        progress, last pass, damaged chunks
"""

from __future__ import annotations

import asyncio
import logging
import threading
from typing import Any

from aiohttp import web

from vault import errors as E
from vault import http
from vault.app import ROUTES, STARTUP
from vault.meta.outbox import forget_targets_op
from vault.metrics import gauge
from vault.workers import runner_of

from .checkpoint import Checkpointer
from .outbox import OutboxHook
from .restore import Restorer
from .scrub import Healer, Scrubber
from .target import open_target
from .worker import Context, TargetWorker

log = logging.getLogger("objvault.replication")

KEY = "replication"
READ_HEAL_SECONDS = 30.0


class Replication:
    """Everything replication runs inside one server."""

    def __init__(self, vault: Any, app: web.Application) -> None:
        self.vault = vault
        self.runner = runner_of(app)
        self.ctx = Context(vault)
        self.loop = asyncio.get_running_loop()
        targets = vault.cfg.replication_targets
        # A bad key file or URL stops the server at start, naming the target.
        self.replicas = {t.name: open_target(t) for t in targets}
        self.workers = {t.name: TargetWorker(self.ctx, t, self.replicas[t.name]) for t in targets}
        self._by_tid = {w.tid: w for w in self.workers.values()}
        self._wake_lock = threading.Lock()
        self._wake_pending: set[bytes] = set()
        self.hook = OutboxHook(targets, vault.index, wake=self._wake_threadsafe)
        self.healer = Healer(self.ctx, [(t, self.replicas[t.name]) for t in targets])
        self.ctx.heal = self.healer.heal
        self.scrubber = Scrubber(self.ctx, self.healer)
        self.restorer = Restorer(self.ctx, self.replicas, self.hook)
        self.checkpointers = [Checkpointer(self.ctx, t, self.replicas[t.name]) for t in targets
                              if t.kind != "objvault" and t.checkpoint_interval_seconds > 0]
        self._tasks: list[asyncio.Task] = []
        self._scrub: asyncio.Task | None = None

    def start(self) -> None:
        self.vault.index.event_hooks.append(self.hook)
        self.vault.services.chunks.healer = self.heal_for_read
        self.vault.metrics.add_callback(self.gauges)
        for w in self.workers.values():
            self._tasks.append(asyncio.ensure_future(w.run_forever()))
        self._tasks.append(asyncio.ensure_future(self._forget_old_targets()))
        # Scrub and checkpoints are periodic passes: the shared runner schedules
        # them (interval, jitter, backoff); the next one is due counting from the
        # last one recorded in the index, so restarts do not postpone them.
        for c in self.checkpointers:
            self.runner.add(c, c.cfg.checkpoint_interval_seconds, first_delay=c.first_delay())
        self.runner.add(self.scrubber, self.scrubber.interval,
                        first_delay=self.scrubber.first_delay() if self.scrubber.interval > 0 else None)
        log.info("replication started", extra={"targets": [f"{t.name} ({t.kind} {t.url})"
                                                           for t in self.vault.cfg.replication_targets]})

    async def heal_for_read(self, rec, digest: bytes, meta) -> bool:
        """The GET path's corruption handler: repair before answering, but answer
        (500 chunk_corrupt) after :data:`READ_HEAL_SECONDS` if the targets are slow;
        the repair itself carries on."""
        try:
            return await asyncio.wait_for(asyncio.shield(self.healer.heal(rec, digest, meta)), READ_HEAL_SECONDS)
        except asyncio.TimeoutError:
            log.warning("repair still running, answering the read with an error",
                        extra={"vault": rec.name, "chunk": digest.hex()})
            return False

    async def _forget_old_targets(self) -> None:
        """Drop outbox records of targets removed from the configuration."""
        keep = set(self._by_tid)
        total = 0
        while True:
            n = await self.vault.index.run(forget_targets_op(keep))
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
        # Failures are logged and counted by the runner. A finished pass
        # leaves the task list, or every pass asked for would stay in it.
        self._scrub.add_done_callback(lambda t: t.cancelled() or t.exception())
        self._scrub.add_done_callback(self._tasks.remove)
        self._tasks.append(self._scrub)
        return True

    async def stop(self) -> None:
        tasks = list(self._tasks)
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await asyncio.gather(*(w.stop() for w in self.workers.values()), return_exceptions=True)
        await self.restorer.stop()
        for r in self.replicas.values():
            try:
                await r.close()
            except Exception:
                pass
        try:
            self.vault.index.event_hooks.remove(self.hook)
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


def _repl(request: web.Request) -> Replication:
    repl = request.app[http.STATE].get(KEY)
    if repl is None:
        raise E.Unavailable("replication is starting")
    return repl


def _json(data: Any, status: int = 200) -> web.Response:
    return web.json_response(data, status=status)


async def replication_status(request: web.Request) -> web.Response:
    http.require_admin(request)
    return _json(_repl(request).status())


async def restore_start(request: web.Request) -> web.Response:
    http.require_admin(request)
    body = await http.read_json_object(request)
    unknown = set(body) - {"vault", "from"}
    if unknown:
        raise E.BadRequest(f"unknown field(s): {', '.join(sorted(unknown))}")
    vault, target = body.get("vault"), body.get("from")
    if not isinstance(vault, str) or not isinstance(target, str):
        raise E.BadRequest("'vault' and 'from' (a target name) are required")
    return _json(_repl(request).restorer.start(vault, target), status=202)


async def restore_status(request: web.Request) -> web.Response:
    http.require_admin(request)
    return _json(_repl(request).restorer.status())


async def scrub_start(request: web.Request) -> web.Response:
    http.require_admin(request)
    repl = _repl(request)
    repl.start_scrub()
    return _json(repl.scrubber.status(), status=202)


async def scrub_status(request: web.Request) -> web.Response:
    http.require_admin(request)
    return _json(_repl(request).scrubber.status())


def add_routes(app: web.Application) -> None:
    r = app.router
    r.add_get("/v1/admin/replication", replication_status)
    r.add_post("/v1/admin/restore", restore_start, expect_handler=http.expect_continue)
    r.add_get("/v1/admin/restore", restore_status)
    r.add_post("/v1/admin/scrub", scrub_start, expect_handler=http.expect_continue)
    r.add_get("/v1/admin/scrub", scrub_status)


def start(vault: Any, app: web.Application) -> None:
    repl = Replication(vault, app)
    repl.start()
    app[http.STATE][KEY] = repl
    vault.stoppers.append(repl.stop)


# First in STARTUP: the outbox hook must be in place before any other
# start-up job can commit a change.
if start not in STARTUP:
    STARTUP.insert(0, start)
if add_routes not in ROUTES:
    ROUTES.append(add_routes)
