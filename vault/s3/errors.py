"""S3 errors: every code the front door answers with, its status, and the
one mapping from the core's domain errors.

An :class:`S3Error` carries an S3 ``code`` (``NoSuchKey``), the HTTP status
that goes with it and a message; :func:`vault.s3.xml.error_document` renders
it. The core raises :class:`vault.errors.VaultError`; :func:`from_domain`
turns one into the S3 error a client expects, in one place.
"""

from __future__ import annotations

from typing import Any

# code -> (HTTP status, S3's default message)
CODES: dict[str, tuple[int, str]] = {
    "AccessDenied": (403, "Access Denied"),
    "AccessForbidden": (403, "This CORS request is not allowed."),
    "AuthorizationHeaderMalformed": (400, "The authorization header is malformed."),
    "AuthorizationQueryParametersError": (400, "The query parameters that provide authentication are malformed."),
    "BadDigest": (400, "The digest you specified did not match what we received."),
    "BucketAlreadyExists": (409, "The requested bucket name is not available."),
    "BucketAlreadyOwnedByYou": (409, "The bucket you tried to create already exists, and you own it."),
    "BucketNotEmpty": (409, "The bucket you tried to delete is not empty."),
    "EntityTooLarge": (400, "Your proposed upload exceeds the maximum allowed size."),
    "EntityTooSmall": (400, "Your proposed upload is smaller than the minimum allowed object size."),
    "IncompleteBody": (400, "You did not provide the number of bytes specified by the Content-Length HTTP header."),
    "InsufficientStorage": (507, "The server has no space left for this request."),
    "InternalError": (500, "We encountered an internal error. Please try again."),
    "InvalidBucketState": (409, "The request is not valid with the current state of the bucket."),
    "InvalidRetentionPeriod": (400, "The retention period is not valid."),
    "InvalidStorageClass": (400, "The storage class you specified is not valid."),
    "InvalidAccessKeyId": (403, "The AWS access key ID you provided does not exist in our records."),
    "InvalidArgument": (400, "Invalid Argument"),
    "InvalidBucketName": (400, "The specified bucket is not valid."),
    "InvalidDigest": (400, "The Content-MD5 you specified is not valid."),
    "InvalidLocationConstraint": (400, "The specified location constraint is not valid."),
    "IncorrectNumberOfFilesInPostRequest": (400, "POST requires exactly one file upload per request."),
    "InvalidPart": (400, "One or more of the specified parts could not be found."),
    "InvalidPartOrder": (400, "The list of parts was not in ascending order."),
    "InvalidPolicyDocument": (400, "The content of the form does not meet the conditions specified in the "
                                   "policy document."),
    "InvalidRange": (416, "The requested range is not satisfiable."),
    "InvalidRequest": (400, "Invalid Request"),
    "UnresolvableGrantByEmailAddress": (400, "The email address you provided does not match any account on "
                                             "record."),
    "InvalidURI": (400, "Couldn't parse the specified URI."),
    "InvalidTag": (400, "The tag provided was not a valid tag."),
    "KeyTooLongError": (400, "Your key is too long."),
    "MalformedACLError": (400, "The XML you provided was not well-formed or did not validate against our "
                               "published schema."),
    "MalformedPOSTRequest": (400, "The body of your POST request is not well-formed multipart/form-data."),
    "MalformedTrailerError": (400, "The request contained trailing data that was not well-formed."),
    "MalformedXML": (400, "The XML you provided was not well-formed or did not validate against our published schema."),
    "MaxPostPreDataLengthExceededError": (400, "Your POST request fields preceding the upload file were too "
                                               "large."),
    "MetadataTooLarge": (400, "Your metadata headers exceed the maximum allowed metadata size."),
    "MethodNotAllowed": (405, "The specified method is not allowed against this resource."),
    "MissingContentLength": (411, "You must provide the Content-Length HTTP header."),
    "NoSuchBucket": (404, "The specified bucket does not exist."),
    "NoSuchVersion": (404, "The specified version does not exist."),
    "ObjectLockConfigurationNotFoundError": (404, "Object Lock configuration does not exist for this bucket"),
    "NoSuchObjectLockConfiguration": (404, "The specified object does not have an ObjectLock configuration"),
    "NoSuchCORSConfiguration": (404, "The CORS configuration does not exist"),
    "OwnershipControlsNotFoundError": (404, "The bucket ownership controls were not found"),
    "NoSuchPublicAccessBlockConfiguration": (404, "The public access block configuration was not found"),
    "NoSuchTagSet": (404, "The TagSet does not exist"),
    "NoSuchKey": (404, "The specified key does not exist."),
    "NoSuchLifecycleConfiguration": (404, "The lifecycle configuration does not exist"),
    "NoSuchUpload": (404, "The specified multipart upload does not exist."),
    "NotModified": (304, "Not Modified"),
    "NotImplemented": (501, "A header you provided implies functionality that is not implemented."),
    "OperationAborted": (409, "A conflicting conditional operation is currently in progress against this resource."),
    "PreconditionFailed": (412, "At least one of the pre-conditions you specified did not hold."),
    "QuotaExceeded": (403, "The vault's quota does not allow this upload."),
    "RequestTimeTooSkewed": (403, "The difference between the request time and the server's time is too large."),
    "RequestTimeout": (400, "Your socket connection to the server was not read from or written to within the "
                            "timeout period."),
    "ServiceUnavailable": (503, "Please reduce your request rate."),
    "SignatureDoesNotMatch": (403, "The request signature we calculated does not match the signature you provided."),
    "SlowDown": (503, "Please reduce your request rate."),
    "XAmzContentSHA256Mismatch": (400, "The provided 'x-amz-content-sha256' header does not match what was computed."),
}

# The core's domain error codes (vault/errors.py) -> S3 code. A domain code
# missing here is a server fault as far as the client can tell: InternalError.
DOMAIN: dict[str, str] = {
    "bad_request": "InvalidRequest",
    "bad_name": "InvalidArgument",
    "bad_json": "InvalidRequest",
    "digest_mismatch": "BadDigest",
    "truncated": "IncompleteBody",
    "unauthorized": "AccessDenied",
    "forbidden": "AccessDenied",
    "reserved_key": "InvalidArgument",
    "append_only": "AccessDenied",
    "retention": "AccessDenied",
    "vault_locked": "AccessDenied",
    # A vault a key cannot see is no different from one it may not touch.
    "no_such_vault": "AccessDenied",
    "no_such_object": "NoSuchKey",
    "no_such_key": "NoSuchKey",
    "not_found": "NoSuchKey",
    "method_not_allowed": "MethodNotAllowed",
    "request_timeout": "RequestTimeout",
    "conflict": "OperationAborted",
    "vault_exists": "OperationAborted",  # S3 never creates vaults: a 409 like any conflict
    "length_required": "MissingContentLength",
    "precondition_failed": "PreconditionFailed",
    "too_large": "EntityTooLarge",
    "unsupported_encoding": "InvalidArgument",
    "range_not_satisfiable": "InvalidRange",
    "unavailable": "ServiceUnavailable",
    "quota_exceeded": "QuotaExceeded",
    # 507 as the native API answers: a full disk is not a reason to retry at once.
    "no_space": "InsufficientStorage",
    "bad_bucket_name": "InvalidBucketName",
    "no_such_bucket": "NoSuchBucket",
    "bucket_exists": "BucketAlreadyExists",
    "bucket_owned": "BucketAlreadyOwnedByYou",
    "bucket_not_empty": "BucketNotEmpty",
    "no_such_upload": "NoSuchUpload",
    "invalid_part": "InvalidPart",
    "too_small": "EntityTooSmall",
    "object_locked": "AccessDenied",
    "no_such_version": "NoSuchVersion",
    "invalid_bucket_state": "InvalidBucketState",
}


class S3Error(Exception):
    """An S3 error answer: ``code``, ``status``, ``message``; ``resource``
    names the bucket or key, ``headers`` go on the answer, ``extra`` adds
    elements to the error document."""

    def __init__(self, code: str, message: str = "", *, resource: str = "", **extra: Any) -> None:
        status, default = CODES[code]
        self.headers: dict[str, str] = {}
        super().__init__(f"{code}: {message or default}")
        self.code = code
        self.status = status
        self.message = message or default
        self.resource = resource
        self.extra = extra

    def with_headers(self, headers: dict[str, str]) -> "S3Error":
        """The same error with ``headers`` on its answer."""
        self.headers.update(headers)
        return self


def from_domain(error: Exception, resource: str = "") -> S3Error:
    """The S3 error for a core error: by its ``code`` attribute (see
    vault/errors.py), keeping its detail as the message; anything else is
    an InternalError whose message says nothing of the cause. A ``retry_after``
    (a 503's) becomes the answer's ``Retry-After``."""
    code = DOMAIN.get(getattr(error, "code", ""), "InternalError")
    detail = "" if code == "InternalError" else str(getattr(error, "detail", ""))
    s3_error = S3Error(code, detail, resource=resource)
    retry_after = getattr(error, "extra", {}).get("retry_after")
    return s3_error if retry_after is None else s3_error.with_headers({"Retry-After": str(retry_after)})
