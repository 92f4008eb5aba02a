"""One typed configuration, built once at start-up.

Order of precedence (later wins): embedded defaults → TOML file
(``--config`` or ``OBJVAULT_CONFIG``) → ``OBJVAULT_<KEY>`` environment
variables → command-line flags. Nothing else in the project reads
``os.environ`` for settings.

Every error raised here is a :class:`ConfigError` whose message names the
offending key, so a bad deployment fails at start with a useful line.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import os
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, TypeVar

from .events import ALERT_KINDS

ENV_PREFIX = "OBJVAULT_"
_T = TypeVar("_T")


class ConfigError(ValueError):
    """The configuration is invalid; the message names the key."""


@dataclass
class GCConfig:
    grace_seconds: int = 86400
    interval_seconds: int = 3600
    # Compaction rewrites a sealed segment once its live bytes fall below
    # this fraction of its size.
    compact_threshold: float = 0.5
    compact_rate_bytes_per_second: int = 200 * 1024 * 1024


@dataclass
class ScrubConfig:
    interval_seconds: int = 604800
    rate_bytes_per_second: int = 52428800


@dataclass
class S3Config:
    # The S3 listener (HOST:PORT); empty turns it off.
    listen: str = "127.0.0.1:8471"
    region: str = "us-east-1"
    # Virtual-hosted-style requests: <bucket>.<domain>; path style always works.
    domain: str = ""
    # The master key that seals S3 secrets; empty: <first data dir>/s3-master.key,
    # generated on first start.
    master_key_file: str = ""
    # Multipart uploads neither completed nor aborted this long are aborted.
    upload_expiry_seconds: int = 7 * 86400
    upload_expiry_interval_seconds: int = 3600
    # S3 bodies are cut into chunks of this size (the last one shorter);
    # docs/s3.md has the measurement behind the default.
    chunk_bytes: int = 8 << 20
    # Bucket lifecycle rules are applied this often (0: only when asked).
    lifecycle_interval_seconds: int = 3600
    # How long a lifecycle "day" is to the worker: 86400 but in tests, where
    # rules of a few days run out in seconds (expiry is then not rounded to
    # midnight). x-amz-expiration always states S3 days.
    lifecycle_day_seconds: int = 86400


@dataclass
class CometConfig:
    # The shared secret Comet Server presents as "Authorization: Bearer <secret>"
    # (or secret_file); empty: POST /v1/integrations/comet/remote-bucket answers 404.
    secret: str = ""
    # Each call creates a vault named this and a unique suffix, with a bucket of the same name.
    vault_prefix: str = "comet-"
    # The new vault's quota; 0: none.
    quota_bytes: int = 0
    # Above 0: the bucket has Object Lock, and Comet locks every object this many days.
    object_lock_days: int = 0
    # Where clients reach the S3 listener: HOST[:PORT], or https://HOST[:PORT]
    # (http://...) to say whether it is TLS; a bare HOST[:PORT] is TLS when the
    # server itself serves TLS. Required with a secret.
    public_endpoint: str = ""


@dataclass
class TargetConfig:
    name: str = ""
    kind: str = "s3"
    url: str = ""
    endpoint: str = ""
    region: str = "us-east-1"
    access_key_id: str = ""
    secret_access_key: str = ""
    token: str = ""
    encryption_key_file: str = ""
    delete_delay_seconds: int = 604800
    concurrency: int = 8
    vaults: list[str] = field(default_factory=lambda: ["*"])
    checkpoint_interval_seconds: int = 86400

    def matches(self, vault: str) -> bool:
        return any(fnmatch.fnmatchcase(vault, pat) for pat in self.vaults)


@dataclass
class WebhookConfig:
    url: str = ""
    # Alert kinds this webhook wants ("*": every kind).
    events: list[str] = field(default_factory=lambda: ["*"])
    # The HMAC-SHA256 key that signs every body (or secret_file).
    secret: str = ""

    def wants(self, kind: str) -> bool:
        return "*" in self.events or kind in self.events


@dataclass
class AlertsConfig:
    # A vault's quota alerts open at quota_warn_percent and at 100 % of its quota.
    quota_warn_percent: float = 90.0
    # A vault that got no new object for this many days is stale.
    stale_after_days: float = 7.0
    # The replication backlog alert opens once a target's oldest pending entry is this old.
    replication_backlog_seconds: float = 3600.0
    # A data directory with less free space than this raises an alert; 0: off.
    data_dir_min_free_bytes: int = 10 << 30
    # A lock-weakened alert stays open this long (the operator's notice), then resolves.
    lock_weakened_hold_seconds: float = 86400.0
    # How often stale vaults, backlog, targets and data directories are evaluated.
    evaluate_interval_seconds: float = 60.0
    # One webhook request may take this long before it counts as failed.
    delivery_timeout_seconds: float = 10.0
    webhooks: list[WebhookConfig] = field(default_factory=list)


@dataclass
class Config:
    listen: str = "127.0.0.1:8470"
    # The server the admin commands of ``objvault`` talk to (http[s]://HOST:PORT);
    # empty: the one ``listen`` names on this machine.
    url: str = ""
    data_dirs: list[str] = field(default_factory=lambda: ["./objvault-data"])
    admin_token: str = ""
    max_chunk_bytes: int = 134217728
    tls_cert_file: str = ""
    tls_key_file: str = ""
    log_level: str = "info"
    # Seal an active segment once it reaches this size.
    segment_bytes: int = 1 << 30
    # Chunks larger than this are streamed to a segment of their own instead
    # of being buffered in memory and appended to the shared active segment.
    stream_threshold_bytes: int = 8 << 20
    # Per-vault series on /metrics reach only a scraper that presents this
    # token (or the admin token) as a Bearer, or that scrapes metrics_listen.
    metrics_token: str = ""
    # A second listener (HOST:PORT) that serves /metrics in full, without a
    # token; empty: none.
    metrics_listen: str = ""
    # Slow clients: the request head must arrive within header_timeout_seconds,
    # a body must not stall longer than body_idle_timeout_seconds, and an idle
    # kept-alive connection is closed after keepalive_timeout_seconds.
    header_timeout_seconds: float = 15.0
    body_idle_timeout_seconds: float = 60.0
    keepalive_timeout_seconds: float = 30.0
    # Connections served at once; a connection beyond it gets 503 with
    # Retry-After and is closed before anything of it is read.
    max_connections: int = 1024
    # Request bodies held in memory at once (buffered chunks, batches, JSON
    # and what parsing JSON costs); beyond it a request waits up to
    # body_memory_wait_seconds, then gets 503 with Retry-After.
    body_memory_bytes: int = 128 << 20
    body_memory_wait_seconds: float = 10.0
    gc: GCConfig = field(default_factory=GCConfig)
    scrub: ScrubConfig = field(default_factory=ScrubConfig)
    s3: S3Config = field(default_factory=S3Config)
    comet: CometConfig = field(default_factory=CometConfig)
    replication_targets: list[TargetConfig] = field(default_factory=list)
    alerts: AlertsConfig = field(default_factory=AlertsConfig)

    @property
    def host(self) -> str:
        return self.listen.rsplit(":", 1)[0].strip("[]")

    @property
    def port(self) -> int:
        return int(self.listen.rsplit(":", 1)[1])

    @property
    def first_data_dir(self) -> Path:
        return Path(self.data_dirs[0])

    @property
    def admin_token_path(self) -> Path:
        return self.first_data_dir / "admin.token"

    @property
    def s3_master_key_path(self) -> Path:
        return Path(self.s3.master_key_file) if self.s3.master_key_file else self.first_data_dir / "s3-master.key"


# Keys that may be given as "<key>_file": the secret is read from that file.
_SECRET_KEYS = {"admin_token", "metrics_token", "access_key_id", "secret_access_key", "token", "secret"}
# A webhook's URL may hold a token (chat services put one in the path): a secret too.
_WEBHOOK_SECRET_KEYS = _SECRET_KEYS | {"url"}
# OBJVAULT_ALERTS_WEBHOOKS_<N>_<KEY>: key of webhook N (from 0), as alerts.webhooks[N].<key>.
WEBHOOK_ENV_PREFIX = ENV_PREFIX + "ALERTS_WEBHOOKS_"


def _coerce(key: str, value: Any, typ: Any) -> Any:
    """Convert ``value`` (from TOML or a string from env/flags) to ``typ``."""
    typ = {"int": int, "float": float, "str": str, "bool": bool, "list[str]": list}.get(typ, typ)
    try:
        if typ is bool:
            if isinstance(value, bool):
                return value
            if isinstance(value, str) and value.lower() in ("1", "true", "yes", "on"):
                return True
            if isinstance(value, str) and value.lower() in ("0", "false", "no", "off", ""):
                return False
            raise ValueError(value)
        if typ is int:
            if isinstance(value, bool):
                raise ValueError(value)
            if isinstance(value, str):
                value = value.strip().replace("_", "")
            if isinstance(value, float) and not value.is_integer():
                raise ValueError(value)
            return int(value)
        if typ is float:
            if isinstance(value, bool):
                raise ValueError(value)
            return float(value)
        if typ is list:
            if isinstance(value, str):
                return [v.strip() for v in value.split(",") if v.strip()]
            if isinstance(value, list) and all(isinstance(v, str) for v in value):
                return list(value)
            raise ValueError(value)
        if typ is str:
            if not isinstance(value, str):
                raise ValueError(value)
            return value
    except (ValueError, TypeError):
        raise ConfigError(f"config key {key!r}: cannot use {value!r} (expected {typ.__name__})") from None
    raise ConfigError(f"config key {key!r}: unsupported type")


_SECTIONS = ("gc", "scrub", "s3", "comet", "replication_targets", "alerts", "webhooks")


def _apply(obj: Any, data: Mapping[str, Any], prefix: str, base: Path | None = None) -> None:
    """Set fields of ``obj`` from ``data``; ``<secret>_file`` keys read the file
    (relative paths from ``base``, the config file's folder)."""
    fields = {f.name: f for f in dataclasses.fields(obj)}
    for raw_key, value in data.items():
        key = raw_key
        full = f"{prefix}{raw_key}"
        secret_keys = _WEBHOOK_SECRET_KEYS if isinstance(obj, WebhookConfig) else _SECRET_KEYS
        if key.endswith("_file") and key[: -len("_file")] in secret_keys:
            key = key[: -len("_file")]
            if key not in fields:
                raise ConfigError(f"unknown config key {full!r}")
            if not isinstance(value, str):
                raise ConfigError(f"config key {full!r}: expected a file path")
            if not value:
                continue
            path = Path(value)
            if base is not None and not path.is_absolute():
                path = base / path
            try:
                value = path.read_text().strip()
            except OSError as e:
                raise ConfigError(f"config key {full!r}: cannot read {str(path)!r}: {e.strerror}") from None
        if key not in fields or key in _SECTIONS:
            raise ConfigError(f"unknown config key {full!r}")
        setattr(obj, key, _coerce(full, value, fields[key].type))


def _check_address(key: str, value: str) -> None:
    try:
        host, port = value.rsplit(":", 1)
        if not host or not (1 <= int(port) <= 65535):
            raise ValueError
    except ValueError:
        raise ConfigError(f"config key {key!r}: expected HOST:PORT, got {value!r}") from None


def _validate(cfg: Config) -> None:
    _check_address("listen", cfg.listen)
    if cfg.url and not cfg.url.startswith(("http://", "https://")):
        raise ConfigError(f"config key 'url': expected http://HOST:PORT or https://HOST:PORT, got {cfg.url!r}")
    if not cfg.data_dirs:
        raise ConfigError("config key 'data_dirs': at least one data directory is required")
    if len(set(os.path.abspath(d) for d in cfg.data_dirs)) != len(cfg.data_dirs):
        raise ConfigError("config key 'data_dirs': a directory is listed twice")
    if not (1 <= cfg.max_chunk_bytes <= 1 << 32):
        raise ConfigError("config key 'max_chunk_bytes': must be between 1 and 4 GiB")
    if bool(cfg.tls_cert_file) != bool(cfg.tls_key_file):
        raise ConfigError("config keys 'tls_cert_file' and 'tls_key_file' must be set together")
    if cfg.log_level.lower() not in ("debug", "info", "warning", "error"):
        raise ConfigError("config key 'log_level': one of debug, info, warning, error")
    if cfg.segment_bytes < 1 << 20:
        raise ConfigError("config key 'segment_bytes': at least 1 MiB")
    if cfg.stream_threshold_bytes < 64 << 10:
        raise ConfigError("config key 'stream_threshold_bytes': at least 65536")
    if cfg.s3.listen:
        _check_address("s3.listen", cfg.s3.listen)
        if cfg.s3.listen in (cfg.listen, cfg.metrics_listen):
            raise ConfigError("config key 's3.listen': must differ from 'listen' and 'metrics_listen'")
    if not cfg.s3.region:
        raise ConfigError("config key 's3.region': must not be empty")
    if not 1 << 20 <= cfg.s3.chunk_bytes <= 64 << 20:
        raise ConfigError("config key 's3.chunk_bytes': between 1 MiB and 64 MiB")
    if cfg.s3.upload_expiry_seconds < 3600 or cfg.s3.upload_expiry_interval_seconds < 0:
        raise ConfigError("config keys 's3.upload_expiry_seconds' (at least 3600) and "
                          "'s3.upload_expiry_interval_seconds' (not negative)")
    if cfg.s3.lifecycle_interval_seconds < 0 or cfg.s3.lifecycle_day_seconds < 1:
        raise ConfigError("config keys 's3.lifecycle_interval_seconds' (not negative) and "
                          "'s3.lifecycle_day_seconds' (at least 1)")
    if cfg.metrics_listen:
        _check_address("metrics_listen", cfg.metrics_listen)
        if cfg.metrics_listen == cfg.listen:
            raise ConfigError("config key 'metrics_listen': must differ from 'listen'")
    for name in ("header_timeout_seconds", "body_idle_timeout_seconds", "keepalive_timeout_seconds",
                 "body_memory_wait_seconds"):
        if not 0 < getattr(cfg, name) <= 86400:
            raise ConfigError(f"config key {name!r}: between 0 and 86400 seconds (0 excluded)")
    if cfg.max_connections < 1:
        raise ConfigError("config key 'max_connections': at least 1")
    if cfg.body_memory_bytes < 1 << 20:
        raise ConfigError("config key 'body_memory_bytes': at least 1 MiB")
    if cfg.gc.compact_rate_bytes_per_second <= 0:
        raise ConfigError("config key 'gc.compact_rate_bytes_per_second': must be positive")
    for name, val in (("gc.grace_seconds", cfg.gc.grace_seconds), ("gc.interval_seconds", cfg.gc.interval_seconds),
                      ("scrub.interval_seconds", cfg.scrub.interval_seconds),
                      ("scrub.rate_bytes_per_second", cfg.scrub.rate_bytes_per_second)):
        if val < 0:
            raise ConfigError(f"config key {name!r}: must not be negative")
    if not (0.0 <= cfg.gc.compact_threshold <= 1.0):
        raise ConfigError("config key 'gc.compact_threshold': between 0 and 1")
    _validate_alerts(cfg.alerts)
    _validate_comet(cfg.comet)
    seen = set()
    for i, t in enumerate(cfg.replication_targets):
        where = f"replication.targets[{i}]"
        if not t.name:
            raise ConfigError(f"config key '{where}.name' is required")
        if t.name in seen:
            raise ConfigError(f"config key '{where}.name': duplicate target {t.name!r}")
        seen.add(t.name)
        if t.kind not in ("s3", "objvault", "local"):
            raise ConfigError(f"config key '{where}.kind': one of s3, objvault, local")
        if not t.url:
            raise ConfigError(f"config key '{where}.url' is required")
        schemes = {"s3": ("s3://", "gs://", "az://", "azure://", "abfs://"), "objvault": ("http://", "https://"),
                   "local": ("file://", "/")}[t.kind]
        if not t.url.startswith(schemes):
            raise ConfigError(f"config key '{where}.url': kind {t.kind!r} expects a URL starting with "
                              f"{' or '.join(schemes)}")
        if t.checkpoint_interval_seconds < 0:
            raise ConfigError(f"config key '{where}.checkpoint_interval_seconds': must not be negative")
        if t.concurrency < 1:
            raise ConfigError(f"config key '{where}.concurrency': at least 1")
        if t.delete_delay_seconds < 0:
            raise ConfigError(f"config key '{where}.delete_delay_seconds': must not be negative")


# A vault prefix that, with the 12 hex characters of a suffix, is both a vault
# name and a bucket name.
_COMET_PREFIX_RE = re.compile(r"[a-z0-9][a-z0-9-]{0,50}")
MIN_COMET_SECRET_CHARS = 16


def _validate_comet(comet: CometConfig) -> None:
    if not _COMET_PREFIX_RE.fullmatch(comet.vault_prefix):
        raise ConfigError("config key 'comet.vault_prefix': 1-51 characters of a-z, 0-9 and '-', "
                          "starting with a letter or digit")
    if comet.quota_bytes < 0 or comet.object_lock_days < 0:
        raise ConfigError("config keys 'comet.quota_bytes' and 'comet.object_lock_days': must not be negative")
    if comet.object_lock_days > 36500:
        raise ConfigError("config key 'comet.object_lock_days': at most 36500")
    if not comet.secret:
        return
    if len(comet.secret) < MIN_COMET_SECRET_CHARS:
        raise ConfigError(f"config key 'comet.secret': at least {MIN_COMET_SECRET_CHARS} characters")
    endpoint = comet.public_endpoint
    host = endpoint.split("://", 1)[1] if endpoint.startswith(("http://", "https://")) else endpoint
    if not host or "/" in host or "://" in host:
        raise ConfigError("config key 'comet.public_endpoint': HOST[:PORT] or https://HOST[:PORT] where clients "
                          "reach the S3 listener (required with 'comet.secret')")


def _validate_alerts(alerts: AlertsConfig) -> None:
    if not 0 < alerts.quota_warn_percent < 100:
        raise ConfigError("config key 'alerts.quota_warn_percent': between 0 and 100 (both excluded)")
    for name in ("stale_after_days", "replication_backlog_seconds", "lock_weakened_hold_seconds",
                 "evaluate_interval_seconds", "delivery_timeout_seconds"):
        if not getattr(alerts, name) > 0:
            raise ConfigError(f"config key 'alerts.{name}': must be positive")
    if alerts.data_dir_min_free_bytes < 0:
        raise ConfigError("config key 'alerts.data_dir_min_free_bytes': must not be negative")
    for i, hook in enumerate(alerts.webhooks):
        where = f"alerts.webhooks[{i}]"
        if not hook.url.startswith(("http://", "https://")):
            raise ConfigError(f"config key '{where}.url': an http:// or https:// URL is required")
        if not hook.secret:
            raise ConfigError(f"config key '{where}.secret' (or secret_file) is required")
        unknown = set(hook.events) - set(ALERT_KINDS) - {"*"}
        if not hook.events or unknown:
            raise ConfigError(f"config key '{where}.events': \"*\" or kinds of {', '.join(ALERT_KINDS)}")


def load_config(
    path: str | os.PathLike | None = None,
    env: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> Config:
    """Build the configuration: defaults → TOML file → environment → ``overrides``.

    ``path`` defaults to ``$OBJVAULT_CONFIG``; ``env`` defaults to ``os.environ``;
    ``overrides`` holds flag values keyed by top-level key (``None`` = unset).
    Raises :class:`ConfigError` naming the key on any problem.
    """
    env = os.environ if env is None else env
    cfg = Config()
    path = path or env.get(ENV_PREFIX + "CONFIG") or None
    if path:
        try:
            with open(path, "rb") as fh:
                data = tomllib.load(fh)
        except OSError as e:
            raise ConfigError(f"config file {str(path)!r}: {e.strerror}") from None
        except tomllib.TOMLDecodeError as e:
            raise ConfigError(f"config file {str(path)!r}: {e}") from None
        apply_toml(cfg, data, Path(path).resolve().parent)

    # Environment: every top-level key, plus section keys as OBJVAULT_GC_GRACE_SECONDS.
    top = {f.name for f in dataclasses.fields(Config)} - set(_SECTIONS)
    env_top: dict[str, Any] = {}
    for key in sorted(top | {k + "_file" for k in top & _SECRET_KEYS}):
        val = env.get(ENV_PREFIX + key.upper())
        if val is not None:
            env_top[key] = val
    _apply(cfg, env_top, "")
    for section in ("gc", "scrub", "s3", "comet", "alerts"):
        sub = getattr(cfg, section)
        vals = {}
        names = [f.name for f in dataclasses.fields(sub)]
        for name in names + [n + "_file" for n in names if n in _SECRET_KEYS]:
            val = env.get(f"{ENV_PREFIX}{section.upper()}_{name.upper()}")
            if val is not None:
                vals[name] = val
        _apply(sub, vals, section + ".")
    _webhooks_from_env(cfg.alerts, env)
    if overrides:
        _apply(cfg, {k: v for k, v in overrides.items() if v is not None}, "")
    _validate(cfg)
    return cfg


def apply_toml(cfg: Config, data: Mapping[str, Any], base: Path | None = None) -> None:
    """Apply a parsed TOML document onto ``cfg`` (``base``: folder for relative ``*_file`` paths)."""
    data = dict(data)
    if "alerts" in data:
        _apply_alerts(cfg.alerts, data.pop("alerts"), base)
    for section in ("gc", "scrub", "s3", "comet"):
        if section in data:
            sub = data.pop(section)
            if not isinstance(sub, dict):
                raise ConfigError(f"config key {section!r}: expected a table")
            _apply(getattr(cfg, section), sub, section + ".", base)
    if "replication" in data:
        repl = data.pop("replication")
        if not isinstance(repl, dict) or set(repl) - {"targets"}:
            raise ConfigError("config key 'replication': only [[replication.targets]] is allowed")
        cfg.replication_targets = _tables(repl.get("targets", []), "replication.targets", TargetConfig, base)
    _apply(cfg, data, "", base)


def _tables(items: Any, key: str, make: Callable[[], _T], base: Path | None) -> list[_T]:
    """An array of tables (``[[key]]``), each applied onto a fresh ``make()``."""
    if not isinstance(items, list):
        raise ConfigError(f"config key {key!r}: expected [[{key}]]")
    out = []
    for i, item in enumerate(items):
        if not isinstance(item, dict):
            raise ConfigError(f"config key '{key}[{i}]': expected a table")
        obj = make()
        _apply(obj, item, f"{key}[{i}].", base)
        out.append(obj)
    return out


def _apply_alerts(alerts: AlertsConfig, data: Any, base: Path | None) -> None:
    """``[alerts]`` and its ``[[alerts.webhooks]]``."""
    if not isinstance(data, dict):
        raise ConfigError("config key 'alerts': expected a table")
    data = dict(data)
    hooks = data.pop("webhooks", [])
    _apply(alerts, data, "alerts.", base)
    alerts.webhooks = _tables(hooks, "alerts.webhooks", WebhookConfig, base)


def _webhooks_from_env(alerts: AlertsConfig, env: Mapping[str, str]) -> None:
    """``OBJVAULT_ALERTS_WEBHOOKS_<N>_<KEY>`` (``URL``, ``URL_FILE``, ``SECRET``,
    ``SECRET_FILE``, ``EVENTS``): set a key of webhook N over the file's, or add
    webhook N right after the last one."""
    found: dict[int, dict[str, str]] = {}
    for name, value in env.items():
        if not name.startswith(WEBHOOK_ENV_PREFIX):
            continue
        number, _, key = name[len(WEBHOOK_ENV_PREFIX):].partition("_")
        if not number.isdigit() or len(number) > 3 or not key:
            raise ConfigError(f"environment variable {name}: expected {WEBHOOK_ENV_PREFIX}<N>_<KEY>")
        found.setdefault(int(number), {})[key.lower()] = value
    for n in sorted(found):
        if n > len(alerts.webhooks):
            raise ConfigError(f"environment variables {WEBHOOK_ENV_PREFIX}{n}_*: webhooks are numbered from 0 "
                              f"without gaps ({len(alerts.webhooks)} so far)")
        if n == len(alerts.webhooks):
            alerts.webhooks.append(WebhookConfig())
        _apply(alerts.webhooks[n], found[n], f"alerts.webhooks[{n}].")
