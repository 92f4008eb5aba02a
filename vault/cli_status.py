"""``objvault status``: one screen of the server's health for the operator —
readiness, free space per data directory, totals, replication backlog per
target, the last run of every job and open alerts.

It reads the admin API, ``/readyz`` and ``/metrics`` (free space); ``--json``
prints those documents as they came, under one key each.
:data:`COMMANDS` is added to the ``objvault`` command by :mod:`vault.cli`.
"""

from __future__ import annotations

import argparse

from prometheus_client.parser import text_string_to_metric_families

from replication.cli import show_targets

from . import cli_view as view
from .cli_client import Client, add_common_args, client


def _data_dirs(c: Client) -> list[dict]:
    """Free bytes per data directory, from the ``objvault_data_dir_free_bytes`` gauge."""
    text = c.call("GET", "/metrics", raw=True).decode()
    return [{"dir": sample.labels["dir"], "free_bytes": int(sample.value)}
            for family in text_string_to_metric_families(text) if family.name == "objvault_data_dir_free_bytes"
            for sample in family.samples]


def gather(c: Client) -> dict:
    """Every document the screen shows; ``alerts`` is None on a server without alerts (404)."""
    alerts = c.call("GET", "/v1/admin/alerts", tolerate=(404,))
    return {"readyz": c.call("GET", "/readyz", tolerate=(503,)), "data_dirs": _data_dirs(c),
            "usage": c.call("GET", "/v1/admin/usage"), "replication": c.call("GET", "/v1/admin/replication"),
            "jobs": c.call("GET", "/v1/admin/jobs"),
            "alerts": None if alerts.get("status") == 404 else alerts}


def _totals(usage: dict) -> str:
    vaults = usage["vaults"]
    stored = sum(v["stored_bytes"] for v in vaults)
    logical = sum(v["logical_bytes"] for v in vaults)
    return (f"{len(vaults)} vaults, {view.size(stored)} stored, {view.size(logical)} logical "
            f"(dedup {logical / stored if stored else 1:.2f}x), {sum(v['objects'] for v in vaults)} objects")


def _outcome(job: dict) -> str:
    if job["running"]:
        return "running"
    if job["last_ok"] is None:
        return "-"
    return "ok" if job["last_ok"] else f"failed: {job['last_error']}"


def _show_jobs(doc: dict) -> None:
    view.table([(j["name"], view.when(j["last_end"]), _outcome(j), view.span(j["last_duration_seconds"]),
                 view.when(j["next_run"]) if j["next_run"] else "-") for j in doc["jobs"]],
               ["JOB", "LAST RUN", "OUTCOME", "TOOK", "NEXT RUN"])


def _show_alerts(doc: dict | None) -> None:
    if doc is None:
        print("alerts: this server has none (no /v1/admin/alerts)")
    elif not doc["open"]:
        print("alerts: none open")
    else:
        print("alerts:")
        view.table([(a["kind"], a["vault"] or "-", a["message"], view.when(a["opened"])) for a in doc["open"]],
                   ["ALERT", "VAULT", "WHAT", "OPENED"])


def show_status(doc: dict) -> None:
    ready = doc["readyz"]
    print("ready" if ready["status"] == "ready" else "NOT READY: " + "; ".join(ready.get("problems", [])))
    print(_totals(doc["usage"]))
    print()
    view.table([(d["dir"], view.size(d["free_bytes"])) for d in doc["data_dirs"]], ["DATA DIR", "FREE"])
    print()
    show_targets(doc["replication"])
    print()
    _show_jobs(doc["jobs"])
    print()
    _show_alerts(doc["alerts"])


def cmd_status(args: argparse.Namespace) -> None:
    view.emit(args, gather(client(args)), show_status)


def _status(p: argparse.ArgumentParser) -> None:
    p.description = ("One screen of health: readiness, free space, totals, replication backlog, "
                     "last job runs, open alerts.")
    add_common_args(p)
    view.add_json_arg(p)
    p.set_defaults(func=cmd_status)


COMMANDS = {"status": _status}
