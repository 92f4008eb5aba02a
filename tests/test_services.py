"""The typed services in process, without HTTP: what every front door calls."""

from __future__ import annotations

import hashlib
import os

import pytest

from vault import errors as E
from tests.apihelpers import SMALL_SEGMENTS
from vault.app import Vault
from vault.body import Body
from vault.config import load_config
from vault.policy import Principal
from vault.services import VaultSettings

ADMIN = Principal(admin=True)


@pytest.fixture
def vault(tmp_path):
    v = Vault(load_config(env={"OBJVAULT_DATA_DIRS": str(tmp_path / "data"), "OBJVAULT_ADMIN_TOKEN": "t",
                               **SMALL_SEGMENTS}))
    yield v
    v.close()


def _sha(b: bytes) -> bytes:
    return hashlib.sha256(b).digest()


async def test_chunk_put_verifies_and_dedups(vault):
    svc = vault.services
    rec = await svc.vaults.create("acme", VaultSettings(), ADMIN)
    data = os.urandom(5000)
    with pytest.raises(E.DigestMismatch):
        await svc.chunks.put(rec, _sha(b"other"), Body.of_bytes(data))
    assert svc.vaults.usage(rec.vid).chunks == 0
    assert await svc.chunks.put(rec, _sha(data), Body.of_bytes(data)) is False
    assert await svc.chunks.put(rec, _sha(data), Body.of_bytes(data)) is True
    assert bytes(await svc.chunks.get(rec, _sha(data))) == data
    assert svc.vaults.usage(rec.vid).stored_bytes == 5000


async def test_keys_authenticate_until_revoked(vault):
    svc = vault.services
    await svc.vaults.create("acme", VaultSettings(), ADMIN)
    key = await svc.auth.create_key("acme", "read", "laptop", ADMIN)
    who = svc.auth.authenticate(key.secret)
    assert (who.vault, who.role, who.admin) == ("acme", "read", False)
    assert [k.id for k in svc.auth.list_keys(svc.vaults.get("acme"))] == [key.id]
    with pytest.raises(E.Forbidden):
        svc.auth.vault_for(who, "acme", "append")
    await svc.auth.revoke_key("acme", key.id, ADMIN)
    with pytest.raises(E.Unauthorized):
        svc.auth.authenticate(key.secret)


async def test_a_key_of_another_vault_sees_no_vault(vault):
    svc = vault.services
    await svc.vaults.create("alpha", VaultSettings(), ADMIN)
    await svc.vaults.create("beta", VaultSettings(), ADMIN)
    who = svc.auth.authenticate((await svc.auth.create_key("beta", "full", "", ADMIN)).secret)
    with pytest.raises(E.NoSuchVault):
        svc.auth.vault_for(who, "alpha", "read")


async def test_put_file_holds_the_name_to_the_bytes(vault):
    """A restic file: its bytes hash to its name, whoever writes it, and the
    native object API cannot write under restic/ at all."""
    svc = vault.services
    rec = await svc.vaults.create("acme", VaultSettings(append_only=True), ADMIN)
    appender = Principal(False, "acme", rec.vid, "append", "k")
    data = os.urandom(3000)
    with pytest.raises(E.DigestMismatch):
        await svc.objects.put_file(appender, rec, "restic/data/x", _sha(b"x"), Body.of_bytes(data))
    assert svc.objects.find(rec, "restic/data/x") is None
    await svc.objects.put_file(appender, rec, "restic/data/x", _sha(data), Body.of_bytes(data))
    await svc.objects.put_file(appender, rec, "restic/data/x", _sha(data), Body.of_bytes(data))  # a retry
    other = os.urandom(10)
    with pytest.raises(E.AppendOnly):
        await svc.objects.put_file(appender, rec, "restic/data/x", _sha(other), Body.of_bytes(other))
    with pytest.raises(E.Forbidden):
        await svc.objects.put_file(ADMIN, rec, "restic/data/x", _sha(other), Body.of_bytes(other), replace=False)
    with pytest.raises(E.ReservedKey):
        await svc.objects.put(ADMIN, rec, "restic/data/y", [_sha(data)], b"", False)
    assert svc.objects.get(rec, "restic/data/x").chunks == [_sha(data)]


async def test_objects_list_in_pages(vault):
    svc = vault.services
    rec = await svc.vaults.create("acme", VaultSettings(), ADMIN)
    data = b"payload"
    await svc.chunks.put(rec, _sha(data), Body.of_bytes(data))
    for i in range(5):
        await svc.objects.put(ADMIN, rec, f"docs/{i}", [_sha(data)], b"", False)
    page, nxt = svc.objects.list(rec, "docs/", "", 3)
    assert [o.key for o in page] == ["docs/0", "docs/1", "docs/2"] and nxt == "docs/2"
    page, nxt = svc.objects.list(rec, "docs/", nxt, 3)
    assert [o.key for o in page] == ["docs/3", "docs/4"] and nxt is None
    assert page[0].size == len(data)


async def test_quota_refuses_before_anything_is_stored(vault):
    svc = vault.services
    rec = await svc.vaults.create("small", VaultSettings(quota_bytes=1000), ADMIN)
    data = os.urandom(1001)
    with pytest.raises(E.QuotaExceeded):
        await svc.chunks.put(rec, _sha(data), Body.of_bytes(data))
    assert svc.vaults.usage(rec.vid).stored_bytes == 0 and svc.chunks._reserved == {}


async def test_abandoned_multipart_uploads_expire(vault):
    from vault.services.s3objects import S3Meta
    svc = vault.services
    await svc.vaults.create("acme", VaultSettings(), ADMIN)
    key = await svc.auth.create_key("acme", "full", "", ADMIN)
    who = svc.auth.s3_secret(key.s3.access_key_id)[1]
    await svc.buckets.create(who, "acme", "bkt")
    target = svc.buckets.target(who, "bkt", "append")
    upload = await svc.s3.create_upload(who, target, "k", S3Meta(etag=""))

    async def body():
        yield b"part bytes"

    chunks, size = await svc.s3.store(target, 10, body(), lambda data, sha256: None)
    await svc.s3.put_part(target, upload, 1, chunks, size, S3Meta(etag="e"))
    assert svc.vaults.usage(target.vault.vid).objects == 1
    assert await svc.s3.expire_uploads(upload.created - 1, 10) == 0  # not old enough
    assert await svc.s3.expire_uploads(upload.created + 1, 10) == 1
    assert svc.vaults.usage(target.vault.vid).objects == 0
    with pytest.raises(E.NoSuchUpload):
        svc.s3.upload(target, "k", upload.id)
