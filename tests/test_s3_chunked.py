"""aws-chunked bodies: AWS's published signed examples (with and without the
trailer), botocore's own unsigned-trailer bodies, and every way a body can
be wrong: a tampered byte or signature, truncation, lengths that disagree,
oversized lines and trailers."""

from __future__ import annotations

import io

import pytest
from botocore.httpchecksum import AwsChunkedWrapper, CrtCrc32cChecksum
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.s3helpers import (AWS_BODY, AWS_STREAMING_SIGNATURES, AWS_TIME, AWS_TRAILER_SIGNATURE, REGION, as_request,
                             aws_streaming_body, aws_streaming_request, body_of, capture, client, reader, secret_for)
from vault.s3.checksums import BodyDigests, requested
from vault.s3.chunked import MAX_LINE, ChunkedBody
from vault.s3.errors import S3Error
from vault.s3.sigv4 import Payload, authenticate

SIGNED = "STREAMING-AWS4-HMAC-SHA256-PAYLOAD"
SIGNED_TRAILER = "STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER"


def aws_body(payload: str, raw: bytes, step: int = 1 << 20, decoded_length: int = len(AWS_BODY),
             piece_bytes: int = 1 << 20) -> ChunkedBody:
    auth = authenticate(aws_streaming_request(payload), secret_for, REGION, AWS_TIME)
    trailer = auth.payload.trailer and "x-amz-checksum-crc32c" or None
    return ChunkedBody(reader(raw, step), auth.payload, decoded_length, signing=auth.signing,
                       seed_signature=auth.signature, trailer=trailer, piece_bytes=piece_bytes)


async def decoded(body: ChunkedBody) -> bytes:
    return b"".join([piece async for piece in body])


async def refused(code: str, body: ChunkedBody) -> S3Error:
    with pytest.raises(S3Error) as caught:
        await decoded(body)
    assert caught.value.code == code, caught.value
    return caught.value


@pytest.mark.parametrize("payload", [SIGNED, SIGNED_TRAILER])
@pytest.mark.parametrize("step", [1, 7, 4096, 70_000])
async def test_aws_published_chunked_uploads_decode(payload, step):
    body = aws_body(payload, aws_streaming_body(payload), step)
    assert await decoded(body) == AWS_BODY
    if payload == SIGNED_TRAILER:
        assert body.trailers == {"x-amz-checksum-crc32c": "sOO8/Q=="}
        digests = BodyDigests(["crc32c"])
        digests.update(AWS_BODY)
        digests.verify(checksums=requested({"x-amz-checksum-crc32c": body.trailers["x-amz-checksum-crc32c"]}))


async def test_pieces_are_bounded_not_whole_chunks():
    body = aws_body(SIGNED, aws_streaming_body(SIGNED), piece_bytes=4096)
    sizes = [len(piece) async for piece in body]
    assert sum(sizes) == len(AWS_BODY) and max(sizes) == 4096


async def test_trailer_after_an_empty_line_is_accepted():
    """Some SDKs put an empty line between the last chunk and the trailer."""
    raw = aws_streaming_body(SIGNED_TRAILER).replace(b"\r\nx-amz-checksum", b"\r\n\r\nx-amz-checksum")
    body = aws_body(SIGNED_TRAILER, raw)
    assert await decoded(body) == AWS_BODY and body.trailers


@pytest.mark.parametrize("payload", [SIGNED, SIGNED_TRAILER])
async def test_a_tampered_byte_fails_its_chunk(payload):
    raw = bytearray(aws_streaming_body(payload))
    raw[-200] ^= 1  # inside the 1024-byte chunk
    await refused("SignatureDoesNotMatch", aws_body(payload, bytes(raw)))


@pytest.mark.parametrize("signature", [1, 2, 3])
async def test_a_wrong_chunk_signature_fails(signature):
    raw = aws_streaming_body(SIGNED)
    good = AWS_STREAMING_SIGNATURES[SIGNED][signature]
    await refused("SignatureDoesNotMatch", aws_body(SIGNED, raw.replace(good.encode(), b"0" * 64)))


async def test_chunks_signed_for_another_request_fail():
    """The trailer variant's chunk signatures chain from another seed."""
    raw = aws_streaming_body(SIGNED)
    for mine, theirs in zip(AWS_STREAMING_SIGNATURES[SIGNED][1:], AWS_STREAMING_SIGNATURES[SIGNED_TRAILER][1:]):
        raw = raw.replace(mine.encode(), theirs.encode())
    await refused("SignatureDoesNotMatch", aws_body(SIGNED, raw))


async def test_a_missing_chunk_signature_fails():
    raw = aws_streaming_body(SIGNED).replace(b"400;chunk-signature=", b"400;chunk-signaturX=")
    await refused("SignatureDoesNotMatch", aws_body(SIGNED, raw))


@pytest.mark.parametrize("cut", [10, 100, 1100, 66_000])
async def test_a_truncated_body_is_incomplete(cut):
    raw = aws_streaming_body(SIGNED)
    await refused("IncompleteBody", aws_body(SIGNED, raw[:len(raw) - cut]))


async def test_decoded_length_must_match():
    raw = aws_streaming_body(SIGNED)
    await refused("IncompleteBody", aws_body(SIGNED, raw, decoded_length=len(AWS_BODY) + 1))
    await refused("InvalidRequest", aws_body(SIGNED, raw, decoded_length=len(AWS_BODY) - 1))


@pytest.mark.parametrize("raw", [
    b"f" * (MAX_LINE + 10) + b"\r\n",
    b"1" * 17 + b";chunk-signature=x\r\n",
    b"zz;chunk-signature=x\r\n",
    b";chunk-signature=x\r\n",
    b"fffffffffffffff;chunk-signature=x\r\n",
])
async def test_bad_chunk_headers_are_refused_before_any_data(raw):
    await refused("InvalidRequest", aws_body(SIGNED, raw + b"a" * 100))


async def test_data_after_the_last_chunk_is_refused():
    await refused("InvalidRequest", aws_body(SIGNED, aws_streaming_body(SIGNED) + b"extra"))


async def test_a_chunk_must_end_with_crlf():
    raw = aws_streaming_body(SIGNED).replace(b"a\r\n400;", b"aX\n400;")
    await refused("InvalidRequest", aws_body(SIGNED, raw))


async def test_a_tampered_trailer_fails_its_signature():
    raw = aws_streaming_body(SIGNED_TRAILER).replace(b"sOO8/Q==", b"sOO8/A==")
    await refused("SignatureDoesNotMatch", aws_body(SIGNED_TRAILER, raw))
    raw = aws_streaming_body(SIGNED_TRAILER).replace(AWS_TRAILER_SIGNATURE.encode(), b"1" * 64)
    await refused("SignatureDoesNotMatch", aws_body(SIGNED_TRAILER, raw))


@pytest.mark.parametrize("trailer", [
    b"",  # the announced checksum is missing
    b"x-amz-checksum-crc32:AAAAAA==\r\n",  # not the announced one
    b"not a header\r\n",
    b"x-amz-meta-a:" + b"b" * 20_000 + b"\r\n",  # beyond the trailer's bound
])
async def test_malformed_trailers(trailer):
    raw = aws_streaming_body(SIGNED_TRAILER).replace(b"x-amz-checksum-crc32c:sOO8/Q==\r\n", trailer)
    await refused("MalformedTrailerError", aws_body(SIGNED_TRAILER, raw))


async def test_a_signed_trailer_needs_its_signature():
    raw = aws_streaming_body(SIGNED_TRAILER)
    raw = raw[:raw.index(b"x-amz-trailer-signature")] + b"\r\n"
    await refused("SignatureDoesNotMatch", aws_body(SIGNED_TRAILER, raw))


@pytest.mark.parametrize("size", [0, 1, 3 << 20])
async def test_botocore_unsigned_trailer_bodies_decode_and_their_checksum_verifies(size):
    data = bytes(range(256)) * (size // 256) + b"z" * (size % 256)
    prepared = capture(lambda: client("https://127.0.0.1:8471").put_object(Bucket="b", Key="k", Body=data))
    request = as_request(prepared)
    auth = authenticate(request, secret_for, REGION)
    assert auth.payload is Payload.STREAMING_UNSIGNED_TRAILER
    body = ChunkedBody(reader(body_of(prepared), 65_536), auth.payload,
                       int(request.headers["x-amz-decoded-content-length"]), trailer=request.headers["x-amz-trailer"])
    digests = BodyDigests(["crc32"])
    async for piece in body:
        digests.update(piece)
    assert digests.length == size
    assert set(body.trailers) == {"x-amz-checksum-crc32"}
    digests.verify(checksums=requested(body.trailers))


@settings(max_examples=60, deadline=None)
@given(data=st.binary(max_size=5000), chunk=st.integers(1, 3000), step=st.integers(1, 4000),
       piece=st.integers(1, 2000))
async def test_any_framing_botocore_writes_decodes_to_the_same_bytes(data, chunk, step, piece):
    raw = AwsChunkedWrapper(io.BytesIO(data), CrtCrc32cChecksum, "x-amz-checksum-crc32c", chunk).read()
    body = ChunkedBody(reader(raw, step), Payload.STREAMING_UNSIGNED_TRAILER, len(data),
                       trailer="x-amz-checksum-crc32c", piece_bytes=piece)
    pieces = [p async for p in body]
    assert b"".join(pieces) == data and all(len(p) <= piece for p in pieces)
    digests = BodyDigests(["crc32c"])
    digests.update(data)
    assert body.trailers == {"x-amz-checksum-crc32c": digests.checksum("crc32c")}


async def test_unsigned_trailer_with_a_wrong_checksum_is_caught_by_the_digests():
    prepared = capture(lambda: client("https://127.0.0.1:8471").put_object(Bucket="b", Key="k", Body=b"hello"))
    raw = body_of(prepared).replace(b"hello", b"jello")
    body = ChunkedBody(reader(raw, 100), Payload.STREAMING_UNSIGNED_TRAILER, 5, trailer="x-amz-checksum-crc32")
    digests = BodyDigests(["crc32"])
    async for piece in body:
        digests.update(piece)
    with pytest.raises(S3Error, match="BadDigest"):
        digests.verify(checksums=requested(body.trailers))


def test_modes_that_are_not_aws_chunked_are_refused():
    with pytest.raises(ValueError):
        ChunkedBody(reader(b"", 1), Payload.UNSIGNED, 0)
    with pytest.raises(ValueError):
        ChunkedBody(reader(b"", 1), Payload.STREAMING_SIGNED, 0)
