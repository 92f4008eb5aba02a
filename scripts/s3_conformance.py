"""Run the ceph/s3-tests conformance kit against a fresh objvault and print its summary.

    python scripts/s3_conformance.py [--out DIR] [--listed] [pytest args...]

``--listed`` runs only the tests in tests/s3_conformance_passing.txt;
``--write-list`` rewrites that file with every test that passed. The kit's
requirements must be in this interpreter (``make s3-conformance-deps``).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests import s3conformance  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, help="where the kit's results go (default: a new temporary folder)")
    ap.add_argument("--listed", action="store_true", help="only the tests the project keeps passing")
    ap.add_argument("--write-list", action="store_true", help="keep every test that passed in the list")
    known, rest = ap.parse_known_args()
    known.out = known.out or Path(tempfile.mkdtemp(prefix="s3-conformance-"))
    summary = s3conformance.run(known.out, s3conformance.listed() if known.listed else None, rest)
    passed = sorted(nid for nid, t in summary["tests"].items() if t["outcome"] == "passed")
    if known.write_list:
        s3conformance.PASSING.write_text("# ceph/s3-tests that objvault passes; tests/test_s3_conformance.py "
                                         "runs them all.\n" + "".join(f"{nid}\n" for nid in passed))
    print(f"s3tests: {len(passed)}/{summary['selected']} passed; results in {known.out}")


if __name__ == "__main__":
    main()
