"""Operator commands that talk to a running server: ``usage`` and ``gc``.

:data:`COMMANDS` is added to the ``objvault`` command by :mod:`vault.cli`.
"""

from __future__ import annotations

import argparse
import sys
import urllib.parse

from .cli_client import add_common_args, client, out


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
        out(c.call("GET", path))


def cmd_gc(args: argparse.Namespace) -> None:
    out(client(args).call("POST", "/v1/admin/gc", {"dry_run": bool(args.dry_run)}))


def _usage(p: argparse.ArgumentParser) -> None:
    p.description = "Per-vault usage for billing (now, or the daily snapshot of --date)."
    add_common_args(p)
    p.add_argument("--csv", action="store_true", help="CSV: a header row, then one row per vault")
    p.add_argument("--date", help="YYYY-MM-DD: the daily snapshot of that day (UTC)")
    p.set_defaults(func=cmd_usage)


def _gc(p: argparse.ArgumentParser) -> None:
    p.description = "Run one garbage collection and compaction pass now and print its stats."
    add_common_args(p)
    p.add_argument("--dry-run", action="store_true", help="only count what a pass would delete")
    p.set_defaults(func=cmd_gc)


COMMANDS = {"usage": _usage, "gc": _gc}
