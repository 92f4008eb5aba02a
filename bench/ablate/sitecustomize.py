"""Benchmark-only switches that take guarantees out of objvault, to measure
what each one costs. Never part of a deployment: Python loads this file only
when ``bench/ablate`` is on ``PYTHONPATH`` (``bench_restic.py --ablate``).

``OBJVAULT_BENCH_ABLATE`` is a comma-separated list of:

- ``verify``: large (streamed) bodies are not hashed, so a wrong name is not
  caught: what a server that trusts the client's name pays.
- ``sync``: no ``fdatasync``/``fsync`` of segments or directories and no
  synced RocksDB WAL: answers come from the page cache, like a server that
  does not promise durability.
"""

import os

_ABLATE = {w for w in os.environ.get("OBJVAULT_BENCH_ABLATE", "").split(",") if w}

if "verify" in _ABLATE:
    import hashlib

    import vault.services.chunks as _service

    class _Matches(bytes):
        """Compares equal to any digest."""

        def __eq__(self, other):
            return True

        def __ne__(self, other):
            return False

        __hash__ = bytes.__hash__

    class _TrustingSha256:
        """sha256 that skips the large pieces of a body, then says it matched."""

        def __init__(self):
            self._h, self._skipped = hashlib.sha256(), False

        def copy(self):
            return _TrustingSha256()

        def update(self, b):
            if len(b) >= 64 << 10:
                self._skipped = True
            else:
                self._h.update(b)

        def digest(self):
            return _Matches(self._h.digest()) if self._skipped else self._h.digest()

        def hexdigest(self):
            return self._h.hexdigest()

    _service._SHA256 = _TrustingSha256()

if "sync" in _ABLATE:
    import vault.meta.engine as _index

    os.fdatasync = lambda fd: None
    os.fsync = lambda fd: None

    class _NoWalSync:
        def __init__(self, db):
            object.__setattr__(self, "_db", db)

        def flush_wal(self, sync=False):
            return None

        def __getattr__(self, name):
            return getattr(self._db, name)

    _init = _index.Index.__init__

    def _index_init(self, *a, **kw):
        _init(self, *a, **kw)
        self.db = _NoWalSync(self.db)

    _index.Index.__init__ = _index_init
