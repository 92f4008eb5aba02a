"""restic into objvault vs into ``rclone serve restic`` (a Go server of the same protocol).

    python bench/bench_restic.py [--mb 300] [--rounds 3] [--dir DIR] [--client-dir DIR] [--ablate WHAT ...]

Generates one tree (random files, some duplicated, a few thousand small
files), then per round and per server: a fresh repository, ``restic
backup`` of the tree and ``restic restore`` of it, both with ``--no-cache``
(every byte and every index file comes from the server). The servers take
turns going first. Prints ``name: value`` lines; ``*_ratio_*`` is
rclone's time / objvault's time (>= 1.0: objvault is no slower), from the
best run of each and as the median of the rounds' ratios. It also prints
the CPU seconds each server and restic used during the backups (medians):
the two share this machine's cores with restic, which is CPU-bound.

The two do not promise the same thing: objvault answers an upload only once
the bytes and the index entry are on disk (fdatasync of the segment, synced
RocksDB WAL) and checks every file against its SHA-256 name; ``rclone serve
restic`` writes into the page cache and neither syncs nor verifies. On a
machine whose disk is busy with other work, objvault's figure moves more.
``--ablate verify,sync`` adds an objvault with those two guarantees taken
out (bench-only, see ``bench/ablate/``), which shows what they cost.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.common import start_server  # noqa: E402
from tests.server import free_port  # noqa: E402

PASSWORD = "bench"


def make_tree(root: Path, mb: int, seed: int = 7) -> int:
    """About ``mb`` MiB: 2/3 distinct random files (64 KiB-24 MiB), 1/3 copies, plus small files."""
    rnd = random.Random(seed)
    root.mkdir(parents=True)
    target = mb << 20
    unique_target = target * 2 // 3
    files: list[Path] = []
    total = 0
    i = 0
    while total < unique_target:
        size = min(rnd.choice((64 << 10, 512 << 10, 2 << 20, 8 << 20, 24 << 20)), unique_target - total)
        d = root / f"dir{i % 8}"
        d.mkdir(exist_ok=True)
        p = d / f"file{i:04d}.bin"
        p.write_bytes(os.urandom(size))
        files.append(p)
        total += size
        i += 1
    dup = root / "copies"
    dup.mkdir()
    j = 0
    while total < target:
        src = rnd.choice(files)
        shutil.copyfile(src, dup / f"copy{j:04d}-{src.name}")
        total += src.stat().st_size
        j += 1
    small = root / "small"
    small.mkdir()
    for k in range(2000):
        data = os.urandom(rnd.randint(100, 4000))
        (small / f"s{k:05d}.txt").write_bytes(data)
        total += len(data)
    return total


def tree_digest(root: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(root.rglob("*")):
        if p.is_file():
            h.update(str(p.relative_to(root)).encode())
            with open(p, "rb") as f:
                while b := f.read(1 << 20):
                    h.update(b)
    return h.hexdigest()


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds a process has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def restic(repo: str, *args: str, cwd: Path) -> float:
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(cwd), "RESTIC_PASSWORD": PASSWORD,
           "RESTIC_REPOSITORY": repo}
    # Start every run with no dirty pages left by the one before: writeback
    # of an earlier run's 300 MB would otherwise land in this one's time.
    os.sync()
    t0 = time.perf_counter()
    r = subprocess.run(["restic", "--no-cache", "--quiet", *args], env=env, capture_output=True, text=True)
    dt = time.perf_counter() - t0
    if r.returncode != 0:
        raise RuntimeError(f"restic {' '.join(args)} on {repo.split('@')[-1]}: {r.stderr[-2000:]}")
    return dt


class Rclone:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.port = free_port()
        self.log = open(root / "rclone.log", "ab")
        self.proc = subprocess.Popen(
            ["rclone", "serve", "restic", "--config", str(root / "rclone.conf"), "--addr", f"127.0.0.1:{self.port}",
             str(root / "repos")], stdout=self.log, stderr=self.log, start_new_session=True)
        import httpx
        deadline = time.monotonic() + 20
        while True:
            try:
                httpx.get(f"http://127.0.0.1:{self.port}/", timeout=1)
                return
            except httpx.HTTPError:
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    raise RuntimeError("rclone serve restic did not start")
                time.sleep(0.1)

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()


def version(cmd: list[str]) -> str:
    return subprocess.run(cmd, capture_output=True, text=True).stdout.splitlines()[0]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mb", type=int, default=300, help="size of the generated tree in MiB (default 300)")
    ap.add_argument("--rounds", type=int, default=3, help="runs per server (default 3)")
    ap.add_argument("--dir", default=None, help="parent of the servers' data (default $BENCH_DIR or the system temp)")
    ap.add_argument("--client-dir", default="/dev/shm" if os.path.isdir("/dev/shm") else None,
                    help="parent of the source tree and restore targets (default /dev/shm): the client's own "
                         "disk I/O is the same for both servers and only adds noise")
    ap.add_argument("--ablate", action="append", default=[], metavar="WHAT",
                    help="also run an objvault with guarantees taken out, to measure what they cost: "
                         "'verify', 'sync' or 'verify,sync' (repeatable; see bench/ablate/sitecustomize.py). "
                         "Such a server is never something to deploy")
    a = ap.parse_args(argv)

    work = Path(tempfile.mkdtemp(prefix="objvault-bench-restic-", dir=a.dir or os.environ.get("BENCH_DIR")))
    client = Path(tempfile.mkdtemp(prefix="objvault-bench-restic-client-", dir=a.client_dir))
    try:
        names, times = run(work, client, a.mb, a.rounds, a.ablate)
    finally:
        shutil.rmtree(work, ignore_errors=True)
        shutil.rmtree(client, ignore_errors=True)
    for who in names:
        for op in ("backup", "restore"):
            print(f"{who}_{op}_seconds_best: {min(times[(who, op)]):.2f}")
    # CPU the servers and restic used during the backups (medians): on two
    # cores shared with a CPU-bound client, server CPU is client time lost.
    for who in names:
        for what in ("server", "restic"):
            v = sorted(times[(who, f"backup_{what}_cpu")])
            print(f"{who}_backup_{what}_cpu_seconds_median: {v[len(v) // 2]:.2f}")
    for who in (n for n in names if n != "rclone"):
        suffix = "" if who == "objvault" else f"_{who}"
        for op in ("backup", "restore"):
            ratio = min(times[("rclone", op)]) / min(times[(who, op)])
            print(f"{op}_ratio_rclone_over_objvault{suffix}: {ratio:.2f}")
            # Runs of one round are back to back: their ratio is the least
            # disturbed by whatever else the machine is doing.
            pairs = sorted(r / o for r, o in zip(times[("rclone", op)], times[(who, op)]))
            print(f"{op}_ratio_median_of_rounds{suffix}: {pairs[len(pairs) // 2]:.2f}  "
                  f"# rounds: {' '.join(f'{p:.2f}' for p in pairs)}")
    return 0


def run(work: Path, client: Path, mb: int, rounds: int,
        ablate: list[str] = ()) -> tuple[list[str], dict[tuple[str, str], list[float]]]:
    """Take turns between the servers ``rounds`` times; seconds per (server, operation)."""
    print(f"# {version(['restic', 'version'])}; {version(['rclone', 'version'])}; {os.cpu_count()} CPUs", flush=True)
    src = client / "src"
    nbytes = make_tree(src, mb)
    want = tree_digest(src)
    print(f"tree_mb: {nbytes / (1 << 20):.1f}", flush=True)

    servers = {"objvault": start_server(str(work / "objvault"))}
    for what in ablate:
        name = "objvault_without_" + "_".join(w.strip() for w in what.split(","))
        servers[name] = start_server(str(work / name), env={
            "PYTHONPATH": str(Path(__file__).resolve().parent / "ablate"), "OBJVAULT_BENCH_ABLATE": what})
    (work / "rclone").mkdir()
    rclone = Rclone(work / "rclone")
    names = [*servers, "rclone"]
    times: dict[tuple[str, str], list[float]] = {}
    try:
        for rnd in range(rounds):
            # Each server goes first in turn, and the order reverses every other round.
            order = names[rnd % len(names):] + names[:rnd % len(names)]
            for who in (order if rnd % 2 == 0 else order[::-1]):
                if who == "rclone":
                    repo = f"rest:http://127.0.0.1:{rclone.port}/round{rnd}/"
                    pid = rclone.proc.pid
                else:
                    server = servers[who]
                    vault = f"bench-{rnd}"
                    server.create_vault(vault)
                    key = server.create_key(vault, "full")
                    repo = f"rest:http://{vault}:{key}@127.0.0.1:{server.port}/restic/{vault}/"
                    pid = server.proc.pid
                restic(repo, "init", cwd=work)
                c0, r0 = cpu_seconds(pid), os.times()
                tb = restic(repo, "backup", str(src), cwd=work)
                r1 = os.times()
                times.setdefault((who, "backup_server_cpu"), []).append(cpu_seconds(pid) - c0)
                times.setdefault((who, "backup_restic_cpu"), []).append(
                    r1.children_user + r1.children_system - r0.children_user - r0.children_system)
                out = client / f"restore-{who}-{rnd}"
                tr = restic(repo, "restore", "latest", "--target", str(out), cwd=work)
                if tree_digest(out / src.relative_to("/")) != want:
                    raise RuntimeError(f"{who} round {rnd}: restored tree differs")
                shutil.rmtree(out)
                times.setdefault((who, "backup"), []).append(tb)
                times.setdefault((who, "restore"), []).append(tr)
                size = nbytes / (1 << 20)
                print(f"# round {rnd} {who}: backup {tb:.2f} s ({size / tb:.0f} MiB/s), "
                      f"restore {tr:.2f} s ({size / tr:.0f} MiB/s)", flush=True)
    finally:
        rclone.stop()
        for server in servers.values():
            server.stop()
    return names, times


if __name__ == "__main__":
    sys.exit(main())
