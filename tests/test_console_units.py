"""The console's parts without a server: sessions, the login throttle and the
trends on a fake clock, and the HTML helpers."""

from __future__ import annotations

import pytest

from vault import trends as T
from vault.console import render
from vault.console import sessions as S
from vault.metrics import Totals
from vault.policy import Principal

ADMIN = Principal(admin=True)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_session_found_until_idle_then_gone():
    clock = Clock()
    store = S.Sessions(clock)
    sid, session = store.start(ADMIN)
    clock.now += S.IDLE_SECONDS - 1
    assert store.find(sid) is session
    clock.now += S.IDLE_SECONDS - 1  # each request restarts the idle clock
    assert store.find(sid) is session
    clock.now += S.IDLE_SECONDS + 1
    assert store.find(sid) is None
    assert store.find(sid) is None


def test_session_ends_at_max_age_however_busy():
    clock = Clock()
    store = S.Sessions(clock)
    sid, _ = store.start(ADMIN)
    while clock.now < 1000.0 + S.MAX_AGE_SECONDS - 600:
        clock.now += 600
        assert store.find(sid) is not None
    clock.now += 601
    assert store.find(sid) is None


def test_logout_and_unknown_ids():
    store = S.Sessions(Clock())
    sid, _ = store.start(ADMIN)
    store.end(sid)
    assert store.find(sid) is None and store.find("nope") is None and store.find(None) is None


def test_full_store_drops_the_least_recently_used(monkeypatch):
    monkeypatch.setattr(S, "MAX_SESSIONS", 3)
    store = S.Sessions(Clock())
    ids = [store.start(ADMIN)[0] for _ in range(3)]
    store.find(ids[0])
    store.start(ADMIN)
    assert store.find(ids[1]) is None and store.find(ids[0]) is not None


def test_csrf_token_compared_exactly():
    _, session = S.Sessions(Clock()).start(ADMIN)
    assert session.csrf_ok(session.csrf)
    assert not session.csrf_ok(None) and not session.csrf_ok("") and not session.csrf_ok(session.csrf + "x")


def test_throttle_backs_off_doubling_up_to_the_cap():
    clock = Clock()
    throttle = S.LoginThrottle(clock)
    for _ in range(S.FREE_FAILURES):
        throttle.failed("10.0.0.1")
        assert throttle.wait("10.0.0.1") == 0
    waits = []
    for _ in range(12):
        throttle.failed("10.0.0.1")
        waits.append(throttle.wait("10.0.0.1"))
    assert waits[:4] == [1, 2, 4, 8] and waits[-1] == S.MAX_BLOCK_SECONDS
    assert throttle.wait("10.0.0.2") == 0
    throttle.succeeded("10.0.0.1")
    assert throttle.wait("10.0.0.1") == 0


def test_throttle_memory_is_bounded(monkeypatch):
    monkeypatch.setattr(S, "MAX_ADDRESSES", 2)
    throttle = S.LoginThrottle(Clock())
    for address in ("a", "b", "c"):
        for _ in range(S.FREE_FAILURES + 1):
            throttle.failed(address)
    assert throttle.wait("a") == 0 and throttle.wait("c") > 0


@pytest.mark.parametrize("n, text", [(None, "—"), (0, "0 B"), (1023, "1023 B"), (1536, "1.5 KiB"),
                                     (9 << 30, "9.0 GiB"), (3 << 40, "3.0 TiB")])
def test_sizes_for_people(n, text):
    assert render.size(n) == text


@pytest.mark.parametrize("seconds, text", [(None, "never"), (5, "just now"), (60, "1 minute ago"),
                                           (7200, "2 hours ago"), (3 * 86400 + 5, "3 days ago")])
def test_ages_for_people(seconds, text):
    assert render.age(seconds) == text


def test_values_from_outside_are_escaped():
    html = render.table(["Name"], [[render.esc('<script>"x"</script>')]])
    assert "<script>" not in html and "&lt;script&gt;&quot;x&quot;" in html
    assert 'value="&quot;&gt;"' in render.form("/x", '">', "", "Go")


def test_quota_bar_and_chart():
    assert "no quota" in render.bar(5, None)
    assert 'max="100"' in render.bar(150, 100) and "(100%)" in render.bar(150, 100)
    assert "No history" in render.chart([("2026-12-07", 1)], "Stored")
    svg = render.chart([("2026-12-01", 0), ("2026-12-03", 10), ("2026-12-05", 20)], "Stored")
    # x by date: the middle day is half-way across
    assert 'points="4.0,156.0 300.0,80.0 596.0,4.0"' in svg


@pytest.mark.parametrize("seconds, text", [(None, "—"), (4.4, "4 s"), (90, "1 minute"), (7200, "2 hours")])
def test_spans_and_rates_for_people(seconds, text):
    assert render.span(seconds) == text
    assert render.rate(None) == "—" and render.rate(1536) == "1.5 KiB/s" and render.rate(2.25, "") == "2.2/s"


def test_trends_rates_over_the_last_minute():
    clock, totals = Clock(), Totals()
    target = {"name": "off", "sent_bytes": 0, "oldest_pending_seconds": 0.0}
    trends = T.Trends(lambda: totals, lambda: [dict(target)], clock)
    assert trends.rates() == T.Rates(None, None, None, None) and trends.throughput(target) is None
    trends.run_once()
    assert trends.rates().ingest_bytes is None  # not a second yet
    clock.now += 10
    totals.ingest_bytes, totals.read_bytes, totals.requests, totals.errors = 1000, 500, 40, 2
    target["sent_bytes"] = 3000
    r = trends.rates()
    assert (r.ingest_bytes, r.read_bytes, r.requests, r.errors) == (100, 50, 4, 0.2)
    assert r.error_ratio == 0.05 and trends.throughput(target) == 300
    # The window slides: after a minute of samples, the first is forgotten.
    for _ in range(int(T.RATE_WINDOW_SECONDS / T.SAMPLE_SECONDS) + 1):
        trends.run_once()
        clock.now += T.SAMPLE_SECONDS
    assert trends.rates().ingest_bytes == 0


def test_trends_keep_a_lag_point_a_minute_for_a_day():
    clock = Clock()
    lag = {"name": "off", "sent_bytes": 0, "oldest_pending_seconds": 5.0}
    trends = T.Trends(Totals, lambda: [dict(lag)], clock)
    for _ in range(int(2 * T.LAG_POINTS * T.LAG_EVERY_SECONDS / T.SAMPLE_SECONDS)):
        trends.run_once()
        clock.now += T.SAMPLE_SECONDS
        lag["oldest_pending_seconds"] += T.SAMPLE_SECONDS
    points = trends.lag(lag)
    assert len(points) == T.LAG_POINTS + 1  # a day of minutes, and now
    assert points[-1] == (clock.now, lag["oldest_pending_seconds"])
    assert points[1][0] - points[0][0] == T.LAG_EVERY_SECONDS
    assert points[-1][0] - points[0][0] <= 86400 + T.LAG_EVERY_SECONDS
    assert trends.lag({"name": "new", "oldest_pending_seconds": 0.0}) == [(clock.now, 0.0)]


def test_line_chart_by_time():
    svg = render.line_chart([(0.0, 0.0), (30.0, 5.0), (60.0, 10.0)], "Lag of x")
    assert 'points="4.0,156.0 300.0,80.0 596.0,4.0"' in svg and 'aria-label="Lag of x"' in svg
