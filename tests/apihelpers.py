"""Helpers shared by the API contract tests."""

from __future__ import annotations

import httpx

from tests.server import Server

# Segments are preallocated: 64 MiB instead of the default 1 GiB keeps each test server small on disk.
SMALL_SEGMENTS = {"OBJVAULT_SEGMENT_BYTES": str(64 << 20)}


def admin_of(srv: Server) -> httpx.Client:
    """One admin client per server (re-made after a restart closed it)."""
    c = getattr(srv, "_admin_client", None)
    if c is None or c.is_closed:
        c = srv._admin_client = srv.client(verify=False)
    return c


def create_vault(srv: Server, name: str, **fields) -> dict:
    r = admin_of(srv).post("/v1/vaults", json={"name": name, **fields})
    assert r.status_code == 201, r.text
    return r.json()


def create_key(srv: Server, vault: str, role: str = "full") -> str:
    r = admin_of(srv).post(f"/v1/vaults/{vault}/keys", json={"role": role})
    assert r.status_code == 201, r.text
    return r.json()["secret"]
