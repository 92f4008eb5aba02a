"""Domain errors: one flat hierarchy, mapped to HTTP in exactly one place.

Every error carries its HTTP status and a stable machine-readable ``code``
(the problem-details ``code`` field). The storage and index layers raise
these; :mod:`vault.http` turns them into RFC 9457 responses.
"""

from __future__ import annotations

from typing import Any


class VaultError(Exception):
    """Base of every error the API reports to a client."""

    status = 500
    code = "internal"
    title = "Internal error"

    def __init__(self, detail: str = "", **extra: Any) -> None:
        super().__init__(detail or self.title)
        self.detail = detail or self.title
        self.extra = extra


def _error(name: str, status: int, code: str, title: str) -> type[VaultError]:
    return type(name, (VaultError,), {"status": status, "code": code, "title": title,
                                      "__doc__": title + "."})


BadRequest = _error("BadRequest", 400, "bad_request", "Bad request")
BadName = _error("BadName", 400, "bad_name", "Invalid name")
BadJSON = _error("BadJSON", 400, "bad_json", "Malformed JSON body")
DigestMismatch = _error("DigestMismatch", 400, "digest_mismatch", "Body does not match the chunk id")
Truncated = _error("Truncated", 400, "truncated", "Body shorter than Content-Length")
Unauthorized = _error("Unauthorized", 401, "unauthorized", "Missing or invalid credentials")
Forbidden = _error("Forbidden", 403, "forbidden", "The key's role does not allow this")
ReservedKey = _error("ReservedKey", 403, "reserved_key", "The object key is reserved")
AppendOnly = _error("AppendOnly", 403, "append_only", "The vault is append-only")
RetentionLocked = _error("RetentionLocked", 403, "retention", "The object is under retention")
NoSuchVault = _error("NoSuchVault", 404, "no_such_vault", "No such vault")
NoSuchChunk = _error("NoSuchChunk", 404, "no_such_chunk", "No such chunk")
NoSuchObject = _error("NoSuchObject", 404, "no_such_object", "No such object")
NoSuchKey = _error("NoSuchKey", 404, "no_such_key", "No such key")
NotFound = _error("NotFound", 404, "not_found", "Not found")
MethodNotAllowed = _error("MethodNotAllowed", 405, "method_not_allowed", "Method not allowed")
RequestTimeout = _error("RequestTimeout", 408, "request_timeout", "The request did not arrive in time")
VaultExists = _error("VaultExists", 409, "vault_exists", "Vault already exists")
VaultLocked = _error("VaultLocked", 409, "vault_locked", "Vault is append-only or under retention")
MissingChunks = _error("MissingChunks", 409, "missing_chunks", "Object references chunks the vault does not hold")
Conflict = _error("Conflict", 409, "conflict", "Conflict")
LengthRequired = _error("LengthRequired", 411, "length_required", "Content-Length is required")
PreconditionFailed = _error("PreconditionFailed", 412, "precondition_failed", "Precondition failed")
TooLarge = _error("TooLarge", 413, "too_large", "Body too large")
UnsupportedEncoding = _error("UnsupportedEncoding", 415, "unsupported_encoding", "Content-Encoding is not supported")
RangeNotSatisfiable = _error("RangeNotSatisfiable", 416, "range_not_satisfiable", "Range not satisfiable")
ChunkCorrupt = _error("ChunkCorrupt", 500, "chunk_corrupt", "Stored chunk failed verification")
Unavailable = _error("Unavailable", 503, "unavailable", "Service unavailable")
QuotaExceeded = _error("QuotaExceeded", 507, "quota_exceeded", "Vault quota exceeded")
NoSpace = _error("NoSpace", 507, "no_space", "No space left on the data directories")
StorageFailure = _error("StorageFailure", 500, "storage_failure", "Storage write failed")
