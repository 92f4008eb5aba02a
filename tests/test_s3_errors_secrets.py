"""The S3 error table and the core's error codes mapped onto it; S3 secrets
sealed under the server's master key."""

from __future__ import annotations

import os
import stat

import pytest

from vault import errors as E
from vault.s3.errors import CODES, DOMAIN, S3Error, from_domain
from vault.secretbox import MasterKeyError, SealedSecretError, SecretBox

# Core errors a client can only see as a server fault.
INTERNAL = {"internal", "no_such_chunk", "missing_chunks", "chunk_corrupt", "storage_failure"}


def domain_codes() -> set[str]:
    return {cls.code for cls in vars(E).values() if isinstance(cls, type) and issubclass(cls, E.VaultError)}


def test_every_domain_code_has_a_deliberate_s3_answer():
    assert domain_codes() - INTERNAL == set(DOMAIN)
    assert set(DOMAIN.values()) <= set(CODES)


@pytest.mark.parametrize("error, code, status", [
    (E.NoSuchObject("no object k in vault a"), "NoSuchKey", 404),
    (E.QuotaExceeded("vault a: 10 bytes over"), "QuotaExceeded", 403),
    (E.DigestMismatch(), "BadDigest", 400),
    (E.AppendOnly(), "AccessDenied", 403),
    (E.RetentionLocked(), "AccessDenied", 403),
    (E.Forbidden(), "AccessDenied", 403),
    (E.PreconditionFailed(), "PreconditionFailed", 412),
    (E.TooLarge(), "EntityTooLarge", 400),
    (E.Unavailable(), "ServiceUnavailable", 503),
    (E.RangeNotSatisfiable(), "InvalidRange", 416),
    (E.NoSpace(), "InsufficientStorage", 507),
])
def test_domain_errors_map_to_s3(error, code, status):
    mapped = from_domain(error, resource="/b/k")
    assert (mapped.code, mapped.status, mapped.resource) == (code, status, "/b/k")
    assert mapped.message == error.detail


def test_a_domain_errors_retry_after_goes_on_the_s3_answer():
    """The memory budget's 503 (and the connection cap's) tells an S3 client when to retry, as natively."""
    assert from_domain(E.Unavailable("busy", retry_after=1)).headers == {"Retry-After": "1"}
    assert from_domain(E.Unavailable("busy")).headers == {}


def test_internal_errors_say_nothing_of_their_cause():
    for error in (E.ChunkCorrupt("chunk 0123 in segment 7 failed"), RuntimeError("boom"), E.StorageFailure("EIO")):
        mapped = from_domain(error)
        assert (mapped.code, mapped.status) == ("InternalError", 500)
        assert mapped.message == CODES["InternalError"][1]


def test_s3_errors_carry_status_and_default_message():
    error = S3Error("SignatureDoesNotMatch", AWSAccessKeyId="AK")
    assert (error.status, error.extra) == (403, {"AWSAccessKeyId": "AK"})
    assert error.message.startswith("The request signature")
    with pytest.raises(KeyError):
        S3Error("NoSuchThing")


# -- secrets ------------------------------------------------------------------------------

SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"


def test_master_key_is_generated_once_0600_and_reused(tmp_path):
    path = tmp_path / "data" / "s3-master.key"
    record = SecretBox.from_file(path).seal("AK1", SECRET)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert len(path.read_text().strip()) == 64
    assert SecretBox.from_file(path).open("AK1", record) == SECRET
    assert [p.name for p in path.parent.iterdir()] == ["s3-master.key"]  # no temporary file left


def test_supplied_master_keys(tmp_path):
    raw = os.urandom(32)
    (tmp_path / "raw").write_bytes(raw)
    (tmp_path / "hex").write_text(raw.hex() + "\n")
    record = SecretBox.from_file(tmp_path / "raw", create=False).seal("AK1", SECRET)
    assert SecretBox.from_file(tmp_path / "hex", create=False).open("AK1", record) == SECRET
    (tmp_path / "bad").write_text("not a key")
    with pytest.raises(MasterKeyError, match="bad"):
        SecretBox.from_file(tmp_path / "bad")
    with pytest.raises(MasterKeyError, match="missing"):
        SecretBox.from_file(tmp_path / "missing", create=False)


def test_a_record_never_holds_the_secret_in_the_clear():
    box = SecretBox(os.urandom(32))
    first, second = box.seal("AK1", SECRET), box.seal("AK1", SECRET)
    assert first != second  # a fresh nonce each time
    for record in (first, second):
        assert SECRET.encode() not in record and SECRET.encode().hex().encode() not in record
        assert box.open("AK1", record) == SECRET


def test_tampering_another_key_id_or_another_master_key_fails():
    box = SecretBox(os.urandom(32))
    record = box.seal("AK1", SECRET)
    for position in range(len(record)):
        tampered = bytearray(record)
        tampered[position] ^= 0x01
        with pytest.raises(SealedSecretError):
            box.open("AK1", bytes(tampered))
    for wrong in (record[:-1], record[:5], b""):
        with pytest.raises(SealedSecretError):
            box.open("AK1", wrong)
    with pytest.raises(SealedSecretError, match="AK2"):
        box.open("AK2", record)
    with pytest.raises(SealedSecretError):
        SecretBox(os.urandom(32)).open("AK1", record)
