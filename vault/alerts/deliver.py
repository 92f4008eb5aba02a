"""Webhook delivery: one job per configured webhook, draining its queue in order.

A delivery is removed from the queue (:mod:`vault.meta.alerts`) only after
the receiver answered 2xx, so it is delivered **at least once**: a stop
between the answer and the removal sends it again after the restart, with
the same ``id`` (receivers drop an ``id`` they have seen). A failed post
fails the pass; the runner retries after the job's :class:`Backoff`, and the
queue keeps its order, across restarts too.

Every body is signed: ``X-Objvault-Signature: sha256=<hex HMAC-SHA256 of the
body under the webhook's secret>``. The body carries the time it was sent
(``timestamp``, also in ``X-Objvault-Timestamp``), so a receiver refuses a
replay by its age without trusting an unsigned header.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import hmac
import json
import time
from urllib.parse import urlsplit

import aiohttp

from ..meta import Index
from ..meta import alerts as A
from ..workers import Backoff, Job

# Deliveries one pass sends before it gives the runner back control.
PASS_ENTRIES = 100
SIGNATURE_HEADER, TIMESTAMP_HEADER = "X-Objvault-Signature", "X-Objvault-Timestamp"


class DeliveryFailed(Exception):
    """The receiver answered, but not with 2xx."""


def sign(secret: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def redacted(url: str) -> str:
    """The webhook's scheme and host: its path or query may hold a token."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}"


class Delivery(Job):
    """Posts one webhook's queue; see the module docstring."""

    backoff = Backoff(base=1.0, factor=2.0, cap=300.0, jitter=0.2)
    expected_errors = (OSError, aiohttp.ClientError, asyncio.TimeoutError, DeliveryFailed)
    INTERVAL_SECONDS = 30.0

    def __init__(self, number: int, hook: A.Webhook, index: Index, timeout: float) -> None:
        super().__init__()
        self.name = f"alerts_webhook_{number}"
        self.hook = hook
        self.index = index
        self.timeout = aiohttp.ClientTimeout(total=timeout)
        self.last_error: str | None = None
        self._work = asyncio.Event()

    def notify(self) -> None:
        """New deliveries are queued (on the loop)."""
        self._work.set()

    async def wait_for_work(self, timeout: float) -> None:
        try:
            await asyncio.wait_for(self._work.wait(), timeout)
        except asyncio.TimeoutError:
            pass

    async def run_once(self) -> dict:
        self._work.clear()
        sent = 0
        entries = A.queued(self.index, self.hook, PASS_ENTRIES)
        async with aiohttp.ClientSession(timeout=self.timeout) as session:
            for key, doc in entries:
                await self._post(session, doc)
                await self.index.run(functools.partial(A.dequeue, key=key))
                sent += 1
        if len(entries) == PASS_ENTRIES:
            self._work.set()  # more are waiting
        return {"sent": sent}

    async def _post(self, session: aiohttp.ClientSession, stored: bytes) -> None:
        now = int(time.time())
        body = json.dumps({**json.loads(stored), "timestamp": now}, separators=(",", ":")).encode()
        headers = {"Content-Type": "application/json", SIGNATURE_HEADER: sign(self.hook.cfg.secret, body),
                   TIMESTAMP_HEADER: str(now)}
        try:
            async with session.post(self.hook.cfg.url, data=body, headers=headers, allow_redirects=False) as resp:
                if not 200 <= resp.status < 300:
                    raise DeliveryFailed(f"webhook {redacted(self.hook.cfg.url)} answered {resp.status}")
        except Exception as e:
            self.last_error = f"{type(e).__name__}: {e}"
            raise
        self.last_error = None

    def status(self) -> dict:
        return {"webhook": redacted(self.hook.cfg.url), "last_error": self.last_error}
