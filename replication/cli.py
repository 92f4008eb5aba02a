"""CLI commands: ``replication status``, ``restore VAULT --from TARGET``, ``scrub``.

They talk to the running server with the admin token (``vault.cli.client``).
Progress bars go to stderr, results (JSON) to stdout.
"""

from __future__ import annotations

import argparse
import sys
import time

from vault.cli import COMMANDS, _common, client, out

BAR = 30


def bar(done: int, total: int | None, extra: str = "") -> str:
    """A one-line text progress bar: ``[#####.....]  45%  9/20 objects, extra``."""
    if total:
        frac = min(1.0, done / total)
        filled = int(round(BAR * frac))
        return f"[{'#' * filled}{'.' * (BAR - filled)}] {frac * 100:5.1f}%  {done}/{total} objects{extra}"
    return f"[{'?' * BAR}]  {done} objects{extra}"


def _mb(n: int) -> str:
    return f"{n / 1e6:.1f} MB"


def cmd_replication(args: argparse.Namespace) -> None:
    doc = client(args).call("GET", "/v1/admin/replication")
    if args.json:
        out(doc)
        return
    rows = doc["targets"]
    if not rows:
        print("no replication targets configured")
        return
    for t in rows:
        print(f"{t['name']} ({t['kind']} {t['url']})")
        print(f"  pending: {t['pending_entries']} entries, {_mb(t['pending_bytes'])}"
              f" ({t.get('delayed_entries', 0)} deletes waiting for their delay)")
        print(f"  oldest due entry: {t['oldest_pending_seconds']:.1f} s")
        print(f"  last success: {t['last_success'] or 'never'}")
        if t["last_error"]:
            print(f"  last error ({t.get('last_error_at')}): {t['last_error']}")


def cmd_restore(args: argparse.Namespace) -> None:
    c = client(args)
    c.call("POST", "/v1/admin/restore", {"vault": args.vault, "from": args.source})
    tty = sys.stderr.isatty()
    last_line = ""
    while True:
        st = c.call("GET", "/v1/admin/restore")
        line = bar(st.get("objects", 0), st.get("objects_total"),
                   f", {st.get('chunks', 0)} chunks, {_mb(st.get('bytes', 0))}")
        if line != last_line:
            print(("\r" + line) if tty else line, end="" if tty else "\n", file=sys.stderr, flush=True)
            last_line = line
        if st["state"] in ("done", "failed", "idle"):
            break
        time.sleep(args.interval)
    if tty:
        print(file=sys.stderr)
    out(st)
    if st["state"] != "done":
        raise SystemExit(1)


def cmd_scrub(args: argparse.Namespace) -> None:
    c = client(args)
    if args.status:
        out(c.call("GET", "/v1/admin/scrub"))
        return
    c.call("POST", "/v1/admin/scrub")
    if not args.wait:
        print("scrub started; progress: objvault scrub --status", file=sys.stderr)
        return
    while True:
        st = c.call("GET", "/v1/admin/scrub")
        if st["state"] != "running":
            break
        p = st.get("progress", {})
        print(f"\rscrubbed {p.get('chunks', 0)} chunks, {_mb(p.get('bytes', 0))}, "
              f"{p.get('corrupt', 0)} corrupt, {p.get('healed', 0)} repaired", end="", file=sys.stderr, flush=True)
        time.sleep(args.interval)
    print(file=sys.stderr)
    out(st)
    if st.get("damaged"):
        raise SystemExit(1)


def _register_replication(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="action", required=True)
    s = sub.add_parser("status", help="pending entries, bytes, age and errors per target")
    _common(s)
    s.add_argument("--json", action="store_true", help="print the API document")
    p.set_defaults(func=cmd_replication)


def _register_restore(p: argparse.ArgumentParser) -> None:
    _common(p)
    p.add_argument("vault", help="the vault to rebuild (must not exist on this server)")
    p.add_argument("--from", dest="source", required=True, metavar="TARGET",
                   help="name of the replication target to restore from")
    p.add_argument("--interval", type=float, default=0.5, help=argparse.SUPPRESS)
    p.set_defaults(func=cmd_restore)


def _register_scrub(p: argparse.ArgumentParser) -> None:
    _common(p)
    p.add_argument("--wait", action="store_true", help="follow the pass until it ends")
    p.add_argument("--status", action="store_true", help="only show progress, last pass and damaged chunks")
    p.add_argument("--interval", type=float, default=0.5, help=argparse.SUPPRESS)
    p.set_defaults(func=cmd_scrub)


COMMANDS["replication"] = _register_replication
COMMANDS["restore"] = _register_restore
COMMANDS["scrub"] = _register_scrub
