"""The console's pages and actions. Each reads through the services, the
runner, :class:`vault.lifecycle.UsageReports` and replication's status, and
acts through the same calls as the admin API; none touches the index or a file.

Operator only: overview, vaults (and creating one), keys, settings,
replication, jobs, the audit log. A tenant sees its own vault's page, without its keys or
settings; another vault is "no such vault" to it (the auth service decides).
"""

from __future__ import annotations

import functools
import json
import time
from datetime import datetime, timezone
from typing import Any, Callable

from aiohttp import web

from replication.setup import Replication

from .. import errors as E
from .. import policy
from ..admin_http import REPLICATION, RUNNER, USAGE, app_part, audit_filter
from ..http import SERVICES, STATE, vault_param
from ..lifecycle import GarbageCollector
from ..meta import VaultRec
from ..meta import audit as A
from ..policy import Principal
from ..services import NewKey, Services, VaultSettings
from ..timefmt import iso
from ..trends import Trends
from .access import html, redirect, session, signed_in
from .render import age, bar, chart, days_ago, esc, form, line_chart, page, rate, size, span, table

# A vault whose usage has not changed for this many days is flagged stale.
STALE_DAYS = 3
# The vault name rule of vault/names.py, so the browser can say what is wrong before sending.
_NAME_FIELD = ('<label>Name <input name="name" required pattern="[a-z0-9][a-z0-9\\-]{1,61}[a-z0-9]" '
               'title="3 to 63 lower-case letters, digits and hyphens"></label>')
_UNITS = {"MiB": 1 << 20, "GiB": 1 << 30, "TiB": 1 << 40}

DiskSpace = Callable[[], list[tuple[str, int, int]]]
OpenAlerts = Callable[[], list[str]]
DISKS: web.AppKey[DiskSpace] = web.AppKey("console_disks")
# Set by the composition root when an alerts module runs: one line per open alert.
ALERTS: web.AppKey[OpenAlerts] = web.AppKey("console_alerts")
TRENDS: web.AppKey[Trends] = web.AppKey("console_trends", Trends)
# Audit lines the audit page shows, and a vault page.
AUDIT_LINES, VAULT_AUDIT_LINES = 200, 10


def _admin(request: web.Request) -> Principal:
    who = session(request).who
    if not who.admin:
        raise E.Forbidden("this page is the operator's")
    return who


def _page(request: web.Request, title: str, body: str, status: int = 200) -> web.Response:
    sess = session(request)
    flash, sess.flash = sess.flash, ""
    note = f'<p class="flash" role="status">{esc(flash)}</p>' if flash else ""
    return html(page(title, note + body, sess.who, sess.csrf), status)


def _form(request: web.Request, action: str, body: str, button: str, cls: str = "") -> str:
    return form(action, session(request).csrf, body, button, cls)


def _today() -> str:
    return datetime.now(timezone.utc).date().isoformat()


def _since(ts: float | None) -> str:
    return age(time.time() - ts) if ts else "never"


# -- overview -------------------------------------------------------------------------


@signed_in
async def overview(request: web.Request) -> web.Response:
    who = session(request).who
    if not who.admin:
        return redirect(f"/console/vaults/{who.vault}")
    _, rows = await app_part(request, USAGE).current()
    stored, logical = sum(r["stored_bytes"] for r in rows), sum(r["logical_bytes"] for r in rows)
    problems = request.app[STATE].ready()
    rates = app_part(request, TRENDS).rates()
    ratio = rates.error_ratio
    errors = "—" if ratio is None else f"{rate(rates.errors, '')} ({100 * ratio:.1f} % of {rate(rates.requests, '')})"
    cards = [("Stored", size(stored)), ("Logical", size(logical)),
             ("Dedup ratio", f"{logical / stored:.2f}×" if stored else "—"), ("Vaults", str(len(rows))),
             ("Readiness", "ready" if not problems else "not ready: " + "; ".join(problems)),
             ("Ingest", rate(rates.ingest_bytes)), ("Reads", rate(rates.read_bytes)), ("Server errors", errors)]
    body = '<dl class="cards" id="cards">' + "".join(f"<div><dt>{esc(k)}</dt><dd>{esc(v)}</dd></div>"
                                                     for k, v in cards)
    body += '</dl><p class="muted">Rates: the last minute.</p>' + _disks(request) + _alerts(request)
    body += "<h2>Replication backlog</h2>" + _backlog(app_part(request, REPLICATION))
    body += "<h2>Last runs</h2>" + _runs(request)
    return _page(request, "Overview", body)


def _disks(request: web.Request) -> str:
    rows = [(esc(d), size(total), size(free), bar(total - free, total) if total else "unreadable")
            for d, total, free in app_part(request, DISKS)()]
    return "<h2>Data directories</h2>" + table(["Directory", "Capacity", "Free", "Used"], rows)


def _alerts(request: web.Request) -> str:
    source = request.app.get(ALERTS)
    if source is None:
        return ""
    lines = source()
    items = "".join(f"<li>{esc(line)}</li>" for line in lines) or "<li>None</li>"
    return f'<h2>Open alerts</h2><ul class="alerts">{items}</ul>'


def _backlog(repl: Replication) -> str:
    targets = repl.status()["targets"]
    if not targets:
        return '<p class="muted">No replication target is configured.</p>'
    rows = [(esc(t["name"]), f'{t["pending_entries"]:,}', size(t["pending_bytes"]),
             age(t["oldest_pending_seconds"]) if t["pending_entries"] else "—",
             esc(t["last_error"] or "none")) for t in targets]
    return table(["Target", "Entries", "Bytes", "Oldest", "Last error"], rows)


def _runs(request: web.Request) -> str:
    """Every job under the runner: GC (with compaction), scrub, replication's, usage history."""
    jobs = app_part(request, RUNNER).status()
    rows = [(esc(j["name"]), _since(j["last_end"]), "ok" if j["last_ok"] else esc(j["last_error"] or "not yet"),
             f'{j["last_duration_seconds"]:.1f} s' if j["last_duration_seconds"] is not None else "—")
            for j in jobs]
    return table(["Job", "Last run", "Result", "Took"], rows)


# -- vaults ---------------------------------------------------------------------------


def _locks(rec: VaultRec) -> str:
    locks = (["append-only"] if rec.append_only else []) + \
        ([f"{rec.retention_days} days retention"] if rec.retention_days else [])
    return esc(", ".join(locks)) or '<span class="muted">none</span>'


@signed_in
async def vaults(request: web.Request) -> web.Response:
    _admin(request)
    svc: Services = request.app[SERVICES]
    recs = svc.vaults.list()
    reports = app_part(request, USAGE)
    since = await reports.unchanged_since([r.vid for r in recs])
    today = _today()
    rows = [_vault_row(svc, rec, days_ago(since[rec.vid], today)) for rec in recs]
    create = _form(request, "/console/vaults",
                   _NAME_FIELD, "Create vault",
                   "inline")
    filt = ('<label class="filter">Filter <input type="search" data-filter="vaults" '
            'placeholder="vault name"></label>')
    head = [f'<button type="button" data-sort="{i}">{h}</button>'
            for i, h in enumerate(["Name", "Stored", "Objects", "Unchanged for", "Locks"])]
    return _page(request, "Vaults", create + filt + table(head, rows, 'id="vaults"'))


def _vault_row(svc: Services, rec: VaultRec, idle_days: int) -> tuple:
    usage = svc.vaults.usage(rec.vid)
    stale = ' <strong class="stale">stale</strong>' if idle_days >= STALE_DAYS else ""
    idle = "today" if idle_days == 0 else f"{idle_days} day{'s' if idle_days != 1 else ''}"
    link = f'<a href="/console/vaults/{esc(rec.name)}">{esc(rec.name)}</a>'
    return ((link, rec.name), (bar(usage.stored_bytes, rec.quota_bytes), usage.stored_bytes),
            (f"{usage.objects:,}", usage.objects), (idle + stale, idle_days), (_locks(rec), int(rec.append_only)))


@signed_in
async def create_vault(request: web.Request) -> web.Response:
    who = _admin(request)
    name = str((await request.post()).get("name", ""))
    await request.app[SERVICES].vaults.create(name, VaultSettings(), who)
    session(request).flash = f"Vault {name} created."
    return redirect(f"/console/vaults/{name}")


# -- one vault ------------------------------------------------------------------------


@signed_in
async def vault_page(request: web.Request) -> web.Response:
    return await _vault_view(request, None)


async def _vault_view(request: web.Request, new_key: NewKey | None) -> web.Response:
    who = session(request).who
    svc: Services = request.app[SERVICES]
    rec = svc.auth.vault_for(who, vault_param(request), "read")
    history = await app_part(request, USAGE).history(rec.vid)
    today = _today()
    # The daily snapshots, with today's point as it is now rather than as it was at the snapshot.
    points = [(h["date"], h["stored_bytes"]) for h in history if h["date"] != today]
    points.append((today, svc.vaults.usage(rec.vid).stored_bytes))
    body = _summary(svc, rec) + "<h2>Stored bytes, daily</h2>" + chart(points, "Stored bytes")
    if who.admin:
        body += _keys(request, svc, rec, new_key) + _settings(request, rec)
    body += _buckets(svc, rec)
    if who.admin:
        lines = await svc.vaults.audit_log(VAULT_AUDIT_LINES, A.Filter(vault=rec.name))
        body += (f'<h2>Recent audit lines</h2>{_audit_table(lines, "vault-audit")}'
                 f'<p><a href="/console/audit?vault={esc(rec.name)}">The audit log of {esc(rec.name)}</a></p>')
    return _page(request, rec.name, body)


def _summary(svc: Services, rec: VaultRec) -> str:
    usage = svc.vaults.usage(rec.vid)
    ratio = f"{usage.logical_bytes / usage.stored_bytes:.2f}×" if usage.stored_bytes else "—"
    items = [("Stored", bar(usage.stored_bytes, rec.quota_bytes)), ("Logical", size(usage.logical_bytes)),
             ("Dedup ratio", ratio), ("Objects", f"{usage.objects:,}"), ("Chunks", f"{usage.chunks:,}"),
             ("Locks", _locks(rec))]
    return '<dl class="facts" id="summary">' + "".join(f"<dt>{k}</dt><dd>{v}</dd>" for k, v in items) + "</dl>"


def _keys(request: web.Request, svc: Services, rec: VaultRec, new_key: NewKey | None) -> str:
    base = f"/console/vaults/{esc(rec.name)}/keys"
    rows = [(f"<code>{esc(k.id)}</code>", esc(k.role), esc(k.label), esc(k.created),
             _form(request, f"{base}/{k.id}/revoke", "", "Revoke", "inline danger"))
            for k in svc.auth.list_keys(rec)]
    roles = "".join(f'<option{" selected" if r == "append" else ""}>{r}</option>' for r in policy.ROLES)
    create = _form(request, base, f'<label>Role <select name="role">{roles}</select></label>'
                                  '<label>Label <input name="label" maxlength="256"></label>', "Create key", "inline")
    return "<h2>Keys</h2>" + (_shown_once(new_key) if new_key else "") + \
        table(["Key", "Role", "Label", "Created", ""], rows, 'id="keys"') + create


def _shown_once(key: NewKey) -> str:
    secrets = [("Secret", key.secret), ("S3 access key id", key.s3.access_key_id),
               ("S3 secret access key", key.s3.secret_access_key)]
    rows = "".join(f'<dt>{name}</dt><dd><code id="new-{i}">{esc(value)}</code> '
                   f'<button type="button" data-copy="new-{i}">Copy</button></dd>'
                   for i, (name, value) in enumerate(secrets))
    return (f'<section class="once" id="new-key" aria-labelledby="new-key-h"><h3 id="new-key-h">Key {esc(key.id)} '
            f'created</h3><p>These secrets are shown this once: copy them now.</p><dl>{rows}</dl></section>')


def _settings(request: web.Request, rec: VaultRec) -> str:
    quota, unit = _quota_in_units(rec.quota_bytes)
    units = "".join(f'<option{" selected" if u == unit else ""}>{u}</option>' for u in _UNITS)
    fields = (f'<label>Quota <input name="quota" type="number" min="0" step="any" value="{quota}" '
              f'placeholder="none"></label><label>Unit <select name="unit">{units}</select></label>'
              f'<label><input type="checkbox" name="append_only" value="yes"'
              f'{" checked" if rec.append_only else ""}> Append-only</label>'
              f'<label>Retention (days) <input name="retention_days" type="number" min="0" '
              f'value="{rec.retention_days}"></label>')
    return "<h2>Quota and locks</h2>" + _form(request, f"/console/vaults/{esc(rec.name)}/settings", fields,
                                               "Save", "settings")


def _quota_in_units(quota: int | None) -> tuple[str, str]:
    if quota is None:
        return "", "GiB"
    for unit in ("TiB", "GiB", "MiB"):
        if quota >= _UNITS[unit]:
            return f"{quota / _UNITS[unit]:g}", unit
    return f"{quota / _UNITS['MiB']:g}", "MiB"


def _buckets(svc: Services, rec: VaultRec) -> str:
    rows = [(esc(b.name), _since(b.created)) for b in svc.buckets.list(rec.vid)]
    if not rows:
        return '<h2>S3 buckets</h2><p class="muted">No buckets.</p>'
    return "<h2>S3 buckets</h2>" + table(["Bucket", "Created"], rows)


@signed_in
async def create_key(request: web.Request) -> web.Response:
    who = _admin(request)
    data = await request.post()
    key = await request.app[SERVICES].auth.create_key(vault_param(request), data.get("role"),
                                                      str(data.get("label", "")), who)
    return await _vault_view(request, key)


@signed_in
async def revoke_key(request: web.Request) -> web.Response:
    who = _admin(request)
    name, key_id = vault_param(request), request.match_info["key_id"]
    await request.app[SERVICES].auth.revoke_key(name, key_id, who)
    session(request).flash = f"Key {key_id} revoked."
    return redirect(f"/console/vaults/{name}")


@signed_in
async def change_settings(request: web.Request) -> web.Response:
    """Weakening a lock (append-only off, shorter retention) asks for a confirmation first."""
    who = _admin(request)
    svc: Services = request.app[SERVICES]
    name = vault_param(request)
    rec = svc.vaults.get(name)
    data = await request.post()
    settings = _settings_from(data)
    before = {"append_only": rec.append_only, "retention_days": rec.retention_days}
    if policy.lock_weakened(before, settings.append_only, settings.retention_days) and data.get("confirm") != "yes":
        return _confirm(request, rec, data)
    await svc.vaults.update(name, settings, who)
    session(request).flash = "Settings saved."
    return redirect(f"/console/vaults/{name}")


def _settings_from(data: Any) -> VaultSettings:
    quota_text, unit = str(data.get("quota", "")).strip(), str(data.get("unit", "GiB"))
    try:
        quota = None if not quota_text else int(float(quota_text) * _UNITS[unit])
        retention = int(str(data.get("retention_days", "0")) or 0)
    except (ValueError, KeyError, OverflowError):
        raise E.BadRequest("quota and retention must be numbers") from None
    return VaultSettings(quota_bytes=quota, append_only=data.get("append_only") == "yes", retention_days=retention)


def _confirm(request: web.Request, rec: VaultRec, data: Any) -> web.Response:
    keep = "".join(f'<input type="hidden" name="{esc(k)}" value="{esc(data[k])}">'
                   for k in ("quota", "unit", "append_only", "retention_days") if k in data)
    body = (f'<p role="alert">This weakens the locks of <strong>{esc(rec.name)}</strong> (now: {_locks(rec)}): '
            f'data it protects could then be deleted. The change is recorded in the audit log.</p>'
            + _form(request, f"/console/vaults/{esc(rec.name)}/settings",
                    keep + '<input type="hidden" name="confirm" value="yes">', "Weaken the locks", "danger")
            + f'<p><a href="/console/vaults/{esc(rec.name)}">Cancel</a></p>')
    return _page(request, "Confirm weaker locks", body)


# -- replication and jobs -------------------------------------------------------------


@signed_in
async def replication(request: web.Request) -> web.Response:
    _admin(request)
    targets = app_part(request, REPLICATION).status()["targets"]
    if not targets:
        return _page(request, "Replication", '<p class="muted">No replication target is configured.</p>')
    trends = app_part(request, TRENDS)
    rows = [(esc(t["name"]), esc(t["kind"]), f'{t["pending_entries"]:,}', size(t["pending_bytes"]),
             span(t["oldest_pending_seconds"]) if t["pending_entries"] else "—", rate(trends.throughput(t)),
             size(t["sent_bytes"]), esc(t["last_success"] or "never"), esc(t["last_error"] or "none"))
            for t in targets]
    body = table(["Target", "Kind", "Entries", "Backlog", "Lag", "Throughput", "Sent", "Last success",
                  "Last error"], rows, 'id="targets"')
    body += '<p class="muted">Throughput: the last minute. Lag: the age of the oldest change not yet sent.</p>'
    for t in targets:
        body += f'<h2>Lag of {esc(t["name"])}</h2>' + _lag_chart(t["name"], trends.lag(t))
    return _page(request, "Replication", body)


def _lag_chart(name: str, points: list[tuple[float, float]]) -> str:
    if len(points) < 2:
        return '<p class="muted">No lag measured yet.</p>'
    top = max(v for _, v in points)
    desc = (f"Lag of {name} over the last {span(points[-1][0] - points[0][0])}: now {span(points[-1][1])}, "
            f"peak {span(top)}")
    return line_chart(points, desc)


@signed_in
async def jobs(request: web.Request) -> web.Response:
    _admin(request)
    return _jobs_page(request, "")


def _jobs_page(request: web.Request, dry_run: str) -> web.Response:
    runner = app_part(request, RUNNER)
    rows = [(esc(j["name"]), f'{j["runs"]:,}', f'{j["failures"]:,}', _since(j["last_end"]),
             "running" if j["running"] else ("ok" if j["last_ok"] else esc(j["last_error"] or "not yet")),
             f'<code>{esc(_stats(j["last_stats"]))}</code>') for j in runner.status()]
    actions = _form(request, "/console/jobs/gc", '<input type="hidden" name="dry_run" value="yes">',
                    "GC dry run", "inline") + _form(request, "/console/jobs/scrub", "", "Scrub now", "inline")
    return _page(request, "Jobs", actions + dry_run +
                 table(["Job", "Runs", "Failures", "Last run", "Result", "Last stats"], rows, 'id="jobs"'))


def _stats(stats: dict | None) -> str:
    return ", ".join(f"{k}: {v}" for k, v in (stats or {}).items()) or "—"


@signed_in
async def run_gc(request: web.Request) -> web.Response:
    """A dry run shows what a pass would do, with the button for the real pass."""
    _admin(request)
    runner = app_part(request, RUNNER)
    job = runner.job(GarbageCollector.name)
    if not isinstance(job, GarbageCollector):
        raise E.Unavailable("garbage collection is not running")
    if (await request.post()).get("dry_run") == "yes":
        stats = await runner.run_now(job.name, functools.partial(job.run_pass, dry_run=True), record=False)
        found = f'<section id="dry-run"><h2>GC dry run</h2><p><code>{esc(_stats(stats))}</code></p>'
        return _jobs_page(request, found + _form(request, "/console/jobs/gc", "", "Run GC now", "danger") +
                          "</section>")
    stats = await runner.run_now(job.name)
    session(request).flash = f"GC pass done: {_stats(stats)}"
    return redirect("/console/jobs")


@signed_in
async def run_scrub(request: web.Request) -> web.Response:
    _admin(request)
    started = app_part(request, REPLICATION).start_scrub()
    session(request).flash = "Scrub started." if started else "A scrub pass is already running."
    return redirect("/console/jobs")


# -- audit log ------------------------------------------------------------------------


@signed_in
async def audit(request: web.Request) -> web.Response:
    """The audit log, newest first, filtered by the query (the API's filter)."""
    _admin(request)
    q = request.query
    where = audit_filter(q)
    lines = await request.app[SERVICES].vaults.audit_log(AUDIT_LINES, where)
    actions = "".join(f'<option{" selected" if a == q.get("action") else ""}>{a}</option>'
                      for a in ("vault", "key") + A.ACTIONS)
    filters = (f'<form method="get" action="/console/audit" class="inline" id="audit-filter">'
               f'<label>Vault <input name="vault" value="{esc(q.get("vault", ""))}"></label>'
               f'<label>Action <select name="action"><option value="">any</option>{actions}</select></label>'
               f'<label>From <input type="date" name="since" value="{esc(q.get("since", ""))}"></label>'
               f'<label>To <input type="date" name="until" value="{esc(q.get("until", ""))}"></label>'
               f'<button type="submit">Filter</button></form>')
    more = (f'<p class="muted">The newest {AUDIT_LINES} matching lines; narrow the filter for older ones.</p>'
            if len(lines) == AUDIT_LINES else "")
    return _page(request, "Audit log", filters + _audit_table(lines, "audit") + more)


def _audit_table(lines: list[A.AuditRec], table_id: str) -> str:
    if not lines:
        return f'<p class="muted" id="{table_id}">No audit lines.</p>'
    rows = [(f'<time datetime="{iso(r.at)}">{iso(r.at).replace("T", " ")}</time>', esc(r.who), esc(r.action),
             f'<a href="/console/vaults/{esc(r.vault)}">{esc(r.vault)}</a>', f"<code>{esc(_details(r.details))}</code>")
            for r in lines]
    return table(["Time (UTC)", "Who", "Action", "Vault", "Details"], rows, f'id="{table_id}"')


def _details(details: dict) -> str:
    return ", ".join(f"{k}: {json.dumps(v, sort_keys=True)}" for k, v in details.items()) or "—"
