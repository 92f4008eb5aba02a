"""S3 bucket lifecycle rules and CORS against a real server with boto3:
configuration round trips and errors, the x-amz-expiration header, the
worker expiring objects and aborting uploads while a lock or the retention
floor holds, CORS preflights allowed and refused, and headers on actual
cross-origin requests."""

from __future__ import annotations

import datetime
import email.utils
import time
import uuid

import httpx
import pytest

from tests.apihelpers import SMALL_SEGMENTS
from tests.server import Server
from tests.test_s3_front import Tenant, bucket, code_of, tenant  # noqa: F401  (fixtures)
from vault.services.s3lifecycle import DAY, midnight_after

DAY1 = {"Days": 1}


def _name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def _lifecycle(client, bucket: str, *rules: dict) -> None:
    client.put_bucket_lifecycle_configuration(Bucket=bucket, LifecycleConfiguration={"Rules": list(rules)})


# -- configuration -------------------------------------------------------------------------


def test_lifecycle_configuration_round_trip_and_delete(tenant, bucket):
    c = tenant.client()
    assert code_of(lambda: c.get_bucket_lifecycle_configuration(Bucket=bucket)) == \
        (404, "NoSuchLifecycleConfiguration")
    assert c.delete_bucket_lifecycle(Bucket=bucket)["ResponseMetadata"]["HTTPStatusCode"] == 204
    rules = [
        {"ID": "legacy", "Prefix": "logs/", "Status": "Enabled", "Expiration": {"Days": 30}},
        {"ID": "empty", "Filter": {}, "Status": "Disabled", "AbortIncompleteMultipartUpload": {"DaysAfterInitiation": 2}},
        {"ID": "tag", "Filter": {"Tag": {"Key": "k", "Value": "v"}}, "Status": "Enabled", "Expiration": DAY1},
        {"ID": "gt", "Filter": {"ObjectSizeGreaterThan": 100}, "Status": "Enabled", "Expiration": DAY1},
        {"ID": "and", "Filter": {"And": {"Prefix": "a/", "Tags": [{"Key": "x", "Value": "1"},
                                                                  {"Key": "y", "Value": "2"}],
                                         "ObjectSizeGreaterThan": 1, "ObjectSizeLessThan": 50}},
         "Status": "Enabled", "NoncurrentVersionExpiration": {"NoncurrentDays": 3, "NewerNoncurrentVersions": 2}},
        {"ID": "marker", "Filter": {"Prefix": "m/"}, "Status": "Enabled",
         "Expiration": {"ExpiredObjectDeleteMarker": True}},
    ]
    _lifecycle(c, bucket, *rules)
    assert c.get_bucket_lifecycle_configuration(Bucket=bucket)["Rules"] == rules
    dated = {"ID": "date", "Prefix": "", "Status": "Enabled",
             "Expiration": {"Date": datetime.datetime(2030, 1, 2, tzinfo=datetime.timezone.utc)}}
    _lifecycle(c, bucket, dated)
    assert c.get_bucket_lifecycle_configuration(Bucket=bucket)["Rules"] == [dated]
    assert c.delete_bucket_lifecycle(Bucket=bucket)["ResponseMetadata"]["HTTPStatusCode"] == 204
    assert code_of(lambda: c.get_bucket_lifecycle_configuration(Bucket=bucket))[1] == "NoSuchLifecycleConfiguration"


def test_a_rule_without_id_gets_one(tenant, bucket):
    c = tenant.client()
    _lifecycle(c, bucket, {"Prefix": "a/", "Status": "Enabled", "Expiration": DAY1},
               {"Prefix": "b/", "Status": "Enabled", "Expiration": DAY1})
    ids = [r["ID"] for r in c.get_bucket_lifecycle_configuration(Bucket=bucket)["Rules"]]
    assert len(set(ids)) == 2 and all(ids)


@pytest.mark.parametrize("rule, expected", [
    ({"ID": "a" * 256, "Prefix": "", "Status": "Enabled", "Expiration": DAY1}, "InvalidArgument"),
    ({"ID": "r", "Prefix": "", "Status": "enabled", "Expiration": DAY1}, "MalformedXML"),
    ({"ID": "r", "Prefix": "", "Status": "Enabled", "Expiration": {"Days": 0}}, "InvalidArgument"),
    ({"ID": "r", "Prefix": "", "Status": "Enabled",
      "Expiration": {"Date": datetime.datetime(2030, 1, 2, 12, tzinfo=datetime.timezone.utc)}}, "InvalidArgument"),
    ({"ID": "r", "Prefix": "", "Status": "Enabled", "Expiration": DAY1,
      "Transitions": [{"Days": 1, "StorageClass": "GLACIER"}]}, "InvalidRequest"),
    ({"ID": "r", "Filter": {"Prefix": "a", "ObjectSizeLessThan": 5}, "Status": "Enabled", "Expiration": DAY1},
     "MalformedXML"),
    ({"ID": "r", "Prefix": "", "Status": "Enabled"}, "InvalidRequest"),
    ({"ID": "r", "Prefix": "", "Status": "Enabled", "NoncurrentVersionExpiration": {"NoncurrentDays": -1}},
     "InvalidArgument"),
    ({"ID": "r", "Filter": {"Tag": {"Key": "k", "Value": "v"}}, "Status": "Enabled",
      "AbortIncompleteMultipartUpload": {"DaysAfterInitiation": 1}}, "InvalidRequest"),
])
def test_bad_rules_are_refused_and_nothing_is_kept(tenant, bucket, rule, expected):
    c = tenant.client()
    assert code_of(lambda: _lifecycle(c, bucket, rule)) == (400, expected)
    assert code_of(lambda: c.get_bucket_lifecycle_configuration(Bucket=bucket))[0] == 404


def test_duplicate_ids_refused_and_the_old_configuration_kept(tenant, bucket):
    c = tenant.client()
    kept = {"ID": "keep", "Prefix": "k/", "Status": "Enabled", "Expiration": DAY1}
    _lifecycle(c, bucket, kept)
    twice = {"ID": "same", "Prefix": "", "Status": "Enabled", "Expiration": DAY1}
    assert code_of(lambda: _lifecycle(c, bucket, twice, twice)) == (400, "InvalidArgument")
    assert c.get_bucket_lifecycle_configuration(Bucket=bucket)["Rules"] == [kept]


def test_garbled_dates_and_documents(tenant, bucket):
    c = tenant.client()
    url = f"{tenant.srv.s3_url}/{bucket}?lifecycle"
    for body, code in [(b"<LifecycleConfiguration><Rule><ID>r</ID><Prefix/><Status>Enabled</Status><Expiration>"
                        b"<Date>20200101</Date></Expiration></Rule></LifecycleConfiguration>", "InvalidArgument"),
                       (b"<LifecycleConfiguration><Rule>", "MalformedXML"),
                       (b"<LifecycleConfiguration/>", "MalformedXML")]:
        r = _signed(tenant, "PUT", url, body)
        assert (r.status_code, _code(r)) == (400, code), r.text
    assert code_of(lambda: c.get_bucket_lifecycle_configuration(Bucket=bucket))[0] == 404


def test_only_a_full_key_sets_lifecycle_and_other_vaults_see_nothing(srv, tenant, bucket):
    rule = {"ID": "r", "Prefix": "", "Status": "Enabled", "Expiration": DAY1}
    assert code_of(lambda: _lifecycle(tenant.client("append"), bucket, rule)) == (403, "AccessDenied")
    other = Tenant(srv)
    assert code_of(lambda: _lifecycle(other.client(), bucket, rule)) == (403, "AccessDenied")
    assert code_of(lambda: other.client().get_bucket_lifecycle_configuration(Bucket=bucket)) == (403, "AccessDenied")


# -- x-amz-expiration ---------------------------------------------------------------------------


def _expiry(headers: dict) -> tuple[float, str] | None:
    value = headers.get("x-amz-expiration")
    if value is None:
        return None
    date, _, rule = value.partition('", rule-id="')
    return email.utils.parsedate_to_datetime(date.removeprefix('expiry-date="')).timestamp(), rule.rstrip('"')


def test_expiration_header_on_put_head_and_get(tenant, bucket):
    c = tenant.client()
    _lifecycle(c, bucket, {"ID": "week", "Prefix": "logs/", "Status": "Enabled", "Expiration": {"Days": 7}},
               {"ID": "day", "Filter": {"And": {"Prefix": "logs/", "Tags": [{"Key": "t", "Value": "short"}]}},
                "Status": "Enabled", "Expiration": DAY1})
    put = c.put_object(Bucket=bucket, Key="logs/a", Body=b"x")["ResponseMetadata"]["HTTPHeaders"]
    head = c.head_object(Bucket=bucket, Key="logs/a")
    created = head["LastModified"].timestamp()
    want = (midnight_after(created + 7 * DAY), "week")
    assert _expiry(put)[1] == "week" and abs(_expiry(put)[0] - want[0]) <= DAY  # put's clock: same second or so
    assert _expiry(head["ResponseMetadata"]["HTTPHeaders"]) == want
    assert _expiry(c.get_object(Bucket=bucket, Key="logs/a")["ResponseMetadata"]["HTTPHeaders"]) == want
    assert want[0] % DAY == 0 and want[0] - created >= 7 * DAY
    # the earliest rule that applies wins: the tag brings the one-day rule in
    c.put_object_tagging(Bucket=bucket, Key="logs/a", Tagging={"TagSet": [{"Key": "t", "Value": "short"}]})
    assert _expiry(c.head_object(Bucket=bucket, Key="logs/a")["ResponseMetadata"]["HTTPHeaders"]) == \
        (midnight_after(created + DAY), "day")
    tagged = c.put_object(Bucket=bucket, Key="logs/b", Body=b"y", Tagging="t=short")
    assert _expiry(tagged["ResponseMetadata"]["HTTPHeaders"])[1] == "day"
    other = c.put_object(Bucket=bucket, Key="data/a", Body=b"x")["ResponseMetadata"]["HTTPHeaders"]
    assert "x-amz-expiration" not in other
    assert "x-amz-expiration" not in c.head_object(Bucket=bucket, Key="data/a")["ResponseMetadata"]["HTTPHeaders"]
    _lifecycle(c, bucket, {"ID": "off", "Prefix": "", "Status": "Disabled", "Expiration": DAY1})
    assert "x-amz-expiration" not in c.head_object(Bucket=bucket, Key="logs/a")["ResponseMetadata"]["HTTPHeaders"]


def test_expiration_header_on_copy_and_complete_multipart(tenant, bucket):
    c = tenant.client()
    _lifecycle(c, bucket, {"ID": "logs", "Prefix": "logs/", "Status": "Enabled", "Expiration": {"Days": 3}})
    c.put_object(Bucket=bucket, Key="data/src", Body=b"x")
    copied = c.copy_object(Bucket=bucket, Key="logs/copy", CopySource={"Bucket": bucket, "Key": "data/src"})
    assert _expiry(copied["ResponseMetadata"]["HTTPHeaders"])[1] == "logs"
    upload = c.create_multipart_upload(Bucket=bucket, Key="logs/mp")["UploadId"]
    part = c.upload_part(Bucket=bucket, Key="logs/mp", UploadId=upload, PartNumber=1, Body=b"y")
    done = c.complete_multipart_upload(Bucket=bucket, Key="logs/mp", UploadId=upload, MultipartUpload={
        "Parts": [{"PartNumber": 1, "ETag": part["ETag"]}]})
    created = c.head_object(Bucket=bucket, Key="logs/mp")["LastModified"].timestamp()
    assert _expiry(done["ResponseMetadata"]["HTTPHeaders"]) == (midnight_after(created + 3 * DAY), "logs")
    outside = c.copy_object(Bucket=bucket, Key="data/copy", CopySource={"Bucket": bucket, "Key": "data/src"})
    assert "x-amz-expiration" not in outside["ResponseMetadata"]["HTTPHeaders"]


# -- the worker ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def fast(tmp_path_factory):
    """A server whose lifecycle day is one second, run only when asked."""
    s = Server(tmp_path_factory.mktemp("lcfast"), env={
        **SMALL_SEGMENTS, "OBJVAULT_S3_LIFECYCLE_DAY_SECONDS": "1",
        "OBJVAULT_S3_LIFECYCLE_INTERVAL_SECONDS": "0"}).start()
    yield s
    s.stop()


def _run(server: Server) -> dict:
    r = server.admin.post("/v1/admin/jobs/s3_lifecycle", timeout=60)
    assert r.status_code == 200, r.text
    return r.json()


def _keys(client, bucket: str) -> list[str]:
    return [o["Key"] for o in client.list_objects_v2(Bucket=bucket).get("Contents", [])]


def test_worker_expires_matching_objects_and_aborts_stale_uploads(fast):
    t = Tenant(fast)
    c = t.client()
    bucket = _name("lcw")
    c.create_bucket(Bucket=bucket)
    for key, body, tags in [("old/a", b"1", ""), ("old/b", b"2", ""), ("keep/c", b"3", ""),
                            ("tagged/d", b"4", "gone=yes"), ("tagged/e", b"5", "gone=no"),
                            ("big/f", b"x" * 200, ""), ("big/g", b"x" * 10, "")]:
        c.put_object(Bucket=bucket, Key=key, Body=body, Tagging=tags)
    stale = c.create_multipart_upload(Bucket=bucket, Key="up/a")["UploadId"]
    other = c.create_multipart_upload(Bucket=bucket, Key="keep/up")["UploadId"]
    _lifecycle(c, bucket,
               {"ID": "old", "Prefix": "old/", "Status": "Enabled", "Expiration": {"Days": 2}},
               {"ID": "tags", "Filter": {"Tag": {"Key": "gone", "Value": "yes"}}, "Status": "Enabled",
                "Expiration": DAY1},
               {"ID": "size", "Filter": {"And": {"Prefix": "big/", "ObjectSizeGreaterThan": 100}},
                "Status": "Enabled", "Expiration": DAY1},
               {"ID": "off", "Prefix": "keep/", "Status": "Disabled", "Expiration": DAY1,
                "AbortIncompleteMultipartUpload": {"DaysAfterInitiation": 1}},
               {"ID": "mp", "Prefix": "up/", "Status": "Enabled",
                "AbortIncompleteMultipartUpload": {"DaysAfterInitiation": 1}})
    assert _run(fast)["expired"] == 0  # nothing is a "day" old yet
    time.sleep(2.2)
    stats = _run(fast)
    assert stats["expired"] == 4 and stats["aborted"] == 1, stats
    assert sorted(_keys(c, bucket)) == ["big/g", "keep/c", "tagged/e"]
    uploads = [u["UploadId"] for u in c.list_multipart_uploads(Bucket=bucket).get("Uploads", [])]
    assert uploads == [other] and stale not in uploads
    jobs = {j["name"]: j for j in fast.admin.get("/v1/admin/jobs").json()["jobs"]}
    assert jobs["s3_lifecycle"]["last_stats"]["expired"] == 4
    assert fast.admin.post("/v1/admin/jobs/no_such_job").status_code == 404
    assert t.usage()["objects"] == 3


def test_worker_skips_objects_under_retention_or_append_only_and_counts_them(fast):
    held = {}
    for setting in ({"retention_days": 1}, {"append_only": True}):
        t = Tenant(fast)
        c = t.client()
        bucket = _name("lch")
        c.create_bucket(Bucket=bucket)
        c.put_object(Bucket=bucket, Key="a", Body=b"kept")
        _lifecycle(c, bucket, {"ID": "all", "Filter": {}, "Status": "Enabled", "Expiration": DAY1})
        fast.admin.patch(f"/v1/vaults/{t.vault}", json=setting).raise_for_status()
        held[next(iter(setting))] = (c, bucket)
    time.sleep(1.2)
    stats = _run(fast)
    assert stats["skipped_retention"] >= 1 and stats["skipped_locked"] >= 1, stats
    for c, bucket in held.values():
        assert _keys(c, bucket) == ["a"]


def _versions(client, bucket: str, prefix: str = "") -> tuple[list[tuple[str, bool]], list[tuple[str, bool]]]:
    """((key, is latest) of each version, of each delete marker), newest first per key."""
    got = client.list_object_versions(Bucket=bucket, Prefix=prefix)
    return ([(v["Key"], v["IsLatest"]) for v in got.get("Versions", [])],
            [(m["Key"], m["IsLatest"]) for m in got.get("DeleteMarkers", [])])


def test_noncurrent_versions_expire_from_when_they_became_noncurrent(fast):
    c = Tenant(fast).client()
    bucket = _name("lcn")
    c.create_bucket(Bucket=bucket)
    c.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    ids = [c.put_object(Bucket=bucket, Key="n/a", Body=b"%d" % i)["VersionId"] for i in range(3)]
    c.put_object(Bucket=bucket, Key="keep/a", Body=b"1")
    c.put_object(Bucket=bucket, Key="keep/a", Body=b"2")
    old = c.put_object(Bucket=bucket, Key="t/a", Body=b"old")["VersionId"]
    _lifecycle(c, bucket, {"ID": "nc", "Prefix": "n/", "Status": "Enabled",
                           "NoncurrentVersionExpiration": {"NoncurrentDays": 2, "NewerNoncurrentVersions": 1}},
               {"ID": "t", "Prefix": "t/", "Status": "Enabled", "NoncurrentVersionExpiration": {"NoncurrentDays": 2}})
    time.sleep(2.2)
    late = c.put_object(Bucket=bucket, Key="n/a", Body=b"late")["VersionId"]
    c.put_object(Bucket=bucket, Key="t/a", Body=b"new")
    stats = _run(fast)
    assert stats["noncurrent_expired"] == 2, stats  # ids[0] and ids[1]; ids[2] is the one newest noncurrent kept
    left = [v["VersionId"] for v in c.list_object_versions(Bucket=bucket, Prefix="n/")["Versions"]]
    assert left == [late, ids[2]]
    # t/a's old version is two "days" old but became noncurrent just now: not due yet
    assert old in [v["VersionId"] for v in c.list_object_versions(Bucket=bucket, Prefix="t/")["Versions"]]
    time.sleep(2.2)
    assert _run(fast)["noncurrent_expired"] == 1  # t/a's; NewerNoncurrentVersions keeps n/a's newest at any age
    assert [v["VersionId"] for v in c.list_object_versions(Bucket=bucket, Prefix="n/")["Versions"]] == [late, ids[2]]
    assert len(_versions(c, bucket, "keep/")[0]) == 2  # outside the rule's prefix


def test_expiration_in_a_versioned_bucket_adds_a_delete_marker_and_lone_markers_go(fast):
    c = Tenant(fast).client()
    bucket = _name("lcm")
    c.create_bucket(Bucket=bucket)
    c.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    kept = c.put_object(Bucket=bucket, Key="e/a", Body=b"data")["VersionId"]
    c.put_object(Bucket=bucket, Key="m/a", Body=b"data")
    c.delete_object(Bucket=bucket, Key="m/a")  # a marker over one version
    c.put_object(Bucket=bucket, Key="m/b", Body=b"data")
    c.delete_object(Bucket=bucket, Key="m/b")
    _lifecycle(c, bucket, {"ID": "exp", "Prefix": "e/", "Status": "Enabled", "Expiration": DAY1},
               {"ID": "dm", "Prefix": "m/", "Status": "Enabled", "Expiration": {"ExpiredObjectDeleteMarker": True},
                "NoncurrentVersionExpiration": {"NoncurrentDays": 1}})
    time.sleep(1.2)
    stats = _run(fast)
    assert stats["expired"] == 1 and stats["noncurrent_expired"] == 2 and stats["delete_markers_removed"] == 2, stats
    assert _versions(c, bucket, "m/") == ([], [])
    versions, markers = _versions(c, bucket, "e/")
    assert versions == [("e/a", False)] and markers == [("e/a", True)]
    assert c.get_object(Bucket=bucket, Key="e/a", VersionId=kept)["Body"].read() == b"data"
    # the marker Expiration added is removed once it too is a "day" old, when no version is left under it
    c.delete_object(Bucket=bucket, Key="e/a", VersionId=kept)
    time.sleep(1.2)
    assert _run(fast)["delete_markers_removed"] == 1
    assert _versions(c, bucket, "e/") == ([], [])


def test_lifecycle_never_removes_locked_or_retained_versions_and_counts_them(fast):
    t = Tenant(fast)
    c = t.client()
    bucket = _name("lcl")
    c.create_bucket(Bucket=bucket, ObjectLockEnabledForBucket=True)
    until = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(hours=1)
    retained = c.put_object(Bucket=bucket, Key="a", Body=b"1", ObjectLockMode="COMPLIANCE",
                            ObjectLockRetainUntilDate=until)["VersionId"]
    held = c.put_object(Bucket=bucket, Key="b", Body=b"1", ObjectLockLegalHoldStatus="ON")["VersionId"]
    c.put_object(Bucket=bucket, Key="a", Body=b"2")
    c.delete_object(Bucket=bucket, Key="b")  # a marker over the held version: never a lone marker
    _lifecycle(c, bucket, {"ID": "all", "Filter": {}, "Status": "Enabled",
                           "NoncurrentVersionExpiration": {"NoncurrentDays": 1},
                           "Expiration": {"ExpiredObjectDeleteMarker": True}})
    time.sleep(1.2)
    stats = _run(fast)
    assert stats["skipped_locked"] >= 2 and stats["delete_markers_removed"] == 0, stats
    ids = {v["VersionId"] for v in c.list_object_versions(Bucket=bucket)["Versions"]}
    assert {retained, held} <= ids
    # the vault's retention floor holds a fresh noncurrent version too
    other = Tenant(fast)
    o = other.client()
    plain = _name("lcf")
    o.create_bucket(Bucket=plain)
    o.put_bucket_versioning(Bucket=plain, VersioningConfiguration={"Status": "Enabled"})
    first = o.put_object(Bucket=plain, Key="k", Body=b"1")["VersionId"]
    o.put_object(Bucket=plain, Key="k", Body=b"2")
    _lifecycle(o, plain, {"ID": "nc", "Filter": {}, "Status": "Enabled",
                          "NoncurrentVersionExpiration": {"NoncurrentDays": 1}})
    fast.admin.patch(f"/v1/vaults/{other.vault}", json={"retention_days": 1}).raise_for_status()
    time.sleep(1.2)
    assert _run(fast)["skipped_retention"] >= 1
    assert first in {v["VersionId"] for v in o.list_object_versions(Bucket=plain)["Versions"]}


def test_lifecycle_and_cors_survive_a_restart(fast):
    t = Tenant(fast)
    c = t.client()
    bucket = _name("lcr")
    c.create_bucket(Bucket=bucket)
    rule = {"ID": "r", "Prefix": "x/", "Status": "Enabled", "Expiration": {"Days": 3}}
    _lifecycle(c, bucket, rule)
    c.put_bucket_cors(Bucket=bucket, CORSConfiguration={"CORSRules": [
        {"AllowedMethods": ["GET"], "AllowedOrigins": ["https://app.example"]}]})
    fast.restart()
    c = t.client()
    assert c.get_bucket_lifecycle_configuration(Bucket=bucket)["Rules"] == [rule]
    assert c.get_bucket_cors(Bucket=bucket)["CORSRules"][0]["AllowedOrigins"] == ["https://app.example"]


# -- CORS -------------------------------------------------------------------------------------------


def test_cors_configuration_round_trip_and_errors(tenant, bucket):
    c = tenant.client()
    assert code_of(lambda: c.get_bucket_cors(Bucket=bucket)) == (404, "NoSuchCORSConfiguration")
    rules = [{"ID": "web", "AllowedHeaders": ["x-amz-*", "content-type"], "AllowedMethods": ["GET", "PUT"],
              "AllowedOrigins": ["https://*.example.com"], "ExposeHeaders": ["ETag"], "MaxAgeSeconds": 600},
             {"AllowedMethods": ["HEAD"], "AllowedOrigins": ["*"]}]
    c.put_bucket_cors(Bucket=bucket, CORSConfiguration={"CORSRules": rules})
    assert c.get_bucket_cors(Bucket=bucket)["CORSRules"] == rules
    for bad, code in [({"AllowedMethods": ["PATCH"], "AllowedOrigins": ["*"]}, "InvalidRequest"),
                      ({"AllowedMethods": ["GET"], "AllowedOrigins": ["*.*.example"]}, "InvalidRequest"),
                      ({"AllowedMethods": ["GET"], "AllowedOrigins": []}, "MalformedXML")]:
        assert code_of(lambda: c.put_bucket_cors(Bucket=bucket, CORSConfiguration={"CORSRules": [bad]})) == \
            (400, code)
    assert c.get_bucket_cors(Bucket=bucket)["CORSRules"] == rules
    rule = {"AllowedMethods": ["GET"], "AllowedOrigins": ["*"]}
    assert code_of(lambda: tenant.client("append").put_bucket_cors(
        Bucket=bucket, CORSConfiguration={"CORSRules": [rule]}))[1] == "AccessDenied"
    assert c.delete_bucket_cors(Bucket=bucket)["ResponseMetadata"]["HTTPStatusCode"] == 204
    assert code_of(lambda: c.get_bucket_cors(Bucket=bucket))[0] == 404


def _preflight(url: str, origin: str | None, method: str | None, headers: str | None = None) -> httpx.Response:
    h = {k: v for k, v in {"Origin": origin, "Access-Control-Request-Method": method,
                           "Access-Control-Request-Headers": headers}.items() if v is not None}
    return httpx.options(url, headers=h)


def test_cors_preflight_allowed_and_refused(srv, tenant, bucket):
    c = tenant.client()
    c.put_bucket_cors(Bucket=bucket, CORSConfiguration={"CORSRules": [
        {"AllowedMethods": ["GET", "PUT"], "AllowedOrigins": ["https://*.example.com"],
         "AllowedHeaders": ["x-amz-*", "Content-Type"], "ExposeHeaders": ["ETag"], "MaxAgeSeconds": 300},
        {"AllowedMethods": ["GET"], "AllowedOrigins": ["*"]}]})
    obj = f"{srv.s3_url}/{bucket}/some/key"
    r = _preflight(obj, "https://app.example.com", "PUT", "X-Amz-Date, content-type")
    assert r.status_code == 200, r.text
    assert r.headers["access-control-allow-origin"] == "https://app.example.com"
    assert r.headers["access-control-allow-methods"] == "GET, PUT"
    assert r.headers["access-control-allow-headers"] == "X-Amz-Date, content-type"
    assert r.headers["access-control-expose-headers"] == "ETag"
    assert r.headers["access-control-max-age"] == "300"
    assert r.headers["access-control-allow-credentials"] == "true"
    r = _preflight(obj, "https://elsewhere.org", "GET")
    assert r.status_code == 200 and r.headers["access-control-allow-origin"] == "*"
    assert r.headers["access-control-allow-methods"] == "GET"
    for origin, method, headers in [("https://elsewhere.org", "PUT", None),
                                    ("https://app.example.com", "DELETE", None),
                                    ("https://app.example.com", "PUT", "authorization")]:
        r = _preflight(obj, origin, method, headers)
        assert r.status_code == 403 and "access-control-allow-origin" not in r.headers
        assert _code(r) == "AccessForbidden"
    assert _preflight(obj, None, "GET").status_code == 400
    assert _preflight(obj, "https://app.example.com", None).status_code == 400
    # a presigned URL's query changes nothing
    url = c.generate_presigned_url("get_object", Params={"Bucket": bucket, "Key": "k"})
    assert _preflight(url, "https://a.example.com", "GET").status_code == 200


def test_cors_preflight_reveals_nothing_of_buckets_without_rules(srv, tenant, bucket):
    bare = _preflight(f"{srv.s3_url}/{bucket}/k", "https://a.example", "GET")
    missing = _preflight(f"{srv.s3_url}/{_name('nobucket')}/k", "https://a.example", "GET")
    assert bare.status_code == missing.status_code == 403
    strip = lambda r: r.text.split("<RequestId>")[0]  # noqa: E731
    assert strip(bare) == strip(missing)
    assert bare.headers.keys() - {"date", "x-amz-request-id"} == missing.headers.keys() - {"date", "x-amz-request-id"}


def test_cors_headers_on_actual_requests(srv, tenant, bucket):
    c = tenant.client(signature_version="s3v4")
    c.put_object(Bucket=bucket, Key="k", Body=b"hello")
    c.put_bucket_cors(Bucket=bucket, CORSConfiguration={"CORSRules": [
        {"AllowedMethods": ["GET"], "AllowedOrigins": ["https://app.example"], "ExposeHeaders": ["ETag"]}]})
    url = c.generate_presigned_url("get_object", Params={"Bucket": bucket, "Key": "k"})
    r = httpx.get(url, headers={"Origin": "https://app.example"})
    assert r.status_code == 200 and r.content == b"hello"
    assert r.headers["access-control-allow-origin"] == "https://app.example"
    assert r.headers["access-control-expose-headers"] == "ETag"
    assert "access-control-allow-origin" not in httpx.get(url, headers={"Origin": "https://evil.example"}).headers
    assert "access-control-allow-origin" not in httpx.get(url).headers
    # errors carry them too, so the page can read them
    missing = c.generate_presigned_url("get_object", Params={"Bucket": bucket, "Key": "nope"})
    r = httpx.get(missing, headers={"Origin": "https://app.example"})
    assert r.status_code == 404 and r.headers["access-control-allow-origin"] == "https://app.example"


# -- helpers ----------------------------------------------------------------------------------------


def _code(r: httpx.Response) -> str:
    return r.text.split("<Code>", 1)[1].split("</Code>", 1)[0] if "<Code>" in r.text else ""


def _signed(tenant: Tenant, method: str, url: str, body: bytes) -> httpx.Response:
    from botocore.auth import S3SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    s3 = tenant.keys["full"]["s3"]
    request = AWSRequest(method=method, url=url, data=body)
    S3SigV4Auth(Credentials(s3["access_key_id"], s3["secret_access_key"]), "s3", "us-east-1").add_auth(request)
    return httpx.request(method, url, content=body, headers=dict(request.headers))


# -- the worker, in process ------------------------------------------------------------------------


@pytest.fixture
def core(tmp_path):
    from vault.app import Vault
    from vault.config import load_config

    v = Vault(load_config(env={"OBJVAULT_DATA_DIRS": str(tmp_path / "data"), "OBJVAULT_ADMIN_TOKEN": "t",
                               **SMALL_SEGMENTS}))
    yield v
    v.close()


async def _bucket_with_objects(core, n: int, rules: list[dict]):
    from vault.policy import Principal
    from vault.services import VaultSettings
    from vault.services.s3objects import S3Meta

    admin = Principal(admin=True)
    svc = core.services
    await svc.vaults.create("acme", VaultSettings(), admin)
    await svc.buckets.create(admin, "acme", "bkt")
    await svc.buckets.set_setting(admin, "bkt", "lifecycle", rules)
    target = svc.buckets.target(admin, "bkt", "full")
    for i in range(n):
        await svc.s3.put(admin, target, f"k{i:03d}", [], 0, S3Meta(etag="e"))
    return svc, target


async def test_a_pass_is_bounded_and_the_next_goes_on_where_it_stopped(core, monkeypatch):
    from vault.services.s3lifecycle import S3Lifecycle

    svc, target = await _bucket_with_objects(core, 25, [{"id": "r", "enabled": True, "days": 1}])
    job = S3Lifecycle(core.index, svc.s3, scan_limit=10, clock=lambda: time.time() + 3 * DAY)
    monkeypatch.setattr(S3Lifecycle, "PAGE", 4)
    seen = [await job.run_once() for _ in range(3)]
    assert [(s["scanned"], s["expired"]) for s in seen] == [(10, 10), (10, 10), (5, 5)]
    assert list(core.index.objects(target.bucket.vid, "s3/bkt/")) == []
    assert (await job.run_once())["scanned"] == 0


async def test_an_object_replaced_since_it_was_read_is_not_expired(core):
    from vault.services.s3lifecycle import S3Lifecycle

    svc, target = await _bucket_with_objects(core, 1, [{"id": "r", "enabled": True, "days": 1}])
    job = S3Lifecycle(core.index, svc.s3)
    created = svc.s3.head(target, "k000").obj.created
    assert await job._expire(target, "k000", created - 1) is None  # another version than the one read
    assert svc.s3.head(target, "k000").obj.created == created
    assert await job._expire(target, "k000", created) == "expired"
    assert list(core.index.objects(target.bucket.vid, "s3/bkt/")) == []
