"""What the ``objvault`` commands that talk to a running server share: their
configuration and a minimal admin client of the native API (stdlib only).
Used by :mod:`vault.cli`, :mod:`vault.cli_ops` and
:mod:`replication.cli`."""

from __future__ import annotations

import argparse
import json
import urllib.error
import urllib.request
from typing import Any, Collection

from .config import Config, ConfigError, load_config


def config_from_args(args: argparse.Namespace) -> Config:
    """The configuration of a command: its file (``--config``) and flags over the defaults and environment."""
    overrides = {}
    for key in ("listen", "url", "data_dirs", "admin_token", "log_level"):
        val = getattr(args, key, None)
        if val is not None:
            overrides[key] = val
    return load_config(getattr(args, "config", None), overrides=overrides)


class Client:
    """Minimal admin client for the native API (stdlib only)."""

    def __init__(self, url: str, token: str) -> None:
        self.url = url.rstrip("/")
        self.token = token

    def call(self, method: str, path: str, body: Any = None, raw: bool = False,
             tolerate: Collection[int] = ()) -> Any:
        """The answer's JSON (``raw``: its bytes), also of an error status in ``tolerate``;
        any other failure exits with the problem's code and detail."""
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
            if e.code in tolerate:
                return payload if raw else json.loads(payload)
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
    """The client of the server ``--url``, ``OBJVAULT_URL`` or the config's ``url`` names
    (else the one ``listen`` names here), with the admin token of the configuration or
    its token file."""
    try:
        cfg = config_from_args(args)
    except ConfigError as e:
        raise SystemExit(f"objvault: {e}") from None
    token = cfg.admin_token
    if not token:
        try:
            token = cfg.admin_token_path.read_text().strip()
        except OSError:
            raise SystemExit(f"objvault: no admin token: set OBJVAULT_ADMIN_TOKEN or create "
                             f"{cfg.admin_token_path}") from None
    return Client(cfg.url or _listen_url(cfg), token)


def _listen_url(cfg: Config) -> str:
    host = cfg.host
    if host in ("0.0.0.0", "::", ""):
        host = "127.0.0.1"
    scheme = "https" if cfg.tls_cert_file else "http"
    return f"{scheme}://{'[' + host + ']' if ':' in host else host}:{cfg.port}"


def add_common_args(p: argparse.ArgumentParser) -> None:
    """``--config`` and ``--url``, which every command that talks to a server takes."""
    p.add_argument("--config", help="TOML config file (default: $OBJVAULT_CONFIG)")
    p.add_argument("--url", help="server URL (default: $OBJVAULT_URL, the config's url, else its listen)")
