"""What the S3 tests against a real server share (test_s3_front.py,
test_s3_clients.py, test_s3_policy.py, test_s3_bad_input.py, test_s3_post.py):
a vault with a key of each role and boto3 clients for them, the S3 error of a
call, a check that a refused request left nothing behind, and the environment
and files the command-line clients use."""

from __future__ import annotations

import hashlib
import os
import socket
import uuid
from pathlib import Path

import boto3
import botocore.config
import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from botocore.exceptions import ClientError

from vault.s3.sigv4 import Signing, signing_key

REGION = "us-east-1"
MIB = 1 << 20


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


class Tenant:
    """A vault with keys of each role, and boto3 clients for them."""

    def __init__(self, srv, quota: int | None = None, vault: str | None = None) -> None:
        self.srv = srv
        self.vault = vault or unique("s3v")
        if vault is None:
            srv.admin.post("/v1/vaults", json={"name": self.vault, "quota_bytes": quota}).raise_for_status()
        self.keys = {role: self._key(role) for role in ("read", "append", "full")}

    @classmethod
    def of(cls, srv, vault: str) -> "Tenant":
        """New keys of the existing vault ``vault``."""
        return cls(srv, vault=vault)

    def _key(self, role: str) -> dict:
        r = self.srv.admin.post(f"/v1/vaults/{self.vault}/keys", json={"role": role})
        r.raise_for_status()
        return r.json()

    def client(self, role: str = "full", **config):
        s3 = self.keys[role]["s3"]
        return boto3.client("s3", endpoint_url=self.srv.s3_url, region_name=REGION,
                            aws_access_key_id=s3["access_key_id"], aws_secret_access_key=s3["secret_access_key"],
                            config=botocore.config.Config(**config) if config else None)

    def usage(self) -> dict:
        return self.srv.admin.get(f"/v1/vaults/{self.vault}").json()["usage"]


def code_of(call) -> tuple[int, str]:
    """``(status, S3 error code)`` of a boto3 call that must fail."""
    with pytest.raises(ClientError) as caught:
        call()
    return caught.value.response["ResponseMetadata"]["HTTPStatusCode"], caught.value.response["Error"]["Code"]


def client_env(tenant: Tenant, role: str = "full") -> dict:
    """Environment of the aws CLI, rclone (remote ``ov:``) and restic for the key of ``role``."""
    s3 = tenant.keys[role]["s3"]
    # A CA bundle of the environment makes rclone refuse its plain-HTTP transport.
    inherited = {k: v for k, v in os.environ.items() if k != "AWS_CA_BUNDLE"}
    return {**inherited, "AWS_ACCESS_KEY_ID": s3["access_key_id"], "AWS_SECRET_ACCESS_KEY": s3["secret_access_key"],
            "AWS_DEFAULT_REGION": REGION, "AWS_CONFIG_FILE": os.devnull, "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
            "RCLONE_CONFIG": os.devnull, "RCLONE_CONFIG_OV_TYPE": "s3", "RCLONE_CONFIG_OV_PROVIDER": "Other",
            "RCLONE_CONFIG_OV_ENDPOINT": tenant.srv.s3_url, "RCLONE_CONFIG_OV_REGION": REGION,
            "RCLONE_CONFIG_OV_ACCESS_KEY_ID": s3["access_key_id"],
            "RCLONE_CONFIG_OV_SECRET_ACCESS_KEY": s3["secret_access_key"]}


def sample_files(root: Path) -> Path:
    """A small file and a 12 MiB one (multipart for every client) under ``root``."""
    (root / "sub").mkdir(parents=True)
    (root / "small.txt").write_bytes(b"small file")
    (root / "sub" / "big.bin").write_bytes(os.urandom(12 * MIB))
    return root


@pytest.fixture
def tenant(srv) -> Tenant:
    return Tenant(srv)


@pytest.fixture
def bucket(tenant) -> str:
    """A fresh bucket of ``tenant``'s vault."""
    name = unique("bkt")
    tenant.client().create_bucket(Bucket=name)
    return name


@pytest.fixture
def unchanged(srv, tenant, bucket):
    """For a test whose requests must leave nothing behind. After it: no
    object in the bucket but the one put before, no upload, and after GC the
    vault's usage as before."""
    s3 = tenant.client()
    s3.put_object(Bucket=bucket, Key="existing", Body=b"was here before")
    before = tenant.usage()
    yield
    assert [o["Key"] for o in s3.list_objects_v2(Bucket=bucket).get("Contents", [])] == ["existing"]
    assert s3.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []
    r = srv.admin.post("/v1/admin/gc", json={}, timeout=120)
    assert r.status_code == 200, r.text
    assert tenant.usage() == before
    assert s3.get_object(Bucket=bucket, Key="existing")["Body"].read() == b"was here before"


# -- requests built by hand (bad input) ------------------------------------------------


def signed(tenant: Tenant, method: str, path: str, body: bytes, headers: dict, secret: str | None = None) -> dict:
    """Headers of a request signed by botocore's SigV4 for ``body`` (or the
    x-amz-content-sha256 given in ``headers``), with the full key's secret or ``secret``."""
    s3 = tenant.keys["full"]["s3"]
    request = AWSRequest(method=method, url=tenant.srv.s3_url + path, data=body, headers=headers)
    SigV4Auth(Credentials(s3["access_key_id"], secret or s3["secret_access_key"]), "s3", REGION).add_auth(request)
    return dict(request.headers.items())


def streaming(tenant: Tenant, method: str, path: str, data: bytes, corrupt: int | None = None,
              extra: dict | None = None) -> tuple[dict, bytes]:
    """Headers and body of a STREAMING-AWS4-HMAC-SHA256-PAYLOAD request of
    ``data`` in two chunks and the final one; chunk ``corrupt`` gets a wrong signature."""
    pieces = [data[:len(data) // 2], data[len(data) // 2:], b""]
    size = sum(len(f"{len(p):x};chunk-signature={'0' * 64}\r\n") + len(p) + 2 for p in pieces)
    headers = signed(tenant, method, path, b"", {
        "x-amz-content-sha256": "STREAMING-AWS4-HMAC-SHA256-PAYLOAD", "Content-Encoding": "aws-chunked",
        "x-amz-decoded-content-length": str(len(data)), "Content-Length": str(size), **(extra or {})})
    amz_date = headers["X-Amz-Date"]
    signing = Signing(signing_key(tenant.keys["full"]["s3"]["secret_access_key"], amz_date[:8], REGION), amz_date,
                      f"{amz_date[:8]}/{REGION}/s3/aws4_request")
    previous = headers["Authorization"].rsplit("Signature=", 1)[1]
    body = b""
    for i, piece in enumerate(pieces):
        previous = signing.chunk_signature(previous, hashlib.sha256(piece).hexdigest())
        shown = ("f" * 64) if i == corrupt else previous
        body += f"{len(piece):x};chunk-signature={shown}\r\n".encode() + piece + b"\r\n"
    return headers, body


def raw_exchange(port: int, head: str, body: bytes = b"", close: bool = True, timeout: float = 30) -> bytes:
    """Send ``head`` (request line and headers, without the blank line; lone
    surrogates in it go as the bytes they escape) and ``body`` over a plain
    socket, end the sending side if ``close``; the answer's first bytes."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(head.encode("utf-8", "surrogateescape") + b"\r\n\r\n" + body)
        if close:
            sock.shutdown(socket.SHUT_WR)
        answer = b""
        while b"\r\n\r\n" not in answer or (b"</Error>" not in answer and b"Content-Length: 0" not in answer
                                            and len(answer) < 65536):
            piece = sock.recv(65536)
            if not piece:
                break
            answer += piece
        return answer
