"""Domain errors: one flat hierarchy, free of any protocol.

Every error carries a stable machine-readable ``code`` and a title; the
storage, metadata and service layers raise these. Each front door maps them
once: :data:`vault.http.STATUS` gives the native API's HTTP status (and its
RFC 9457 problem body), restic uses the same statuses, S3 its own codes.
"""

from __future__ import annotations

from typing import Any


class VaultError(Exception):
    """Base of every error the API reports to a client."""

    code = "internal"
    title = "Internal error"

    def __init__(self, detail: str = "", **extra: Any) -> None:
        super().__init__(detail or self.title)
        self.detail = detail or self.title
        self.extra = extra


def _error(name: str, code: str, title: str) -> type[VaultError]:
    return type(name, (VaultError,), {"code": code, "title": title, "__doc__": title + "."})


BadRequest = _error("BadRequest", "bad_request", "Bad request")
BadName = _error("BadName", "bad_name", "Invalid name")
BadJSON = _error("BadJSON", "bad_json", "Malformed JSON body")
DigestMismatch = _error("DigestMismatch", "digest_mismatch", "Body does not match the chunk id")
Truncated = _error("Truncated", "truncated", "Body shorter than Content-Length")
Unauthorized = _error("Unauthorized", "unauthorized", "Missing or invalid credentials")
Forbidden = _error("Forbidden", "forbidden", "The key's role does not allow this")
ReservedKey = _error("ReservedKey", "reserved_key", "The object key is reserved")
AppendOnly = _error("AppendOnly", "append_only", "The vault is append-only")
RetentionLocked = _error("RetentionLocked", "retention", "The object is under retention")
NoSuchVault = _error("NoSuchVault", "no_such_vault", "No such vault")
NoSuchChunk = _error("NoSuchChunk", "no_such_chunk", "No such chunk")
NoSuchObject = _error("NoSuchObject", "no_such_object", "No such object")
NoSuchKey = _error("NoSuchKey", "no_such_key", "No such key")
NotFound = _error("NotFound", "not_found", "Not found")
MethodNotAllowed = _error("MethodNotAllowed", "method_not_allowed", "Method not allowed")
RequestTimeout = _error("RequestTimeout", "request_timeout", "The request did not arrive in time")
VaultExists = _error("VaultExists", "vault_exists", "Vault already exists")
VaultLocked = _error("VaultLocked", "vault_locked", "Vault is append-only or under retention")
MissingChunks = _error("MissingChunks", "missing_chunks", "Object references chunks the vault does not hold")
Conflict = _error("Conflict", "conflict", "Conflict")
LengthRequired = _error("LengthRequired", "length_required", "Content-Length is required")
PreconditionFailed = _error("PreconditionFailed", "precondition_failed", "Precondition failed")
TooLarge = _error("TooLarge", "too_large", "Body too large")
UnsupportedEncoding = _error("UnsupportedEncoding", "unsupported_encoding", "Content-Encoding is not supported")
RangeNotSatisfiable = _error("RangeNotSatisfiable", "range_not_satisfiable", "Range not satisfiable")


class ChunkCorrupt(VaultError):
    """Stored chunk failed verification (a class statement: the store subclasses it)."""

    code = "chunk_corrupt"
    title = "Stored chunk failed verification"


Unavailable = _error("Unavailable", "unavailable", "Service unavailable")
QuotaExceeded = _error("QuotaExceeded", "quota_exceeded", "Vault quota exceeded")
NoSpace = _error("NoSpace", "no_space", "No space left on the data directories")
BadBucketName = _error("BadBucketName", "bad_bucket_name", "Invalid bucket name")
NoSuchBucket = _error("NoSuchBucket", "no_such_bucket", "No such bucket")
BucketExists = _error("BucketExists", "bucket_exists", "The bucket name belongs to another vault")
BucketOwned = _error("BucketOwned", "bucket_owned", "The vault already has this bucket")
BucketNotEmpty = _error("BucketNotEmpty", "bucket_not_empty", "The bucket is not empty")
NoSuchUpload = _error("NoSuchUpload", "no_such_upload", "No such multipart upload")
InvalidPart = _error("InvalidPart", "invalid_part", "A part is missing or does not match")
TooSmall = _error("TooSmall", "too_small", "A part is smaller than the minimum")
ObjectLocked = _error("ObjectLocked", "object_locked", "The object version is locked")
NoSuchVersion = _error("NoSuchVersion", "no_such_version", "No such object version")
InvalidBucketState = _error("InvalidBucketState", "invalid_bucket_state",
                            "The bucket's state does not allow this")
StorageFailure = _error("StorageFailure", "storage_failure", "Storage write failed")
