"""The services behind the Comet route and Veeam's capacity document, on a
real index and store: what provisioning leaves (Object Lock flag included)
and leaves nothing of when a step fails; a vault's capacity figures."""

from __future__ import annotations

import hashlib
import os
import shutil
from unittest import mock

import pytest

from tests.apihelpers import SMALL_SEGMENTS
from vault import errors as E
from vault.app import Vault
from vault.body import Body
from vault.config import load_config
from vault.policy import Principal
from vault.services import VaultSettings
from vault.services.capacity import disk_totals, vault_capacity
from vault.services.provisioning import provision


@pytest.fixture
def core(tmp_path):
    v = Vault(load_config(env={"OBJVAULT_DATA_DIRS": str(tmp_path / "data"), "OBJVAULT_ADMIN_TOKEN": "t",
                               **SMALL_SEGMENTS}))
    yield v
    v.close()


async def test_provision_makes_vault_key_and_bucket(core):
    svc = core.services
    locked = await provision(svc.vaults, svc.auth, svc.buckets, "cmt-", 1 << 30, True, "comet")
    plain = await provision(svc.vaults, svc.auth, svc.buckets, "cmt-", None, False, "comet")
    assert locked.vault.name != plain.vault.name
    assert locked.vault.quota_bytes == 1 << 30 and plain.vault.quota_bytes is None
    assert locked.bucket.name == locked.vault.name and locked.bucket.vid == locked.vault.vid
    assert core.index.bucket(locked.bucket.name).settings == {"versioning": "Enabled", "object_lock": {}}
    assert core.index.bucket(plain.bucket.name).settings == {}
    key = core.index.key(locked.key.id)
    assert (key.vault, key.role, key.label) == (locked.vault.name, "full", "comet")
    secret, who = svc.auth.s3_secret(locked.key.s3.access_key_id)
    assert secret == locked.key.s3.secret_access_key and who.vault == locked.vault.name


async def test_a_failed_step_leaves_nothing(core):
    svc = core.services
    before = {v.name for v in svc.vaults.list()}
    with mock.patch.object(svc.buckets, "create", side_effect=E.BucketExists("taken")):
        with pytest.raises(E.BucketExists):
            await provision(svc.vaults, svc.auth, svc.buckets, "cmt-", None, True, "comet")
    assert {v.name for v in svc.vaults.list()} == before
    assert not [k for k in core.index.keys() if k.vault.startswith("cmt-")]


async def test_capacity_from_quota_usage_and_disks(core, tmp_path):
    svc = core.services
    admin = Principal(admin=True)
    data = os.urandom(100_000)
    recs = {}
    for name, quota in (("small", 1 << 20), ("big", 1 << 61), ("none", None)):
        recs[name] = await svc.vaults.create(name, VaultSettings(quota_bytes=quota), admin)
        await svc.chunks.put(recs[name], hashlib.sha256(data).digest(), Body.of_bytes(data))
    # a quota lowered below the usage: nothing available, never negative
    recs["small"] = await svc.vaults.update("small", VaultSettings(quota_bytes=50_000), admin)
    disk = shutil.disk_usage(tmp_path / "data")
    small = vault_capacity(svc.vaults, svc.chunks, recs["small"])
    assert (small.capacity, small.available, small.used) == (50_000, 0, 100_000)
    big = vault_capacity(svc.vaults, svc.chunks, recs["big"])
    assert big.capacity == 1 << 61 and big.used == 100_000
    assert 0 < big.available <= disk.free + (64 << 20)  # a quota beyond the free space: the free space
    none = vault_capacity(svc.vaults, svc.chunks, recs["none"])
    assert (none.capacity, none.used) == (disk.total, 100_000)


def test_disk_totals_count_a_filesystem_once(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    space = [(str(tmp_path / "a"), 1000, 400), (str(tmp_path / "b"), 1000, 400), (str(tmp_path / "gone"), 7, 7)]
    assert disk_totals(space) == (1000, 400)
