"""Quotas against a real server: exact under concurrency (the check runs in
the single committer), on both write paths (buffered and streamed chunks),
and changes take effect at once."""

from __future__ import annotations

import asyncio
import os

import aiohttp
import pytest

from tests.server import sha

SIZE = 100_000


async def _race(url: str, token: str, vault: str, blobs: list[bytes], concurrency: int) -> list[int]:
    """PUT every blob, ``concurrency`` at a time; the statuses in order."""
    statuses = [0] * len(blobs)
    it = iter(enumerate(blobs))
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {token}"}) as s:
        async def worker():
            for i, b in it:
                async with s.put(f"{url}/v1/vaults/{vault}/chunks/{sha(b)}", data=b) as r:
                    statuses[i] = r.status
                    if r.status == 507:
                        assert (await r.json())["code"] == "quota_exceeded"

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return statuses


@pytest.mark.parametrize("path", ["buffered", "streamed"])
def test_sixteen_concurrent_uploads_never_overshoot(make_server, path):
    env = {"OBJVAULT_GC_INTERVAL_SECONDS": "0"}
    if path == "streamed":
        env["OBJVAULT_STREAM_THRESHOLD_BYTES"] = "65536"   # 100 kB chunks take the streaming path
    s = make_server(env=env)
    quota = 10 * SIZE + SIZE // 2
    s.create_vault("quo", quota_bytes=quota)
    key = s.create_key("quo", "append")
    for rnd in range(3):
        blobs = [os.urandom(SIZE) for _ in range(64)]
        statuses = asyncio.run(_race(s.url, key, "quo", blobs, 16))
        assert set(statuses) <= {201, 507}, statuses
        usage = s.admin.get("/v1/vaults/quo").json()["usage"]
        assert usage["stored_bytes"] <= quota
        if rnd == 0:
            assert statuses.count(201) == 10
        assert usage["stored_bytes"] == 10 * SIZE and usage["chunks"] == 10
        # Exactly the acknowledged chunks are stored.
        ids = [sha(b) for b in blobs]
        missing = set(s.admin.post("/v1/vaults/quo/chunks/missing", json={"ids": ids}).json()["missing"])
        assert {i for i, st in zip(ids, statuses) if st == 201} == set(ids) - missing
        if rnd == 0:
            kept = [b for b, st in zip(blobs, statuses) if st == 201]
    # A full vault still accepts what it already holds (dedup).
    r = s.client(key).put(f"/v1/vaults/quo/chunks/{sha(kept[0])}", content=kept[0])
    assert r.status_code == 200


def test_quota_changes_take_effect_at_once(make_server):
    s = make_server(env={"OBJVAULT_GC_INTERVAL_SECONDS": "0", "OBJVAULT_GC_GRACE_SECONDS": "0"})
    s.create_vault("quo2", quota_bytes=3 * SIZE)
    c = s.admin
    a = [os.urandom(SIZE) for _ in range(6)]
    for b in a[:3]:
        s.put_chunk(c, "quo2", b)
    put = lambda b: c.put(f"/v1/vaults/quo2/chunks/{sha(b)}", content=b)  # noqa: E731
    assert put(a[3]).status_code == 507
    assert c.patch("/v1/vaults/quo2", json={"quota_bytes": 4 * SIZE}).json()["quota_bytes"] == 4 * SIZE
    assert put(a[3]).status_code == 201                 # raised: the very next upload fits
    assert put(a[4]).status_code == 507
    assert c.patch("/v1/vaults/quo2", json={"quota_bytes": 2 * SIZE}).status_code == 200
    assert put(a[4]).status_code == 507                 # lowered below usage: nothing new ...
    assert put(a[0]).status_code == 200                 # ... but what is there stays readable and dedups
    assert c.get(f"/v1/vaults/quo2/chunks/{sha(a[1])}").content == a[1]
    assert c.patch("/v1/vaults/quo2", json={"quota_bytes": None}).status_code == 200
    assert put(a[4]).status_code == 201                 # no quota at all
    assert c.patch("/v1/vaults/quo2", json={"quota_bytes": 5 * SIZE}).status_code == 200
    assert put(a[5]).status_code == 507                 # 5 stored: full again
    # GC gives room back: unreferenced chunks go (grace 0), the vault takes new ones.
    assert c.put("/v1/vaults/quo2/objects/keep", json={"chunks": [sha(a[0])]}).status_code == 201
    st = c.post("/v1/admin/gc", json={}).json()
    assert st["chunks_deleted"] == 4
    assert c.get("/v1/vaults/quo2").json()["usage"]["stored_bytes"] == SIZE
    assert put(a[5]).status_code == 201
    # A key cannot change its own quota.
    key = s.create_key("quo2", "full")
    r = s.client(key).patch("/v1/vaults/quo2", json={"quota_bytes": None})
    assert r.status_code == 403
    assert c.get("/v1/vaults/quo2").json()["quota_bytes"] == 5 * SIZE
