"""What the GC tests share (test_lifecycle.py, test_gc_stateful.py): the
environment of a server that collects at once, and two recounts from scratch.

:func:`recount` goes through the public API only. :func:`check_index` opens
the stopped server's RocksDB directly and recounts everything: refcounts from
the objects, usage per vault, live bytes per segment, and that every chunk's
record is really in its segment file.
"""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path

import httpx
from hypothesis import HealthCheck, settings
from hypothesis.stateful import run_state_machine_as_test

from vault.meta import Index, ObjectMeta, Usage
from vault.meta.schema import chunk_digest, vid_of
from vault.store import FILE_HEADER_SIZE, parse_record_header, record_size

# Grace 0 and no background passes: each test runs GC itself and sees its effect
# at once. 1 MiB segments fill and seal quickly, and a threshold of 0.9 compacts
# a sealed segment as soon as a tenth of it is garbage.
GC_ENV = {"OBJVAULT_GC_GRACE_SECONDS": "0", "OBJVAULT_GC_INTERVAL_SECONDS": "0",
          "OBJVAULT_SEGMENT_BYTES": "1048576", "OBJVAULT_GC_COMPACT_THRESHOLD": "0.9"}


def recount(c: httpx.Client, vault: str) -> dict:
    """Usage recounted through the public API only: list objects, get each,
    HEAD every referenced chunk (each must exist). Returns the recount and
    the vault's reported usage."""
    objects, start = [], ""
    while True:
        r = c.get(f"/v1/vaults/{vault}/objects", params={"start_after": start, "limit": 1000})
        assert r.status_code == 200, r.text
        doc = r.json()
        objects += [o["key"] for o in doc["objects"]]
        if not doc["next"]:
            break
        start = doc["next"]
    logical = 0
    sizes: dict[str, int] = {}
    for key in objects:
        r = c.get(f"/v1/vaults/{vault}/objects/{key}")
        assert r.status_code == 200, r.text
        obj = r.json()
        total = 0
        for cid in obj["chunks"]:
            if cid not in sizes:
                h = c.head(f"/v1/vaults/{vault}/chunks/{cid}")
                assert h.status_code == 200, f"object {key!r} references missing chunk {cid}"
                sizes[cid] = int(h.headers["Content-Length"])
            total += sizes[cid]
        assert obj["size"] == total, (key, obj["size"], total)
        logical += total
    usage = c.get(f"/v1/vaults/{vault}").json()["usage"]
    return {"objects": len(objects), "logical_bytes": logical, "referenced": sizes, "usage": usage}


def check_index(data_dir: Path, live_vaults_only: bool = False) -> dict:
    """Open a stopped server's index and recount it from scratch; assert it agrees
    with itself and with the segment files. Returns a few totals."""
    data_dir = Path(data_dir)
    idx = Index(data_dir / "index")
    try:
        vaults = {rec.vid: rec.name for rec in idx.vaults()}
        dead = set(idx.dead_vaults())
        segs = dict(idx.segments())
        refs: Counter = Counter()
        logical: Counter = Counter()
        nobj: Counter = Counter()
        for vid, _, v in idx.all_objects():
            obj = ObjectMeta.unpack(v)
            nobj[vid] += 1
            logical[vid] += obj.size
            for d in obj.chunks:
                refs[(vid, d)] += 1
        live = Counter()
        stored = Counter()
        nchunks = Counter()
        fds: dict[int, int] = {}
        seen = set()
        try:
            for k, m in idx.all_chunks():
                vid, digest = vid_of(k), chunk_digest(k)
                seen.add((vid, digest))
                assert vid in vaults or vid in dead, f"chunk {digest.hex()} of unknown vault id {vid}"
                assert m.refcount == refs[(vid, digest)], (digest.hex(), m.refcount, refs[(vid, digest)])
                assert m.seg_id in segs, f"chunk {digest.hex()} in unknown segment {m.seg_id}"
                if m.seg_id not in fds:
                    fds[m.seg_id] = os.open(data_dir / "segments" / f"{m.seg_id:010d}.seg", os.O_RDONLY)
                hdr = parse_record_header(os.pread(fds[m.seg_id], 64, m.offset))
                assert hdr == (vid, digest, m.length), (m, hdr)
                live[m.seg_id] += record_size(m.length)
                stored[vid] += m.length
                nchunks[vid] += 1
        finally:
            for fd in fds.values():
                os.close(fd)
        for (vid, d), n in refs.items():
            assert (vid, d) in seen, f"object of vault id {vid} references missing chunk {d.hex()}"
        for sid, seg in segs.items():
            assert seg.live_bytes == live[sid], (sid, seg, live[sid])
            assert seg.end >= FILE_HEADER_SIZE or seg.live_bytes == 0
        for vid in vaults:
            u = idx.usage(vid)
            assert u == Usage(stored[vid], logical[vid], nchunks[vid], nobj[vid]), (vaults[vid], u)
        return {"segments": len(segs), "chunks": sum(nchunks.values()), "dead_vaults": len(dead),
                "live_bytes": sum(live.values())}
    finally:
        idx.close()


def run_model(model, server, examples: int, steps: int) -> None:
    """Run the state machine ``model`` (a class with ``server``, ``restarts``
    and a ``seen`` Counter) against ``server``: derandomized, so every run
    explores the same interleavings."""
    model.server, model.restarts = server, 0
    model.seen.clear()
    run_state_machine_as_test(
        model, settings=settings(max_examples=examples, stateful_step_count=steps, deadline=None, database=None,
                                 derandomize=True, suppress_health_check=list(HealthCheck)))
    print(dict(model.seen), "restarts:", model.restarts)
