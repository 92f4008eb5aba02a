"""The ceph/s3-tests the project keeps passing (tests/s3_conformance_passing.txt),
run by the kit against a real server; every listed test must pass."""

from __future__ import annotations


import pytest

from tests import s3conformance

pytestmark = pytest.mark.slow  # about two minutes for the list


def test_every_listed_conformance_test_passes(tmp_path):
    listed = s3conformance.listed()
    summary = s3conformance.run(tmp_path, listed)
    failed = {nid: t["first_line"] for nid, t in summary["tests"].items() if t["outcome"] != "passed"}
    assert not failed, f"{len(failed)} listed conformance tests fail: {failed}"
    assert summary["passed"] == len(listed)
