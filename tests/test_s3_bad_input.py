"""Bad input to the S3 front door of a real server, one request each: every
signature mode with a wrong signature, a wrong payload hash, truncated
bodies, a chunk signature that does not match, parts too large, too small
and out of order, an unknown upload id, malformed XML and absurd headers.
Each gets its S3 error, and nothing is left behind: after a GC pass the
vault's usage (stored bytes included) is what it was before.

(Further cases with boto3 are in test_s3_front.py; the protocol pieces are
tested in process in test_s3_sigv4.py, test_s3_chunked.py, test_s3_xml.py.)
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import os
import zlib

import boto3
import botocore.auth
import botocore.config
import httpx
import pytest

from tests.gchelpers import GC_ENV
from tests.s3tenant import (MIB, REGION, Tenant, bucket, code_of, raw_exchange, signed, streaming,  # noqa: F401
                            tenant, unchanged)
from tests.server import Server
from vault.s3.bodies import meta_of
from vault.s3.errors import S3Error

DATA = os.urandom(70_000)
WRONG_SECRET = "w" * 40


@pytest.fixture(scope="module")
def srv(tmp_path_factory):
    # GC at once (grace 0): what a refused body stored must be collectable right away.
    s = Server(tmp_path_factory.mktemp("s3bad"), env=GC_ENV).start()
    yield s
    s.stop()


def _error(r: httpx.Response) -> tuple[int, str]:
    assert "x-amz-request-id" in r.headers and r.headers["content-type"].startswith("application/xml"), r.text
    return r.status_code, r.text.split("<Code>", 1)[1].split("</Code>", 1)[0]


def _raw_error(answer: bytes) -> tuple[int, str]:
    status = int(answer.split(b" ", 2)[1])
    assert b"x-amz-request-id" in answer.lower(), answer
    return status, answer.split(b"<Code>", 1)[1].split(b"</Code>", 1)[0].decode()


def _put(tenant: Tenant, path: str, body: bytes, headers: dict) -> httpx.Response:
    return httpx.put(tenant.srv.s3_url + path, content=body, headers=headers, timeout=60)


# -- a wrong signature in every mode ---------------------------------------------------


@pytest.mark.parametrize("payload", ["signed", "UNSIGNED-PAYLOAD", "STREAMING-AWS4-HMAC-SHA256-PAYLOAD",
                                     "STREAMING-UNSIGNED-PAYLOAD-TRAILER"])
def test_a_wrong_signature_in_each_header_mode(tenant, bucket, unchanged, payload):
    path = f"/{bucket}/k"
    if payload == "STREAMING-AWS4-HMAC-SHA256-PAYLOAD":
        headers, body = streaming(tenant, "PUT", path, DATA)
        headers["Authorization"] = headers["Authorization"][:-64] + "0" * 64  # the seed signature
    elif payload == "STREAMING-UNSIGNED-PAYLOAD-TRAILER":
        crc = base64.b64encode(zlib.crc32(DATA).to_bytes(4, "big")).decode()
        body = b"%x\r\n%s\r\n0\r\nx-amz-checksum-crc32:%s\r\n\r\n" % (len(DATA), DATA, crc.encode())
        headers = signed(tenant, "PUT", path, b"", {
            "x-amz-content-sha256": payload, "Content-Encoding": "aws-chunked", "x-amz-trailer": "x-amz-checksum-crc32",
            "x-amz-decoded-content-length": str(len(DATA)), "Content-Length": str(len(body))}, secret=WRONG_SECRET)
    else:
        body = DATA
        sha = hashlib.sha256(DATA).hexdigest() if payload == "signed" else payload
        headers = signed(tenant, "PUT", path, DATA, {"x-amz-content-sha256": sha}, secret=WRONG_SECRET)
    assert _error(_put(tenant, path, body, headers)) == (403, "SignatureDoesNotMatch")


@pytest.mark.parametrize("tamper", ["signature", "expires", "secret"])
def test_a_wrong_presigned_url(tenant, bucket, unchanged, tamper):
    s3 = boto3.client("s3", endpoint_url=tenant.srv.s3_url, region_name=REGION,
                      aws_access_key_id=tenant.keys["full"]["s3"]["access_key_id"],
                      aws_secret_access_key=WRONG_SECRET if tamper == "secret" else
                      tenant.keys["full"]["s3"]["secret_access_key"],
                      config=botocore.config.Config(signature_version="s3v4"))
    url = s3.generate_presigned_url("put_object", Params={"Bucket": bucket, "Key": "k"}, ExpiresIn=300)
    assert "X-Amz-Signature=" in url and "X-Amz-Expires=300" in url
    if tamper == "signature":
        url = url.replace("X-Amz-Signature=", "X-Amz-Signature=00")[:-2]
    elif tamper == "expires":
        url = url.replace("X-Amz-Expires=300", "X-Amz-Expires=301")
    assert _error(httpx.put(url, content=DATA)) == (403, "SignatureDoesNotMatch")


# -- bodies that are not what was signed or declared -----------------------------------


def test_a_wrong_payload_hash(tenant, bucket, unchanged):
    path = f"/{bucket}/k"
    headers = signed(tenant, "PUT", path, DATA, {"x-amz-content-sha256": hashlib.sha256(DATA).hexdigest()})
    assert _error(_put(tenant, path, DATA[:-1] + b"!", headers)) == (400, "XAmzContentSHA256Mismatch")


def test_a_wrong_trailing_checksum(tenant, bucket, unchanged):
    path = f"/{bucket}/k"
    crc = base64.b64encode(zlib.crc32(b"something else").to_bytes(4, "big"))
    body = b"%x\r\n%s\r\n0\r\nx-amz-checksum-crc32:%s\r\n\r\n" % (len(DATA), DATA, crc)
    headers = signed(tenant, "PUT", path, b"", {
        "x-amz-content-sha256": "STREAMING-UNSIGNED-PAYLOAD-TRAILER", "Content-Encoding": "aws-chunked",
        "x-amz-trailer": "x-amz-checksum-crc32", "x-amz-decoded-content-length": str(len(DATA)),
        "Content-Length": str(len(body))})
    assert _error(_put(tenant, path, body, headers)) == (400, "BadDigest")


def test_a_chunk_signature_mismatch_in_the_last_chunk(tenant, bucket, unchanged):
    headers, body = streaming(tenant, "PUT", f"/{bucket}/k", DATA, corrupt=2)
    assert _error(_put(tenant, f"/{bucket}/k", body, headers)) == (403, "SignatureDoesNotMatch")


def _head(tenant: Tenant, method: str, path: str, headers: dict) -> str:
    lines = [f"{method} {path} HTTP/1.1", f"Host: 127.0.0.1:{tenant.srv.s3_port}"]
    lines += [f"{k}: {v}" for k, v in headers.items() if k.lower() != "host"]
    return "\r\n".join(lines)


@pytest.mark.parametrize("mode", ["signed", "streaming"])
def test_a_truncated_body(tenant, bucket, unchanged, mode):
    path = f"/{bucket}/k"
    if mode == "signed":
        headers = signed(tenant, "PUT", path, DATA, {"x-amz-content-sha256": hashlib.sha256(DATA).hexdigest(),
                                                     "Content-Length": str(len(DATA))})
        body = DATA
    else:
        headers, body = streaming(tenant, "PUT", path, DATA)
    answer = raw_exchange(tenant.srv.s3_port, _head(tenant, "PUT", path, headers), body[:len(body) * 3 // 4])
    assert _raw_error(answer) == (400, "IncompleteBody")


def test_a_streaming_body_longer_than_declared(tenant, bucket, unchanged):
    headers, body = streaming(tenant, "PUT", f"/{bucket}/k", DATA)
    headers["x-amz-decoded-content-length"] = str(len(DATA) - 10)
    headers = signed(tenant, "PUT", f"/{bucket}/k", b"", headers)  # signed as sent: only the length lies
    assert _error(_put(tenant, f"/{bucket}/k", body, headers))[0] in (400, 403)


# -- multipart ---------------------------------------------------------------------------


@pytest.mark.parametrize("op", ["put", "part"])
def test_oversized_bodies_are_refused_before_they_are_read(tenant, bucket, unchanged, op):
    s3 = tenant.client()
    query = ""
    if op == "part":
        upload = s3.create_multipart_upload(Bucket=bucket, Key="k")["UploadId"]
        query = f"?partNumber=1&uploadId={upload}"
    path = f"/{bucket}/k{query}"
    headers = signed(tenant, "PUT", path, b"", {"x-amz-content-sha256": "UNSIGNED-PAYLOAD",
                                                 "Content-Length": str((5 << 30) + 1)})
    # only the headers are sent: the answer may not wait for 5 GiB
    answer = raw_exchange(tenant.srv.s3_port, _head(tenant, "PUT", path, headers), close=False)
    assert _raw_error(answer) == (400, "EntityTooLarge")
    if op == "part":
        assert s3.list_parts(Bucket=bucket, Key="k", UploadId=upload).get("Parts", []) == []
        s3.abort_multipart_upload(Bucket=bucket, Key="k", UploadId=upload)


def test_too_small_and_out_of_order_parts(tenant, bucket, unchanged):
    s3 = tenant.client()
    upload = s3.create_multipart_upload(Bucket=bucket, Key="mp")["UploadId"]
    big = os.urandom(5 * MIB)
    e1 = s3.upload_part(Bucket=bucket, Key="mp", UploadId=upload, PartNumber=1, Body=b"small")["ETag"]
    e2 = s3.upload_part(Bucket=bucket, Key="mp", UploadId=upload, PartNumber=2, Body=big)["ETag"]
    e3 = s3.upload_part(Bucket=bucket, Key="mp", UploadId=upload, PartNumber=3, Body=b"last")["ETag"]

    def complete(*parts):
        return lambda: s3.complete_multipart_upload(Bucket=bucket, Key="mp", UploadId=upload, MultipartUpload={
            "Parts": [{"PartNumber": n, "ETag": e} for n, e in parts]})

    assert code_of(complete((1, e1), (2, e2))) == (400, "EntityTooSmall")
    assert code_of(complete((3, e3), (2, e2))) == (400, "InvalidPartOrder")
    assert code_of(complete((2, e2), (3, e3), (2, e2))) == (400, "InvalidPartOrder")
    assert code_of(complete((2, e2), (2, e3))) == (400, "InvalidPart")  # the last entry names the part
    assert code_of(complete((2, e1), (3, e3))) == (400, "InvalidPart")
    for number in (0, 10_001):
        assert code_of(lambda: s3.upload_part(Bucket=bucket, Key="mp", UploadId=upload, PartNumber=number,
                                              Body=b"x")) == (400, "InvalidArgument")
    assert [p["PartNumber"] for p in s3.list_parts(Bucket=bucket, Key="mp", UploadId=upload)["Parts"]] == [1, 2, 3]
    s3.abort_multipart_upload(Bucket=bucket, Key="mp", UploadId=upload)


def test_an_unknown_upload_id(tenant, bucket, unchanged):
    s3 = tenant.client()
    other = s3.create_multipart_upload(Bucket=bucket, Key="other")["UploadId"]
    for upload in ("0" * 32, "not-an-id", other):  # the last is of another key
        assert code_of(lambda: s3.upload_part(Bucket=bucket, Key="mp", UploadId=upload, PartNumber=1,
                                              Body=b"x")) == (404, "NoSuchUpload")
        assert code_of(lambda: s3.list_parts(Bucket=bucket, Key="mp", UploadId=upload)) == (404, "NoSuchUpload")
        assert code_of(lambda: s3.complete_multipart_upload(
            Bucket=bucket, Key="mp", UploadId=upload,
            MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": '"x"'}]})) == (404, "NoSuchUpload")
        assert code_of(lambda: s3.abort_multipart_upload(Bucket=bucket, Key="mp", UploadId=upload)) == \
            (404, "NoSuchUpload")
    s3.abort_multipart_upload(Bucket=bucket, Key="other", UploadId=other)


# -- malformed XML -----------------------------------------------------------------------

BOMB = (b'<?xml version="1.0"?><!DOCTYPE d [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;">]>'
        b"<Delete><Object><Key>&b;</Key></Object></Delete>")


@pytest.mark.parametrize("what,body", [
    ("complete", b"<not xml"),
    ("complete", b"<CompleteMultipartUpload><Part><PartNumber>one</PartNumber></Part></CompleteMultipartUpload>"),
    ("delete", b"<Delete><Object><Key>existing</Key></Object>"),
    ("delete", BOMB),
    ("tagging", b"<Tagging><TagSet><Tag><Key>k</Key></Tag></TagSet></Tagging><extra/>"),
])
def test_malformed_xml(tenant, bucket, unchanged, what, body):
    s3 = tenant.client()
    if what == "complete":
        upload = s3.create_multipart_upload(Bucket=bucket, Key="mp")["UploadId"]
        method, path = "POST", f"/{bucket}/mp?uploadId={upload}"
    elif what == "delete":
        method, path = "POST", f"/{bucket}?delete="
    else:
        method, path = "PUT", f"/{bucket}/existing?tagging="
    headers = signed(tenant, method, path, body, {"Content-MD5": base64.b64encode(hashlib.md5(body).digest()).decode(),
                                                  "x-amz-content-sha256": hashlib.sha256(body).hexdigest()})
    r = httpx.request(method, tenant.srv.s3_url + path, content=body, headers=headers)
    assert _error(r) == (400, "MalformedXML")
    if what == "complete":
        s3.abort_multipart_upload(Bucket=bucket, Key="mp", UploadId=upload)


# -- absurd headers ----------------------------------------------------------------------


@pytest.mark.parametrize("headers,status,code", [
    ({"x-amz-meta-big": "v" * 3000}, 400, "MetadataTooLarge"),
    ({"x-amz-decoded-content-length": str(10 ** 30)}, 400, "EntityTooLarge"),
    ({"x-amz-checksum-crc32": "not base64!"}, 400, "BadDigest"),
    ({"Content-MD5": "tooshort"}, 400, "InvalidDigest"),
    ({"x-amz-acl": "public-read"}, 403, "AccessDenied"),
    ({"x-amz-tagging": "&".join(f"k{i}=v" for i in range(11))}, 400, "InvalidTag"),
    ({"x-amz-tagging": "k=" + "v" * 300}, 400, "InvalidTag"),
    ({"x-amz-storage-class": "PLATINUM"}, 400, "InvalidStorageClass"),
])
def test_absurd_headers(tenant, bucket, unchanged, headers, status, code):
    path = f"/{bucket}/k"
    if "x-amz-decoded-content-length" in headers:
        base, body = streaming(tenant, "PUT", path, DATA, extra=headers)
    else:
        body = DATA
        base = signed(tenant, "PUT", path, DATA, {"x-amz-content-sha256": hashlib.sha256(DATA).hexdigest(),
                                                  **headers})
    assert _error(_put(tenant, path, body, base)) == (status, code)


def test_user_metadata_is_measured_in_utf8_bytes():
    """2 KiB of user metadata counts UTF-8 bytes, as S3 does: 1,100 'é' are 2,200 bytes."""
    assert meta_of({"x-amz-meta-k": "e" * 1100}).user == {"k": "e" * 1100}
    with pytest.raises(S3Error) as refused:
        meta_of({"x-amz-meta-k": "\u00e9" * 1100})
    assert refused.value.code == "MetadataTooLarge"


@pytest.mark.parametrize("head", [
    "X-Huge: " + "h" * 100_000,                       # one header line far past any limit
    "\r\n".join(f"X-Many-{i}: v" for i in range(5000)),  # headers without end
    "Content-Length: -5",
    "Content-Length: 12abc",
])
def test_headers_no_server_should_parse(tenant, bucket, unchanged, head):
    # refused by the HTTP parser, before any S3 handling: still an S3 error with its request id
    answer = raw_exchange(tenant.srv.s3_port, f"PUT /{bucket}/k HTTP/1.1\r\nHost: 127.0.0.1\r\n{head}", b"x" * 5,
                          close=False)
    assert _raw_error(answer) == (400, "InvalidRequest"), answer[:300]


def test_a_request_signed_long_ago(tenant, bucket, unchanged, monkeypatch):
    path = f"/{bucket}/k"
    past = botocore.auth.get_current_datetime() - datetime.timedelta(minutes=16)
    monkeypatch.setattr(botocore.auth, "get_current_datetime", lambda: past)
    headers = signed(tenant, "PUT", path, DATA, {"x-amz-content-sha256": hashlib.sha256(DATA).hexdigest()})
    assert headers["X-Amz-Date"] == past.strftime("%Y%m%dT%H%M%SZ")
    assert _error(_put(tenant, path, DATA, headers)) == (403, "RequestTimeTooSkewed")
