"""Alerts end to end: a real server on loopback posting to a local aiohttp receiver.

Delivery is at least once: a delivery leaves the queue only after a 2xx,
so a receiver that never answered 2xx for an alert gets it exactly once
(these tests), and one whose 2xx was lost to a crash gets it again with the
same ``id``.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import os
import subprocess
import threading
import time
from collections.abc import Callable

import httpx
import pytest
from aiohttp import web

from tests.replhelpers import flip_byte, s3_target, wait_drained
from tests.server import OBJVAULT, free_port

SECRET = "receiver-secret"


class Receiver:
    """An aiohttp webhook receiver in a thread of its own; answers 503 to the next ``fail`` posts."""

    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}/hook"
        self.got: list[dict] = []
        self.attempts = 0
        self.fail = 0
        self._loop = asyncio.new_event_loop()
        self._runner: web.AppRunner | None = None
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()

    async def _hook(self, request: web.Request) -> web.Response:
        body = await request.read()
        self.attempts += 1
        if self.fail > 0:
            self.fail -= 1
            return web.Response(status=503)
        self.got.append({"headers": dict(request.headers), "body": body, "doc": json.loads(body)})
        return web.Response(status=204)

    async def _start(self) -> None:
        app = web.Application()
        app.router.add_post("/hook", self._hook)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port, reuse_address=True).start()

    async def _stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    def start(self) -> "Receiver":
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(10)
        return self

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self._stop(), self._loop).result(10)

    def close(self) -> None:
        self.stop()
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)

    def events(self) -> list[tuple[str, str, str]]:
        return [(g["doc"]["event"], g["doc"]["kind"], g["doc"]["subject"]) for g in self.got]

    def wait(self, done: Callable[["Receiver"], bool], timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while not done(self):
            assert time.monotonic() < deadline, f"receiver got {self.events()} ({self.attempts} attempts)"
            time.sleep(0.1)


@pytest.fixture
def receiver():
    r = Receiver().start()
    yield r
    r.close()


def config(receiver: Receiver, extra: str = "", **alerts: object) -> str:
    settings = {"data_dir_min_free_bytes": 0, **alerts}
    lines = ["[alerts]"] + [f"{k} = {json.dumps(v)}" for k, v in settings.items()]
    lines += ["[[alerts.webhooks]]", f'url = "{receiver.url}"', f'secret = "{SECRET}"']
    return "\n".join(lines) + "\n" + extra


def assert_signed(delivery: dict) -> None:
    headers, body = delivery["headers"], delivery["body"]
    expected = "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
    assert hmac.compare_digest(headers["X-Objvault-Signature"], expected)
    assert headers["X-Objvault-Timestamp"] == str(delivery["doc"]["timestamp"])
    assert abs(time.time() - delivery["doc"]["timestamp"]) < 120


def put_bytes(server, vault: str, n: int, fill: bytes) -> None:
    server.put_chunk(server.admin, vault, fill * n)


def test_scripted_sequence_delivers_exactly_the_expected_events(make_server, receiver):
    dead = f"http://127.0.0.1:{free_port()}"
    target = f'[[replication.targets]]\nname = "dead"\nkind = "objvault"\nurl = "{dead}"\ntoken = "x"\n'
    # A vault without an object for ~2.6 s is stale; evaluated every 0.3 s.
    srv = make_server(config=config(receiver, target, stale_after_days=0.00003, evaluate_interval_seconds=0.3))
    srv.create_vault("vlt", quota_bytes=1000)
    put_bytes(srv, "vlt", 900, b"a")                                   # 90 %: warning
    put_bytes(srv, "vlt", 100, b"b")                                   # 100 %: full
    assert srv.admin.patch("/v1/vaults/vlt", json={"quota_bytes": 10_000}).status_code == 200  # both resolve
    assert srv.admin.patch("/v1/vaults/vlt", json={"append_only": True}).status_code == 200
    assert srv.admin.patch("/v1/vaults/vlt", json={"append_only": False}).status_code == 200  # weakened
    expected = [("alert.opened", "quota_warning", "vlt"), ("alert.opened", "quota_full", "vlt"),
                ("alert.resolved", "quota_warning", "vlt"), ("alert.resolved", "quota_full", "vlt"),
                ("alert.opened", "lock_weakened", "vlt"), ("alert.opened", "target_failing", "dead"),
                ("alert.opened", "vault_stale", "vlt")]
    receiver.wait(lambda r: len(r.got) >= len(expected))
    time.sleep(1.5)  # nothing more comes: no repeats while conditions persist
    assert sorted(receiver.events()) == sorted(expected)
    # The committer-hook events arrive in commit order.
    hooked = [e for e in receiver.events() if e[1] in ("quota_warning", "quota_full", "lock_weakened")]
    assert hooked == expected[:5]
    for delivery in receiver.got:
        assert_signed(delivery)
    assert len({g["doc"]["id"] for g in receiver.got}) == len(expected)

    doc = srv.admin.get("/v1/admin/alerts").json()
    assert sorted((a["kind"], a["subject"]) for a in doc["open"]) == \
        [("lock_weakened", "vlt"), ("target_failing", "dead"), ("vault_stale", "vlt")]
    assert all(a["event"] == "alert.opened" and a["resolved"] is None for a in doc["open"])
    assert len(doc["history"]) == len(expected)
    assert doc["history"][0]["id"] > doc["history"][-1]["id"]  # newest first
    assert doc["webhooks"] == [{"webhook": f"http://127.0.0.1:{receiver.port}", "last_error": None,
                                "events": ["*"], "pending_entries": 0}]
    assert srv.admin.get("/v1/admin/alerts", params={"limit": "x"}).status_code == 400
    assert httpx.get(srv.url + "/v1/admin/alerts").status_code == 401

    full = srv.admin.get("/metrics").text
    assert 'objvault_alerts_open{kind="lock_weakened"} 1.0' in full
    assert 'objvault_alerts_open{kind="quota_full"} 0.0' in full
    assert 'objvault_vault_alert_open{kind="vault_stale",vault="vlt"} 1.0' in full
    public = httpx.get(srv.url + "/metrics").text
    assert 'objvault_alerts_open{kind="target_failing"} 1.0' in public
    assert "objvault_vault_alert_open" not in public  # names a tenant: the full view only

    # People see the same open alerts in `objvault status`.
    status = subprocess.run([OBJVAULT, "status", "--url", srv.url], capture_output=True, text=True,
                            env={**os.environ, "OBJVAULT_ADMIN_TOKEN": srv.admin_token}, check=True).stdout
    rows = [line.split()[:2] for line in status.split("alerts:", 1)[1].splitlines() if line.strip()]
    assert sorted(r for r in rows if r[0] != "ALERT" and not r[0].startswith("-")) == [
        ["lock_weakened", "vlt"], ["target_failing", "-"], ["vault_stale", "vlt"]]


def test_deliveries_survive_a_receiver_outage_and_a_restart(make_server, receiver):
    receiver.fail = 2
    srv = make_server(config=config(receiver))
    srv.create_vault("qta", quota_bytes=1000)
    put_bytes(srv, "qta", 950, b"c")
    receiver.wait(lambda r: len(r.got) == 1)
    assert receiver.attempts == 3  # two 503s, retried with backoff
    assert receiver.events() == [("alert.opened", "quota_warning", "qta")]

    receiver.stop()  # nothing listens: connection refused
    put_bytes(srv, "qta", 50, b"d")                                                      # full opens
    assert srv.admin.patch("/v1/vaults/qta", json={"quota_bytes": None}).status_code == 200  # both resolve
    pending = lambda: srv.admin.get("/v1/admin/alerts").json()["webhooks"][0]  # noqa: E731
    deadline = time.monotonic() + 10
    while pending()["last_error"] is None:
        assert time.monotonic() < deadline
        time.sleep(0.1)
    assert pending()["pending_entries"] == 3
    srv.stop()
    receiver.start()
    srv.start()
    receiver.wait(lambda r: len(r.got) == 4)
    time.sleep(1.0)
    assert receiver.events() == [("alert.opened", "quota_warning", "qta"), ("alert.opened", "quota_full", "qta"),
                                 ("alert.resolved", "quota_warning", "qta"), ("alert.resolved", "quota_full", "qta")]
    ids = [g["doc"]["id"] for g in receiver.got]
    assert ids == sorted(set(ids))  # in order, none twice
    for delivery in receiver.got:
        assert_signed(delivery)
    assert srv.admin.get("/v1/admin/alerts").json()["webhooks"][0]["pending_entries"] == 0


def test_a_webhook_gets_only_the_kinds_it_wants(make_server, receiver):
    other = Receiver().start()
    try:
        extra = f'[[alerts.webhooks]]\nurl = "{other.url}"\nsecret = "x"\nevents = ["quota_full"]\n'
        srv = make_server(config=config(receiver, extra))
        srv.create_vault("kin", quota_bytes=100)
        put_bytes(srv, "kin", 100, b"e")
        receiver.wait(lambda r: len(r.got) == 2)
        other.wait(lambda r: len(r.got) == 1)
        assert other.events() == [("alert.opened", "quota_full", "kin")]
    finally:
        other.close()


def test_scrub_corruption_opens_an_alert_that_stays_open_while_damaged(make_server, receiver):
    srv = make_server(config=config(receiver, "[scrub]\ninterval_seconds = 0\n", evaluate_interval_seconds=0.3),
                      env={"OBJVAULT_SEGMENT_BYTES": str(8 << 20)})
    srv.create_vault("rot")
    mark = os.urandom(64)
    digest = srv.put_chunk(srv.admin, "rot", mark + os.urandom(200_000))
    srv.stop()
    flip_byte(srv.data_dirs[0], mark)
    srv.start()
    assert srv.admin.post("/v1/admin/scrub").status_code == 202
    receiver.wait(lambda r: len(r.got) == 1)
    time.sleep(1.0)  # the evaluator does not resolve it: the chunk is still in quarantine
    assert receiver.events() == [("alert.opened", "chunk_corrupt", "rot")]
    assert receiver.got[0]["doc"]["details"]["chunk"] == digest
    assert [a["kind"] for a in srv.admin.get("/v1/admin/alerts").json()["open"]] == ["chunk_corrupt"]


def test_a_vault_can_have_its_own_stale_threshold(make_server, receiver):
    srv = make_server(config=config(receiver, evaluate_interval_seconds=0.3))  # the default: 7 days
    assert srv.create_vault("quick", stale_after_days=0.00002)["stale_after_days"] == 0.00002  # ~1.7 s
    assert "stale_after_days" not in srv.create_vault("slow")
    for bad in (0, -1, "soon", True):
        assert srv.admin.patch("/v1/vaults/slow", json={"stale_after_days": bad}).status_code == 400
    receiver.wait(lambda r: len(r.got) == 1)
    time.sleep(1.0)
    assert receiver.events() == [("alert.opened", "vault_stale", "quick")]
    assert "stale_after_days" not in srv.admin.patch("/v1/vaults/quick", json={"stale_after_days": None}).json()
    receiver.wait(lambda r: len(r.got) == 2)
    assert receiver.events()[1] == ("alert.resolved", "vault_stale", "quick")


def test_low_free_space_opens_and_a_lower_floor_after_a_restart_resolves(make_server, receiver, tmp_path):
    """No filesystem has 2^60 bytes free: every data dir is under the floor."""
    dirs = [tmp_path / "d0", tmp_path / "d1"]
    srv = make_server(config=config(receiver, data_dir_min_free_bytes=1 << 60, evaluate_interval_seconds=0.3),
                      data_dirs=dirs)
    receiver.wait(lambda r: len(r.got) == 2)
    time.sleep(1.0)
    assert sorted(receiver.events()) == sorted(("alert.opened", "data_dir_low_space", str(d)) for d in dirs)
    assert all(g["doc"]["details"]["min_free_bytes"] == 1 << 60 and g["doc"]["vault"] == "" for g in receiver.got)
    srv.stop()
    srv.config_path.write_text(config(receiver, evaluate_interval_seconds=0.3))  # the floor off: over for both
    srv.start()
    receiver.wait(lambda r: len(r.got) == 4)
    time.sleep(1.0)
    assert sorted(receiver.events()[2:]) == sorted(("alert.resolved", "data_dir_low_space", str(d)) for d in dirs)


def test_a_failed_data_dir_opens_an_alert_until_it_is_back(tmp_path):
    """The evaluator against a real index and store; the fault is the store's own
    failure path, called with an I/O error."""
    from vault.alerts.detect import AlertHook, Evaluator
    from vault.config import AlertsConfig, WebhookConfig
    from vault.meta import Index
    from vault.meta import alerts as A
    from vault.store import Store

    dirs = [tmp_path / "d0", tmp_path / "d1"]
    store = Store(dirs, segment_bytes=4 << 20)
    store.open({}, {})
    index = Index(tmp_path / "index")
    try:
        cfg = AlertsConfig(data_dir_min_free_bytes=0)
        hook = A.Webhook.of(WebhookConfig(url="http://127.0.0.1:9/h", secret="s"))
        evaluator = Evaluator(cfg, index, store, [str(d) for d in dirs], lambda: [], AlertHook(cfg, [hook], lambda: None))
        assert evaluator.run_once() == {"opened": 0, "resolved": 0}
        store.on_failure(1, OSError(5, "Input/output error"))
        assert evaluator.run_once() == {"opened": 1, "resolved": 0}
        assert evaluator.run_once() == {"opened": 0, "resolved": 0}  # announced once
        [alert] = A.open_alerts(index)
        assert (alert.kind, alert.subject, alert.vault) == ("data_dir_failed", str(dirs[1]), "")
        store.failed_dirs.clear()  # what a restart on a repaired disk amounts to
        assert evaluator.run_once() == {"opened": 0, "resolved": 1}
        queued = [json.loads(doc) for _, doc in A.queued(index, hook, 10)]
        assert [(d["event"], d["kind"], d["subject"]) for d in queued] == [
            ("alert.opened", "data_dir_failed", str(dirs[1])), ("alert.resolved", "data_dir_failed", str(dirs[1]))]
    finally:
        index.close()
        store.close()


def test_a_stopped_target_opens_backlog_and_failing_then_both_resolve(make_server, receiver, s3bucket):
    """The S3 server stops: both alerts open. It comes back on new ports and the
    server, restarted with its new address, catches up: both resolve."""
    text = config(receiver, s3_target(s3bucket), replication_backlog_seconds=1, evaluate_interval_seconds=0.3)
    srv = make_server(config=text)
    srv.create_vault("far")
    put_bytes(srv, "far", 1000, b"f")
    wait_drained(srv)
    s3bucket.server.stop()
    put_bytes(srv, "far", 1000, b"g")
    receiver.wait(lambda r: len(r.got) == 2)
    assert sorted(receiver.events()) == [("alert.opened", "replication_backlog", "offsite"),
                                         ("alert.opened", "target_failing", "offsite")]
    backlog = next(g["doc"] for g in receiver.got if g["doc"]["kind"] == "replication_backlog")
    assert backlog["details"]["pending_entries"] >= 1 and backlog["details"]["oldest_pending_seconds"] > 1
    old_endpoint = s3bucket.server.endpoint
    s3bucket.server.start(timeout=60)
    srv.stop()
    srv.config_path.write_text(text.replace(old_endpoint, s3bucket.server.endpoint))
    srv.start()
    wait_drained(srv)
    receiver.wait(lambda r: len(r.got) == 4)
    time.sleep(1.0)
    assert sorted(receiver.events()[2:]) == [("alert.resolved", "replication_backlog", "offsite"),
                                             ("alert.resolved", "target_failing", "offsite")]
    for delivery in receiver.got:
        assert_signed(delivery)


def test_corruption_healed_from_the_replica_opens_then_resolves(make_server, receiver, s3bucket):
    srv = make_server(config=config(receiver, s3_target(s3bucket) + "[scrub]\ninterval_seconds = 0\n",
                                    evaluate_interval_seconds=0.3),
                      env={"OBJVAULT_SEGMENT_BYTES": str(8 << 20)})
    srv.create_vault("mend")
    mark = os.urandom(64)
    digest = srv.put_chunk(srv.admin, "mend", mark + os.urandom(200_000))
    wait_drained(srv)
    srv.stop()
    flip_byte(srv.data_dirs[0], mark)
    srv.start()
    assert srv.admin.post("/v1/admin/scrub").status_code == 202
    receiver.wait(lambda r: len(r.got) == 2)
    time.sleep(1.0)
    assert receiver.events() == [("alert.opened", "chunk_corrupt", "mend"), ("alert.resolved", "chunk_corrupt", "mend")]
    opened = receiver.got[0]["doc"]
    assert opened["details"]["chunk"] == digest and opened["details"]["damaged"] is False
    assert "repaired" in receiver.got[1]["doc"]["message"]
    assert srv.admin.get(f"/v1/vaults/mend/chunks/{digest}").status_code == 200
