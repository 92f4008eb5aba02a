"""s3cmd and the minio Python SDK against the S3 front door of a real server:
create a bucket, a multipart upload, a listing of more than one page, a get
compared byte for byte, deletes. (boto3, the aws CLI, rclone and restic's
s3 backend are in test_s3_front.py.)"""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from minio import Minio
from minio.deleteobjects import DeleteObject

from tests.s3tenant import MIB, REGION, Tenant, tenant, unique  # noqa: F401

# More keys than one page of a listing holds (1,000): each client must follow its continuation.
MANY = 1005
S3CMD = shutil.which("s3cmd", path=str(Path(sys.executable).parent)) or shutil.which("s3cmd")


def _fill(tenant: Tenant, bucket: str, prefix: str) -> list[str]:
    keys = [f"{prefix}{i:04d}" for i in range(MANY)]
    s3 = tenant.client()
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda key: s3.put_object(Bucket=bucket, Key=key, Body=key.encode()), keys))
    return keys


def _multipart_etag(data: bytes, part: int) -> str:
    md5s = b"".join(hashlib.md5(data[i:i + part]).digest() for i in range(0, len(data), part))
    return f'"{hashlib.md5(md5s).hexdigest()}-{-(-len(data) // part)}"'


def test_s3cmd_create_multipart_list_get_delete(tmp_path, tenant):
    s3 = tenant.keys["full"]["s3"]
    host = f"127.0.0.1:{tenant.srv.s3_port}"
    config = tmp_path / "s3cfg"
    config.write_text(f"[default]\naccess_key = {s3['access_key_id']}\nsecret_key = {s3['secret_access_key']}\n"
                      f"host_base = {host}\nhost_bucket = {host}\nuse_https = False\nsignature_v2 = False\n"
                      f"bucket_location = {REGION}\nmultipart_chunk_size_mb = 5\n")

    def s3cmd(*args: str) -> str:
        done = subprocess.run([S3CMD, "-c", str(config), "--no-progress", *args], capture_output=True, text=True,
                              timeout=120, env={**os.environ, "HOME": str(tmp_path)})
        assert done.returncode == 0, done.stdout + done.stderr
        return done.stdout

    bucket = unique("s3cmd")
    s3cmd("mb", f"s3://{bucket}")
    assert bucket in s3cmd("ls")
    data = os.urandom(12 * MIB)
    (tmp_path / "big.bin").write_bytes(data)
    s3cmd("put", str(tmp_path / "big.bin"), f"s3://{bucket}/dir/big.bin")
    head = tenant.client().head_object(Bucket=bucket, Key="dir/big.bin")
    assert head["ETag"] == _multipart_etag(data, 5 * MIB) and head["ContentLength"] == len(data)  # 3 parts

    keys = _fill(tenant, bucket, "many/")
    listed = [line.split()[-1] for line in s3cmd("ls", f"s3://{bucket}/many/").splitlines()]
    assert listed == [f"s3://{bucket}/{key}" for key in keys]
    assert s3cmd("ls", f"s3://{bucket}/").split() == ["DIR", f"s3://{bucket}/dir/", "DIR", f"s3://{bucket}/many/"]

    s3cmd("get", f"s3://{bucket}/dir/big.bin", str(tmp_path / "back.bin"))
    assert (tmp_path / "back.bin").read_bytes() == data
    s3cmd("get", f"s3://{bucket}/many/0999", str(tmp_path / "small"))
    assert (tmp_path / "small").read_bytes() == b"many/0999"

    s3cmd("del", f"s3://{bucket}/dir/big.bin")
    s3cmd("del", "--recursive", "--force", f"s3://{bucket}/many/")
    assert tenant.usage()["objects"] == 0
    s3cmd("rb", f"s3://{bucket}")
    assert bucket not in s3cmd("ls")


def test_minio_sdk_create_multipart_list_get_delete(tenant):
    s3 = tenant.keys["full"]["s3"]
    client = Minio(f"127.0.0.1:{tenant.srv.s3_port}", access_key=s3["access_key_id"],
                   secret_key=s3["secret_access_key"], secure=False, region=REGION)
    bucket = unique("minio")
    client.make_bucket(bucket)
    assert client.bucket_exists(bucket) and bucket in [b.name for b in client.list_buckets()]

    data = os.urandom(13 * MIB)
    # unknown length: the SDK streams it as 5 MiB parts
    result = client.put_object(bucket, "dir/big.bin", io.BytesIO(data), length=-1, part_size=5 * MIB,
                               metadata={"x-amz-meta-origin": "minio"})
    assert f'"{result.etag}"' == _multipart_etag(data, 5 * MIB)
    stat = client.stat_object(bucket, "dir/big.bin")
    assert stat.size == len(data) and stat.metadata["x-amz-meta-origin"] == "minio"

    keys = _fill(tenant, bucket, "many/")
    assert [o.object_name for o in client.list_objects(bucket, prefix="many/", recursive=True)] == keys
    assert [o.object_name for o in client.list_objects(bucket, prefix="many/", use_api_v1=True)] == keys
    assert [o.object_name for o in client.list_objects(bucket, start_after="many/0995", recursive=True)] == \
        keys[996:]
    assert [(o.object_name, o.is_dir) for o in client.list_objects(bucket)] == [("dir/", True), ("many/", True)]

    response = client.get_object(bucket, "dir/big.bin")
    try:
        assert response.read() == data
    finally:
        response.close()
        response.release_conn()
    response = client.get_object(bucket, "dir/big.bin", offset=5 * MIB - 10, length=20)
    try:
        assert response.read() == data[5 * MIB - 10:5 * MIB + 10]
    finally:
        response.close()
        response.release_conn()

    client.remove_object(bucket, "dir/big.bin")
    errors = list(client.remove_objects(bucket, (DeleteObject(key) for key in keys)))
    assert errors == [] and tenant.usage()["objects"] == 0
    assert list(client.list_objects(bucket, recursive=True)) == []
    client.remove_bucket(bucket)
    assert not client.bucket_exists(bucket)
