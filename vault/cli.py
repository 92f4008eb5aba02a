"""The ``objvault`` command: the server, and admin commands that talk to it."""

from __future__ import annotations

import argparse
import sys

from replication import cli as replication_cli

from . import cli_ops, cli_status
from . import cli_view as view
from .cli_client import add_common_args, client, config_from_args
from .config import ConfigError

COMMANDS = {**cli_ops.COMMANDS, **cli_status.COMMANDS, **replication_cli.COMMANDS}
"""The commands of other modules: ``name`` → adds its arguments to its parser."""


def _vault_fields(args: argparse.Namespace) -> dict:
    body = {}
    if args.quota_bytes is not None:
        body["quota_bytes"] = None if args.quota_bytes < 0 else args.quota_bytes
    if args.append_only is not None:
        body["append_only"] = args.append_only
    if args.retention_days is not None:
        body["retention_days"] = args.retention_days
    return body


def cmd_serve(args: argparse.Namespace) -> None:
    from .app import serve
    try:
        cfg = config_from_args(args)
    except ConfigError as e:
        print(f"objvault: {e}", file=sys.stderr)
        raise SystemExit(2) from None
    serve(cfg)


def _quota_used(v: dict) -> str:
    quota = v["quota_bytes"]
    return f"{100 * v['usage']['stored_bytes'] / quota:.0f} %" if quota else "-"


def _retention(days: int) -> str:
    return f"{days} days" if days else "-"


def show_vault(v: dict) -> None:
    u = v["usage"]
    view.fields([("vault", v["name"]), ("created", view.when(v["created"])),
                 ("stored", view.size(u["stored_bytes"])), ("logical", view.size(u["logical_bytes"])),
                 ("quota", f"{view.size(v['quota_bytes'])} ({_quota_used(v)} used)"),
                 ("objects", u["objects"]), ("chunks", u["chunks"]),
                 ("append-only", view.yes(v["append_only"])), ("retention", _retention(v["retention_days"]))])


def list_vaults(doc: dict) -> None:
    if not doc["vaults"]:
        print("no vaults")
        return
    view.table([(v["name"], view.size(v["usage"]["stored_bytes"]), view.size(v["quota_bytes"]), _quota_used(v),
                 v["usage"]["objects"], view.yes(v["append_only"]), _retention(v["retention_days"]),
                 view.when(v["created"])) for v in doc["vaults"]],
               ["VAULT", "STORED", "QUOTA", "USED", "OBJECTS", "APPEND-ONLY", "RETENTION", "CREATED"])


def show_new_key(k: dict) -> None:
    view.fields([("key", k["id"]), ("role", k["role"]), ("label", k["label"] or "-"),
                 ("secret", k["secret"]), ("S3 access key id", k["s3"]["access_key_id"]),
                 ("S3 secret access key", k["s3"]["secret_access_key"])])
    print("The secrets are shown this once: keep them now.")


def list_keys(doc: dict) -> None:
    if not doc["keys"]:
        print("no keys")
        return
    view.table([(k["id"], k["role"], k["label"] or "-", view.when(k["created"])) for k in doc["keys"]],
               ["KEY", "ROLE", "LABEL", "CREATED"])


def cmd_vault(args: argparse.Namespace) -> None:
    c = client(args)
    if args.action == "create":
        view.emit(args, c.call("POST", "/v1/vaults", {"name": args.name, **_vault_fields(args)}), show_vault)
    elif args.action == "list":
        view.emit(args, c.call("GET", "/v1/vaults"), list_vaults)
    elif args.action == "show":
        view.emit(args, c.call("GET", f"/v1/vaults/{args.name}"), show_vault)
    elif args.action == "update":
        view.emit(args, c.call("PATCH", f"/v1/vaults/{args.name}", _vault_fields(args)), show_vault)
    elif args.action == "delete":
        c.call("DELETE", f"/v1/vaults/{args.name}")
        print(f"vault {args.name} deleted")


def cmd_key(args: argparse.Namespace) -> None:
    c = client(args)
    if args.action == "create":
        body = {"role": args.role}
        if args.label:
            body["label"] = args.label
        view.emit(args, c.call("POST", f"/v1/vaults/{args.vault}/keys", body), show_new_key)
    elif args.action == "list":
        view.emit(args, c.call("GET", f"/v1/vaults/{args.vault}/keys"), list_keys)
    elif args.action == "revoke":
        c.call("DELETE", f"/v1/vaults/{args.vault}/keys/{args.id}")
        print(f"key {args.id} revoked")


def show_bucket(b: dict) -> None:
    view.fields([("bucket", b["name"]), ("vault", b["vault"]), ("created", view.when(b["created"]))])


def list_buckets(doc: dict) -> None:
    if not doc["buckets"]:
        print("no buckets")
        return
    view.table([(b["name"], view.when(b["created"])) for b in doc["buckets"]], ["BUCKET", "CREATED"])


def cmd_bucket(args: argparse.Namespace) -> None:
    c = client(args)
    if args.action == "create":
        view.emit(args, c.call("POST", f"/v1/vaults/{args.vault}/buckets", {"name": args.name}), show_bucket)
    elif args.action == "list":
        view.emit(args, c.call("GET", f"/v1/vaults/{args.vault}/buckets"), list_buckets)
    elif args.action == "delete":
        c.call("DELETE", f"/v1/vaults/{args.vault}/buckets/{args.name}")
        print(f"bucket {args.name} deleted")


def cmd_fsck(args: argparse.Namespace) -> None:
    from .fsck import check
    try:
        cfg = config_from_args(args)
    except ConfigError as e:
        raise SystemExit(f"objvault: {e}") from None

    with view.progress("fsck", None, "steps") as bar:
        def show(step: str, done: int, total: int | None) -> None:
            view.stage(bar, f"fsck {step}", total, step)
            view.advance(bar, done, total)

        try:
            report = check(cfg, args.rebuild_index, progress=show)
        except Exception as e:
            if "lock" in str(e).lower():
                raise SystemExit("objvault fsck: the index is in use: stop the server first") from None
            raise
    view.out(report)
    raise SystemExit(0 if report["ok"] else 1)


def _bool(v: str) -> bool:
    if v.lower() in ("1", "true", "yes", "on"):
        return True
    if v.lower() in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError("expected true or false")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="objvault", description="Storage vault for backup service providers.")
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("serve", help="run the server")
    s.add_argument("--config", help="TOML config file (default: $OBJVAULT_CONFIG)")
    s.add_argument("--listen", help="HOST:PORT (default 127.0.0.1:8470)")
    s.add_argument("--data-dirs", dest="data_dirs", help="comma-separated data directories")
    s.add_argument("--admin-token", dest="admin_token")
    s.add_argument("--log-level", dest="log_level")
    s.set_defaults(func=cmd_serve)

    v = sub.add_parser("vault", help="manage vaults")
    vs = v.add_subparsers(dest="action", required=True)
    for action in ("create", "update", "list", "show", "delete"):
        a = vs.add_parser(action)
        add_common_args(a)
        if action != "delete":  # a delete answers nothing
            view.add_json_arg(a)
        if action != "list":
            a.add_argument("name")
        if action in ("create", "update"):
            a.add_argument("--quota-bytes", type=int, help="quota in bytes (-1: none)")
            a.add_argument("--append-only", type=_bool, metavar="true|false")
            a.add_argument("--retention-days", type=int)
    v.set_defaults(func=cmd_vault)

    k = sub.add_parser("key", help="manage a vault's keys")
    ks = k.add_subparsers(dest="action", required=True)
    a = ks.add_parser("create")
    add_common_args(a)
    view.add_json_arg(a)
    a.add_argument("vault")
    a.add_argument("--role", required=True, choices=["read", "append", "full"])
    a.add_argument("--label")
    a = ks.add_parser("list")
    add_common_args(a)
    view.add_json_arg(a)
    a.add_argument("vault")
    a = ks.add_parser("revoke")
    add_common_args(a)
    a.add_argument("vault")
    a.add_argument("id")
    k.set_defaults(func=cmd_key)

    b = sub.add_parser("bucket", help="manage a vault's S3 buckets")
    bs = b.add_subparsers(dest="action", required=True)
    for action in ("create", "list", "delete"):
        a = bs.add_parser(action)
        add_common_args(a)
        if action != "delete":
            view.add_json_arg(a)
        a.add_argument("vault")
        if action != "list":
            a.add_argument("name")
    b.set_defaults(func=cmd_bucket)

    f = sub.add_parser("fsck", help="check (or rebuild) the index against the segments; server stopped")
    f.add_argument("--config", help="TOML config file (default: $OBJVAULT_CONFIG)")
    f.add_argument("--data-dirs", dest="data_dirs", help="comma-separated data directories")
    f.add_argument("--rebuild-index", action="store_true",
                   help="rewrite chunk entries, refcounts, usage and segments from the segment files")
    f.set_defaults(func=cmd_fsck)

    for name, register in COMMANDS.items():
        register(sub.add_parser(name))
    return p


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    args.func(args)


if __name__ == "__main__":
    main()
