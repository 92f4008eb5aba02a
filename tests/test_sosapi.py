"""Veeam's SOSAPI documents against a real server, read with boto3: their
shape, their figures against the vault's quota and usage (or the data
directory's disk without a quota), Range and HEAD, and the folder kept the
server's: not listed, not writable, not readable with another vault's key."""

from __future__ import annotations

import hashlib
import os
import shutil
import uuid
from xml.etree.ElementTree import fromstring

import boto3
import pytest
from botocore.exceptions import ClientError

FOLDER = ".system-d26a9498-cb7c-4a87-a44a-8ae204f5ba6c/"
SYSTEM, CAPACITY = FOLDER + "system.xml", FOLDER + "capacity.xml"
MIB = 1 << 20


def _name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


class Vault:
    """A vault with a bucket and an S3 client per role."""

    def __init__(self, srv, quota: int | None = None) -> None:
        self.srv, self.name, self.bucket = srv, _name("veeam"), _name("repo")
        srv.admin.post("/v1/vaults", json={"name": self.name, "quota_bytes": quota}).raise_for_status()
        self.clients = {role: self._client(role) for role in ("read", "full")}
        self.clients["full"].create_bucket(Bucket=self.bucket)

    def _client(self, role: str):
        r = self.srv.admin.post(f"/v1/vaults/{self.name}/keys", json={"role": role})
        r.raise_for_status()
        s3 = r.json()["s3"]
        return boto3.client("s3", endpoint_url=self.srv.s3_url, region_name="us-east-1",
                            aws_access_key_id=s3["access_key_id"], aws_secret_access_key=s3["secret_access_key"])

    @property
    def s3(self):
        return self.clients["full"]

    def stored(self) -> int:
        return self.srv.admin.get(f"/v1/vaults/{self.name}").json()["usage"]["stored_bytes"]

    def document(self, key: str, role: str = "full") -> tuple[dict, dict]:
        """The document's fields (tag -> text, nested ones by path) and the GetObject answer."""
        got = self.clients[role].get_object(Bucket=self.bucket, Key=key)
        body = got["Body"].read()
        got["body"] = body
        root = fromstring(body)
        fields = {el.tag: el.text for el in root}
        fields.update({f"{el.tag}/{sub.tag}": sub.text for el in root for sub in el})
        return {"root": root.tag, **fields}, got


def error(call) -> tuple[int, str]:
    """The (status, S3 code) ``call`` fails with."""
    try:
        call()
    except ClientError as e:
        return e.response["ResponseMetadata"]["HTTPStatusCode"], e.response["Error"]["Code"]
    raise AssertionError("the call succeeded")


@pytest.fixture
def quota_vault(srv) -> Vault:
    return Vault(srv, quota=64 * MIB)


def test_system_document_says_what_veeam_needs(quota_vault):
    doc, got = quota_vault.document(SYSTEM)
    assert doc["root"] == "SystemInfo"
    assert doc["ProtocolVersion"] == '"1.0"'
    assert doc["ModelName"] == '"objvault"'
    assert doc["ProtocolCapabilities/CapacityInfo"] == "true"
    assert doc["ProtocolCapabilities/UploadSessions"] == "false"
    assert doc["ProtocolCapabilities/IAMSTS"] == "false"
    assert doc["SystemRecommendations/KbBlockSize"] == "4096"
    assert got["ContentType"] == "application/xml"
    assert got["ETag"] == f'"{hashlib.md5(got["body"]).hexdigest()}"'
    assert got["body"].startswith(b'<?xml version="1.0" encoding="UTF-8"?>')
    assert got["ContentLength"] == len(got["body"])


def test_capacity_is_the_quota_and_the_usage(quota_vault):
    v = quota_vault
    for i in range(3):
        v.s3.put_object(Bucket=v.bucket, Key=f"blocks/{i}", Body=os.urandom(MIB + i))
    used = v.stored()
    assert used >= 3 * MIB
    doc, got = v.document(CAPACITY)
    assert doc["root"] == "CapacityInfo"
    assert (int(doc["Capacity"]), int(doc["Available"]), int(doc["Used"])) == (64 * MIB, 64 * MIB - used, used)
    assert got["ETag"] == f'"{hashlib.md5(got["body"]).hexdigest()}"'
    # reading it stores nothing: the usage is what it was
    assert v.stored() == used
    # and it follows the vault: a new object counts at once
    v.s3.put_object(Bucket=v.bucket, Key="blocks/3", Body=os.urandom(MIB))
    doc, _ = v.document(CAPACITY)
    assert int(doc["Used"]) == v.stored() >= used + MIB
    assert int(doc["Available"]) == 64 * MIB - int(doc["Used"])


def test_capacity_without_quota_is_the_data_directory_disk(srv):
    v = Vault(srv)
    v.s3.put_object(Bucket=v.bucket, Key="one", Body=os.urandom(MIB))
    doc, _ = v.document(CAPACITY)
    disk = shutil.disk_usage(srv.data_dirs[0])
    assert int(doc["Capacity"]) == disk.total
    assert abs(int(doc["Available"]) - disk.free) < 256 * MIB  # other tests write meanwhile
    assert int(doc["Used"]) == v.stored() >= MIB


def test_head_and_range(quota_vault):
    v = quota_vault
    _, whole = v.document(SYSTEM)
    body = whole["body"]
    head = v.s3.head_object(Bucket=v.bucket, Key=SYSTEM)
    assert head["ContentLength"] == len(body)
    assert head["ETag"] == whole["ETag"]
    assert head["ContentType"] == "application/xml"
    part = v.s3.get_object(Bucket=v.bucket, Key=SYSTEM, Range="bytes=0-37")
    assert part["ResponseMetadata"]["HTTPStatusCode"] == 206
    assert part["Body"].read() == body[:38]
    assert part["ContentRange"] == f"bytes 0-37/{len(body)}"
    tail = v.s3.get_object(Bucket=v.bucket, Key=CAPACITY, Range="bytes=-16")
    assert tail["Body"].read().endswith(b"</CapacityInfo>")
    assert error(lambda: v.s3.get_object(Bucket=v.bucket, Key=SYSTEM, Range=f"bytes={len(body)}-")) == \
        (416, "InvalidRange")


def test_a_read_key_reads_them(quota_vault):
    doc, _ = quota_vault.document(CAPACITY, role="read")
    assert int(doc["Capacity"]) == 64 * MIB


def test_not_listed(quota_vault):
    v = quota_vault
    v.s3.put_object(Bucket=v.bucket, Key="data", Body=b"x")
    v.document(SYSTEM)
    assert [o["Key"] for o in v.s3.list_objects_v2(Bucket=v.bucket)["Contents"]] == ["data"]
    assert v.s3.list_objects_v2(Bucket=v.bucket, Prefix=FOLDER)["KeyCount"] == 0
    assert v.s3.list_objects(Bucket=v.bucket, Delimiter="/").get("CommonPrefixes") is None


def test_another_vaults_key_is_refused(srv, quota_vault):
    other = Vault(srv)
    for key in (SYSTEM, CAPACITY):
        assert error(lambda: other.s3.get_object(Bucket=quota_vault.bucket, Key=key)) == (403, "AccessDenied")
        assert error(lambda: other.s3.head_object(Bucket=quota_vault.bucket, Key=key))[0] == 403
    assert error(lambda: quota_vault.s3.get_object(Bucket=_name("nobucket"), Key=SYSTEM)) == (404, "NoSuchBucket")


def test_the_folder_cannot_be_written_or_deleted(quota_vault):
    v = quota_vault
    before = v.stored()
    for key in (SYSTEM, CAPACITY, FOLDER + "other.xml"):
        assert error(lambda: v.s3.put_object(Bucket=v.bucket, Key=key, Body=b"<x/>")) == (403, "AccessDenied")
        assert error(lambda: v.s3.delete_object(Bucket=v.bucket, Key=key)) == (403, "AccessDenied")
        assert error(lambda: v.s3.create_multipart_upload(Bucket=v.bucket, Key=key)) == (403, "AccessDenied")
    v.s3.put_object(Bucket=v.bucket, Key="src", Body=b"payload")
    assert error(lambda: v.s3.copy_object(Bucket=v.bucket, Key=SYSTEM,
                                          CopySource={"Bucket": v.bucket, "Key": "src"})) == (403, "AccessDenied")
    assert error(lambda: v.s3.put_object_tagging(Bucket=v.bucket, Key=SYSTEM,
                                                 Tagging={"TagSet": []})) == (403, "AccessDenied")
    # the documents are still generated, nothing was stored under the folder
    doc, _ = v.document(SYSTEM)
    assert doc["ProtocolVersion"] == '"1.0"'
    assert v.s3.list_objects_v2(Bucket=v.bucket, Prefix=FOLDER)["KeyCount"] == 0
    assert error(lambda: v.s3.get_object(Bucket=v.bucket, Key=FOLDER + "other.xml")) == (404, "NoSuchKey")
    assert v.stored() == before + len(b"payload")
