"""Alerts that reach the operator.

* :mod:`.detect` — where alerts open and resolve (an index event hook and
  a periodic evaluator);
* :mod:`.deliver` — the webhooks' delivery jobs (signed, retried, at least once);
* :class:`Alerts` — both, for one server: the hook, the jobs, what
  ``GET /v1/admin/alerts`` and ``/metrics`` show.

The storage (open alerts, history, delivery queues) is :mod:`vault.meta.alerts`.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any, Callable, Iterable

from ..config import AlertsConfig
from ..events import ALERT_KINDS
from ..meta import Index
from ..meta import alerts as A
from ..metrics import gauge
from ..store import Store
from ..workers import Runner
from .deliver import Delivery
from .detect import AlertHook, Evaluator


class Alerts:
    """Everything alerting runs inside one server."""

    def __init__(self, cfg: AlertsConfig, index: Index, store: Store, data_dirs: list[str],
                 targets: Callable[[], list[dict[str, Any]]]) -> None:
        self.index = index
        self.loop = asyncio.get_running_loop()
        hooks = [A.Webhook.of(h) for h in cfg.webhooks]
        self.deliveries = [Delivery(i, h, index, cfg.delivery_timeout_seconds) for i, h in enumerate(hooks)]
        self.hook = AlertHook(cfg, hooks, self._wake_threadsafe)
        self.evaluator = Evaluator(cfg, index, store, data_dirs, targets, self.hook)
        self.interval = cfg.evaluate_interval_seconds

    async def start(self, runner: Runner) -> None:
        """Hook into the index (before any job commits), drop the queues of removed
        webhooks, and hand the jobs to ``runner``."""
        self.index.event_hooks.append(self.hook)
        keep = {d.hook.hid for d in self.deliveries}
        await self.index.run(lambda txn: A.forget_webhooks(txn, keep))
        runner.add(self.evaluator, self.interval, first_delay=0)
        for d in self.deliveries:
            runner.add(d, Delivery.INTERVAL_SECONDS, first_delay=0)

    def stop(self) -> None:
        """Once the runner has stopped."""
        if self.hook in self.index.event_hooks:
            self.index.event_hooks.remove(self.hook)

    def _wake_threadsafe(self) -> None:
        try:
            self.loop.call_soon_threadsafe(self._wake)
        except RuntimeError:  # loop closed at shutdown
            pass

    def _wake(self) -> None:
        for d in self.deliveries:
            d.notify()

    def status(self, limit: int) -> dict[str, Any]:
        """Open alerts, the newest ``limit`` transitions and the webhooks' queues."""
        return {"open": [r.document() for r in A.open_alerts(self.index)],
                "history": [r.document() for r in A.history(self.index, limit)],
                "webhooks": [{**d.status(), "events": d.hook.cfg.events,
                              "pending_entries": A.queue_length(self.index, d.hook)} for d in self.deliveries]}

    def open_lines(self) -> list[str]:
        """One line per open alert, for people (the console's overview)."""
        return [f"{r.kind}: {r.message}" for r in A.open_alerts(self.index)]

    def gauges(self) -> Iterable:
        """Open alerts by kind (every kind, zeros too: Prometheus can alert on them)."""
        counts = Counter(r.kind for r in A.open_alerts(self.index))
        yield gauge("objvault_alerts_open", "Open alerts by kind", ["kind"],
                    [([k], counts[k]) for k in ALERT_KINDS])
        yield gauge("objvault_alert_webhook_pending_entries", "Deliveries queued per webhook", ["webhook"],
                    [([str(i)], A.queue_length(self.index, d.hook)) for i, d in enumerate(self.deliveries)])

    def vault_gauges(self) -> Iterable:
        """Open alerts about a vault, labelled with its name (the tenant registry's)."""
        rows = [([r.kind, r.vault], 1.0) for r in A.open_alerts(self.index) if r.vault]
        yield gauge("objvault_vault_alert_open", "Open alerts about a vault (1 while open)", ["kind", "vault"], rows)
