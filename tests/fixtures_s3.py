"""pytest fixtures for a real S3 server (SeaweedFS), see ``tests/s3server.py``.

Load with ``pytest_plugins = ["tests.fixtures_s3"]`` (in ``tests/conftest.py``
or in a test module).

- ``s3server``: one :class:`~tests.s3server.SeaweedS3` for the whole session.
- ``s3bucket``: a fresh, uniquely named bucket per test, deleted afterwards;
  an :class:`~tests.s3server.S3Bucket` with ``.name``, ``.store`` (an
  ``obstore.store.S3Store``), ``.endpoint``, ``.access_key``,
  ``.secret_key``, ``.region``, ``.server`` and ``.new_store(**opts)``.
"""

from __future__ import annotations

import contextlib
from typing import Iterator

import pytest

from tests.s3server import S3Bucket, SeaweedS3, SeaweedS3Error


@pytest.fixture(scope="session")
def s3server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SeaweedS3]:
    server = SeaweedS3(tmp_path_factory.mktemp("seaweeds3"))
    server.start(timeout=60)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def s3bucket(s3server: SeaweedS3, request: pytest.FixtureRequest) -> Iterator[S3Bucket]:
    # a test may freeze or stop the shared server: hand the next one a live server
    if s3server.frozen:
        s3server.thaw()
    if not s3server.running:
        s3server.start(timeout=60)
    bucket = s3server.bucket(hint=request.node.name)
    yield bucket
    if s3server.frozen:
        s3server.thaw()
    if s3server.running:
        with contextlib.suppress(SeaweedS3Error, OSError):
            s3server.delete_bucket(bucket.name)
