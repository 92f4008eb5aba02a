"""CLI commands: ``replication status``, ``restore VAULT --from TARGET``, ``scrub``,
``checkpoint list|download``.

``replication``, ``restore`` and ``scrub`` talk to the running server with the
admin token (``vault.cli_client.client``). ``checkpoint`` runs offline, like ``fsck``:
it is for a server whose index is lost, so it reads the configuration file and
talks to the target itself. Progress goes to stderr (a bar on a terminal only), results to
stdout: tables for people, the API's document with ``--json``.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import os
import shlex
import shutil
import sys
import time
from pathlib import Path
from typing import Any, Callable, Coroutine

from vault import cli_view as view
from vault.cli_client import Client, add_common_args, client, config_from_args
from vault.config import Config, ConfigError, TargetConfig

from .target import CheckpointStore



def _n(count: int, word: str) -> str:
    return f"{count} {word}{'' if count == 1 else 's'}"


def show_targets(doc: dict) -> None:
    if not doc["targets"]:
        print("no replication targets configured")
        return
    view.table([(t["name"], t["kind"], t["url"], t["pending_entries"], view.size(t["pending_bytes"]),
                 t.get("delayed_entries", 0), view.span(t["oldest_pending_seconds"]), view.when(t["last_success"]),
                 t["last_error"] or "-") for t in doc["targets"]],
               ["TARGET", "KIND", "URL", "PENDING", "BACKLOG", "DELAYED", "OLDEST", "LAST SUCCESS", "LAST ERROR"])


def cmd_replication(args: argparse.Namespace) -> None:
    view.emit(args, client(args).call("GET", "/v1/admin/replication"), show_targets)


def show_restore(st: dict) -> None:
    view.fields([("vault", st["vault"]), ("from", st["from"]), ("state", st["state"]),
                 ("objects", f"{st['objects']} of {st['objects_total'] if st['objects_total'] is not None else '?'}"),
                 ("chunks", st["chunks"]), ("bytes", view.size(st["bytes"])), ("error", st["error"] or "-")])


def cmd_restore(args: argparse.Namespace) -> None:
    c = client(args)
    c.call("POST", "/v1/admin/restore", {"vault": args.vault, "from": args.source})
    with view.progress(f"restore {args.vault}", None, "objects") as bar:
        while True:
            st = c.call("GET", "/v1/admin/restore")
            view.advance(bar, st["objects"], st["objects_total"], chunks=st["chunks"], data=view.size(st["bytes"]))
            if st["state"] in ("done", "failed", "idle"):
                break
            time.sleep(args.interval)
    view.emit(args, st, show_restore)
    if st["state"] != "done":
        raise SystemExit(1)


def show_scrub(st: dict) -> None:
    rows = [("state", st["state"]), ("rate", f"{view.size(st['rate_bytes_per_second'])}/s"),
            ("every", view.span(st["interval_seconds"])), ("healed in all", st["healed_total"])]
    last = st.get("last_pass")
    if last:
        rows += [("last pass", view.when(last["started"])),
                 ("checked", f"{_n(last['chunks'], 'chunk')}, {view.size(last['bytes'])}"),
                 ("corrupt", f"{last['corrupt']} ({last['healed']} repaired, {last['damaged']} damaged)")]
    view.fields(rows)
    if st["damaged"]:
        print()
        view.table([(d["vault"], d["chunk"], view.when(d["since"]), d["reason"], ", ".join(d["objects"]) or "-")
                    for d in st["damaged"]], ["VAULT", "DAMAGED CHUNK", "SINCE", "REASON", "OBJECTS"])


def _stored_bytes(c: Client) -> int:
    """What a scrub pass reads, about: every vault's stored bytes."""
    return sum(v["stored_bytes"] for v in c.call("GET", "/v1/admin/usage")["vaults"])


def cmd_scrub(args: argparse.Namespace) -> None:
    c = client(args)
    if args.status:
        view.emit(args, c.call("GET", "/v1/admin/scrub"), show_scrub)
        return
    c.call("POST", "/v1/admin/scrub")
    if not args.wait:
        print("scrub started; progress: objvault scrub --status", file=sys.stderr)
        return
    with view.progress("scrub", _stored_bytes(c), "B") as bar:
        while True:
            st = c.call("GET", "/v1/admin/scrub")
            if st["state"] != "running":
                break
            p = st.get("progress", {})
            view.advance(bar, p.get("bytes", 0), None, corrupt=p.get("corrupt", 0), repaired=p.get("healed", 0))
            time.sleep(args.interval)
    view.emit(args, st, show_scrub)
    if st.get("damaged"):
        raise SystemExit(1)


# -- checkpoint list | download (offline) ---------------------------------------------


def _fail(msg: str) -> SystemExit:
    return SystemExit(f"objvault checkpoint: {msg}")


def _offline_target(args: argparse.Namespace) -> tuple[Config, TargetConfig, CheckpointStore]:
    """The configuration, the target named ``--target`` and its replica client.

    Built from the configuration file as the server builds them (same URL,
    credentials and key file), without a server: the index may be the very
    thing that is lost. Raises SystemExit with a message on any problem.
    """
    from obstore.exceptions import BaseError as ObstoreError

    from .crypto import KeyFileError
    from .registry import open_target
    from .target import TargetError

    try:
        cfg = config_from_args(args)
    except ConfigError as e:
        raise SystemExit(f"objvault: {e}") from None
    tcfg = next((t for t in cfg.replication_targets if t.name == args.target), None)
    if tcfg is None:
        path = args.config or os.environ.get("OBJVAULT_CONFIG")
        where = f"config file {path!r}" if path else "the configuration (no config file: --config or $OBJVAULT_CONFIG)"
        names = ", ".join(t.name for t in cfg.replication_targets) or "none"
        raise _fail(f"no replication target named {args.target!r} in {where} (targets: {names})")
    if tcfg.kind == "objvault":
        raise _fail(f"target {tcfg.name!r} is an objvault peer ({tcfg.url}): index checkpoints go only "
                    "to bucket and directory targets")
    try:
        replica = open_target(tcfg)
    except (TargetError, KeyFileError, ObstoreError, OSError) as e:
        msg = _brief(str(e))
        raise _fail(msg if msg.startswith("target ") else f"target {tcfg.name!r} ({tcfg.url}): {msg}") from None
    if not isinstance(replica, CheckpointStore):
        raise _fail(f"target {tcfg.name!r} ({tcfg.kind} {tcfg.url}) keeps no index checkpoints")
    return cfg, tcfg, replica


def _run(tcfg: TargetConfig, coro: Coroutine[Any, Any, Any]) -> Any:
    """Run one request sequence against the target; its failures become a message."""
    from obstore.exceptions import BaseError as ObstoreError

    from .crypto import SealError
    from .target import TargetError

    try:
        return asyncio.run(coro)
    except TargetError as e:
        raise _fail(_brief(str(e))) from None
    except (SealError, ObstoreError, OSError) as e:
        raise _fail(f"target {tcfg.name!r} ({tcfg.url}): {_brief(str(e))}") from None


def _brief(msg: str) -> str:
    """An obstore error without the Rust debug dump it appends (dozens of lines after
    the one that says what failed)."""
    return msg.split("\n\nDebug source:", 1)[0].rstrip()


async def _checkpoints(replica: CheckpointStore) -> list[dict]:
    """The target's checkpoints, newest first: ``{"id", "taken", "bytes", "path"}``.

    The marker is checked first (without writing one): a wrong URL or key file
    is named as such rather than showing up as "no checkpoints".
    """
    from .checkpoint import stamp_time

    await replica.check_marker()
    rows: list[dict[str, Any]] = []
    for path, size in (await replica.checkpoint_sizes()).items():
        stamp = path.rsplit("/", 1)[-1].split(".tar.zst", 1)[0]
        taken = stamp_time(stamp)
        # Anything else under checkpoints/ (an operator's file) is not listed.
        if taken is None or replica.checkpoint_path(stamp) != path:
            continue
        rows.append({"id": stamp, "taken": taken.strftime("%Y-%m-%dT%H:%M:%SZ"), "bytes": size, "path": path,
                     "_t": taken})
    rows.sort(key=lambda r: r["_t"], reverse=True)
    for r in rows:
        del r["_t"]
    return rows


def _then_exit(cmd: Callable[[argparse.Namespace], None]) -> Callable[[argparse.Namespace], None]:
    """Run an offline command that used obstore, then leave without interpreter shutdown.

    obstore's runtime threads outlive the command; when the interpreter
    finalizes under them the process could abort (SIGABRT, about one run in
    ten under load) after the command had finished and printed its result.
    Output is flushed and the exit status is the command's, as with
    ``SystemExit``.
    """

    @functools.wraps(cmd)
    def run(args: argparse.Namespace) -> None:
        code = 0
        try:
            cmd(args)
        except SystemExit as e:
            if isinstance(e.code, str):
                print(e.code, file=sys.stderr)
            code = e.code if isinstance(e.code, int) else 0 if e.code is None else 1
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)

    return run


@_then_exit
def cmd_checkpoint_list(args: argparse.Namespace) -> None:
    _, tcfg, replica = _offline_target(args)
    rows = _run(tcfg, _checkpoints(replica))
    if args.json:
        view.out({"target": tcfg.name, "kind": tcfg.kind, "url": tcfg.url, "checkpoints": rows})
        return
    head = f"{tcfg.name} ({tcfg.kind} {tcfg.url})"
    if not rows:
        why = " (checkpoint_interval_seconds = 0: this configuration makes none)" \
            if tcfg.checkpoint_interval_seconds == 0 else ""
        print(f"{head}: no checkpoints{why}")
        return
    print(f"{head}: {_n(len(rows), 'checkpoint')}, newest first")
    for r in rows:
        print(f"  {r['id']}  {r['taken']}  {view.size(r['bytes']):>11}")


def _check_destination(dest: Path, target: str) -> Path | None:
    """Refuse a destination that is a file or a non-empty directory (before anything is
    downloaded, so nothing of the operator's is overwritten). Returns the outermost
    directory the download will create (``dest`` or a missing parent), None if ``dest`` exists."""
    if not dest.exists():
        top = dest
        while not top.parent.exists() and top.parent != top:
            top = top.parent
        return top
    if not dest.is_dir():
        raise _fail(f"{dest} exists and is not a directory (nothing was downloaded from target {target!r})")
    if any(dest.iterdir()):
        raise _fail(f"{dest} is not empty: give a new or empty directory (nothing was downloaded from "
                    f"target {target!r})")
    return None


def _clear_destination(dest: Path, created: Path | None) -> None:
    """Undo a failed download: ``dest`` was empty or absent (``created`` and below), so all
    it holds is ours."""
    if created is not None:
        shutil.rmtree(created, ignore_errors=True)
        return
    for child in dest.iterdir():
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child, ignore_errors=True)
        else:
            child.unlink(missing_ok=True)


@_then_exit
def cmd_checkpoint_download(args: argparse.Namespace) -> None:
    from vault.meta.checkpoint import CheckpointError, read_checkpoint

    from .checkpoint import unpack_tarball

    cfg, tcfg, replica = _offline_target(args)
    dest = Path(args.to).absolute()
    created = _check_destination(dest, tcfg.name)
    rows = _run(tcfg, _checkpoints(replica))
    if not rows:
        raise _fail(f"target {tcfg.name!r} ({tcfg.url}) holds no checkpoints")
    if args.at:
        want = args.at.rsplit("/", 1)[-1].split(".tar.zst", 1)[0]
        pick = next((r for r in rows if r["id"] == want), None)
        if pick is None:
            raise _fail(f"target {tcfg.name!r} ({tcfg.url}) has no checkpoint {args.at!r}; it holds "
                        + ", ".join(r["id"] for r in rows) + " (objvault checkpoint list)")
    else:
        pick = rows[0]

    tarball = dest / f"{pick['id']}.tar.zst"
    try:
        dest.mkdir(parents=True, exist_ok=True)
        print(f"downloading {pick['path']} ({view.size(pick['bytes'])}) from target {tcfg.name!r}",
              file=sys.stderr, flush=True)
        _run(tcfg, replica.get_checkpoint(pick["path"], tarball))
        print(f"unpacking into {dest}", file=sys.stderr, flush=True)
        try:
            index = unpack_tarball(tarball, dest)
        except Exception as e:  # zstd, tar or filesystem: the file is not a checkpoint as written
            raise _fail(f"target {tcfg.name!r}: {pick['path']}: cannot unpack: {type(e).__name__}: {e}") from None
        tarball.unlink()
        if not index.is_dir():
            raise _fail(f"target {tcfg.name!r}: {pick['path']} holds no index/ directory")
        print(f"verifying {index}", file=sys.stderr, flush=True)
        try:
            found = read_checkpoint(index)
        except CheckpointError as e:
            raise _fail(f"target {tcfg.name!r}: {pick['path']}: {e}") from None
    except BaseException:
        _clear_destination(dest, created)
        raise

    vaults = found["vaults"]
    names = ", ".join(vaults[:10]) + (", ..." if len(vaults) > 10 else "")
    n = found["entries"]
    live = cfg.first_data_dir / "index"
    print(f"checkpoint {pick['id']} of target {tcfg.name!r} (taken {pick['taken']}) downloaded and verified:")
    print(f"  {index}: {_n(len(vaults), 'vault')}{' (' + names + ')' if vaults else ''}; "
          f"{_n(n.get('keys', 0), 'key')}, {_n(n.get('objects', 0), 'object')}, {_n(n.get('chunks', 0), 'chunk')}")
    print()
    print("Next, on the server whose index is lost:")
    print("  1. stop the server")
    print("  2. move the index into place (what is left of the old one kept aside):")
    print(f"       mv {shlex.quote(str(live))} {shlex.quote(str(live) + '.lost')}")
    print(f"       mv {shlex.quote(str(index))} {shlex.quote(str(live))}")
    print("  3. objvault fsck --rebuild-index    # chunk locations, refcounts and usage from the segments")
    print("  4. start the server")
    print(f"Keys, vault settings and objects are as of {pick['taken']}; what was written later is not in this index.")


def _register_checkpoint(p: argparse.ArgumentParser) -> None:
    p.description = ("Index checkpoints on a bucket target: list them, or download one to recover a lost "
                     "index. Offline: reads the configuration and talks to the target; no server needed.")
    sub = p.add_subparsers(dest="action", required=True)
    s = sub.add_parser("list", help="the target's checkpoints, newest first, with time and size")
    s.add_argument("--config", help="TOML config file (default: $OBJVAULT_CONFIG)")
    s.add_argument("--target", required=True, metavar="NAME", help="name of a configured bucket target")
    view.add_json_arg(s)
    s.set_defaults(func=cmd_checkpoint_list)
    d = sub.add_parser("download", help="download, unseal, unpack and verify a checkpoint into an empty directory")
    d.add_argument("--config", help="TOML config file (default: $OBJVAULT_CONFIG)")
    d.add_argument("--target", required=True, metavar="NAME", help="name of a configured bucket target")
    which = d.add_mutually_exclusive_group()
    which.add_argument("--at", metavar="ID", help="the checkpoint to download (an ID from objvault checkpoint list)")
    which.add_argument("--latest", action="store_true", help="the newest checkpoint (the default)")
    d.add_argument("--to", required=True, metavar="DIR",
                   help="a new or empty directory; the index lands in DIR/index")
    d.set_defaults(func=cmd_checkpoint_download)


def _register_replication(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="action", required=True)
    s = sub.add_parser("status", help="pending entries, bytes, age and errors per target")
    add_common_args(s)
    view.add_json_arg(s)
    p.set_defaults(func=cmd_replication)


def _register_restore(p: argparse.ArgumentParser) -> None:
    add_common_args(p)
    view.add_json_arg(p)
    p.add_argument("vault", help="the vault to rebuild (must not exist on this server)")
    p.add_argument("--from", dest="source", required=True, metavar="TARGET",
                   help="name of the replication target to restore from")
    p.add_argument("--interval", type=float, default=0.5, help=argparse.SUPPRESS)
    p.set_defaults(func=cmd_restore)


def _register_scrub(p: argparse.ArgumentParser) -> None:
    add_common_args(p)
    view.add_json_arg(p)
    p.add_argument("--wait", action="store_true", help="follow the pass until it ends")
    p.add_argument("--status", action="store_true", help="only show progress, last pass and damaged chunks")
    p.add_argument("--interval", type=float, default=0.5, help=argparse.SUPPRESS)
    p.set_defaults(func=cmd_scrub)


COMMANDS = {"replication": _register_replication, "restore": _register_restore, "scrub": _register_scrub,
            "checkpoint": _register_checkpoint}
"""Added to the ``objvault`` command by :mod:`vault.cli`."""
