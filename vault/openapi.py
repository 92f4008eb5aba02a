"""The HTTP API as OpenAPI 3.1, served at ``/v1/openapi.json``.

Built from one table so that it stays in step with :func:`vault.http.add_routes`
(a test checks that every route is described).
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

# (method, path, summary, auth, success statuses, error codes)
ROUTES = [
    ("get", "/healthz", "Liveness", None, {200: "serving"}, []),
    ("get", "/readyz", "Readiness: index and data directories open and writable", None,
     {200: "ready", 503: "not ready"}, []),
    ("get", "/metrics", "Prometheus metrics (objvault_*); per-vault series only with the metrics token or the admin token as Bearer", None, {200: "text exposition"}, []),
    ("get", "/v1/openapi.json", "This document", None, {200: "OpenAPI 3.1"}, []),
    ("post", "/v1/vaults", "Create a vault", "admin", {201: "vault"}, ["bad_name", "bad_json", "vault_exists"]),
    ("get", "/v1/vaults", "List vaults", "admin", {200: "vaults"}, []),
    ("get", "/v1/vaults/{vault}", "Show a vault", "admin or key", {200: "vault"}, ["no_such_vault"]),
    ("patch", "/v1/vaults/{vault}", "Update quota and locks", "admin", {200: "vault"}, ["no_such_vault"]),
    ("delete", "/v1/vaults/{vault}", "Delete a vault", "admin", {204: "deleted"}, ["vault_locked"]),
    ("post", "/v1/vaults/{vault}/keys", "Create a key; the secret is shown once", "admin", {201: "key"},
     ["bad_request", "no_such_vault"]),
    ("get", "/v1/vaults/{vault}/keys", "List keys (no secrets)", "admin", {200: "keys"}, ["no_such_vault"]),
    ("delete", "/v1/vaults/{vault}/keys/{key_id}", "Revoke a key", "admin", {204: "revoked"}, ["no_such_key"]),
    ("post", "/v1/vaults/{vault}/buckets", "Create an S3 bucket in the vault ({name})", "admin",
     {201: "bucket"}, ["bad_bucket_name", "bucket_exists", "bucket_owned", "no_such_vault"]),
    ("get", "/v1/vaults/{vault}/buckets", "List the vault's S3 buckets", "admin", {200: "buckets"},
     ["no_such_vault"]),
    ("delete", "/v1/vaults/{vault}/buckets/{bucket}", "Delete an empty S3 bucket (ends its uploads)", "admin",
     {204: "deleted"}, ["no_such_bucket", "bucket_not_empty"]),
    ("put", "/v1/vaults/{vault}/chunks/{id}", "Upload a chunk (body = bytes, id = sha256)", "append",
     {201: "stored", 200: "already stored"},
     ["digest_mismatch", "truncated", "length_required", "too_large", "unsupported_encoding", "quota_exceeded"]),
    ("get", "/v1/vaults/{vault}/chunks/{id}", "Download a chunk (Range supported)", "read",
     {200: "bytes", 206: "partial"}, ["no_such_chunk", "chunk_corrupt", "range_not_satisfiable"]),
    ("head", "/v1/vaults/{vault}/chunks/{id}", "Chunk exists? (Content-Length)", "read", {200: "exists"},
     ["no_such_chunk"]),
    ("post", "/v1/vaults/{vault}/chunks/missing", "Which of these ids (<= 100000) are missing", "read",
     {200: "missing ids"}, ["bad_name", "too_large"]),
    ("post", "/v1/vaults/{vault}/chunks/batch",
     "Upload many chunks in one body: frames of sha256(32 B) | length (u32 BE) | bytes; all or nothing",
     "append", {200: "per-chunk 201/200"}, ["digest_mismatch", "truncated", "too_large", "quota_exceeded"]),
    ("get", "/v1/vaults/{vault}/objects", "List objects (prefix, start_after, limit)", "read",
     {200: "objects"}, []),
    ("put", "/v1/vaults/{vault}/objects/{key}", "Create or overwrite an object", "append (new) / full",
     {201: "object"}, ["missing_chunks", "precondition_failed", "append_only", "forbidden", "bad_name"]),
    ("get", "/v1/vaults/{vault}/objects/{key}", "Get an object's manifest", "read", {200: "object"},
     ["no_such_object"]),
    ("head", "/v1/vaults/{vault}/objects/{key}", "Object exists?", "read", {200: "exists"}, ["no_such_object"]),
    ("delete", "/v1/vaults/{vault}/objects/{key}", "Delete an object", "full", {204: "deleted"},
     ["append_only", "retention", "no_such_object"]),
    ("get", "/v1/admin/usage", "Per-vault usage for billing (?format=csv, ?date=YYYY-MM-DD)", "admin",
     {200: "usage"}, []),
    ("post", "/v1/admin/gc", "Run one GC pass ({dry_run})", "admin", {200: "stats"}, []),
    ("get", "/v1/admin/jobs", "Background jobs: schedule, progress, last pass", "admin", {200: "jobs"}, []),
    ("post", "/v1/admin/jobs/{job}", "Run one pass of a job now", "admin", {200: "stats"}, ["not_found"]),
    ("post", "/v1/admin/scrub", "Start a scrub pass", "admin", {202: "started"}, []),
    ("get", "/v1/admin/scrub", "Scrub progress and damaged chunks", "admin", {200: "progress"}, []),
    ("get", "/v1/admin/replication", "Replication lag per target", "admin", {200: "targets"}, []),
    ("post", "/v1/admin/restore", "Rebuild a vault from a target ({vault, from})", "admin", {202: "started"},
     []),
    ("get", "/v1/admin/restore", "Restore progress", "admin", {200: "progress"}, []),
    ("get", "/v1/admin/alerts", "Open alerts, recent history, webhook queues (?limit=N)", "admin",
     {200: "alerts"}, []),
    ("post", "/v1/integrations/comet/remote-bucket",
     "Comet Custom Remote Bucket: a new vault, full key and bucket; Comet's DestinationLocation (docs/comet.md)",
     "the [comet] secret as a Bearer (no secret configured: 404)", {200: "DestinationLocation"},
     ["unauthorized", "too_large", "not_found"]),
    ("get", "/v1/admin/audit", "The audit log, newest first (?vault=&action=&since=&until=&limit=N)", "admin",
     {200: "lines"}, ["bad_request"]),
]

PROBLEM_SCHEMA = {
    "type": "object",
    "required": ["type", "title", "status", "code"],
    "properties": {"type": {"type": "string"}, "title": {"type": "string"}, "status": {"type": "integer"},
                   "detail": {"type": "string"}, "code": {"type": "string"},
                   "missing": {"type": "array", "items": {"type": "string"}}},
}


@lru_cache(maxsize=1)
def spec() -> dict:
    paths: dict = {}
    for method, path, summary, auth, ok, codes in ROUTES:
        params = [{"name": p, "in": "path", "required": True, "schema": {"type": "string"}}
                  for p in ("vault", "id", "key", "key_id", "bucket", "job") if "{" + p + "}" in path]
        responses: dict[str, dict[str, Any]] = {str(s): {"description": d} for s, d in ok.items()}
        responses["default"] = {
            "description": "Problem details; `code` is one of: " + (", ".join(codes) or "(generic)"),
            "content": {"application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}}}
        op: dict[str, Any] = {"summary": summary, "parameters": params, "responses": responses}
        if auth:
            op["security"] = [{"bearer": []}, {"basic": []}]
            op["description"] = f"Needs: {auth}."
        paths.setdefault(path, {})[method] = op
    return {
        "openapi": "3.1.0",
        "info": {"title": "objvault API", "version": "1"},
        "paths": paths,
        "components": {
            "schemas": {"Problem": PROBLEM_SCHEMA},
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"},
                                "basic": {"type": "http", "scheme": "basic"}},
        },
    }
