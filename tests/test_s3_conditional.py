"""Conditional writes are decided in the transaction that writes: of many
concurrent PUTs (and Completes) carrying the current ETag in ``If-Match``,
exactly one wins each round, and the others get PreconditionFailed."""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor

from botocore.exceptions import ClientError

from tests.s3tenant import MIB, bucket, code_of, tenant  # noqa: F401

WRITERS = 12


def _outcome(call) -> str:
    try:
        call()
    except ClientError as e:
        return e.response["Error"]["Code"]
    return "ok"


def test_concurrent_if_match_puts_let_exactly_one_win(tenant, bucket):
    s3 = tenant.client(max_pool_connections=WRITERS)
    etag = s3.put_object(Bucket=bucket, Key="k", Body=b"v0")["ETag"]
    with ThreadPoolExecutor(WRITERS) as pool:
        for rnd in range(4):
            bodies = [f"round {rnd} writer {i}".encode() for i in range(WRITERS)]
            outcomes = list(pool.map(lambda body: _outcome(lambda: s3.put_object(
                Bucket=bucket, Key="k", Body=body, IfMatch=etag)), bodies))
            assert sorted(outcomes) == ["PreconditionFailed"] * (WRITERS - 1) + ["ok"], outcomes
            winner = bodies[outcomes.index("ok")]
            got = s3.get_object(Bucket=bucket, Key="k")
            assert got["Body"].read() == winner
            etag = got["ETag"]


def test_concurrent_if_match_completes_let_exactly_one_win(tenant, bucket):
    s3 = tenant.client(max_pool_connections=4)
    etag = s3.put_object(Bucket=bucket, Key="k", Body=b"v0")["ETag"]
    uploads = []
    for i in range(4):
        upload = s3.create_multipart_upload(Bucket=bucket, Key="k")["UploadId"]
        part = s3.upload_part(Bucket=bucket, Key="k", UploadId=upload, PartNumber=1, Body=b"%d" % i * MIB)
        uploads.append((upload, part["ETag"]))

    def complete(upload: tuple[str, str]):
        return _outcome(lambda: s3.complete_multipart_upload(
            Bucket=bucket, Key="k", UploadId=upload[0], IfMatch=etag,
            MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": upload[1]}]}))

    with ThreadPoolExecutor(4) as pool:
        outcomes = list(pool.map(complete, uploads))
    assert sorted(outcomes) == ["PreconditionFailed"] * 3 + ["ok"], outcomes
    assert code_of(lambda: s3.put_object(Bucket=bucket, Key="k", Body=os.urandom(10), IfMatch=etag)) == \
        (412, "PreconditionFailed")
