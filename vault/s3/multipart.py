"""S3 handlers for multipart uploads: each translates one operation to the services."""

from __future__ import annotations

from collections.abc import AsyncIterator

from aiohttp import web

from .. import errors as E
from ..http import parse_range
from ..meta import UploadRec
from ..services.buckets import Target
from ..services.s3objects import MAX_PART_NUMBER, S3Meta, Stored, unpack_meta
from . import checksums, xml
from .bodies import MAX_PUT_BYTES, check_acl, lock_of, lower, meta_of, preconditions, receive, store
from .errors import S3Error
from .front import Call, read_small
from .handlers import copy_source, owner, stored, target, write_conditions, written_headers

MAX_LIST = 1000


def _upload(call: Call, where: Target) -> UploadRec:
    return call.services.s3.upload(where, call.key, call.query["uploadId"])


def _algorithm(upload: UploadRec) -> str:
    """The checksum algorithm the upload asked for ("" for none)."""
    return next(iter(unpack_meta(upload.meta).checksums), "")


async def create_upload(call: Call) -> web.StreamResponse:
    check_acl(call.headers)
    where = target(call, "append")
    meta = lock_of(call.headers, where, meta_of(call.headers))
    headers = lower(call.headers)
    algorithm = headers.get("x-amz-checksum-algorithm", "").lower()
    if algorithm and algorithm not in checksums.ALGORITHMS:
        raise S3Error("InvalidRequest", f"Unknown checksum algorithm {algorithm!r}")
    if algorithm:
        meta.checksums = {algorithm: ""}
        meta.checksum_type = headers.get("x-amz-checksum-type", "COMPOSITE").upper()
    upload = await call.services.s3.create_upload(call.who, where, call.key, meta)
    answer = {"x-amz-checksum-algorithm": algorithm.upper()} if algorithm else {}
    return web.Response(body=xml.initiate_multipart(call.bucket, call.key, upload.id),
                        content_type="application/xml", headers=answer)


def _part_number(call: Call) -> int:
    value = call.query.get("partNumber", "")
    if not value.isdigit() or not 1 <= int(value) <= MAX_PART_NUMBER:
        raise S3Error("InvalidArgument", f"Part number must be an integer between 1 and {MAX_PART_NUMBER}")
    return int(value)


async def upload_part(call: Call) -> web.StreamResponse:
    where = target(call, "append")
    number = _part_number(call)
    upload = _upload(call, where)
    if "x-amz-copy-source" in call.headers:
        return await _upload_part_copy(call, where, upload, number)
    got = await receive(call, where, _algorithm(upload))
    meta = S3Meta(etag=got.etag, checksums=got.checksums)
    await call.services.s3.put_part(where, upload, number, got.chunks, got.size, meta)
    headers = {"ETag": f'"{got.etag}"', **{f"x-amz-checksum-{a}": v for a, v in got.checksums.items()}}
    return web.Response(headers=headers)


async def _upload_part_copy(call: Call, where: Target, upload: UploadRec, number: int) -> web.StreamResponse:
    """UploadPartCopy: the source's bytes (or a range of them) read and stored
    again as the part's own chunks."""
    source_bucket, source_key, source_version = copy_source(call)
    source = call.services.buckets.target(call.who, source_bucket, "read")
    src = stored(call, source, source_key, source_version)
    if not preconditions(call.headers, src, "x-amz-copy-source-if-"):
        raise S3Error("PreconditionFailed")
    start, end = _copy_range(call, src)
    if end - start > MAX_PUT_BYTES:
        raise S3Error("EntityTooLarge")
    algorithm = _algorithm(upload)
    digests = checksums.BodyDigests({algorithm} if algorithm else set())
    chunks, size = await store(call.budget, call.services.s3, where, end - start,
                               _pieces(call, source, src, start, end), digests.update)
    sums = {algorithm: digests.checksum(algorithm)} if algorithm else {}
    part = await call.services.s3.put_part(where, upload, number, chunks, size,
                                           S3Meta(etag=digests.etag(), checksums=sums))
    return web.Response(body=xml.copy_result(part.meta.etag, part.obj.created, sums, part=True),
                        content_type="application/xml")


def _copy_range(call: Call, src: Stored) -> tuple[int, int]:
    header = call.headers.get("x-amz-copy-source-range")
    if header is None:
        return 0, src.obj.size
    rng = parse_range(header, src.obj.size)
    if rng is None or not header.replace("bytes=", "").split("-")[1]:
        raise S3Error("InvalidArgument", "The x-amz-copy-source-range value must be of the form bytes=first-last")
    if int(header.replace("bytes=", "").split("-")[1]) >= src.obj.size:
        raise S3Error("InvalidRange")
    return rng


async def _pieces(call: Call, source: Target, src: Stored, start: int, end: int) -> AsyncIterator[bytes | memoryview]:
    async for data in call.services.s3.read(source, src, start, end):
        yield data


async def complete_upload(call: Call) -> web.StreamResponse:
    where = target(call, "append")
    parts = xml.parse_complete_multipart(await read_small(call.request, xml.MAX_BODY))
    try:
        upload = _upload(call, where)
    except E.NoSuchUpload:
        done = call.services.s3.completed(where, call.key, call.query["uploadId"])
        if done is None:
            raise
        return _completed(call, where, done)  # a repeated Complete: S3 answers it again
    stated = {name[len(checksums.HEADER_PREFIX):]: value for name, value in lower(call.headers).items()
              if name.startswith(checksums.HEADER_PREFIX) and name[len(checksums.HEADER_PREFIX):] in checksums.ALGORITHMS}

    def finish(meta: S3Meta, chosen: list[Stored]) -> S3Meta:
        for given, part in zip(parts, chosen):
            if any(part.meta.checksums.get(a) != v for a, v in given.checksums.items()):
                raise S3Error("InvalidPart", f"The checksum of part {given.number} does not match")
        meta.etag = checksums.multipart_etag([part.meta.etag for part in chosen])
        algorithm = next(iter(meta.checksums), "")
        meta.part_checksums = [part.meta.checksums.get(algorithm, "") for part in chosen]
        meta.checksums = _final_checksums(meta, chosen)
        for algorithm, value in stated.items():
            if meta.checksums.get(algorithm, "").split("-")[0] != value.split("-")[0]:
                raise S3Error("BadDigest", f"The {algorithm.upper()} you specified did not match the calculated "
                              "checksum.")
        return meta

    if_none_match, if_match = write_conditions(call)
    done = await call.services.s3.complete(call.who, where, upload, [(p.number, p.etag) for p in parts], finish,
                                           if_none_match, if_match)
    return _completed(call, where, done)


def _completed(call: Call, where: Target, done: Stored) -> web.StreamResponse:
    body = xml.complete_multipart(f"/{call.bucket}/{call.key}", call.bucket, call.key, done.meta.etag,
                                  {a: v for a, v in done.meta.checksums.items() if v}, done.meta.checksum_type)
    return web.Response(body=body, content_type="application/xml", headers=written_headers(call, where, done))


def _final_checksums(meta: S3Meta, chosen: list[Stored]) -> dict[str, str]:
    """The whole object's checksum of the algorithm the upload asked for, when every part has it."""
    algorithm = next(iter(meta.checksums), "")
    values = [part.meta.checksums.get(algorithm, "") for part in chosen]
    if not algorithm or not all(values):
        return {}
    if meta.checksum_type == "FULL_OBJECT":
        return {algorithm: checksums.full_object(algorithm, [(v, p.obj.size) for v, p in zip(values, chosen)])}
    return {algorithm: checksums.composite(algorithm, values)}


async def abort_upload(call: Call) -> web.StreamResponse:
    where = target(call, "append")
    await call.services.s3.end_upload(where.vault, _upload(call, where))
    return web.Response(status=204)


async def list_parts(call: Call) -> web.StreamResponse:
    where = target(call, "read")
    upload = _upload(call, where)
    marker = _int(call.query.get("part-number-marker", "0"), "part-number-marker")
    limit = min(_int(call.query.get("max-parts", str(MAX_LIST)), "max-parts"), MAX_LIST)
    parts: list[xml.Part] = []
    for number, part in call.services.s3.parts(where, upload, marker):
        if len(parts) == limit:
            break
        parts.append(xml.Part(number, part.obj.created, part.meta.etag, part.obj.size, part.meta.checksums))
    truncated = len(parts) == limit and any(True for _ in call.services.s3.parts(
        where, upload, parts[-1].number if parts else marker))
    page = xml.PartsPage(call.bucket, call.key, upload.id, owner(call), parts, marker,
                         parts[-1].number if parts else 0, limit, truncated)
    return web.Response(body=xml.list_parts(page), content_type="application/xml")


def _int(value: str, name: str) -> int:
    if not value.isdigit():
        raise S3Error("InvalidArgument", f"{name} must be a non-negative integer")
    return int(value)


async def list_uploads(call: Call) -> web.StreamResponse:
    where = target(call, "read")
    q = call.query
    prefix, delimiter = q.get("prefix", ""), q.get("delimiter", "")
    key_marker, id_marker = q.get("key-marker", ""), q.get("upload-id-marker", "")
    limit = min(_int(q.get("max-uploads", str(MAX_LIST)), "max-uploads"), MAX_LIST)
    uploads: list[xml.Upload] = []
    prefixes: list[str] = []
    truncated = False
    for rec in call.services.s3.uploads(where, prefix, key_marker, id_marker):
        cut = rec.key.find(delimiter, len(prefix)) if delimiter else -1
        if cut >= 0 and rec.key[:cut + len(delimiter)] in prefixes:
            continue
        if len(uploads) + len(prefixes) == limit:
            truncated = True
            break
        if cut >= 0:
            prefixes.append(rec.key[:cut + len(delimiter)])
        else:
            uploads.append(xml.Upload(rec.key, rec.id, rec.created, owner(call)))
    last = uploads[-1] if uploads else None
    page = xml.UploadsPage(call.bucket, prefix, delimiter, key_marker, id_marker, last.key if last else "",
                           last.upload_id if last else "", limit, truncated, uploads, prefixes)
    return web.Response(body=xml.list_uploads(page), content_type="application/xml")


ROUTES = {
    ("POST", "object", "uploads"): create_upload,
    ("PUT", "object", "uploadId"): upload_part,
    ("POST", "object", "uploadId"): complete_upload,
    ("DELETE", "object", "uploadId"): abort_upload,
    ("GET", "object", "uploadId"): list_parts,
    ("GET", "bucket", "uploads"): list_uploads,
}
