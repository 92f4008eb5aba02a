"""Shared fixtures: a real objvault server on loopback (subprocess), real RocksDB.

- ``server``: a fresh server per test.
- ``make_server``: a factory for servers with their own config or environment.
- ``mkserver``: ``make_server`` with 16 MiB segments (replication, restore, scrub).
- ``srv`` and ``admin``: one server per module and its admin client, for
  modules whose tests each work in vaults of their own; a module that needs
  other settings defines its own ``srv``.
"""

from __future__ import annotations

import pytest

from tests.apihelpers import SMALL_SEGMENTS
from tests.server import Server, free_port, sha  # noqa: F401  (re-exported for tests)

pytest_plugins = ["tests.fixtures_s3"]


@pytest.fixture
def server(tmp_path):
    s = Server(tmp_path / "srv").start()
    yield s
    s.stop()


@pytest.fixture
def make_server(tmp_path):
    """Factory for servers with custom config/env; all are stopped at the end."""
    made: list[Server] = []

    def make(name: str = "srv", start: bool = True, **kw) -> Server:
        s = Server(tmp_path / name, **kw)
        made.append(s)
        return s.start() if start else s

    yield make
    for s in made:
        try:
            s.stop()
        except Exception:
            pass


# Test servers preallocate their active segment: keep it small (the replication
# tests start several servers each).
SEGMENTS_16M = {"OBJVAULT_SEGMENT_BYTES": str(16 << 20)}


@pytest.fixture
def mkserver(make_server):
    """``make_server`` with small segments (env merged)."""
    def make(name: str = "srv", env: dict | None = None, **kw) -> Server:
        return make_server(name, env={**SEGMENTS_16M, **(env or {})}, **kw)
    return make


@pytest.fixture(scope="module")
def srv(tmp_path_factory, request):
    # One server for the whole module: each test makes uniquely named vaults of its own.
    s = Server(tmp_path_factory.mktemp(request.module.__name__.rpartition(".")[2]), env=SMALL_SEGMENTS).start()
    yield s
    s.stop()


@pytest.fixture(scope="module")
def admin(srv):
    return srv.client(verify=False)
