"""The ``objvault`` command: the server, and admin commands that talk to it."""

from __future__ import annotations

import argparse
import json
import sys
import urllib.error
import urllib.request
from typing import Any, Callable

from .config import ConfigError, load_config

COMMANDS: dict[str, Callable[[argparse.ArgumentParser], None]] = {}


def _config(args: argparse.Namespace):
    overrides = {}
    for key in ("listen", "data_dirs", "admin_token", "log_level"):
        val = getattr(args, key, None)
        if val is not None:
            overrides[key] = val
    return load_config(getattr(args, "config", None), overrides=overrides)


class Client:
    """Minimal admin client for the native API (stdlib only)."""

    def __init__(self, url: str, token: str) -> None:
        self.url = url.rstrip("/")
        self.token = token

    def call(self, method: str, path: str, body: Any = None, raw: bool = False) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.url + path, data=data, method=method)
        req.add_header("Authorization", f"Bearer {self.token}")
        if data is not None:
            req.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(req, timeout=600) as resp:
                payload = resp.read()
        except urllib.error.HTTPError as e:
            payload = e.read()
            try:
                doc = json.loads(payload)
                msg = f"{doc.get('status')} {doc.get('code')}: {doc.get('detail')}"
            except ValueError:
                msg = f"{e.code} {payload[:200]!r}"
            raise SystemExit(f"objvault: {method} {path}: {msg}") from None
        except urllib.error.URLError as e:
            raise SystemExit(f"objvault: cannot reach {self.url}: {e.reason}") from None
        if raw:
            return payload
        return json.loads(payload) if payload else None


def client(args: argparse.Namespace) -> Client:
    try:
        cfg = _config(args)
    except ConfigError as e:
        raise SystemExit(f"objvault: {e}") from None
    token = cfg.admin_token
    if not token:
        try:
            token = cfg.admin_token_path.read_text().strip()
        except OSError:
            raise SystemExit(f"objvault: no admin token: set OBJVAULT_ADMIN_TOKEN or create "
                             f"{cfg.admin_token_path}") from None
    host = cfg.host
    if host in ("0.0.0.0", "::", ""):
        host = "127.0.0.1"
    scheme = "https" if cfg.tls_cert_file else "http"
    url = args.url or f"{scheme}://{'[' + host + ']' if ':' in host else host}:{cfg.port}"
    return Client(url, token)


def out(obj: Any) -> None:
    print(json.dumps(obj, indent=2))


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
        cfg = _config(args)
    except ConfigError as e:
        print(f"objvault: {e}", file=sys.stderr)
        raise SystemExit(2) from None
    serve(cfg)


def cmd_vault(args: argparse.Namespace) -> None:
    c = client(args)
    if args.action == "create":
        out(c.call("POST", "/v1/vaults", {"name": args.name, **_vault_fields(args)}))
    elif args.action == "list":
        out(c.call("GET", "/v1/vaults"))
    elif args.action == "show":
        out(c.call("GET", f"/v1/vaults/{args.name}"))
    elif args.action == "update":
        out(c.call("PATCH", f"/v1/vaults/{args.name}", _vault_fields(args)))
    elif args.action == "delete":
        c.call("DELETE", f"/v1/vaults/{args.name}")
        print(f"vault {args.name} deleted")


def cmd_key(args: argparse.Namespace) -> None:
    c = client(args)
    if args.action == "create":
        body = {"role": args.role}
        if args.label:
            body["label"] = args.label
        out(c.call("POST", f"/v1/vaults/{args.vault}/keys", body))
    elif args.action == "list":
        out(c.call("GET", f"/v1/vaults/{args.vault}/keys"))
    elif args.action == "revoke":
        c.call("DELETE", f"/v1/vaults/{args.vault}/keys/{args.id}")
        print(f"key {args.id} revoked")


def cmd_bucket(args: argparse.Namespace) -> None:
    c = client(args)
    if args.action == "create":
        out(c.call("POST", f"/v1/vaults/{args.vault}/buckets", {"name": args.name}))
    elif args.action == "list":
        out(c.call("GET", f"/v1/vaults/{args.vault}/buckets"))
    elif args.action == "delete":
        c.call("DELETE", f"/v1/vaults/{args.vault}/buckets/{args.name}")
        print(f"bucket {args.name} deleted")


def cmd_fsck(args: argparse.Namespace) -> None:
    from .fsck import main as fsck_main
    try:
        cfg = _config(args)
    except ConfigError as e:
        raise SystemExit(f"objvault: {e}") from None
    try:
        code = fsck_main(cfg, args.rebuild_index)
    except Exception as e:
        if "lock" in str(e).lower():
            raise SystemExit("objvault fsck: the index is in use: stop the server first") from None
        raise
    raise SystemExit(code)


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", help="TOML config file (default: $OBJVAULT_CONFIG)")
    p.add_argument("--url", help="server URL (default: from the config's listen)")


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
    for action in ("create", "update"):
        a = vs.add_parser(action)
        _common(a)
        a.add_argument("name")
        a.add_argument("--quota-bytes", type=int, help="quota in bytes (-1: none)")
        a.add_argument("--append-only", type=_bool, metavar="true|false")
        a.add_argument("--retention-days", type=int)
    for action in ("list",):
        _common(vs.add_parser(action))
    for action in ("show", "delete"):
        a = vs.add_parser(action)
        _common(a)
        a.add_argument("name")
    v.set_defaults(func=cmd_vault)

    k = sub.add_parser("key", help="manage a vault's keys")
    ks = k.add_subparsers(dest="action", required=True)
    a = ks.add_parser("create")
    _common(a)
    a.add_argument("vault")
    a.add_argument("--role", required=True, choices=["read", "append", "full"])
    a.add_argument("--label")
    a = ks.add_parser("list")
    _common(a)
    a.add_argument("vault")
    a = ks.add_parser("revoke")
    _common(a)
    a.add_argument("vault")
    a.add_argument("id")
    k.set_defaults(func=cmd_key)

    b = sub.add_parser("bucket", help="manage a vault's S3 buckets")
    bs = b.add_subparsers(dest="action", required=True)
    for action in ("create", "list", "delete"):
        a = bs.add_parser(action)
        _common(a)
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
    _load_plugins()
    args = build_parser().parse_args(argv)
    args.func(args)


def _load_plugins() -> None:
    """Commands added by other modules (gc, usage, scrub, replication, restore, fsck)."""
    import importlib
    for mod in ("vault.cli_ops", "replication.cli"):
        try:
            importlib.import_module(mod)
        except ModuleNotFoundError as e:
            if e.name != mod:
                raise


if __name__ == "__main__":
    main()
