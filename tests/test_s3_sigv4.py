"""SigV4 verification against requests signed by botocore itself and AWS's
published examples: header and presigned auth, every payload mode, and the
refusals (wrong secret, tampering, skew, expiry, malformed credentials)."""

from __future__ import annotations

import dataclasses
import hashlib
import time

import pytest
from botocore.auth import S3SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from tests.s3helpers import (ACCESS_KEY, AWS_STREAMING_SIGNATURES, AWS_TIME, PRINCIPAL, REGION, SECRET_KEY,
                             as_request, aws_streaming_request, body_of, capture, client, secret_for, url_request)
from vault.s3 import sigv4
from vault.s3.errors import S3Error
from vault.s3.sigv4 import Payload, Request, authenticate

KEYS = ["plain.txt", "a b/c d", "ünïcødé/ключ", "odd !$&'()*+,;=:@~[]{}^`|", "percent%2Fliteral",
        "double//slash/", "tilde~and-dash_dot."]


def refused(code: str, request: Request, now: float | None = None, region: str = REGION) -> S3Error:
    with pytest.raises(S3Error) as caught:
        authenticate(request, secret_for, region, now)
    assert caught.value.code == code, caught.value
    return caught.value


def with_header(request: Request, name: str, value: str) -> Request:
    return dataclasses.replace(request, headers={**request.headers, name: value})


@pytest.mark.parametrize("key", KEYS)
def test_header_auth_of_botocore_requests_verifies(key):
    s3 = client()
    for prepared in (capture(lambda: s3.get_object(Bucket="bucket-1", Key=key, Range="bytes=0-9")),
                     capture(lambda: s3.head_object(Bucket="bucket-1", Key=key)),
                     capture(lambda: s3.list_objects_v2(Bucket="bucket-1", Prefix=key, Delimiter="/",
                                                        StartAfter=key + "!", EncodingType="url"))):
        result = authenticate(as_request(prepared), secret_for, REGION)
        assert (result.access_key_id, result.principal, result.presigned) == (ACCESS_KEY, PRINCIPAL, False)
        assert result.payload is Payload.SIGNED
        assert result.payload_sha256 == hashlib.sha256(b"").hexdigest()


def test_signed_put_carries_the_body_hash_to_check():
    body = b"x" * 10_000
    prepared = capture(lambda: client().put_object(Bucket="b", Key="k", Body=body))
    result = authenticate(as_request(prepared), secret_for, REGION)
    assert result.payload is Payload.SIGNED
    assert result.payload_sha256 == hashlib.sha256(body).hexdigest()


def test_https_put_with_a_checksum_is_a_streaming_unsigned_trailer():
    prepared = capture(lambda: client("https://127.0.0.1:8471").put_object(Bucket="b", Key="k", Body=b"x" * 100))
    result = authenticate(as_request(prepared), secret_for, REGION)
    assert result.payload is Payload.STREAMING_UNSIGNED_TRAILER
    assert result.payload_sha256 is None


def test_unsigned_payload_verifies():
    s3 = client(payload_signing_enabled=False)
    prepared = capture(lambda: s3.put_object(Bucket="b", Key="k", Body=b"data", ContentMD5="jXd/OF09/siBXSD3SWAm3A=="))
    request = as_request(prepared)
    assert request.headers["x-amz-content-sha256"] == "UNSIGNED-PAYLOAD"
    assert authenticate(request, secret_for, REGION).payload is Payload.UNSIGNED


def test_aws_published_get_example_verifies():
    """GET /test.txt with a Range, from the SigV4 header documentation."""
    request = Request.of("GET", "/test.txt", "", {
        "Host": "examplebucket.s3.amazonaws.com", "Range": "bytes=0-9",
        "x-amz-content-sha256": hashlib.sha256(b"").hexdigest(), "x-amz-date": "20130524T000000Z",
        "Authorization": "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request,"
                         "SignedHeaders=host;range;x-amz-content-sha256;x-amz-date,"
                         "Signature=f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41"}.items())
    assert authenticate(request, secret_for, REGION, AWS_TIME).principal == "aws-example"


@pytest.mark.parametrize("payload", list(AWS_STREAMING_SIGNATURES))
def test_aws_published_streaming_seeds_verify(payload):
    result = authenticate(aws_streaming_request(payload), secret_for, REGION, AWS_TIME)
    assert result.payload is Payload(payload)
    assert result.signature == AWS_STREAMING_SIGNATURES[payload][0]
    assert result.signing.scope == "20130524/us-east-1/s3/aws4_request"
    assert result.signing.timestamp == "20130524T000000Z"


def test_wrong_secret_does_not_match():
    prepared = capture(lambda: client(secret="not-the-secret").get_object(Bucket="b", Key="k"))
    error = refused("SignatureDoesNotMatch", as_request(prepared))
    assert error.status == 403
    assert error.extra["AWSAccessKeyId"] == ACCESS_KEY
    assert "GET\n/b/k\n" in error.extra["CanonicalRequest"]


def test_unknown_access_key():
    request = as_request(capture(lambda: client().get_object(Bucket="b", Key="k")))
    other = request.headers["authorization"].replace(ACCESS_KEY, "AKIANOSUCHKEY0000000")
    refused("InvalidAccessKeyId", with_header(request, "authorization", other))


@pytest.mark.parametrize("tamper", ["path", "query", "range", "payload", "method"])
def test_tampered_requests_do_not_match(tamper):
    request = as_request(capture(lambda: client().get_object(Bucket="b", Key="k", Range="bytes=0-9",
                                                             VersionId="v1")))
    tampered = {
        "path": lambda: dataclasses.replace(request, path="/b/other"),
        "query": lambda: dataclasses.replace(request, query="versionId=v2"),
        "range": lambda: with_header(request, "range", "bytes=0-99"),
        "payload": lambda: with_header(request, "x-amz-content-sha256", "UNSIGNED-PAYLOAD"),
        "method": lambda: dataclasses.replace(request, method="DELETE"),
    }[tamper]()
    refused("SignatureDoesNotMatch", tampered)


def test_path_spelled_differently_by_the_client_still_verifies():
    """A client that sent ``%2F`` for ``/`` and a raw ``!``, and signed that spelling."""
    raw = AWSRequest("GET", "http://127.0.0.1:8471/b/a%2Fb!c", headers={"X-Amz-Content-SHA256": "UNSIGNED-PAYLOAD"})
    S3SigV4Auth(Credentials(ACCESS_KEY, SECRET_KEY), "s3", REGION).add_auth(raw)
    request = as_request(raw.prepare())
    assert sigv4.canonical_paths(request.path) == ["/b/a/b%21c", "/b/a%2Fb!c"]
    assert authenticate(request, secret_for, REGION).principal == PRINCIPAL
    refused("SignatureDoesNotMatch", dataclasses.replace(request, path="/b/a/b!d"))


def test_headers_are_trimmed_and_repeated_ones_joined():
    request = Request.of("GET", "/", "", [("X-Amz-Meta-A", "  one   two "), ("x-amz-meta-a", "three"),
                                          ("Host", "h")])
    assert request.headers["x-amz-meta-a"] == "  one   two ,three"
    canonical = sigv4.canonical_request(request, "/", ["host", "x-amz-meta-a"], "UNSIGNED-PAYLOAD", False)
    assert "x-amz-meta-a:one two ,three\n" in canonical


def test_query_canonicalisation():
    assert sigv4.canonical_query("uploads&prefix=a%20b&delimiter=/&max-keys=2", False) == \
        "delimiter=%2F&max-keys=2&prefix=a%20b&uploads="
    assert sigv4.canonical_query("X-Amz-Signature=abc&X-Amz-Date=1", True) == "X-Amz-Date=1"


def test_clock_skew_beyond_15_minutes():
    request = as_request(capture(lambda: client().get_object(Bucket="b", Key="k")))
    signed_at = time.time()
    authenticate(request, secret_for, REGION, signed_at + 14 * 60)
    authenticate(request, secret_for, REGION, signed_at - 14 * 60)
    error = refused("RequestTimeTooSkewed", request, signed_at + 16 * 60)
    assert error.status == 403 and error.extra["MaxAllowedSkewMilliseconds"] == "900000"
    refused("RequestTimeTooSkewed", request, signed_at - 16 * 60)


def test_presigned_urls_verify_until_they_expire():
    s3 = client()
    url = s3.generate_presigned_url("get_object", Params={"Bucket": "b", "Key": "dir/ünï code"}, ExpiresIn=3600)
    signed_at = time.time()
    result = authenticate(url_request(url), secret_for, REGION)
    assert result.presigned and result.payload is Payload.UNSIGNED and result.principal == PRINCIPAL
    authenticate(url_request(url), secret_for, REGION, signed_at + 3500)
    error = refused("AccessDenied", url_request(url), signed_at + 3700)
    assert "expired" in error.message
    refused("AccessDenied", url_request(url), signed_at - 20 * 60)  # not valid yet


def test_presigned_put_and_its_tampering():
    url = client().generate_presigned_url("put_object", Params={"Bucket": "b", "Key": "k"}, ExpiresIn=60)
    assert authenticate(url_request(url, "PUT"), secret_for, REGION).payload is Payload.UNSIGNED
    refused("SignatureDoesNotMatch", url_request(url, "DELETE"))
    refused("SignatureDoesNotMatch", url_request(url.replace("/b/k", "/b/j"), "PUT"))


def test_presigned_expiry_is_at_most_seven_days():
    s3 = client()
    week = s3.generate_presigned_url("get_object", Params={"Bucket": "b", "Key": "k"}, ExpiresIn=7 * 86400)
    authenticate(url_request(week), secret_for, REGION, time.time() + 6 * 86400)
    longer = week.replace("X-Amz-Expires=604800", "X-Amz-Expires=604801")
    refused("AuthorizationQueryParametersError", url_request(longer))
    refused("AuthorizationQueryParametersError", url_request(week.replace("X-Amz-Expires=604800", "X-Amz-Expires=-1")))


def test_wrong_region_is_malformed_and_names_the_right_one():
    request = as_request(capture(lambda: client().get_object(Bucket="b", Key="k")))
    error = refused("AuthorizationHeaderMalformed", request, region="eu-central-1")
    assert error.extra["Region"] == "eu-central-1"


@pytest.mark.parametrize("header, code", [
    (None, "AccessDenied"),
    ("AWS AKIAOBJVAULTTEST0001:c2lnbmF0dXJl", "InvalidRequest"),
    ("AWS4-HMAC-SHA256 Credential=AKIAOBJVAULTTEST0001/20130524/us-east-1/s3/aws4_request", "AuthorizationHeaderMalformed"),
    ("AWS4-HMAC-SHA256 Credential=AKIAOBJVAULTTEST0001/20130524/us-east-1/ec2/aws4_request,SignedHeaders=host,"
     "Signature=" + "0" * 64, "AuthorizationHeaderMalformed"),
    ("AWS4-HMAC-SHA256 Credential=AKIAOBJVAULTTEST0001/20130524/us-east-1/s3/aws4_request,SignedHeaders=host,"
     "Signature=xyz", "AuthorizationHeaderMalformed"),
])
def test_malformed_or_missing_authorization(header, code):
    request = Request.of("GET", "/b/k", "", [("Host", "h"), ("x-amz-date", "20130524T000000Z"),
                                            ("x-amz-content-sha256", "UNSIGNED-PAYLOAD")])
    if header is not None:
        request = with_header(request, "authorization", header)
    refused(code, request, AWS_TIME)


def test_credential_date_must_match_the_request_date():
    request = as_request(capture(lambda: client().get_object(Bucket="b", Key="k")))
    date = request.headers["x-amz-date"][:8]
    other = request.headers["authorization"].replace(f"/{date}/", "/20000101/")
    refused("AuthorizationHeaderMalformed", with_header(request, "authorization", other))


def test_content_sha256_is_required_and_checked():
    request = as_request(capture(lambda: client().get_object(Bucket="b", Key="k")))
    headers = {k: v for k, v in request.headers.items() if k != "x-amz-content-sha256"}
    refused("InvalidRequest", dataclasses.replace(request, headers=headers))
    refused("InvalidArgument", with_header(request, "x-amz-content-sha256", "STREAMING-AWS4-ECDSA-P256-SHA256-PAYLOAD"))


def test_sigv2_presigned_urls_are_not_served():
    refused("InvalidRequest", url_request("http://h/b/k?AWSAccessKeyId=AK&Signature=c2ln&Expires=1796652046"))


def test_both_auth_mechanisms_at_once_are_refused():
    url = client().generate_presigned_url("get_object", Params={"Bucket": "b", "Key": "k"})
    request = with_header(url_request(url), "authorization", "AWS4-HMAC-SHA256 Credential=x")
    refused("InvalidArgument", request)


def test_signing_keys_are_cached_per_secret_day_and_region():
    sigv4.signing_key.cache_clear()
    s3 = client()
    for _ in range(3):
        authenticate(as_request(capture(lambda: s3.get_object(Bucket="b", Key="k"))), secret_for, REGION)
    info = sigv4.signing_key.cache_info()
    assert (info.misses, info.hits) == (1, 2)
