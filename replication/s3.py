"""Bucket targets through obstore: S3 and anything S3-compatible, GCS, Azure Blob.

``url`` picks the store:

* ``s3://bucket/prefix`` — AWS or any S3-compatible endpoint (``endpoint``;
  path-style requests whenever an endpoint is given, plain HTTP allowed when
  the endpoint says ``http://``); ``access_key_id``/``secret_access_key``, else
  obstore's usual AWS environment/instance credentials;
* ``gs://bucket/prefix`` — Google Cloud Storage; ``secret_access_key`` may hold
  a service-account key (JSON), else application default credentials;
* ``az://container/prefix`` (or ``azure://``, or
  ``abfss://container@account.dfs.core.windows.net/prefix``) — Azure Blob;
  ``access_key_id`` is the storage account name, ``secret_access_key`` the
  account key; ``endpoint`` for Azurite or sovereign clouds.

The HTTP client has generous timeouts (a 128 MiB chunk over a slow link) and
few retries of its own: :mod:`replication.layout` retries each request, and the
outbox worker retries forever behind that.
"""

from __future__ import annotations

import datetime as dt
from typing import Any
from urllib.parse import urlparse

from obstore.store import AzureStore, GCSStore, S3Store

from vault.config import TargetConfig

from .target import TargetError

CLIENT_OPTIONS = {"connect_timeout": "10s", "timeout": "300s", "pool_idle_timeout": "60s"}
RETRY = {"max_retries": 2, "retry_timeout": dt.timedelta(seconds=120),
         "backoff": {"init_backoff": dt.timedelta(milliseconds=100), "max_backoff": dt.timedelta(seconds=5),
                     "base": 2}}


def split_url(url: str) -> tuple[str, str, str, str]:
    """``(scheme, bucket, prefix, account)`` of ``s3://bucket/prefix``, ``gs://bucket/prefix``,
    ``az://container/prefix`` (also ``azure://``) or ``abfs[s]://container@account.dfs.core.windows.net/prefix``
    (scheme normalised to s3, gs or az; account only from abfs URLs)."""
    u = urlparse(url)
    scheme = {"s3": "s3", "s3a": "s3", "gs": "gs", "az": "az", "azure": "az", "abfs": "az", "abfss": "az"}.get(u.scheme)
    if scheme is None or not u.netloc:
        raise TargetError(f"bucket URL {url!r}: expected s3://bucket/prefix, gs://bucket/prefix or "
                          "az://container/prefix")
    bucket, account = u.netloc, ""
    if u.scheme in ("abfs", "abfss"):
        bucket, _, host = u.netloc.partition("@")
        account = host.split(".", 1)[0]
    return scheme, bucket, u.path.strip("/"), account


def object_store(cfg: TargetConfig) -> Any:
    scheme, bucket, prefix, account = split_url(cfg.url)
    opts: dict[str, Any] = dict(CLIENT_OPTIONS)
    if cfg.endpoint.startswith("http://"):
        opts["allow_http"] = True
    common: dict[str, Any] = {"prefix": prefix or None, "client_options": opts, "retry_config": RETRY}
    if scheme == "s3":
        kw: dict[str, Any] = {"region": cfg.region or "us-east-1"}
        if cfg.endpoint:
            kw["endpoint"] = cfg.endpoint
            kw["virtual_hosted_style_request"] = False
        if not cfg.endpoint.startswith("http://"):
            # Over TLS the payload is protected in transit: skip hashing every
            # body for the signature (a second SHA-256 per chunk). Plain HTTP
            # keeps the signed payload as its only integrity check.
            kw["unsigned_payload"] = True
        if cfg.access_key_id or cfg.secret_access_key:
            kw["access_key_id"] = cfg.access_key_id
            kw["secret_access_key"] = cfg.secret_access_key
            # Explicit keys: a session token inherited from the environment
            # would be sent along with them and make every request fail.
            kw["session_token"] = ""
        return S3Store(bucket, **common, **kw)
    if scheme == "gs":
        kw = {}
        if cfg.secret_access_key:
            kw["service_account_key"] = cfg.secret_access_key
        if cfg.endpoint:
            kw["base_url"] = cfg.endpoint
        return GCSStore(bucket, **common, **kw)
    kw = {}
    if cfg.access_key_id or account:
        kw["account_name"] = cfg.access_key_id or account
    if cfg.secret_access_key:
        kw["account_key"] = cfg.secret_access_key
    if cfg.endpoint:
        kw["endpoint"] = cfg.endpoint
    return AzureStore(bucket, **common, **kw)
