"""The S3 front door: an aiohttp application over the core's services.

Every request is authenticated with SigV4 (:mod:`.sigv4`), routed by method,
level (service, bucket, object) and query subresource (:data:`ROUTES`), and
handled by a function of :mod:`.handlers` or :mod:`.multipart` that only
translates between S3 and the services. Every answer carries an
``x-amz-request-id``; every error is an S3 XML document (:mod:`.errors`).
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote_to_bytes

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

from .. import errors as E, http
from ..budget import MemoryBudget
from ..config import S3Config
from ..names import has_control
from ..policy import Principal
from ..services import Services
from ..workers import Job
from . import sigv4, xml
from .errors import S3Error, from_domain

log = logging.getLogger("objvault.s3")

SERVICES: web.AppKey[Services] = web.AppKey("s3_services", Services)
BUDGET: web.AppKey[MemoryBudget] = web.AppKey("s3_budget", MemoryBudget)
CONFIG: web.AppKey[S3Config] = web.AppKey("s3_config", S3Config)
METRICS: web.AppKey[Any] = web.AppKey("s3_metrics", object)
# (method, level, subresource) -> handler; level is service, bucket or object.
ROUTES: web.AppKey[dict] = web.AppKey("s3_routes", dict)
BODY_IDLE_SECONDS = 60.0
MAX_KEY_BYTES = 1024

# Query parameters that name a subresource, in the order they are matched.
SUBRESOURCES = ("uploadId", "uploads", "tagging", "acl", "location", "delete", "versioning", "versions",
                "policy", "cors", "lifecycle", "website", "logging", "notification", "replication",
                "encryption", "object-lock", "retention", "legal-hold", "ownershipControls",
                "publicAccessBlock", "requestPayment", "accelerate", "analytics", "inventory", "metrics",
                "intelligent-tiering", "attributes", "restore", "select", "torrent", "policyStatus")


@dataclass
class Call:
    """One authenticated S3 request, parsed: what every handler gets."""

    request: web.Request
    services: Services
    auth: sigv4.Authenticated[Principal]
    bucket: str
    key: str
    request_id: str

    @property
    def who(self) -> Principal:
        return self.auth.principal

    @property
    def query(self) -> Any:
        return self.request.query

    @property
    def headers(self) -> Any:
        return self.request.headers

    @property
    def region(self) -> str:
        return self.request.app[CONFIG].region

    @property
    def budget(self) -> MemoryBudget:
        return self.request.app[BUDGET]


Handler = Callable[[Call], Awaitable[web.StreamResponse]]


def build_app(services: Services, budget: MemoryBudget, config: S3Config, metrics: Any = None) -> web.Application:
    """The S3 application; ``budget`` is the server's one memory budget."""
    from . import cors, handlers, lifecycle, locks, multipart, ownership
    app = web.Application(middlewares=[_answer], client_max_size=1 << 20)
    app[SERVICES], app[BUDGET], app[CONFIG] = services, budget, config
    if metrics is not None:
        app[METRICS] = metrics
    app[ROUTES] = {**handlers.ROUTES, **multipart.ROUTES, **locks.ROUTES, **lifecycle.ROUTES, **cors.ROUTES,
                      **ownership.ROUTES}
    app.on_response_prepare.append(cors.on_prepare)
    app.on_response_prepare.append(http.name_the_server)
    app.router.add_route("*", "/{tail:.*}", _dispatch, expect_handler=_expect)
    return app


@web.middleware
async def _answer(request: web.Request, handler: Callable) -> web.StreamResponse:
    """Request id, timing, and every error rendered as S3 XML, in one place."""
    request_id = secrets.token_hex(8).upper()
    request["request_id"] = request_id
    t0 = time.perf_counter()
    try:
        resp = await handler(request)
    except (ConnectionResetError, asyncio.CancelledError):
        raise
    except Exception as e:  # noqa: BLE001 - every failure becomes an S3 error answer
        resp = _error_response(request, _s3_error(request, e), request_id)
    resp.headers["x-amz-request-id"] = request_id
    metrics = request.app.get(METRICS)
    if metrics is not None:
        metrics.observe_request("s3:" + request.get("s3_operation", "unknown"), request.method, resp.status,
                                time.perf_counter() - t0)
    return resp


def _s3_error(request: web.Request, error: Exception) -> S3Error:
    if isinstance(error, S3Error):
        return error
    if isinstance(error, E.VaultError):
        if error.code not in ("internal", "storage_failure", "chunk_corrupt", "no_such_chunk", "missing_chunks"):
            return from_domain(error, request.path)
        log.error("S3 request failed", extra={"code": error.code, "detail": error.detail})
    else:
        log.exception("S3 request failed", extra={"path": request.path[:200]})
    return from_domain(E.VaultError(), request.path)


def listener_error(error: E.VaultError) -> web.Response:
    """The S3 answer the listener sends where no handler runs: a malformed
    request, a head that came too slowly, a connection over the limit."""
    request_id = secrets.token_hex(8).upper()
    resp = _xml_error(from_domain(error), request_id, body=True)
    resp.headers["x-amz-request-id"] = request_id
    return resp


def _xml_error(error: S3Error, request_id: str, body: bool) -> web.Response:
    return web.Response(status=error.status, body=xml.error_document(error, request_id) if body else None,
                        content_type="application/xml", headers=error.headers)


def _error_response(request: web.Request, error: S3Error, request_id: str) -> web.Response:
    resp = _xml_error(error, request_id, body=request.method != "HEAD")
    if error.code == "InvalidRange" and "size" in error.extra:
        resp.headers["Content-Range"] = f"bytes */{error.extra['size']}"
    if request.body_exists and not request.content.at_eof():
        resp.force_close()  # the body was not read: the connection cannot carry another request
    return resp


async def _dispatch(request: web.Request) -> web.StreamResponse:
    if request.method == "OPTIONS":  # a CORS preflight: never signed
        from .cors import preflight
        request["s3_operation"] = "preflight"
        return preflight(request, _resource(request, request.app[CONFIG].domain)[0])
    from . import post  # a browser form: authorized by the signed policy in its body
    if post.is_form_upload(request):
        return await post.post_object(request)
    handler, call = _call(request, request["request_id"])
    return await handler(call)


def _call(request: web.Request, request_id: str) -> tuple[Handler, Call]:
    """The request's handler and its authenticated call; raises S3Error."""
    services = request.app[SERVICES]
    config = request.app[CONFIG]
    bucket, key = _resource(request, config.domain)
    request["s3_bucket"] = bucket
    handler, operation = _route(request, bucket, key)
    request["s3_operation"] = operation
    signed = sigv4.Request.of(request.method, request.raw_path.split("?", 1)[0],
                              request.raw_path.partition("?")[2], request.headers.items())
    auth = sigv4.authenticate(signed, services.auth.s3_secret, config.region)
    return handler, Call(request, services, auth, bucket, key, request_id)


async def _expect(request: web.Request) -> web.StreamResponse | None:
    """``100 Continue`` only for a request that gets past authentication and
    its bucket's check; otherwise its error answer is the final one, sent
    before any of the body (the connection then closes)."""
    if request.version < (1, 1) or request.headers.get("Expect", "").lower() != "100-continue":
        return None
    request_id = secrets.token_hex(8).upper()
    from . import post
    try:
        if not post.is_form_upload(request):  # a form's signature is in its body
            _, call = _call(request, request_id)
            if call.bucket:
                call.services.buckets.target(call.who, call.bucket, "read")
    except Exception as e:  # noqa: BLE001 - answered as the request's error
        resp = _error_response(request, _s3_error(request, e), request_id)
        resp.headers["x-amz-request-id"] = request_id
        return resp
    await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
    request.writer.output_size = 0  # not part of the answer (aiohttp tells a started answer by it)
    return None


def _resource(request: web.Request, domain: str) -> tuple[str, str]:
    """(bucket, key) from a path-style or, under ``domain``, virtual-hosted-style request."""
    path = request.raw_path.split("?", 1)[0]
    host = (request.host or "").rsplit(":", 1)[0].lower()
    if domain and host.endswith("." + domain):
        bucket, rest = host[:-len(domain) - 1], path[1:]
    else:
        bucket, _, rest = path[1:].partition("/")
        bucket = _decode(bucket)
    return bucket, check_key(_decode(rest))


def check_key(key: str) -> str:
    """An object key as S3 allows it here: at most 1,024 bytes of UTF-8, no
    control characters (as in the native API's keys)."""
    if len(key.encode()) > MAX_KEY_BYTES:
        raise S3Error("KeyTooLongError")
    if has_control(key):
        raise S3Error("InvalidURI")
    return key


def _decode(raw: str) -> str:
    try:
        return unquote_to_bytes(raw).decode("utf-8")
    except UnicodeDecodeError:
        raise S3Error("InvalidArgument", "The name is not valid UTF-8") from None


def _route(request: web.Request, bucket: str, key: str) -> tuple[Handler, str]:
    level = "object" if key else "bucket" if bucket else "service"
    sub = next((s for s in SUBRESOURCES if s in request.query), "")
    if level == "object":
        from . import sosapi  # Veeam's documents, served in place of objects
        special = sosapi.route(request.method, key, sub)
        if special is not None:
            return special, "sosapi_" + special.__name__
    if level == "bucket" and request.query.get("list-type") == "2" and not sub:
        sub = "list-type=2"
    routes = request.app[ROUTES]
    handler = routes.get((request.method, level, sub))
    if handler is None:
        raise S3Error("NotImplemented", f"{request.method} {level}{'?' + sub if sub else ''} is not implemented",
                      resource=request.path)
    return handler, handler.__name__


# -- bodies ----------------------------------------------------------------------------


def reader(request: web.Request) -> Callable[[int], Awaitable[bytes]]:
    """``read(n)``: up to ``n`` body bytes as they come, b"" at the end;
    RequestTimeout when none arrive for a minute, IncompleteBody when the
    body ends before its Content-Length."""

    async def read(n: int) -> bytes:
        try:
            async with asyncio.timeout(BODY_IDLE_SECONDS):
                return await request.content.read(n)
        except TimeoutError:
            raise S3Error("RequestTimeout") from None
        except HttpProcessingError:
            raise S3Error("IncompleteBody") from None

    return read


async def read_small(request: web.Request, limit: int) -> bytes:
    """A small XML body, whole (at most ``limit`` bytes)."""
    if request.content_length is not None and request.content_length > limit:
        raise S3Error("MalformedXML", f"The XML document is larger than {limit} bytes")
    read = reader(request)
    parts, got = [], 0
    while piece := await read(1 << 16):
        got += len(piece)
        if got > limit:
            raise S3Error("MalformedXML", f"The XML document is larger than {limit} bytes")
        parts.append(piece)
    return b"".join(parts)


class UploadExpiry(Job):
    """Aborts multipart uploads left neither completed nor aborted for
    ``max_age`` seconds, so their parts' chunks are reclaimed by GC."""

    name = "s3_upload_expiry"
    BATCH = 1000

    def __init__(self, services: Services, max_age: float) -> None:
        super().__init__()
        self.services = services
        self.max_age = max_age

    async def run_once(self) -> dict:
        ended = await self.services.s3.expire_uploads(time.time() - self.max_age, self.BATCH)
        return {"uploads_expired": ended}
