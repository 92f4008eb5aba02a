"""Comet Server's "Custom Remote Bucket" (a Storage Template of type ``custom``).

``POST /v1/integrations/comet/remote-bucket`` on the main listener: Comet
calls it when a customer gets a new Storage Vault, with the static headers and
body the operator set in the template, and adds the ``DestinationLocation`` it
gets back to the customer's profile. Each call makes a new vault (``[comet]
vault_prefix`` and a unique suffix, quota ``[comet] quota_bytes``), a ``full``
key and a bucket of the vault's name, with Object Lock enabled when
``[comet] object_lock_days`` is above 0 (Comet then locks every object in
COMPLIANCE mode itself: the bucket gets no default retention).

Authentication is ``Authorization: Bearer <[comet] secret>``, compared in
constant time; a wrong or missing secret is 401 before anything is read or
made. Without a configured secret the route does not exist (404). The
request body, if any, may be in any of Comet's encodings (JSON, urlencoded,
multipart form); it is read, at most :data:`MAX_BODY_BYTES`, and not used.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass

from aiohttp import web

from .. import errors as E
from ..config import Config
from ..http import SERVICES, read_json_bytes
from ..services.auth import secret_hash
from ..services.provisioning import provision

ROUTE = "/v1/integrations/comet/remote-bucket"
MAX_BODY_BYTES = 64 << 10
DESTINATION_CUSTOM_REMOTE_BUCKET = 1000
LOCK_ON, LOCK_OFF = 1, 2  # Comet's S3ObjectLockMode
KEY_LABEL = "comet"


@dataclass(frozen=True)
class Settings:
    """``[comet]`` as the route uses it; the secret only as its hash."""

    secret_hash: bytes
    vault_prefix: str
    quota_bytes: int | None
    object_lock_days: int
    server: str
    tls: bool
    region: str

    @classmethod
    def of(cls, cfg: Config) -> "Settings":
        comet = cfg.comet
        scheme, sep, rest = comet.public_endpoint.partition("://")
        server, tls = (rest, scheme == "https") if sep else (comet.public_endpoint, bool(cfg.tls_cert_file))
        return cls(secret_hash(comet.secret), comet.vault_prefix, comet.quota_bytes or None,
                   comet.object_lock_days, server, tls, cfg.s3.region)


SETTINGS: web.AppKey[Settings] = web.AppKey("comet", Settings)


def add_routes(app: web.Application, cfg: Config) -> None:
    """The route, only when a secret is configured."""
    if not cfg.comet.secret:
        return
    app[SETTINGS] = Settings.of(cfg)
    app.router.add_post(ROUTE, remote_bucket, expect_handler=_expect)


def _authorize(request: web.Request) -> Settings:
    settings = request.app[SETTINGS]
    scheme, _, value = request.headers.get("Authorization", "").partition(" ")
    presented = secret_hash(value.strip()) if scheme.lower() == "bearer" else b""
    if not hmac.compare_digest(presented, settings.secret_hash):
        raise E.Unauthorized("the Comet integration needs Authorization: Bearer <[comet] secret>")
    return settings


async def _expect(request: web.Request) -> None:
    """``100 Continue`` only with the right secret; otherwise the handler
    refuses before reading the body."""
    if request.version >= (1, 1) and request.headers.get("Expect", "").lower() == "100-continue":
        try:
            _authorize(request)
        except E.Unauthorized:
            return None
        await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        request.writer.output_size = 0  # not part of the answer
    return None


async def remote_bucket(request: web.Request) -> web.Response:
    settings = _authorize(request)
    await read_json_bytes(request, MAX_BODY_BYTES)  # Comet's static body: bounded, then unused
    svc = request.app[SERVICES]
    locked = settings.object_lock_days > 0
    made = await provision(svc.vaults, svc.auth, svc.buckets, settings.vault_prefix, settings.quota_bytes,
                           locked, KEY_LABEL)
    return web.json_response({
        "DestinationType": DESTINATION_CUSTOM_REMOTE_BUCKET,
        "S3Server": settings.server,
        "S3UsesTLS": settings.tls,
        "S3AccessKey": made.key.s3.access_key_id,
        "S3SecretKey": made.key.s3.secret_access_key,
        "S3BucketName": made.bucket.name,
        "S3Subdir": "",
        "S3CustomRegion": settings.region,
        "S3UsesV2Signing": False,
        "S3ObjectLockMode": LOCK_ON if locked else LOCK_OFF,
        "S3ObjectLockDays": settings.object_lock_days if locked else 0,
        "S3RemoveDeleted": locked,
    })
