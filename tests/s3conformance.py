"""Running the ceph/s3-tests conformance kit against a fresh objvault.

:func:`run` starts a server in a temporary directory, creates three vaults
(``s3main``, ``s3alt``, ``s3tenant``) with a ``full`` key each, runs the
kit's ``run.sh`` with their S3 credentials as main, alt and tenant (a
vault's owner ID and display name are its name), and stops the server.
Used by ``tests/test_s3_conformance.py`` and ``scripts/s3_conformance.py``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from tests.server import Server

ROOT = Path(__file__).resolve().parent.parent
# The public ceph/s3-tests kit, vendored unmodified (third_party/s3-conformance/suite/SOURCE).
KIT = Path(os.environ.get("S3T_KIT") or ROOT / "third_party" / "s3-conformance")
PASSING = Path(__file__).with_name("s3_conformance_passing.txt")
LC_DEBUG_INTERVAL = "10"  # seconds the kit and the server take for a lifecycle day
IDENTITIES = ("main", "alt", "tenant")
# The server's region (its default): the kit creates a bucket with it as the
# LocationConstraint and expects GetBucketLocation to answer it back.
REGION = "us-east-1"


def credentials(server: Server) -> list[str]:
    """Access key id and secret of a fresh vault per identity, in run.sh's order."""
    out = []
    for who in IDENTITIES:
        server.admin.post("/v1/vaults", json={"name": f"s3{who}"}).raise_for_status()
        r = server.admin.post(f"/v1/vaults/s3{who}/keys", json={"role": "full"})
        r.raise_for_status()
        out += [r.json()["s3"]["access_key_id"], r.json()["s3"]["secret_access_key"]]
    return out


def kit_env(out: Path, tests: list[str] | None) -> dict[str, str]:
    env = {**os.environ, "S3T_PYTHON": sys.executable, "S3T_OUT": str(out), "S3T_TIMEOUT": "120",
           "S3T_LC_DEBUG_INTERVAL": LC_DEBUG_INTERVAL, "S3T_API_NAME": REGION}
    for who in IDENTITIES:
        env[f"S3T_{who.upper()}_USER_ID"] = env[f"S3T_{who.upper()}_DISPLAY_NAME"] = f"s3{who}"
    if tests:
        env["S3T_TESTS"] = " ".join(tests)
    return env


def run(out: Path, tests: list[str] | None = None, pytest_args: list[str] = ()) -> dict:
    """Run the kit (``tests``: node ids, else its default selection); its summary.json."""
    with tempfile.TemporaryDirectory(prefix="objvault-s3t-") as tmp:
        # A lifecycle "day" as long as the kit's lc_debug_interval, applied every second.
        server = Server(Path(tmp), env={"OBJVAULT_SEGMENT_BYTES": str(64 << 20),
                                        "OBJVAULT_S3_LIFECYCLE_DAY_SECONDS": LC_DEBUG_INTERVAL,
                                        "OBJVAULT_S3_LIFECYCLE_INTERVAL_SECONDS": "1"}).start()
        try:
            args = [str(KIT / "run.sh"), "127.0.0.1", str(server.s3_port), *credentials(server), *pytest_args]
            subprocess.run(args, env=kit_env(out, tests), check=False)
        finally:
            server.stop()
    return json.loads((out / "summary.json").read_text())


def listed() -> list[str]:
    """The node ids the project keeps passing (comments and blank lines left out)."""
    lines = (line.split("#", 1)[0].strip() for line in PASSING.read_text().splitlines())
    return [line for line in lines if line]
