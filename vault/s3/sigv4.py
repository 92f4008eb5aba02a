"""AWS Signature Version 4 for S3: the ``Authorization`` header and presigned
URLs, verified as AWS defines them.

:func:`authenticate` takes a :class:`Request` (method, path and query as
received, headers) and a ``secret_for`` callback that returns the secret and
whatever the caller wants back (a principal) for an access key id, or None.
It returns an :class:`Authenticated` that says how the body is signed:

* ``SIGNED``: its SHA-256 is in ``payload_sha256``; the front door checks
  the body against it (XAmzContentSHA256Mismatch);
* ``UNSIGNED``: nothing to check;
* ``STREAMING_*``: an ``aws-chunked`` body for :mod:`vault.s3.chunked`,
  whose chunk signatures chain from ``signature`` under ``signing``.

Every refusal is an :class:`~vault.s3.errors.S3Error` named as S3 names it.
SigV2 is not served.
"""

from __future__ import annotations

import enum
import functools
import hashlib
import hmac
import re
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timezone
from email.utils import parsedate_to_datetime
from typing import Generic, TypeVar
from urllib.parse import quote, unquote_to_bytes

from .errors import S3Error

ALGORITHM = "AWS4-HMAC-SHA256"
SERVICE = "s3"
TERMINATOR = "aws4_request"
EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()
MAX_SKEW = 15 * 60  # seconds either way, as S3 allows
MAX_EXPIRES = 7 * 24 * 3600  # a presigned URL lives at most a week, as on S3
AMZ_DATE = "%Y%m%dT%H%M%SZ"
UNRESERVED = "-_.~"  # with letters and digits: what SigV4 never percent-encodes
_HEX64 = re.compile(r"[0-9a-fA-F]{64}")

P = TypeVar("P")
SecretLookup = Callable[[str], "tuple[str, P] | None"]


class Payload(enum.Enum):
    """What ``x-amz-content-sha256`` says about the body."""

    SIGNED = "sha256"
    UNSIGNED = "UNSIGNED-PAYLOAD"
    STREAMING_SIGNED = "STREAMING-AWS4-HMAC-SHA256-PAYLOAD"
    STREAMING_SIGNED_TRAILER = "STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER"
    STREAMING_UNSIGNED_TRAILER = "STREAMING-UNSIGNED-PAYLOAD-TRAILER"

    @property
    def streaming(self) -> bool:
        """The body is ``aws-chunked``."""
        return self.value.startswith("STREAMING-")

    @property
    def chunk_signed(self) -> bool:
        """Every chunk (and the trailer, if any) carries a signature."""
        return self in (Payload.STREAMING_SIGNED, Payload.STREAMING_SIGNED_TRAILER)

    @property
    def trailer(self) -> bool:
        """Trailing headers (a checksum) follow the last chunk."""
        return self.value.endswith("-TRAILER")


@dataclass(frozen=True)
class Request:
    """A request as received: ``path`` and ``query`` still percent-encoded,
    ``headers`` with lower-case names (repeated headers joined by commas)."""

    method: str
    path: str
    query: str
    headers: dict[str, str]

    @classmethod
    def of(cls, method: str, path: str, query: str, headers: Iterable[tuple[str, str]]) -> Request:
        joined: dict[str, str] = {}
        for name, value in headers:
            name = name.lower()
            joined[name] = f"{joined[name]},{value}" if name in joined else value
        return cls(method.upper(), path, query, joined)


@dataclass(frozen=True)
class Signing:
    """What signs the chunks of a streaming body: the request's key, time and scope."""

    key: bytes
    timestamp: str
    scope: str

    def chunk_signature(self, previous: str, chunk_sha256: str) -> str:
        """The signature of a chunk whose SHA-256 (hex) is ``chunk_sha256``."""
        return self._sign("AWS4-HMAC-SHA256-PAYLOAD", previous, EMPTY_SHA256, chunk_sha256)

    def trailer_signature(self, previous: str, trailer_sha256: str) -> str:
        """The signature of the trailing headers, chained from the last chunk's."""
        return self._sign("AWS4-HMAC-SHA256-TRAILER", previous, trailer_sha256)

    def _sign(self, algorithm: str, *lines: str) -> str:
        text = "\n".join((algorithm, self.timestamp, self.scope, *lines))
        return hmac.new(self.key, text.encode(), hashlib.sha256).hexdigest()


@dataclass(frozen=True)
class Authenticated(Generic[P]):
    """A request whose signature holds, and how its body is to be checked."""

    access_key_id: str
    principal: P
    payload: Payload
    payload_sha256: str | None  # hex, lower case; only for Payload.SIGNED
    signature: str  # the request's; the seed of a streaming body's chunk chain
    signing: Signing
    presigned: bool


@dataclass(frozen=True)
class _Claim:
    """What the client says it signed, from the header or the query."""

    access_key_id: str
    date: str
    region: str
    signed_headers: list[str]
    signature: str
    timestamp: str
    presigned: bool


@functools.lru_cache(maxsize=1024)
def signing_key(secret: str, date: str, region: str) -> bytes:
    """The SigV4 key of one day and region. Cached: it changes once a day per
    key, and a revoked key never reaches here (``secret_for`` is asked on
    every request)."""
    key = ("AWS4" + secret).encode()
    for part in (date, region, SERVICE, TERMINATOR):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    return key


def authenticate(request: Request, secret_for: SecretLookup[P], region: str,
                 now: float | None = None) -> Authenticated[P]:
    """Verify the request's SigV4 signature (header or presigned query).

    Raises S3Error: AccessDenied (anonymous, expired), InvalidAccessKeyId,
    SignatureDoesNotMatch, RequestTimeTooSkewed, AuthorizationHeaderMalformed,
    AuthorizationQueryParametersError, InvalidRequest or InvalidArgument.
    """
    now = time.time() if now is None else now
    claim = _claim(request, region, now)
    found = secret_for(claim.access_key_id)
    if found is None:
        raise S3Error("InvalidAccessKeyId", AWSAccessKeyId=claim.access_key_id)
    secret, principal = found
    payload, payload_sha256, declared = _payload(request, claim.presigned)
    signing = Signing(signing_key(secret, claim.date, claim.region), claim.timestamp,
                      f"{claim.date}/{claim.region}/{SERVICE}/{TERMINATOR}")
    _verify(request, claim, signing, declared)
    return Authenticated(claim.access_key_id, principal, payload, payload_sha256, claim.signature,
                         signing, claim.presigned)


def canonical_request(request: Request, path: str, signed_headers: list[str], payload: str,
                      presigned: bool) -> str:
    """The canonical request of SigV4, for the path spelled as ``path``."""
    headers = "".join(f"{name}:{_header_value(request, name)}\n" for name in signed_headers)
    return "\n".join((request.method, path, canonical_query(request.query, presigned), headers,
                      ";".join(signed_headers), payload))


def canonical_paths(raw_path: str) -> list[str]:
    """The spellings of the path a client may have signed: each byte encoded
    once as SigV4 prescribes (S3 does not encode twice), and the path exactly
    as received when a client sent it spelled otherwise (``%2F`` for ``/``,
    a raw ``!``); both name the same resource once decoded."""
    encoded = quote(unquote_to_bytes(raw_path or "/"), safe="/" + UNRESERVED)
    return [encoded] if raw_path in ("", encoded) else [encoded, raw_path]


def canonical_query(raw_query: str, presigned: bool) -> str:
    """Every parameter decoded and encoded again as SigV4 prescribes, sorted;
    a presigned URL's own signature left out."""
    pairs = []
    for item in filter(None, raw_query.split("&")):
        name, _, value = item.partition("=")
        if presigned and name == "X-Amz-Signature":
            continue
        pairs.append((_encode(name), _encode(value)))
    return "&".join(f"{name}={value}" for name, value in sorted(pairs))


def _encode(text: str) -> str:
    return quote(unquote_to_bytes(text), safe=UNRESERVED)


def _header_value(request: Request, name: str) -> str:
    value = request.headers.get(name)
    if value is None:
        raise S3Error("SignatureDoesNotMatch", f"the signed header {name} is not in the request")
    # Trimall: outer spaces dropped, inner runs of spaces made one.
    return " ".join(value.split())


def _verify(request: Request, claim: _Claim, signing: Signing, payload: str) -> None:
    scope = signing.scope
    for path in canonical_paths(request.path):
        canonical = canonical_request(request, path, claim.signed_headers, payload, claim.presigned)
        # Header values as the bytes that came, as the client hashed them:
        # aiohttp hands a byte that is not UTF-8 over as a lone surrogate.
        raw = canonical.encode("utf-8", "surrogateescape")
        text = "\n".join((ALGORITHM, claim.timestamp, scope, hashlib.sha256(raw).hexdigest()))
        expected = hmac.new(signing.key, text.encode(), hashlib.sha256).hexdigest()
        if hmac.compare_digest(expected, claim.signature):
            return
    raise S3Error("SignatureDoesNotMatch", AWSAccessKeyId=claim.access_key_id, StringToSign=text,
                  SignatureProvided=claim.signature,
                  CanonicalRequest=raw.decode("utf-8", "replace"))  # XML holds no lone surrogate


# -- the claim: header or query ----------------------------------------------------------


def _claim(request: Request, region: str, now: float) -> _Claim:
    params = _query_params(request.query)
    header = request.headers.get("authorization")
    if header is None and "AWSAccessKeyId" in params:
        raise _unsupported()
    if header is not None and "X-Amz-Algorithm" in params:
        raise S3Error("InvalidArgument", "Only one auth mechanism allowed; only the X-Amz-Algorithm "
                      "query parameter or the Authorization header should be specified")
    if header is not None:
        claim = _header_claim(request, header)
        _check_skew(claim.timestamp, now)
    elif "X-Amz-Algorithm" in params:
        claim = _query_claim(params)
        _check_expiry(claim.timestamp, params.get("X-Amz-Expires", ""), now)
    else:
        raise S3Error("AccessDenied", "Anonymous requests are not served; sign them with SigV4")
    if claim.region != region:
        raise _malformed(claim.presigned, f"the region '{claim.region}' is wrong; expecting '{region}'",
                         Region=region)
    return claim


def _header_claim(request: Request, header: str) -> _Claim:
    algorithm, _, rest = header.strip().partition(" ")
    if algorithm != ALGORITHM:
        raise _unsupported()
    fields = dict(part.strip().partition("=")[::2] for part in rest.split(","))
    try:
        credential, signed, signature = fields["Credential"], fields["SignedHeaders"], fields["Signature"]
    except KeyError as missing:
        raise _malformed(False, f"the {missing.args[0]} field is missing") from None
    return _parse_claim(credential, signed, signature, _request_time(request), presigned=False)


def _query_claim(params: dict[str, str]) -> _Claim:
    if params["X-Amz-Algorithm"] != ALGORITHM:
        raise _malformed(True, f"X-Amz-Algorithm only supports \"{ALGORITHM}\"")
    try:
        credential, signed = params["X-Amz-Credential"], params["X-Amz-SignedHeaders"]
        signature, timestamp = params["X-Amz-Signature"], params["X-Amz-Date"]
    except KeyError as missing:
        raise _malformed(True, f"{missing.args[0]} is missing") from None
    return _parse_claim(credential, signed, signature, timestamp, presigned=True)


def _parse_claim(credential: str, signed: str, signature: str, timestamp: str, presigned: bool) -> _Claim:
    parts = credential.split("/")
    if len(parts) != 5 or parts[3] != SERVICE or parts[4] != TERMINATOR or not parts[0]:
        raise _malformed(presigned, f"the credential '{credential}' is not <key>/<date>/<region>/s3/aws4_request")
    if not _HEX64.fullmatch(signature):
        raise _malformed(presigned, "the signature is not 64 hexadecimal digits")
    _parse_time(timestamp)
    if parts[1] != timestamp[:8]:
        raise _malformed(presigned, "Invalid credential date. Date is not the same as X-Amz-Date.")
    names = signed.split(";")
    if "host" not in names:
        raise _malformed(presigned, "the host header must be signed")
    return _Claim(parts[0], parts[1], parts[2], names, signature, timestamp, presigned)


def _unsupported() -> S3Error:
    """SigV2 (header or query) and anything else that is not SigV4."""
    return S3Error("InvalidRequest", "The authorization mechanism you have provided is not supported. "
                   f"Please use {ALGORITHM}.")


def _malformed(presigned: bool, message: str, **extra: str) -> S3Error:
    code = "AuthorizationQueryParametersError" if presigned else "AuthorizationHeaderMalformed"
    return S3Error(code, f"The authorization is malformed; {message}", **extra)


def _query_params(raw_query: str) -> dict[str, str]:
    """The auth parameters of the query, decoded (later ones win, as on S3)."""
    params = {}
    for item in raw_query.split("&"):
        name, _, value = item.partition("=")
        if name.startswith("X-Amz-") or name == "AWSAccessKeyId":
            params[name] = unquote_to_bytes(value).decode("utf-8", "replace")
    return params


# -- time ---------------------------------------------------------------------------------


def _request_time(request: Request) -> str:
    """``x-amz-date``, else the ``Date`` header, as an x-amz-date timestamp."""
    if "x-amz-date" in request.headers:
        return request.headers["x-amz-date"]
    try:
        return parsedate_to_datetime(request.headers["date"]).astimezone(timezone.utc).strftime(AMZ_DATE)
    except (KeyError, TypeError, ValueError):
        raise S3Error("AccessDenied", "AWS authentication requires a valid Date or x-amz-date header") from None


_AMZ_DATE_FIELDS = re.compile(r"(\d{4})(\d\d)(\d\d)T(\d\d)(\d\d)(\d\d)Z")


def _parse_time(timestamp: str) -> float:
    """Seconds since the epoch of a ``YYYYMMDDTHHMMSSZ`` time (strptime costs
    ~15 us a request)."""
    try:
        fields = _AMZ_DATE_FIELDS.fullmatch(timestamp)
        if fields is None:
            raise ValueError(timestamp)
        year, month, day, hour, minute, second = map(int, fields.groups())
        return datetime(year, month, day, hour, minute, second, tzinfo=timezone.utc).timestamp()
    except ValueError:
        raise S3Error("AccessDenied", "AWS authentication requires a valid Date or x-amz-date header") from None


def _check_skew(timestamp: str, now: float) -> None:
    if abs(_parse_time(timestamp) - now) > MAX_SKEW:
        raise S3Error("RequestTimeTooSkewed", RequestTime=timestamp, ServerTime=_amz(now),
                      MaxAllowedSkewMilliseconds=str(MAX_SKEW * 1000))


def _check_expiry(timestamp: str, expires: str, now: float) -> None:
    if not expires.isdigit() or int(expires) > MAX_EXPIRES:
        raise _malformed(True, f"X-Amz-Expires must be a number of seconds from 0 to {MAX_EXPIRES}")
    signed_at = _parse_time(timestamp)
    if signed_at - now > MAX_SKEW:
        raise S3Error("AccessDenied", "Request is not valid yet")
    if now > signed_at + int(expires):
        raise S3Error("AccessDenied", "Request has expired", **{"X-Amz-Expires": expires},
                      Expires=_amz(signed_at + int(expires)), ServerTime=_amz(now))


def _amz(ts: float) -> str:
    return datetime.fromtimestamp(ts, timezone.utc).strftime(AMZ_DATE)


# -- the payload --------------------------------------------------------------------------


def _payload(request: Request, presigned: bool) -> tuple[Payload, str | None, str]:
    """(mode, expected SHA-256, the value that goes into the canonical request)."""
    declared = request.headers.get("x-amz-content-sha256")
    if declared is None:
        if presigned:
            return Payload.UNSIGNED, None, Payload.UNSIGNED.value
        raise S3Error("InvalidRequest", "Missing required header for this request: x-amz-content-sha256")
    if _HEX64.fullmatch(declared):
        return Payload.SIGNED, declared.lower(), declared
    try:
        mode = Payload(declared)
    except ValueError:
        mode = Payload.SIGNED
    if mode is Payload.SIGNED or (presigned and mode.streaming):
        raise S3Error("InvalidArgument", "x-amz-content-sha256 must be UNSIGNED-PAYLOAD, "
                      "STREAMING-AWS4-HMAC-SHA256-PAYLOAD[-TRAILER], STREAMING-UNSIGNED-PAYLOAD-TRAILER "
                      "or the SHA-256 of the body")
    return mode, None, declared
