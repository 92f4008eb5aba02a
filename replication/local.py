"""A directory target (``kind = "local"``, ``url = "file:///path"``): the bucket
layout of :mod:`replication.layout` on a local or mounted filesystem (NFS, a
USB disk), through obstore's LocalStore (writes are atomic renames)."""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

from obstore.store import LocalStore

from vault.config import TargetConfig

from .target import TargetError


def local_path(url: str) -> Path:
    u = urlparse(url)
    if u.scheme == "file":
        if u.netloc not in ("", "localhost"):
            raise TargetError(f"directory URL {url!r}: only file:///absolute/path is supported")
        return Path(unquote(u.path))
    if u.scheme == "" and url.startswith("/"):
        return Path(url)
    raise TargetError(f"directory URL {url!r}: expected file:///absolute/path")


def local_store(cfg: TargetConfig) -> Any:
    path = local_path(cfg.url)
    path.mkdir(parents=True, exist_ok=True)
    return LocalStore(path, mkdir=True, automatic_cleanup=True)
