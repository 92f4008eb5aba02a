"""Background jobs and the one runner that schedules them.

A job (GC now; scrub and replication later) is a class with a ``name`` and
a bounded ``run_once()`` that does one pass and returns a dict of stats; it
may be a coroutine function or a plain function (run in a worker thread).
Tests call ``run_once()`` directly; the server hands jobs to a
:class:`Runner`, which

* runs each job every ``interval`` seconds, spread by ``jitter`` so that
  jobs started together do not stay in lock step;
* after a failed pass logs the error, counts it and retries after a
  :class:`Backoff` delay (``1.5 ** consecutive_errors`` seconds, capped, unless
  the job brings its own), never giving up;
* between passes waits in :meth:`Job.wait_for_work`, which a job that is
  told about new work (replication) ends early;
* never runs two passes of one job at once (a pass asked for through the
  admin API waits for a scheduled one to finish, and the reverse);
* reports every pass to a :class:`JobRecorder` (``vault.metrics.Metrics``)
  and keeps the last stats in memory for ``GET /v1/admin/jobs``;
* stops cleanly: cancellation is how a pass ends at shutdown, never an
  error, and is neither logged nor counted.
"""

from __future__ import annotations

import asyncio
import ctypes
import inspect
import logging
import os
import random
import time
from dataclasses import dataclass
from typing import Any, Awaitable, Callable

log = logging.getLogger("objvault.workers")


@dataclass(frozen=True)
class Backoff:
    """The one retry schedule: ``base * factor ** errors`` seconds after ``errors``
    consecutive failures, at most ``cap``; :meth:`jittered` takes up to ``jitter``
    of it off at random, so that retries that failed together do not return together."""

    base: float = 1.0
    factor: float = 1.5
    cap: float = 600.0
    jitter: float = 0.0

    def delay(self, errors: int) -> float:
        # The exponent is bounded: a target down for days must not overflow a float.
        return min(self.cap, self.base * self.factor ** min(errors, 64))

    def jittered(self, errors: int, rng: random.Random | None = None) -> float:
        return self.delay(errors) * (1.0 - self.jitter * (rng or random).random())


class Throttle:
    """The one rate limit: ``rate`` units (bytes) per second on average, 0 = unlimited.

    A token bucket holding at most one second of ``rate``: after an idle spell
    there is no unbounded burst, and a take larger than the bucket runs into
    debt that the caller sleeps off.
    """

    def __init__(self, rate: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.rate = rate
        self.clock = clock
        self.tokens = float(rate)
        self.t = clock()

    def debt(self, n: int) -> float:
        """Take ``n`` units; the seconds to wait before using them (0 when within the rate)."""
        if self.rate <= 0:
            return 0.0
        now = self.clock()
        self.tokens = min(float(self.rate), self.tokens + (now - self.t) * self.rate) - n
        self.t = now
        return -self.tokens / self.rate if self.tokens < 0 else 0.0

    async def take(self, n: int) -> None:
        wait = self.debt(n)
        if wait > 0:
            await asyncio.sleep(wait)


class JobRecorder:
    """Where passes are reported; :class:`vault.metrics.Metrics` implements it."""

    def job_pass(self, job: str, ok: bool, seconds: float, stats: dict | None, now: float) -> None:
        pass


class Job:
    """One kind of background work. Subclasses set ``name`` and implement ``run_once``.

    ``progress`` is a dict the pass may update as it goes (shown while it runs).
    """

    name = "job"
    backoff: Backoff | None = None
    """The delays after failed passes; None: the runner's."""
    log_level = logging.INFO
    """Level of the line logged after every pass (frequent passes log at DEBUG)."""
    expected_errors: tuple[type[Exception], ...] = (OSError,)
    """Failures logged without a traceback (a disk or a remote end, not a bug)."""

    def __init__(self) -> None:
        self.progress: dict[str, Any] = {}

    def run_once(self) -> dict | Awaitable[dict]:
        """Do one bounded pass; return its stats. Raise to report a failed pass."""
        raise NotImplementedError

    async def wait_for_work(self, timeout: float) -> None:
        """Return after ``timeout`` seconds, or earlier when there is work to do."""
        await asyncio.sleep(timeout)

    def status(self) -> dict:
        """What the job reports beside its passes in ``GET /v1/admin/jobs`` (``state``)."""
        return {}


class _State:
    """What the runner knows about one job."""

    def __init__(self, job: Job, interval: float, first_delay: float) -> None:
        self.job = job
        self.interval = interval
        self.first_delay = first_delay
        self.lock = asyncio.Lock()
        self.task: asyncio.Task | None = None
        self.running = False
        self.runs = 0
        self.failures = 0
        self.consecutive_errors = 0
        self.last_start: float | None = None
        self.last_end: float | None = None
        self.last_duration: float | None = None
        self.last_ok: bool | None = None
        self.last_error: str | None = None
        self.last_stats: dict | None = None
        self.last_success: float | None = None
        self.next_run: float | None = None

    def public(self) -> dict:
        return {"name": self.job.name, "interval_seconds": self.interval, "running": self.running,
                "progress": dict(self.job.progress) if self.running else {},
                "runs": self.runs, "failures": self.failures, "consecutive_errors": self.consecutive_errors,
                "last_start": self.last_start, "last_end": self.last_end,
                "last_duration_seconds": self.last_duration, "last_ok": self.last_ok,
                "last_error": self.last_error, "last_success": self.last_success,
                "last_stats": self.last_stats, "next_run": self.next_run, "state": self.job.status()}


class Runner:
    """Schedules jobs on the running event loop; see the module docstring.

    ``interval <= 0`` means the job only runs when asked (:meth:`run_now`).
    """

    def __init__(self, recorder: JobRecorder | None = None, *, jitter: float = 0.1,
                 backoff_cap: float = 600.0, stop_timeout: float = 30.0) -> None:
        self.recorder = recorder or JobRecorder()
        self.jitter = jitter
        self.policy = Backoff(cap=backoff_cap)
        self.stop_timeout = stop_timeout
        self._jobs: dict[str, _State] = {}
        self._threads: set[asyncio.Future] = set()
        self._adhoc: set[asyncio.Task] = set()
        self._started = False
        self._stopping = False
        self._rng = random.Random()

    # -- registration ------------------------------------------------------------

    def add(self, job: Job, interval: float, first_delay: float | None = None) -> None:
        """Schedule ``job`` every ``interval`` seconds, the first pass after ``first_delay``
        (default: one jittered interval). Starts at once if the runner is running."""
        if job.name in self._jobs:
            raise ValueError(f"job {job.name!r} is already registered")
        st = _State(job, float(interval), float(interval if first_delay is None else first_delay))
        self._jobs[job.name] = st
        if self._started:
            self._launch(st)

    def job(self, name: str) -> Job | None:
        st = self._jobs.get(name)
        return st.job if st else None

    def start(self) -> None:
        self._started = True
        for st in self._jobs.values():
            if st.task is None:
                self._launch(st)

    def _launch(self, st: _State) -> None:
        if st.interval > 0:
            st.task = asyncio.get_running_loop().create_task(self._loop(st), name=f"job-{st.job.name}")

    # -- scheduling ----------------------------------------------------------------

    def _jittered(self, seconds: float) -> float:
        return max(0.0, seconds * (1 + self.jitter * (2 * self._rng.random() - 1)))

    def backoff(self, errors: int) -> float:
        """Delay before retrying after ``errors`` consecutive failed passes."""
        return self.policy.delay(errors)

    def _retry_delay(self, st: _State) -> float:
        own = st.job.backoff
        return own.jittered(st.consecutive_errors, self._rng) if own else \
            self._jittered(self.backoff(st.consecutive_errors))

    async def _loop(self, st: _State) -> None:
        delay = self._jittered(st.first_delay) if st.first_delay > 0 else 0.0
        while True:
            st.next_run = time.time() + delay
            if st.consecutive_errors or st.runs == 0:
                await asyncio.sleep(delay)  # a backoff is not cut short by new work
            else:
                await st.job.wait_for_work(delay)
            try:
                await self._execute(st, st.job.run_once, record=True)
            except asyncio.CancelledError:
                raise
            except Exception:
                pass  # logged and counted by _execute; carry on after the backoff
            if st.consecutive_errors:
                delay = self._retry_delay(st)
            else:
                delay = self._jittered(st.interval)

    async def _execute(self, st: _State, fn: Callable[[], Any], record: bool) -> dict:
        async with st.lock:
            st.running = True
            st.job.progress = {}
            st.last_start = time.time()
            t0 = time.monotonic()
            try:
                if inspect.iscoroutinefunction(fn):
                    stats = await fn()
                else:
                    # A plain function may block: it runs in a thread, which
                    # cannot be cancelled, so stop() waits for it instead.
                    fut = asyncio.get_running_loop().run_in_executor(None, fn)
                    self._threads.add(fut)
                    fut.add_done_callback(self._threads.discard)
                    stats = await asyncio.shield(fut)
                    if inspect.isawaitable(stats):
                        stats = await stats
            except asyncio.CancelledError:
                st.running = False
                raise
            except Exception as e:
                seconds = time.monotonic() - t0
                st.running = False
                if record:
                    st.runs += 1
                    st.failures += 1
                    st.consecutive_errors += 1
                    st.last_end, st.last_duration, st.last_ok = time.time(), seconds, False
                    st.last_error = f"{type(e).__name__}: {e}"
                    self.recorder.job_pass(st.job.name, False, seconds, None, time.time())
                log.error("job pass failed", exc_info=not isinstance(e, st.job.expected_errors),
                          extra={"job": st.job.name, "error": f"{type(e).__name__}: {e}",
                                 "consecutive_errors": st.consecutive_errors})
                raise
            seconds = time.monotonic() - t0
            st.running = False
            stats = dict(stats or {})
            stats.setdefault("duration_seconds", round(seconds, 3))
            if record:
                st.runs += 1
                st.consecutive_errors = 0
                st.last_end, st.last_duration, st.last_ok = time.time(), seconds, True
                st.last_error, st.last_stats, st.last_success = None, stats, st.last_end
                self.recorder.job_pass(st.job.name, True, seconds, stats, st.last_end)
            log.log(st.job.log_level, "job pass", extra={"job": st.job.name, "stats": stats})
            return stats

    async def run_now(self, name: str, fn: Callable[[], Any] | None = None, record: bool = True) -> dict:
        """Run one pass of job ``name`` now (after any pass in progress) and return its stats.

        ``fn`` replaces ``run_once`` for this pass (e.g. a dry run); ``record=False``
        keeps it out of the metrics and the last-run stats. Errors propagate.
        """
        st = self._jobs.get(name)
        if st is None:
            raise KeyError(name)
        if self._stopping:
            raise asyncio.CancelledError()
        task = asyncio.get_running_loop().create_task(self._execute(st, fn or st.job.run_once, record))
        self._adhoc.add(task)
        task.add_done_callback(self._adhoc.discard)
        return await task

    def status(self) -> list[dict]:
        return [st.public() for st in self._jobs.values()]

    # -- shutdown --------------------------------------------------------------------

    async def stop(self) -> None:
        """Cancel every pass and loop; wait (bounded) for work that cannot be cancelled."""
        self._stopping = True
        tasks = [st.task for st in self._jobs.values() if st.task is not None] + list(self._adhoc)
        for t in tasks:
            t.cancel()
        if tasks:
            done, pending = await asyncio.wait(tasks, timeout=self.stop_timeout)
            for t in done:
                if not t.cancelled() and t.exception() is not None and \
                        not isinstance(t.exception(), asyncio.CancelledError):
                    log.error("job ended with an error at shutdown", extra={"error": str(t.exception())})
            if pending:
                log.error("jobs did not stop in time", extra={"jobs": [t.get_name() for t in pending]})
        if self._threads:
            # Passes running in a thread cannot be interrupted: let them finish
            # before the index and store they use are closed.
            await asyncio.wait(list(self._threads), timeout=self.stop_timeout)


def _rss_bytes() -> int:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


class MemoryTrim(Job):
    """Hands memory the C allocator keeps but no one uses back to the system.

    Bodies of every size come and go; glibc keeps the freed space in its
    heaps, and RSS crept up over a soak (134 → 158 MiB in twenty minutes)
    while Python's own allocations stayed flat (tracemalloc, five minutes:
    +3 MB, all of it a scrub pass in flight). ``malloc_trim(0)`` on that
    server gave back 29 MiB at once. It runs in a thread (the GIL is let go);
    each arena is locked while it is trimmed, for milliseconds.

    What it finds grows with the time since the last pass: every 30 s, with
    large blocks already off the heaps (``tune_malloc``), 9-17 MiB of small
    freed blocks each time (median 12), a sawtooth of 10-15% of RSS in a
    soak. Every 5 s a pass finds a median of 3.8 MiB (10 MiB at the 90th
    percentile: the small blocks are freed in bursts) and takes under 10 ms
    (99th percentile).
    """

    name = "memory_trim"
    INTERVAL_SECONDS = 5.0

    def __init__(self) -> None:
        super().__init__()
        self._trim: Callable[[int], int] | None
        try:
            self._trim = ctypes.CDLL(None).malloc_trim
        except (OSError, AttributeError):  # not glibc
            self._trim = None

    def run_once(self) -> dict:
        before = _rss_bytes()
        t0 = time.perf_counter()
        if self._trim is not None:
            self._trim(0)
        after = _rss_bytes()
        return {"rss_before": before, "rss_after": after, "released_bytes": max(0, before - after),
                "seconds": round(time.perf_counter() - t0, 4)}
