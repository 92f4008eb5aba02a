"""GC and compaction against S3 versions and locks, under random
interleavings (hypothesis stateful testing), the sibling of
test_gc_stateful.py.

One real server (grace 0, 1 MiB segments, eager compaction); each example
gets a fresh vault with a lock-enabled (so versioned) bucket. Bodies come
from a small pool, so versions of different keys share chunks. Rules: PUTs
(some under GOVERNANCE retention, some under a legal hold), delete markers,
deletes of a given version (with and without the bypass header; a held or
retained one must be refused), releases of holds, GC passes and restarts
(clean or SIGKILL). After every step: the bucket's versions are exactly the
model's, and every version the model holds reads back byte for byte — so no
GC or compaction ever took the chunks of a live, locked or held version. At
the end the stopped server's index is recounted from scratch.
"""

from __future__ import annotations

import datetime
import itertools
import random
from collections import Counter
from dataclasses import dataclass

from botocore.exceptions import ClientError
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from tests.gchelpers import GC_ENV, check_index, run_model
from tests.s3tenant import Tenant
from tests.server import Server

_rnd = random.Random(4321)
# One 64 KiB block to several: 1 MiB segments fill, seal and get compacted.
POOL = [_rnd.randbytes(size) for size in (1, 5000, 65_537, 150_000, 240_000, 310_000)]
KEYS = ["a", "b", "dir/c"]
LOCKS = [None, "governance", "hold"]
MAX_RESTARTS = 4
UTC = datetime.timezone.utc


@dataclass
class Version:
    vid: str
    body: int | None  # None: a delete marker
    lock: str | None


class VersionsModel(RuleBasedStateMachine):
    server: Server
    restarts = 0
    seen: Counter = Counter()
    counter = itertools.count()

    def __init__(self) -> None:
        super().__init__()
        self.tenant = Tenant(self.server)
        self.s3 = self.tenant.client()
        self.bucket = f"gcv-{next(self.counter)}-{self.tenant.vault}"[:63]
        self.s3.create_bucket(Bucket=self.bucket, ObjectLockEnabledForBucket=True)
        self.versions: dict[str, list[Version]] = {key: [] for key in KEYS}  # oldest first
        self.restarted = False

    def _live(self) -> list[tuple[str, Version]]:
        return [(key, v) for key, vs in self.versions.items() for v in vs]

    @initialize(first=st.lists(st.tuples(st.sampled_from(KEYS), st.integers(0, len(POOL) - 1)), min_size=1,
                               max_size=3))
    def seed(self, first):
        for key, body in first:
            self.put(key, body, None)

    @rule(key=st.sampled_from(KEYS), body=st.integers(0, len(POOL) - 1), lock=st.sampled_from(LOCKS))
    def put(self, key, body, lock):
        kw: dict = {}
        if lock == "governance":
            kw = {"ObjectLockMode": "GOVERNANCE",
                  "ObjectLockRetainUntilDate": datetime.datetime.now(UTC) + datetime.timedelta(days=1)}
        elif lock == "hold":
            kw = {"ObjectLockLegalHoldStatus": "ON"}
        vid = self.s3.put_object(Bucket=self.bucket, Key=key, Body=POOL[body], **kw)["VersionId"]
        self.versions[key].append(Version(vid, body, lock))

    @rule(key=st.sampled_from(KEYS))
    def delete_marker(self, key):
        r = self.s3.delete_object(Bucket=self.bucket, Key=key)
        assert r["DeleteMarker"] is True
        self.versions[key].append(Version(r["VersionId"], None, None))

    @precondition(lambda self: any(self.versions.values()))
    @rule(data=st.data(), bypass=st.booleans())
    def delete_version(self, data, bypass):
        key, v = data.draw(st.sampled_from(self._live()), label="version")
        kw = {"BypassGovernanceRetention": True} if bypass else {}
        refused = v.lock == "hold" or (v.lock == "governance" and not bypass)
        try:
            self.s3.delete_object(Bucket=self.bucket, Key=key, VersionId=v.vid, **kw)
        except ClientError as e:
            assert refused, (v, e.response["Error"])
            assert e.response["Error"]["Code"] == "AccessDenied", e.response["Error"]
            VersionsModel.seen["refused"] += 1
            return
        assert not refused, v
        self.versions[key].remove(v)
        VersionsModel.seen["deleted"] += 1

    @precondition(lambda self: any(v.lock == "hold" for _, v in self._live()))
    @rule(data=st.data())
    def release_hold(self, data):
        key, v = data.draw(st.sampled_from([(k, v) for k, v in self._live() if v.lock == "hold"]), label="held")
        self.s3.put_object_legal_hold(Bucket=self.bucket, Key=key, VersionId=v.vid, LegalHold={"Status": "OFF"})
        v.lock = None

    @rule()
    def gc(self):
        r = self.server.admin.post("/v1/admin/gc", json={}, timeout=120)
        assert r.status_code == 200, r.text
        stats = r.json()
        assert stats["corrupt_records"] == 0
        VersionsModel.seen["gc"] += 1
        for k in ("chunks_deleted", "segments_compacted", "records_copied"):
            VersionsModel.seen[k] += stats[k]

    @precondition(lambda self: not self.restarted)
    @rule(kill=st.booleans())
    def restart(self, kill):
        self.restarted = True
        if VersionsModel.restarts >= MAX_RESTARTS:
            return
        VersionsModel.restarts += 1
        if kill:
            self.server.kill()
        else:
            self.server.stop()
        self.server.start()
        self.s3 = self.tenant.client()

    @invariant()
    def every_version_is_there_and_whole(self):
        doc = self.s3.list_object_versions(Bucket=self.bucket)
        got = {(v["Key"], v["VersionId"], False) for v in doc.get("Versions", [])}
        got |= {(m["Key"], m["VersionId"], True) for m in doc.get("DeleteMarkers", [])}
        assert got == {(key, v.vid, v.body is None) for key, v in self._live()}
        latest = {v["Key"]: v["VersionId"] for v in doc.get("Versions", []) + doc.get("DeleteMarkers", [])
                  if v["IsLatest"]}
        assert latest == {key: vs[-1].vid for key, vs in self.versions.items() if vs}
        for key, v in self._live():
            if v.body is not None:
                body = self.s3.get_object(Bucket=self.bucket, Key=key, VersionId=v.vid)["Body"].read()
                assert body == POOL[v.body], (key, v)

    def teardown(self):
        for key, v in self._live():
            if v.lock == "hold":
                self.s3.put_object_legal_hold(Bucket=self.bucket, Key=key, VersionId=v.vid,
                                              LegalHold={"Status": "OFF"})
            self.s3.delete_object(Bucket=self.bucket, Key=key, VersionId=v.vid, BypassGovernanceRetention=True)
        self.s3.delete_bucket(Bucket=self.bucket)
        assert self.server.admin.delete(f"/v1/vaults/{self.tenant.vault}").status_code == 204


def test_gc_never_takes_a_live_or_locked_version(make_server):
    server = make_server("gcv", env=GC_ENV)
    run_model(VersionsModel, server, examples=10, steps=25)
    # The run did what it is for: locks refused deletes, GC freed chunks and compacted around live ones.
    assert VersionsModel.seen["refused"] > 0 and VersionsModel.seen["chunks_deleted"] > 0
    assert VersionsModel.seen["segments_compacted"] > 0
    assert server.admin.post("/v1/admin/gc", json={}, timeout=120).status_code == 200
    server.stop()
    totals = check_index(server.data_dirs[0])
    assert totals["chunks"] == 0
