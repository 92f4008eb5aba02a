"""Helpers for the in-process S3 protocol tests: requests signed by botocore
itself (caught before they are sent), and AWS's published SigV4 examples.

``capture(lambda: client.put_object(...))`` returns the request botocore
would have sent, signed, with its body; ``as_request`` turns it into a
:class:`vault.s3.sigv4.Request` as the server would see it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

import botocore.session
from botocore.auth import _host_from_url
from botocore.awsrequest import AWSPreparedRequest
from botocore.config import Config

from vault.s3.sigv4 import Request

ACCESS_KEY = "AKIAOBJVAULTTEST0001"
SECRET_KEY = "obj/vault+secret/KEY0123456789abcdefghijk"
REGION = "us-east-1"
PRINCIPAL = "vault-a:key-1"

# AWS's examples ("Signature Calculations for the Authorization Header"):
# their key, their date, and the signatures the documentation gives.
AWS_KEY = "AKIAIOSFODNN7EXAMPLE"
AWS_SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
AWS_TIME = 1369353600.0  # 20130524T000000Z
AWS_STREAMING_SIGNATURES = {  # seed, chunk of 65536, chunk of 1024, final chunk
    "STREAMING-AWS4-HMAC-SHA256-PAYLOAD": (
        "4f232c4386841ef735655705268965c44a0e4690baa4adea153f7db9fa80a0a9",
        "ad80c730a21e5b8d04586a2213dd63b9a0e99e0e2307b0ade35a65485a288648",
        "0055627c9e194cb4542bae2aa5492e3c1575bbb81b612b7d234b86a503ef5497",
        "b6c6ea8a5354eaf15b3cb7646744f4275b71ea724fed81ceb9323e279d449df9",
    ),
    "STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER": (
        "106e2a8a18243abcf37539882f36619c00e2dfc72633413f02d3b74544bfeb8e",
        "b474d8862b1487a5145d686f57f013e54db672cee1c953b3010fb58501ef5aa2",
        "1c1344b170168f8e65b41376b44b20fe354e373826ccbbe2c1d40a8cae51e5c7",
        "2ca2aba2005185cf7159c6277faf83795951dd77a3a99e6e65d5c9f85863f992",
    ),
}
AWS_TRAILER = b"x-amz-checksum-crc32c:sOO8/Q==\r\n"
AWS_TRAILER_SIGNATURE = "d81f82fc3505edab99d459891051a732e8730629a2e4a59689829ca17fe2e435"
AWS_BODY = b"a" * 66560


def secret_for(access_key_id: str) -> tuple[str, str] | None:
    """The lookup the core will provide: our test key and AWS's example key."""
    return {ACCESS_KEY: (SECRET_KEY, PRINCIPAL), AWS_KEY: (AWS_SECRET, "aws-example")}.get(access_key_id)


class _Captured(Exception):
    def __init__(self, request: AWSPreparedRequest) -> None:
        self.request = request


def client(endpoint: str = "http://127.0.0.1:8471", secret: str = SECRET_KEY, **s3: Any) -> Any:
    """A botocore S3 client (SigV4, path style, one attempt, ``s3`` options
    added) whose requests are caught, not sent."""
    config = Config(signature_version="s3v4", s3={"addressing_style": "path", **s3},
                    retries={"total_max_attempts": 1})
    s3_client = botocore.session.get_session().create_client(
        "s3", region_name=REGION, endpoint_url=endpoint, aws_access_key_id=ACCESS_KEY,
        aws_secret_access_key=secret, config=config)

    def catch(request: AWSPreparedRequest, **_: Any) -> None:
        raise _Captured(request)

    s3_client.meta.events.register("before-send.s3", catch)
    return s3_client


def capture(call: Callable[[], Any]) -> AWSPreparedRequest:
    """The signed request that ``call`` (a client method) would send."""
    try:
        call()
    except _Captured as caught:
        return caught.request
    raise AssertionError("the client sent nothing")


def as_request(prepared: AWSPreparedRequest) -> Request:
    """The request as the server receives it (with the Host header urllib3 adds if botocore did not)."""
    parts = urlsplit(prepared.url)
    headers = [(name, value.decode() if isinstance(value, bytes) else value)
               for name, value in prepared.headers.items()]
    if "Host" not in prepared.headers:
        headers.append(("Host", _host_from_url(prepared.url)))
    return Request.of(prepared.method, parts.path, parts.query, headers)


def url_request(url: str, method: str = "GET") -> Request:
    """A presigned URL as the server receives it."""
    parts = urlsplit(url)
    return Request.of(method, parts.path, parts.query, [("Host", _host_from_url(url))])


def body_of(prepared: AWSPreparedRequest) -> bytes:
    body = prepared.body
    if body is None:
        return b""
    return body if isinstance(body, bytes) else body.read()


def aws_streaming_request(payload: str) -> Request:
    """AWS's published chunked PUT (with or without the trailer), as received."""
    seed = AWS_STREAMING_SIGNATURES[payload][0]
    headers = {"Host": "s3.amazonaws.com", "x-amz-date": "20130524T000000Z",
               "x-amz-storage-class": "REDUCED_REDUNDANCY", "x-amz-content-sha256": payload,
               "Content-Encoding": "aws-chunked", "x-amz-decoded-content-length": "66560"}
    if payload.endswith("-TRAILER"):
        headers["x-amz-trailer"] = "x-amz-checksum-crc32c"
        signed = "content-encoding;host;x-amz-content-sha256;x-amz-date;x-amz-decoded-content-length;" \
                 "x-amz-storage-class;x-amz-trailer"
    else:
        headers["Content-Length"] = "66824"
        signed = "content-encoding;content-length;host;x-amz-content-sha256;x-amz-date;" \
                 "x-amz-decoded-content-length;x-amz-storage-class"
    headers["Authorization"] = (f"AWS4-HMAC-SHA256 Credential={AWS_KEY}/20130524/us-east-1/s3/aws4_request,"
                                f"SignedHeaders={signed},Signature={seed}")
    return Request.of("PUT", "/examplebucket/chunkObject.txt", "", headers.items())


def aws_streaming_body(payload: str) -> bytes:
    """The body of AWS's chunked PUT: 65536 + 1024 bytes of 'a', the final chunk, the trailer."""
    _, first, second, final = AWS_STREAMING_SIGNATURES[payload]
    body = (b"10000;chunk-signature=%s\r\n%s\r\n" % (first.encode(), AWS_BODY[:65536])
            + b"400;chunk-signature=%s\r\n%s\r\n" % (second.encode(), AWS_BODY[65536:])
            + b"0;chunk-signature=%s\r\n" % final.encode())
    if payload.endswith("-TRAILER"):
        return body + AWS_TRAILER + b"x-amz-trailer-signature:%s\r\n\r\n" % AWS_TRAILER_SIGNATURE.encode()
    return body + b"\r\n"


def reader(data: bytes, step: int) -> Callable[[int], Any]:
    """``read(n)`` over ``data`` handing out at most ``step`` bytes a call, like a socket."""
    view = memoryview(data)
    position = 0

    async def read(n: int) -> bytes:
        nonlocal position
        piece = bytes(view[position:position + min(n, step)])
        position += len(piece)
        return piece

    return read
