"""The S3 front door against a real server: boto3 with its default settings,
the aws CLI and rclone; isolation between vaults, roles, revocation; bad
input refused with its S3 error and nothing stored."""

from __future__ import annotations

import datetime
import hashlib
import io
import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import boto3
import httpx
import pytest
from boto3.s3.transfer import TransferConfig
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from tests.s3server import sigv4_authorization
from tests.s3tenant import (MIB, REGION, Tenant, bucket, client_env, code_of, raw_exchange,  # noqa: F401
                            sample_files, signed, streaming, tenant)
from tests.s3tenant import unique as _name


def test_a_new_key_carries_s3_credentials_shown_once(srv, tenant):
    s3 = tenant.keys["full"]["s3"]
    assert s3["access_key_id"].startswith("OVK") and len(s3["secret_access_key"]) >= 40
    listed = srv.admin.get(f"/v1/vaults/{tenant.vault}/keys").text
    assert s3["secret_access_key"] not in listed
    master = (srv.data_dirs[0] / "s3-master.key").read_bytes()
    index_files = b"".join(p.read_bytes() for p in (srv.data_dirs[0] / "index").glob("*.log"))
    assert s3["secret_access_key"].encode() not in index_files and len(master) >= 32


def test_boto3_defaults_round_trip(tenant, bucket):
    s3 = tenant.client()
    resp = s3.put_object(Bucket=bucket, Key="dir/hello.txt", Body=b"hello world", ContentType="text/plain",
                         Metadata={"who": "me"}, Tagging="a=1")
    assert resp["ETag"] == f'"{hashlib.md5(b"hello world").hexdigest()}"'
    got = s3.get_object(Bucket=bucket, Key="dir/hello.txt")
    assert (got["Body"].read(), got["ContentType"], got["Metadata"]) == (b"hello world", "text/plain", {"who": "me"})
    assert s3.get_object(Bucket=bucket, Key="dir/hello.txt", Range="bytes=6-")["Body"].read() == b"world"
    assert s3.head_object(Bucket=bucket, Key="dir/hello.txt", ChecksumMode="ENABLED")["ContentLength"] == 11
    assert s3.get_object_tagging(Bucket=bucket, Key="dir/hello.txt")["TagSet"] == [{"Key": "a", "Value": "1"}]
    s3.copy_object(Bucket=bucket, Key="copy.txt", CopySource={"Bucket": bucket, "Key": "dir/hello.txt"})
    assert s3.get_object(Bucket=bucket, Key="copy.txt")["Body"].read() == b"hello world"
    acl = s3.get_object_acl(Bucket=bucket, Key="copy.txt")
    assert acl["Grants"][0]["Permission"] == "FULL_CONTROL" and acl["Owner"]["ID"] == tenant.vault
    assert s3.get_bucket_location(Bucket=bucket)["LocationConstraint"] is None


def _exchange(tenant: Tenant, method: str, path: str, headers: dict[str, str]) -> bytes:
    """An empty-bodied request signed over every header (a value's lone
    surrogates go, and sign, as the bytes they escape); its answer's head."""
    s3, empty = tenant.keys["full"]["s3"], hashlib.sha256(b"").hexdigest()
    amz_date = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    headers = {"host": f"127.0.0.1:{tenant.srv.s3_port}", "x-amz-date": amz_date, "x-amz-content-sha256": empty,
               **headers}
    auth = sigv4_authorization(method=method, path=path, headers=headers, payload_sha256=empty,
                               access_key=s3["access_key_id"], secret_key=s3["secret_access_key"], amz_date=amz_date)
    lines = [f"{method} {path} HTTP/1.1", *(f"{k}: {v}" for k, v in headers.items()), f"Authorization: {auth}",
             "Content-Length: 0", "Connection: close"]
    return raw_exchange(tenant.srv.s3_port, "\r\n".join(lines), close=False)


@pytest.mark.parametrize("name", ["x-amz-meta-note", "content-disposition", "content-type", "x-amz-tagging"])
def test_header_values_that_are_not_utf8_are_refused_and_utf8_ones_go_back_as_sent(tenant, bucket, name):
    """A stored header value must come as UTF-8: a Latin-1 byte (signed as
    sent) is 400 InvalidArgument with nothing stored, not a 500; a UTF-8
    value is answered as the very bytes it came as."""
    latin1 = b"Hello World\xe9".decode("utf-8", "surrogateescape")  # as aiohttp's parser hands it over
    refused = _exchange(tenant, "PUT", f"/{bucket}/latin1", {name: ("a=" if name == "x-amz-tagging" else "") + latin1})
    assert refused.startswith(b"HTTP/1.1 400 ") and b"<Code>InvalidArgument</Code>" in refused, refused
    assert _exchange(tenant, "HEAD", f"/{bucket}/latin1", {}).startswith(b"HTTP/1.1 404 ")
    if name == "x-amz-tagging":
        return
    sent = "caf\u00e9 \u20ac".encode()
    assert _exchange(tenant, "PUT", f"/{bucket}/utf8", {name: sent.decode()}).startswith(b"HTTP/1.1 200 ")
    for method in ("GET", "HEAD"):
        head = _exchange(tenant, method, f"/{bucket}/utf8", {}).partition(b"\r\n\r\n")[0].lower()
        assert b"\r\n" + name.encode() + b": " + sent.lower() + b"\r\n" in head, (method, head)


def test_any_s3_storage_class_is_kept_in_the_vaults_one_and_an_unknown_one_refused(tenant, bucket):
    s3 = tenant.client("full")
    s3.put_object(Bucket=bucket, Key="cold", Body=b"x", StorageClass="GLACIER")
    s3.create_multipart_upload(Bucket=bucket, Key="ia", StorageClass="STANDARD_IA")
    s3.copy_object(Bucket=bucket, Key="copy", CopySource={"Bucket": bucket, "Key": "cold"},
                   StorageClass="DEEP_ARCHIVE")
    assert s3.get_object(Bucket=bucket, Key="cold")["Body"].read() == b"x"  # no restore needed
    assert {o["Key"]: o["StorageClass"] for o in s3.list_objects_v2(Bucket=bucket)["Contents"]} == \
        {"cold": "STANDARD", "copy": "STANDARD"}
    for write in (lambda: s3.put_object(Bucket=bucket, Key="k", Body=b"x", StorageClass="PLATINUM"),
                  lambda: s3.create_multipart_upload(Bucket=bucket, Key="k", StorageClass="PLATINUM"),
                  lambda: s3.copy_object(Bucket=bucket, Key="k", CopySource={"Bucket": bucket, "Key": "cold"},
                                         StorageClass="PLATINUM")):
        assert code_of(write) == (400, "InvalidStorageClass")
    assert "k" not in {o["Key"] for o in s3.list_objects_v2(Bucket=bucket)["Contents"]}


def test_boto3_multipart_upload_streams_and_dedups(tenant, bucket):
    s3 = tenant.client()
    data = os.urandom(21 * MIB)
    config = TransferConfig(multipart_threshold=5 * MIB, multipart_chunksize=8 * MIB)
    s3.upload_fileobj(io.BytesIO(data), bucket, "big.bin", Config=config)
    head = s3.head_object(Bucket=bucket, Key="big.bin")
    assert head["ContentLength"] == len(data) and head["ETag"].endswith('-3"')
    assert s3.get_object(Bucket=bucket, Key="big.bin")["Body"].read() == data
    assert s3.get_object(Bucket=bucket, Key="big.bin", Range="bytes=8388600-8388615")["Body"].read() == \
        data[8388600:8388616]
    stored = tenant.usage()["stored_bytes"]
    s3.copy_object(Bucket=bucket, Key="big-copy.bin", CopySource={"Bucket": bucket, "Key": "big.bin"})
    assert tenant.usage()["stored_bytes"] == stored  # the same chunks, referenced twice
    assert s3.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []


def test_listing_pages_never_loop_or_skip(tenant, bucket):
    s3 = tenant.client()
    keys = [f"a/{i:02d}" for i in range(7)] + [f"b/{i}" for i in range(3)] + ["c", "d/e/f"]
    for key in keys:
        s3.put_object(Bucket=bucket, Key=key, Body=b"x")
    seen, prefixes, token = [], [], None
    while True:
        kw = {"ContinuationToken": token} if token else {}
        page = s3.list_objects_v2(Bucket=bucket, MaxKeys=2, Delimiter="/", **kw)
        seen += [o["Key"] for o in page.get("Contents", [])]
        prefixes += [p["Prefix"] for p in page.get("CommonPrefixes", [])]
        if not page["IsTruncated"]:
            break
        token = page["NextContinuationToken"]
    assert (seen, prefixes) == (["c"], ["a/", "b/", "d/"])
    paginator = s3.get_paginator("list_objects")
    flat = [o["Key"] for p in paginator.paginate(Bucket=bucket, Prefix="a/", PaginationConfig={"PageSize": 3})
            for o in p["Contents"]]
    assert flat == keys[:7]


def test_a_bucket_of_another_vault_reveals_nothing(srv, tenant, bucket):
    tenant.client().put_object(Bucket=bucket, Key="secret", Body=b"x")
    other = Tenant(srv).client()
    for call in (lambda: other.list_objects_v2(Bucket=bucket), lambda: other.head_bucket(Bucket=bucket),
                 lambda: other.get_object(Bucket=bucket, Key="secret"),
                 lambda: other.put_object(Bucket=bucket, Key="k", Body=b"y"),
                 lambda: other.delete_object(Bucket=bucket, Key="secret"),
                 lambda: other.delete_bucket(Bucket=bucket),
                 lambda: other.create_multipart_upload(Bucket=bucket, Key="k")):
        assert code_of(call)[0] == 403
    assert code_of(lambda: other.create_bucket(Bucket=bucket)) == (409, "BucketAlreadyExists")
    assert bucket not in [b["Name"] for b in other.list_buckets()["Buckets"]]
    assert tenant.client().get_object(Bucket=bucket, Key="secret")["Body"].read() == b"x"


def test_a_bucket_answers_the_location_constraint_it_was_created_with(tenant):
    """The server's own region is accepted as a constraint even in us-east-1
    (as MinIO, Ceph and Garage accept it), kept, and answered back; without
    one the answer stays empty; any other region is refused."""
    s3 = tenant.client()
    s3.create_bucket(Bucket=(placed := _name("loc")), CreateBucketConfiguration={"LocationConstraint": REGION})
    s3.create_bucket(Bucket=(plain := _name("loc")))
    assert s3.get_bucket_location(Bucket=placed)["LocationConstraint"] == REGION
    assert s3.get_bucket_location(Bucket=plain)["LocationConstraint"] is None
    for other in ("eu-west-1", "default"):
        assert code_of(lambda: s3.create_bucket(Bucket=_name("loc"), CreateBucketConfiguration={
            "LocationConstraint": other})) == (400, "InvalidLocationConstraint")


def test_roles_apply_per_operation(tenant, bucket):
    full, append, read = tenant.client("full"), tenant.client("append"), tenant.client("read")
    full.put_object(Bucket=bucket, Key="k", Body=b"1")
    assert read.get_object(Bucket=bucket, Key="k")["Body"].read() == b"1"
    assert code_of(lambda: read.put_object(Bucket=bucket, Key="new", Body=b"2")) == (403, "AccessDenied")
    append.put_object(Bucket=bucket, Key="new", Body=b"2")
    assert code_of(lambda: append.put_object(Bucket=bucket, Key="k", Body=b"3")) == (403, "AccessDenied")
    assert code_of(lambda: append.delete_object(Bucket=bucket, Key="k")) == (403, "AccessDenied")
    assert code_of(lambda: append.create_bucket(Bucket=_name("nope"))) == (403, "AccessDenied")
    upload = append.create_multipart_upload(Bucket=bucket, Key="mp")["UploadId"]
    etag = append.upload_part(Bucket=bucket, Key="mp", UploadId=upload, PartNumber=1, Body=b"p")["ETag"]
    append.complete_multipart_upload(Bucket=bucket, Key="mp", UploadId=upload,
                                     MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": etag}]})
    full.delete_object(Bucket=bucket, Key="k")
    assert code_of(lambda: full.get_object(Bucket=bucket, Key="k")) == (404, "NoSuchKey")


def test_a_revoked_key_fails_on_its_next_request(srv, tenant, bucket):
    s3 = tenant.client()
    s3.head_bucket(Bucket=bucket)
    srv.admin.delete(f"/v1/vaults/{tenant.vault}/keys/{tenant.keys['full']['id']}").raise_for_status()
    assert code_of(lambda: s3.head_bucket(Bucket=bucket))[0] == 403
    assert code_of(lambda: s3.list_buckets()) == (403, "InvalidAccessKeyId")


def test_over_quota_is_refused_before_anything_is_stored(srv):
    tenant = Tenant(srv, quota=MIB)
    s3 = tenant.client()
    s3.create_bucket(Bucket=(bucket := _name("q")))
    before = tenant.usage()
    assert code_of(lambda: s3.put_object(Bucket=bucket, Key="big", Body=os.urandom(2 * MIB))) == \
        (403, "QuotaExceeded")
    assert tenant.usage() == before


def test_the_native_api_does_not_write_s3_objects(srv, tenant):
    key = tenant.keys["full"]["secret"]
    r = srv.client(key).put(f"/v1/vaults/{tenant.vault}/objects/s3/b/k", json={"chunks": []})
    assert r.status_code == 403 and r.json()["code"] == "reserved_key"


# -- bad input: each its S3 error, nothing stored --------------------------------------


def _unchanged(tenant: Tenant, bucket: str, before: dict) -> None:
    assert tenant.usage()["objects"] == before["objects"]
    assert tenant.usage()["logical_bytes"] == before["logical_bytes"]
    assert "Contents" not in tenant.client().list_objects_v2(Bucket=bucket)


def test_a_wrong_secret_does_not_match(tenant, bucket):
    s3 = tenant.keys["full"]["s3"]
    bad = boto3.client("s3", endpoint_url=tenant.srv.s3_url, region_name=REGION,
                       aws_access_key_id=s3["access_key_id"], aws_secret_access_key="x" * 40)
    before = tenant.usage()
    assert code_of(lambda: bad.put_object(Bucket=bucket, Key="k", Body=b"x")) == (403, "SignatureDoesNotMatch")
    _unchanged(tenant, bucket, before)


def test_a_body_other_than_signed_is_refused(tenant, bucket):
    body = b"a" * 1000
    headers = signed(tenant, "PUT", f"/{bucket}/k", body, {"x-amz-content-sha256": hashlib.sha256(body).hexdigest()})
    before = tenant.usage()
    r = httpx.put(f"{tenant.srv.s3_url}/{bucket}/k", content=b"b" * 1000, headers=headers)
    assert r.status_code == 400 and b"XAmzContentSHA256Mismatch" in r.content and "x-amz-request-id" in r.headers
    _unchanged(tenant, bucket, before)


def test_a_wrong_content_md5_is_bad_digest(tenant, bucket):
    before = tenant.usage()
    s3 = tenant.client()
    bad_md5 = "1B2M2Y8AsgTpgAmY7PhCfg=="  # the MD5 of nothing
    assert code_of(lambda: s3.put_object(Bucket=bucket, Key="k", Body=b"x", ContentMD5=bad_md5)) == \
        (400, "BadDigest")
    _unchanged(tenant, bucket, before)


def test_a_truncated_body_stores_nothing(tenant, bucket):
    body = b"z" * 4096
    headers = signed(tenant, "PUT", f"/{bucket}/k", body, {"x-amz-content-sha256": "UNSIGNED-PAYLOAD"})
    headers.update({"Content-Length": str(len(body)), "Host": f"127.0.0.1:{tenant.srv.s3_port}"})
    before = tenant.usage()
    head = f"PUT /{bucket}/k HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers.items()) + "\r\n"
    with socket.create_connection(("127.0.0.1", tenant.srv.s3_port)) as sock:
        sock.sendall(head.encode() + body[:1000])
        sock.shutdown(socket.SHUT_WR)
        answer = sock.recv(65536)
    assert answer.startswith(b"HTTP/1.1 400") and b"IncompleteBody" in answer
    _unchanged(tenant, bucket, before)


def _streaming(tenant: Tenant, bucket: str, data: bytes, corrupt: bool) -> httpx.Response:
    """A STREAMING-AWS4-HMAC-SHA256-PAYLOAD PUT of ``data``; ``corrupt`` spoils the second chunk's signature."""
    headers, body = streaming(tenant, "PUT", f"/{bucket}/k", data, corrupt=1 if corrupt else None)
    return httpx.put(f"{tenant.srv.s3_url}/{bucket}/k", content=body, headers=headers)


def test_signed_chunks_are_verified(tenant, bucket):
    data = os.urandom(100_000)
    before = tenant.usage()
    r = _streaming(tenant, bucket, data, corrupt=True)
    assert r.status_code == 403 and b"SignatureDoesNotMatch" in r.content
    _unchanged(tenant, bucket, before)
    assert _streaming(tenant, bucket, data, corrupt=False).status_code == 200
    assert tenant.client().get_object(Bucket=bucket, Key="k")["Body"].read() == data


def test_multipart_refusals(tenant, bucket):
    s3 = tenant.client()
    upload = s3.create_multipart_upload(Bucket=bucket, Key="mp")["UploadId"]
    e1 = s3.upload_part(Bucket=bucket, Key="mp", UploadId=upload, PartNumber=1, Body=b"small")["ETag"]
    e2 = s3.upload_part(Bucket=bucket, Key="mp", UploadId=upload, PartNumber=2, Body=b"last")["ETag"]
    parts = [{"PartNumber": 1, "ETag": e1}, {"PartNumber": 2, "ETag": e2}]
    complete = s3.complete_multipart_upload
    assert code_of(lambda: complete(Bucket=bucket, Key="mp", UploadId=upload,
                                    MultipartUpload={"Parts": parts})) == (400, "EntityTooSmall")
    assert code_of(lambda: complete(Bucket=bucket, Key="mp", UploadId=upload,
                                    MultipartUpload={"Parts": parts[::-1]})) == (400, "InvalidPartOrder")
    assert code_of(lambda: complete(Bucket=bucket, Key="mp", UploadId=upload,
                                    MultipartUpload={"Parts": [{"PartNumber": 3, "ETag": e1}]})) == \
        (400, "InvalidPart")
    assert code_of(lambda: s3.upload_part(Bucket=bucket, Key="mp", UploadId="0" * 32, PartNumber=1,
                                          Body=b"x")) == (404, "NoSuchUpload")
    s3.abort_multipart_upload(Bucket=bucket, Key="mp", UploadId=upload)
    assert tenant.usage()["objects"] == 0


def test_a_part_sent_again_is_completed_by_its_last_listed_etag(tenant, bucket):
    """Part 1 uploaded twice (a resend while the first upload still ran): the
    client lists both ETags, and the part as stored, the upload that finished
    last, must be the last entry of its number; else InvalidPart."""
    s3 = tenant.client()
    upload = s3.create_multipart_upload(Bucket=bucket, Key="mp")["UploadId"]

    def send(body: bytes) -> str:
        return s3.upload_part(Bucket=bucket, Key="mp", UploadId=upload, PartNumber=1, Body=body)["ETag"]

    first, second = send(b"B" * 8), send(b"A" * 8)

    def complete(*etags: str):
        return s3.complete_multipart_upload(Bucket=bucket, Key="mp", UploadId=upload, MultipartUpload={
            "Parts": [{"PartNumber": 1, "ETag": etag} for etag in etags]})

    assert code_of(lambda: complete(second, first)) == (400, "InvalidPart")
    complete(first, second)
    assert s3.get_object(Bucket=bucket, Key="mp")["Body"].read() == b"A" * 8
    assert s3.head_object(Bucket=bucket, Key="mp")["ETag"].endswith('-1"')


# -- other clients ---------------------------------------------------------------------


AWS = shutil.which("aws", path=str(Path(sys.executable).parent)) or shutil.which("aws")


def test_aws_cli_sync_and_copy_back(tmp_path, tenant, bucket):
    env = client_env(tenant)
    aws = [AWS, "--endpoint-url", tenant.srv.s3_url]
    src = sample_files(tmp_path / "src")
    subprocess.run([*aws, "s3", "sync", str(src), f"s3://{bucket}/data"], env=env, check=True, capture_output=True)
    listing = subprocess.run([*aws, "s3", "ls", "--recursive", f"s3://{bucket}/"], env=env, check=True,
                             capture_output=True, text=True).stdout
    assert "data/small.txt" in listing and "data/sub/big.bin" in listing
    subprocess.run([*aws, "s3", "cp", "--recursive", f"s3://{bucket}/data", str(tmp_path / "back")], env=env,
                   check=True, capture_output=True)
    assert (tmp_path / "back" / "sub" / "big.bin").read_bytes() == (src / "sub" / "big.bin").read_bytes()
    subprocess.run([*aws, "s3", "rm", "--recursive", f"s3://{bucket}/data"], env=env, check=True,
                   capture_output=True)
    assert tenant.usage()["objects"] == 0


def test_rclone_copy_check_and_purge(tmp_path, tenant, bucket):
    env = client_env(tenant)
    src = sample_files(tmp_path / "src")

    def run(*args: str) -> subprocess.CompletedProcess:
        done = subprocess.run(["rclone", *args], env=env, capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
        return done

    run("copy", "--s3-upload-cutoff", "5M", "--s3-chunk-size", "5M", str(src), f"ov:{bucket}/r")
    run("check", str(src), f"ov:{bucket}/r")
    assert sorted(run("lsf", "-R", f"ov:{bucket}/r").stdout.split()) == ["small.txt", "sub/", "sub/big.bin"]
    run("purge", f"ov:{bucket}/r")
    assert tenant.usage()["objects"] == 0


def test_restic_s3_backend_backup_check_restore_prune(tmp_path, tenant, bucket):
    env = {**client_env(tenant), "RESTIC_PASSWORD": "pw", "RESTIC_CACHE_DIR": str(tmp_path / "cache")}
    repo = f"s3:{tenant.srv.s3_url}/{bucket}/repo"
    src = sample_files(tmp_path / "src")

    def restic(*args: str) -> str:
        done = subprocess.run(["restic", "-r", repo, *args], env=env, capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
        return done.stdout

    restic("init")
    restic("backup", str(src))
    restic("backup", str(src))
    restic("check", "--read-data")
    restic("restore", "latest", "--target", str(tmp_path / "back"))
    assert (tmp_path / "back" / src.relative_to("/") / "sub" / "big.bin").read_bytes() == \
        (src / "sub" / "big.bin").read_bytes()
    restic("forget", "--keep-last", "1", "--prune")


def test_virtual_hosted_style_under_the_domain(make_server):
    srv = make_server("vhost", env={"OBJVAULT_S3_DOMAIN": "s3.test"})
    tenant = Tenant(srv)
    bucket = _name("vh")
    tenant.client().create_bucket(Bucket=bucket)
    host = f"{bucket}.s3.test:{srv.s3_port}"
    s3 = tenant.keys["full"]["s3"]
    request = AWSRequest(method="PUT", url=f"http://{host}/dir/k", data=b"virtual",
                         headers={"x-amz-content-sha256": hashlib.sha256(b"virtual").hexdigest()})
    SigV4Auth(Credentials(s3["access_key_id"], s3["secret_access_key"]), "s3", REGION).add_auth(request)
    r = httpx.put(f"{srv.s3_url}/dir/k", content=b"virtual", headers={**dict(request.headers.items()), "Host": host})
    assert r.status_code == 200, r.text
    assert tenant.client().get_object(Bucket=bucket, Key="dir/k")["Body"].read() == b"virtual"


def test_deleting_a_bucket_ends_its_uploads_but_not_its_objects(tenant, bucket):
    s3 = tenant.client()
    s3.put_object(Bucket=bucket, Key="k", Body=b"x")
    upload = s3.create_multipart_upload(Bucket=bucket, Key="mp")["UploadId"]
    s3.upload_part(Bucket=bucket, Key="mp", UploadId=upload, PartNumber=1, Body=b"part")
    assert code_of(lambda: s3.delete_bucket(Bucket=bucket)) == (409, "BucketNotEmpty")
    s3.delete_object(Bucket=bucket, Key="k")
    s3.delete_bucket(Bucket=bucket)
    assert tenant.usage()["objects"] == 0
    assert code_of(lambda: s3.head_bucket(Bucket=bucket))[0] == 404


def test_the_operator_manages_buckets_through_the_admin_api_and_cli(srv, tenant):
    name = _name("adm")
    r = srv.admin.post(f"/v1/vaults/{tenant.vault}/buckets", json={"name": name})
    assert r.status_code == 201 and r.json()["vault"] == tenant.vault
    assert [b["name"] for b in srv.admin.get(f"/v1/vaults/{tenant.vault}/buckets").json()["buckets"]] == [name]
    assert name in [b["Name"] for b in tenant.client("read").list_buckets()["Buckets"]]
    other = Tenant(srv)
    assert srv.admin.delete(f"/v1/vaults/{other.vault}/buckets/{name}").status_code == 404
    cli = [str(Path(sys.executable).parent / "objvault"), "bucket"]
    env = {**os.environ, "OBJVAULT_LISTEN": f"127.0.0.1:{srv.port}", "OBJVAULT_ADMIN_TOKEN": srv.admin_token}
    listed = subprocess.run([*cli, "list", tenant.vault], env=env, capture_output=True, text=True, check=True)
    assert listed.stdout.split("\n")[0].split() == ["BUCKET", "CREATED"] and name in listed.stdout
    listed = subprocess.run([*cli, "list", "--json", tenant.vault], env=env, capture_output=True, text=True,
                            check=True)
    assert [b["name"] for b in json.loads(listed.stdout)["buckets"]] == [name]
    subprocess.run([*cli, "delete", tenant.vault, name], env=env, capture_output=True, check=True)
    assert srv.admin.get(f"/v1/vaults/{tenant.vault}/buckets").json()["buckets"] == []


def test_each_object_keeps_the_chunk_size_it_was_cut_with(tmp_path):
    from tests.apihelpers import SMALL_SEGMENTS
    from tests.server import Server

    srv = Server(tmp_path / "srv", env={**SMALL_SEGMENTS, "OBJVAULT_S3_CHUNK_BYTES": str(MIB)}).start()
    try:
        tenant = Tenant(srv)
        s3 = tenant.client()
        s3.create_bucket(Bucket="chunk-sizes")
        data = os.urandom(5 * MIB + 123)
        # A signed payload over several chunks: its SHA-256 continues from the first chunk's id.
        sha = hashlib.sha256(data).hexdigest()
        for claimed, status in ((hashlib.sha256(data[:-1]).hexdigest(), 400), (sha, 200)):
            headers = signed(tenant, "PUT", "/chunk-sizes/whole", data, {"x-amz-content-sha256": claimed})
            r = httpx.put(f"{srv.s3_url}/chunk-sizes/whole", content=data, headers=headers)
            assert r.status_code == status and (status == 200 or "XAmzContentSHA256Mismatch" in r.text), r.text
        assert tenant.usage()["objects"] == 1 and tenant.usage()["chunks"] == 6  # cut at 1 MiB
        ok = s3.create_multipart_upload(Bucket="chunk-sizes", Key="ok")["UploadId"]
        bad = s3.create_multipart_upload(Bucket="chunk-sizes", Key="bad")["UploadId"]
        first = {u: s3.upload_part(Bucket="chunk-sizes", Key=k, UploadId=u, PartNumber=1, Body=data[:5 * MIB])["ETag"]
                 for k, u in (("ok", ok), ("bad", bad))}
        srv.extra_env["OBJVAULT_S3_CHUNK_BYTES"] = str(2 * MIB)
        srv.restart()
        s3 = tenant.client()
        assert s3.get_object(Bucket="chunk-sizes", Key="whole")["Body"].read() == data
        span = s3.get_object(Bucket="chunk-sizes", Key="whole", Range=f"bytes={MIB - 5}-{3 * MIB + 5}")
        assert span["Body"].read() == data[MIB - 5:3 * MIB + 6]

        def finish(key: str, upload: str, tail: bytes):
            etag = s3.upload_part(Bucket="chunk-sizes", Key=key, UploadId=upload, PartNumber=2, Body=tail)["ETag"]
            return lambda: s3.complete_multipart_upload(
                Bucket="chunk-sizes", Key=key, UploadId=upload,
                MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": first[upload]}, {"PartNumber": 2, "ETag": etag}]})

        # A last part of one chunk fits the layout of the parts cut at 1 MiB...
        finish("ok", ok, data[5 * MIB:])()
        assert s3.get_object(Bucket="chunk-sizes", Key="ok")["Body"].read() == data
        got = s3.get_object(Bucket="chunk-sizes", Key="ok", Range=f"bytes={4 * MIB}-")["Body"].read()
        assert got == data[4 * MIB:]
        # ...one cut at 2 MiB into several chunks does not: refused, nothing written.
        assert code_of(finish("bad", bad, data[:5 * MIB])) == (400, "InvalidPart")
        assert code_of(lambda: s3.head_object(Bucket="chunk-sizes", Key="bad"))[0] == 404
    finally:
        srv.stop()
