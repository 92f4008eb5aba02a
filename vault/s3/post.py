"""S3 POST Object: a browser-form upload authorized by a signed policy.

A ``multipart/form-data`` POST to a bucket carries form fields (``key``,
``policy``, its signature, ``acl``, ``Content-Type``, ``x-amz-meta-*``,
``success_action_*``, ``tagging``, ``x-amz-checksum-*``) and, last, the
``file``. The fields before the file are read whole but bounded
(:data:`MAX_FIELD_BYTES`, like S3's 20 KiB, within :data:`FIELDS_SECONDS`);
fields after the file are ignored, as on S3. The policy is a base64 JSON
document with an ``expiration`` and ``conditions`` that every field must
meet, signed with SigV4 (``x-amz-signature``: HMAC-SHA256 of the policy
under the day's signing key) or SigV2 (``signature``: HMAC-SHA1 of the
policy under the secret); SigV2 is accepted here only, for the policy.
An unsigned form is anonymous and refused: a vault never serves the public.

The file streams into the vault through the same path as PutObject, its
``content-length-range`` enforced while it streams; a body refused on the
way leaves only unreferenced chunks, which GC collects. The key's role
applies as on PutObject (``append`` creates, never overwrites).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import hmac
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any
from urllib.parse import quote, urlencode
from xml.etree.ElementTree import Element, SubElement, tostring

from aiohttp import BodyPartReader, web
from aiohttp.http_exceptions import HttpProcessingError

from ..policy import Principal
from . import checksums, sigv4
from .bodies import MAX_PUT_BYTES, check_acl, meta_of, store
from .errors import S3Error
from .front import BODY_IDLE_SECONDS, BUDGET, CONFIG, SERVICES, SUBRESOURCES, _resource, check_key
from .xml import NAMESPACE, parse_tagging

MAX_FIELD_BYTES = 20 << 10  # the form fields before the file, names and values (S3's bound)
FIELD_OVERHEAD = 64  # counted per field besides its name and value: bounds how many there are
FIELDS_SECONDS = BODY_IDLE_SECONDS  # to receive every field before the file
FIELD_PIECE = 8 << 10
FILE_PIECE = 1 << 20
MAX_TRAILING_BYTES = 64 << 10  # after the file: drained to keep the connection, else it closes
# Fields no condition needs to name: the signature's own, the file, the
# client's x-ignore-*, and the checksums (verified against the body instead).
EXEMPT = frozenset(("policy", "signature", "x-amz-signature", "awsaccesskeyid", "file"))
EXEMPT_PREFIXES = ("x-ignore-", checksums.HEADER_PREFIX)
EXPIRATION_FORMATS = ("%Y-%m-%dT%H:%M:%SZ", "%Y-%m-%dT%H:%M:%S.%fZ")


def is_form_upload(request: web.Request) -> bool:
    """A POST of a form to a bucket (no key, no subresource): POST Object."""
    if request.method != "POST" or request.content_type != "multipart/form-data":
        return False
    if any(sub in request.query for sub in SUBRESOURCES):
        return False
    try:
        bucket, key = _resource(request, request.app[CONFIG].domain)
    except S3Error:
        return False
    return bool(bucket) and not key


# -- the policy ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Condition:
    """``op`` (``eq`` or ``starts-with``) of the field ``name`` (lower case) with ``value``."""

    op: str
    name: str
    value: str

    def holds(self, fields: dict[str, str]) -> bool:
        got = fields.get(self.name, "")
        if self.op == "eq":
            return got == self.value
        if self.name == "content-type":  # each of a comma-separated list
            return all(t.strip().startswith(self.value) for t in got.split(","))
        return got.startswith(self.value)


@dataclass(frozen=True)
class Policy:
    expiration: float
    conditions: list[Condition]
    length_range: tuple[int, int] | None

    def check(self, fields: dict[str, str], now: float) -> tuple[int, int]:
        """Check ``fields`` (lower-case names, ``bucket`` and the final ``key``
        among them); the allowed body sizes. Raises AccessDenied."""
        if now > self.expiration:
            raise S3Error("AccessDenied", "Invalid according to Policy: Policy expired.")
        for condition in self.conditions:
            if not condition.holds(fields):
                raise S3Error("AccessDenied", "Invalid according to Policy: Policy Condition failed: "
                              f'["{condition.op}", "${condition.name}", "{condition.value}"]')
        named = {c.name for c in self.conditions}
        extra = sorted(name for name in fields if name not in named and name not in EXEMPT
                       and not name.startswith(EXEMPT_PREFIXES))
        if extra:
            raise S3Error("AccessDenied", f"Invalid according to Policy: Extra input fields: {', '.join(extra)}")
        return self.length_range or (0, MAX_PUT_BYTES)


def parse_policy(encoded: str) -> Policy:
    """The policy of a form's ``policy`` field; InvalidPolicyDocument when it is not one."""
    try:
        document = json.loads(base64.b64decode(encoded.encode("ascii"), validate=True))
    except (binascii.Error, UnicodeError, ValueError):
        raise _invalid("the policy is not base64 of a JSON document") from None
    if not isinstance(document, dict):
        raise _invalid("the policy is not a JSON object")
    expiration, conditions = document.get("expiration"), document.get("conditions")
    if not isinstance(expiration, str):
        raise _invalid("Policy missing expiration.")
    if not isinstance(conditions, list):
        raise _invalid("Policy missing conditions.")
    parsed: list[Condition] = []
    length_range = None
    for item in conditions:
        if isinstance(item, dict):
            if not item:
                raise _invalid("a condition is empty")
            parsed.extend(Condition("eq", str(name).lower(), _string(value)) for name, value in item.items())
        elif isinstance(item, list) and item and isinstance(item[0], str) \
                and item[0].lower() == "content-length-range":
            length_range = _length_range(item)
        elif isinstance(item, list) and len(item) == 3 and isinstance(item[0], str) \
                and item[0].lower() in ("eq", "starts-with"):
            name = _string(item[1])
            if not name.startswith("$"):
                raise _invalid(f"the field of a condition must start with '$': {name[:100]!r}")
            parsed.append(Condition(item[0].lower(), name[1:].lower(), _string(item[2])))
        else:
            raise _invalid(f"a condition is not understood: {json.dumps(item)[:200]}")
    return Policy(_expiration(expiration), parsed, length_range)


def _invalid(message: str) -> S3Error:
    return S3Error("InvalidPolicyDocument", f"Invalid Policy: {message}")


def _string(value: Any) -> str:
    if not isinstance(value, str):
        raise _invalid(f"a condition's value is not a string: {json.dumps(value)[:100]}")
    return value


def _length_range(item: list) -> tuple[int, int]:
    bounds = item[1:]
    if len(bounds) != 2 or not all(_whole(b) for b in bounds):
        raise _invalid("content-length-range takes two whole numbers")
    low, high = int(bounds[0]), int(bounds[1])
    if not 0 <= low <= high:
        raise _invalid("content-length-range must be 0 <= minimum <= maximum")
    return low, high


def _whole(value: Any) -> bool:
    if isinstance(value, bool):
        return False
    return isinstance(value, int) or (isinstance(value, str) and value.lstrip("-").isdigit())


def _expiration(value: str) -> float:
    for form in EXPIRATION_FORMATS:
        try:
            return datetime.strptime(value, form).replace(tzinfo=timezone.utc).timestamp()
        except ValueError:
            continue
    raise _invalid(f"Invalid 'expiration' value: '{value[:100]}'")


# -- the signature ------------------------------------------------------------------------


def authenticate(fields: dict[str, str], secret_for: sigv4.SecretLookup[Principal], region: str) -> Principal:
    """Who signed the form's policy (SigV4 or SigV2 fields). Raises
    AccessDenied (unsigned), InvalidArgument (a field missing or malformed),
    InvalidAccessKeyId, SignatureDoesNotMatch."""
    policy = fields.get("policy")
    if "x-amz-signature" in fields or "x-amz-algorithm" in fields or "x-amz-credential" in fields:
        access_key_id, date = _v4_claim(fields, region)
        found = _secret(secret_for, access_key_id)
        expected = hmac.new(sigv4.signing_key(found[0], date, region), _required(fields, "policy").encode(),
                            hashlib.sha256).hexdigest()
        provided = _required(fields, "x-amz-signature").lower()
    elif "awsaccesskeyid" in fields or "signature" in fields:
        access_key_id = _required(fields, "awsaccesskeyid")
        found = _secret(secret_for, access_key_id)
        digest = hmac.new(found[0].encode(), _required(fields, "policy").encode(), hashlib.sha1).digest()
        expected, provided = base64.b64encode(digest).decode(), _required(fields, "signature")
    elif policy is not None:
        raise S3Error("InvalidArgument", "Bucket POST must contain a field named 'AWSAccessKeyId'. "
                      "If it is specified, please check the order of the fields.", ArgumentName="AWSAccessKeyId")
    else:
        raise S3Error("AccessDenied", "Anonymous uploads are not served; sign the form's policy")
    if not hmac.compare_digest(expected.encode(), provided.encode()):
        raise S3Error("SignatureDoesNotMatch", AWSAccessKeyId=access_key_id)
    return found[1]


def _required(fields: dict[str, str], name: str) -> str:
    value = fields.get(name)
    if not value:
        raise S3Error("InvalidArgument", f"Bucket POST must contain a field named '{name}'. "
                      "If it is specified, please check the order of the fields.", ArgumentName=name)
    return value


def _secret(secret_for: sigv4.SecretLookup[Principal], access_key_id: str) -> tuple[str, Principal]:
    found = secret_for(access_key_id)
    if found is None:
        raise S3Error("InvalidAccessKeyId", AWSAccessKeyId=access_key_id[:128])
    return found


def _v4_claim(fields: dict[str, str], region: str) -> tuple[str, str]:
    """(access key id, date) of the SigV4 fields."""
    if _required(fields, "x-amz-algorithm") != sigv4.ALGORITHM:
        raise S3Error("InvalidArgument", f"x-amz-algorithm only supports \"{sigv4.ALGORITHM}\"",
                      ArgumentName="x-amz-algorithm")
    credential, timestamp = _required(fields, "x-amz-credential"), _required(fields, "x-amz-date")
    parts = credential.split("/")
    if len(parts) != 5 or not parts[0] or parts[3:] != [sigv4.SERVICE, sigv4.TERMINATOR]:
        raise S3Error("InvalidArgument", "x-amz-credential is not <key>/<date>/<region>/s3/aws4_request",
                      ArgumentName="x-amz-credential")
    try:
        datetime.strptime(timestamp, sigv4.AMZ_DATE)
    except ValueError:
        raise S3Error("InvalidArgument", "x-amz-date is not a date like 20130524T000000Z",
                      ArgumentName="x-amz-date") from None
    if parts[1] != timestamp[:8]:
        raise S3Error("InvalidArgument", "the credential's date is not the date of x-amz-date",
                      ArgumentName="x-amz-credential")
    if parts[2] != region:
        raise S3Error("InvalidArgument", f"the region '{parts[2][:64]}' is wrong; expecting '{region}'",
                      ArgumentName="x-amz-credential", Region=region)
    return parts[0], parts[1]


# -- the form -----------------------------------------------------------------------------


@dataclass
class Form:
    """The fields before the file (lower-case names), and the file still to be read."""

    fields: dict[str, str]
    file: BodyPartReader
    filename: str


async def read_form(request: web.Request) -> Form:
    """Read the fields up to the file. Raises MalformedPOSTRequest,
    MaxPostPreDataLengthExceededError, IncorrectNumberOfFilesInPostRequest,
    RequestTimeout."""
    try:
        reader = await request.multipart()
    except (AssertionError, ValueError, KeyError):
        raise S3Error("MalformedPOSTRequest") from None
    fields: dict[str, str] = {}
    budget = MAX_FIELD_BYTES
    try:
        async with asyncio.timeout(FIELDS_SECONDS):
            while True:
                part = await reader.next()
                if part is None:
                    raise S3Error("IncorrectNumberOfFilesInPostRequest")
                if not isinstance(part, BodyPartReader) or not part.name:
                    raise S3Error("MalformedPOSTRequest", "every part must be a named form field")
                name = part.name.lower()
                if name == "file":
                    return Form(fields, part, part.filename or "")
                budget -= len(name) + FIELD_OVERHEAD
                value = await _field(part, budget)
                budget -= len(value)
                fields.setdefault(name, value.decode("utf-8", "replace"))
    except TimeoutError:
        raise S3Error("RequestTimeout") from None
    except (HttpProcessingError, ValueError, AssertionError):
        raise S3Error("MalformedPOSTRequest") from None


async def _field(part: BodyPartReader, budget: int) -> bytes:
    value = bytearray()
    while budget >= 0 and not part.at_eof():
        value += await part.read_chunk(FIELD_PIECE)  # at most this much past the bound
        if len(value) > budget:
            break
    if budget < 0 or len(value) > budget:
        raise S3Error("MaxPostPreDataLengthExceededError")
    return bytes(value)


async def _file(part: BodyPartReader, low: int, high: int) -> AsyncIterator[bytes]:
    """The file's bytes as they come, refused past ``high`` (EntityTooLarge)
    and, at its end, under ``low`` (EntityTooSmall)."""
    got = 0
    while True:
        try:
            async with asyncio.timeout(BODY_IDLE_SECONDS):
                piece = await part.read_chunk(FILE_PIECE)
        except TimeoutError:
            raise S3Error("RequestTimeout") from None
        except (HttpProcessingError, ValueError, AssertionError):
            raise S3Error("IncompleteBody") from None
        if not piece:
            break
        got += len(piece)
        if got > high:
            raise S3Error("EntityTooLarge", "Your proposed upload exceeds the maximum allowed size",
                          MaxSizeAllowed=str(high))
        yield piece
    if got < low:
        raise S3Error("EntityTooSmall", "Your proposed upload is smaller than the minimum allowed size",
                      MinSizeAllowed=str(low))


async def _drain(request: web.Request) -> bool:
    """Read what follows the file (ignored fields, the closing boundary),
    within bounds; False if the connection cannot carry another request."""
    got = 0
    try:
        async with asyncio.timeout(BODY_IDLE_SECONDS):
            while got <= MAX_TRAILING_BYTES and (piece := await request.content.readany()):
                got += len(piece)
    except (TimeoutError, HttpProcessingError):
        return False
    return got <= MAX_TRAILING_BYTES and request.content.at_eof()


# -- the operation ------------------------------------------------------------------------


async def post_object(request: web.Request) -> web.StreamResponse:
    request["s3_operation"] = "post_object"
    services, config = request.app[SERVICES], request.app[CONFIG]
    bucket, _ = _resource(request, config.domain)
    form = await read_form(request)
    fields = form.fields
    who = authenticate(fields, services.auth.s3_secret, config.region)
    policy = parse_policy(fields["policy"])
    key = _required(fields, "key").replace("${filename}", form.filename)
    if not key:
        raise S3Error("InvalidArgument", "The key is empty once ${filename} is replaced", ArgumentName="key")
    check_key(key)
    low, high = policy.check({**fields, "bucket": bucket, "key": key}, time.time())
    check_acl({"x-amz-acl": fields.get("acl", "private"),
               **{name: value for name, value in fields.items() if name.startswith("x-amz-grant-")}})
    where = services.buckets.target(who, bucket, "append")
    meta = meta_of({name: value for name, value in fields.items() if name != "x-amz-tagging"})
    if "tagging" in fields:
        meta.tags = parse_tagging(fields["tagging"].encode())
    stated = checksums.requested({name: value for name, value in fields.items()
                                  if name != "x-amz-checksum-algorithm"})
    wanted = set(stated) | ({fields["x-amz-checksum-algorithm"].lower()} & set(checksums.ALGORITHMS)
                            if "x-amz-checksum-algorithm" in fields else set())
    digests = checksums.BodyDigests(wanted)
    chunks, size = await store(request.app[BUDGET], services.s3, where, None,
                               _file(form.file, low, min(high, MAX_PUT_BYTES)), digests.update)
    digests.verify(None, None, stated)
    meta.etag = digests.etag()
    meta.checksums = {a: digests.checksum(a) for a in sorted(wanted)}
    meta.checksum_type = "FULL_OBJECT" if meta.checksums else ""
    await services.s3.put(who, where, key, chunks, size, meta)
    resp = _answer(request, fields, bucket, key, meta.etag)
    if not await _drain(request):
        resp.force_close()
    return resp


def _answer(request: web.Request, fields: dict[str, str], bucket: str, key: str, etag: str) -> web.Response:
    """The answer S3 gives: a 303 to ``success_action_redirect`` (or
    ``redirect``), else ``success_action_status`` (200, 201 with a
    document, 204 otherwise)."""
    location = f"{request.scheme}://{request.host}/{quote(bucket)}/{quote(key)}"
    headers = {"ETag": f'"{etag}"', "Location": location}
    redirect = fields.get("success_action_redirect") or fields.get("redirect") or ""
    if redirect.startswith(("http://", "https://")):
        query = urlencode({"bucket": bucket, "key": key, "etag": f'"{etag}"'})
        headers["Location"] = f"{redirect}{'&' if '?' in redirect else '?'}{query}"
        return web.Response(status=303, headers=headers)
    status = fields.get("success_action_status", "204")
    if status == "201":
        return web.Response(status=201, body=post_response(location, bucket, key, etag),
                            content_type="application/xml", headers=headers)
    return web.Response(status=200 if status == "200" else 204, headers=headers)


def post_response(location: str, bucket: str, key: str, etag: str) -> bytes:
    root = Element("PostResponse", xmlns=NAMESPACE)
    for tag, text in (("Location", location), ("Bucket", bucket), ("Key", key), ("ETag", f'"{etag}"')):
        SubElement(root, tag).text = text
    return b'<?xml version="1.0" encoding="UTF-8"?>\n' + tostring(root, encoding="utf-8")

