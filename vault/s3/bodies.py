"""Request bodies and object headers: what a PUT brings in, what a GET sends back.

:func:`receive` streams a PutObject or UploadPart body (plain or
``aws-chunked``) into the vault as chunks, computing its MD5 (the ETag),
the signed payload's SHA-256 and the asked-for checksums in the same pass,
and verifies them once the body is complete. Anything refused leaves only
unreferenced chunks behind, which GC collects after its grace period.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from email.utils import formatdate, parsedate_to_datetime
from urllib.parse import parse_qsl

from ..policy import DAY
from ..services.buckets import Target, object_lock, versioning
from ..budget import MemoryBudget
from ..services.chunks import Observer
from ..services.s3objects import S3Meta, S3ObjectService, Stored, etag_in
from . import checksums, xml
from .chunked import ChunkedBody
from .errors import S3Error
from .front import Call, reader
from .sigv4 import Payload

MAX_PUT_BYTES = 5 << 30  # a single PUT, and a part, as on S3
MAX_USER_META_BYTES = 2048
MAX_OBJECT_TAGS = 10
CONTENT_HEADERS = ("cache-control", "content-disposition", "content-encoding", "content-language", "expires")
OVERRIDES = {"response-content-type": "Content-Type", "response-content-language": "Content-Language",
             "response-expires": "Expires", "response-cache-control": "Cache-Control",
             "response-content-disposition": "Content-Disposition",
             "response-content-encoding": "Content-Encoding"}
ACCEPTED_ACLS = ("private", "bucket-owner-full-control")
# S3's storage classes. A vault has one, at least as durable and available as
# any of them: an object asked for in any is kept in it and listed STANDARD.
STORAGE_CLASSES = frozenset({"STANDARD", "REDUCED_REDUNDANCY", "STANDARD_IA", "ONEZONE_IA", "INTELLIGENT_TIERING",
                             "GLACIER", "DEEP_ARCHIVE", "OUTPOSTS", "GLACIER_IR", "SNOW", "EXPRESS_ONEZONE"})


@dataclass(frozen=True)
class Received:
    """A body stored as chunks and verified."""

    chunks: list[bytes]
    size: int
    etag: str
    checksums: dict[str, str]


def lower(headers: Mapping[str, str]) -> dict[str, str]:
    return {name.lower(): value for name, value in headers.items()}


async def receive(call: Call, target: Target, algorithm: str = "") -> Received:
    """Store the request's body in ``target``'s vault; ``algorithm`` is a
    checksum computed even if the request states none (the upload's).

    Raises S3Error: MissingContentLength, EntityTooLarge, IncompleteBody,
    BadDigest, InvalidDigest, XAmzContentSHA256Mismatch, SignatureDoesNotMatch;
    QuotaExceeded before the body is read.
    """
    headers = lower(call.headers)
    length, pieces, trailers = _body(call, headers)
    if length is not None and length > MAX_PUT_BYTES:
        raise S3Error("EntityTooLarge", MaxSizeAllowed=str(MAX_PUT_BYTES))
    stated = checksums.requested(headers)
    md5 = checksums.content_md5(headers["content-md5"]) if "content-md5" in headers else None
    wanted = set(stated) | {a for a in (algorithm, _trailer_algorithm(headers),
                                        headers.get("x-amz-sdk-checksum-algorithm", "").lower()) if a}
    wanted &= set(checksums.ALGORITHMS)
    digests = checksums.BodyDigests(wanted, sha256=call.auth.payload is Payload.SIGNED)
    chunks, size = await store(call.budget, call.services.s3, target, length, _bounded(pieces), digests.update)
    if length is not None and size != length:
        raise S3Error("IncompleteBody")
    for name, value in trailers().items():
        if name.startswith(checksums.HEADER_PREFIX) and name[len(checksums.HEADER_PREFIX):] in wanted:
            stated[name[len(checksums.HEADER_PREFIX):]] = checksums.decode(name[len(checksums.HEADER_PREFIX):],
                                                                           value)
    digests.verify(md5, call.auth.payload_sha256, stated)
    return Received(chunks, size, digests.etag(), {a: digests.checksum(a) for a in sorted(wanted)})


async def store(budget: MemoryBudget, s3: S3ObjectService, target: Target, length: int | None,
                pieces: AsyncIterator[bytes | memoryview], observe: Observer) -> tuple[list[bytes], int]:
    """Store a body (``length``: None when unknown) as chunks of ``target``'s
    vault, holding the memory of one chunk (or of the body, if smaller) in
    the server's budget meanwhile; the chunks' ids and the size."""
    most = s3.chunk_bytes
    held = await budget.acquire(most if length is None else min(length, most))
    try:
        return await s3.store(target, length or 0, pieces, observe)
    finally:
        budget.release(held)


async def _bounded(pieces: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    """The pieces, refused with EntityTooLarge past :data:`MAX_PUT_BYTES` (a body of unknown length)."""
    got = 0
    async for piece in pieces:
        got += len(piece)
        if got > MAX_PUT_BYTES:
            raise S3Error("EntityTooLarge", MaxSizeAllowed=str(MAX_PUT_BYTES))
        yield piece


def _trailer_algorithm(headers: Mapping[str, str]) -> str:
    trailer = headers.get("x-amz-trailer", "").strip().lower()
    return trailer[len(checksums.HEADER_PREFIX):] if trailer.startswith(checksums.HEADER_PREFIX) else ""


def _body(call: Call, headers: Mapping[str, str]) -> tuple[int | None, AsyncIterator[bytes],
                                                          Callable[[], dict[str, str]]]:
    """(decoded length, the decoded bytes as they come, the trailers once read)."""
    read = reader(call.request)
    auth = call.auth
    if auth.payload.streaming:
        length = _length(headers.get("x-amz-decoded-content-length"))
        body = ChunkedBody(read, auth.payload, length, signing=auth.signing if auth.payload.chunk_signed else None,
                           seed_signature=auth.signature, trailer=headers.get("x-amz-trailer"))
        return length, aiter(body), lambda: body.trailers
    # HTTP-chunked without a length: known only at its end.
    unknown = "content-length" not in headers and "chunked" in headers.get("transfer-encoding", "")
    plain = None if unknown else _length(headers.get("content-length"))

    async def pieces() -> AsyncIterator[bytes]:
        while piece := await read(1 << 20):
            yield piece

    return plain, pieces(), dict


def _length(value: str | None) -> int:
    if value is None or not value.isdigit():
        raise S3Error("MissingContentLength")
    return int(value)


def check_acl(headers: Mapping[str, str]) -> None:
    """Refuse any ACL that would let someone outside the vault in: a vault never serves the public."""
    acl = headers.get("x-amz-acl")
    grants = [name for name in headers if name.lower().startswith("x-amz-grant-")]
    if (acl is not None and acl not in ACCEPTED_ACLS) or grants:
        raise S3Error("AccessDenied", "objvault grants no access beyond the vault's own keys: only the canned "
                      "ACLs 'private' and 'bucket-owner-full-control' are accepted")


def check_storage_class(headers: Mapping[str, str]) -> None:
    """Refuse a storage class S3 does not have (any S3 one is kept in the
    vault's one class); ``headers`` as the request's (case-insensitive) or lowered."""
    named = headers.get("x-amz-storage-class")
    if named is not None and named not in STORAGE_CLASSES:
        raise S3Error("InvalidStorageClass", ArgumentName="x-amz-storage-class", ArgumentValue=named[:64])


def meta_of(headers: Mapping[str, str]) -> S3Meta:
    """The S3 metadata a PutObject, CreateMultipartUpload or CopyObject
    (REPLACE) states: content headers, user metadata, tags."""
    low = lower(headers)
    check_storage_class(low)
    user = {name[len("x-amz-meta-"):]: value for name, value in low.items() if name.startswith("x-amz-meta-")}
    _utf8_only(low, [*(f"x-amz-meta-{name}" for name in user), *CONTENT_HEADERS, "content-type", "x-amz-tagging"])
    if sum(len(k.encode()) + len(v.encode("utf-8", "surrogateescape")) for k, v in user.items()) \
            > MAX_USER_META_BYTES:  # bytes of UTF-8, as S3 counts them
        raise S3Error("MetadataTooLarge")
    stored = {name: low[name] for name in CONTENT_HEADERS if name in low}
    encoding = [e.strip() for e in stored.pop("content-encoding", "").split(",") if e.strip() not in ("", "aws-chunked")]
    if encoding:
        stored["content-encoding"] = ", ".join(encoding)
    return S3Meta(etag="", content_type=low.get("content-type", ""), headers=stored, user=user,
                  tags=tags_of(low.get("x-amz-tagging", "")))


def _utf8_only(headers: Mapping[str, str], names: list[str]) -> None:
    """Refuse a stored header value that did not come as UTF-8 (aiohttp hands
    such a byte over as a lone surrogate): it could not be answered as sent."""
    for name in names:
        value = headers.get(name)
        if value is not None and not value.isascii():
            try:
                value.encode()
            except UnicodeEncodeError:
                raise S3Error("InvalidArgument", f"the value of {name} is not UTF-8",
                              ArgumentName=name) from None


def lock_of(headers: Mapping[str, str], target: Target, meta: S3Meta) -> S3Meta:
    """Set the Object Lock of a new version from the ``x-amz-object-lock-*``
    headers, or the bucket's default retention when they give no mode.

    Raises InvalidRequest (lock headers for a bucket without Object Lock),
    InvalidArgument (a bad mode, status or date, one of mode and date without
    the other, a date not in the future)."""
    low = lower(headers)
    mode, until = low.get("x-amz-object-lock-mode"), low.get("x-amz-object-lock-retain-until-date")
    hold = low.get("x-amz-object-lock-legal-hold")
    lock = object_lock(target.bucket)
    meta.lock_mode, meta.retain_until, meta.legal_hold = "", 0.0, False
    if lock is None:
        if mode is not None or until is not None or hold is not None:
            raise S3Error("InvalidRequest", "Bucket is missing Object Lock Configuration")
        return meta
    if (mode is None) != (until is None):
        raise S3Error("InvalidArgument", "x-amz-object-lock-mode and x-amz-object-lock-retain-until-date "
                      "must both be given")
    if mode is not None and until is not None:
        if mode not in xml.LOCK_MODES:
            raise S3Error("InvalidArgument", "Unknown wormMode directive")
        try:
            meta.retain_until = xml.parse_time(until)
        except S3Error:
            raise S3Error("InvalidArgument", "The retain until date is not a valid date") from None
        if meta.retain_until <= time.time():
            raise S3Error("InvalidArgument", "The retain until date must be in the future")
        meta.lock_mode = mode
    elif lock.get("mode"):
        meta.lock_mode = lock["mode"]
        meta.retain_until = time.time() + DAY * (lock.get("days") or 365 * lock.get("years", 0))
    if hold is not None and hold not in ("ON", "OFF"):
        raise S3Error("InvalidArgument", "Legal Hold must be either of 'ON' or 'OFF'")
    meta.legal_hold = hold == "ON"
    return meta


def version_headers(target: Target, stored: Stored, written: bool = False) -> dict[str, str]:
    """``x-amz-version-id`` of a version in a versioned bucket (the answer to a
    write names only a version with an id, as S3), and ``x-amz-delete-marker``
    for a delete marker."""
    out = {}
    if stored.meta.version or (versioning(target.bucket) and not written):
        out["x-amz-version-id"] = stored.meta.version_id
    if stored.meta.marker:
        out["x-amz-delete-marker"] = "true"
    return out


def tags_of(query: str) -> dict[str, str]:
    """The tags of an ``x-amz-tagging`` header (a URL query string)."""
    tags = dict(parse_qsl(query, keep_blank_values=True))
    if len(tags) > MAX_OBJECT_TAGS or any(not 0 < len(k) <= 128 or len(v) > 256 for k, v in tags.items()):
        raise S3Error("InvalidTag")
    return tags


def object_headers(stored: Stored, query: Mapping[str, str], with_checksums: bool,
                   part: int | None = None) -> dict[str, str]:
    """The headers of a GetObject or HeadObject answer (of one part, when
    ``part`` is given), ``response-*`` overrides applied."""
    meta = stored.meta
    out = {"ETag": f'"{meta.etag}"', "Last-Modified": formatdate(int(stored.obj.created), usegmt=True),
           "Accept-Ranges": "bytes", "Content-Type": meta.content_type or "binary/octet-stream"}
    out.update({name.title(): value for name, value in meta.headers.items()})
    out.update({f"x-amz-meta-{name}": value for name, value in meta.user.items()})
    if meta.tags:
        out["x-amz-tagging-count"] = str(len(meta.tags))
    if meta.upload:
        out["x-amz-mp-parts-count"] = str(len(meta.parts))
    if with_checksums:
        out.update(_checksum_headers(meta, part))
    if meta.lock_mode:
        out["x-amz-object-lock-mode"] = meta.lock_mode
        out["x-amz-object-lock-retain-until-date"] = xml.timestamp(meta.retain_until)
    if meta.legal_hold:
        out["x-amz-object-lock-legal-hold"] = "ON"
    out.update({header: query[param] for param, header in OVERRIDES.items() if param in query})
    return out


def _checksum_headers(meta: S3Meta, part: int | None) -> dict[str, str]:
    sums = {a: v for a, v in meta.checksums.items() if v}
    if part is not None and meta.upload:
        sums = {a: meta.part_checksums[part - 1] for a in sums if part <= len(meta.part_checksums)}
    out = {f"{checksums.HEADER_PREFIX}{a}": v for a, v in sums.items()}
    if sums and meta.checksum_type:
        out["x-amz-checksum-type"] = meta.checksum_type
    return out


def http_time(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return parsedate_to_datetime(value).timestamp()
    except (TypeError, ValueError):
        return None


def preconditions(headers: Mapping[str, str], stored: Stored, prefix: str = "if-") -> bool:
    """Evaluate conditional headers (``prefix`` is ``x-amz-copy-source-if-`` for
    a copy's source); False for Not Modified, PreconditionFailed when one fails."""
    low = lower(headers)
    etag, modified = stored.meta.etag, int(stored.obj.created)
    match, since = low.get(prefix + "match"), http_time(low.get(prefix + "unmodified-since"))
    if (match is not None and not etag_in(match, etag)) or (match is None and since is not None
                                                                  and modified > since):
        raise S3Error("PreconditionFailed", Condition=prefix + ("match" if match is not None else "unmodified-since"))
    none_match, changed = low.get(prefix + "none-match"), http_time(low.get(prefix + "modified-since"))
    if none_match is not None:
        return not etag_in(none_match, etag)
    return changed is None or modified > changed
