"""Bucket subresources kept as documents in the bucket's record (lifecycle,
CORS): their Put, Get and Delete handlers, made from how to parse and
render the document."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from aiohttp import web

from .front import Call, Handler, read_small
from .handlers import _drop_setting, _setting, _xml


def routes(subresource: str, kind: str, missing: str, max_body: int, parse: Callable[[bytes], Any],
           render: Callable[[Any], bytes]) -> dict[tuple[str, str, str], Handler]:
    """PUT (``parse`` the body, keep it as ``kind``), GET (``render`` it;
    the error ``missing`` without one) and DELETE (204 whether kept or not)
    of ``?subresource`` on a bucket."""

    async def put(call: Call) -> web.StreamResponse:
        value = parse(await read_small(call.request, max_body))
        await call.services.buckets.set_setting(call.who, call.bucket, kind, value)
        return web.Response()

    async def get(call: Call) -> web.StreamResponse:
        return _xml(render(_setting(call, kind, missing)))

    async def delete(call: Call) -> web.StreamResponse:
        return await _drop_setting(call, kind)

    handlers = {"PUT": put, "GET": get, "DELETE": delete}
    for method, handler in handlers.items():
        handler.__name__ = f"{method.lower()}_bucket_{kind}"  # the operation's name in metrics
    return {(method, "bucket", subresource): handler for method, handler in handlers.items()}
