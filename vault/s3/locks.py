"""S3 handlers for Object Lock: the bucket's configuration, a version's
retention and legal hold. Each translates one operation to the services;
what may be changed, by whom, is decided there (:mod:`vault.policy`)."""

from __future__ import annotations

from aiohttp import web

from ..services.buckets import Target, object_lock
from . import xml
from .errors import S3Error
from .front import Call, read_small
from .handlers import bypass, stored, target, version_id
from .bodies import version_headers


def _xml(body: bytes, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(body=body, content_type="application/xml", headers=headers)


def _locked_bucket(call: Call, role: str) -> Target:
    """The bucket, which must have Object Lock (InvalidRequest otherwise)."""
    where = target(call, role)
    if object_lock(where.bucket) is None:
        raise S3Error("InvalidRequest", "Bucket is missing Object Lock Configuration", resource=f"/{call.bucket}")
    return where


async def get_configuration(call: Call) -> web.StreamResponse:
    lock = object_lock(target(call, "read").bucket)
    if lock is None:
        raise S3Error("ObjectLockConfigurationNotFoundError", resource=f"/{call.bucket}")
    rule = xml.LockRule(lock["mode"], lock.get("days", 0), lock.get("years", 0)) if lock.get("mode") else None
    return _xml(xml.object_lock_configuration(rule))


async def put_configuration(call: Call) -> web.StreamResponse:
    rule = xml.parse_object_lock_configuration(await read_small(call.request, xml.MAX_SMALL_BODY))
    value: dict = {}
    if rule is not None:
        value = {"mode": rule.mode, "days": rule.days} if rule.days else {"mode": rule.mode, "years": rule.years}
    await call.services.buckets.set_setting(call.who, call.bucket, "object_lock", value)
    return web.Response()


async def get_retention(call: Call) -> web.StreamResponse:
    where = _locked_bucket(call, "read")
    obj = stored(call, where, call.key, version_id(call))
    if not obj.meta.lock_mode:
        raise S3Error("NoSuchObjectLockConfiguration", resource=f"/{call.bucket}/{call.key}")
    return _xml(xml.retention(obj.meta.lock_mode, obj.meta.retain_until), version_headers(where, obj))


async def put_retention(call: Call) -> web.StreamResponse:
    where = _locked_bucket(call, "append")
    mode, until = xml.parse_retention(await read_small(call.request, xml.MAX_SMALL_BODY))
    version = version_id(call)
    obj = stored(call, where, call.key, version)
    await call.services.s3.set_retention(call.who, where, call.key, obj.meta.version_id if version else None,
                                         mode, until, bypass(call))
    return web.Response(headers=version_headers(where, obj))


async def get_legal_hold(call: Call) -> web.StreamResponse:
    where = _locked_bucket(call, "read")
    obj = stored(call, where, call.key, version_id(call))
    return _xml(xml.legal_hold(obj.meta.legal_hold), version_headers(where, obj))


async def put_legal_hold(call: Call) -> web.StreamResponse:
    where = _locked_bucket(call, "append")
    on = xml.parse_legal_hold(await read_small(call.request, xml.MAX_SMALL_BODY))
    version = version_id(call)
    obj = stored(call, where, call.key, version)
    await call.services.s3.set_legal_hold(call.who, where, call.key, obj.meta.version_id if version else None, on)
    return web.Response(headers=version_headers(where, obj))


ROUTES = {
    ("GET", "bucket", "object-lock"): get_configuration,
    ("PUT", "bucket", "object-lock"): put_configuration,
    ("GET", "object", "retention"): get_retention,
    ("PUT", "object", "retention"): put_retention,
    ("GET", "object", "legal-hold"): get_legal_hold,
    ("PUT", "object", "legal-hold"): put_legal_hold,
}
