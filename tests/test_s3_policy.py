"""The vault's policies shown once through S3: the append-only and retention
locks, replication to a SeaweedFS bucket and ``objvault restore`` back to a
vault readable through S3, and GC reclaiming the chunks of deleted objects.
(Quota and the ``append`` role are in test_s3_front.py.)"""

from __future__ import annotations

import io
import os
import subprocess

from boto3.s3.transfer import TransferConfig

from tests.gchelpers import GC_ENV
from tests.replhelpers import s3_target, wait_drained
from tests.s3tenant import MIB, Tenant, bucket, code_of, tenant, unique  # noqa: F401
from tests.server import OBJVAULT

MULTIPART = TransferConfig(multipart_threshold=5 * MIB, multipart_chunksize=5 * MIB)


def test_the_append_only_lock_binds_even_a_full_key(srv, tenant, bucket):
    s3 = tenant.client("full")
    s3.put_object(Bucket=bucket, Key="snap", Body=b"v1")
    assert srv.admin.patch(f"/v1/vaults/{tenant.vault}", json={"append_only": True}).status_code == 200
    assert code_of(lambda: s3.delete_object(Bucket=bucket, Key="snap")) == (403, "AccessDenied")
    assert code_of(lambda: s3.put_object(Bucket=bucket, Key="snap", Body=b"v2")) == (403, "AccessDenied")
    errors = s3.delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": "snap"}]})["Errors"]
    assert [(e["Key"], e["Code"]) for e in errors] == [("snap", "AccessDenied")]
    s3.put_object(Bucket=bucket, Key="new", Body=b"more")  # adding is what append-only allows
    assert s3.get_object(Bucket=bucket, Key="snap")["Body"].read() == b"v1"
    assert tenant.usage()["objects"] == 2


def test_a_retention_lock_refuses_deletes_and_overwrites(srv, tenant, bucket):
    s3 = tenant.client("full")
    assert srv.admin.patch(f"/v1/vaults/{tenant.vault}", json={"retention_days": 30}).status_code == 200
    s3.put_object(Bucket=bucket, Key="kept", Body=b"backup")
    s3.upload_fileobj(io.BytesIO(data := os.urandom(11 * MIB)), bucket, "big", Config=MULTIPART)
    for key in ("kept", "big"):
        assert code_of(lambda: s3.delete_object(Bucket=bucket, Key=key)) == (403, "AccessDenied")
        assert code_of(lambda: s3.put_object(Bucket=bucket, Key=key, Body=b"x")) == (403, "AccessDenied")
        assert code_of(lambda: s3.copy_object(Bucket=bucket, Key=key, CopySource={"Bucket": bucket, "Key": "kept"},
                                              MetadataDirective="REPLACE")) == (403, "AccessDenied")
    errors = s3.delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": "kept"}, {"Key": "big"}]})["Errors"]
    assert sorted((e["Key"], e["Code"]) for e in errors) == [("big", "AccessDenied"), ("kept", "AccessDenied")]
    assert code_of(lambda: s3.delete_bucket(Bucket=bucket)) == (409, "BucketNotEmpty")
    assert s3.get_object(Bucket=bucket, Key="big")["Body"].read() == data
    assert s3.get_object(Bucket=bucket, Key="kept")["Body"].read() == b"backup"


def test_objects_written_through_s3_replicate_and_restore_readable_through_s3(mkserver, s3bucket):
    cfg = s3_target(s3bucket, delete_delay_seconds=0)
    a = mkserver("a", config=cfg)
    tenant = Tenant(a)
    s3 = tenant.client()
    name = unique("repl")
    s3.create_bucket(Bucket=name)
    big = os.urandom(13 * MIB)
    s3.upload_fileobj(io.BytesIO(big), name, "dir/big.bin", Config=MULTIPART)
    s3.put_object(Bucket=name, Key="small.txt", Body=b"small", ContentType="text/plain", Metadata={"who": "me"},
                  Tagging="t=1")
    s3.put_object(Bucket=name, Key="gone", Body=b"deleted before the copy left")
    s3.delete_object(Bucket=name, Key="gone")
    before = {key: s3.head_object(Bucket=name, Key=key) for key in ("dir/big.bin", "small.txt")}
    wait_drained(a, delayed=True)
    a.stop()

    b = mkserver("b", config=cfg)  # an empty server with the same target
    env = {**b.env(), "PATH": os.environ.get("PATH", "")}
    out = subprocess.run([OBJVAULT, "restore", tenant.vault, "--from", "offsite", "--json"], env=env,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
    # S3 credentials are not replicated: a new key of the restored vault reads it
    s3b = Tenant.of(b, tenant.vault).client("read")
    assert [bk["Name"] for bk in s3b.list_buckets()["Buckets"]] == [name]
    assert [o["Key"] for o in s3b.list_objects_v2(Bucket=name)["Contents"]] == ["dir/big.bin", "small.txt"]
    assert s3b.get_object(Bucket=name, Key="dir/big.bin")["Body"].read() == big
    assert s3b.get_object(Bucket=name, Key="dir/big.bin", Range="bytes=5242870-5242889")["Body"].read() == \
        big[5242870:5242890]
    small = s3b.get_object(Bucket=name, Key="small.txt")
    assert (small["Body"].read(), small["ContentType"], small["Metadata"]) == (b"small", "text/plain", {"who": "me"})
    assert s3b.get_object_tagging(Bucket=name, Key="small.txt")["TagSet"] == [{"Key": "t", "Value": "1"}]
    for key, head in before.items():
        again = s3b.head_object(Bucket=name, Key=key)
        assert (again["ETag"], again["ContentLength"], again["LastModified"]) == \
            (head["ETag"], head["ContentLength"], head["LastModified"])


def test_gc_reclaims_the_chunks_of_objects_deleted_through_s3(make_server):
    srv = make_server("gc", env=GC_ENV)
    tenant = Tenant(srv)
    s3 = tenant.client()
    name = unique("gc")
    s3.create_bucket(Bucket=name)
    s3.upload_fileobj(io.BytesIO(data := os.urandom(12 * MIB)), name, "big", Config=MULTIPART)
    s3.put_object(Bucket=name, Key="small", Body=os.urandom(100_000))
    s3.copy_object(Bucket=name, Key="copy", CopySource={"Bucket": name, "Key": "big"})
    upload = s3.create_multipart_upload(Bucket=name, Key="abandoned")["UploadId"]
    s3.upload_part(Bucket=name, Key="abandoned", UploadId=upload, PartNumber=1, Body=os.urandom(6 * MIB))
    full = tenant.usage()
    assert full["chunks"] == 5  # 3 parts of big (copy shares them), small, the abandoned part

    def gc() -> dict:
        r = srv.admin.post("/v1/admin/gc", json={}, timeout=120)
        assert r.status_code == 200, r.text
        return r.json()

    s3.delete_object(Bucket=name, Key="big")
    s3.delete_object(Bucket=name, Key="small")
    s3.abort_multipart_upload(Bucket=name, Key="abandoned", UploadId=upload)
    assert gc()["chunks_deleted"] == 2  # small and the part; big's chunks are still the copy's
    assert tenant.usage()["chunks"] == 3 and tenant.usage()["stored_bytes"] == 12 * MIB
    assert s3.get_object(Bucket=name, Key="copy")["Body"].read() == data

    s3.delete_objects(Bucket=name, Delete={"Objects": [{"Key": "copy"}]})
    assert gc()["chunks_deleted"] == 3
    assert tenant.usage() == {**full, "stored_bytes": 0, "logical_bytes": 0, "chunks": 0, "objects": 0}
