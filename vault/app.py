"""The composition root: the server's parts built in order, in one place —
config → index → store → replica clients and healer → services → runner and
its jobs, replication → the HTTP front doors — then served and stopped in
the reverse order. Nothing registers itself by being imported."""

from __future__ import annotations

import asyncio
import ctypes
import logging
import os
import secrets
import signal
import ssl
import sys
import time
from pathlib import Path
from typing import Any, AsyncIterator, Callable, cast

from aiohttp import http_writer, web
from aiohttp.http_exceptions import BadHttpMessage, ContentLengthError
from aiohttp.streams import EMPTY_PAYLOAD
from aiohttp.web_protocol import RequestHandler, _ErrInfo

from replication.registry import open_target
from replication.scrub import Healer
from replication.setup import Replication
from replication.worker import Context

from . import admin_http, console, http, memdiag, refs, restic
from .alerts import Alerts
from .integrations import comet
from . import errors as E
from .budget import MemoryBudget
from .config import Config
from .lifecycle import HISTORY_INTERVAL_SECONDS, GarbageCollector, UsageHistory, UsageReports, usage_gauges
from .meta import Index, Txn
from .logs import setup_logging
from .metrics import Metrics, gauge
from .services import Services
from .store import Store
from .trends import SAMPLE_SECONDS, Trends
from .workers import MemoryTrim, Runner

log = logging.getLogger("objvault")


def ensure_admin_token(cfg: Config) -> None:
    """Use the configured token, else the one in the token file, else make one (0600)."""
    if cfg.admin_token:
        return
    path = cfg.admin_token_path
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists():
        cfg.admin_token = path.read_text().strip()
    if not cfg.admin_token:
        token = secrets.token_urlsafe(32)
        fd = os.open(path, os.O_CREAT | os.O_WRONLY | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(token + "\n")
            f.flush()
            os.fsync(f.fileno())
        cfg.admin_token = token
        log.info("generated admin token", extra={"path": str(path.resolve())})
    else:
        log.info("admin token from file", extra={"path": str(path.resolve())})


class Vault:
    """The server's core, built in order: config, index, store (recovered),
    replica clients and the healer that repairs from them, services."""

    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        self.metrics = Metrics()
        for d in cfg.data_dirs:
            Path(d).mkdir(parents=True, exist_ok=True)
        ensure_admin_token(cfg)
        t0 = time.monotonic()
        self.index = Index(cfg.first_data_dir / "index", recorder=self.metrics)
        self.store = Store(cfg.data_dirs, cfg.segment_bytes, recorder=self.metrics, sealed_hook=self._on_sealed)
        self._recover()
        # Reference counts left half-changed by a stop in the middle (vault/refs.py).
        refs.settle_all(self.index)
        targets = cfg.replication_targets
        # A bad key file or URL stops the server at start, naming the target.
        self.replicas = {t.name: open_target(t) for t in targets}
        self.healer = Healer(Context(cfg, self.index, self.store), [(t, self.replicas[t.name]) for t in targets])
        self.services = Services.build(cfg, self.index, self.store, recorder=self.metrics,
                                       healer=self.healer.heal_for_read)
        self.metrics.add_callback(self._gauges)
        log.info("store open", extra={"data_dirs": cfg.data_dirs, "segments": len(self.store.paths),
                                      "seconds": round(time.monotonic() - t0, 3)})

    def _recover(self) -> None:
        """Reopen after any stop: cut unacknowledged tails off the segments that were active.

        Only segment metadata is read, never segment contents, so start-up
        time does not grow with the amount of data stored.
        """
        known: dict[int, int] = {}
        ends: dict[int, int] = {}
        for sid, seg in self.index.segments():
            known[sid] = seg.dir_idx
            if not seg.sealed:
                ends[sid] = seg.end
        self.store.open(known, ends)

        def seal(txn: Txn) -> None:
            for sid in ends:
                txn.seal_segment(sid)

        if ends:
            self.index.run_sync(seal)

    def _on_sealed(self, seg_id: int, end: int) -> None:
        self.index.submit(lambda txn: txn.seal_segment(seg_id))

    def _gauges(self):
        yield gauge("objvault_data_dir_free_bytes", "Free bytes on each data directory's filesystem", ["dir"],
                    [([d], free) for d, free in self.store.free_bytes()])
        yield gauge("objvault_segments", "Segment files", [], [([], len(self.store.paths))])
        yield gauge("objvault_index_memory_bytes", "Bytes the index (RocksDB) holds in memory, by kind", ["kind"],
                    [([k], v) for k, v in self.index.memory().items()])

    def ready_problems(self) -> list[str]:
        problems = []
        if self.index.failed is not None:
            problems.append(f"index failed: {self.index.failed}")
        for i in sorted(self.store.failed_dirs):
            problems.append(f"data dir {self.cfg.data_dirs[i]} failed")
        for d in self.cfg.data_dirs:
            if not os.access(d, os.W_OK):
                problems.append(f"data dir {d} is not writable")
        return problems

    def close(self) -> None:
        self.store.close()
        self.index.close()


class Workers:
    """The runner and every background job, replication included, on top of a :class:`Vault`."""

    def __init__(self, vault: Vault) -> None:
        self.vault = vault
        self.runner = Runner(vault.metrics)
        self.usage = UsageReports(vault.index)
        self.replication = Replication(vault.cfg, vault.index, vault.store, vault.services, vault.replicas,
                                       vault.healer, self.runner)
        self.alerts = Alerts(vault.cfg.alerts, vault.index, vault.store, vault.cfg.data_dirs,
                             lambda: self.replication.status()["targets"])
        self.trends = Trends(vault.metrics.totals, lambda: self.replication.status()["targets"])

    async def start(self) -> None:
        vault, runner = self.vault, self.runner
        # Replication and alerts first: their hooks must be in place before any job commits a change.
        await self.replication.start()
        await self.alerts.start(runner)
        runner.add(GarbageCollector(vault.index, vault.store, vault.cfg.gc), vault.cfg.gc.interval_seconds)
        # First pass at start-up: today's snapshot exists from the first minute.
        runner.add(UsageHistory(vault.index), HISTORY_INTERVAL_SECONDS, first_delay=0)
        runner.add(MemoryTrim(), MemoryTrim.INTERVAL_SECONDS)
        runner.add(self.trends, SAMPLE_SECONDS, first_delay=0)
        if vault.cfg.s3.listen:
            from .s3.front import UploadExpiry
            runner.add(UploadExpiry(vault.services, vault.cfg.s3.upload_expiry_seconds),
                       vault.cfg.s3.upload_expiry_interval_seconds)
            from .services.s3lifecycle import S3Lifecycle
            runner.add(S3Lifecycle(vault.index, vault.services.s3, vault.cfg.s3.lifecycle_day_seconds),
                       vault.cfg.s3.lifecycle_interval_seconds)
        # Labelled with vault names: only an authorised scraper may see them.
        vault.metrics.add_callback(usage_gauges(vault.index), tenant=True)
        vault.metrics.add_callback(self.alerts.vault_gauges, tenant=True)
        vault.metrics.add_callback(self.replication.gauges)
        vault.metrics.add_callback(self.alerts.gauges)
        runner.start()

    async def stop(self) -> None:
        """Passes first (cancelled, or awaited when in a thread), then what they used."""
        await self.runner.stop()
        await self.replication.stop()
        self.alerts.stop()


def build_app(cfg: Config) -> web.Application:
    """The application with every route; its parts are built when it starts."""
    app = web.Application(middlewares=[http.error_middleware], client_max_size=1 << 20)
    state = http.ServerState(body_idle_timeout_seconds=cfg.body_idle_timeout_seconds)
    app[http.STATE] = state
    app[http.BUDGET] = MemoryBudget(cfg.body_memory_bytes, cfg.body_memory_wait_seconds)

    async def run(app: web.Application) -> AsyncIterator[None]:
        loop = asyncio.get_running_loop()
        vault = await loop.run_in_executor(None, Vault, cfg)
        vault.metrics.set_scrape_token(cfg.metrics_token)
        workers = Workers(vault)
        await workers.start()
        app[http.SERVICES] = vault.services
        app[http.METRICS] = vault.metrics
        app[admin_http.RUNNER] = workers.runner
        app[admin_http.USAGE] = workers.usage
        app[admin_http.REPLICATION] = workers.replication
        app[console.DISKS] = vault.store.disk_space
        app[admin_http.ALERTS] = workers.alerts
        app[console.ALERTS] = workers.alerts.open_lines
        app[console.TRENDS] = workers.trends
        state.ready = vault.ready_problems
        yield
        state.ready = lambda: ["shutting down"]
        await workers.stop()
        await loop.run_in_executor(None, vault.close)
        log.info("stopped")

    app.cleanup_ctx.append(run)
    app.on_response_prepare.append(http.name_the_server)
    http.add_routes(app)
    restic.add_routes(app)
    admin_http.add_routes(app)
    console.add_routes(app)
    comet.add_routes(app, cfg)
    return app


# glibc's mallopt parameters
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_M_ARENA_MAX = -8
MALLOC_ARENAS = 2
MMAP_THRESHOLD = 4 << 20
TRIM_THRESHOLD = 8 << 20


def tune_malloc() -> None:
    """Fix glibc's allocator settings before any thread starts.

    Arenas: by default glibc gives every thread that allocates an arena of
    its own (up to eight per core); memory freed in them is rarely
    returned, and the server's thirty-odd threads (writers, committer,
    hashing and I/O pools) made RSS creep up for as long as it ran: 165 →
    203 MiB over the last ten minutes of a 15-minute soak, against 120 →
    128 MiB with two arenas (bench/soak.py, same load).

    Thresholds: glibc raises its mmap threshold to the size of every
    mmapped block that is freed (up to 32 MiB), and the trim threshold to
    twice that. After the first large body, bodies of many MiB came from
    the heaps, and freed, stayed there until trimmed: 20-28 MiB of every
    30 s between ``MemoryTrim`` passes in a soak. Setting them fixes them:
    a block of 4 MiB or more is mapped on its own and unmapped when freed,
    and a heap gives back its top once 8 MiB of it is free. Not lower: at
    256 KiB every 1 MiB request body was mapped and unmapped (page faults,
    TLB shootdowns), and batch uploads fell by 17% (bench_ingest --quick,
    11,979 → 9,921 chunks/s in back-to-back runs).
    Has no effect on other C libraries.
    """
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return
    for param, value in ((_M_ARENA_MAX, MALLOC_ARENAS), (_M_MMAP_THRESHOLD, MMAP_THRESHOLD),
                         (_M_TRIM_THRESHOLD, TRIM_THRESHOLD)):
        mallopt(param, value)


def serve(cfg: Config) -> None:
    tune_malloc()
    setup_logging(cfg.log_level)
    # The writer, committer and hashing threads release the GIL for every
    # fdatasync/pwrite/hash; with the default 5 ms switch interval each of
    # them then waits up to 5 ms to get it back from a busy event loop, which
    # caps group commit at a few hundred groups per second.
    sys.setswitchinterval(float(os.environ.get("OBJVAULT_SWITCH_INTERVAL", "0.0005")))
    import uvloop
    # On Python < 3.12.9 aiohttp joins the response head and body into one new
    # bytes object, to avoid a bug in older asyncio transports' writelines.
    # uvloop's transports implement writelines themselves, so here that join
    # is only a copy of every body: a tenth of a GET's CPU (perf).
    http_writer.SKIP_WRITELINES = False
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(_serve(cfg))


Answer = Callable[[E.VaultError], web.Response]
"""A listener's error answer where no handler runs (a malformed request, a
head that came too slowly, one connection too many): the native API's
problem document, or the S3 front door's XML error."""


def _raw_answer(resp: web.Response) -> bytes:
    """A whole answer that closes the connection, for the protocol to write
    where no request handler is there to answer."""
    body = cast(bytes, resp.body)  # the listeners' answers build their bodies from bytes
    head = f"HTTP/1.1 {resp.status} {resp.reason}\r\n"
    head += "".join(f"{k}: {v}\r\n" for k, v in resp.headers.items())
    head += f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    return head.encode() + body


_HEAD_TIMEOUT = E.RequestTimeout("the request head did not arrive in time")
_TOO_MANY = E.Unavailable("too many connections; retry", retry_after=1)


class _HalfCloseHandler(RequestHandler):
    """A client that half-closes its socket in the middle of a body still gets
    an answer (400 ``truncated``) instead of a dropped connection; one that
    half-closes after whole requests gets their answers, then the close.

    The payload of the newest parsed request is remembered as it is parsed:
    the head, a short body and the FIN can arrive together, before the
    handler task has even started.

    Slow and surplus clients (limits on the :class:`_Server`):

    * A request head must be complete within ``header_timeout`` of the
      connection's start (the first request) or of its own first byte (the
      next ones); else 408 and a close when part of a head came, a close
      without an answer when nothing did. Waiting with no byte at all between
      requests is aiohttp's ``keepalive_timeout``.
    * A connection beyond ``max_connections`` gets 503 (Retry-After: 1) and
      is closed at once, before anything of it is read.
    * A request line without an HTTP version (HTTP/0.9) gets 400 and a close.

    Every such answer, and that of a request the parser refuses (a malformed
    line or header, a head over 8 KiB), is the listener's own kind of error
    (``_Server.answer``), never the HTTP library's plain text.
    """

    _last_payload = None
    _head_timer: asyncio.TimerHandle | None = None
    _head_started = False  # bytes of a request head arrived, not yet the whole head
    _counted = False
    _answered = None  # the payload of the request last answered
    _peer_done = False  # the client ended its side: close once what it sent is answered
    _parsed = 0  # requests parsed on this connection
    _finished = 0  # answers sent

    def __init__(self, manager: _Server, **kwargs: Any) -> None:
        super().__init__(manager, **kwargs)
        # The limits' holder: aiohttp clears its _manager when the connection is lost.
        self._server = manager

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        server = self._server
        if server.live >= server.max_connections:
            # Refused before reading: no task, no parser, no timers. A client
            # still sending its request may see a reset instead of the 503.
            refusal = _raw_answer(server.refusal(_TOO_MANY))
            cast(asyncio.Transport, transport).write(refusal)  # a TCP connection's: it writes
            transport.close()
            return
        server.live += 1
        self._counted = True
        super().connection_made(transport)
        self._arm_head_timer()

    def connection_lost(self, exc: BaseException | None) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None
        if self._counted:
            self._counted = False
            self._server.live -= 1
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        last = self._last_payload
        between = last is None or last.is_eof()  # no body under way: these bytes begin a head
        n = len(self._messages)
        super().data_received(data)
        if len(self._messages) > n:
            self._parsed += len(self._messages) - n
            for i in range(n, len(self._messages)):
                if getattr(self._messages[i][0], "version", (1, 1)) < (1, 0):
                    # llhttp takes "GET /path" as HTTP/0.9; aiohttp would answer it in kind.
                    exc = BadHttpMessage("request line without an HTTP version")
                    self._messages[i] = (_ErrInfo(status=400, exc=exc, message=exc.message), EMPTY_PAYLOAD)
            self._last_payload = self._messages[-1][1]
            self._head_started = False
            if self._head_timer is not None:
                self._head_timer.cancel()
                self._head_timer = None
        elif between and data and not self._head_started:
            # No longer idle: from here the header timeout applies, not the
            # keep-alive one (aiohttp re-arms that after the answer).
            self._head_started = True
            if self._keepalive_handle is not None:
                self._keepalive_handle.cancel()
                self._keepalive_handle = None
            if self._head_timer is None:
                self._arm_head_timer()

    async def finish_response(self, request: web.BaseRequest, resp: web.StreamResponse,
                              start_time: float | None) -> tuple[web.StreamResponse, bool]:
        self._answered = request.content
        done = await super().finish_response(request, resp, start_time)
        self._finished += 1
        if self._peer_done and self._finished >= self._parsed:
            self.force_close()  # the transport still sends what is buffered, then closes
        return done

    def handle_error(self, request: web.BaseRequest, status: int = 500, exc: BaseException | None = None,
                     message: str | None = None) -> web.StreamResponse:
        """The answer to a request the parser refused (400) or whose handling
        failed outside the application (500), in the listener's error format;
        the connection closes after it."""
        if request.writer.output_size > 0:  # part of an answer went: the connection is broken
            raise ConnectionError("an answer was under way; it cannot become an error answer")
        if status == 400:
            detail = f"malformed request: {message or exc or 'unreadable'}"
            log.info("malformed request", extra={"detail": detail[:200]})
            err: E.VaultError = E.BadRequest(detail)
        else:
            log.error("request failed outside the application", exc_info=exc)
            err = E.VaultError()
        resp = self._server.refusal(err)
        resp.force_close()
        return resp

    # asyncio.Protocol's eof_received may return True (keep our side open);
    # aiohttp annotates its override as returning None.
    def eof_received(self) -> bool | None:  # type: ignore[override]
        payload = self._last_payload
        # Once answered, aiohttp only drains what is left of the body: an
        # error there would be logged as unhandled.
        if payload is not None and not payload.is_eof() and payload is not self._answered:
            payload.set_exception(ContentLengthError("body ended before Content-Length"))
            return True  # keep our side open to answer
        if self._parsed > self._finished:
            self._peer_done = True
            return True  # keep our side open to answer what came whole
        return None

    def _arm_head_timer(self) -> None:
        timeout = self._server.header_timeout if self._manager is not None else None
        if timeout:
            self._head_timer = self._loop.call_later(timeout, self._head_expired)

    def _head_expired(self) -> None:
        self._head_timer = None
        if self.transport is None or self._force_close:
            return
        if self._request_in_progress or self._messages:
            # A request is being answered; a head behind it gets its time afresh.
            self._arm_head_timer()
            return
        if self._head_started:
            self.transport.write(_raw_answer(self._server.refusal(_HEAD_TIMEOUT)))
        self.force_close()


class _Server(web.Server):
    header_timeout: float | None = None
    max_connections: int = 1 << 30
    answer: Answer = staticmethod(http.problem)
    live = 0
    """Connections being served (counted by :class:`_HalfCloseHandler`)."""

    def refusal(self, err: E.VaultError) -> web.Response:
        """The listener's answer to ``err`` where no application handler runs
        (so no ``on_response_prepare`` names the server)."""
        resp = self.answer(err)
        resp.headers["Server"] = http.SERVER_NAME
        return resp

    def __call__(self) -> RequestHandler:
        return _HalfCloseHandler(self, loop=self._loop, **self._kwargs)


class _Runner(web.AppRunner):
    """An AppRunner whose connections are :class:`_HalfCloseHandler`s with these limits."""

    def __init__(self, app: web.Application, *, header_timeout: float | None = None,
                 max_connections: int = 1 << 30, answer: Answer = http.problem, **kwargs) -> None:
        super().__init__(app, **kwargs)
        self._limits = (header_timeout, max_connections)
        self._answer = answer

    async def _make_server(self) -> web.Server:
        server = await super()._make_server()
        server.__class__ = _Server
        limited = cast(_Server, server)  # its class is _Server from here on
        limited.header_timeout, limited.max_connections = self._limits
        limited.answer = self._answer
        return limited


async def drain(app: web.Application, runner: web.AppRunner, timeout: float) -> None:
    """Stop accepting connections, then let requests in flight (bodies included)
    finish before aiohttp's own shutdown, which drops unread request bodies."""
    state = app[http.STATE]
    state.draining = True
    for site in list(runner.sites):
        server = getattr(site, "_server", None)
        if server is not None:
            server.close()
    deadline = time.monotonic() + timeout
    while state.inflight > 0 and time.monotonic() < deadline:
        await asyncio.sleep(0.05)


async def _serve(cfg: Config) -> None:
    # Signals first: a SIGTERM that arrives while the listeners start (the main
    # one answers /healthz before the S3 one is up) is a clean stop, not a kill.
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    memdiag.install(loop)
    app = build_app(cfg)
    # auto_decompress off: a Content-Encoding on a chunk is refused (415), never decoded.
    runner = _Runner(app, header_timeout=cfg.header_timeout_seconds, max_connections=cfg.max_connections,
                     keepalive_timeout=cfg.keepalive_timeout_seconds,
                     access_log=None, handle_signals=False, shutdown_timeout=30.0, auto_decompress=False)
    await runner.setup()
    ssl_ctx = None
    if cfg.tls_cert_file:
        ssl_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ssl_ctx.load_cert_chain(cfg.tls_cert_file, cfg.tls_key_file)
    metrics_runner = None
    if cfg.metrics_listen:
        # Every series, tenants' included, without a token: its own app that
        # serves nothing else, on an address only the scraper should reach.
        # It speaks TLS exactly when the main listener does, with the same
        # certificate; it starts first, so a ready server is a scrapable one.
        from .metrics import CONTENT_TYPE
        metrics = app[http.METRICS]

        async def full_metrics(request: web.Request) -> web.Response:
            return web.Response(body=metrics.render(full=True), headers={"Content-Type": CONTENT_TYPE})

        metrics_app = web.Application()
        metrics_app.on_response_prepare.append(http.name_the_server)
        metrics_app.router.add_get("/metrics", full_metrics)
        metrics_app.router.add_get("/healthz", http.healthz)
        metrics_runner = web.AppRunner(metrics_app, access_log=None, handle_signals=False)
        await metrics_runner.setup()
        mhost, mport = cfg.metrics_listen.rsplit(":", 1)
        await web.TCPSite(metrics_runner, mhost.strip("[]"), int(mport), ssl_context=ssl_ctx,
                          reuse_address=True).start()
        log.info("metrics listening", extra={"metrics_listen": cfg.metrics_listen, "tls": bool(ssl_ctx)})
    site = web.TCPSite(runner, cfg.host, cfg.port, ssl_context=ssl_ctx, backlog=1024, reuse_address=True)
    await site.start()
    log.info("listening", extra={"listen": cfg.listen, "tls": bool(ssl_ctx),
                                 "admin_token_file": str(cfg.admin_token_path.resolve())})
    s3_runner = await _start_s3(cfg, app, ssl_ctx)
    await stop.wait()
    log.info("shutting down: draining requests")
    if metrics_runner is not None:  # before the vault closes under a scrape
        await metrics_runner.cleanup()
    if s3_runner is not None:
        await s3_runner.cleanup()
    await drain(app, runner, 30.0)
    await runner.cleanup()


# -- the S3 front door: its own listener over the same services ----------------------


async def _start_s3(cfg: Config, app: web.Application, ssl_ctx: ssl.SSLContext | None) -> web.AppRunner | None:
    """Serve the S3 API on ``[s3] listen`` (TLS like the main listener) over the
    main application's services (the expiry of abandoned multipart uploads is
    a job of :class:`Workers`); None when it is off."""
    if not cfg.s3.listen:
        return None
    from .s3 import front as s3_front
    s3_app = s3_front.build_app(app[http.SERVICES], app[http.BUDGET], cfg.s3, app[http.METRICS])
    runner = _Runner(s3_app, header_timeout=cfg.header_timeout_seconds, max_connections=cfg.max_connections,
                     answer=s3_front.listener_error,
                     keepalive_timeout=cfg.keepalive_timeout_seconds, access_log=None, handle_signals=False,
                     shutdown_timeout=30.0, auto_decompress=False)
    await runner.setup()
    host, port = cfg.s3.listen.rsplit(":", 1)
    await web.TCPSite(runner, host.strip("[]"), int(port), ssl_context=ssl_ctx, backlog=1024,
                      reuse_address=True).start()
    log.info("S3 listening", extra={"s3_listen": cfg.s3.listen, "region": cfg.s3.region, "tls": bool(ssl_ctx)})
    return runner
