"""ETags and x-amz-checksum-* values: the published check values of each
CRC, agreement with botocore's own checksums, incremental equals one-shot,
the multipart composite and full-object forms, and the refusals."""

from __future__ import annotations

import base64
import hashlib
import os
import zlib

import pytest
from botocore import httpchecksum

from vault.s3 import checksums
from vault.s3.checksums import BodyDigests, b64, composite, content_md5, full_object, multipart_etag, requested
from vault.s3.errors import S3Error

DATA = os.urandom(300_001)
CHECK = b"123456789"  # the input of every CRC catalogue's check value
CHECK_VALUES = {"crc32": 0xCBF43926, "crc32c": 0xE3069283, "crc64nvme": 0xAE8B14860A799888}
BOTOCORE = {"crc32": httpchecksum.CrtCrc32Checksum, "crc32c": httpchecksum.CrtCrc32cChecksum,
            "crc64nvme": httpchecksum.CrtCrc64NvmeChecksum, "sha1": httpchecksum.Sha1Checksum,
            "sha256": httpchecksum.Sha256Checksum}


def digests_of(data: bytes, *algorithms: str, sha256: bool = False) -> BodyDigests:
    digests = BodyDigests(algorithms, sha256=sha256)
    digests.update(data)
    return digests


@pytest.mark.parametrize("algorithm", sorted(CHECK_VALUES))
def test_crcs_give_their_catalogue_check_values(algorithm):
    expected = CHECK_VALUES[algorithm].to_bytes(checksums.DIGEST_SIZE[algorithm], "big")
    assert digests_of(CHECK, algorithm).checksum(algorithm) == b64(expected)


@pytest.mark.parametrize("algorithm", sorted(checksums.ALGORITHMS))
def test_values_agree_with_botocore_and_with_one_shot(algorithm):
    theirs = BOTOCORE[algorithm]()
    theirs.update(DATA)
    incremental = BodyDigests([algorithm])
    for start in range(0, len(DATA), 65_537):
        incremental.update(DATA[start:start + 65_537])
    assert incremental.checksum(algorithm) == theirs.b64digest() == digests_of(DATA, algorithm).checksum(algorithm)


def test_etag_sha1_sha256_and_crc32_match_the_standard_library():
    digests = digests_of(DATA, "crc32", "sha1", "sha256", sha256=True)
    assert digests.etag() == hashlib.md5(DATA).hexdigest()
    assert digests.checksum("sha1") == b64(hashlib.sha1(DATA).digest())
    assert digests.checksum("crc32") == b64(zlib.crc32(DATA).to_bytes(4, "big"))
    assert digests.length == len(DATA)
    digests.verify(content_md5=hashlib.md5(DATA).digest(), sha256_hex=hashlib.sha256(DATA).hexdigest(),
                   checksums={"sha1": hashlib.sha1(DATA).digest()})


def test_mismatches_are_refused_with_s3s_codes():
    digests = digests_of(DATA, "crc32c", sha256=True)
    for kwargs, code in [({"content_md5": hashlib.md5(b"other").digest()}, "BadDigest"),
                         ({"sha256_hex": hashlib.sha256(b"other").hexdigest()}, "XAmzContentSHA256Mismatch"),
                         ({"checksums": {"crc32c": b"\0\0\0\0"}}, "BadDigest")]:
        with pytest.raises(S3Error) as caught:
            digests.verify(**kwargs)
        assert (caught.value.code, caught.value.status) == (code, 400)


def test_requested_checksums_from_headers():
    value = b64(zlib.crc32(DATA).to_bytes(4, "big"))
    assert requested({"x-amz-checksum-crc32": value, "x-amz-checksum-mode": "ENABLED",
                      "content-type": "x"}) == {"crc32": base64.b64decode(value)}
    assert requested({}) == {}


@pytest.mark.parametrize("headers, code", [
    ({"x-amz-checksum-crc32": "AAAAAA==", "x-amz-checksum-sha1": b64(b"\0" * 20)}, "InvalidRequest"),  # two
    ({"x-amz-checksum-md4": "AAAAAA=="}, "InvalidRequest"),
    # A value no body can match is a wrong digest (as ceph/s3-tests expects).
    ({"x-amz-checksum-crc32": "AAAAAAAA"}, "BadDigest"),  # six bytes, not four
    ({"x-amz-checksum-sha256": "not base64!"}, "BadDigest"),
])
def test_requested_checksums_refused(headers, code):
    with pytest.raises(S3Error) as caught:
        requested(headers)
    assert caught.value.code == code


def test_content_md5_must_be_16_bytes_of_base64():
    assert content_md5(b64(hashlib.md5(b"x").digest())) == hashlib.md5(b"x").digest()
    for bad in ("", "abc", b64(b"\0" * 15), "%%%"):
        with pytest.raises(S3Error, match="InvalidDigest"):
            content_md5(bad)


def test_multipart_etag_is_md5_of_part_md5s():
    parts = [DATA[:100_000], DATA[100_000:200_000], DATA[200_000:]]
    md5s = [hashlib.md5(part).hexdigest() for part in parts]
    expected = hashlib.md5(b"".join(hashlib.md5(part).digest() for part in parts)).hexdigest()
    assert multipart_etag(md5s) == f"{expected}-3"


@pytest.mark.parametrize("algorithm", sorted(checksums.ALGORITHMS))
def test_composite_checksum_is_the_checksum_of_part_checksums(algorithm):
    parts = [DATA[:1000], DATA[1000:5000], DATA[5000:]]
    values = [digests_of(part, algorithm).checksum(algorithm) for part in parts]
    whole = digests_of(b"".join(base64.b64decode(v) for v in values), algorithm).checksum(algorithm)
    assert composite(algorithm, values) == f"{whole}-3"


@pytest.mark.parametrize("algorithm", ["crc32", "crc32c", "crc64nvme"])
def test_full_object_crc_combines_parts_into_the_whole_bodys(algorithm):
    parts = [DATA[:5], DATA[5:250_000], b"", DATA[250_000:]]
    combined = full_object(algorithm, [(digests_of(part, algorithm).checksum(algorithm), len(part)) for part in parts])
    assert combined == digests_of(DATA, algorithm).checksum(algorithm)
