"""S3 buckets through a disaster restore from a replica in a real SeaweedFS
bucket: bucket records (versioning, Object Lock with its default retention,
lifecycle, CORS, tags, location constraint, empty buckets) come back
exactly, and so do the versions of a lock-enabled bucket with their
COMPLIANCE retention and legal hold, which still refuse every delete after
the restore."""

from __future__ import annotations

import asyncio
import datetime
import shutil

import pytest
from botocore.exceptions import ClientError

from tests.replhelpers import layout, s3_target, wait_drained, wait_restore
from tests.s3tenant import Tenant, code_of

VAULT = "acme"
LIFECYCLE = [{"ID": "logs", "Filter": {"Prefix": "logs/"}, "Status": "Enabled", "Expiration": {"Days": 30},
              "NoncurrentVersionExpiration": {"NoncurrentDays": 7}}]
CORS = [{"AllowedMethods": ["GET"], "AllowedOrigins": ["https://app.example"], "MaxAgeSeconds": 60}]
TAGS = [{"Key": "team", "Value": "backup"}]
LOCK = {"ObjectLockEnabled": "Enabled", "Rule": {"DefaultRetention": {"Mode": "GOVERNANCE", "Days": 3}}}


def _settings(c, locked: str, empty: str, gone: str) -> dict:
    """Everything a client can read back of the buckets' records."""
    names = sorted(b["Name"] for b in c.list_buckets()["Buckets"])
    return {
        "names": names,
        "gone": code_of(lambda: c.head_bucket(Bucket=gone)),
        "versioning": [c.get_bucket_versioning(Bucket=n).get("Status") for n in names],
        "location": [c.get_bucket_location(Bucket=n)["LocationConstraint"] for n in names],
        "lock": c.get_object_lock_configuration(Bucket=locked)["ObjectLockConfiguration"],
        "lifecycle": c.get_bucket_lifecycle_configuration(Bucket=locked)["Rules"],
        "cors": c.get_bucket_cors(Bucket=empty)["CORSRules"],
        "tags": c.get_bucket_tagging(Bucket=empty)["TagSet"],
    }


def _versions(c, bucket: str) -> list[tuple]:
    got = c.list_object_versions(Bucket=bucket)
    return sorted((v["Key"], v["VersionId"], v["IsLatest"], v.get("ETag", "")) for v in
                  got.get("Versions", []) + got.get("DeleteMarkers", []))


def _lock_state(c, bucket: str, key: str, version: str) -> tuple:
    """((mode, retain until) or the error, legal hold status or the error) of a version."""
    def read(call, pick):
        try:
            return pick(call(Bucket=bucket, Key=key, VersionId=version))
        except ClientError as e:
            return e.response["Error"]["Code"]

    return (read(c.get_object_retention, lambda r: (r["Retention"]["Mode"], r["Retention"]["RetainUntilDate"])),
            read(c.get_object_legal_hold, lambda r: r["LegalHold"]["Status"]))


@pytest.mark.parametrize("encrypted", [False, True])
def test_buckets_versions_and_locks_survive_a_disaster_restore(mkserver, s3bucket, tmp_path, encrypted):
    extra = {}
    if encrypted:
        key_file = tmp_path / "replica.key"
        key_file.write_bytes(bytes(range(32)))
        extra["encryption_key_file"] = str(key_file)
    cfg = s3_target(s3bucket, **extra)
    a = mkserver("a", config=cfg)
    t = Tenant(a, vault=None)
    vault = t.vault
    c = t.client()
    locked, empty, gone = "locked-" + vault[-8:], "empty-" + vault[-8:], "gone-" + vault[-8:]
    c.create_bucket(Bucket=locked, ObjectLockEnabledForBucket=True)
    c.put_object_lock_configuration(Bucket=locked, ObjectLockConfiguration=LOCK)
    c.put_bucket_lifecycle_configuration(Bucket=locked, LifecycleConfiguration={"Rules": LIFECYCLE})
    c.create_bucket(Bucket=empty, CreateBucketConfiguration={"LocationConstraint": "us-east-1"})
    c.put_bucket_cors(Bucket=empty, CORSConfiguration={"CORSRules": CORS})
    c.put_bucket_tagging(Bucket=empty, Tagging={"TagSet": TAGS})
    c.put_bucket_versioning(Bucket=empty, VersioningConfiguration={"Status": "Suspended"})
    c.create_bucket(Bucket=gone)
    c.delete_bucket(Bucket=gone)
    until = (datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(days=2)).replace(microsecond=0)
    v1 = c.put_object(Bucket=locked, Key="backup/a", Body=b"first", ObjectLockMode="COMPLIANCE",
                      ObjectLockRetainUntilDate=until)["VersionId"]
    v2 = c.put_object(Bucket=locked, Key="backup/a", Body=b"second", ObjectLockLegalHoldStatus="ON")["VersionId"]
    c.delete_object(Bucket=locked, Key="backup/a")  # a delete marker on top
    wait_drained(a)
    before = (_settings(c, locked, empty, gone), _versions(c, locked),
              [_lock_state(c, locked, "backup/a", v) for v in (v1, v2)])
    assert before[2][0][0] == ("COMPLIANCE", until) and before[2][1][1] == "ON"
    assert before[0]["location"] == ["us-east-1", None]  # empty-..., locked-...
    a.stop()
    for d in a.data_dirs:
        shutil.rmtree(d)  # the disaster

    b = mkserver("b", config=cfg)
    r = b.admin.post("/v1/admin/restore", json={"vault": vault, "from": "offsite"})
    assert r.status_code == 202, r.text
    st = wait_restore(b)
    assert st["state"] == "done", st
    # the restore sent none of its own steps back: the target still holds every bucket record
    assert wait_drained(b)["sent_entries"] == 0
    kept = asyncio.run(layout(s3bucket, key=bytes(range(32)) if encrypted else None).get_vault(vault))
    assert [x["name"] for x in kept["buckets"]] == sorted([empty, locked])
    c = Tenant.of(b, vault).client()
    assert (_settings(c, locked, empty, gone), _versions(c, locked),
            [_lock_state(c, locked, "backup/a", v) for v in (v1, v2)]) == before
    assert c.get_object(Bucket=locked, Key="backup/a", VersionId=v1)["Body"].read() == b"first"
    # the locks still hold: no delete of a locked version, by any credential, bypass or not
    for version in (v1, v2):
        assert code_of(lambda: c.delete_object(Bucket=locked, Key="backup/a", VersionId=version)) == \
            (403, "AccessDenied")
        assert code_of(lambda: c.delete_object(Bucket=locked, Key="backup/a", VersionId=version,
                                               BypassGovernanceRetention=True)) == (403, "AccessDenied")
        assert b.admin.delete(f"/v1/vaults/{vault}").status_code >= 400
    assert code_of(lambda: c.put_object_retention(Bucket=locked, Key="backup/a", VersionId=v1, Retention={
        "Mode": "COMPLIANCE", "RetainUntilDate": until - datetime.timedelta(days=1)})) == (403, "AccessDenied")
    later = until + datetime.timedelta(days=5)
    c.put_object_retention(Bucket=locked, Key="backup/a", VersionId=v1,
                           Retention={"Mode": "COMPLIANCE", "RetainUntilDate": later})
    assert _lock_state(c, locked, "backup/a", v1)[0] == ("COMPLIANCE", later)
    # a new object gets the restored bucket's default retention
    put = c.put_object(Bucket=locked, Key="new", Body=b"n")
    assert c.get_object_retention(Bucket=locked, Key="new", VersionId=put["VersionId"])["Retention"]["Mode"] == \
        "GOVERNANCE"


def test_a_bucket_name_another_vault_owns_on_the_restoring_server_is_reported(mkserver, s3bucket):
    cfg = s3_target(s3bucket)
    a = mkserver("a", config=cfg)
    t = Tenant(a)
    name = "taken-" + t.vault[-8:]
    t.client().create_bucket(Bucket=name)
    t.client().create_bucket(Bucket="free-" + t.vault[-8:])
    wait_drained(a)
    a.stop()

    b = mkserver("b", config=cfg)
    Tenant(b).client().create_bucket(Bucket=name)
    b.create_vault(t.vault + "x")  # unrelated
    r = b.admin.post("/v1/admin/restore", json={"vault": t.vault, "from": "offsite"})
    assert r.status_code == 202
    st = wait_restore(b)
    assert st["state"] == "failed" and name in st["error"], st
    c = Tenant.of(b, t.vault).client()
    assert [x["Name"] for x in c.list_buckets()["Buckets"]] == ["free-" + t.vault[-8:]]
