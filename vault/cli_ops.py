"""Operator commands that talk to a running server: ``usage`` and ``gc``.

:data:`COMMANDS` is added to the ``objvault`` command by :mod:`vault.cli`.
"""

from __future__ import annotations

import argparse
import sys
import urllib.parse
from typing import Any

from tqdm import tqdm

from . import cli_view as view
from .cli_client import Client, add_common_args, client


def show_usage(doc: dict) -> None:
    print(f"usage on {doc['date']}")
    view.table([(v["name"], view.size(v["stored_bytes"]), view.size(v["logical_bytes"]), f"{v['dedup_ratio']:.2f}x",
                 v["objects"], v["chunks"], view.size(v["quota_bytes"])) for v in doc["vaults"]],
               ["VAULT", "STORED", "LOGICAL", "DEDUP", "OBJECTS", "CHUNKS", "QUOTA"])


def stat(name: str, value: Any) -> str:
    """One figure of a job's stats, by the unit its name holds: bytes a size, seconds a duration."""
    if "bytes" in name.split("_"):
        return view.size(value)
    if name.endswith("_seconds"):
        return view.span(value)
    if isinstance(value, bool):
        return view.yes(value)
    return str(value)


def show_stats(stats: dict) -> None:
    view.fields([(name.replace("_", " "), stat(name, value)) for name, value in stats.items()])


def cmd_usage(args: argparse.Namespace) -> None:
    query = {}
    if args.csv:
        query["format"] = "csv"
    if args.date:
        query["date"] = args.date
    path = "/v1/admin/usage" + ("?" + urllib.parse.urlencode(query) if query else "")
    c = client(args)
    if args.csv:
        sys.stdout.write(c.call("GET", path, raw=True).decode())
    else:
        view.emit(args, c.call("GET", path), show_usage)


def _show_pass(c: Client, bar: tqdm, chunks: int) -> None:
    """The running pass on ``bar``: chunks scanned by the sweep (of about ``chunks``),
    then segments compacted."""
    progress = next(job["progress"] for job in c.call("GET", "/v1/admin/jobs")["jobs"] if job["name"] == "gc")
    if progress.get("phase") == "compact":
        view.stage(bar, "gc compact", progress.get("segments_total"), "segments")
        view.advance(bar, progress.get("segments_done", 0), progress.get("segments_total"))
    elif progress.get("phase") == "sweep":
        view.stage(bar, "gc sweep", chunks, "chunks")
        view.advance(bar, progress.get("chunks_scanned", 0), None)


def cmd_gc(args: argparse.Namespace) -> None:
    c = client(args)
    body = {"dry_run": bool(args.dry_run)}
    with view.progress("gc", None, "chunks") as bar:
        chunks = 0 if bar.disable else sum(v["chunks"] for v in c.call("GET", "/v1/admin/usage")["vaults"])
        stats = view.follow(bar, lambda: c.call("POST", "/v1/admin/gc", body), lambda: _show_pass(c, bar, chunks),
                            args.interval)
    view.emit(args, stats, show_stats)


def _usage(p: argparse.ArgumentParser) -> None:
    p.description = "Per-vault usage for billing (now, or the daily snapshot of --date)."
    add_common_args(p)
    view.add_json_arg(p)
    p.add_argument("--csv", action="store_true", help="CSV: a header row, then one row per vault")
    p.add_argument("--date", help="YYYY-MM-DD: the daily snapshot of that day (UTC)")
    p.set_defaults(func=cmd_usage)


def _gc(p: argparse.ArgumentParser) -> None:
    p.description = "Run one garbage collection and compaction pass now and print its stats."
    add_common_args(p)
    view.add_json_arg(p)
    p.add_argument("--dry-run", action="store_true", help="only count what a pass would delete")
    p.add_argument("--interval", type=float, default=0.5, help=argparse.SUPPRESS)
    p.set_defaults(func=cmd_gc)


COMMANDS = {"usage": _usage, "gc": _gc}
