"""Prometheus metrics. The only module that imports ``prometheus_client``.

Core modules report through small recorder interfaces
(:class:`vault.services.Recorder`, :class:`vault.store.NullRecorder`,
:class:`vault.meta.IndexRecorder`, :class:`vault.workers.JobRecorder`);
:class:`Metrics` implements all of them. Names follow
``objvault_<thing>_<unit>[_total]`` in base units.

Series that name a tenant (label ``vault``) are kept apart from the rest:
:meth:`Metrics.render` shows them only when asked for the full view, which
``/metrics`` grants to the metrics or admin token (:meth:`Metrics.is_scrape_token`)
and the ``metrics_listen`` site grants to anyone who can reach it.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from typing import Callable, Iterable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily

from .meta import IndexRecorder
from .services import Recorder
from .store import NullRecorder
from .workers import JobRecorder

LATENCY_BUCKETS = (.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048)
# What generate_latest() writes; newer prometheus_client versions name a newer
# format in CONTENT_TYPE_LATEST than the one this text is in.
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class _Callback:
    """A collector computing gauges at scrape time."""

    def __init__(self, fn: Callable[[], Iterable[GaugeMetricFamily]]) -> None:
        self.fn = fn

    def collect(self):
        yield from self.fn()

    def describe(self):
        return []


@dataclass
class Totals:
    """Totals since start, read off the counters by :meth:`Metrics.totals`
    for the console's rates (:mod:`vault.trends`)."""

    ingest_bytes: int = 0   # chunk bytes uploaded, stored or deduplicated
    read_bytes: int = 0     # chunk bytes served
    requests: int = 0       # answered requests, every front door
    errors: int = 0         # of those, answered 5xx


class Metrics(Recorder, NullRecorder, IndexRecorder, JobRecorder):
    def __init__(self) -> None:
        r = self.registry = CollectorRegistry(auto_describe=True)
        # Per-tenant series: a separate registry, so the reduced view cannot
        # pick one up by accident.
        self.tenant_registry = CollectorRegistry(auto_describe=True)
        # Digests only: the plaintext scrape token need not stay in memory here.
        self._scrape_token_hash: bytes | None = None
        self.requests = Counter("objvault_http_requests_total", "HTTP requests by route template, method, status",
                                ["route", "method", "status"], registry=r)
        self.latency = Histogram("objvault_http_request_duration_seconds", "HTTP request latency by route template",
                                 ["route", "method"], buckets=LATENCY_BUCKETS, registry=r)
        self.bytes_in_total = Counter("objvault_http_received_bytes_total", "Request body bytes received", registry=r)
        self.bytes_out_total = Counter("objvault_http_sent_bytes_total", "Chunk bytes served", registry=r)
        self.chunks_written = Counter("objvault_chunks_written_total", "New chunks stored", registry=r)
        self.chunk_bytes_written = Counter("objvault_chunk_written_bytes_total", "Bytes of new chunks stored",
                                           registry=r)
        self.chunks_dedup = Counter("objvault_chunks_deduplicated_total", "Chunk uploads that were already stored",
                                    registry=r)
        self.chunk_bytes_dedup = Counter("objvault_chunk_deduplicated_bytes_total",
                                         "Bytes of chunk uploads that were already stored", registry=r)
        self.corrupt = Counter("objvault_chunks_corrupt_total", "Chunks that failed verification on read",
                               registry=r)
        self.commit_batch = Histogram("objvault_index_commit_batch_ops", "Operations per index commit batch",
                                      buckets=BATCH_BUCKETS, registry=r)
        self.commit_seconds = Histogram("objvault_index_commit_duration_seconds",
                                        "Duration of a synced index batch write", buckets=LATENCY_BUCKETS,
                                        registry=r)
        self.fsync_seconds = Histogram("objvault_segment_fsync_duration_seconds",
                                       "Duration of one segment group write + fdatasync", buckets=LATENCY_BUCKETS,
                                       registry=r)
        self.fsync_records = Histogram("objvault_segment_fsync_records", "Records made durable per fdatasync",
                                       buckets=BATCH_BUCKETS, registry=r)
        self.storage_failures = Counter("objvault_storage_failures_total", "Failed writes/fsyncs by data dir",
                                        ["dir"], registry=r)
        self.job_runs = Counter("objvault_job_runs_total", "Background job passes by job and outcome",
                                ["job", "outcome"], registry=r)
        self.job_seconds = Gauge("objvault_job_last_duration_seconds", "Duration of the last pass", ["job"],
                                 registry=r)
        self.job_last_success = Gauge("objvault_job_last_success_timestamp_seconds",
                                      "Unix time of the last successful pass", ["job"], registry=r)
        self.job_stat = Gauge("objvault_job_last_stat", "Counters of the last pass of a job", ["job", "stat"],
                              registry=r)
        self._children: dict[tuple, tuple] = {}

    def observe_request(self, route: str, method: str, status: int, seconds: float) -> None:
        key = (route, method, status)
        children = self._children.get(key)
        if children is None:  # labels() is slow; keep the children per route/method/status
            children = (self.requests.labels(route, method, str(status)), self.latency.labels(route, method))
            self._children[key] = children
        children[0].inc()
        children[1].observe(seconds)

    def totals(self) -> Totals:
        """Chunk bytes taken in (stored or deduplicated) and served, requests
        answered and those answered 5xx, since start: the counters' sums."""
        requests = errors = 0.0
        for family in self.requests.collect():
            for sample in family.samples:
                if sample.name.endswith("_total"):
                    requests += sample.value
                    errors += sample.value if sample.labels["status"].startswith("5") else 0
        return Totals(int(_sum(self.chunk_bytes_written) + _sum(self.chunk_bytes_dedup)),
                      int(_sum(self.bytes_out_total)), int(requests), int(errors))

    def add_callback(self, fn: Callable[[], Iterable[GaugeMetricFamily]], tenant: bool = False) -> None:
        """Compute ``fn``'s gauges at every scrape. ``tenant=True`` when any of
        them names a vault (or anything else of a tenant): those appear only in
        the full view."""
        (self.tenant_registry if tenant else self.registry).register(_Callback(fn))

    def set_scrape_token(self, token: str) -> None:
        """The credential that unlocks the full view; empty: none. Only its
        SHA-256 digest is kept."""
        self._scrape_token_hash = hashlib.sha256(token.encode("utf-8", "surrogatepass")).digest() if token else None

    def is_scrape_token(self, secret: str | None) -> bool:
        """Whether ``secret`` is the scrape token; digests are compared in constant time."""
        if not secret or self._scrape_token_hash is None:
            return False
        digest = hashlib.sha256(secret.encode("utf-8", "surrogatepass")).digest()
        return hmac.compare_digest(digest, self._scrape_token_hash)

    def render(self, full: bool = False) -> bytes:
        """The text exposition: every series with ``full``, else only those
        that name no tenant."""
        text = generate_latest(self.registry)
        return text + generate_latest(self.tenant_registry) if full else text

    # service.Recorder
    def chunk_written(self, nbytes: int) -> None:
        self.chunks_written.inc()
        self.chunk_bytes_written.inc(nbytes)

    def chunk_deduplicated(self, nbytes: int) -> None:
        self.chunks_dedup.inc()
        self.chunk_bytes_dedup.inc(nbytes)

    def bytes_out(self, nbytes: int) -> None:
        self.bytes_out_total.inc(nbytes)

    def corrupt_chunk(self) -> None:
        self.corrupt.inc()

    # store recorder
    def fsync(self, seconds: float, records: int) -> None:
        self.fsync_seconds.observe(seconds)
        self.fsync_records.observe(records)

    def storage_failure(self, dir_idx: int) -> None:
        self.storage_failures.labels(str(dir_idx)).inc()

    # index recorder
    def batch(self, ops: int, seconds: float) -> None:
        self.commit_batch.observe(ops)
        self.commit_seconds.observe(seconds)

    # workers.JobRecorder
    def job_pass(self, job: str, ok: bool, seconds: float, stats: dict | None, now: float) -> None:
        self.job_runs.labels(job, "ok" if ok else "error").inc()
        self.job_seconds.labels(job).set(seconds)
        if ok:
            self.job_last_success.labels(job).set(now)
            for k, v in (stats or {}).items():
                if isinstance(v, (int, float)) and not isinstance(v, bool):
                    self.job_stat.labels(job, k).set(v)


def gauge(name: str, doc: str, labels: list[str], rows: Iterable[tuple[list[str], float]]) -> GaugeMetricFamily:
    g = GaugeMetricFamily(name, doc, labels=labels)
    for lv, v in rows:
        g.add_metric(lv, v)
    return g


def _sum(counter: Counter) -> float:
    """The value of an unlabelled counter."""
    return sum(sample.value for family in counter.collect() for sample in family.samples
               if sample.name.endswith("_total"))
