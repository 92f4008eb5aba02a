"""Run the ceph/s3-tests conformance kit against a fresh objvault.

Starts ``objvault serve`` in a temporary directory, creates three vaults
(``s3main``, ``s3alt``, ``s3tenant``) with a ``full`` key each, runs the
kit's ``run.sh`` with their S3 credentials as main, alt and tenant (the
owner ID and display name of a vault are its name), and stops the server.

    python scripts/s3_conformance.py [--kit DIR] [--out DIR] [pytest args...]

The kit's requirements must be in this interpreter (``make s3-conformance-deps``).
Prints the kit's summary; exits with its status.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.server import Server  # noqa: E402  (the test suite's real-server harness)

KIT = ROOT.parent.parent / "shared" / "s3-conformance"
IDENTITIES = ("main", "alt", "tenant")


def credentials(server: Server) -> list[str]:
    """Access key id and secret of a fresh vault per identity, in run.sh's order."""
    out = []
    admin = server.admin
    for who in IDENTITIES:
        admin.post("/v1/vaults", json={"name": f"s3{who}"}).raise_for_status()
        r = admin.post(f"/v1/vaults/s3{who}/keys", json={"role": "full"})
        r.raise_for_status()
        s3 = r.json()["s3"]
        out += [s3["access_key_id"], s3["secret_access_key"]]
    return out


def kit_env(out: Path) -> dict[str, str]:
    env = {**os.environ, "S3T_PYTHON": sys.executable, "S3T_OUT": str(out), "S3T_TIMEOUT": "120"}
    for who in IDENTITIES:
        env[f"S3T_{who.upper()}_USER_ID"] = env[f"S3T_{who.upper()}_DISPLAY_NAME"] = f"s3{who}"
    return env


def run(kit: Path, out: Path, pytest_args: list[str]) -> int:
    with tempfile.TemporaryDirectory(prefix="objvault-s3t-") as tmp:
        server = Server(Path(tmp), env={"OBJVAULT_SEGMENT_BYTES": str(64 << 20)}).start()
        try:
            args = [str(kit / "run.sh"), "127.0.0.1", str(server.s3_port), *credentials(server), *pytest_args]
            return subprocess.run(args, env=kit_env(out)).returncode
        finally:
            server.stop()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--kit", type=Path, default=Path(os.environ.get("S3T_KIT", KIT)))
    ap.add_argument("--out", type=Path, default=Path(tempfile.mkdtemp(prefix="s3-conformance-")))
    known, rest = ap.parse_known_args()
    sys.exit(run(known.kit, known.out, rest))


if __name__ == "__main__":
    main()
