"""S3 versioning and Object Lock against a real server with boto3: versions,
delete markers, ListObjectVersions; a Veeam-like and a Comet-like sequence
where every way to delete or shorten a lock is tried with every credential
(append key, full key, admin token through the admin API and the CLI);
GOVERNANCE bypass, legal hold, the vault's retention floor, locks that
survive a SIGKILL, and GC and compaction that never reclaim a live version."""

from __future__ import annotations

import datetime
import os
import subprocess
import uuid
from urllib.parse import quote

import pytest
from botocore.exceptions import ClientError

from tests.gchelpers import GC_ENV, check_index
from tests.server import OBJVAULT
from tests.test_s3_front import Tenant, code_of

UTC = datetime.timezone.utc


def _name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def _in(days: float) -> datetime.datetime:
    return (datetime.datetime.now(UTC) + datetime.timedelta(days=days)).replace(microsecond=0)


def _body(s3, bucket: str, key: str, version: str | None = None) -> bytes:
    extra = {"VersionId": version} if version else {}
    return s3.get_object(Bucket=bucket, Key=key, **extra)["Body"].read()


def _versions(s3, bucket: str, **kw) -> list[tuple[str, str, bool, bool]]:
    """(key, version id, latest, delete marker), by key and newest first.

    botocore parses versions and delete markers into two lists; ids sort
    newest first and the null version is the oldest in these tests, which
    puts them back in S3's order."""
    doc = s3.list_object_versions(Bucket=bucket, **kw)
    entries = [(v["Key"], v["VersionId"], v["IsLatest"], False) for v in doc.get("Versions", [])]
    entries += [(m["Key"], m["VersionId"], m["IsLatest"], True) for m in doc.get("DeleteMarkers", [])]
    return sorted(entries, key=lambda e: (e[0], e[1] == "null", e[1]))


def cli(srv, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OBJVAULT_")}
    env["OBJVAULT_ADMIN_TOKEN"] = srv.admin_token
    return subprocess.run([OBJVAULT, *args, "--url", srv.url], env=env, capture_output=True, text=True,
                          timeout=60)


def test_versions_delete_markers_and_listing(srv):
    tenant = Tenant(srv)
    s3 = tenant.client()
    bucket = _name("ver")
    s3.create_bucket(Bucket=bucket)
    assert "Status" not in s3.get_bucket_versioning(Bucket=bucket)
    put = s3.put_object(Bucket=bucket, Key="k", Body=b"v0")  # before versioning: the null version
    assert "VersionId" not in put
    s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    assert s3.get_bucket_versioning(Bucket=bucket)["Status"] == "Enabled"
    ids = [s3.put_object(Bucket=bucket, Key="k", Body=f"v{i}".encode())["VersionId"] for i in (1, 2)]
    assert len(set(ids)) == 2 and "null" not in ids
    s3.put_object(Bucket=bucket, Key="k2", Body=b"other")

    listed = _versions(s3, bucket, Prefix="k", Delimiter="/")
    assert [(k, v, latest) for k, v, latest, _ in listed][:3] == \
        [("k", ids[1], True), ("k", ids[0], False), ("k", "null", False)]
    assert _body(s3, bucket, "k") == b"v2"
    assert _body(s3, bucket, "k", ids[0]) == b"v1"
    assert _body(s3, bucket, "k", "null") == b"v0"
    assert code_of(lambda: s3.get_object(Bucket=bucket, Key="k", VersionId="0" * 16)) == (404, "NoSuchVersion")
    assert code_of(lambda: s3.get_object(Bucket=bucket, Key="k", VersionId="bogus")) == (400, "InvalidArgument")

    # paging by key and version markers visits each version once, in order
    seen, kw = [], {}
    while True:
        doc = s3.list_object_versions(Bucket=bucket, MaxKeys=1, **kw)
        seen += [(v["Key"], v["VersionId"]) for v in doc.get("Versions", []) + doc.get("DeleteMarkers", [])]
        if not doc["IsTruncated"]:
            break
        kw = {"KeyMarker": doc["NextKeyMarker"], "VersionIdMarker": doc["NextVersionIdMarker"]}
    assert seen == [("k", ids[1]), ("k", ids[0]), ("k", "null"), ("k2", seen[3][1])]

    # a delete without a version id only adds a delete marker
    gone = s3.delete_object(Bucket=bucket, Key="k")
    assert gone["DeleteMarker"] is True
    with pytest.raises(ClientError) as caught:
        s3.head_object(Bucket=bucket, Key="k")
    assert caught.value.response["ResponseMetadata"]["HTTPHeaders"]["x-amz-delete-marker"] == "true"
    assert [o["Key"] for o in s3.list_objects_v2(Bucket=bucket).get("Contents", [])] == ["k2"]
    assert code_of(lambda: s3.get_object(Bucket=bucket, Key="k", VersionId=gone["VersionId"]))[0] == 405
    assert _body(s3, bucket, "k", ids[1]) == b"v2"
    assert code_of(lambda: s3.delete_bucket(Bucket=bucket)) == (409, "BucketNotEmpty")

    # removing the marker brings the newest version back; removing the current one promotes the next
    s3.delete_object(Bucket=bucket, Key="k", VersionId=gone["VersionId"])
    assert _body(s3, bucket, "k") == b"v2"
    s3.delete_object(Bucket=bucket, Key="k", VersionId=ids[1])
    assert _body(s3, bucket, "k") == b"v1"
    copied = s3.copy_object(Bucket=bucket, Key="copy", CopySource={"Bucket": bucket, "Key": "k", "VersionId": "null"})
    assert copied["CopySourceVersionId"] == "null" and _body(s3, bucket, "copy") == b"v0"

    # suspended: writes replace the null version, older versions stay
    s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Suspended"})
    assert "VersionId" not in s3.put_object(Bucket=bucket, Key="k", Body=b"s1")
    s3.put_object(Bucket=bucket, Key="k", Body=b"s2")
    versions = [(v, latest) for key, v, latest, _ in _versions(s3, bucket, Prefix="k", Delimiter="/") if key == "k"]
    assert sorted(versions) == sorted([("null", True), (ids[0], False)])
    assert _body(s3, bucket, "k", "null") == b"s2" and _body(s3, bucket, "k", ids[0]) == b"v1"

    for key, version, _, _ in _versions(s3, bucket):
        s3.delete_object(Bucket=bucket, Key=key, VersionId=version)
    assert "Versions" not in s3.list_object_versions(Bucket=bucket)
    s3.delete_bucket(Bucket=bucket)
    assert tenant.usage()["objects"] == 0


def test_unversioned_buckets_answer_as_before(srv):
    tenant = Tenant(srv)
    s3 = tenant.client()
    bucket = _name("plain")
    s3.create_bucket(Bucket=bucket)
    s3.put_object(Bucket=bucket, Key="a", Body=b"1")
    s3.put_object(Bucket=bucket, Key="a", Body=b"2")  # replaced in place: one object
    assert tenant.usage()["objects"] == 1
    doc = s3.list_object_versions(Bucket=bucket)
    assert [(v["Key"], v["VersionId"], v["IsLatest"]) for v in doc["Versions"]] == [("a", "null", True)]
    assert "DeleteMarker" not in s3.delete_object(Bucket=bucket, Key="a")
    assert "Versions" not in s3.list_object_versions(Bucket=bucket)
    s3.delete_bucket(Bucket=bucket)


def _admin_delete(srv, vault: str, name: str) -> int:
    return srv.admin.delete(f"/v1/vaults/{vault}/objects/{quote(name, safe='/')}").status_code


def test_compliance_lock_holds_against_every_credential(srv):
    """Veeam-like: a lock-enabled bucket, objects written then given COMPLIANCE
    retention with PutObjectRetention (and extended later); Comet-like: the
    mode and date sent with the PutObject itself."""
    tenant = Tenant(srv)
    full, append = tenant.client("full"), tenant.client("append")
    bucket = _name("lock")
    full.create_bucket(Bucket=bucket, ObjectLockEnabledForBucket=True)
    assert full.get_bucket_versioning(Bucket=bucket)["Status"] == "Enabled"
    assert code_of(lambda: full.put_bucket_versioning(
        Bucket=bucket, VersioningConfiguration={"Status": "Suspended"})) == (409, "InvalidBucketState")

    veeam = append.put_object(Bucket=bucket, Key="veeam/blk", Body=b"block")["VersionId"]
    until = _in(30)
    append.put_object_retention(Bucket=bucket, Key="veeam/blk", VersionId=veeam,
                                Retention={"Mode": "COMPLIANCE", "RetainUntilDate": until})
    comet = append.put_object(Bucket=bucket, Key="comet/pack", Body=b"pack", ObjectLockMode="COMPLIANCE",
                              ObjectLockRetainUntilDate=until)["VersionId"]
    for key, version in (("veeam/blk", veeam), ("comet/pack", comet)):
        head = full.head_object(Bucket=bucket, Key=key, VersionId=version)
        assert head["ObjectLockMode"] == "COMPLIANCE" and head["ObjectLockRetainUntilDate"] == until

        # every S3 way to remove or shorten it, with each key, bypass or not
        for s3 in (full, append):
            for bypass in (False, True):
                assert code_of(lambda: s3.delete_object(Bucket=bucket, Key=key, VersionId=version,
                                                        BypassGovernanceRetention=bypass))[0] == 403
                assert code_of(lambda: s3.put_object_retention(
                    Bucket=bucket, Key=key, VersionId=version, BypassGovernanceRetention=bypass,
                    Retention={"Mode": "COMPLIANCE", "RetainUntilDate": _in(1)})) == (403, "AccessDenied")
                assert code_of(lambda: s3.put_object_retention(
                    Bucket=bucket, Key=key, VersionId=version, BypassGovernanceRetention=bypass,
                    Retention={"Mode": "GOVERNANCE", "RetainUntilDate": until})) == (403, "AccessDenied")
        multi = full.delete_objects(Bucket=bucket, BypassGovernanceRetention=True,
                                    Delete={"Objects": [{"Key": key, "VersionId": version}]})
        assert [(e["Key"], e["VersionId"], e["Code"]) for e in multi["Errors"]] == [(key, version, "AccessDenied")]

        # a delete marker is always allowed; the version stays readable
        marker = full.delete_object(Bucket=bucket, Key=key)
        assert marker["DeleteMarker"] is True
        assert _body(full, bucket, key, version) in (b"block", b"pack")
        full.delete_object(Bucket=bucket, Key=key, VersionId=marker["VersionId"])

    # extending is accepted, from the append key too
    later = _in(60)
    append.put_object_retention(Bucket=bucket, Key="veeam/blk", VersionId=veeam,
                                Retention={"Mode": "COMPLIANCE", "RetainUntilDate": later})
    assert full.get_object_retention(Bucket=bucket, Key="veeam/blk")["Retention"]["RetainUntilDate"] == later

    # the admin token: native API deletes of the version's vault object, the
    # vault's deletion through the API and the CLI, the bucket's deletion
    assert _admin_delete(srv, tenant.vault, f"s3/{bucket}/veeam/blk") == 403
    assert srv.admin.delete(f"/v1/vaults/{tenant.vault}").status_code == 409
    assert cli(srv, "vault", "delete", tenant.vault).returncode != 0
    assert srv.admin.delete(f"/v1/vaults/{tenant.vault}/buckets/{bucket}").status_code == 409
    # a config change that lowers the vault's own locks changes nothing
    assert srv.admin.patch(f"/v1/vaults/{tenant.vault}", json={"append_only": False,
                                                               "retention_days": 0}).status_code == 200
    assert code_of(lambda: full.delete_object(Bucket=bucket, Key="comet/pack", VersionId=comet,
                                              BypassGovernanceRetention=True)) == (403, "AccessDenied")
    assert srv.admin.get(f"/v1/vaults/{tenant.vault}").status_code == 200
    assert _body(full, bucket, "comet/pack", comet) == b"pack"


def test_older_versions_are_locked_in_the_core_too(srv):
    tenant = Tenant(srv)
    full = tenant.client()
    bucket = _name("lock")
    full.create_bucket(Bucket=bucket, ObjectLockEnabledForBucket=True)
    full.put_object_lock_configuration(Bucket=bucket, ObjectLockConfiguration={
        "ObjectLockEnabled": "Enabled", "Rule": {"DefaultRetention": {"Mode": "COMPLIANCE", "Days": 1}}})
    first = full.put_object(Bucket=bucket, Key="k", Body=b"1")["VersionId"]
    full.put_object(Bucket=bucket, Key="k", Body=b"2")
    assert full.head_object(Bucket=bucket, Key="k", VersionId=first)["ObjectLockMode"] == "COMPLIANCE"
    names = srv.admin.get(f"/v1/vaults/{tenant.vault}/objects", params={"prefix": "s3v/"}).json()["objects"]
    assert len(names) == 1 and names[0]["key"].endswith(first)
    # the native API cannot even name an older version (a NUL is a control character)
    assert _admin_delete(srv, tenant.vault, names[0]["key"]) == 400
    assert _admin_delete(srv, tenant.vault, f"s3/{bucket}/k") == 403
    assert _body(full, bucket, "k", first) == b"1"


def test_governance_bypass_needs_the_header_and_a_full_key(srv):
    tenant = Tenant(srv)
    full, append = tenant.client("full"), tenant.client("append")
    bucket = _name("gov")
    full.create_bucket(Bucket=bucket, ObjectLockEnabledForBucket=True)
    version = append.put_object(Bucket=bucket, Key="k", Body=b"x", ObjectLockMode="GOVERNANCE",
                                ObjectLockRetainUntilDate=_in(10))["VersionId"]
    assert code_of(lambda: full.delete_object(Bucket=bucket, Key="k", VersionId=version)) == (403, "AccessDenied")
    assert code_of(lambda: append.delete_object(Bucket=bucket, Key="k", VersionId=version,
                                                BypassGovernanceRetention=True))[0] == 403
    assert code_of(lambda: append.put_object_retention(
        Bucket=bucket, Key="k", VersionId=version, BypassGovernanceRetention=True,
        Retention={"Mode": "GOVERNANCE", "RetainUntilDate": _in(1)})) == (403, "AccessDenied")
    assert code_of(lambda: full.put_object_retention(
        Bucket=bucket, Key="k", VersionId=version,
        Retention={"Mode": "GOVERNANCE", "RetainUntilDate": _in(1)})) == (403, "AccessDenied")
    full.put_object_retention(Bucket=bucket, Key="k", VersionId=version, BypassGovernanceRetention=True,
                              Retention={"Mode": "GOVERNANCE", "RetainUntilDate": _in(1)})
    assert full.delete_object(Bucket=bucket, Key="k", VersionId=version,
                              BypassGovernanceRetention=True)["VersionId"] == version
    assert code_of(lambda: full.head_object(Bucket=bucket, Key="k", VersionId=version))[0] == 404


def test_legal_hold_blocks_deletion_until_released(srv):
    tenant = Tenant(srv)
    full, append = tenant.client("full"), tenant.client("append")
    bucket = _name("hold")
    full.create_bucket(Bucket=bucket, ObjectLockEnabledForBucket=True)
    version = append.put_object(Bucket=bucket, Key="k", Body=b"x", ObjectLockLegalHoldStatus="ON")["VersionId"]
    assert full.get_object_legal_hold(Bucket=bucket, Key="k")["LegalHold"]["Status"] == "ON"
    assert code_of(lambda: full.delete_object(Bucket=bucket, Key="k", VersionId=version,
                                              BypassGovernanceRetention=True)) == (403, "AccessDenied")
    assert srv.admin.delete(f"/v1/vaults/{tenant.vault}").status_code == 409
    assert code_of(lambda: append.put_object_legal_hold(Bucket=bucket, Key="k",
                                                        LegalHold={"Status": "OFF"})) == (403, "AccessDenied")
    full.put_object_legal_hold(Bucket=bucket, Key="k", LegalHold={"Status": "OFF"})
    full.delete_object(Bucket=bucket, Key="k", VersionId=version)
    full.delete_bucket(Bucket=bucket)
    assert srv.admin.delete(f"/v1/vaults/{tenant.vault}").status_code == 204


def test_vault_retention_is_a_floor_for_s3(srv):
    tenant = Tenant(srv)
    srv.admin.patch(f"/v1/vaults/{tenant.vault}", json={"retention_days": 1}).raise_for_status()
    full = tenant.client()
    bucket = _name("floor")
    full.create_bucket(Bucket=bucket)
    full.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    version = full.put_object(Bucket=bucket, Key="k", Body=b"x")["VersionId"]
    assert code_of(lambda: full.delete_object(Bucket=bucket, Key="k", VersionId=version,
                                              BypassGovernanceRetention=True)) == (403, "AccessDenied")
    marker = full.delete_object(Bucket=bucket, Key="k")
    full.delete_object(Bucket=bucket, Key="k", VersionId=marker["VersionId"])  # markers hold no data
    assert _body(full, bucket, "k") == b"x"


def test_retention_survives_sigkill(make_server):
    srv = make_server("lockkill")
    tenant = Tenant(srv)
    full = tenant.client()
    bucket = _name("kill")
    full.create_bucket(Bucket=bucket, ObjectLockEnabledForBucket=True)
    until = _in(5)
    version = full.put_object(Bucket=bucket, Key="k", Body=b"x", ObjectLockMode="COMPLIANCE",
                              ObjectLockRetainUntilDate=until, ObjectLockLegalHoldStatus="ON")["VersionId"]
    srv.kill()
    srv.start()
    full = tenant.client()
    assert full.get_object_retention(Bucket=bucket, Key="k", VersionId=version)["Retention"] == \
        {"Mode": "COMPLIANCE", "RetainUntilDate": until}
    assert full.get_object_legal_hold(Bucket=bucket, Key="k")["LegalHold"]["Status"] == "ON"
    assert code_of(lambda: full.delete_object(Bucket=bucket, Key="k", VersionId=version))[0] == 403
    assert _admin_delete(srv, tenant.vault, f"s3/{bucket}/k") == 403


def test_gc_and_compaction_keep_every_live_version(make_server):
    """Versions share no chunks; overwritten, marked and deleted ones come and
    go while GC and compaction run: every live version reads back whole, and
    the stopped server's index recounts clean."""
    srv = make_server("vergc", env=GC_ENV)
    tenant = Tenant(srv)
    s3 = tenant.client()
    bucket = _name("gc")
    s3.create_bucket(Bucket=bucket, ObjectLockEnabledForBucket=True)
    bodies: dict[str, bytes] = {}
    unlocked: list[tuple[str, str]] = []
    for i in range(12):
        key, body = f"k{i % 3}", os.urandom(150_000 + i)
        locked = i % 3 == 0
        kw = {"ObjectLockMode": "COMPLIANCE", "ObjectLockRetainUntilDate": _in(1)} if locked else {}
        version = s3.put_object(Bucket=bucket, Key=key, Body=body, **kw)["VersionId"]
        bodies[version] = body
        if not locked:
            unlocked.append((key, version))
        if i % 4 == 3:
            s3.delete_object(Bucket=bucket, Key=key)  # a marker: nothing freed
        if i % 5 == 4:  # an unlocked version deleted: its bytes become garbage
            key, version = unlocked.pop(0)
            s3.delete_object(Bucket=bucket, Key=key, VersionId=version)
            bodies.pop(version)
        assert srv.admin.post("/v1/admin/gc", json={}, timeout=120).status_code == 200
    for key, vid, _, marker in _versions(s3, bucket):
        if not marker:
            assert _body(s3, bucket, key, vid) == bodies[vid]
    assert sum(1 for _, _, _, marker in _versions(s3, bucket) if not marker) == len(bodies)
    srv.stop()
    check_index(srv.data_dirs[0])
