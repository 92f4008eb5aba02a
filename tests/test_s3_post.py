"""S3 POST Object (browser-form uploads under a signed policy) against a real
server: forms built by hand and sent with httpx, signed with SigV4 and with
SigV2 (accepted for the policy only), read back with boto3. Refusals are
checked for their S3 error and for leaving nothing behind: no object, and
after a GC pass the vault's usage is what it was before.

(The ceph/s3-tests ``post_object`` tests in tests/s3_conformance_passing.txt
run the suite's own forms; the policy parser is tested in process here too.)
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import hmac
import json
import os
import time
import uuid

import httpx
import pytest

from tests.gchelpers import GC_ENV
from tests.s3tenant import MIB, REGION, Tenant, bucket, code_of, raw_exchange, tenant, unchanged  # noqa: F401
from tests.server import Server
from vault.s3.errors import S3Error
from vault.s3.post import FIELD_OVERHEAD, MAX_FIELD_BYTES, parse_policy
from vault.s3.sigv4 import signing_key


@pytest.fixture(scope="module")
def srv(tmp_path_factory):
    # GC at once (grace 0): what a refused body stored must be collectable right away.
    s = Server(tmp_path_factory.mktemp("s3post"), env=GC_ENV).start()
    yield s
    s.stop()


def _expiry(seconds: float) -> str:
    return (datetime.datetime.now(datetime.timezone.utc)
            + datetime.timedelta(seconds=seconds)).strftime("%Y-%m-%dT%H:%M:%SZ")


def form(tenant: Tenant, bucket: str, fields: dict, conditions: list | None = None, *, v4: bool = True,
         role: str = "full", expires: float = 600, secret: str | None = None) -> dict:
    """The fields of a signed form: ``fields`` plus the policy and its
    signature; the policy names the bucket, each of ``fields`` exactly,
    the SigV4 fields, and ``conditions`` (then instead of ``fields``' own)."""
    s3 = tenant.keys[role]["s3"]
    secret = secret or s3["secret_access_key"]
    signing: dict[str, str] = {}
    if v4:
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        signing = {"x-amz-algorithm": "AWS4-HMAC-SHA256", "x-amz-date": stamp,
                   "x-amz-credential": f"{s3['access_key_id']}/{stamp[:8]}/{REGION}/s3/aws4_request"}
    named = conditions if conditions is not None else [{name: value} for name, value in fields.items()]
    document = {"expiration": _expiry(expires),
                "conditions": [{"bucket": bucket}, *named, *({k: v} for k, v in signing.items())]}
    policy = base64.b64encode(json.dumps(document).encode()).decode()
    if v4:
        key = signing_key(secret, signing["x-amz-date"][:8], REGION)
        signature = {"x-amz-signature": hmac.new(key, policy.encode(), hashlib.sha256).hexdigest()}
    else:
        signature = {"AWSAccessKeyId": s3["access_key_id"],
                     "signature": base64.b64encode(hmac.new(secret.encode(), policy.encode(),
                                                            hashlib.sha1).digest()).decode()}
    return {**fields, **signing, "policy": policy, **signature}


def post(tenant: Tenant, bucket: str, fields: dict, body: bytes = b"hello", filename: str = "upload.bin",
         **kw) -> httpx.Response:
    """POST the form (its fields, then the file) to the bucket."""
    return httpx.post(f"{tenant.srv.s3_url}/{bucket}", data=fields,
                      files={"file": (filename, body, "application/octet-stream")}, timeout=60, **kw)


def _error(r: httpx.Response) -> tuple[int, str]:
    assert "x-amz-request-id" in r.headers and r.headers["content-type"].startswith("application/xml"), r.text
    return r.status_code, r.text.split("<Code>", 1)[1].split("</Code>", 1)[0]


# -- uploads that succeed -------------------------------------------------------------------


def test_a_sigv4_form_stores_the_file_with_its_fields(tenant, bucket):
    data = os.urandom(3 * MIB + 17)
    tagging = "<Tagging><TagSet><Tag><Key>team</Key><Value>blue</Value></Tag></TagSet></Tagging>"
    fields = {"key": "uploads/${filename}", "Content-Type": "text/plain", "x-amz-meta-origin": "browser",
              "acl": "private", "tagging": tagging}
    conditions = [["starts-with", "$key", "uploads/"], {"content-type": "text/plain"},
                  ["starts-with", "$x-amz-meta-origin", ""], {"acl": "private"}, ["eq", "$tagging", tagging],
                  ["content-length-range", 1, 4 * MIB]]
    r = post(tenant, bucket, form(tenant, bucket, fields, conditions), data, filename="report.txt")
    assert r.status_code == 204, r.text
    assert r.headers["ETag"] == f'"{hashlib.md5(data).hexdigest()}"'
    assert r.headers["Location"].endswith(f"/{bucket}/uploads/report.txt")
    s3 = tenant.client()
    got = s3.get_object(Bucket=bucket, Key="uploads/report.txt")
    assert got["Body"].read() == data
    assert got["ContentType"] == "text/plain" and got["Metadata"] == {"origin": "browser"}
    assert s3.get_object_tagging(Bucket=bucket, Key="uploads/report.txt")["TagSet"] == [
        {"Key": "team", "Value": "blue"}]


def test_a_sigv2_form_with_success_status_201_answers_the_document(tenant, bucket):
    r = post(tenant, bucket, form(tenant, bucket, {"key": "v2.txt", "success_action_status": "201"}, v4=False),
             b"signed with SigV2")
    assert r.status_code == 201, r.text
    assert "<Key>v2.txt</Key>" in r.text and f"<Bucket>{bucket}</Bucket>" in r.text
    assert f"<ETag>\"{hashlib.md5(b'signed with SigV2').hexdigest()}\"</ETag>" in r.text
    assert tenant.client().get_object(Bucket=bucket, Key="v2.txt")["Body"].read() == b"signed with SigV2"


def test_success_status_200_and_a_redirect(tenant, bucket):
    r = post(tenant, bucket, form(tenant, bucket, {"key": "a", "success_action_status": "200"}))
    assert (r.status_code, r.content) == (200, b"")
    target = "https://example.com/done?from=vault"
    r = post(tenant, bucket, form(tenant, bucket, {"key": "b c", "success_action_redirect": target}), b"x")
    assert r.status_code == 303
    assert r.headers["Location"] == (f"{target}&bucket={bucket}&key=b+c&etag=%22"
                                     f"{hashlib.md5(b'x').hexdigest()}%22")


def test_a_checksum_field_is_verified_and_kept(tenant, bucket):
    data = b"checked" * 1000
    good = base64.b64encode(hashlib.sha256(data).digest()).decode()
    r = post(tenant, bucket, {**form(tenant, bucket, {"key": "sum"}), "x-amz-checksum-sha256": good}, data)
    assert r.status_code == 204, r.text
    head = tenant.client().head_object(Bucket=bucket, Key="sum", ChecksumMode="ENABLED")
    assert head["ChecksumSHA256"] == good


# -- refusals: nothing stored ------------------------------------------------------------


def test_a_wrong_checksum_stores_nothing(tenant, bucket, unchanged):
    wrong = base64.b64encode(hashlib.sha256(b"other").digest()).decode()
    r = post(tenant, bucket, {**form(tenant, bucket, {"key": "sum"}), "x-amz-checksum-sha256": wrong}, b"data")
    assert _error(r) == (400, "BadDigest")


CASES = {
    # name: (fields the form carries, conditions of its policy or None for exactly the fields, error)
    "key outside the policy": ({"key": "other/k"}, [["starts-with", "$key", "uploads/"]], (403, "AccessDenied")),
    "a field the policy does not name": ({"key": "k", "x-amz-meta-a": "1"}, [{"key": "k"}], (403, "AccessDenied")),
    "a field the policy wants missing": ({"key": "k"}, [{"key": "k"}, ["eq", "$x-amz-meta-a", "1"]],
                                         (403, "AccessDenied")),
    "a public acl": ({"key": "k", "acl": "public-read"}, None, (403, "AccessDenied")),
    "no key": ({"acl": "private"}, None, (400, "InvalidArgument")),
    "an unknown condition": ({"key": "k"}, [{"key": "k"}, ["matches", "$key", "k"]],
                             (400, "InvalidPolicyDocument")),
    "a negative length range": ({"key": "k"}, [{"key": "k"}, ["content-length-range", -1, 10]],
                                (400, "InvalidPolicyDocument")),
    "an empty condition": ({"key": "k"}, [{"key": "k"}, {}], (400, "InvalidPolicyDocument")),
}


@pytest.mark.parametrize("case", CASES)
def test_a_form_against_its_policy_is_refused(tenant, bucket, unchanged, case):
    fields, conditions, error = CASES[case]
    assert _error(post(tenant, bucket, form(tenant, bucket, fields, conditions))) == error


def test_an_expired_or_unparsable_policy_is_refused(tenant, bucket, unchanged):
    assert _error(post(tenant, bucket, form(tenant, bucket, {"key": "k"}, expires=-60))) == (403, "AccessDenied")
    fields = form(tenant, bucket, {"key": "k"})
    fields["policy"] = base64.b64encode(b'{"conditions": []}').decode()  # no expiration (and signed anew)
    key = signing_key(tenant.keys["full"]["s3"]["secret_access_key"], fields["x-amz-date"][:8], REGION)
    fields["x-amz-signature"] = hmac.new(key, fields["policy"].encode(), hashlib.sha256).hexdigest()
    assert _error(post(tenant, bucket, fields)) == (400, "InvalidPolicyDocument")


@pytest.mark.parametrize("v4", [True, False])
def test_a_wrong_signature_an_unknown_key_no_signature_and_none_at_all(tenant, bucket, unchanged, v4):
    signed = form(tenant, bucket, {"key": "k"}, v4=v4, secret="w" * 40)
    assert _error(post(tenant, bucket, signed)) == (403, "SignatureDoesNotMatch")
    unknown = form(tenant, bucket, {"key": "k"}, v4=v4)
    nobody = "NOSUCHKEY" + uuid.uuid4().hex[:11].upper()
    if v4:
        unknown["x-amz-credential"] = nobody + "/" + unknown["x-amz-credential"].split("/", 1)[1]
    else:
        unknown["AWSAccessKeyId"] = nobody
    assert _error(post(tenant, bucket, unknown)) == (403, "InvalidAccessKeyId")
    unsigned = {"key": "k", "acl": "private"}
    assert _error(post(tenant, bucket, unsigned)) == (403, "AccessDenied")
    no_signature = {k: v for k, v in form(tenant, bucket, {"key": "k"}, v4=v4).items()
                    if k not in ("x-amz-signature", "signature")}
    assert _error(post(tenant, bucket, no_signature)) == (400, "InvalidArgument")


def test_the_fields_before_the_file_are_bounded(tenant, bucket, unchanged):
    fields = form(tenant, bucket, {"key": "k", "x-amz-meta-big": "x" * (21 << 10)})
    assert _error(post(tenant, bucket, fields)) == (400, "MaxPostPreDataLengthExceededError")
    r = httpx.post(f"{tenant.srv.s3_url}/{bucket}", files={"key": (None, "k")}, timeout=30)
    assert _error(r) == (400, "IncorrectNumberOfFilesInPostRequest")


def test_fields_that_fill_the_bound_to_within_a_few_bytes_are_accepted(tenant, bucket):
    fields = form(tenant, bucket, {"key": "full-form"})
    used = sum(len(name) + FIELD_OVERHEAD + len(value) for name, value in fields.items())
    last = "x-ignore-last"
    pad = MAX_FIELD_BYTES - used - 2 * FIELD_OVERHEAD - len("x-ignore-pad") - len(last) - 5
    r = post(tenant, bucket, {**fields, "x-ignore-pad": "p" * pad, last: "abcde"})
    assert r.status_code == 204, r.text
    r = post(tenant, bucket, {**fields, "x-ignore-pad": "p" * pad, last: "abcdef"})
    assert _error(r) == (400, "MaxPostPreDataLengthExceededError")


# -- the size range, while the file streams ------------------------------------------------


def test_content_length_range_is_enforced_while_the_file_streams(srv, tenant, bucket, unchanged):
    """A file declared 64 MiB long in a form allowing 1 MiB: refused once
    past 1 MiB, without waiting for the rest of the body."""
    fields = form(tenant, bucket, {"key": "big"}, [{"key": "big"}, ["content-length-range", 0, MIB]])
    boundary = "objvaultform" + uuid.uuid4().hex
    head = "".join(f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'
                   for name, value in fields.items())
    head += f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="f"\r\n\r\n'
    declared = len(head) + (64 << 20) + len(f"\r\n--{boundary}--\r\n")
    sent = head.encode() + os.urandom(3 * MIB)  # of the 64 MiB; the rest never comes
    request = (f"POST /{bucket} HTTP/1.1\r\nHost: 127.0.0.1:{srv.s3_port}\r\n"
               f"Content-Type: multipart/form-data; boundary={boundary}\r\nContent-Length: {declared}")
    answer = raw_exchange(srv.s3_port, request, sent, close=False, timeout=30)
    assert answer.startswith(b"HTTP/1.1 400"), answer[:300]
    assert b"<Code>EntityTooLarge</Code>" in answer and b"<MaxSizeAllowed>1048576</MaxSizeAllowed>" in answer


def test_a_file_outside_the_range_stores_nothing(tenant, bucket, unchanged):
    fields = form(tenant, bucket, {"key": "small"}, [{"key": "small"}, ["content-length-range", 100, 200]])
    assert _error(post(tenant, bucket, fields, b"x" * 99)) == (400, "EntityTooSmall")
    fields = form(tenant, bucket, {"key": "small"}, [{"key": "small"}, ["content-length-range", 100, 200]])
    assert _error(post(tenant, bucket, fields, b"x" * 201)) == (400, "EntityTooLarge")
    # past a whole chunk of the vault's before the refusal: GC takes it back
    fields = form(tenant, bucket, {"key": "big"}, [{"key": "big"}, ["content-length-range", 0, 9 * MIB]])
    assert _error(post(tenant, bucket, fields, os.urandom(10 * MIB))) == (400, "EntityTooLarge")


# -- who may post ----------------------------------------------------------------------------


def test_another_vaults_credentials_are_refused(srv, tenant, bucket, unchanged):
    other = Tenant(srv)
    fields = form(other, bucket, {"key": "intruder"})
    assert _error(post(tenant, bucket, fields)) == (403, "AccessDenied")


def test_an_append_key_creates_but_never_overwrites_and_a_read_key_cannot_post(tenant, bucket):
    r = post(tenant, bucket, form(tenant, bucket, {"key": "once"}, role="append"), b"first")
    assert r.status_code == 204, r.text
    again = post(tenant, bucket, form(tenant, bucket, {"key": "once"}, role="append"), b"second")
    assert _error(again) == (403, "AccessDenied")
    assert _error(post(tenant, bucket, form(tenant, bucket, {"key": "new"}, role="read"))) == (403, "AccessDenied")
    s3 = tenant.client()
    assert s3.get_object(Bucket=bucket, Key="once")["Body"].read() == b"first"
    assert code_of(lambda: s3.head_object(Bucket=bucket, Key="new"))[0] == 404
    r = post(tenant, bucket, form(tenant, bucket, {"key": "once"}, role="full"), b"second")
    assert r.status_code == 204 and s3.get_object(Bucket=bucket, Key="once")["Body"].read() == b"second"


# -- the policy document, in process ------------------------------------------------------------


def _policy(document: dict) -> str:
    return base64.b64encode(json.dumps(document).encode()).decode()


def test_policy_names_and_operators_are_case_insensitive_but_its_keys_are_not():
    policy = parse_policy(_policy({"expiration": "2100-01-01T00:00:00.000Z", "conditions": [
        {"bUcKeT": "b"}, ["StArTs-WiTh", "$KeY", "foo"], ["content-length-range", "5", 10]]}))
    assert policy.check({"bucket": "b", "key": "foo.txt"}, time.time()) == (5, 10)
    with pytest.raises(S3Error) as caught:
        policy.check({"bucket": "b", "key": "bar"}, time.time())
    assert caught.value.code == "AccessDenied"
    for document in ({"EXPIRATION": "2100-01-01T00:00:00Z", "conditions": []},
                     {"expiration": "2100-01-01T00:00:00Z", "CONDITIONS": []},
                     {"expiration": "2100-01-01 00:00:00+00:00", "conditions": []},
                     {"expiration": "2100-01-01T00:00:00Z", "conditions": [["content-length-range", 0]]}):
        with pytest.raises(S3Error) as caught:
            parse_policy(_policy(document))
        assert caught.value.code == "InvalidPolicyDocument", document
    with pytest.raises(S3Error) as caught:
        parse_policy("not base64 at all!")
    assert caught.value.code == "InvalidPolicyDocument"
