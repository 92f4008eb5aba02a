"""The operators' HTTP API (admin token): vaults and keys, jobs, garbage
collection, usage, replication, restore and scrub. Handlers parse,
authenticate and call the service, the runner, :mod:`vault.lifecycle` or
:mod:`replication.setup`; nothing else.

``POST|GET /v1/vaults``, ``PATCH|DELETE /v1/vaults/{vault}``,
``POST|GET /v1/vaults/{vault}/keys``, ``DELETE /v1/vaults/{vault}/keys/{key_id}``:
vaults and their keys (reading one vault, ``GET /v1/vaults/{vault}``, is the
native API's: a vault's own keys may do it).

``GET  /v1/admin/jobs``         every background job: schedule, progress, last pass, state
``POST /v1/admin/jobs/{job}``   one pass of that job now; its stats
``POST /v1/admin/gc``           ``{"dry_run"?: bool}``: one pass now; its stats
``GET  /v1/admin/usage``        ``[?format=csv][&date=YYYY-MM-DD]``: usage now, or a day's snapshot
``GET  /v1/admin/replication``  lag per target
``POST /v1/admin/restore``      ``{"vault", "from"}`` → 202, rebuilds the vault from that target
``GET  /v1/admin/restore``      progress of the last restore
``POST /v1/admin/scrub``        → 202, starts a scrub pass
``GET  /v1/admin/scrub``        progress, last pass, damaged chunks
``GET  /v1/admin/alerts``       ``[?limit=N]``: open alerts, the newest N transitions (100), webhooks' queues
``GET  /v1/admin/audit``        ``[?vault=&action=&since=&until=&limit=N]``: the newest N audit lines (100)
"""

from __future__ import annotations

import functools
import json
import re
from datetime import date
from typing import Any

from aiohttp import web

from replication.setup import Replication

from . import errors as E
from .alerts import Alerts
from .http import SERVICES, expect_continue, read_json_object, require_admin, vault_json, vault_param
from .lifecycle import GarbageCollector, UsageReports, usage_csv
from .meta import BucketRec, KeyRec
from .meta import audit as A
from .names import vault_name
from .services import NewKey, VaultSettings
from .timefmt import iso, parse_time
from .workers import Runner

RUNNER: web.AppKey[Runner] = web.AppKey("runner", Runner)
USAGE: web.AppKey[UsageReports] = web.AppKey("usage", UsageReports)
REPLICATION: web.AppKey[Replication] = web.AppKey("replication", Replication)
ALERTS: web.AppKey[Alerts] = web.AppKey("alerts", Alerts)
HISTORY_LIMIT = 1000

_DAY = re.compile(r"^\d{4}-\d{2}-\d{2}$")


def _json(data: Any, status: int = 200) -> web.Response:
    return web.Response(status=status, body=json.dumps(data, separators=(",", ":")).encode(),
                        content_type="application/json")


def app_part(request: web.Request, key: web.AppKey) -> Any:
    part = request.app.get(key)
    if part is None:
        raise E.Unavailable("the server is starting")
    return part


def _fields(body: dict, allowed: set[str]) -> None:
    unknown = set(body) - allowed
    if unknown:
        raise E.BadRequest(f"unknown field(s): {', '.join(sorted(unknown))}")


# -- vaults and keys ----------------------------------------------------------------


def vault_settings(body: dict, creating: bool) -> VaultSettings:
    """The settings a vault create or PATCH body asks for (BadRequest on unknown fields or bad values)."""
    _fields(body, {"quota_bytes", "append_only", "retention_days", "stale_after_days"} |
            ({"name"} if creating else set()))
    return VaultSettings(**{k: v for k, v in body.items() if k != "name"})


async def create_vault(request: web.Request) -> web.Response:
    who = require_admin(request)
    body = await read_json_object(request)
    name = body.get("name")
    if not isinstance(name, str):
        raise E.BadName("vault name is required")
    vault_name(name)
    svc = request.app[SERVICES]
    rec = await svc.vaults.create(name, vault_settings(body, creating=True), who)
    return _json(vault_json(svc, rec), status=201)


async def list_vaults(request: web.Request) -> web.Response:
    require_admin(request)
    svc = request.app[SERVICES]
    return _json({"vaults": [vault_json(svc, r) for r in svc.vaults.list()]})


async def patch_vault(request: web.Request) -> web.Response:
    who = require_admin(request)
    name = vault_param(request)
    body = await read_json_object(request)
    svc = request.app[SERVICES]
    rec = await svc.vaults.update(name, vault_settings(body, creating=False), who)
    return _json(vault_json(svc, rec))


async def delete_vault(request: web.Request) -> web.Response:
    who = require_admin(request)
    await request.app[SERVICES].vaults.delete(vault_param(request), who)
    return web.Response(status=204)


def _key_doc(key: KeyRec | NewKey) -> dict:
    doc = {"id": key.id, "role": key.role, "label": key.label, "created": key.created}
    if not isinstance(key, NewKey):
        return doc
    return {"id": key.id, "secret": key.secret, **doc,
            "s3": {"access_key_id": key.s3.access_key_id, "secret_access_key": key.s3.secret_access_key}}


async def create_key(request: web.Request) -> web.Response:
    who = require_admin(request)
    name = vault_param(request)
    body = await read_json_object(request)
    _fields(body, {"role", "label"})
    label = body.get("label")
    key = await request.app[SERVICES].auth.create_key(name, body.get("role"), "" if label is None else label, who)
    return _json(_key_doc(key), status=201)


async def list_keys(request: web.Request) -> web.Response:
    require_admin(request)
    svc = request.app[SERVICES]
    rec = svc.vaults.get(vault_param(request))
    return _json({"keys": [_key_doc(k) for k in svc.auth.list_keys(rec)]})


async def revoke_key(request: web.Request) -> web.Response:
    who = require_admin(request)
    await request.app[SERVICES].auth.revoke_key(vault_param(request), request.match_info["key_id"], who)
    return web.Response(status=204)


# -- S3 buckets (the S3 front door's, managed here by the operator) ---------------------


def _bucket_doc(rec: BucketRec) -> dict:
    return {"name": rec.name, "vault": rec.vault, "created": iso(rec.created)}


async def create_bucket(request: web.Request) -> web.Response:
    who = require_admin(request)
    body = await read_json_object(request)
    if set(body) != {"name"} or not isinstance(body["name"], str):
        raise E.BadRequest("expected {\"name\": \"<bucket>\"}")
    rec = await request.app[SERVICES].buckets.create(who, vault_param(request), body["name"])
    return _json(_bucket_doc(rec), status=201)


async def list_buckets(request: web.Request) -> web.Response:
    require_admin(request)
    svc = request.app[SERVICES]
    rec = svc.vaults.get(vault_param(request))
    return _json({"buckets": [_bucket_doc(b) for b in svc.buckets.list(rec.vid)]})


async def delete_bucket(request: web.Request) -> web.Response:
    who = require_admin(request)
    svc = request.app[SERVICES]
    name = request.match_info["bucket"]
    if name not in [b.name for b in svc.buckets.list(svc.vaults.get(vault_param(request)).vid)]:
        raise E.NoSuchBucket(f"vault {vault_param(request)!r}: no such bucket {name[:80]!r}")
    await svc.buckets.delete(who, name)
    return web.Response(status=204)


# -- jobs, GC, usage --------------------------------------------------------------------


async def jobs(request: web.Request) -> web.Response:
    require_admin(request)
    runner = request.app.get(RUNNER)
    return _json({"jobs": runner.status() if runner else []})


async def run_job(request: web.Request) -> web.Response:
    require_admin(request)
    runner: Runner = app_part(request, RUNNER)
    name = request.match_info["job"]
    if runner.job(name) is None:
        raise E.NotFound(f"no such job {name[:80]!r}")
    return _json(await runner.run_now(name))


async def gc(request: web.Request) -> web.Response:
    require_admin(request)
    body = await read_json_object(request)
    _fields(body, {"dry_run"})
    dry_run = body.get("dry_run", False)
    if not isinstance(dry_run, bool):
        raise E.BadRequest("dry_run must be true or false")
    runner: Runner = app_part(request, RUNNER)
    job = runner.job(GarbageCollector.name)
    if not isinstance(job, GarbageCollector):
        raise E.Unavailable("garbage collection is not running")
    if dry_run:
        stats = await runner.run_now(job.name, functools.partial(job.run_pass, dry_run=True), record=False)
    else:
        stats = await runner.run_now(job.name)
    return _json(stats)


def _day(text: str) -> str:
    try:
        if not _DAY.match(text):
            raise ValueError(text)
        date.fromisoformat(text)
    except ValueError:
        raise E.BadRequest(f"date must be YYYY-MM-DD, got {text!r}") from None
    return text


async def usage(request: web.Request) -> web.Response:
    require_admin(request)
    fmt = request.query.get("format", "json")
    if fmt not in ("json", "csv"):
        raise E.BadRequest("format must be json or csv")
    reports: UsageReports = app_part(request, USAGE)
    day = request.query.get("date")
    if day is None:
        day, rows = await reports.current()
    else:
        rows = await reports.on(_day(day))
        if not rows:
            raise E.NotFound(f"no usage recorded for {day}")
    if fmt == "csv":
        return web.Response(text=usage_csv(day, rows), content_type="text/csv",
                            headers={"Content-Disposition": f'attachment; filename="usage-{day}.csv"'})
    return _json({"date": day, "vaults": rows})


# -- replication, restore, scrub -----------------------------------------------------


def _replication(request: web.Request) -> Replication:
    repl = request.app.get(REPLICATION)
    if repl is None:
        raise E.Unavailable("replication is starting")
    return repl


async def replication_status(request: web.Request) -> web.Response:
    require_admin(request)
    return _json(_replication(request).status())


async def restore_start(request: web.Request) -> web.Response:
    require_admin(request)
    body = await read_json_object(request)
    _fields(body, {"vault", "from"})
    vault, target = body.get("vault"), body.get("from")
    if not isinstance(vault, str) or not isinstance(target, str):
        raise E.BadRequest("'vault' and 'from' (a target name) are required")
    return _json(_replication(request).restorer.start(vault, target), status=202)


async def restore_status(request: web.Request) -> web.Response:
    require_admin(request)
    return _json(_replication(request).restorer.status())


async def scrub_start(request: web.Request) -> web.Response:
    require_admin(request)
    repl = _replication(request)
    repl.start_scrub()
    return _json(repl.scrubber.status(), status=202)


async def scrub_status(request: web.Request) -> web.Response:
    require_admin(request)
    return _json(_replication(request).scrubber.status())


async def alerts(request: web.Request) -> web.Response:
    require_admin(request)
    book: Alerts = app_part(request, ALERTS)
    return _json(book.status(limit_param(request.query, 100, HISTORY_LIMIT)))


def limit_param(query: Any, default: int, most: int) -> int:
    raw = query.get("limit", str(default))
    if not raw.isdigit() or not 0 <= int(raw) <= most:
        raise E.BadRequest(f"limit must be an integer from 0 to {most}")
    return int(raw)


def audit_filter(query: Any) -> A.Filter:
    """``vault``, ``action``, ``since`` and ``until`` of a query (empty: not filtered).
    Times are RFC 3339 or days; ``until`` a day means up to that day's end."""
    times: dict[str, float] = {}
    for name in ("since", "until"):
        text = query.get(name, "")
        try:
            if text:
                times[name] = parse_time(text, end_of_day=name == "until")
        except ValueError:
            raise E.BadRequest(f"{name} must be YYYY-MM-DD or an RFC 3339 time") from None
    action = query.get("action") or None
    if action is not None and action not in A.ACTIONS + ("vault", "key"):
        raise E.BadRequest(f"action must be one of vault, key, {', '.join(A.ACTIONS)}")
    return A.Filter(vault=query.get("vault") or None, action=action, **times)


async def audit(request: web.Request) -> web.Response:
    require_admin(request)
    lines = await request.app[SERVICES].vaults.audit_log(limit_param(request.query, 100, HISTORY_LIMIT),
                                                        audit_filter(request.query))
    return _json({"lines": [{**r.document(), "at": iso(r.at)} for r in lines]})


def add_routes(app: web.Application) -> None:
    r = app.router
    body = {"expect_handler": expect_continue}
    r.add_post("/v1/vaults", create_vault, **body)
    r.add_get("/v1/vaults", list_vaults)
    r.add_patch("/v1/vaults/{vault}", patch_vault, **body)
    r.add_delete("/v1/vaults/{vault}", delete_vault)
    r.add_post("/v1/vaults/{vault}/keys", create_key, **body)
    r.add_get("/v1/vaults/{vault}/keys", list_keys)
    r.add_delete("/v1/vaults/{vault}/keys/{key_id}", revoke_key)
    r.add_post("/v1/vaults/{vault}/buckets", create_bucket, **body)
    r.add_get("/v1/vaults/{vault}/buckets", list_buckets)
    r.add_delete("/v1/vaults/{vault}/buckets/{bucket}", delete_bucket)
    r.add_get("/v1/admin/jobs", jobs)
    r.add_post("/v1/admin/jobs/{job}", run_job)
    r.add_post("/v1/admin/gc", gc, **body)
    r.add_get("/v1/admin/usage", usage)
    r.add_get("/v1/admin/replication", replication_status)
    r.add_post("/v1/admin/restore", restore_start, **body)
    r.add_get("/v1/admin/restore", restore_status)
    r.add_post("/v1/admin/scrub", scrub_start, **body)
    r.add_get("/v1/admin/scrub", scrub_status)
    r.add_get("/v1/admin/alerts", alerts)
    r.add_get("/v1/admin/audit", audit)
