"""Helpers shared by the API contract tests."""

from __future__ import annotations

import hashlib
import http.client

import httpx

from tests.server import Server

# Segments are preallocated: 64 MiB instead of the default 1 GiB keeps each test server small on disk.
SMALL_SEGMENTS = {"OBJVAULT_SEGMENT_BYTES": str(64 << 20)}


def admin_of(srv: Server) -> httpx.Client:
    """One admin client per server (re-made after a restart closed it)."""
    c = getattr(srv, "_admin_client", None)
    if c is None or c.is_closed:
        c = srv._admin_client = srv.client(verify=False)
    return c


def create_vault(srv: Server, name: str, **fields) -> dict:
    r = admin_of(srv).post("/v1/vaults", json={"name": name, **fields})
    assert r.status_code == 201, r.text
    return r.json()


def create_key(srv: Server, vault: str, role: str = "full") -> str:
    r = admin_of(srv).post(f"/v1/vaults/{vault}/keys", json={"role": role})
    assert r.status_code == 201, r.text
    return r.json()["secret"]


def assert_problem(r, status: int, code: str | None = None) -> dict:
    """``r`` is a problem document with this status (and code); a HEAD answer has no body to check."""
    assert r.status_code == status, (r.status_code, r.text)
    if r.request.method == "HEAD":
        return {}
    assert r.headers["content-type"].split(";")[0] == "application/problem+json", r.headers
    body = r.json()
    assert body["status"] == status and isinstance(body["code"], str)
    if code is not None:
        assert body["code"] == code, body
    return body


def raw_request(srv: Server, method: str, path: str, body: bytes | None = None,
                headers: dict | None = None, secret: str | None = None) -> tuple[int, dict, bytes]:
    """Send ``path`` byte-for-byte (no client-side normalisation or re-encoding)."""
    conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=30)
    try:
        h = {"Authorization": f"Bearer {secret or srv.admin_token}"}
        if body is not None:
            h["Content-Type"] = "application/json"
        h.update(headers or {})
        conn.request(method, path, body=body, headers=h)
        resp = conn.getresponse()
        data = resp.read()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, data
    finally:
        conn.close()


# POST /v1/vaults/{vault}/chunks/batch: each frame is the chunk's 32-byte SHA-256,
# its length (4 bytes, big-endian), then its bytes.
BATCH_HEADERS = {"Content-Type": "application/vnd.objvault.chunks"}


def batch_frames(chunks: list[bytes], digests: list[bytes] | None = None) -> bytes:
    """The body of a batch upload; ``digests`` replaces the true ones (to send wrong ids)."""
    digests = digests or [hashlib.sha256(c).digest() for c in chunks]
    return b"".join(d + len(c).to_bytes(4, "big") + c for d, c in zip(digests, chunks))


def self_signed(tmp_path) -> tuple[str, str]:
    """A throwaway certificate for 127.0.0.1 and its key: ``(cert_path, key_path)``."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "objvault test")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return str(cert_path), str(key_path)
