"""Recent trends for the console: ingest, read and error rates, and each
replication target's throughput and lag over the last day.

:class:`Trends` is a job that samples the server's totals (:meth:`vault.metrics.Metrics.totals`) and the
targets' status every :data:`SAMPLE_SECONDS`. It keeps, in memory and
bounded, the samples of the last minute (for rates) and one lag point per
target a minute for a day (for the lag chart). A restart starts them afresh.
Rates compare the live totals with the oldest sample of the last minute,
so they are there from the first sample on.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from dataclasses import dataclass
from typing import Any, Callable

from .metrics import Totals
from .workers import Job

SAMPLE_SECONDS = 10.0
RATE_WINDOW_SECONDS = 60.0
LAG_EVERY_SECONDS = 60.0
LAG_POINTS = 24 * 60


@dataclass(frozen=True)
class _Sample:
    t: float
    ingest_bytes: int
    read_bytes: int
    requests: int
    errors: int
    sent_bytes: dict[str, int]  # per target


@dataclass(frozen=True)
class Rates:
    """Per second over the last minute (None until there is a minute's start to compare with)."""

    ingest_bytes: float | None
    read_bytes: float | None
    requests: float | None
    errors: float | None

    @property
    def error_ratio(self) -> float | None:
        """The share of requests answered 5xx."""
        if self.requests is None or self.errors is None:
            return None
        return self.errors / self.requests if self.requests else 0.0


class Trends(Job):
    """See the module docstring. ``targets`` returns the targets' status (``Replication.status``)."""

    name = "console_trends"
    log_level = logging.DEBUG

    def __init__(self, totals: Callable[[], Totals], targets: Callable[[], list[dict[str, Any]]],
                 clock: Callable[[], float] = time.time) -> None:
        super().__init__()
        self.totals = totals
        self.targets = targets
        self.clock = clock
        self._recent: deque[_Sample] = deque(maxlen=int(RATE_WINDOW_SECONDS / SAMPLE_SECONDS) + 1)
        self._lag: deque[tuple[float, dict[str, float]]] = deque(maxlen=LAG_POINTS)

    def _sample(self, now: float, targets: list[dict[str, Any]]) -> _Sample:
        t = self.totals()
        return _Sample(now, t.ingest_bytes, t.read_bytes, t.requests, t.errors,
                       {x["name"]: x["sent_bytes"] for x in targets})

    def run_once(self) -> dict:
        now, targets = self.clock(), self.targets()
        self._recent.append(self._sample(now, targets))
        if not self._lag or now - self._lag[-1][0] >= LAG_EVERY_SECONDS:
            self._lag.append((now, {x["name"]: x["oldest_pending_seconds"] for x in targets}))
        return {"samples": len(self._recent), "lag_points": len(self._lag)}

    def _since_window(self) -> tuple[_Sample, _Sample] | None:
        """The oldest kept sample and one of now, if at least a second apart."""
        if not self._recent:
            return None
        now = self._sample(self.clock(), [])
        start = self._recent[0]
        return (start, now) if now.t - start.t >= 1.0 else None

    def rates(self) -> Rates:
        pair = self._since_window()
        if pair is None:
            return Rates(None, None, None, None)
        a, b = pair
        dt = b.t - a.t
        return Rates((b.ingest_bytes - a.ingest_bytes) / dt, (b.read_bytes - a.read_bytes) / dt,
                     (b.requests - a.requests) / dt, (b.errors - a.errors) / dt)

    def throughput(self, target: dict[str, Any]) -> float | None:
        """Bytes per second sent to ``target`` (its live status) over the last minute."""
        if not self._recent:
            return None
        start = self._recent[0]
        dt = self.clock() - start.t
        sent = start.sent_bytes.get(target["name"])
        return None if sent is None or dt < 1.0 else max(0, target["sent_bytes"] - sent) / dt

    def lag(self, target: dict[str, Any]) -> list[tuple[float, float]]:
        """``(time, oldest pending seconds)`` of ``target`` over the last day, now included."""
        name = target["name"]
        points = [(t, lags[name]) for t, lags in self._lag if name in lags]
        return points + [(self.clock(), float(target["oldest_pending_seconds"]))]
