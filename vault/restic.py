"""restic's REST backend (protocol v1 and v2) under ``/restic/{vault}/``.

``restic -r rest:http://VAULT:SECRET@host:8470/restic/VAULT/`` works against a
vault: every restic file is an object of the vault named
``restic/<type>/<name>`` (the repository config: ``restic/config``) that
references exactly one chunk, the file's bytes, addressed by their SHA-256.
restic names every file but ``config`` by that same hash, so the name is the
chunk id and the upload is verified against it (400 otherwise). Usage,
quotas, dedup, metrics, GC and replication then apply as to any object.

Roles: ``read`` for GET/HEAD, ``append`` to create files, ``full`` to delete.
An ``append`` key or an append-only vault refuses every DELETE but that of a
lock file (403): restic must remove its own locks, and lock files are small
and are not backup data. The config is never overwritten (403), as in
restic's rest-server; re-uploading a file with the bytes it already has is a
no-op that succeeds for any key that may upload (restic retries uploads).

Handlers only translate: they parse, authorize and call the typed services
(:mod:`vault.services`), which verify every body against its name and apply
the policy; errors are :mod:`vault.errors` rendered by
:func:`vault.http.error_middleware` (restic looks only at the status code).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
from typing import AsyncIterator

from aiohttp import web

from . import errors as E
from . import http
from .meta import ObjectMeta, VaultRec
from .names import CHUNK_RE, chunk_id, decode_path_segment, vault_name
from .body import Body
from .policy import Principal
from .services import Services

log = logging.getLogger("objvault.restic")

TYPES = ("data", "keys", "locks", "snapshots", "index")
V1 = "application/vnd.x.restic.rest.v1"
V2 = "application/vnd.x.restic.rest.v2"
CONFIG_KEY = "restic/config"
# restic's config is a few hundred bytes of encrypted JSON.
CONFIG_LIMIT = 1 << 20
# A file is served in windows of this size, so a 128 MiB pack never sits
# whole in memory; each window is read (and block-verified) off the loop.
WINDOW = 4 << 20
LIST_PAGE = 10_000
FILE_METHODS = ("HEAD", "GET", "POST", "DELETE")


def _key(kind: str, name: str) -> str:
    return f"restic/{kind}/{name}"


def _segments(request: web.Request) -> list[str]:
    """Raw path segments after ``/restic/``: ``[vault, ...]``, percent-decoded once."""
    raw = request.raw_path.split("?", 1)[0].split("/")[2:]
    return [decode_path_segment(s) for s in raw]


def _open(request: web.Request) -> tuple[Services, Principal, VaultRec]:
    """Authenticate and find the vault; a key of another vault gets the 404 of a missing one."""
    svc = request.app[http.SERVICES]
    name = vault_name(_segments(request)[0])
    who = http.principal(request)
    return svc, who, svc.auth.vault_for(who, name, "read")


def _allow(request: web.Request, methods: tuple[str, ...]) -> None:
    if request.method not in methods:
        # The error middleware renders this as a problem and keeps ``Allow``.
        raise web.HTTPMethodNotAllowed(request.method, methods)


def _content_length(request: web.Request) -> int:
    if request.headers.get("Content-Encoding"):
        raise E.UnsupportedEncoding("Content-Encoding is not supported: send the file as it is")
    length = request.content_length
    if length is None:
        raise E.LengthRequired("restic uploads need a Content-Length")
    return length


# -- repository ----------------------------------------------------------------------


async def repo_root(request: web.Request) -> web.Response:
    """``POST /restic/{vault}/?create=true``: the vault is the repository, so it already exists."""
    svc, who, rec = _open(request)
    _allow(request, ("POST",))
    if request.query.get("create") != "true":
        raise E.BadRequest("POST on a repository needs ?create=true")
    svc.auth.vault_for(who, rec.name, "append")
    return web.Response(status=200)


async def config(request: web.Request) -> web.StreamResponse:
    svc, who, rec = _open(request)
    _allow(request, FILE_METHODS)
    if request.method in ("GET", "HEAD"):
        obj = svc.objects.find(rec, CONFIG_KEY)
        if obj is None:
            raise E.NoSuchObject(f"vault {rec.name!r}: no restic repository config")
        return await _serve(request, svc, rec, obj)
    if request.method == "DELETE":
        await _delete(svc, who, rec, "config", CONFIG_KEY)
        return web.Response(status=200)
    svc.auth.vault_for(who, rec.name, "append")
    length = _content_length(request)
    if length > CONFIG_LIMIT:
        raise E.TooLarge(f"vault {rec.name!r}: a restic config is at most {CONFIG_LIMIT} bytes")
    read, _ = http.body_readers(request)
    body = await read(length)
    # Another config would make every file of the repository unreadable.
    await svc.objects.put_file(who, rec, CONFIG_KEY, hashlib.sha256(body).digest(), Body.of_bytes(body),
                               replace=False)
    return web.Response(status=200)


# -- files ---------------------------------------------------------------------------


async def listing(request: web.Request) -> web.Response:
    """``GET /{type}/``: names (v1) or ``[{"name", "size"}]`` (v2), per the Accept header."""
    svc, _, rec = _open(request)
    kind = _segments(request)[1]
    if kind not in TYPES:
        raise E.NotFound(f"no restic file type {kind!r}")
    _allow(request, ("GET",))
    loop = asyncio.get_running_loop()
    files = await loop.run_in_executor(None, _list_all, svc, rec, f"restic/{kind}/")
    doc: list[dict[str, object]] | list[str]
    if V2 in request.headers.get("Accept", ""):
        doc, ctype = [{"name": n, "size": s} for n, s in files], V2
    else:
        doc, ctype = [n for n, _ in files], V1
    # restic compares the Content-Type exactly: no charset parameter.
    return web.Response(body=json.dumps(doc, separators=(",", ":")).encode(), headers={"Content-Type": ctype})


def _list_all(svc: Services, rec: VaultRec, prefix: str) -> list[tuple[str, int]]:
    """Every ``(name, size)`` under ``prefix`` (runs in a thread: a listing can be long)."""
    out: list[tuple[str, int]] = []
    after: str | None = ""
    while after is not None:
        page, after = svc.objects.list(rec, prefix, after, LIST_PAGE)
        for o in page:
            name = o.key[len(prefix):]
            # Objects put there through the native API under other names are
            # not restic files; restic would reject the whole listing.
            if CHUNK_RE.fullmatch(name):
                out.append((name, o.size))
    return out


async def file(request: web.Request) -> web.StreamResponse:
    """``HEAD/GET/POST/DELETE /{type}/{name}``."""
    svc, who, rec = _open(request)
    segs = _segments(request)
    kind, name = segs[1], segs[2]
    if kind not in TYPES:
        raise E.NotFound(f"no restic file type {kind!r}")
    _allow(request, FILE_METHODS)
    digest = chunk_id(name)
    key = _key(kind, name)
    if request.method in ("GET", "HEAD"):
        obj = svc.objects.find(rec, key)
        if obj is None:
            raise E.NoSuchObject(f"vault {rec.name!r}: no restic file {kind}/{name}")
        return await _serve(request, svc, rec, obj)
    if request.method == "DELETE":
        await _delete(svc, who, rec, kind, key)
        return web.Response(status=200)
    svc.auth.vault_for(who, rec.name, "append")
    _content_length(request)
    await svc.objects.put_file(who, rec, key, digest, http.request_body(request))
    return web.Response(status=200)


async def _delete(svc: Services, who: Principal, rec: VaultRec, kind: str, key: str) -> None:
    # restic removes its own locks after every command, append-only or not;
    # a lock that stayed would block the repository.
    lock = kind == "locks"
    svc.auth.vault_for(who, rec.name, "append" if lock else "full")
    await svc.objects.delete(rec, key, ephemeral=lock)


# -- serving -------------------------------------------------------------------------


async def _serve(request: web.Request, svc: Services, rec: VaultRec, obj: ObjectMeta) -> web.StreamResponse:
    """The object's bytes, whole (200) or one ``Range`` (206), in bounded windows."""
    size = obj.size
    headers = {"Accept-Ranges": "bytes"}
    if request.method == "HEAD":
        return await http.head_response(request, size, headers)
    rng = http.parse_range(request.headers.get("Range"), size)
    status = 200
    start, end = 0, size
    if rng is not None:
        start, end = rng
        status = 206
        headers["Content-Range"] = f"bytes {start}-{end - 1}/{size}"
    windows = _windows(svc, rec, obj, start, end)
    if end - start <= WINDOW:
        body = b"".join([w async for w in windows])
        return web.Response(status=status, body=body, headers=headers, content_type="application/octet-stream")
    # Fetch the first window before the headers go out, so that a chunk
    # failing verification is still an error status, not a cut-off body.
    first = await anext(windows)
    resp = web.StreamResponse(status=status, headers=headers)
    resp.content_type = "application/octet-stream"
    resp.content_length = end - start
    await resp.prepare(request)
    try:
        await resp.write(first)
        async for w in windows:
            await resp.write(w)
    except E.VaultError as e:
        # The status is sent: all that is left is to cut the body short so
        # the client sees a failed transfer and retries.
        log.error("restic read failed mid-response", extra={"vault": rec.name, "code": e.code, "detail": e.detail})
        if request.transport is not None:
            request.transport.close()
        raise ConnectionResetError(e.detail) from e
    await resp.write_eof()
    return resp


async def _windows(svc: Services, rec: VaultRec, obj: ObjectMeta, start: int,
                   end: int) -> AsyncIterator[bytes | memoryview]:
    """Yield bytes ``[start, end)`` of ``obj`` at most :data:`WINDOW` at a time."""
    if len(obj.chunks) == 1:
        layout = [(obj.chunks[0], obj.size)]
    else:
        # Objects written under restic/ through the native API by earlier
        # versions (it refuses them now) may hold several chunks.
        layout = []
        for d in obj.chunks:
            meta = svc.chunks.meta(rec, d)
            if meta is None:
                raise E.NoSuchChunk(f"vault {rec.name!r}: object references missing chunk {d.hex()}")
            layout.append((d, meta.length))
    base = 0
    for digest, length in layout:
        lo, hi = max(start, base), min(end, base + length)
        pos = lo
        while pos < hi:
            n = min(WINDOW, hi - pos)
            yield await svc.chunks.get(rec, digest, pos - base, pos - base + n)
            pos += n
        base += length
        if base >= end:
            return


def add_routes(app: web.Application) -> None:
    r = app.router
    for path, handler in (("/restic/{vault}", repo_root), ("/restic/{vault}/", repo_root),
                          ("/restic/{vault}/config", config), ("/restic/{vault}/{type}/", listing),
                          ("/restic/{vault}/{type}/{name}", file)):
        r.add_route("*", path, handler, expect_handler=http.expect_continue)
