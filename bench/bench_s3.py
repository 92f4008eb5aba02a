"""S3 front-door figures (issue 13, "Figures"), each next to its baseline from the same run.

Run: ``.venv/bin/python bench/bench_s3.py`` (``--quick``: about two minutes, not the quoted figures).

Everything runs on this machine, client included. Clients:

* ``bench/put_client.py`` for the PUTs of single 1 MiB objects, and ``wrk``
  (C, with ``bench/put.lua`` / ``bench/get.lua``) for the GETs and, in the
  same run, the same PUTs again (``*_put_1mib_wrk_*``), on objvault's S3
  listener, on its native API and on SeaweedFS's S3 gateway alike. SigV4
  signatures are made by this driver before the clock starts, with the
  body's SHA-256 as the signed payload (the server verifies it). wrk's Lua
  copies each 1 MiB body three times: on these two shared cores it took
  half a core from the servers under test at ~250 PUTs/s; put_client.py
  hands the kernel the body as it is and costs a fifth of that.
* an aiohttp client for multipart uploads (create, the parts in parallel,
  complete), signing each request as it goes; the parts' SHA-256 are
  computed before the clock starts.

Baselines, measured in the same run:

* ``null_*``: an aiohttp server that reads the body and answers without
  storing anything, with the same client (the client + HTTP stack ceiling);
* ``disk_baseline``: the disk's write + fdatasync rate without any server;
* ``digest_*``: what one core hashes per second (MD5, SHA-256, both);
* ``seaweedfs_*``: SeaweedFS's S3 gateway, same client, same pattern (it
  does not fsync before answering; objvault does).

Objects and chunks are durable before objvault answers (fsync). Each round
starts fresh servers; figures are the median of the rounds (``_best``: the
best round), ratios the median of each round's ratio. ``MB`` = 10**6 bytes.
``--chunk-mib 4,8,16`` also measures, per S3 chunk size (``[s3] chunk_bytes``),
multipart uploads of 64 MiB objects in 16 MiB parts (so that every size
cuts a part differently), GETs of them, and the server's peak RSS meanwhile.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import hashlib
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import cast

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import httpx  # noqa: E402

from bench.bench_ingest import NULL_SERVER, Chunks, disk_baseline, lean_put, out, wrk  # noqa: E402
from bench.common import RSSSampler, null_server  # noqa: E402
from bench.s3_digest_rate import CASES, rate  # noqa: E402
from tests.s3server import EMPTY_SHA256, SeaweedS3, sigv4_authorization  # noqa: E402
from tests.server import Server  # noqa: E402

MiB = 1 << 20
GET_SET = 256  # 1 MiB objects read over and over by the GET figures
PUT_CLIENTS = ("lean", "wrk")  # the 1 MiB PUT figures' clients: the quoted one first
BENCH = Path(__file__).resolve().parent


class Signer:
    """SigV4 for one S3 endpoint (path style, region us-east-1)."""

    def __init__(self, port: int, access_key: str, secret_key: str) -> None:
        self.port, self.access_key, self.secret_key = port, access_key, secret_key
        self.url = f"http://127.0.0.1:{port}"

    def headers(self, method: str, path: str, payload: str, query: dict[str, str] | None = None,
                amz_date: str | None = None) -> dict[str, str]:
        amz_date = amz_date or dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
        hdrs = {"host": f"127.0.0.1:{self.port}", "x-amz-date": amz_date, "x-amz-content-sha256": payload}
        auth = sigv4_authorization(method=method, path=path, query=query or {}, headers=hdrs, payload_sha256=payload,
                                   access_key=self.access_key, secret_key=self.secret_key, amz_date=amz_date)
        del hdrs["host"]
        return {**hdrs, "Authorization": auth}

    def request(self, method: str, path: str, body: bytes = b"") -> httpx.Response:
        headers = self.headers(method, path, hashlib.sha256(body).hexdigest())
        return httpx.request(method, self.url + path, content=body, headers=headers, timeout=60)

    def listed(self, bucket: str, most: int = 1000) -> list[str]:
        """Up to ``most`` keys of ``bucket`` (ListObjectsV2, the first page)."""
        path = f"/{bucket}"
        q = {"list-type": "2", "max-keys": str(most)}
        r = httpx.get(f"{self.url}{path}?list-type=2&max-keys={most}", timeout=60,
                      headers=self.headers("GET", path, EMPTY_SHA256, q))
        if r.status_code != 200:
            raise RuntimeError(f"ListObjectsV2: {r.status_code} {r.text}")
        return re.findall(r"<Key>([^<]+)</Key>", r.text)

    def sigs_file(self, where: Path, method: str, prefix: str, names: list[str], payloads: list[str]) -> Path:
        """A SIGS_FILE for put.lua / get.lua: line i signs ``method prefix+names[i]`` (none for "-")."""
        amz_date = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
        with open(where, "w") as f:
            for name, payload in zip(names, payloads):
                if name == "-":  # a line the run does not read
                    f.write("-\t-\n")
                    continue
                h = self.headers(method, prefix + name, payload, amz_date=amz_date)
                f.write(f"{h['x-amz-date']}\t{h['Authorization']}\n")
        return where


class Parts:
    """Distinct multipart parts: a 16-hex-digit counter, then the same random tail; SHA-256s up front."""

    def __init__(self, size: int, count: int) -> None:
        self.size = size
        self.rest = os.urandom(size - 16)
        self.sha = [hashlib.sha256(self.data(i)).hexdigest() for i in range(count)]

    def data(self, i: int) -> bytes:
        return b"%016x" % i + self.rest


async def multipart(s3: Signer, bucket: str, parts: Parts, objects: int, per_object: int,
                    in_flight: int, tag: str, first: int = 0) -> tuple[float, list[str]]:
    """Upload ``objects`` objects of ``per_object`` parts (object ``n`` of parts
    ``n * per_object...``, from ``n = first``), ``in_flight`` objects at a time
    (every part of an object in parallel); returns (MB/s, keys)."""
    import aiohttp

    async def one(session: aiohttp.ClientSession, n: int) -> str:
        key = f"mp-{tag}-{n}"
        path = f"/{bucket}/{key}"
        async with session.post(f"{s3.url}{path}?uploads=",
                                headers=s3.headers("POST", path, EMPTY_SHA256, {"uploads": ""})) as r:
            text = await r.text()
            if r.status != 200:
                raise RuntimeError(f"create {r.status}: {text}")
            upload = re.search(r"<UploadId>([^<]+)</UploadId>", text).group(1)  # type: ignore[union-attr]

        async def part(number: int) -> str:
            i = n * per_object + number - 1
            q = {"partNumber": str(number), "uploadId": upload}
            async with session.put(f"{s3.url}{path}?partNumber={number}&uploadId={upload}", data=parts.data(i),
                                   headers=s3.headers("PUT", path, parts.sha[i], q)) as r:
                if r.status != 200:
                    raise RuntimeError(f"part {r.status}: {await r.text()}")
                return r.headers["ETag"]

        etags = await asyncio.gather(*(part(k) for k in range(1, per_object + 1)))
        body = ("<CompleteMultipartUpload>" + "".join(
            f"<Part><PartNumber>{k}</PartNumber><ETag>{e}</ETag></Part>" for k, e in enumerate(etags, 1))
            + "</CompleteMultipartUpload>").encode()
        q = {"uploadId": upload}
        async with session.post(f"{s3.url}{path}?uploadId={upload}", data=body,
                                headers=s3.headers("POST", path, hashlib.sha256(body).hexdigest(), q)) as r:
            text = await r.text()
            if r.status != 200 or "<Error>" in text:
                raise RuntimeError(f"complete {r.status}: {text}")
        return key

    todo = iter(range(first, first + objects))
    keys: list[str] = []

    async def worker(session: aiohttp.ClientSession) -> None:
        for n in todo:
            keys.append(await one(session, n))

    t0 = time.perf_counter()
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=in_flight * per_object)) as session:
        await asyncio.gather(*(worker(session) for _ in range(in_flight)))
    seconds = time.perf_counter() - t0
    return objects * per_object * parts.size / seconds / 1e6, keys


def put_rate(url: str, env: dict, secs: int, conns: int, size: int, client: str = "lean") -> float:
    """MB/s of PUTs (``client``: ``lean``, bench/put_client.py, or ``wrk``
    with put.lua) that were answered 2xx (any other answer fails the run)."""
    r = lean_put(url, secs, conns, env) if client == "lean" else wrk("put.lua", url, secs, conns, env)
    if r["errors"]:
        raise RuntimeError(f"{r['errors']} PUTs failed at {url}: {r['first_error']}")
    return r["rps"] * size / 1e6


def get_rate(url: str, env: dict, secs: int, conns: int) -> float:
    g = wrk("get.lua", url, secs, conns, env)
    if g["errors"]:
        raise RuntimeError(f"{g['errors']} GETs failed at {url}")
    return g["transfer"] / 1e6


# The multipart client's ceiling: a server that reads every body (in 1 MiB
# pieces, as objvault does), stores nothing and answers as S3 does.
NULL_S3 = """
import sys, uvloop
from aiohttp import web
async def h(req):
    while await req.content.read(1 << 20):
        pass
    if req.method == "PUT":
        return web.Response(headers={"ETag": '"0"'})
    if "uploads" in req.query:
        return web.Response(text="<InitiateMultipartUploadResult><UploadId>0</UploadId></InitiateMultipartUploadResult>")
    return web.Response(text="<CompleteMultipartUploadResult></CompleteMultipartUploadResult>")
app = web.Application(client_max_size=1 << 30)
app.router.add_route("*", "/{tail:.*}", h)
web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), access_log=None, print=None, loop=uvloop.new_event_loop())
"""


class Target:
    """One place to PUT and GET: a wrk URL prefix and how requests are authorized."""

    def __init__(self, name: str, url: str, prefix: str, token: str = "", s3: Signer | None = None,
                 bucket: str = "") -> None:
        self.name, self.url, self.prefix, self.token, self.s3, self.bucket = name, url, prefix, token, s3, bucket


def warm(t: Target, names: list[str]) -> None:
    """GET every object once."""
    with httpx.Client(timeout=120) as client:
        for name in names:
            path = t.prefix + name
            headers = t.s3.headers("GET", path, EMPTY_SHA256) if t.s3 else {"Authorization": f"Bearer {t.token}"}
            with client.stream("GET", t.url + path, headers=headers) as r:
                if r.status_code != 200:
                    raise RuntimeError(f"GET {t.url}{path}: {r.status_code}")
                for _ in r.iter_raw(1 << 20):
                    pass


class Run:
    """One benchmark run: the shared inputs and the figures of every repetition.

    The servers compared run side by side for the whole run, and each
    repetition measures them one after the other in short slices, in a
    rotating order: the machine's load changes by the minute, so a ratio is
    taken between slices seconds apart, and the median of the repetitions
    is reported."""

    def __init__(self, work: Path, quick: bool, conns: int, reps: int) -> None:
        self.work, self.quick, self.conns, self.reps = work, quick, conns, reps
        self.secs = 4 if quick else 6
        self.per_slice = 800 * self.secs  # 1 MiB ids a PUT slice may use (more than this machine writes)
        self.small = Chunks(work, MiB, self.per_slice * reps * len(PUT_CLIENTS))
        self.objects = 6 if quick else 10  # 64 MiB objects per multipart slice
        self.parts = Parts(8 * MiB, self.objects * 8 * reps)
        self.chunk_sizes: list[int] = []
        self.parts16 = self.parts  # 16 MiB parts, made when chunk sizes are compared
        self.figures: dict[str, list[float]] = defaultdict(list)
        self.servers: list[Server] = []

    def record(self, name: str, value: float) -> None:
        self.figures[name].append(value)
        out(f"  {name}", f"{value:.2f}" if value < 10 else f"{value:.0f}")

    def wrk_env(self, prefix: str, ids_file: Path, extra: dict | None = None) -> dict:
        return {"BASE_FILE": str(self.small.base), "IDS_FILE": str(ids_file), "URL_PREFIX": prefix, "TOKEN": "",
                **(extra or {})}

    def _auth(self, t: Target, method: str, names: list[str], payloads: list[str], tag: str) -> dict:
        if t.s3 is None:
            return {"TOKEN": t.token}
        return {"SIGS_FILE": str(t.s3.sigs_file(self.work / f"sigs-{t.name}-{tag}", method, t.prefix, names,
                                                payloads))}

    def put(self, t: Target, rep: int, client: str = "lean") -> None:
        """A slice of 1 MiB PUTs on ids never sent before (no dedup hit)."""
        ids = self.small.ids()
        lo = (len(PUT_CLIENTS) * rep + PUT_CLIENTS.index(client)) * self.per_slice
        names = ids[:lo + self.per_slice]  # signed only where this slice reads
        payloads = ["-"] * lo + ids[lo:lo + self.per_slice]
        if t.s3 is not None:
            names = ["-"] * lo + names[lo:]
        env = self.wrk_env(t.prefix, self.small.ids_file, {"START": str(lo), **self._auth(t, "PUT", names, payloads,
                                                                                             "put")})
        label = "" if client == "lean" else f"_{client}"
        self.record(f"{t.name}_put_1mib{label}_mb_s", put_rate(t.url, env, self.secs, self.conns, MiB, client))

    def get_set(self, t: Target) -> list[str]:
        """Up to GET_SET 1 MiB objects just stored there."""
        if t.s3 is not None:
            return t.s3.listed(t.bucket, GET_SET)
        ids = self.small.ids()[:1500]
        gone = set(httpx.post(f"{t.url}/v1/vaults/native/chunks/missing", json={"ids": ids}, timeout=60,
                              headers={"Authorization": f"Bearer {t.token}"}).json()["missing"])
        return [i for i in ids if i not in gone][:GET_SET]

    def get(self, t: Target, names: list[str], label: str, conns: int) -> None:
        """A slice of GETs of ``names`` (each read once first: the figure is the server's, not the disk's;
        objvault writes with O_DIRECT, SeaweedFS through the page cache)."""
        keys = self.work / f"keys-{t.name}-{label}"
        keys.write_text("\n".join(names) + "\n")
        env = self.wrk_env(t.prefix, keys, {"COUNT": str(len(names)),
                                            **self._auth(t, "GET", names, [EMPTY_SHA256] * len(names), label)})
        warm(t, names)
        self.record(f"{t.name}_get_{label}_mb_s", get_rate(t.url, env, self.secs, conns))

    def multipart(self, t: Target, rep: int, parts: Parts, label: str = "") -> list[str]:
        """A slice of multipart uploads of 64 MiB objects, 16 parts in flight, on parts never sent before."""
        assert t.s3 is not None
        per_object = 64 * MiB // parts.size
        mbs, keys = asyncio.run(multipart(t.s3, t.bucket, parts, self.objects, per_object, 16 // per_object,
                                          f"{rep}", rep * self.objects))
        self.record(f"{t.name}_multipart_64mib{label}_mb_s", mbs)
        return keys

    def objvault(self, name: str, env: dict | None = None) -> tuple[Server, Target]:
        srv = Server(self.work / name, env=env).start()
        self.servers.append(srv)
        srv.create_vault("s3-bench")
        key = srv.admin.post("/v1/vaults/s3-bench/keys", json={"role": "full"}).json()["s3"]
        s3 = Signer(srv.s3_port, key["access_key_id"], key["secret_access_key"])
        r = s3.request("PUT", "/bench")
        if r.status_code != 200:
            raise RuntimeError(f"CreateBucket: {r.status_code} {r.text}")
        return srv, Target(name, s3.url, "/bench/", s3=s3, bucket="bench")

    def digests(self) -> None:
        """What one core hashes (MD5, SHA-256) and so all cores, doing nothing
        else: every S3 byte is MD5'd (the ETag) and SHA-256'd (the chunk id;
        a signed payload's hash continues from it)."""
        pieces = [os.urandom(MiB) for _ in range(64)]
        rates = {case: rate(pieces, CASES[case], 3) for case in ("md5", "sha256")}
        for case, value in rates.items():
            self.record(f"digest_{case}_one_core_mb_s", value)
        both = 1 / (1 / rates["md5"] + 1 / rates["sha256"])
        self.record("hash_ceiling_md5_sha256_all_cores_mb_s", both * (os.cpu_count() or 1))

    def main_figures(self, seaweed: bool) -> None:
        """1 MiB PUTs and GETs on the native API, objvault's S3 and SeaweedFS's;
        64 MiB multipart uploads and GETs on both S3 servers."""
        srv, s3 = self.objvault("objvault_s3")
        srv.create_vault("native")
        native = Target("native", srv.url, "/v1/vaults/native/chunks/", token=srv.create_key("native", "full"))
        targets = [native, s3]
        with contextlib.ExitStack() as stack:
            if seaweed:
                weed = stack.enter_context(SeaweedS3(self.work / "weed", volume_max=400))
                weed.create_bucket("bench")
                targets.append(Target("seaweedfs", weed.endpoint, "/bench/", bucket="bench",
                                      s3=Signer(weed.s3_port, weed.access_key, weed.secret_key)))
            large: dict[str, list[str]] = {}
            for rep in range(self.reps):
                out("repetition", rep + 1)
                order = targets[rep % len(targets):] + targets[:rep % len(targets)]
                self.digests()
                for client in PUT_CLIENTS:
                    for t in order:
                        self.put(t, rep, client)
                for t in order:
                    if t.s3 is not None:
                        large[t.name] = self.multipart(t, rep, self.parts)
                for t in order:
                    self.get(t, self.get_set(t), "1mib", self.conns)
                for t in order:
                    if t.s3 is not None:
                        self.get(t, large[t.name], "64mib", 4)
        srv.stop()

    def chunk_figures(self) -> None:
        """Per S3 chunk size: multipart uploads of 64 MiB in 16 MiB parts, GETs of them, the peak RSS."""
        targets = [self.objvault(f"objvault_chunk{c}", {"OBJVAULT_S3_CHUNK_BYTES": str(c * MiB)})
                   for c in self.chunk_sizes]
        for rep in range(self.reps):
            out("repetition", rep + 1)
            order = targets[rep % len(targets):] + targets[:rep % len(targets)]
            for srv, t in order:
                with RSSSampler(cast(subprocess.Popen, srv.proc).pid) as rss:
                    keys = self.multipart(t, rep, self.parts16)
                    self.get(t, keys, "64mib", 4)
                self.record(f"{t.name}_rss_peak_mib", rss.peak / MiB)
        for srv, _ in targets:
            srv.stop()

    def baselines(self) -> None:
        out("disk_baseline_write_mb_s", f"{disk_baseline(self.work, (1 if self.quick else 2) << 30):.0f}")
        with null_server(NULL_SERVER) as url:
            env = self.wrk_env("/null/", self.small.ids_file)
            for client in PUT_CLIENTS:
                label = "" if client == "lean" else f"_{client}"
                out(f"null_put_1mib{label}_mb_s", f"{put_rate(url, env, self.secs, self.conns, MiB, client):.0f}")
            out("null_get_1mib_mb_s", f"{get_rate(url, {**env, 'COUNT': '1000'}, self.secs, self.conns):.0f}")
        with null_server(NULL_S3) as url:
            mbs, _ = asyncio.run(multipart(Signer(int(url.rsplit(":", 1)[1]), "null", "null"), "null", self.parts,
                                           self.objects, 8, 2, "null"))
            out("null_multipart_64mib_mb_s", f"{mbs:.0f}")

    def report(self) -> None:
        f = self.figures
        out("summary", f"median of {self.reps} repetitions (_best: the best one); ratios: median of each repetition's")
        for name, values in sorted(f.items()):
            out(name, f"{statistics.median(values):.0f}")
            if name.endswith("_mb_s"):
                out(name + "_best", f"{max(values):.0f}")

        def ratio(a: str, b: str) -> None:
            if f.get(a) and f.get(b):
                rs = [x / y for x, y in zip(f[a], f[b])]
                out(f"ratio_{a.removesuffix('_mb_s')}_vs_{b.removesuffix('_mb_s')}", f"{statistics.median(rs):.2f}")

        ratio("objvault_s3_put_1mib_mb_s", "seaweedfs_put_1mib_mb_s")
        ratio("objvault_s3_put_1mib_mb_s", "native_put_1mib_mb_s")
        ratio("objvault_s3_put_1mib_wrk_mb_s", "seaweedfs_put_1mib_wrk_mb_s")
        ratio("objvault_s3_put_1mib_wrk_mb_s", "native_put_1mib_wrk_mb_s")
        ratio("objvault_s3_get_1mib_mb_s", "native_get_1mib_mb_s")
        ratio("objvault_s3_multipart_64mib_mb_s", "seaweedfs_multipart_64mib_mb_s")
        ratio("objvault_s3_get_64mib_mb_s", "seaweedfs_get_64mib_mb_s")
        ratio("objvault_s3_multipart_64mib_mb_s", "hash_ceiling_md5_sha256_all_cores_mb_s")
        ratio("objvault_s3_put_1mib_mb_s", "hash_ceiling_md5_sha256_all_cores_mb_s")

    def stop(self) -> None:
        for srv in self.servers:
            srv.stop()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="one short repetition (not the quoted figures)")
    ap.add_argument("--reps", type=int, default=None, help="repetitions (default 3, 1 with --quick)")
    ap.add_argument("--concurrency", type=int, default=16, help="PUTs/GETs of 1 MiB in flight (default 16)")
    ap.add_argument("--chunk-mib", default="", help="also compare these S3 chunk sizes, e.g. 4,8,16")
    ap.add_argument("--no-seaweedfs", action="store_true", help="skip SeaweedFS (profiling runs)")
    ap.add_argument("--dir", default=os.environ.get("BENCH_DIR", str(BENCH.parent / ".bench")))
    args = ap.parse_args()
    if not shutil.which("wrk"):
        raise SystemExit("wrk is needed: apt-get install wrk (make bench installs it)")
    reps = args.reps or (1 if args.quick else 3)
    Path(args.dir).mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="s3bench-", dir=args.dir))
    run = None
    try:
        run = Run(work, args.quick, args.concurrency, reps)
        run.chunk_sizes = [int(c) for c in args.chunk_mib.split(",") if c]
        if run.chunk_sizes:
            run.parts16 = Parts(16 * MiB, run.objects * 4 * reps)
        out("machine", f"{os.cpu_count()} cores; client and server on the same machine")
        out("concurrency", args.concurrency)
        run.baselines()
        run.main_figures(not args.no_seaweedfs)
        if run.chunk_sizes:
            run.chunk_figures()
        run.report()
    finally:
        if run is not None:
            run.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
