"""``objvault fsck`` on a stopped server's data dirs, as test_fsck.py,
test_full_disk.py and test_large_objects.py run it."""

from __future__ import annotations

import json
import os
import subprocess

from tests.server import OBJVAULT, Server


def run_fsck(server: Server, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    env = dict(os.environ, OBJVAULT_DATA_DIRS=",".join(str(d) for d in server.data_dirs))
    # The data dirs come from the server alone, never from a config named in the environment.
    env.pop("OBJVAULT_CONFIG", None)
    return subprocess.run([OBJVAULT, "fsck", *args], env=env, capture_output=True, text=True, timeout=timeout)


def fsck(server: Server, *args: str, timeout: float = 120) -> tuple[int, dict]:
    """The exit code and the JSON report."""
    r = run_fsck(server, *args, timeout=timeout)
    return r.returncode, json.loads(r.stdout)
