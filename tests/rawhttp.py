"""HTTP/1.1 by hand on a raw socket, for the tests that must control every byte
and every pause of a request (test_hardening.py, test_slow_clients.py)."""

from __future__ import annotations

import socket


def request_head(method: str, path: str, length: int, token: str) -> bytes:
    """A request head with a bearer token and a ``Content-Length``; the body is sent apart."""
    return (f"{method} {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n"
            f"Content-Length: {length}\r\n\r\n").encode()


def recv_head(sock: socket.socket) -> bytes:
    """Read until the first response head is complete or the server closes: all that
    came, which may go past the head, or stop short of its end when closed."""
    buf = b""
    while b"\r\n\r\n" not in buf:
        got = sock.recv(65536)
        if not got:
            break
        buf += got
    return buf
