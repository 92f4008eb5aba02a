"""Comet's "Custom Remote Bucket" against real servers: each of Comet's body
encodings makes a vault, key and bucket that boto3 then uses with the
returned credentials; a wrong or missing secret is 401 and makes nothing;
without a secret the route is 404; the [comet] settings and their checks."""

from __future__ import annotations

import datetime
import socket
import uuid

import boto3
import httpx
import pytest
from botocore.exceptions import ClientError

from tests.rawhttp import recv_head, request_head
from tests.server import Server
from vault.config import ConfigError, load_config

ROUTE = "/v1/integrations/comet/remote-bucket"
SECRET = "comet-shared-secret-" + uuid.uuid4().hex
QUOTA = 1 << 30
LOCK_DAYS = 30


@pytest.fixture(scope="module")
def comet(tmp_path_factory):
    """A server with a Comet secret (from a file), a quota and Object Lock days."""
    root = tmp_path_factory.mktemp("comet")
    secret_file = root / "comet.secret"
    secret_file.write_text(SECRET + "\n")
    s = Server(root)
    s.extra_env = {"OBJVAULT_COMET_SECRET_FILE": str(secret_file), "OBJVAULT_COMET_VAULT_PREFIX": "cmt-",
                   "OBJVAULT_COMET_QUOTA_BYTES": str(QUOTA), "OBJVAULT_COMET_OBJECT_LOCK_DAYS": str(LOCK_DAYS),
                   "OBJVAULT_COMET_PUBLIC_ENDPOINT": f"127.0.0.1:{s.s3_port}"}
    s.start()
    yield s
    s.stop()


def vault_names(srv: Server) -> set[str]:
    return {v["name"] for v in srv.admin.get("/v1/vaults").json()["vaults"]}


def post(srv: Server, secret: str | None = SECRET, **kw) -> httpx.Response:
    headers = {"Authorization": f"Bearer {secret}"} if secret is not None else {}
    return httpx.post(srv.url + ROUTE, headers={**headers, **kw.pop("headers", {})}, timeout=30, **kw)


BODIES = {
    "none": {},
    "json": {"json": {"CustomerID": "c-1", "Username": "alice"}},
    "urlencoded": {"data": {"CustomerID": "c-1", "Username": "alice"}},
    "form": {"files": {"CustomerID": (None, "c-1"), "Username": (None, "alice")}},
}


@pytest.mark.parametrize("encoding", BODIES)
def test_each_body_encoding_makes_a_usable_bucket(comet, encoding):
    before = vault_names(comet)
    r = post(comet, **BODIES[encoding])
    assert r.status_code == 200, r.text
    loc = r.json()
    assert {k: loc[k] for k in ("DestinationType", "S3Server", "S3UsesTLS", "S3Subdir", "S3CustomRegion",
                                "S3UsesV2Signing", "S3ObjectLockMode", "S3ObjectLockDays", "S3RemoveDeleted")} == {
        "DestinationType": 1000, "S3Server": f"127.0.0.1:{comet.s3_port}", "S3UsesTLS": False, "S3Subdir": "",
        "S3CustomRegion": "us-east-1", "S3UsesV2Signing": False, "S3ObjectLockMode": 1,
        "S3ObjectLockDays": LOCK_DAYS, "S3RemoveDeleted": True}
    bucket = loc["S3BucketName"]
    assert bucket.startswith("cmt-") and len(bucket) == len("cmt-") + 12
    # one new vault, of the bucket's name, with the configured quota, owning the bucket
    assert vault_names(comet) - before == {bucket}
    vault = comet.admin.get(f"/v1/vaults/{bucket}").json()
    assert vault["quota_bytes"] == QUOTA
    assert [b["name"] for b in comet.admin.get(f"/v1/vaults/{bucket}/buckets").json()["buckets"]] == [bucket]
    assert [k["role"] for k in comet.admin.get(f"/v1/vaults/{bucket}/keys").json()["keys"]] == ["full"]
    # the credentials work against the returned endpoint and bucket
    scheme = "https" if loc["S3UsesTLS"] else "http"
    s3 = boto3.client("s3", endpoint_url=f"{scheme}://{loc['S3Server']}", region_name=loc["S3CustomRegion"],
                      aws_access_key_id=loc["S3AccessKey"], aws_secret_access_key=loc["S3SecretKey"])
    s3.put_object(Bucket=bucket, Key="comet/index", Body=b"backup data")
    assert s3.get_object(Bucket=bucket, Key="comet/index")["Body"].read() == b"backup data"
    assert [o["Key"] for o in s3.list_objects_v2(Bucket=bucket)["Contents"]] == ["comet/index"]
    assert [b["Name"] for b in s3.list_buckets()["Buckets"]] == [bucket]


def test_a_compliance_retained_object_in_the_locked_bucket_cannot_be_deleted(comet):
    """The lock Comet is told about is real: a COMPLIANCE version set the way
    Comet sets it (per object, no bucket default) refuses every delete by the
    returned credentials, while a delete marker and an extension are allowed."""
    loc = post(comet).json()
    bucket = loc["S3BucketName"]
    s3 = boto3.client("s3", endpoint_url=f"http://{loc['S3Server']}", region_name=loc["S3CustomRegion"],
                      aws_access_key_id=loc["S3AccessKey"], aws_secret_access_key=loc["S3SecretKey"])
    assert s3.get_bucket_versioning(Bucket=bucket)["Status"] == "Enabled"
    lock = s3.get_object_lock_configuration(Bucket=bucket)["ObjectLockConfiguration"]
    assert lock == {"ObjectLockEnabled": "Enabled"}  # Comet wants no default retention
    until = datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0) + datetime.timedelta(days=LOCK_DAYS)
    version = s3.put_object(Bucket=bucket, Key="comet/pack", Body=b"backup data", ObjectLockMode="COMPLIANCE",
                            ObjectLockRetainUntilDate=until)["VersionId"]
    for call in (lambda: s3.delete_object(Bucket=bucket, Key="comet/pack", VersionId=version),
                 lambda: s3.delete_object(Bucket=bucket, Key="comet/pack", VersionId=version,
                                          BypassGovernanceRetention=True),
                 lambda: s3.put_object_retention(Bucket=bucket, Key="comet/pack", VersionId=version, Retention={
                     "Mode": "COMPLIANCE", "RetainUntilDate": until - datetime.timedelta(days=1)}),
                 lambda: s3.put_object_retention(Bucket=bucket, Key="comet/pack", VersionId=version, Retention={
                     "Mode": "GOVERNANCE", "RetainUntilDate": until})):
        with pytest.raises(ClientError) as caught:
            call()
        assert caught.value.response["Error"]["Code"] == "AccessDenied"
    deleted = s3.delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": "comet/pack", "VersionId": version}]})
    assert [e["Code"] for e in deleted.get("Errors", [])] == ["AccessDenied"]
    marker = s3.delete_object(Bucket=bucket, Key="comet/pack")  # hides it; removes nothing
    assert marker["DeleteMarker"] is True
    later = until + datetime.timedelta(days=1)
    s3.put_object_retention(Bucket=bucket, Key="comet/pack", VersionId=version,
                            Retention={"Mode": "COMPLIANCE", "RetainUntilDate": later})
    assert s3.get_object_retention(Bucket=bucket, Key="comet/pack", VersionId=version)["Retention"] == {
        "Mode": "COMPLIANCE", "RetainUntilDate": later}
    assert s3.get_object(Bucket=bucket, Key="comet/pack", VersionId=version)["Body"].read() == b"backup data"
    assert comet.admin.delete(f"/v1/vaults/{bucket}").status_code >= 400  # nor can the operator's vault delete


def test_calls_make_distinct_vaults(comet):
    first, second = (post(comet).json() for _ in range(2))
    assert first["S3BucketName"] != second["S3BucketName"]
    assert first["S3AccessKey"] != second["S3AccessKey"]
    s3 = boto3.client("s3", endpoint_url=f"http://{first['S3Server']}", region_name="us-east-1",
                      aws_access_key_id=first["S3AccessKey"], aws_secret_access_key=first["S3SecretKey"])
    with pytest.raises(Exception, match="AccessDenied"):
        s3.list_objects_v2(Bucket=second["S3BucketName"])


@pytest.mark.parametrize("headers", [
    {"Authorization": "Bearer wrong-secret-of-some-length"},
    {"Authorization": f"Bearer {SECRET}x"},
    {"Authorization": f"Basic {SECRET}"},
    {"Authorization": "Bearer"},
    {},
], ids=["wrong", "longer", "basic", "empty", "missing"])
def test_a_wrong_or_missing_secret_is_401_and_makes_nothing(comet, headers):
    before = vault_names(comet)
    r = post(comet, secret=None, headers=headers, json={"CustomerID": "c-1"})
    assert r.status_code == 401, r.text
    assert r.json()["code"] == "unauthorized"
    assert vault_names(comet) == before


def test_an_oversized_body_is_413_and_makes_nothing(comet):
    before = vault_names(comet)
    r = post(comet, content=b"x" * (65 << 10), headers={"Content-Type": "application/octet-stream"})
    assert r.status_code == 413, r.text
    assert vault_names(comet) == before


def test_no_secret_no_route(srv):
    before = vault_names(srv)
    r = post(srv, secret=srv.admin_token)
    assert r.status_code == 404, r.text
    assert vault_names(srv) == before


def test_unlocked_with_a_tls_endpoint_from_toml(tmp_path):
    config = f"""
[comet]
secret = "{SECRET}"
public_endpoint = "https://s3.example.com"
"""
    s = Server(tmp_path / "plain", config=config).start()
    try:
        loc = post(s).json()
        assert (loc["S3Server"], loc["S3UsesTLS"]) == ("s3.example.com", True)
        assert (loc["S3ObjectLockMode"], loc["S3ObjectLockDays"], loc["S3RemoveDeleted"]) == (2, 0, False)
        assert loc["S3BucketName"].startswith("comet-")
        assert s.admin.get(f"/v1/vaults/{loc['S3BucketName']}").json()["quota_bytes"] is None
    finally:
        s.stop()


def test_config(tmp_path):
    secret_file = tmp_path / "secret"
    secret_file.write_text(SECRET + "\n")
    env = {"OBJVAULT_COMET_SECRET_FILE": str(secret_file), "OBJVAULT_COMET_PUBLIC_ENDPOINT": "s3.example.com:443",
           "OBJVAULT_COMET_OBJECT_LOCK_DAYS": "7"}
    cfg = load_config(env=env)
    assert (cfg.comet.secret, cfg.comet.public_endpoint, cfg.comet.object_lock_days) == \
        (SECRET, "s3.example.com:443", 7)
    assert load_config(env={}).comet.secret == ""
    for bad, key in (({"OBJVAULT_COMET_PUBLIC_ENDPOINT": ""}, "comet.public_endpoint"),
                     ({"OBJVAULT_COMET_PUBLIC_ENDPOINT": "https://s3.example.com/path"}, "comet.public_endpoint"),
                     ({"OBJVAULT_COMET_SECRET_FILE": "", "OBJVAULT_COMET_SECRET": "short"}, "comet.secret"),
                     ({"OBJVAULT_COMET_VAULT_PREFIX": "Comet_"}, "comet.vault_prefix"),
                     ({"OBJVAULT_COMET_OBJECT_LOCK_DAYS": "-1"}, "comet.object_lock_days")):
        with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
            load_config(env={**env, **bad})


@pytest.mark.parametrize("secret,first", [(SECRET, b"HTTP/1.1 100 Continue"), ("wrong-secret-of-some-length",
                                                                             b"HTTP/1.1 401")])
def test_expect_continue_only_with_the_secret(comet, secret, first):
    """A wrong secret is refused before the body is invited; the right one gets 100 Continue, then 200."""
    body = b'{"CustomerID": "c-1"}'
    with socket.create_connection(("127.0.0.1", comet.port), timeout=10) as sock:
        head = request_head("POST", ROUTE, len(body), secret)
        sock.sendall(head.replace(b"\r\n\r\n", b"\r\nExpect: 100-continue\r\n\r\n"))
        answer = recv_head(sock)
        assert answer.startswith(first), answer
        if first.endswith(b"100 Continue"):
            sock.sendall(body)
            answer = answer.partition(b"\r\n\r\n")[2] or recv_head(sock)
            assert answer.startswith(b"HTTP/1.1 200"), answer
