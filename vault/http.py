"""HTTP front: routing, authentication, validation, error mapping.

Handlers parse, authenticate, validate, call the typed services
(:mod:`vault.services`) and build the response; no handler touches a file
or RocksDB itself.
Every :class:`vault.errors.VaultError` becomes an RFC 9457 problem here,
in one place (:func:`problem`).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import concurrent.futures
import json
import logging
import os
import re
import socket
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, AsyncIterator, Awaitable, Callable, Protocol

import msgspec
from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

from . import errors as E
from .budget import MemoryBudget
from .body import Body
from .meta import ChunkIds, Usage, VaultRec
from .metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from .names import chunk_id, decode_path_segment, object_key, vault_name
from .policy import Principal
from .services import ObjectEntry, Services
from .services.objects import MAX_META_BYTES, MAX_OBJECT_CHUNKS
from .timefmt import iso

log = logging.getLogger("objvault.http")

SERVICES: web.AppKey[Services] = web.AppKey("services", Services)
METRICS: web.AppKey[Any] = web.AppKey("metrics", object)


def _starting() -> list[str]:
    return ["starting"]


@dataclass
class ServerState:
    """What changes while the server runs: the application itself is frozen
    once started, this object is not."""

    body_idle_timeout_seconds: float
    ready: Callable[[], list[str]] = _starting
    """The problems that make ``/readyz`` answer 503 (none: ready)."""
    inflight: int = 0
    draining: bool = False


STATE: web.AppKey[ServerState] = web.AppKey("state", ServerState)
BUDGET: web.AppKey[MemoryBudget] = web.AppKey("budget", MemoryBudget)
HELD = "objvault.held"

PROBLEM = "application/problem+json"
SERVER_NAME = "objvault"
"""Every answer's ``Server`` header: the product, not the versions of the
language and HTTP library under it."""
JSON_BODY_LIMIT = 16 << 20
OBJECT_BODY_LIMIT = 80 << 20
MAX_MISSING_IDS = 100_000
MAX_LIST = 10_000
# Decoded JSON takes about twice its text in Python objects (a 64-character
# id string is a 113-byte object), and the handler builds its own values
# from those: a JSON body is held at this many times its size.
JSON_HOLD_FACTOR = 4
# Larger JSON bodies are decoded in a thread (the decoder holds the GIL, but
# for at most ~0.1 s per 80 MiB, measured, instead of in the loop's own time).
INLINE_JSON_BYTES = 256 << 10
# Client input echoed in a problem detail is cut to this many characters.
MAX_DETAIL_CHARS = 1024
AUTH_CHALLENGE = 'Bearer realm="objvault", Basic realm="objvault"'


# The native API's HTTP status of every domain error, by its code: the one
# place a storage or service error meets HTTP (restic shares it).
STATUS: dict[str, int] = {
    "bad_request": 400, "bad_name": 400, "bad_json": 400, "digest_mismatch": 400, "truncated": 400,
    "unauthorized": 401,
    "forbidden": 403, "reserved_key": 403, "append_only": 403, "retention": 403,
    "no_such_vault": 404, "no_such_chunk": 404, "no_such_object": 404, "no_such_key": 404, "not_found": 404,
    "method_not_allowed": 405,
    "request_timeout": 408,
    "vault_exists": 409, "vault_locked": 409, "missing_chunks": 409, "conflict": 409,
    "length_required": 411,
    "precondition_failed": 412,
    "too_large": 413,
    "unsupported_encoding": 415,
    "range_not_satisfiable": 416,
    "unavailable": 503,
    "quota_exceeded": 507, "no_space": 507,
    "bad_bucket_name": 400, "invalid_part": 400, "too_small": 400,
    "no_such_bucket": 404, "no_such_upload": 404,
    "bucket_exists": 409, "bucket_owned": 409, "bucket_not_empty": 409,
    "object_locked": 403, "no_such_version": 404, "invalid_bucket_state": 409,
}


async def name_the_server(request: web.Request, resp: web.StreamResponse) -> None:
    """``on_response_prepare``: the ``Server`` header of an application's answers."""
    resp.headers["Server"] = SERVER_NAME


def status_of(err: E.VaultError) -> int:
    return STATUS.get(err.code, 500)


def problem(err: E.VaultError, instance: str = "", status: int | None = None) -> web.Response:
    status = status or status_of(err)
    detail = err.detail if len(err.detail) <= MAX_DETAIL_CHARS else err.detail[:MAX_DETAIL_CHARS] + "…"
    body = {"type": f"https://objvault.dev/problems/{err.code}", "title": err.title, "status": status,
            "detail": detail, "code": err.code}
    if instance:
        body["instance"] = instance
    body.update(err.extra)
    headers = {}
    if status == 401:
        headers["WWW-Authenticate"] = AUTH_CHALLENGE
    if status == 416 and "size" in err.extra:
        headers["Content-Range"] = f"bytes */{err.extra['size']}"
    if "retry_after" in err.extra:
        headers["Retry-After"] = str(err.extra["retry_after"])
    return web.Response(status=status, body=json.dumps(body).encode(), content_type=PROBLEM,
                        headers=headers)


def _json(data: Any, status: int = 200) -> web.Response:
    return web.Response(status=status, body=json.dumps(data, separators=(",", ":")).encode(),
                        content_type="application/json")


def route_of(request: web.Request) -> str:
    info = request.match_info
    route = getattr(info, "route", None)
    resource = getattr(route, "resource", None)
    if resource is None:
        return "unmatched"
    return resource.canonical


@web.middleware
async def error_middleware(request: web.Request, handler) -> web.StreamResponse:
    t0 = time.perf_counter()
    metrics = request.app.get(METRICS)
    state = request.app[STATE]
    state.inflight += 1
    try:
        resp = await _handle(request, handler)
    finally:
        state.inflight -= 1
        budget = request.app.get(BUDGET)
        if budget is not None:
            budget.release(request.pop(HELD, 0))
    if state.draining or request.get(SPLICED):
        resp.force_close()
    if metrics is not None:
        metrics.observe_request(route_of(request), request.method, resp.status, time.perf_counter() - t0)
    return resp


async def _handle(request: web.Request, handler) -> web.StreamResponse:
    try:
        resp = await handler(request)
    except E.VaultError as e:
        resp = problem(e, request.path)
        if resp.status >= 500:
            log.error("request failed", extra={"route": route_of(request), "code": e.code, "detail": e.detail})
        if not _body_consumed(request):
            resp.force_close()
    except web.HTTPException as e:
        if e.status == 404:
            resp = problem(E.NotFound(f"no route for {request.method} {request.path}"), request.path)
        elif e.status == 405:
            resp = problem(E.MethodNotAllowed(f"{request.method} is not allowed here"), request.path)
            allow = e.headers.get("Allow")
            if allow:
                resp.headers["Allow"] = allow
        elif e.status == 413:
            resp = problem(E.TooLarge("request body too large"), request.path)
        elif e.status < 400:
            raise
        else:
            err = E.VaultError(e.reason or "error")
            err.code, err.title = "http_" + str(e.status), e.reason or "Error"
            resp = problem(err, request.path, e.status)
    except (ConnectionResetError, asyncio.CancelledError):
        raise
    except Exception:
        log.exception("unhandled error", extra={"route": route_of(request)})
        resp = problem(E.VaultError("internal error"), request.path)
    return resp


def _body_consumed(request: web.Request) -> bool:
    if not request.body_exists:
        return True
    return request.content.at_eof()


# -- helpers ---------------------------------------------------------------------


def secret_of(request: web.Request) -> str | None:
    auth = request.headers.get("Authorization", "")
    scheme, _, value = auth.partition(" ")
    scheme = scheme.lower()
    if scheme == "bearer":
        return value.strip() or None
    if scheme == "basic":
        try:
            decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            raise E.Unauthorized("malformed Basic credentials") from None
        _, sep, password = decoded.partition(":")
        return password if sep else None
    return None


def principal(request: web.Request) -> Principal:
    return request.app[SERVICES].auth.authenticate(secret_of(request))


def require_admin(request: web.Request) -> Principal:
    who = principal(request)
    if not who.admin:
        raise E.Forbidden("this needs the admin token")
    return who


def _raw_segments(request: web.Request) -> list[str]:
    return request.raw_path.split("?", 1)[0].split("/")


def vault_param(request: web.Request) -> str:
    """The vault name from the raw path, decoded once, validated."""
    raw = _raw_segments(request)[3]
    return vault_name(decode_path_segment(raw))


def object_param(request: web.Request) -> str:
    """The object key: everything after ``/objects/`` in the raw path, decoded once."""
    segs = _raw_segments(request)
    return object_key(decode_path_segment("/".join(segs[5:])))


async def hold_memory(request: web.Request, nbytes: int) -> None:
    """Take ``nbytes`` of the server's memory budget for this request, until
    its answer (see :mod:`vault.budget`); raises Unavailable (503) when none
    frees up in time. Call it once per request, before buffering."""
    budget = request.app.get(BUDGET)
    if budget is not None:
        request[HELD] = request.get(HELD, 0) + await budget.acquire(nbytes)


def buffered_reader(request: web.Request) -> tuple[Callable[[int], Awaitable[bytes | bytearray]],
                                                  Callable[[], AsyncIterator[bytes]]]:
    """:func:`body_readers` whose ``read(n)``, which buffers n bytes whole,
    first takes them from the memory budget."""
    _, pieces = body_readers(request)

    async def held_read(n: int) -> bytes | bytearray:
        await hold_memory(request, n)
        return await read_into(request, n)

    return held_read, pieces


def request_body(request: web.Request) -> Body:
    """The request's body as the services take it: buffered (from the memory
    budget), streamed, or spliced from the socket when it can be."""
    if request.headers.get("Content-Encoding"):
        raise E.UnsupportedEncoding("Content-Encoding is not supported: send the bytes as they are")
    length = request.content_length
    if length is None:
        raise E.LengthRequired("uploads need a Content-Length")
    read, pieces = buffered_reader(request)
    return Body(length, read, pieces, BodySplice.of(request))


async def read_into(request: web.Request, n: int) -> bytearray:
    """Exactly ``n`` body bytes, copied piece by piece into one buffer as they
    arrive (``readexactly`` would hold the pieces and their join at once:
    twice the body). Raises Truncated."""
    buf = bytearray(n)
    if n == 0:
        return buf
    view = memoryview(buf)
    got = 0
    async for piece in body_readers(request)[1]():
        end = got + len(piece)
        if end > n:
            raise E.BadRequest("body longer than Content-Length")
        view[got:end] = piece
        got = end
        if got == n:
            break
    if got != n:
        raise E.Truncated(f"body ended after {got} of {n} bytes")
    return buf


_JSON = msgspec.json.Decoder()


def decode_json(data: bytes | bytearray) -> Any:
    """Decode a JSON document; any malformed one (nesting deeper than the
    interpreter's recursion limit, about 1,000, included) is BadJSON."""
    try:
        return _JSON.decode(data)
    except msgspec.DecodeError as e:
        raise E.BadJSON(f"malformed JSON: {e}") from None
    except RecursionError:
        raise E.BadJSON("malformed JSON: nested too deeply") from None


async def read_json(request: web.Request, limit: int = JSON_BODY_LIMIT) -> Any:
    buf = await read_json_bytes(request, limit)
    if not buf:
        return {}
    if len(buf) <= INLINE_JSON_BYTES:
        return decode_json(buf)
    return await asyncio.get_running_loop().run_in_executor(None, decode_json, buf)


async def read_json_bytes(request: web.Request, limit: int) -> bytes | bytearray:
    """The raw body of a JSON request, at most ``limit`` bytes, held in the memory
    budget (with what decoding it will cost) until the answer."""
    if request.headers.get("Content-Encoding"):
        raise E.UnsupportedEncoding("Content-Encoding is not supported")
    length = request.content_length
    if length is not None and length > limit:
        raise E.TooLarge(f"JSON body larger than {limit} bytes")
    await hold_memory(request, (limit if length is None else length) * JSON_HOLD_FACTOR)
    buf: bytes | bytearray
    if length is not None:
        buf = await read_into(request, length)
    else:
        parts = []
        got = 0
        async for piece in body_readers(request)[1]():
            got += len(piece)
            if got > limit:
                raise E.TooLarge(f"JSON body larger than {limit} bytes")
            parts.append(piece)
        buf = b"".join(parts)
        del parts
    return buf


async def read_json_object(request: web.Request, limit: int = JSON_BODY_LIMIT) -> dict:
    body = await read_json(request, limit)
    if not isinstance(body, dict):
        raise E.BadJSON("expected a JSON object")
    return body


_RANGE_RE = re.compile(r"^bytes=(\d*)-(\d*)$")
# A position with more digits than this is past the end of anything stored
# (and int() of thousands of digits is refused by Python, or slow).
_MAX_DIGITS = 18
_FAR = 1 << 62


def _position(digits: str) -> int:
    return _FAR if len(digits.lstrip("0")) > _MAX_DIGITS else int(digits)


def parse_range(header: str | None, size: int) -> tuple[int, int] | None:
    """``(start, end)`` (end exclusive) for a single byte range, None for the whole body."""
    if not header:
        return None
    m = _RANGE_RE.match(header.strip())
    if not m:
        return None  # multiple or malformed ranges: RFC 9110 allows serving the whole body
    a, b = m.groups()
    if a == "" and b == "":
        return None
    shown = header if len(header) <= 80 else header[:80] + "…"
    if a == "":
        n = _position(b)
        if n == 0:
            raise E.RangeNotSatisfiable(f"range {shown!r} is empty", size=size)
        return max(0, size - n), size
    start = _position(a)
    last = _position(b) if b else None
    if start >= size or (last is not None and last < start):
        raise E.RangeNotSatisfiable(f"range {shown!r} outside 0-{size}", size=size)
    return start, size if last is None else min(size, last + 1)


def body_idle_seconds(request: web.Request) -> float:
    """How long a request body may stall (no byte arriving) before it fails with 408."""
    return request.app[STATE].body_idle_timeout_seconds


def body_readers(request: web.Request):
    """``read(n)`` (exactly n body bytes) and ``pieces()`` (the body as it arrives).

    Both raise Truncated when the body ends early and RequestTimeout (408)
    when no byte of it arrives for :func:`body_idle_seconds`: a client that
    stops sending holds a request only that long, however long its body.
    """
    idle = body_idle_seconds(request)
    content = request.content

    async def read(n: int) -> bytes:
        if n == 0:
            return b""
        try:
            # Usually the whole body is buffered already: no timer then
            # (an asyncio.timeout costs ~6 us on uvloop, measured).
            data = content.read_nowait(n)
            if len(data) < n:
                blocks = [data] if data else []
                got = len(data)
                while got < n:
                    try:
                        async with asyncio.timeout(idle):
                            block = await content.read(n - got)
                    except TimeoutError:
                        raise E.RequestTimeout(f"no body bytes for {idle:g} s ({got} of {n} received)") from None
                    if not block:
                        raise E.Truncated(f"body ended after {got} of {n} bytes")
                    blocks.append(block)
                    got += len(block)
                data = b"".join(blocks)
        except HttpProcessingError:
            raise E.Truncated(f"body ended before {n} bytes") from None
        metrics = request.app.get(METRICS)
        if metrics is not None:
            metrics.bytes_in_total.inc(n)
        return data

    async def pieces() -> AsyncIterator[bytes]:
        # readchunk() hands over the buffered pieces one by one, as received;
        # iter_any() would first join them into a new bytes object.
        metrics = request.app.get(METRICS)
        got = 0
        try:
            while True:
                try:
                    async with asyncio.timeout(idle):
                        piece, end_of_http_chunk = await content.readchunk()
                except TimeoutError:
                    raise E.RequestTimeout(f"no body bytes for {idle:g} s ({got} received)") from None
                if not piece:
                    if end_of_http_chunk:
                        continue
                    return
                got += len(piece)
                if metrics is not None:
                    metrics.bytes_in_total.inc(len(piece))
                yield piece
        except HttpProcessingError:
            raise E.Truncated("body ended early") from None

    return read, pieces


class SocketSink(Protocol):
    """Where a spliced body goes: :class:`vault.store.StreamWriter`."""

    def splice_from(self, sock: int, n: int, head: bytes = b"", idle: float = 60.0) -> None: ...


class BodySplice:
    """Hands the rest of a request body's socket to the store, which splices
    it straight into its file (:meth:`vault.store.StreamWriter.splice_from`).

    The bytes then never pass through aiohttp (three copies fewer than
    through its parser and stream reader). The connection is closed after
    the answer, because aiohttp's parser never sees those bytes. Only for
    plain-TCP requests with a Content-Length.
    """

    IDLE_SECONDS = 60.0
    """The default of :func:`body_idle_seconds` (config ``body_idle_timeout_seconds``)."""
    # Bodies spliced at once, each holding a thread of its own pool while it
    # arrives: slow clients can hold these, never the threads everything
    # else runs on. When all are taken a body goes through aiohttp.
    SLOTS = 8
    _busy = 0
    _pool: concurrent.futures.ThreadPoolExecutor | None = None

    def __init__(self, request: web.Request) -> None:
        self.request = request
        self.idle = body_idle_seconds(request)

    @classmethod
    def of(cls, request: web.Request) -> "BodySplice | None":
        transport = request.transport
        if (not hasattr(os, "splice") or transport is None or request.content_length is None
                or "Transfer-Encoding" in request.headers or transport.get_extra_info("sslcontext") is not None
                or transport.get_extra_info("ssl_object") is not None or transport.get_extra_info("socket") is None):
            return None
        return cls(request)

    async def into(self, sink: SocketSink, n: int) -> bool:
        """Let ``sink`` take the ``n`` body bytes from the socket.

        False, with nothing read, when every slot is taken. Raises Truncated
        or RequestTimeout for the client's failures, and what the sink
        raises for the file's.
        """
        cls = type(self)
        if cls._busy >= cls.SLOTS:
            return False
        if cls._pool is None:
            cls._pool = concurrent.futures.ThreadPoolExecutor(cls.SLOTS, thread_name_prefix="splice")
        cls._busy += 1
        try:
            await self._into(sink, n)
        finally:
            cls._busy -= 1
        return True

    async def _into(self, sink: SocketSink, n: int) -> None:
        request = self.request
        try:
            head = request.content.read_nowait(n)  # what aiohttp has already taken off the socket
        except HttpProcessingError:
            raise E.Truncated(f"body ended before {n} bytes") from None
        transport = request.transport
        sock = -1
        if len(head) < n:
            if transport is None or transport.is_closing():
                raise E.Truncated(f"body ended after {len(head)} of {n} bytes")
            # From here on the socket is ours until the body is in: the
            # transport stops reading (nothing in aiohttp resumes it while no
            # one reads the payload), and the connection closes after the
            # answer, because aiohttp's parser never sees these bytes.
            transport.pause_reading()
            request[SPLICED] = True
            # The thread reads through its own descriptor of the socket: the
            # transport may close its one meanwhile (shutdown), and a number that
            # was closed could be reused by another file.
            sock = os.dup(transport.get_extra_info("socket").fileno())
        loop = asyncio.get_running_loop()
        job = loop.run_in_executor(self._pool, sink.splice_from, sock, n, head, self.idle)
        try:
            await asyncio.shield(job)
        except asyncio.CancelledError:
            # Never leave the thread writing into a file its owner is about
            # to remove: end the body early (read side shut) and wait for it.
            if sock >= 0:
                try:
                    with socket.socket(fileno=os.dup(sock)) as so:
                        so.shutdown(socket.SHUT_RD)
                except OSError:
                    pass
            await asyncio.gather(job, return_exceptions=True)
            raise
        except EOFError:
            raise E.Truncated(f"body ended before {n} bytes") from None
        except TimeoutError:
            raise E.RequestTimeout(f"no body bytes for {self.idle:g} s") from None
        except ConnectionError as e:
            raise E.Truncated(f"body ended early: {e}") from None
        finally:
            if sock >= 0 and job.done():  # else still in use: the process is going down
                os.close(sock)
        request.content.feed_eof()
        metrics = request.app.get(METRICS)
        if metrics is not None:
            metrics.bytes_in_total.inc(n)


SPLICED = "objvault.spliced"


# -- operations --------------------------------------------------------------------


async def healthz(request: web.Request) -> web.Response:
    return _json({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    problems = request.app[STATE].ready()
    if problems:
        return _json({"status": "unavailable", "problems": problems}, status=503)
    return _json({"status": "ready"})


async def metrics_handler(request: web.Request) -> web.Response:
    """``GET /metrics``: every series for the metrics token or the admin token
    (Bearer, or a Basic password); without them, or with any other
    credential, 200 with only the series that name no vault.

    Never 401: a scraper set up before per-vault series needed a token keeps
    its global series instead of failing.
    """
    metrics = request.app[METRICS]
    full = False
    try:
        secret = secret_of(request)
        full = metrics.is_scrape_token(secret) or (
            secret is not None and request.app[SERVICES].auth.authenticate(secret).admin)
    except E.Unauthorized:  # a wrong token or malformed Basic: the reduced view, as with none
        pass
    return web.Response(body=metrics.render(full=full), headers={"Content-Type": METRICS_CONTENT_TYPE})


async def openapi_handler(request: web.Request) -> web.Response:
    from .openapi import spec
    return _json(spec())


# -- a vault, read with its own key (the admin's vault and key handlers: admin_http.py)


def vault_doc(rec: VaultRec, usage: Usage) -> dict:
    doc: dict[str, Any] = {"name": rec.name, "created": iso(rec.created), "quota_bytes": rec.quota_bytes,
                           "append_only": rec.append_only, "retention_days": rec.retention_days,
                           "usage": usage.as_dict()}
    if rec.stale_after_days is not None:  # shown only where set: the document keeps its fields
        doc["stale_after_days"] = rec.stale_after_days
    return doc


def vault_json(svc: Services, rec: VaultRec) -> dict:
    return vault_doc(rec, svc.vaults.usage(rec.vid))


async def get_vault(request: web.Request) -> web.Response:
    who = principal(request)
    svc = request.app[SERVICES]
    rec = svc.auth.vault_for(who, vault_param(request), "read")
    return _json(vault_json(svc, rec))


# -- chunks ------------------------------------------------------------------------


def _chunk_target(request: web.Request, role: str) -> tuple[Services, VaultRec, bytes]:
    svc = request.app[SERVICES]
    name = vault_param(request)
    who = principal(request)
    digest = chunk_id(decode_path_segment(_raw_segments(request)[5]))
    return svc, svc.auth.vault_for(who, name, role), digest


async def put_chunk(request: web.Request) -> web.Response:
    svc, rec, digest = _chunk_target(request, "append")
    existed = await svc.chunks.put(rec, digest, request_body(request))
    return web.Response(status=200 if existed else 201, headers={"ETag": f'"{digest.hex()}"'})


async def get_chunk(request: web.Request) -> web.Response:
    svc, rec, digest = _chunk_target(request, "read")
    meta = svc.chunks.meta(rec, digest)
    if meta is None:
        raise E.NoSuchChunk(f"vault {rec.name!r}: no such chunk {digest.hex()}")
    rng = parse_range(request.headers.get("Range"), meta.length)
    headers = {"ETag": f'"{digest.hex()}"', "Accept-Ranges": "bytes"}
    if rng is None:
        data = await svc.chunks.get(rec, digest, meta=meta)
        return web.Response(body=data, headers=headers, content_type="application/octet-stream")
    start, end = rng
    data = await svc.chunks.get(rec, digest, start, end, meta=meta)
    headers["Content-Range"] = f"bytes {start}-{end - 1}/{meta.length}"
    return web.Response(status=206, body=data, headers=headers, content_type="application/octet-stream")


async def head_chunk(request: web.Request) -> web.StreamResponse:
    svc, rec, digest = _chunk_target(request, "read")
    meta = svc.chunks.meta(rec, digest)
    if meta is None:
        raise E.NoSuchChunk(f"vault {rec.name!r}: no such chunk {digest.hex()}")
    return await head_response(request, meta.length, {"ETag": f'"{digest.hex()}"', "Accept-Ranges": "bytes"})


async def head_response(request: web.Request, length: int, headers: dict) -> web.StreamResponse:
    """An answer to HEAD that announces ``length`` bytes without sending them."""
    resp = web.StreamResponse(headers=headers)
    resp.content_type = "application/octet-stream"
    resp.content_length = length
    await resp.prepare(request)
    await resp.write_eof()
    return resp


_HEX_RUN = re.compile(r"[0-9a-f]*")


# Ids decoded per hex call: each call holds the GIL, so a million ids are
# decoded in slices of a few milliseconds rather than one of ~0.2 s.
_IDS_PER_SLICE = 16384


def chunk_ids(ids: Any, what: str = "'ids'") -> list[bytes]:
    """Validate a JSON list of chunk ids in bulk (one hex decode per slice of ids)."""
    if not isinstance(ids, list):
        raise E.BadRequest(f"{what} must be a list of chunk ids")
    if not all(type(i) is str and len(i) == 64 for i in ids):
        bad = next(i for i in ids if type(i) is not str or len(i) != 64)
        raise E.BadName(f"invalid chunk id {str(bad)[:80]!r}: expected 64 lowercase hex characters")
    out: list[bytes] = []
    for k in range(0, len(ids), _IDS_PER_SLICE):
        part = ids[k:k + _IDS_PER_SLICE]
        joined = "".join(part)
        try:
            raw = bytes.fromhex(joined)
        except ValueError:
            raw = b""
        # fromhex also takes upper case and skips whitespace: the length and the
        # lower-case comparison rule those out (a regex over the whole string
        # costs five times as much).
        if len(raw) != 32 * len(part) or joined.lower() != joined:
            for i in part:
                chunk_id(i)  # names the offending id
        out += [raw[j:j + 32] for j in range(0, len(raw), 32)]
    return out


async def missing_chunks(request: web.Request) -> web.Response:
    svc = request.app[SERVICES]
    rec = svc.auth.vault_for(principal(request), vault_param(request), "read")
    body = await read_json_object(request)
    ids = body.get("ids")
    if isinstance(ids, list) and len(ids) > MAX_MISSING_IDS:
        raise E.TooLarge(f"at most {MAX_MISSING_IDS} ids per request")
    missing = await svc.chunks.missing(rec, chunk_ids(ids))
    return web.Response(body=('{"missing":["' + '","'.join(d.hex() for d in missing) + '"]}'
                              if missing else '{"missing":[]}').encode(), content_type="application/json")


BATCH_BODY_LIMIT = 64 << 20
MAX_BATCH_CHUNKS = 10_000
BATCH_TYPE = "application/vnd.objvault.chunks"


def parse_batch(body: bytes | bytearray) -> list[tuple[bytes, memoryview]]:
    """Frames of ``sha256 (32 bytes) | length (u32, big-endian) | bytes``, back to back."""
    mv = memoryview(body)
    out: list[tuple[bytes, memoryview]] = []
    pos = 0
    while pos < len(mv):
        if len(out) == MAX_BATCH_CHUNKS:
            raise E.TooLarge(f"at most {MAX_BATCH_CHUNKS} chunks per batch")
        if pos + 36 > len(mv):
            raise E.Truncated(f"batch frame {len(out)} is cut short")
        digest = bytes(mv[pos:pos + 32])
        n = int.from_bytes(mv[pos + 32:pos + 36], "big")
        pos += 36
        if pos + n > len(mv):
            raise E.Truncated(f"batch frame {len(out)} ({digest.hex()}) is cut short")
        out.append((digest, mv[pos:pos + n]))
        pos += n
    return out


async def put_chunk_batch(request: web.Request) -> web.Response:
    """Many small chunks in one request (an extension of the API; see docs/api.md)."""
    svc = request.app[SERVICES]
    rec = svc.auth.vault_for(principal(request), vault_param(request), "append")
    if request.headers.get("Content-Encoding"):
        raise E.UnsupportedEncoding("Content-Encoding is not supported")
    length = request.content_length
    if length is None:
        raise E.LengthRequired("batch uploads need a Content-Length")
    if length > BATCH_BODY_LIMIT:
        raise E.TooLarge(f"a batch is at most {BATCH_BODY_LIMIT} bytes")
    read, _ = buffered_reader(request)
    chunks = parse_batch(await read(length))
    if not chunks:
        raise E.BadRequest("empty batch")
    for _, body in chunks:
        if len(body) > svc.chunks.config.max_chunk_bytes:
            raise E.TooLarge(f"a chunk is at most {svc.chunks.config.max_chunk_bytes} bytes")
    existed = await svc.chunks.put_many(rec, chunks)
    return _json({"stored": existed.count(False), "existed": existed.count(True),
                  "chunks": [{"id": d.hex(), "status": 200 if ex else 201} for (d, _), ex in zip(chunks, existed)]})


# -- objects -------------------------------------------------------------------------


def _object_target(request: web.Request, role: str) -> tuple[Services, Principal, VaultRec, str]:
    svc = request.app[SERVICES]
    name = vault_param(request)
    key = object_param(request)
    who = principal(request)
    return svc, who, svc.auth.vault_for(who, name, role), key


class _Manifest(msgspec.Struct, forbid_unknown_fields=True):
    """An object PUT's body; both fields kept as JSON text until looked at."""

    chunks: msgspec.Raw = msgspec.Raw(b"null")
    meta: msgspec.Raw = msgspec.Raw(b"null")


_MANIFEST = msgspec.json.Decoder(_Manifest)
_SEPARATORS = (b'","', b'", "')


def plain_hex_ids(raw: bytes | memoryview) -> ChunkIds | None:
    """The ids of a JSON array of chunk ids written plainly (``["<hex>","<hex>"]``,
    with ``","`` or ``", "`` between them), decoded without making a string
    object per id; None for any other way of writing it (the caller decodes
    those generically).

    A million ids as strings cost 120 MB; this path keeps only their bytes,
    decoded a slice at a time so no call holds the GIL for long.
    """
    raw = memoryview(raw)  # slices of it are views: the body is never copied whole
    if raw == b"[]":
        return ChunkIds(b"")
    if len(raw) < 68 or raw[:2] != b'["' or raw[-2:] != b'"]':
        return None
    sep = raw[66:66 + len(_SEPARATORS[1])].tobytes()
    sep = next((s for s in _SEPARATORS if sep.startswith(s)), b"") if len(raw) > 68 else b""
    step = 64 + len(sep)
    n = (len(raw) - 4 + len(sep)) // step
    if n * step - len(sep) != len(raw) - 4 or (n > 1 and not sep):
        return None
    out: list[bytes] = []
    for first in range(0, n, _IDS_PER_SLICE):
        k = min(_IDS_PER_SLICE, n - first)
        part = raw[2 + first * step:2 + (first + k) * step - len(sep)].tobytes()
        # Separators exactly between ids, and nowhere else.
        if any(part[64 + j::step] != sep[j:j + 1] * (k - 1) for j in range(len(sep))):
            return None
        hexes = part.replace(sep, b"") if sep else part
        if len(hexes) != 64 * k or hexes.lower() != hexes:
            return None
        try:
            blob = bytes.fromhex(hexes.decode("ascii"))
        except (ValueError, UnicodeDecodeError):
            return None
        if len(blob) != 32 * k:  # fromhex skips whitespace
            return None
        out.append(blob)
    return ChunkIds(b"".join(out))


def decode_manifest(buf: bytes | bytearray) -> tuple[Sequence[bytes], Any]:
    """``(chunk ids, meta)`` of an object PUT's body; raises BadJSON, BadRequest, BadName, TooLarge."""
    try:
        doc = _MANIFEST.decode(buf)
    except msgspec.ValidationError as e:
        if "unknown field" in str(e):
            raise E.BadRequest(f"unknown field(s): {str(e).split('`')[1] if '`' in str(e) else e}") from None
        raise E.BadJSON("expected a JSON object") from None
    except msgspec.DecodeError as e:
        raise E.BadJSON(f"malformed JSON: {e}") from None
    except RecursionError:
        raise E.BadJSON("malformed JSON: nested too deeply") from None
    digests: Sequence[bytes] | None = plain_hex_ids(doc.chunks)
    if digests is None:
        ids = decode_json(doc.chunks)
        if not isinstance(ids, list):
            raise E.BadRequest("'chunks' must be a list of chunk ids")
        if len(ids) > MAX_OBJECT_CHUNKS:
            raise E.TooLarge(f"an object references at most {MAX_OBJECT_CHUNKS} chunks")
        digests = chunk_ids(ids, "'chunks'")
    if len(digests) > MAX_OBJECT_CHUNKS:
        raise E.TooLarge(f"an object references at most {MAX_OBJECT_CHUNKS} chunks")
    return digests, decode_json(doc.meta)


async def put_object(request: web.Request) -> web.Response:
    svc, who, rec, key = _object_target(request, "append")
    buf = await read_json_bytes(request, OBJECT_BODY_LIMIT)
    if len(buf) <= INLINE_JSON_BYTES:
        digests, meta_b64 = decode_manifest(buf or b"{}")
    else:
        digests, meta_b64 = await asyncio.get_running_loop().run_in_executor(None, decode_manifest, buf)
    del buf
    meta = b""
    if meta_b64 is not None:
        if not isinstance(meta_b64, str):
            raise E.BadRequest("'meta' must be a base64 string")
        try:
            meta = base64.b64decode(meta_b64, validate=True)
        except binascii.Error:
            raise E.BadRequest("'meta' is not valid base64") from None
        if len(meta) > MAX_META_BYTES:
            raise E.TooLarge(f"'meta' is larger than {MAX_META_BYTES} bytes")
    inm = request.headers.get("If-None-Match")
    if inm is not None and inm.strip() != "*":
        raise E.BadRequest("only 'If-None-Match: *' is supported")
    obj = await svc.objects.put(who, rec, key, digests, meta, inm is not None)
    return _json({"key": key, "size": obj.size, "chunks": len(obj.chunks)}, status=201)


def _object_doc(key: str, obj) -> dict:
    return {"key": key, "size": obj.size, "chunks": [c.hex() for c in obj.chunks],
            "meta": base64.b64encode(obj.meta).decode(), "created": iso(obj.created)}


async def get_object(request: web.Request) -> web.Response:
    svc, _, rec, key = _object_target(request, "read")
    return _json(_object_doc(key, svc.objects.get(rec, key)))


async def head_object(request: web.Request) -> web.Response:
    svc, _, rec, key = _object_target(request, "read")
    obj = svc.objects.get(rec, key)
    return web.Response(headers={"X-Object-Size": str(obj.size)})


async def delete_object(request: web.Request) -> web.Response:
    svc, _, rec, key = _object_target(request, "full")
    await svc.objects.delete(rec, key)
    return web.Response(status=204)


async def list_objects(request: web.Request) -> web.Response:
    svc = request.app[SERVICES]
    rec = svc.auth.vault_for(principal(request), vault_param(request), "read")
    q = request.query
    prefix = q.get("prefix", "")
    start_after = q.get("start_after", "")
    for v in (prefix, start_after):
        if len(v.encode()) > 1024:
            raise E.BadName("prefix and start_after are at most 1024 bytes")
    try:
        limit = int(q.get("limit", "1000"))
    except ValueError:
        raise E.BadRequest("limit must be an integer") from None
    if not 1 <= limit <= MAX_LIST:
        raise E.BadRequest(f"limit must be between 1 and {MAX_LIST}")
    objs, nxt = svc.objects.list(rec, prefix, start_after, limit)
    return _json({"objects": [_entry_doc(o) for o in objs], "next": nxt})


def _entry_doc(o: ObjectEntry) -> dict:
    return {"key": o.key, "size": o.size, "created": iso(o.created)}


async def expect_continue(request: web.Request) -> None:
    """The ``expect_handler`` of every route that takes a body: ``100 Continue``
    only for a request whose credentials would get it past its handler's
    first checks.

    It never answers itself. Without ``100 Continue`` the handler still
    runs, refuses the request for the same reason (401; 404 for a key of
    another vault or an unknown vault) before reading the body, and the error
    middleware renders that and closes the connection, as for any request
    whose body was not read. The role a route needs is the handler's to
    check, after the body has been invited.
    """
    if request.version < (1, 1):
        return None  # HTTP/1.0 has no interim answers
    expect = request.headers.get("Expect", "")
    if expect.lower() != "100-continue":
        raise web.HTTPExpectationFailed(text=f"unknown Expect: {expect[:80]}")
    try:
        who = principal(request)
        parts = route_of(request).split("/")
        if not who.admin and "{vault}" in parts:
            name = vault_name(decode_path_segment(_raw_segments(request)[parts.index("{vault}")]))
            request.app[SERVICES].auth.vault_for(who, name, "read")
    except E.VaultError:
        return None
    await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
    # Not part of the answer: aiohttp counts output_size to tell whether an
    # answer was started.
    request.writer.output_size = 0
    return None


def add_routes(app: web.Application) -> None:
    r = app.router
    body = {"expect_handler": expect_continue}
    r.add_get("/healthz", healthz)
    r.add_get("/readyz", readyz)
    r.add_get("/metrics", metrics_handler)
    r.add_get("/v1/openapi.json", openapi_handler)
    r.add_get("/v1/vaults/{vault}", get_vault)
    r.add_post("/v1/vaults/{vault}/chunks/missing", missing_chunks, **body)
    r.add_post("/v1/vaults/{vault}/chunks/batch", put_chunk_batch, **body)
    r.add_put("/v1/vaults/{vault}/chunks/{chunk}", put_chunk, **body)
    r.add_get("/v1/vaults/{vault}/chunks/{chunk}", get_chunk, allow_head=False)
    r.add_head("/v1/vaults/{vault}/chunks/{chunk}", head_chunk)
    r.add_get("/v1/vaults/{vault}/objects", list_objects)
    r.add_put(r"/v1/vaults/{vault}/objects/{key:[\s\S]+}", put_object, **body)
    r.add_get(r"/v1/vaults/{vault}/objects/{key:[\s\S]+}", get_object, allow_head=False)
    r.add_head(r"/v1/vaults/{vault}/objects/{key:[\s\S]+}", head_object)
    r.add_delete(r"/v1/vaults/{vault}/objects/{key:[\s\S]+}", delete_object)
