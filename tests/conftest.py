"""Shared fixtures: a real objvault server on loopback (subprocess), real RocksDB."""

from __future__ import annotations

import pytest

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
