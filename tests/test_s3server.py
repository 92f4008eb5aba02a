"""The real-S3 test server (tests/s3server.py) and its fixtures work, and what
SeaweedFS does with the S3 features objvault relies on."""

from __future__ import annotations

import datetime as dt
import os
import time

import obstore
import pytest
from obstore.exceptions import (
    AlreadyExistsError,
    PermissionDeniedError,
    PreconditionError,
)

from tests.s3server import EMPTY_SHA256, S3Bucket, SeaweedS3, SeaweedS3Error, bucket_name, sigv4_authorization

pytest_plugins = ["tests.fixtures_s3"]


# -- SigV4 signer --------------------------------------------------------------

# AWS's published SigV4 test suite (aws-sig-v4-test-suite), which signs with
# service "service" and these example credentials.
AWS_EXAMPLE = dict(
    headers={"Host": "example.amazonaws.com", "X-Amz-Date": "20150830T123600Z"},
    payload_sha256=EMPTY_SHA256,
    access_key="AKIDEXAMPLE",
    secret_key="wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
    amz_date="20150830T123600Z",
    region="us-east-1",
    service="service",
)


def test_sigv4_matches_aws_get_vanilla_vector():
    auth = sigv4_authorization(method="GET", path="/", **AWS_EXAMPLE)
    assert auth == (
        "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, "
        "SignedHeaders=host;x-amz-date, "
        "Signature=5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31"
    )


def test_sigv4_sorts_query_like_aws_vector():
    # get-vanilla-query-order-key-case: given out of order, signed sorted
    auth = sigv4_authorization(
        method="GET", path="/", query=[("Param2", "value2"), ("Param1", "value1")], **AWS_EXAMPLE
    )
    assert auth.endswith("Signature=b97d918cfa904a5beff61c982a1b6f458b799221646efd99d3219ec94cdf2500")


def test_bucket_names_are_valid_and_unique():
    names = {bucket_name("test_Thing[param-1]") for _ in range(50)}
    assert len(names) == 50
    for n in names:
        assert 3 <= len(n) <= 63
        assert n.startswith("test-thing-param-1-")
        assert all(c.islower() or c.isdigit() or c == "-" for c in n)


# -- the server ----------------------------------------------------------------


def _listening_sockets(pid: int) -> set[tuple[str, int]]:
    """(ip, port) of every TCP socket process ``pid`` listens on (Linux /proc)."""
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            link = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if link.startswith("socket:["):
            inodes.add(link[8:-1])
    found = set()
    for table, v6 in (("/proc/net/tcp", False), ("/proc/net/tcp6", True)):
        try:
            lines = open(table).read().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            f = line.split()
            local, state, inode = f[1], f[3], f[9]
            if state != "0A" or inode not in inodes:  # 0A = LISTEN
                continue
            hexip, hexport = local.split(":")
            if v6:
                ip = "::1" if hexip == "00000000000000000000000001000000" else hexip
            else:
                ip = ".".join(str(int(hexip[i : i + 2], 16)) for i in (6, 4, 2, 0))
            found.add((ip, int(hexport, 16)))
    return found


def test_server_listens_only_on_its_own_loopback_ports(s3server: SeaweedS3):
    assert s3server.running
    assert s3server.endpoint == f"http://127.0.0.1:{s3server.s3_port}"
    ports = s3server.ports
    assert len(set(ports.values())) == len(ports), "every port flag gets its own port"
    listening = _listening_sockets(s3server.pid)
    # master, volume, filer, s3 (+ their gRPC), iceberg, lance, metrics at least
    assert len(listening) >= 11, listening
    for ip, port in listening:
        assert ip == "127.0.0.1", (ip, port)
        assert port in ports.values(), f"port {port} was not chosen by SeaweedS3 (a weed default?)"
    assert ("127.0.0.1", s3server.s3_port) in listening


def test_two_servers_run_side_by_side(s3server: SeaweedS3, tmp_path):
    with SeaweedS3(tmp_path / "second") as other:
        assert other.running and s3server.running
        assert set(other.ports.values()).isdisjoint(s3server.ports.values())
        b = other.bucket(hint="second")
        obstore.put(b.store, "k", b"only on the second server")
        assert bytes(obstore.get(b.store, "k").bytes()) == b"only on the second server"
        assert b.name not in s3server.list_buckets()
    assert not other.running
    assert s3server.running


def test_kill_and_restart_keeps_the_data(tmp_path):
    s = SeaweedS3(tmp_path)
    try:
        s.start()
        b = s.bucket(hint="survivor")
        blob = os.urandom(300_000)
        obstore.put(b.store, "k", blob)
        s.kill()  # SIGKILL, no graceful shutdown
        assert not s.running
        with pytest.raises(obstore.exceptions.BaseError):
            obstore.put(b.new_store(retry_config={"max_retries": 0}), "k2", b"v")
        s.start()  # same data dir, new ports
        assert b.name in s.list_buckets()
        assert bytes(obstore.get(s.store(b.name), "k").bytes()) == blob
    finally:
        s.stop()


def test_start_retries_when_a_port_is_taken(tmp_path, monkeypatch):
    import socket

    import tests.s3server as s3mod

    squatter = socket.socket()
    squatter.bind(("127.0.0.1", 0))
    squatter.listen()
    taken = squatter.getsockname()[1]
    real_free_ports = s3mod.free_ports
    handed_out = []

    def racy_free_ports(n, host="127.0.0.1"):
        ports = real_free_ports(n, host)
        if not handed_out:  # as if another process grabbed the S3 port meanwhile
            ports[SeaweedS3.PORT_FLAGS.index("s3.port")] = taken
        handed_out.append(ports)
        return ports

    monkeypatch.setattr(s3mod, "free_ports", racy_free_ports)
    s = SeaweedS3(tmp_path)
    try:
        s.start(timeout=60)
        assert len(handed_out) == 2
        assert s.s3_port != taken
        assert "address already in use" in s.log_path.read_text()
        b = s.bucket(hint="after-retry")
        obstore.put(b.store, "k", b"v")
        assert bytes(obstore.get(b.store, "k").bytes()) == b"v"
    finally:
        s.stop()
        squatter.close()


def test_failed_start_reports_the_log(tmp_path):
    s = SeaweedS3(tmp_path, weed="/bin/false")
    with pytest.raises(SeaweedS3Error) as ei:
        s.start(timeout=10)
    msg = str(ei.value)
    assert "exited" in msg
    assert "weed.log" in msg and "==== /bin/false server" in msg  # the log tail is included
    assert not s.running


# -- buckets -------------------------------------------------------------------


def test_s3bucket_fixture_gives_a_fresh_bucket(s3bucket: S3Bucket, s3server: SeaweedS3):
    assert s3bucket.server is s3server
    assert s3bucket.endpoint == s3server.endpoint
    assert (s3bucket.access_key, s3bucket.secret_key) == (s3server.access_key, s3server.secret_key)
    assert s3bucket.name.startswith("test-s3bucket-fixture-gives-a-fresh-buck")  # hint cut at 40
    assert s3bucket.name in s3server.list_buckets()
    assert obstore.list(s3bucket.store).collect() == []
    # creating a bucket one already owns is fine
    assert s3server.create_bucket(s3bucket.name) == s3bucket.name


def test_delete_bucket_removes_it_with_its_objects(s3server: SeaweedS3):
    b = s3server.bucket(hint="doomed")
    obstore.put(b.store, "a", b"x")
    s3server.delete_bucket(b.name)
    assert b.name not in s3server.list_buckets()
    with pytest.raises(FileNotFoundError):
        obstore.get(b.store, "a")
    s3server.delete_bucket(b.name)  # already gone: no error by default
    with pytest.raises(SeaweedS3Error):
        s3server.delete_bucket(b.name, missing_ok=False)


def test_wrong_secret_is_refused(s3bucket: S3Bucket):
    bad = s3bucket.new_store(secret_access_key="not-the-secret", retry_config={"max_retries": 0})
    with pytest.raises(PermissionDeniedError):
        obstore.put(bad, "k", b"v")
    assert obstore.list(s3bucket.store).collect() == []


# -- obstore on SeaweedFS --------------------------------------------------------


def test_obstore_put_get_list_delete_roundtrip(s3bucket: S3Bucket):
    # note: obstore 0.12 raises the builtin FileNotFoundError for a missing key
    store = s3bucket.store
    big = os.urandom(5 * 1024 * 1024 + 7)  # above the filer's 4 MiB chunk size
    r = obstore.put(store, "chunks/ab/abcd", b"hello")
    assert r["e_tag"]
    obstore.put(store, "chunks/cd/cdef", big)
    obstore.put(store, "meta/x", b"")
    assert bytes(obstore.get(store, "chunks/ab/abcd").bytes()) == b"hello"
    assert bytes(obstore.get(store, "chunks/cd/cdef").bytes()) == big
    assert bytes(obstore.get(store, "meta/x").bytes()) == b""
    assert obstore.head(store, "chunks/cd/cdef")["size"] == len(big)
    assert bytes(obstore.get_range(store, "chunks/cd/cdef", start=10, end=20)) == big[10:20]

    listed = {m["path"]: m["size"] for m in obstore.list(store).collect()}
    assert listed == {"chunks/ab/abcd": 5, "chunks/cd/cdef": len(big), "meta/x": 0}
    assert [m["path"] for m in obstore.list(store, prefix="chunks/ab").collect()] == ["chunks/ab/abcd"]
    delim = obstore.list_with_delimiter(store, prefix="chunks")
    assert sorted(delim["common_prefixes"]) == ["chunks/ab", "chunks/cd"]

    obstore.delete(store, "chunks/ab/abcd")
    with pytest.raises(FileNotFoundError):
        obstore.get(store, "chunks/ab/abcd")
    with pytest.raises(FileNotFoundError):
        obstore.head(store, "chunks/ab/abcd")
    assert sorted(m["path"] for m in obstore.list(store).collect()) == ["chunks/cd/cdef", "meta/x"]


def test_store_ignores_aws_session_token_in_environment(s3bucket: S3Bucket, monkeypatch):
    monkeypatch.setenv("AWS_SESSION_TOKEN", "token-of-some-real-aws-account")
    store = s3bucket.new_store(retry_config={"max_retries": 0})
    obstore.put(store, "k", b"v")
    assert bytes(obstore.get(store, "k").bytes()) == b"v"


def test_store_prefix(s3bucket: S3Bucket):
    sub = s3bucket.new_store("tenant-1")
    obstore.put(sub, "obj", b"v")
    assert [m["path"] for m in obstore.list(s3bucket.store).collect()] == ["tenant-1/obj"]
    assert [m["path"] for m in obstore.list(sub).collect()] == ["obj"]


async def test_obstore_async_roundtrip(s3bucket: S3Bucket):
    import asyncio

    payloads = {f"k{i}": os.urandom(1024 + i) for i in range(32)}
    await asyncio.gather(*(obstore.put_async(s3bucket.store, k, v) for k, v in payloads.items()))
    got = await asyncio.gather(*(obstore.get_async(s3bucket.store, k) for k in payloads))
    assert [bytes(await g.bytes_async()) for g in got] == list(payloads.values())
    listed = await obstore.list(s3bucket.store).collect_async()
    assert sorted(m["path"] for m in listed) == sorted(payloads)


def test_conditional_create_put(s3bucket: S3Bucket):
    # SeaweedFS 4.x honours If-None-Match: * on PUT (obstore mode="create",
    # sent with the default conditional_put="etag"): the second create of a
    # key answers 412, which obstore raises as AlreadyExistsError, and the
    # first object is left as it was.
    store = s3bucket.store
    obstore.put(store, "once", b"first", mode="create")
    with pytest.raises(AlreadyExistsError):
        obstore.put(store, "once", b"second", mode="create")
    assert bytes(obstore.get(store, "once").bytes()) == b"first"
    # a plain put still overwrites
    obstore.put(store, "once", b"third")
    assert bytes(obstore.get(store, "once").bytes()) == b"third"


def test_conditional_update_put(s3bucket: S3Bucket):
    # ... and If-Match: <etag> (obstore mode={"e_tag": ...}): 412 on a stale
    # etag, raised as PreconditionError.
    store = s3bucket.store
    v1 = obstore.put(store, "k", b"v1")
    v2 = obstore.put(store, "k", b"v2", mode={"e_tag": v1["e_tag"]})
    assert v2["e_tag"] != v1["e_tag"]
    with pytest.raises(PreconditionError):
        obstore.put(store, "k", b"v3", mode={"e_tag": v1["e_tag"]})
    assert bytes(obstore.get(store, "k").bytes()) == b"v2"


def test_freeze_makes_puts_time_out_and_thaw_recovers(s3bucket: S3Bucket):
    server = s3bucket.server
    store = s3bucket.new_store(
        client_options={"timeout": "2s", "connect_timeout": "1s"},
        retry_config={"max_retries": 0, "retry_timeout": dt.timedelta(seconds=3)},
    )
    obstore.put(store, "before", b"1")
    with server.frozen_for():
        assert server.frozen
        t0 = time.monotonic()
        with pytest.raises(obstore.exceptions.BaseError) as ei:
            obstore.put(store, "during", b"2")
        elapsed = time.monotonic() - t0
        assert 1.5 <= elapsed < 10, elapsed  # it was the client timeout, not a refusal
        assert "error sending request" in str(ei.value) or "timed out" in str(ei.value).lower()
    assert not server.frozen
    # Note: the timed-out PUT above may still be applied once the server runs
    # again (its bytes were already in the socket): a timeout means "unknown",
    # never "not written".
    obstore.put(store, "after", b"3")
    assert bytes(obstore.get(store, "after").bytes()) == b"3"
    paths = {m["path"] for m in obstore.list(store).collect()}
    assert {"before", "after"} <= paths
