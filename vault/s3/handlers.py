"""S3 handlers for buckets and objects: each translates one operation to the services."""

from __future__ import annotations

import base64
import binascii
from typing import Any
from urllib.parse import unquote

import msgspec
from aiohttp import web

from .. import errors as E
from ..http import parse_range
from ..services.buckets import LOCATION, Target, location, versioning
from ..services.s3lifecycle import header as expiration_header
from ..services.s3meta import valid_version_id
from ..services.s3objects import Deleted, Stored
from . import xml
from .bodies import (check_acl, check_storage_class, lock_of, lower, meta_of, object_headers, preconditions,
                     receive, tags_of, version_headers)
from .errors import S3Error, from_domain
from .front import CONFIG, Call, read_small

MAX_KEYS = 1000
MAX_BUCKETS = 10_000
MAX_BUCKET_TAGS = 50
# S3 answers 200 to re-creating one's own bucket in this region, and
# BucketAlreadyOwnedByYou in every other.
LEGACY_REGION = "us-east-1"


def _xml(body: bytes, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(status=status, body=body, content_type="application/xml", headers=headers)


def owner(call: Call) -> xml.Owner:
    """A vault's S3 owner: its name is both the ID and the display name."""
    return xml.Owner(call.who.vault, call.who.vault)


def target(call: Call, role: str) -> Target:
    return call.services.buckets.target(call.who, call.bucket, role)


def version_id(call: Call, value: str | None = None) -> str | None:
    """The request's ``versionId`` (or ``value``), None when not given;
    InvalidArgument for one that cannot name a version."""
    value = call.query.get("versionId") if value is None else value
    if value is not None and not valid_version_id(value):
        raise S3Error("InvalidArgument", "Invalid version id specified", ArgumentName="versionId",
                      ArgumentValue=value[:80])
    return value


def stored(call: Call, where: Target, key: str, version: str | None = None) -> Stored:
    """The version ``version`` of ``key`` (the current one for None). A delete
    marker answers NoSuchKey when it is the current version, MethodNotAllowed
    when asked for by id, with ``x-amz-delete-marker`` either way."""
    found = call.services.s3.find(where, key, version)
    resource = f"/{call.bucket}/{key}"
    if found is None and version is not None:
        raise S3Error("NoSuchVersion", resource=resource, Key=key, VersionId=version)
    if found is None:  # no delete marker either (Ceph says so; clients ignore it)
        raise S3Error("NoSuchKey", resource=resource, Key=key).with_headers({"x-amz-delete-marker": "false"})
    if found.meta.marker:
        headers = version_headers(where, found)
        if version is not None:
            raise S3Error("MethodNotAllowed", resource=resource).with_headers({**headers, "Allow": "DELETE"})
        raise S3Error("NoSuchKey", resource=resource, Key=key).with_headers(headers)
    return found


# -- buckets ---------------------------------------------------------------------------


async def list_buckets(call: Call) -> web.StreamResponse:
    prefix = call.query.get("prefix")
    token = call.query.get("continuation-token")
    after = _untoken(token) if token else ""
    limit = _max_keys(call.query.get("max-buckets"), MAX_BUCKETS)
    buckets = [b for b in call.services.buckets.list(call.who.vid)
               if b.name > after and b.name.startswith(prefix or "")]
    more = len(buckets) > limit
    shown = buckets[:limit]
    nxt = _token(shown[-1].name) if more and shown else None
    return _xml(xml.list_buckets(owner(call), [(b.name, b.created) for b in shown], nxt, prefix))


async def create_bucket(call: Call) -> web.StreamResponse:
    check_acl(call.headers)
    constraint = xml.parse_create_bucket(await read_small(call.request, xml.MAX_SMALL_BODY))
    if constraint not in (None, "", call.region):
        raise S3Error("InvalidLocationConstraint")
    locked = call.headers.get("x-amz-bucket-object-lock-enabled", "").lower() == "true"
    from .ownership import SETTING, checked
    settings = {LOCATION: constraint} if constraint else {}
    ownership = call.headers.get("x-amz-object-ownership")
    if ownership is not None:
        settings[SETTING] = checked(ownership)
    try:
        await call.services.buckets.create(call.who, call.who.vault, call.bucket, locked, settings)
    except E.BucketOwned:
        if call.region != LEGACY_REGION:
            raise
    return web.Response(headers={"Location": f"/{call.bucket}"})


async def head_bucket(call: Call) -> web.StreamResponse:
    target(call, "read")
    return web.Response(headers={"x-amz-bucket-region": call.region})


async def delete_bucket(call: Call) -> web.StreamResponse:
    await call.services.buckets.delete(call.who, call.bucket)
    return web.Response(status=204)


async def get_location(call: Call) -> web.StreamResponse:
    """The LocationConstraint the bucket was created with; without one, the
    server's region (empty for us-east-1, as S3 answers)."""
    given = location(target(call, "read").bucket)
    return _xml(xml.location(given or ("" if call.region == LEGACY_REGION else call.region)))


async def get_versioning(call: Call) -> web.StreamResponse:
    return _xml(xml.versioning(versioning(target(call, "read").bucket)))


async def put_versioning(call: Call) -> web.StreamResponse:
    status = xml.parse_versioning(await read_small(call.request, xml.MAX_SMALL_BODY))
    await call.services.buckets.set_setting(call.who, call.bucket, "versioning", status)
    return web.Response()


async def get_policy_status(call: Call) -> web.StreamResponse:
    target(call, "read")
    return _xml(xml.policy_status())


async def get_bucket_acl(call: Call) -> web.StreamResponse:
    target(call, "read")
    return _xml(xml.acl(owner(call)))


async def put_bucket_acl(call: Call) -> web.StreamResponse:
    target(call, "full")
    await _private_only(call)
    return web.Response()


async def _private_only(call: Call) -> None:
    """Accept an ACL that leaves the vault's own keys the only ones in: a
    canned ``private`` (or ``bucket-owner-full-control``), or a document that
    grants FULL_CONTROL to the vault and nothing to anyone else."""
    check_acl(call.headers)
    if not call.request.content_length:
        return
    grants = xml.parse_acl(await read_small(call.request, xml.MAX_SMALL_BODY))
    me = owner(call).id
    for grant in grants:
        if grant.kind == "Group":
            raise S3Error("AccessDenied", "objvault grants no access beyond the vault's own keys: "
                          "groups (all users, authenticated users) cannot be granted anything")
        if grant.kind == "AmazonCustomerByEmail":
            raise S3Error("UnresolvableGrantByEmailAddress",
                          "The e-mail address you provided does not match any account on record.")
        if grant.who != me:  # no other vault is known to this one, so none can be named
            raise S3Error("InvalidArgument", "Invalid id: an ACL can only name the vault that owns the bucket",
                          ArgumentName="CanonicalUser/ID", ArgumentValue=grant.who[:256])
    if not any(grant.permission == "FULL_CONTROL" for grant in grants):
        raise S3Error("NotImplemented", "the vault always keeps FULL_CONTROL of its buckets and objects: "
                      "an ACL must grant it to the vault")


def _setting(call: Call, kind: str, missing: str) -> Any:
    """A bucket's kept document of ``kind``; the S3 error ``missing`` without one."""
    value = target(call, "read").bucket.settings.get(kind)
    if value is None:
        raise S3Error(missing, resource=f"/{call.bucket}")
    return value


async def _drop_setting(call: Call, kind: str) -> web.StreamResponse:
    await call.services.buckets.set_setting(call.who, call.bucket, kind, None)
    return web.Response(status=204)


async def get_bucket_tagging(call: Call) -> web.StreamResponse:
    return _xml(xml.tagging(_setting(call, "tagging", "NoSuchTagSet")))


async def put_bucket_tagging(call: Call) -> web.StreamResponse:
    tags = xml.parse_tagging(await read_small(call.request, xml.MAX_SMALL_BODY), MAX_BUCKET_TAGS)
    await call.services.buckets.set_setting(call.who, call.bucket, "tagging", tags)
    return web.Response(status=204)


async def delete_bucket_tagging(call: Call) -> web.StreamResponse:
    return await _drop_setting(call, "tagging")


async def get_public_access_block(call: Call) -> web.StreamResponse:
    """Kept and returned as given; it changes nothing, since nothing in a vault is ever public."""
    return _xml(xml.public_access_block(_setting(call, "public_access_block",
                                                 "NoSuchPublicAccessBlockConfiguration")))


async def put_public_access_block(call: Call) -> web.StreamResponse:
    flags = xml.parse_public_access_block(await read_small(call.request, xml.MAX_SMALL_BODY))
    await call.services.buckets.set_setting(call.who, call.bucket, "public_access_block", flags)
    return web.Response()


async def delete_public_access_block(call: Call) -> web.StreamResponse:
    return await _drop_setting(call, "public_access_block")


async def list_objects_v1(call: Call) -> web.StreamResponse:
    where = target(call, "read")
    page, listing = _list(call, where, call.query.get("marker", ""))
    return _xml(xml.list_objects_v1(listing, call.query.get("marker", ""), page))


async def list_objects_v2(call: Call) -> web.StreamResponse:
    where = target(call, "read")
    token = call.query.get("continuation-token")
    start_after = call.query.get("start-after")
    marker = _untoken(token) if token is not None else start_after or ""
    page, listing = _list(call, where, marker, call.query.get("fetch-owner") == "true")
    nxt = _token(page) if page is not None else None
    return _xml(xml.list_objects_v2(listing, token, nxt, start_after))


async def list_versions(call: Call) -> web.StreamResponse:
    where = target(call, "read")
    q = call.query
    marker, version_marker = q.get("key-marker", ""), q.get("version-id-marker", "")
    if version_marker and not marker:
        raise S3Error("InvalidArgument", "A version-id marker cannot be specified without a key marker.")
    if version_marker:
        version_id(call, version_marker)
    prefix, delimiter, encoding, limit = _listing_args(call)
    page = call.services.buckets.list_versions(where, prefix, delimiter, marker, version_marker, limit) \
        if limit else None
    who = owner(call)
    entries = []
    for version in page.versions if page else []:
        obj = call.services.s3.decode(version.raw)
        entries.append(xml.ObjectEntry(version.key, obj.obj.created, obj.meta.etag, obj.obj.size, who,
                                       version=obj.meta.version_id, latest=version.latest, marker=obj.meta.marker))
    truncated = page is not None and page.next_key_marker is not None
    listing = xml.Listing(call.bucket, prefix, delimiter, limit, truncated, entries, page.prefixes if page else [],
                          encoding == "url")
    return _xml(xml.list_versions(listing, marker, version_marker, page.next_key_marker if page else None,
                                  page.next_version_marker if page else None))


def _token(marker: str) -> str:
    """An opaque continuation token: the marker to continue after."""
    return base64.urlsafe_b64encode(marker.encode()).decode()


def _untoken(token: str) -> str:
    try:
        return base64.urlsafe_b64decode(token.encode()).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise S3Error("InvalidArgument", "The continuation token provided is incorrect") from None


def _list(call: Call, where: Target, marker: str, owners: bool = True) -> tuple[str | None, xml.Listing]:
    """One page: the marker to continue after (None at the end) and the listing."""
    prefix, delimiter, encoding, limit = _listing_args(call)
    if limit == 0:
        return None, xml.Listing(call.bucket, prefix, delimiter, 0, False, [], [], encoding == "url")
    page = call.services.buckets.list_objects(where, prefix, delimiter, marker, limit)
    who = owner(call) if owners else None
    entries = []
    for key, raw in page.objects:
        obj = call.services.s3.decode(raw)
        entries.append(xml.ObjectEntry(key, obj.obj.created, obj.meta.etag, obj.obj.size, who))
    listing = xml.Listing(call.bucket, prefix, delimiter, limit, page.next_marker is not None, entries,
                          page.prefixes, encoding == "url")
    return page.next_marker, listing


def _listing_args(call: Call) -> tuple[str, str, str | None, int]:
    """(prefix, delimiter, encoding-type, max-keys) of a listing."""
    q = call.query
    encoding = q.get("encoding-type")
    if encoding not in (None, "url"):
        raise S3Error("InvalidArgument", "Invalid Encoding Method specified in Request")
    return q.get("prefix", ""), q.get("delimiter", ""), encoding, _max_keys(q.get("max-keys"))


def _max_keys(value: str | None, most: int = MAX_KEYS) -> int:
    if value is None:
        return most
    try:
        n = int(value)
    except ValueError:
        raise S3Error("InvalidArgument", "max-keys must be an integer") from None
    if n < 0:
        raise S3Error("InvalidArgument", "max-keys must not be negative")
    return min(n, most)


def bypass(call: Call) -> bool:
    """Whether the request asks to bypass GOVERNANCE retention (honoured for a ``full`` key only)."""
    return call.headers.get("x-amz-bypass-governance-retention", "").lower() == "true"


async def delete_objects(call: Call) -> web.StreamResponse:
    where = target(call, "read")
    request = xml.parse_delete_objects(await read_small(call.request, xml.MAX_BODY))
    deleted: list[xml.DeletedEntry] = []
    errors: list[tuple[str, str | None, S3Error]] = []
    for key, version in request.objects:
        try:
            done = await call.services.s3.delete(call.who, where, key, version_id(call, version), bypass(call))
            deleted.append(_deleted_entry(key, version, done))
        except (E.VaultError, S3Error) as e:
            errors.append((key, version, e if isinstance(e, S3Error) else from_domain(e)))
    return _xml(xml.delete_result(deleted, errors, request.quiet))


def _deleted_entry(key: str, version: str | None, done: Deleted) -> xml.DeletedEntry:
    if version is None:  # a delete marker was added (versioned bucket), or the object removed
        return xml.DeletedEntry(key, None, done.marker, done.version_id if done.marker else None)
    return xml.DeletedEntry(key, version, done.marker, version if done.marker else None)


# -- objects ---------------------------------------------------------------------------


async def put_object(call: Call) -> web.StreamResponse:
    if "x-amz-copy-source" in call.headers:
        return await copy_object(call)
    check_acl(call.headers)
    where = target(call, "append")
    meta = lock_of(call.headers, where, meta_of(call.headers))
    if_none_match, if_match = write_conditions(call)
    # Refused before the body is read when the key already says no; the
    # write decides again, atomically, with what is there by then.
    call.services.s3.check_conditions(where, call.key, if_none_match, if_match)
    got = await receive(call, where)
    meta.etag, meta.checksums = got.etag, got.checksums
    meta.checksum_type = "FULL_OBJECT" if got.checksums else ""
    done = await call.services.s3.put(call.who, where, call.key, got.chunks, got.size, meta, if_none_match,
                                      if_match)
    headers = {"ETag": f'"{got.etag}"', **{f"x-amz-checksum-{a}": v for a, v in got.checksums.items()},
               **written_headers(call, where, done)}
    return web.Response(headers=headers)


def written_headers(call: Call, where: Target, done: Stored) -> dict[str, str]:
    """The headers of a write's answer about the version it wrote: its id and,
    when a lifecycle rule will expire it, ``x-amz-expiration``."""
    return {**version_headers(where, done, written=True), **_expiration(call, where, done)}


def _expiration(call: Call, where: Target, obj: Stored) -> dict[str, str]:
    return expiration_header(where.bucket.settings, call.key, obj.obj.size, obj.meta.tags, obj.obj.created)


def write_conditions(call: Call) -> tuple[str | None, str | None]:
    """(If-None-Match, If-Match) of a write."""
    return call.headers.get("If-None-Match"), call.headers.get("If-Match")


async def copy_object(call: Call) -> web.StreamResponse:
    check_acl(call.headers)
    check_storage_class(call.headers)
    where = target(call, "append")
    source_bucket, source_key, source_version = copy_source(call)
    source = call.services.buckets.target(call.who, source_bucket, "read")
    src = stored(call, source, source_key, source_version)
    if not preconditions(call.headers, src, "x-amz-copy-source-if-"):
        raise S3Error("PreconditionFailed")
    headers = lower(call.headers)
    replace = headers.get("x-amz-metadata-directive", "COPY").upper() == "REPLACE"
    retag = headers.get("x-amz-tagging-directive", "COPY").upper() == "REPLACE"
    if (source_bucket, source_key) == (call.bucket, call.key) and not replace and not retag \
            and source_version is None:
        raise S3Error("InvalidRequest", "This copy request is illegal because it is trying to copy an object to "
                      "itself without changing the object's metadata, storage class, website redirect location "
                      "or encryption attributes.")
    meta = meta_of(call.headers) if replace else msgspec.structs.replace(src.meta)
    meta.tags = tags_of(headers.get("x-amz-tagging", "")) if retag else src.meta.tags
    lock_of(call.headers, where, meta)
    if_none_match, if_match = write_conditions(call)
    done = await call.services.s3.copy(call.who, src, where, call.key, meta, if_none_match, if_match)
    answer = written_headers(call, where, done)
    if versioning(source.bucket) or source_version is not None:
        answer["x-amz-copy-source-version-id"] = src.meta.version_id
    return _xml(xml.copy_result(done.meta.etag, done.obj.created, done.meta.checksums), headers=answer)


def copy_source(call: Call) -> tuple[str, str, str | None]:
    """(bucket, key, version id or None) of ``x-amz-copy-source``."""
    raw, _, query = call.headers["x-amz-copy-source"].partition("?")
    version = None
    if query:
        name, _, value = query.partition("=")
        if name != "versionId":
            raise S3Error("InvalidArgument", "Unknown parameter in x-amz-copy-source")
        version = version_id(call, unquote(value))
    bucket, _, key = unquote(raw).lstrip("/").partition("/")
    if not bucket or not key:
        raise S3Error("InvalidArgument", "Copy Source must mention the source bucket and key: sourcebucket/sourcekey")
    return bucket, key, version


async def head_object(call: Call) -> web.StreamResponse:
    where = target(call, "read")
    obj = stored(call, where, call.key, version_id(call))
    start, end, status = _extent(call, obj)
    return await _send(call, where, obj, start, end, status, body=False)


async def get_object(call: Call) -> web.StreamResponse:
    where = target(call, "read")
    obj = stored(call, where, call.key, version_id(call))
    start, end, status = _extent(call, obj)
    return await _send(call, where, obj, start, end, status, body=True)


def _extent(call: Call, obj: Stored) -> tuple[int, int, int]:
    """The byte range to send and its status (200, 206; 304 when not modified)."""
    if not preconditions(call.headers, obj):
        return 0, 0, 304
    number = call.query.get("partNumber")
    if number is not None:
        return _part_extent(obj, _part(number, obj))
    rng = parse_range(call.headers.get("Range"), obj.obj.size)
    if rng is None:
        return 0, obj.obj.size, 200
    return rng[0], rng[1], 206


def _part(number: str, obj: Stored) -> int:
    if not number.isdigit():
        raise S3Error("InvalidArgument", "Part number must be an integer")
    if not 1 <= int(number) <= max(1, len(obj.meta.parts)):
        raise S3Error("InvalidPart", "The requested part number is not part of this object")
    return int(number)


def _part_extent(obj: Stored, number: int) -> tuple[int, int, int]:
    """A part's bytes: 206 of a multipart object, 200 for part 1 of any other."""
    start = sum(size for _, size in obj.meta.parts[:number - 1])
    size = obj.meta.parts[number - 1][1] if obj.meta.parts else 0
    return start, start + size, 206 if obj.meta.upload else 200


async def _send(call: Call, where: Target, obj: Stored, start: int, end: int, status: int,
                body: bool) -> web.StreamResponse:
    part = call.query.get("partNumber")
    checksum_mode = call.headers.get("x-amz-checksum-mode") == "ENABLED"
    whole = status == 200 or part is not None
    headers = object_headers(obj, call.query, checksum_mode and whole, int(part) if part else None)
    headers.update(version_headers(where, obj))
    headers.update(_expiration(call, where, obj))
    if status == 304:
        return web.Response(status=304, headers={k: headers[k] for k in ("ETag", "Last-Modified")})
    if status == 206:
        headers["Content-Range"] = f"bytes {start}-{end - 1}/{obj.obj.size}"
    pieces = call.services.s3.read(where, obj, start, end) if body else None
    first = await anext(pieces, b"") if pieces is not None else b""
    if pieces is not None and len(first) == end - start:
        # All in one chunk: the headers and the body leave in one write.
        return web.Response(status=status, headers=headers, body=first)
    resp = web.StreamResponse(status=status, headers=headers)
    resp.content_length = end - start
    await resp.prepare(call.request)
    if pieces is not None:
        await resp.write(first)
        async for data in pieces:
            await resp.write(data)
    await resp.write_eof()
    return resp


async def get_attributes(call: Call) -> web.StreamResponse:
    """GetObjectAttributes: ETag, Checksum, ObjectParts, StorageClass, ObjectSize as asked."""
    where = target(call, "read")
    obj = stored(call, where, call.key, version_id(call))
    asked = {a.strip() for a in call.headers.get("x-amz-object-attributes", "").split(",")}
    meta = obj.meta
    sums = {a: v for a, v in meta.checksums.items() if v} if "Checksum" in asked else None
    parts = _object_parts(call, obj) if "ObjectParts" in asked and meta.upload else None
    body = xml.object_attributes(meta.etag if "ETag" in asked else None, sums, meta.checksum_type, parts,
                                 obj.obj.size if "ObjectSize" in asked else None, "StorageClass" in asked)
    return _xml(body, headers={"Last-Modified": object_headers(obj, {}, False)["Last-Modified"],
                               **version_headers(where, obj)})


def _object_parts(call: Call, obj: Stored) -> xml.PartsPage:
    marker = int(call.headers.get("x-amz-part-number-marker", "0") or 0)
    limit = _max_keys(call.headers.get("x-amz-max-parts"))
    algorithm = next(iter(obj.meta.checksums), "")
    numbered = [xml.Part(n, obj.obj.created, "", size,
                         {algorithm: obj.meta.part_checksums[n - 1]} if n <= len(obj.meta.part_checksums) else {})
                for n, (_, size) in enumerate(obj.meta.parts, 1) if n > marker]
    shown = numbered[:limit]
    return xml.PartsPage(call.bucket, call.key, obj.meta.upload, owner(call), shown, marker,
                         shown[-1].number if shown else marker, limit, len(numbered) > limit, len(obj.meta.parts))


async def delete_object(call: Call) -> web.StreamResponse:
    where = target(call, "read")
    version = version_id(call)
    done = await call.services.s3.delete(call.who, where, call.key, version, bypass(call))
    headers = {"x-amz-version-id": done.version_id} if done.version_id is not None else {}
    if done.marker:
        headers["x-amz-delete-marker"] = "true"
    return web.Response(status=204, headers=headers)


async def get_object_acl(call: Call) -> web.StreamResponse:
    where = target(call, "read")
    obj = stored(call, where, call.key, version_id(call))
    return _xml(xml.acl(owner(call)), headers=version_headers(where, obj))


async def put_object_acl(call: Call) -> web.StreamResponse:
    where = target(call, "full")
    obj = stored(call, where, call.key, version_id(call))
    await _private_only(call)
    return web.Response(headers=version_headers(where, obj))


async def get_tagging(call: Call) -> web.StreamResponse:
    where = target(call, "read")
    obj = stored(call, where, call.key, version_id(call))
    return _xml(xml.tagging(dict(sorted(obj.meta.tags.items()))), headers=version_headers(where, obj))


async def put_tagging(call: Call) -> web.StreamResponse:
    where = target(call, "full")
    tags = xml.parse_tagging(await read_small(call.request, xml.MAX_SMALL_BODY))
    return await _set_tags(call, where, tags, 200)


async def delete_tagging(call: Call) -> web.StreamResponse:
    return await _set_tags(call, target(call, "full"), {}, 204)


async def _set_tags(call: Call, where: Target, tags: dict[str, str], status: int) -> web.StreamResponse:
    version = version_id(call)
    obj = stored(call, where, call.key, version)
    await call.services.s3.set_tags(call.who, where, call.key, tags, obj.meta.version_id if version else None)
    return web.Response(status=status, headers=version_headers(where, obj))


ROUTES = {
    ("GET", "service", ""): list_buckets,
    ("PUT", "bucket", ""): create_bucket,
    ("HEAD", "bucket", ""): head_bucket,
    ("DELETE", "bucket", ""): delete_bucket,
    ("GET", "bucket", "location"): get_location,
    ("GET", "bucket", "versioning"): get_versioning,
    ("PUT", "bucket", "versioning"): put_versioning,
    ("GET", "bucket", "acl"): get_bucket_acl,
    ("GET", "bucket", "policyStatus"): get_policy_status,
    ("GET", "bucket", "tagging"): get_bucket_tagging,
    ("PUT", "bucket", "tagging"): put_bucket_tagging,
    ("DELETE", "bucket", "tagging"): delete_bucket_tagging,
    ("GET", "bucket", "publicAccessBlock"): get_public_access_block,
    ("PUT", "bucket", "publicAccessBlock"): put_public_access_block,
    ("DELETE", "bucket", "publicAccessBlock"): delete_public_access_block,
    ("PUT", "bucket", "acl"): put_bucket_acl,
    ("GET", "bucket", ""): list_objects_v1,
    ("GET", "bucket", "list-type=2"): list_objects_v2,
    ("GET", "bucket", "versions"): list_versions,
    ("POST", "bucket", "delete"): delete_objects,
    ("PUT", "object", ""): put_object,
    ("GET", "object", ""): get_object,
    ("HEAD", "object", ""): head_object,
    ("DELETE", "object", ""): delete_object,
    ("GET", "object", "acl"): get_object_acl,
    ("PUT", "object", "acl"): put_object_acl,
    ("GET", "object", "tagging"): get_tagging,
    ("GET", "object", "attributes"): get_attributes,
    ("PUT", "object", "tagging"): put_tagging,
    ("DELETE", "object", "tagging"): delete_tagging,
}
