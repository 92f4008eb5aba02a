"""S3's XML: the documents the front door answers with, and safe parsing of
the ones clients send.

Rendering builds ElementTree elements, so every name and key is escaped.
Parsing goes through ``defusedxml`` with DTDs forbidden: the standard
library's expat bounds entity expansion (since expat 2.4) but still accepts
DTDs and internal entities, which no S3 request body ever needs; defusedxml
refuses them outright. Bodies are refused beyond a size bound before being
parsed. Anything wrong is MalformedXML unless S3 names it otherwise.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from urllib.parse import quote
from xml.etree.ElementTree import Element, ParseError, SubElement, tostring

from defusedxml import DefusedXmlException
from defusedxml.ElementTree import fromstring

from .errors import S3Error

NAMESPACE = "http://s3.amazonaws.com/doc/2006-03-01/"
MAX_BODY = 8 << 20  # CompleteMultipartUpload of 10,000 parts, DeleteObjects of 1,000 long keys
MAX_SMALL_BODY = 64 << 10  # Tagging, CreateBucketConfiguration
MAX_DELETE_KEYS = 1000
MAX_PARTS = 10_000


@dataclass(frozen=True)
class Owner:
    id: str
    display_name: str


@dataclass(frozen=True)
class ObjectEntry:
    """An object in a listing; ``owner`` only when the listing shows owners."""

    key: str
    modified: float
    etag: str
    size: int
    owner: Owner | None = None
    storage_class: str = "STANDARD"
    version: str = "null"  # of ListObjectVersions
    latest: bool = True
    marker: bool = False


@dataclass(frozen=True)
class Listing:
    """One page of ListObjects (v1 or v2), names not yet URL-encoded."""

    bucket: str
    prefix: str
    delimiter: str
    max_keys: int
    truncated: bool
    objects: list[ObjectEntry]
    prefixes: list[str]
    url_encode: bool = False


@dataclass(frozen=True)
class Part:
    number: int
    modified: float
    etag: str
    size: int
    checksums: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class PartsPage:
    """One page of ListParts."""

    bucket: str
    key: str
    upload_id: str
    owner: Owner
    parts: list[Part]
    marker: int
    next_marker: int
    max_parts: int
    truncated: bool
    total: int = 0


@dataclass(frozen=True)
class Upload:
    key: str
    upload_id: str
    initiated: float
    owner: Owner


@dataclass(frozen=True)
class UploadsPage:
    """One page of ListMultipartUploads."""

    bucket: str
    prefix: str
    delimiter: str
    key_marker: str
    upload_id_marker: str
    next_key_marker: str
    next_upload_id_marker: str
    max_uploads: int
    truncated: bool
    uploads: list[Upload]
    prefixes: list[str]


@dataclass(frozen=True)
class CompletedPart:
    """A part named in CompleteMultipartUpload; ``etag`` without quotes,
    ``checksums`` algorithm -> base64 value."""

    number: int
    etag: str
    checksums: dict[str, str]


@dataclass(frozen=True)
class DeleteRequest:
    objects: list[tuple[str, str | None]]  # (key, version id)
    quiet: bool


@dataclass(frozen=True)
class DeletedEntry:
    """A key DeleteObjects removed: the version named, or the delete marker it added."""

    key: str
    version_id: str | None = None
    marker: bool = False
    marker_version_id: str | None = None


@dataclass(frozen=True)
class LockRule:
    """An Object Lock default retention: a mode and Days or Years."""

    mode: str
    days: int = 0
    years: int = 0


LOCK_MODES = ("GOVERNANCE", "COMPLIANCE")


# -- rendering ----------------------------------------------------------------------------


def timestamp(ts: float) -> str:
    """S3's ISO 8601 form, milliseconds and Z: 2009-10-12T17:50:30.000Z."""
    return datetime.fromtimestamp(ts, timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _root(tag: str) -> Element:
    return Element(tag, xmlns=NAMESPACE)


def _add(parent: Element, tag: str, text: str | int | bool) -> Element:
    child = SubElement(parent, tag)
    child.text = ("true" if text else "false") if isinstance(text, bool) else str(text)
    return child


def _fields(parent: Element, **fields: str | int | bool) -> None:
    """One child per field, in the order given (S3's schemas are ordered)."""
    for tag, text in fields.items():
        _add(parent, tag, text)


def _document(root: Element) -> bytes:
    return b'<?xml version="1.0" encoding="UTF-8"?>\n' + tostring(root, encoding="utf-8")


def _owner(parent: Element, tag: str, owner: Owner) -> None:
    _fields(SubElement(parent, tag), ID=owner.id, DisplayName=owner.display_name)


def _checksums(parent: Element, checksums: Mapping[str, str]) -> None:
    for algorithm, value in checksums.items():
        _add(parent, "Checksum" + algorithm.upper(), value)


def _quoted(etag: str) -> str:
    return f'"{etag}"'


def error_document(error: S3Error, request_id: str) -> bytes:
    """The body of an error answer: Code, Message, Resource, RequestId and
    the error's extra elements."""
    root = Element("Error")
    _add(root, "Code", error.code)
    _add(root, "Message", error.message)
    if error.resource:
        _add(root, "Resource", error.resource)
    for name, value in error.extra.items():
        _add(root, name, value)
    _add(root, "RequestId", request_id)
    return _document(root)


def list_buckets(owner: Owner, buckets: Iterable[tuple[str, float]], continuation_token: str | None = None,
                 prefix: str | None = None) -> bytes:
    """ListAllMyBucketsResult of ``(name, created)`` pairs; ``continuation_token``
    when more follow."""
    root = _root("ListAllMyBucketsResult")
    _owner(root, "Owner", owner)
    parent = SubElement(root, "Buckets")
    for name, created in buckets:
        bucket = SubElement(parent, "Bucket")
        _add(bucket, "Name", name)
        _add(bucket, "CreationDate", timestamp(created))
    if continuation_token is not None:
        _add(root, "ContinuationToken", continuation_token)
    if prefix is not None:
        _add(root, "Prefix", prefix)
    return _document(root)


def list_objects_v1(page: Listing, marker: str, next_marker: str | None) -> bytes:
    """ListBucketResult of ListObjects; ``next_marker`` only with a delimiter, as S3.
    Its Prefix is never URL-encoded (botocore decodes it only in ListObjectsV2)."""
    root = _listing_head(page, encode_prefix=False)
    _add(root, "Marker", _name(page, marker))
    if next_marker is not None and page.truncated:
        _add(root, "NextMarker", _name(page, next_marker))
    return _listing_body(root, page)


def list_objects_v2(page: Listing, continuation_token: str | None, next_token: str | None,
                    start_after: str | None) -> bytes:
    """ListBucketResult of ListObjectsV2, with KeyCount."""
    root = _listing_head(page)
    _add(root, "KeyCount", len(page.objects) + len(page.prefixes))
    if continuation_token is not None:
        _add(root, "ContinuationToken", continuation_token)
    if next_token is not None and page.truncated:
        _add(root, "NextContinuationToken", next_token)
    if start_after is not None:
        _add(root, "StartAfter", _name(page, start_after))
    return _listing_body(root, page)


def list_versions(page: Listing, key_marker: str, version_marker: str, next_marker: str | None,
                  next_version: str | None) -> bytes:
    """ListVersionsResult: versions (``ObjectEntry.version`` set) and delete
    markers, by key and newest first."""
    root = _root("ListVersionsResult")
    _fields(root, Name=page.bucket, Prefix=_name(page, page.prefix), KeyMarker=_name(page, key_marker),
            VersionIdMarker=version_marker)
    if next_marker is not None and page.truncated:
        _add(root, "NextKeyMarker", _name(page, next_marker))
        if next_version is not None:
            _add(root, "NextVersionIdMarker", next_version)
    if page.delimiter:
        _add(root, "Delimiter", _name(page, page.delimiter))
    _fields(root, MaxKeys=page.max_keys, IsTruncated=page.truncated)
    if page.url_encode:
        _add(root, "EncodingType", "url")
    for entry in page.objects:
        if entry.marker:
            element = SubElement(root, "DeleteMarker")
            _fields(element, Key=_name(page, entry.key), VersionId=entry.version, IsLatest=entry.latest,
                    LastModified=timestamp(entry.modified))
        else:
            element = SubElement(root, "Version")
            _fields(element, Key=_name(page, entry.key), VersionId=entry.version, IsLatest=entry.latest,
                    LastModified=timestamp(entry.modified), ETag=_quoted(entry.etag), Size=entry.size,
                    StorageClass=entry.storage_class)
        if entry.owner is not None:
            _owner(element, "Owner", entry.owner)
    for prefix in page.prefixes:
        _add(SubElement(root, "CommonPrefixes"), "Prefix", _name(page, prefix))
    return _document(root)


def _listing_head(page: Listing, encode_prefix: bool = True) -> Element:
    root = _root("ListBucketResult")
    _add(root, "Name", page.bucket)
    _add(root, "Prefix", _name(page, page.prefix) if encode_prefix else page.prefix)
    if page.delimiter:
        _add(root, "Delimiter", _name(page, page.delimiter))
    _add(root, "MaxKeys", page.max_keys)
    if page.url_encode:
        _add(root, "EncodingType", "url")
    _add(root, "IsTruncated", page.truncated)
    return root


def _listing_body(root: Element, page: Listing) -> bytes:
    for entry in page.objects:
        contents = SubElement(root, "Contents")
        _fields(contents, Key=_name(page, entry.key), LastModified=timestamp(entry.modified),
                ETag=_quoted(entry.etag), Size=entry.size, StorageClass=entry.storage_class)
        if entry.owner is not None:
            _owner(contents, "Owner", entry.owner)
    for prefix in page.prefixes:
        _add(SubElement(root, "CommonPrefixes"), "Prefix", _name(page, prefix))
    return _document(root)


def _name(page: Listing, name: str) -> str:
    """A key or prefix as the listing shows it: with encoding-type=url,
    percent-encoded (``/`` kept), which SDKs decode."""
    return quote(name, safe="/") if page.url_encode else name


def initiate_multipart(bucket: str, key: str, upload_id: str) -> bytes:
    root = _root("InitiateMultipartUploadResult")
    _fields(root, Bucket=bucket, Key=key, UploadId=upload_id)
    return _document(root)


def complete_multipart(location: str, bucket: str, key: str, etag: str,
                       checksums: Mapping[str, str] | None = None, checksum_type: str = "") -> bytes:
    root = _root("CompleteMultipartUploadResult")
    _fields(root, Location=location, Bucket=bucket, Key=key, ETag=_quoted(etag))
    _checksums(root, checksums or {})
    if checksum_type and checksums:
        _add(root, "ChecksumType", checksum_type)
    return _document(root)


def list_parts(page: PartsPage) -> bytes:
    root = _root("ListPartsResult")
    _fields(root, Bucket=page.bucket, Key=page.key, UploadId=page.upload_id)
    _owner(root, "Initiator", page.owner)
    _owner(root, "Owner", page.owner)
    _fields(root, StorageClass="STANDARD", PartNumberMarker=page.marker, NextPartNumberMarker=page.next_marker,
            MaxParts=page.max_parts, IsTruncated=page.truncated)
    for part in page.parts:
        element = SubElement(root, "Part")
        _fields(element, PartNumber=part.number, LastModified=timestamp(part.modified), ETag=_quoted(part.etag),
                Size=part.size)
        _checksums(element, part.checksums)
    return _document(root)


def list_uploads(page: UploadsPage) -> bytes:
    root = _root("ListMultipartUploadsResult")
    _fields(root, Bucket=page.bucket, KeyMarker=page.key_marker, UploadIdMarker=page.upload_id_marker,
            NextKeyMarker=page.next_key_marker, NextUploadIdMarker=page.next_upload_id_marker, Prefix=page.prefix)
    if page.delimiter:
        _add(root, "Delimiter", page.delimiter)
    _fields(root, MaxUploads=page.max_uploads, IsTruncated=page.truncated)
    for upload in page.uploads:
        element = SubElement(root, "Upload")
        _fields(element, Key=upload.key, UploadId=upload.upload_id)
        _owner(element, "Initiator", upload.owner)
        _owner(element, "Owner", upload.owner)
        _fields(element, StorageClass="STANDARD", Initiated=timestamp(upload.initiated))
    for prefix in page.prefixes:
        _add(SubElement(root, "CommonPrefixes"), "Prefix", prefix)
    return _document(root)


def copy_result(etag: str, modified: float, checksums: Mapping[str, str] | None = None,
                part: bool = False) -> bytes:
    """CopyObjectResult, or CopyPartResult for UploadPartCopy."""
    root = _root("CopyPartResult" if part else "CopyObjectResult")
    _add(root, "LastModified", timestamp(modified))
    _add(root, "ETag", _quoted(etag))
    _checksums(root, checksums or {})
    return _document(root)


def delete_result(deleted: Iterable[DeletedEntry | tuple[str, str | None]],
                  errors: Iterable[tuple[str, S3Error] | tuple[str, str | None, S3Error]], quiet: bool) -> bytes:
    """DeleteResult: the keys deleted (left out when ``quiet``), each a
    :class:`DeletedEntry` or ``(key, version id)``, and the ``(key, error)``
    or ``(key, version id, error)`` of each one refused."""
    root = _root("DeleteResult")
    for item in [] if quiet else deleted:
        entry = item if isinstance(item, DeletedEntry) else DeletedEntry(*item)
        element = SubElement(root, "Deleted")
        _add(element, "Key", entry.key)
        if entry.version_id is not None:
            _add(element, "VersionId", entry.version_id)
        if entry.marker:
            _add(element, "DeleteMarker", True)
            if entry.marker_version_id is not None:
                _add(element, "DeleteMarkerVersionId", entry.marker_version_id)
    for failed in errors:
        key, version_id, error = failed if len(failed) == 3 else (failed[0], None, failed[-1])
        element = SubElement(root, "Error")
        _add(element, "Key", key)
        if version_id is not None:
            _add(element, "VersionId", version_id)
        _add(element, "Code", error.code)
        _add(element, "Message", error.message)
    return _document(root)


def tagging(tags: Mapping[str, str]) -> bytes:
    root = _root("Tagging")
    tag_set = SubElement(root, "TagSet")
    for key, value in tags.items():
        tag = SubElement(tag_set, "Tag")
        _add(tag, "Key", key)
        _add(tag, "Value", value)
    return _document(root)


def acl(owner: Owner) -> bytes:
    """AccessControlPolicy: the owner, with FULL_CONTROL, and no one else."""
    root = _root("AccessControlPolicy")
    _owner(root, "Owner", owner)
    grant = SubElement(SubElement(root, "AccessControlList"), "Grant")
    grantee = SubElement(grant, "Grantee", {"xmlns:xsi": "http://www.w3.org/2001/XMLSchema-instance",
                                            "xsi:type": "CanonicalUser"})
    _fields(grantee, ID=owner.id, DisplayName=owner.display_name)
    _add(grant, "Permission", "FULL_CONTROL")
    return _document(root)


def location(constraint: str) -> bytes:
    """A bucket's LocationConstraint document (empty for "")."""
    root = _root("LocationConstraint")
    root.text = constraint or None
    return _document(root)


def object_attributes(etag: str | None, checksums: Mapping[str, str] | None, checksum_type: str,
                      parts: PartsPage | None, size: int | None, storage_class: bool) -> bytes:
    """GetObjectAttributesResponse with the attributes asked for (None: not asked)."""
    root = _root("GetObjectAttributesResponse")
    if etag is not None:
        _add(root, "ETag", etag)
    if checksums:
        element = SubElement(root, "Checksum")
        _checksums(element, checksums)
        if checksum_type:
            _add(element, "ChecksumType", checksum_type)
    if parts is not None:
        element = SubElement(root, "ObjectParts")
        _fields(element, PartsCount=parts.total, PartNumberMarker=parts.marker,
                NextPartNumberMarker=parts.next_marker, MaxParts=parts.max_parts, IsTruncated=parts.truncated)
        for part in parts.parts:
            entry = SubElement(element, "Part")
            _fields(entry, PartNumber=part.number, Size=part.size)
            _checksums(entry, part.checksums)
    if storage_class:
        _add(root, "StorageClass", "STANDARD")
    if size is not None:
        _add(root, "ObjectSize", size)
    return _document(root)


PUBLIC_ACCESS_BLOCK = ("BlockPublicAcls", "IgnorePublicAcls", "BlockPublicPolicy", "RestrictPublicBuckets")


def public_access_block(flags: Mapping[str, bool]) -> bytes:
    root = _root("PublicAccessBlockConfiguration")
    for name in PUBLIC_ACCESS_BLOCK:
        _add(root, name, bool(flags.get(name)))
    return _document(root)


def parse_public_access_block(body: bytes) -> dict[str, bool]:
    """The flags of a PublicAccessBlockConfiguration; MalformedXML for values not true/false."""
    root = _parse(body, "PublicAccessBlockConfiguration", MAX_SMALL_BODY)
    flags = {}
    for name in PUBLIC_ACCESS_BLOCK:
        value = (_optional(root, name) or "false").strip().lower()
        if value not in ("true", "false"):
            raise S3Error("MalformedXML")
        flags[name] = value == "true"
    return flags


def policy_status() -> bytes:
    """PolicyStatus: a vault's bucket is never public."""
    root = _root("PolicyStatus")
    _add(root, "IsPublic", False)
    return _document(root)


def versioning(status: str) -> bytes:
    """VersioningConfiguration: no Status for a bucket that was never versioned."""
    root = _root("VersioningConfiguration")
    if status:
        _add(root, "Status", status)
    return _document(root)


def object_lock_configuration(rule: LockRule | None) -> bytes:
    root = _root("ObjectLockConfiguration")
    _add(root, "ObjectLockEnabled", "Enabled")
    if rule is not None:
        retention = SubElement(SubElement(root, "Rule"), "DefaultRetention")
        _add(retention, "Mode", rule.mode)
        _add(retention, *(("Days", rule.days) if rule.days else ("Years", rule.years)))
    return _document(root)


def retention(mode: str, until: float) -> bytes:
    root = _root("Retention")
    _fields(root, Mode=mode, RetainUntilDate=timestamp(until))
    return _document(root)


def legal_hold(on: bool) -> bytes:
    root = _root("LegalHold")
    _add(root, "Status", "ON" if on else "OFF")
    return _document(root)


# -- parsing ------------------------------------------------------------------------------


def parse_complete_multipart(body: bytes) -> list[CompletedPart]:
    """The parts of a CompleteMultipartUpload body, in ascending order, one
    per part number: consecutive entries of the same number count as one
    part, named by the last of them.

    Raises S3Error: MalformedXML (no parts, more than 10,000 entries, a part
    number or ETag missing or not a number) or InvalidPartOrder (a number
    below the one before it).
    """
    root = _parse(body, "CompleteMultipartUpload", MAX_BODY)
    parts = [_completed_part(element) for element in _children(root, "Part")]
    if not 0 < len(parts) <= MAX_PARTS:
        raise S3Error("MalformedXML")
    for before, after in zip(parts, parts[1:]):
        if after.number < before.number:
            raise S3Error("InvalidPartOrder")
    # A client that sent a part again while its first upload was still running
    # lists both ETags; the stored part is the upload that finished last, which
    # the client lists last (ceph/s3-tests' resend_first_finishes_last).
    last = {part.number: part for part in parts}  # first positions, last entries
    return list(last.values())


def _completed_part(element: Element) -> CompletedPart:
    number = _text(element, "PartNumber")
    if not number.isdigit() or not 1 <= int(number) <= MAX_PARTS:
        raise S3Error("MalformedXML")
    checksums = {_local(child.tag)[len("Checksum"):].lower(): (child.text or "").strip()
                 for child in element if _local(child.tag).startswith("Checksum")}
    return CompletedPart(int(number), _text(element, "ETag").strip('"'), checksums)


def parse_delete_objects(body: bytes) -> DeleteRequest:
    """The keys (and version ids) of a DeleteObjects body and its Quiet flag.

    Raises S3Error MalformedXML (no keys, more than 1,000, an object without a key).
    """
    root = _parse(body, "Delete", MAX_BODY)
    objects = [(_text(element, "Key", strip=False), _optional(element, "VersionId"))
               for element in _children(root, "Object")]
    if not 0 < len(objects) <= MAX_DELETE_KEYS:
        raise S3Error("MalformedXML")
    quiet = (_optional(root, "Quiet") or "false").lower()
    if quiet not in ("true", "false"):
        raise S3Error("MalformedXML")
    return DeleteRequest(objects, quiet == "true")


def parse_tagging(body: bytes, max_tags: int = 10) -> dict[str, str]:
    """The tags of a Tagging body (10 for an object, 50 for a bucket).

    Raises S3Error: MalformedXML, InvalidTag (too many, a duplicate key, a
    key over 128 or a value over 256 characters, an empty key).
    """
    root = _parse(body, "Tagging", MAX_SMALL_BODY)
    tags: dict[str, str] = {}
    for tag_set in _children(root, "TagSet"):
        for tag in _children(tag_set, "Tag"):
            key, value = _text(tag, "Key", strip=False), _optional(tag, "Value") or ""
            if key in tags:
                raise S3Error("InvalidTag", "Cannot provide multiple Tags with the same key")
            if not 0 < len(key) <= 128 or len(value) > 256:
                raise S3Error("InvalidTag", "A tag key must be 1 to 128 and a value up to 256 characters")
            tags[key] = value
    if len(tags) > max_tags:
        raise S3Error("InvalidTag", f"At most {max_tags} tags are allowed")
    return tags


def parse_versioning(body: bytes) -> str:
    """The Status of a VersioningConfiguration: Enabled or Suspended (MalformedXML
    otherwise; MFA delete is not served: NotImplemented)."""
    root = _parse(body, "VersioningConfiguration", MAX_SMALL_BODY)
    status = _optional(root, "Status")
    if status not in ("Enabled", "Suspended"):
        raise S3Error("MalformedXML")
    if (_optional(root, "MfaDelete") or "Disabled") != "Disabled":
        raise S3Error("NotImplemented", "MFA delete is not supported")
    return status


def parse_object_lock_configuration(body: bytes) -> LockRule | None:
    """The default retention of an ObjectLockConfiguration (None without a Rule).

    Raises MalformedXML (ObjectLockEnabled not Enabled, a mode other than
    GOVERNANCE or COMPLIANCE, both or neither of Days and Years) or
    InvalidRetentionPeriod (not a positive number)."""
    root = _parse(body, "ObjectLockConfiguration", MAX_SMALL_BODY)
    if _optional(root, "ObjectLockEnabled") != "Enabled":
        raise S3Error("MalformedXML")
    rules = _children(root, "Rule")
    if not rules:
        return None
    retention_elements = _children(rules[0], "DefaultRetention")
    if len(rules) > 1 or len(retention_elements) != 1:
        raise S3Error("MalformedXML")
    element = retention_elements[0]
    mode, days, years = _optional(element, "Mode"), _optional(element, "Days"), _optional(element, "Years")
    if mode not in LOCK_MODES or (days is None) == (years is None):
        raise S3Error("MalformedXML")
    value = (days if days is not None else years or "").strip()
    if not value.lstrip("-").isdigit():
        raise S3Error("MalformedXML")
    if not 0 < int(value) <= (36500 if days is not None else 100):
        raise S3Error("InvalidRetentionPeriod", "The retention period must be a positive number of days or years")
    return LockRule(mode, int(value), 0) if days is not None else LockRule(mode, 0, int(value))


def parse_retention(body: bytes) -> tuple[str, float]:
    """(mode, retain-until as a timestamp) of a Retention document; ("", 0)
    for an empty one (removing retention). MalformedXML for a bad mode or date."""
    root = _parse(body, "Retention", MAX_SMALL_BODY)
    mode, until = _optional(root, "Mode"), _optional(root, "RetainUntilDate")
    if mode is None and until is None:
        return "", 0.0
    if mode not in LOCK_MODES or until is None:
        raise S3Error("MalformedXML")
    return mode, parse_time(until)


def parse_time(text: str) -> float:
    """An ISO 8601 date and time (S3's timestamps) as a timestamp; MalformedXML otherwise."""
    try:
        when = datetime.fromisoformat(text.strip())
    except ValueError:
        raise S3Error("MalformedXML", "The date is not a valid ISO 8601 date and time") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return when.timestamp()


def parse_legal_hold(body: bytes) -> bool:
    status = _optional(_parse(body, "LegalHold", MAX_SMALL_BODY), "Status")
    if status not in ("ON", "OFF"):
        raise S3Error("MalformedXML")
    return status == "ON"


@dataclass(frozen=True)
class Grant:
    """One grant of an AccessControlPolicy: the grantee's type and its ID,
    email address or group URI (``who``), and the permission."""

    kind: str
    who: str
    permission: str


PERMISSIONS = ("FULL_CONTROL", "READ", "WRITE", "READ_ACP", "WRITE_ACP")


def parse_acl(body: bytes) -> list[Grant]:
    """The grants of an AccessControlPolicy document; MalformedACLError for
    a grant without a grantee or with an unknown permission."""
    root = _parse(body, "AccessControlPolicy", MAX_SMALL_BODY)
    grants = []
    for holder in _children(root, "AccessControlList"):
        for element in _children(holder, "Grant"):
            grantee = _children(element, "Grantee")
            permission = (_optional(element, "Permission") or "").strip()
            if len(grantee) != 1 or permission not in PERMISSIONS:
                raise S3Error("MalformedACLError")
            kind = next((v for k, v in grantee[0].attrib.items() if _local(k) == "type"), "")
            who = {"CanonicalUser": "ID", "AmazonCustomerByEmail": "EmailAddress", "Group": "URI"}.get(kind)
            if who is None:
                raise S3Error("MalformedACLError")
            grants.append(Grant(kind, _text(grantee[0], who), permission))
    return grants


def parse_create_bucket(body: bytes) -> str | None:
    """The LocationConstraint of a CreateBucketConfiguration; None for an
    empty body or none given."""
    if not body.strip():
        return None
    return _optional(_parse(body, "CreateBucketConfiguration", MAX_SMALL_BODY), "LocationConstraint")


def _parse(body: bytes, root: str, limit: int) -> Element:
    """The document's root element, which must be ``root`` (in S3's
    namespace or none); MalformedXML for anything else."""
    if len(body) > limit:
        raise S3Error("MalformedXML", f"The XML document is larger than {limit} bytes")
    try:
        element = fromstring(body, forbid_dtd=True)
    except (ParseError, DefusedXmlException, ValueError):
        raise S3Error("MalformedXML") from None
    if element.tag not in (root, f"{{{NAMESPACE}}}{root}"):
        raise S3Error("MalformedXML")
    return element


def _local(tag: str) -> str:
    return tag.rpartition("}")[2]


def _children(parent: Element, name: str) -> list[Element]:
    return [child for child in parent if _local(child.tag) == name]


def _optional(parent: Element, name: str) -> str | None:
    found = _children(parent, name)
    if len(found) > 1:
        raise S3Error("MalformedXML")
    return (found[0].text or "") if found else None


def _text(parent: Element, name: str, strip: bool = True) -> str:
    text = _optional(parent, name)
    if text is None:
        raise S3Error("MalformedXML")
    return text.strip() if strip else text
