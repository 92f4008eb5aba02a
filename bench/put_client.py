"""A lean HTTP/1.1 PUT client for the 1 MiB PUT figures: the driver's
protocol of ``bench/put.lua`` (same environment, same bodies, same
precomputed SigV4 lines), one blocking keep-alive connection per thread.

wrk's Lua builds each 1 MiB body as a new string and copies it twice more
before the write (~1 ms of CPU per request): on a 2-core machine that
shares its cores with the server under test, the client then takes a
third of what the servers get. Here the body is the 16-byte counter plus
the same tail, handed to ``sendmsg`` as two buffers: the kernel's copy is
the only one. Prints wrk's summary lines (``Requests/sec``, the ``LUA``
line with non-2xx answers) so :func:`bench.bench_ingest.wrk` reads it.

Usage: ``put_client.py URL SECONDS CONNECTIONS`` (environment as put.lua).
"""

from __future__ import annotations

import os
import socket
import sys
import threading
import time
from urllib.parse import urlsplit


def load(path: str) -> list[str]:
    with open(path) as f:
        return f.read().split("\n")


def main() -> None:
    if len(sys.argv) != 4:
        raise SystemExit(__doc__)
    url, seconds, conns = sys.argv[1], float(sys.argv[2]), int(sys.argv[3])
    where = urlsplit(url)
    host, port = where.hostname or "127.0.0.1", where.port or 80
    with open(os.environ["BASE_FILE"], "rb") as f:
        rest = memoryview(f.read()[16:])
    ids = [line for line in load(os.environ["IDS_FILE"]) if line]
    prefix, token = os.environ["URL_PREFIX"], os.environ.get("TOKEN", "")
    sigs = [line.split("\t") for line in load(os.environ["SIGS_FILE"]) if line] if os.environ.get("SIGS_FILE") else None
    start = int(os.environ.get("START", "0"))
    size = 16 + len(rest)
    deadline = time.monotonic() + seconds
    counts = [[0, 0] for _ in range(conns)]  # answers, non-2xx
    firsts: list[str] = []  # the first non-2xx answer: status and body

    def head(i: int) -> bytes:
        lines = [f"PUT {prefix}{ids[i]} HTTP/1.1", f"Host: {host}:{port}", f"Content-Length: {size}",
                 "Content-Type: application/octet-stream"]
        if token:
            lines.append(f"Authorization: Bearer {token}")
        if sigs is not None:
            lines += [f"x-amz-date: {sigs[i][0]}", f"Authorization: {sigs[i][1]}", f"x-amz-content-sha256: {ids[i]}"]
        return ("\r\n".join(lines) + "\r\n\r\n").encode() + b"%016x" % i

    def answer(sock: socket.socket, buf: bytearray) -> int:
        while b"\r\n\r\n" not in buf:
            got = sock.recv(65536)
            if not got:
                raise ConnectionError("closed")
            buf += got
        end = buf.index(b"\r\n\r\n") + 4
        text = buf[:end].decode("latin-1").lower()
        length = int(text.split("content-length:", 1)[1].split("\r\n", 1)[0]) if "content-length:" in text else 0
        while len(buf) < end + length:
            buf += sock.recv(65536)
        status = int(text.split(" ", 2)[1])
        if status not in (200, 201) and not firsts:
            firsts.append(f"{status} {bytes(buf[end:end + length])[:300]!r}")
        del buf[:end + length]
        return status

    def run(k: int) -> None:
        sock = socket.create_connection((host, port))
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        buf = bytearray()
        i = start + k
        while time.monotonic() < deadline:
            n = i % len(ids)
            pieces = [memoryview(head(n)), rest]
            while pieces:
                sent = sock.sendmsg(pieces)
                while pieces and sent >= len(pieces[0]):
                    sent -= len(pieces[0])
                    pieces.pop(0)
                if pieces:
                    pieces[0] = pieces[0][sent:]
            status = answer(sock, buf)
            counts[k][0] += 1
            if status not in (200, 201):
                counts[k][1] += 1
            i += conns
        sock.close()

    t0 = time.monotonic()
    threads = [threading.Thread(target=run, args=(k,)) for k in range(conns)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.monotonic() - t0
    total, bad = sum(c[0] for c in counts), sum(c[1] for c in counts)
    print(f"Requests/sec: {total / wall:.2f}")
    print(f"LUA responses={total} non2xx={bad}")
    if firsts:
        print(f"LUA first non-2xx: {firsts[0]}")


if __name__ == "__main__":
    main()
